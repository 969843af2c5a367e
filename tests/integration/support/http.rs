//! Reading the operator's HTTP endpoints with curl, as a Prometheus scraper or a kubelet
//! probe would.

use std::process::Command;

/// GETs `url`; returns the status code and body, or `None` when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "5",
            "--write-out",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("curl runs");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).expect("UTF-8 response");
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.parse().ok()?, body.to_owned()))
}

/// The body of `/readyz`, or `None` when the endpoint does not answer.
pub fn readyz(health_url: &str) -> Option<String> {
    get(&format!("{health_url}/readyz")).map(|(_, body)| body.trim().to_owned())
}

/// The value of the sample `name{labels}` in a metrics page (`labels` as they appear,
/// e.g. `controller="OAuthClient"`; empty for none), if present.
pub fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    page.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}
