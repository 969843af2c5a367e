//! The API server's own count of the requests it served (`apiserver_request_total` on
//! its `/metrics`), read before and after a measurement: how many writes of which kind
//! it took. The counters cover every client, so a window's delta also holds background
//! writes (node and leader Leases, kube-controller-manager); those are reported apart.

use std::collections::BTreeMap;
use std::fmt;

use kube::Client;

/// One kind of request: verb (`POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`), API group,
/// resource and subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        // Events exist in two groups; the others are plain from their resource.
        if self.resource == "events" {
            let group = if self.group.is_empty() {
                "v1"
            } else {
                &self.group
            };
            write!(f, " ({group})")?;
        }
        Ok(())
    }
}

/// Requests served, by kind.
pub type Counts = BTreeMap<Kind, u64>;

const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Whether `kind` writes.
pub fn is_write(kind: &Kind) -> bool {
    WRITE_VERBS.contains(&kind.verb.as_str())
}

/// The kinds of `counts` that satisfy `test`.
pub fn filtered(counts: &Counts, test: impl Fn(&Kind) -> bool) -> Counts {
    counts
        .iter()
        .filter(|(kind, _)| test(kind))
        .map(|(kind, count)| (kind.clone(), *count))
        .collect()
}

/// The requests the API server has served so far, by kind (every response code).
pub async fn requests(client: &Client) -> Counts {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a GET request");
    let page = client
        .request_text(request)
        .await
        .expect("the admin may read the API server's /metrics");
    let mut counts = Counts::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        let verb = label("verb");
        let kind = Kind {
            verb,
            group: label("group"),
            resource: label("resource"),
            subresource: label("subresource"),
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        *counts.entry(kind).or_default() += value as u64;
    }
    counts
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.insert(
            name.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    labels
}

/// What was served between `before` and `after`.
pub fn delta(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(kind, count)| {
            let earlier = before.get(kind).copied().unwrap_or(0);
            (*count > earlier).then(|| (kind.clone(), count - earlier))
        })
        .collect()
}

/// Whether a kind is one the operator writes for OAuthClients (its Secrets, the
/// clients' status, its Events), as opposed to background traffic.
pub fn is_client_work(kind: &Kind) -> bool {
    matches!(
        kind.resource.as_str(),
        "secrets" | "oauthclients" | "events"
    )
}

/// `kind count, …` for a breakdown cell, largest first.
pub fn breakdown(counts: &Counts, per: f64) -> String {
    let mut kinds: Vec<(&Kind, &u64)> = counts.iter().filter(|(_, count)| **count > 0).collect();
    if kinds.is_empty() {
        return "none".to_owned();
    }
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {:.2}", **count as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}
