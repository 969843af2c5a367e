//! Resident memory from `/proc`, sampled every 100 ms in a thread of its own, kept as a
//! timeline so each measurement can ask for the peak of its own window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_millis(100);

/// What to sample.
#[derive(Clone)]
pub enum Target {
    /// One process.
    Pid(u32),
    /// Every process whose command line (argv) satisfies the test, summed at each tick:
    /// the re-encryption Jobs, which come and go.
    Matching(fn(&[String]) -> bool),
}

/// One sample: when, resident kibibytes, and open sockets (of a single process).
type Sample = (Instant, u64, Option<u64>);

/// A sampling thread and the samples so far.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `target`.
    pub fn start(target: Target) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let now = Instant::now();
                let (value, sockets) = match &target {
                    Target::Pid(pid) => (vm_rss(*pid), sockets(*pid)),
                    Target::Matching(test) => (matching_rss(*test), None),
                };
                if let Some(kib) = value {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((now, kib, sockets));
                }
                std::thread::sleep(PERIOD);
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest sample taken between `from` and `to`, in kibibytes.
    pub fn peak_between(&self, from: Instant, to: Instant) -> Option<u64> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(when, _, _)| *when >= from && *when <= to)
            .map(|(_, kib, _)| *kib)
            .max()
    }

    /// The most sockets the process had open between `from` and `to`: connections to the
    /// API server, each of which holds buffers.
    pub fn peak_sockets_between(&self, from: Instant, to: Instant) -> Option<u64> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(when, _, _)| *when >= from && *when <= to)
            .filter_map(|(_, _, sockets)| *sockets)
            .max()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `VmRSS` of `pid` in kibibytes, if it runs.
pub fn vm_rss(pid: u32) -> Option<u64> {
    crate::support::operator::status_kib(pid, "VmRSS")
}

/// How many of `pid`'s file descriptors are sockets.
fn sockets(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .flatten()
            .filter(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count() as u64,
    )
}

fn matching_rss(test: fn(&[String]) -> bool) -> Option<u64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if test(&argv)
            && let Some(kib) = vm_rss(pid)
        {
            *total.get_or_insert(0) += kib;
        }
    }
    total
}

/// Kibibytes as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
