//! CPU time (user + system, from `/proc/<pid>/stat`) of the operator, the benchmark's own
//! client and the control plane's API server and etcd over a window: where the time of
//! a measurement goes on a machine with two cores.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The processes whose CPU time a window reports, by the name the table gives them.
pub struct Processes {
    pids: Vec<(String, u32)>,
    ticks_per_second: f64,
}

/// CPU time so far, by name, in clock ticks.
pub struct Snapshot(BTreeMap<String, u64>);

impl Processes {
    /// The API server and etcd of the control plane whose files are in `control_plane`
    /// (other control planes on the machine are not ours), and the benchmark itself.
    pub fn of_control_plane(control_plane: &Path) -> Self {
        let marker = control_plane.to_string_lossy().into_owned();
        let mut pids = vec![("benchmark's client".to_owned(), std::process::id())];
        for component in ["kube-apiserver", "etcd"] {
            if let Some(pid) = find(component, &marker) {
                pids.push((component.to_owned(), pid));
            }
        }
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0);
        Self {
            pids,
            ticks_per_second,
        }
    }

    /// The same, with `name` (the operator) added.
    pub fn with(&self, name: &str, pid: u32) -> Self {
        let mut pids = vec![(name.to_owned(), pid)];
        pids.extend(self.pids.iter().cloned());
        Self {
            pids,
            ticks_per_second: self.ticks_per_second,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.pids
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), ticks(*pid)?)))
                .collect(),
        )
    }

    /// `name X s, …` of what each used between `before` and `after`, and of `wall`.
    pub fn used(&self, before: &Snapshot, after: &Snapshot, wall: Duration) -> String {
        let mut parts: Vec<String> = self
            .pids
            .iter()
            .filter_map(|(name, _)| {
                let used = after.0.get(name)?.checked_sub(*before.0.get(name)?)?;
                Some(format!(
                    "{name} {:.1} s",
                    used as f64 / self.ticks_per_second
                ))
            })
            .collect();
        parts.push(format!("in {:.1} s of wall time", wall.as_secs_f64()));
        parts.join(", ")
    }
}

/// user + system time of `pid` in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after its last `)`
    // are fixed: state is the first, utime the 12th and stime the 13th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// The pid of the process whose program is `name` and whose arguments mention `marker`.
fn find(name: &str, marker: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline);
            let mut argv = text.split('\0');
            let program = argv.next()?;
            (program.rsplit('/').next() == Some(name) && text.contains(marker)).then_some(pid)
        })
}
