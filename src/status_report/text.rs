//! The text form of a report: one screen for a person at a terminal. Every string read
//! from the cluster is shown with its control characters escaped, so a status or Event
//! message cannot move the cursor or recolour the terminal.

use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use crate::crd::encryption_key::RotationPhase;

use super::report::{
    ClientReport, ConditionReport, EventReport, Header, KeyReport, Report, age, progress_text,
};

/// The report as text, ending in a newline.
pub fn render(report: &Report) -> String {
    match report {
        Report::EncryptionKey(key) => render_key(key),
        Report::OAuthClient(client) => render_client(client),
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A time and how long ago it was: `2026-12-05T06:00:00Z (3m ago)`.
fn when(time: &Time, seconds_ago: i64) -> String {
    let relative = if seconds_ago >= 0 {
        format!("{} ago", age(SignedDuration::from_secs(seconds_ago)))
    } else {
        format!("in {}", age(SignedDuration::from_secs(seconds_ago)))
    };
    format!("{} ({relative})", time.0)
}

/// A labelled line: the label padded to one column.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<18}{value}", format!("{label}:"));
}

/// Rows under a header, each column as wide as its widest cell; the last column is left
/// unpadded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut text = String::from("  ");
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[index]);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
}

fn render_header(out: &mut String, header: &Header) {
    let _ = writeln!(
        out,
        "{} {}/{}",
        header.kind,
        printable(&header.namespace),
        printable(&header.name)
    );
    let ready = match &header.ready {
        Some(ready) => {
            let message = if ready.message.is_empty() {
                String::new()
            } else {
                format!(": {}", printable(&ready.message))
            };
            format!(
                "{} ({}){message}",
                printable(&ready.status),
                printable(&ready.reason)
            )
        }
        None => "unknown: the operator has not reported yet".to_owned(),
    };
    line(out, "Ready", ready);
    if header.observed_generation != header.generation {
        let described = match header.observed_generation {
            None | Some(crate::crd::UNOBSERVED_GENERATION) => {
                "keyward has not looked at it yet".to_owned()
            }
            Some(observed) => format!("status describes {observed}"),
        };
        line(
            out,
            "Generation",
            format!("{} ({described})", optional(header.generation)),
        );
    }
}

fn optional(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn render_conditions(out: &mut String, conditions: &[ConditionReport]) {
    if conditions.is_empty() {
        line(out, "Conditions", "none");
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|condition| {
            vec![
                printable(&condition.type_),
                printable(&condition.status),
                printable(&condition.reason),
                age(SignedDuration::from_secs(condition.age_seconds)),
                printable(&condition.message),
            ]
        })
        .collect();
    table(out, &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows);
}

fn render_events(out: &mut String, events: Option<&[EventReport]>) {
    let Some(events) = events else {
        line(out, "Events", "not shown (they could not be listed)");
        return;
    };
    if events.is_empty() {
        line(out, "Events", "none");
        return;
    }
    let _ = writeln!(out, "Events:");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            let seen = event.age_seconds.map_or_else(
                || "-".to_owned(),
                |seconds| age(SignedDuration::from_secs(seconds)),
            );
            let count = if event.count > 1 {
                format!("{seen} (x{})", event.count)
            } else {
                seen
            };
            vec![
                count,
                printable(&event.type_),
                printable(&event.reason),
                printable(&event.message),
            ]
        })
        .collect();
    table(out, &["AGE", "TYPE", "REASON", "MESSAGE"], &rows);
}

fn render_key(key: &KeyReport) -> String {
    let mut out = String::new();
    render_header(&mut out, &key.header);
    line(&mut out, "Primary version", optional(key.primary_version));
    if key.versions.is_empty() {
        line(&mut out, "Versions", "none yet");
    } else {
        let _ = writeln!(out, "Versions:");
        let rows: Vec<Vec<String>> = key
            .versions
            .iter()
            .map(|version| {
                vec![
                    version.version.to_string(),
                    printable(&version.state),
                    age(SignedDuration::from_secs(version.age_seconds)),
                    printable(&version.fingerprint),
                ]
            })
            .collect();
        table(&mut out, &["VERSION", "STATE", "AGE", "FINGERPRINT"], &rows);
    }
    let pods = match &key.distribution {
        Some(distribution) => format!(
            "{}/{} ready pods hold the current keyring (versions {})",
            distribution.pods_in_sync,
            distribution.pods_total,
            list(&distribution.versions)
        ),
        None => "not counted yet (or the key has no targets)".to_owned(),
    };
    line(&mut out, "Pods in sync", pods);
    render_rotation(&mut out, key);
    if let Some(ciphertexts) = &key.ciphertexts {
        let mut counts: Vec<String> = ciphertexts
            .by_version
            .iter()
            .map(|(version, count)| format!("version {version}: {count}"))
            .collect();
        if counts.is_empty() {
            counts.push("no scan yet".to_owned());
        }
        if let Some(without) = ciphertexts.without_key_id {
            counts.push(format!("{without} database values without key id"));
        }
        line(&mut out, "Ciphertexts", counts.join(", "));
    }
    let next = match &key.next_rotation {
        Some(next) if next.in_seconds < 0 => format!(
            "{} (overdue by {})",
            next.at.0,
            age(SignedDuration::from_secs(next.in_seconds))
        ),
        Some(next) => format!(
            "{} (in {})",
            next.at.0,
            age(SignedDuration::from_secs(next.in_seconds))
        ),
        None => "none scheduled (no spec.rotation.period)".to_owned(),
    };
    line(&mut out, "Next rotation", next);
    render_conditions(&mut out, &key.conditions);
    render_events(&mut out, key.events.as_deref());
    out
}

fn render_rotation(out: &mut String, key: &KeyReport) {
    let Some(rotation) = &key.rotation else {
        line(out, "Rotation", "none yet");
        return;
    };
    line(
        out,
        "Rotation",
        format!(
            "{} to version {} from {} ({:?}), attempt {}",
            rotation.phase.as_str(),
            rotation.target_version,
            rotation.previous_version,
            rotation.trigger,
            rotation.attempt
        ),
    );
    let in_phase = age(SignedDuration::from_secs(rotation.seconds_in_phase));
    match &rotation.finished_at {
        Some(finished) => line(out, "  finished", format!("{}", finished.0)),
        None => line(
            out,
            "  in phase",
            format!("{in_phase} (since {})", rotation.phase_started_at.0),
        ),
    }
    if let Some(waiting) = &rotation.waiting_on {
        line(out, "  waiting on", printable(waiting));
    }
    if let Some(progress) = &rotation.progress {
        let mut text = progress_text(progress.done, progress.total, progress.failed);
        if progress.contended > 0 {
            let _ = write!(text, " ({} contended)", progress.contended);
        }
        line(out, "  progress", text);
        for failure in progress.failures.iter().take(5) {
            line(out, "    failed", printable(failure));
        }
    }
    // Status names the next Job ahead of time; it is worth a line only while one runs.
    let runs_jobs = matches!(
        rotation.phase,
        RotationPhase::Backfilling | RotationPhase::Reencrypting
    );
    if let Some(job) = rotation.job_name.as_ref().filter(|_| runs_jobs) {
        line(out, "  Job", printable(job));
    }
    if let Some(failure) = &rotation.failure {
        line(
            out,
            "  last failure",
            format!(
                "{}: {}",
                printable(&failure.reason),
                printable(&failure.message)
            ),
        );
    }
}

fn list(values: &[i64]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_client(client: &ClientReport) -> String {
    let mut out = String::new();
    render_header(&mut out, &client.header);
    line(
        &mut out,
        "Client id",
        client
            .client_id
            .as_deref()
            .map_or_else(|| "- (not issued yet)".to_owned(), printable),
    );
    line(&mut out, "Secret type", format!("{:?}", client.secret_type));
    line(&mut out, "Secret version", optional(client.secret_version));
    line(
        &mut out,
        "Hash algorithm",
        client
            .hash_algorithm
            .as_deref()
            .map_or_else(|| "-".to_owned(), printable),
    );
    let issued = match (&client.issued_at, client.issued_seconds_ago) {
        (Some(time), Some(seconds)) => when(time, seconds),
        _ => "-".to_owned(),
    };
    line(&mut out, "Issued at", issued);
    let grace = match &client.grace {
        Some(grace) if grace.seconds_left > 0 => format!(
            "the previous secret verifies until {}",
            when(&grace.previous_secret_valid_until, -grace.seconds_left)
        ),
        Some(grace) => format!(
            "over: the previous secret stopped verifying at {}",
            grace.previous_secret_valid_until.0
        ),
        None => "none: only the current secret verifies".to_owned(),
    };
    line(&mut out, "Grace period", grace);
    let mut delivery = printable(&client.delivery.secret_name);
    match (&client.delivery.deleted_at, &client.delivery.ttl) {
        (Some(deleted), _) => {
            let _ = write!(delivery, " (deleted after its TTL at {})", deleted.0);
        }
        (None, Some(ttl)) => {
            let _ = write!(delivery, " (deleted {ttl} after it is written)");
        }
        (None, None) => {}
    }
    line(&mut out, "Delivery Secret", delivery);
    line(
        &mut out,
        "Verifier Secret",
        printable(&client.verifier_secret_name),
    );
    if let Some(import) = &client.import {
        let removable = match import.source_removable {
            Some(true) => "the verifier holds its current secret: it may be removed",
            Some(false) => "the verifier does not hold its current secret yet: keep it",
            None => "not imported yet",
        };
        line(
            &mut out,
            "Imported from",
            format!(
                "Secret {} ({removable})",
                printable(&import.source_secret_name)
            ),
        );
    }
    render_conditions(&mut out, &client.conditions);
    render_events(&mut out, client.events.as_deref());
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::crd::{EncryptionKey, OAuthClient};
    use crate::status_report::report::{client_report, key_report};

    fn now() -> Timestamp {
        "2026-12-05T12:00:00Z".parse().expect("a timestamp")
    }

    #[test]
    fn control_characters_from_the_cluster_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[31mc"), "a\\nb\\u{1b}[31mc");
        assert_eq!(printable("plain é text"), "plain é text");
    }

    #[test]
    fn a_resource_not_yet_reported_on_says_so() {
        let key: EncryptionKey = serde_json::from_value(json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "EncryptionKey",
            "metadata": {"name": "apim", "namespace": "wso2", "generation": 1},
            "spec": {},
            "status": {"observedGeneration": 0},
        }))
        .expect("an EncryptionKey");
        let text = render(&Report::EncryptionKey(Box::new(key_report(
            &key,
            None,
            now(),
        ))));
        assert!(
            text.contains("Ready:            unknown: the operator has not reported yet\n")
                && text.contains("Generation:       1 (keyward has not looked at it yet)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_key_mid_rotation_reads_on_one_screen() {
        let key: EncryptionKey = serde_json::from_value(json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "EncryptionKey",
            "metadata": {"name": "apim", "namespace": "wso2", "generation": 2},
            "spec": {},
            "status": {
                "observedGeneration": 2,
                "primaryVersion": 2,
                "versions": [
                    {"version": 1, "state": "DecryptOnly", "createdAt": "2026-11-05T12:00:00Z", "fingerprint": "fp-one"},
                    {"version": 2, "state": "Primary", "createdAt": "2026-12-05T11:50:00Z", "fingerprint": "fp-two"},
                ],
                "distribution": {"podsInSync": 3, "podsTotal": 3, "versions": [1, 2]},
                "rotation": {
                    "phase": "Reencrypting", "targetVersion": 2, "previousVersion": 1,
                    "trigger": "Requested", "generation": 1, "jobName": "apim-reencrypt-v2-1",
                    "startedAt": "2026-12-05T11:50:00Z", "phaseStartedAt": "2026-12-05T11:56:40Z",
                    "progress": {"total": 1000, "done": 250, "failed": 0},
                },
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KeyDistributed", "message": "3/3 pods hold it",
                     "lastTransitionTime": "2026-12-05T11:55:00Z"},
                    {"type": "Rotating", "status": "True", "reason": "Reencrypting", "message": "line one\nline two",
                     "lastTransitionTime": "2026-12-05T11:50:00Z"},
                ],
            },
        }))
        .expect("an EncryptionKey");
        let text = render(&Report::EncryptionKey(Box::new(key_report(
            &key,
            Some(&[]),
            now(),
        ))));
        let expected = "\
EncryptionKey wso2/apim
Ready:            True (KeyDistributed): 3/3 pods hold it
Primary version:  2
Versions:
  VERSION  STATE        AGE  FINGERPRINT
  2        Primary      10m  fp-two
  1        DecryptOnly  30d  fp-one
Pods in sync:     3/3 ready pods hold the current keyring (versions 1, 2)
Rotation:         Reencrypting to version 2 from 1 (Requested), attempt 1
  in phase:       3m20s (since 2026-12-05T11:56:40Z)
  waiting on:     Job apim-reencrypt-v2-1 to re-encrypt to version 2: 250 of 1000 done (25%), 0 failed
  progress:       250 of 1000 done (25%), 0 failed
  Job:            apim-reencrypt-v2-1
Next rotation:    none scheduled (no spec.rotation.period)
Conditions:
  TYPE      STATUS  REASON          AGE  MESSAGE
  Ready     True    KeyDistributed  5m   3/3 pods hold it
  Rotating  True    Reencrypting    10m  line one\\nline two
Events:           none
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_client_in_its_grace_period_says_until_when_the_previous_secret_verifies() {
        let client: OAuthClient = serde_json::from_value(json!({
            "apiVersion": "keyward.io/v1alpha1",
            "kind": "OAuthClient",
            "metadata": {"name": "portal", "namespace": "wso2"},
            "spec": {"importFrom": {"secretName": "legacy"}},
            "status": {
                "clientId": "portal-id",
                "secretVersion": 2,
                "hashAlgorithm": "SHA-256",
                "issuedAt": "2026-12-05T11:30:00Z",
                "previousSecretExpiresAt": "2026-12-05T12:30:00Z",
                "deliverySecretDeletedAt": "2026-12-05T11:40:00Z",
                "importSourceRemovable": true,
            },
        }))
        .expect("an OAuthClient");
        let text = render(&Report::OAuthClient(Box::new(client_report(
            &client,
            None,
            now(),
        ))));
        for line in [
            "Ready:            unknown: the operator has not reported yet",
            "Client id:        portal-id",
            "Secret version:   2",
            "Issued at:        2026-12-05T11:30:00Z (30m ago)",
            "Grace period:     the previous secret verifies until 2026-12-05T12:30:00Z (in 30m)",
            "Delivery Secret:  portal-credentials (deleted after its TTL at 2026-12-05T11:40:00Z)",
            "Verifier Secret:  portal-verifier",
            "Imported from:    Secret legacy (the verifier holds its current secret: it may be removed)",
            "Events:           not shown (they could not be listed)",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line:?} in:\n{text}");
        }
    }
}
