//! The chart's Grafana dashboard and alert rules against a real Prometheus scraping the
//! operator through a scenario that touches everything they show: a WSO2 key rotated with
//! its database, a key whose re-encryption Job never gets anywhere, a key re-encrypting
//! slowly, clients issued, rotated into a grace period and refused. Every panel's query
//! and every templating variable returns series for the test's namespace, every alert
//! rule evaluates without error, and the alert for a stuck rotation fires for the stuck
//! key alone, not for the slow one.

use std::collections::BTreeSet;
use std::time::Duration;

use keyward::crd::EncryptionKey;
use keyward::crd::database::DatabaseEngine;
use keyward::crd::encryption_key::{ReencryptionProgress, RotationPhase};
use serde_json::{Value, json};

use crate::support::api::keys;
use crate::support::ciphertext::write_ciphertexts;
use crate::support::database::server;
use crate::support::encryption_key::{bump, key_until, until_rotated};
use crate::support::jobs::external_template;
use crate::support::oauth_client::until_client_ready;
use crate::support::operator::operator_running_jobs;
use crate::support::prometheus::Prometheus;
use crate::support::workload::deploy;
use crate::support::{self, TestCluster, chart, jobs, manifest, wait};
use crate::wso2_rotation::{apply_wso2_key, apps_column, create_apps_table};

/// Seconds in one rotation phase after which the rules render `KeywardRotationStuck`
/// firing: short, so that both rotations held in re-encryption cross it.
const STUCK_AFTER_SECONDS: u32 = 5;

/// Seconds within which a re-encryption Job's progress must move for its rotation to be
/// slow rather than stuck: a few of the slow key's batches.
const PROGRESS_WITHIN_SECONDS: u32 = 30;

/// How long Prometheus may take to scrape and evaluate what the cluster shows.
const SCRAPE_PATIENCE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn every_dashboard_panel_has_data_and_a_rotation_held_in_a_phase_alerts() {
    let cluster = support::cluster("dashboard").await;
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let rules = rendered_rules(&[
        &format!("prometheusRule.thresholds.rotationPhaseSeconds={STUCK_AFTER_SECONDS}"),
        &format!("prometheusRule.thresholds.rotationProgressSeconds={PROGRESS_WITHIN_SECONDS}"),
    ]);
    let prometheus = Prometheus::start(&operator.metrics_url(), &rules);

    // A WSO2 key whose database is re-encrypted: its rotation succeeds, and the census
    // of its database is counted.
    let db = server(DatabaseEngine::PostgreSQL)
        .database("dashboard")
        .await;
    create_apps_table(&db).await;
    let wso2 = apply_wso2_key(&cluster, &db, apps_column()).await;
    bump(&cluster, "apim", &wso2, 1).await;
    until_rotated(&cluster, "apim", 2).await;

    // A key whose re-encryption Job (a template of the user's) never reports progress:
    // it waits for a ConfigMap the test creates at the end.
    let wait_for_go = r#"until "$KUBECTL" get configmap go >/dev/null 2>&1; do sleep 1; done"#;
    let stuck = json!({
        "distribution": {"format": "Keyring"},
        "reencryption": {"jobTemplate": external_template(&cluster, wait_for_go).await},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "ledger", stuck.clone()).await;
    key_until(&cluster, "ledger", "True", "KeyDistributed").await;
    bump(&cluster, "ledger", &stuck, 1).await;
    until_phase(&cluster, "ledger", "its Job runs", |_| true).await;

    // A key whose re-encryption runs at one write a second over 90 Secrets: its rotation
    // stays a minute and a half in one phase, reporting progress every five values.
    deploy(&cluster, "billing", 1).await;
    let slow = json!({
        "targets": [{"kind": "Deployment", "name": "billing"}],
        "distribution": {"format": "Keyring"},
        "rotation": {"period": "720h"},
        "reencryption": {"batchSize": 5, "writesPerSecond": 1},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "billing", slow.clone()).await;
    key_until(&cluster, "billing", "True", "KeyDistributed").await;
    write_ciphertexts(&cluster, "billing", 90).await;
    bump(&cluster, "billing", &slow, 1).await;
    until_phase(
        &cluster,
        "billing",
        "its Job reports progress",
        |progress| progress.is_some_and(|p| p.done > 0),
    )
    .await;

    // Clients: one issued, one rotated with its previous secret in a grace period, one
    // refused.
    for name in ["portal", "partner"] {
        manifest::apply_keyward(&cluster, "OAuthClient", name, json!({})).await;
        until_client_ready(&cluster, name, "Issued", None).await;
    }
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "partner",
        json!({"rotation": {"generation": 1, "gracePeriod": "1h"}}),
    )
    .await;
    until_client_ready(&cluster, "partner", "Issued", Some(2)).await;
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "legacy",
        json!({"hashAlgorithm": "MD5"}),
    )
    .await;
    until_client_ready(&cluster, "legacy", "LegacyAlgorithmNotAllowed", None).await;

    // The stuck rotation alerts; the slow one, past the phase threshold as well, does not
    // once its progress is seen moving.
    let namespace = &cluster.namespace;
    let firing = format!(
        "ALERTS{{alertname=\"KeywardRotationStuck\",alertstate=\"firing\",namespace=\"{namespace}\"}}"
    );
    let slow_past_threshold = format!(
        "keyward_encryption_key_rotation_phase_seconds{{namespace=\"{namespace}\",encryption_key=\"billing\",phase=\"Reencrypting\"}} > {STUCK_AFTER_SECONDS}"
    );
    prometheus.until(
        "KeywardRotationStuck fires for ledger alone while billing re-encrypts past the threshold",
        SCRAPE_PATIENCE,
        |prometheus| {
            let alerted: BTreeSet<String> = prometheus
                .query(&firing)
                .expect("ALERTS answers")
                .iter()
                .filter_map(|series| {
                    series["metric"]["encryption_key"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            alerted == BTreeSet::from(["ledger".to_owned()])
                && !prometheus
                    .query(&slow_past_threshold)
                    .expect("answers")
                    .is_empty()
        },
    );
    // Everything the scenario shows is scraped by now: the grace period too.
    prometheus.until_series(
        &format!("keyward_oauth_client_grace_seconds_left{{namespace=\"{namespace}\"}}"),
        SCRAPE_PATIENCE,
    );

    // Every rule evaluates without error, in the rule manager and asked as a query.
    let rules = prometheus.rules();
    assert!(!rules.is_empty(), "no rule loaded:\n{}", prometheus.log());
    for rule in &rules {
        assert_eq!(
            rule["health"], "ok",
            "{} does not evaluate: {}",
            rule["name"], rule["lastError"]
        );
        let expr = rule["query"].as_str().expect("a rule's query");
        if let Err(error) = prometheus.query(expr) {
            panic!("{}: {expr}: {error}", rule["name"]);
        }
    }

    // Every panel, and every variable Grafana fills from the data, shows this namespace.
    let dashboard = dashboard();
    for query in variable_queries(&dashboard) {
        let (selector, label) = label_values(&query);
        let series = prometheus
            .query(&substitute(selector, namespace))
            .unwrap_or_else(|e| panic!("variable query {query}: {e}"));
        assert!(
            series.iter().any(|s| s["metric"][label].is_string()),
            "the variable query {query} finds no {label}: {series:#?}"
        );
    }
    let panels = panel_queries(&dashboard);
    assert!(
        panels.len() > 10,
        "the dashboard has {} queries",
        panels.len()
    );
    for (title, expr) in panels {
        let query = substitute(&expr, namespace);
        let series = prometheus
            .query(&query)
            .unwrap_or_else(|e| panic!("panel {title:?}: {query}: {e}"));
        assert!(!series.is_empty(), "panel {title:?} shows no data: {query}");
    }

    // The stuck Job may end.
    manifest::apply(
        &cluster.client,
        namespace,
        "test",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "go"}}),
    )
    .await
    .expect("the ConfigMap go applies");
}

/// Waits until `key`'s rotation is re-encrypting with `progress` as `test` wants it.
async fn until_phase(
    cluster: &TestCluster,
    key: &str,
    what: &str,
    test: impl Fn(Option<&ReencryptionProgress>) -> bool,
) {
    wait::until(
        &keys(cluster),
        key,
        &format!("{key} re-encrypts and {what}"),
        |key: &EncryptionKey| {
            let rotation = key.status.as_ref().and_then(|s| s.rotation.as_ref());
            rotation.is_some_and(|r| {
                r.phase == RotationPhase::Reencrypting && test(r.progress.as_ref())
            })
        },
    )
    .await;
}

/// The rule groups of the chart's PrometheusRule, enabled, with `--set` values `sets`,
/// as a Prometheus rule file (JSON, which is YAML).
fn rendered_rules(sets: &[&str]) -> String {
    let mut args = vec![
        "--show-only",
        "templates/prometheusrule.yaml",
        "--set",
        "prometheusRule.enabled=true",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let rendered = chart::template("keyward", &args);
    let rule = support::manifest::documents(&rendered)
        .into_iter()
        .find(|document| document["kind"] == "PrometheusRule")
        .expect("the chart renders a PrometheusRule");
    json!({"groups": rule["spec"]["groups"]}).to_string()
}

/// The chart's dashboard.
fn dashboard() -> Value {
    let path = chart::dir().join("files/keyward-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard JSON");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every target's query of every panel (rows' panels too), with the panel's title.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, into: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    into.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], into);
        }
    }
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    queries
}

/// The queries of the dashboard's query variables.
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| match &variable["query"] {
            Value::String(query) => query.clone(),
            query => query["query"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// `label_values(SELECTOR, LABEL)` as its selector and label.
fn label_values(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{query} is not label_values(…)"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("{query} names no label"));
    (selector.trim(), label.trim())
}

/// `expr` as Grafana sends it with this test's namespace selected and every key.
fn substitute(expr: &str, namespace: &str) -> String {
    let query = expr
        .replace("$__rate_interval", "1m")
        .replace("$namespace", namespace)
        .replace("$encryption_key", ".*");
    assert!(
        !query.contains('$'),
        "{expr} uses a variable the dashboard's conventions do not know"
    );
    query
}
