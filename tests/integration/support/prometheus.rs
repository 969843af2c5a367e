//! A real Prometheus server (Debian's `prometheus`, which `.ci/run` installs) on
//! loopback, scraping one target every second and evaluating rule files every second,
//! queried through its HTTP API as Grafana and Alertmanager do.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http;

/// How long Prometheus gets to start answering, and a query to find what it waits for.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running Prometheus, killed (its data with it) when dropped.
pub struct Prometheus {
    process: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`http://HOST:PORT`, path `/metrics`) as job
    /// `keyward`, with the rule groups `rules` (a YAML rule file's text).
    pub fn start(target: &str, rules: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("keyward-prometheus-{port}"));
        std::fs::create_dir_all(&dir).expect("a directory for Prometheus");
        let address = target
            .strip_prefix("http://")
            .expect("an http:// target")
            .trim_end_matches('/');
        let rule_file = dir.join("rules.yaml");
        std::fs::write(&rule_file, rules).expect("writes the rules");
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rule_file],
            "scrape_configs": [{
                "job_name": "keyward",
                "static_configs": [{"targets": [address]}],
            }],
        });
        // JSON is YAML: the config needs no YAML writer.
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).expect("writes the config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let process = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts (Debian's package `prometheus`)");
        let prometheus = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus.until_ready();
        prometheus
    }

    fn until_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, _)) = http::get(&format!("{}/-/ready", self.url)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The result of an instant query (`data.result`), or Prometheus' error.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let body = query_get(&format!("{}/api/v1/query", self.url), promql)?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `promql` returns at least one series, and returns them.
    pub fn until_series(&self, promql: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.query(promql) {
                Ok(series) if !series.is_empty() => return series,
                Err(error) => panic!("{promql}: {error}"),
                Ok(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{promql} returned no series within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `condition` holds of what Prometheus answers, polling every half second.
    pub fn until(&self, what: &str, timeout: Duration, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The rule groups Prometheus loaded (`/api/v1/rules`), each rule with its `health`
    /// and `lastError` after evaluation.
    pub fn rules(&self) -> Vec<Value> {
        let (_, body) =
            http::get(&format!("{}/api/v1/rules", self.url)).expect("Prometheus answers");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Prometheus' own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- prometheus log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `prometheus` on `PATH`, else Debian's.
fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin/prometheus").to_path_buf())
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds a port");
    listener.local_addr().expect("an address").port()
}

/// GETs `url?query=…` with curl encoding the query, as Grafana asks Prometheus.
fn query_get(url: &str, query: &str) -> Result<String, String> {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--get",
            url,
            "--data-urlencode",
        ])
        .arg(format!("query={query}"))
        .output()
        .expect("curl runs");
    if !output.status.success() {
        return Err("Prometheus does not answer".to_owned());
    }
    String::from_utf8(output.stdout).map_err(|e| e.to_string())
}
