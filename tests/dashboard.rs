//! The Grafana dashboard the chart ships (`charts/keyward/files/keyward-dashboard.json`)
//! holds to what Grafana needs and to the conventions its users and the live-Prometheus
//! test rely on: panels with unique ids, a place on the grid, a title and a description;
//! every panel and query on the `datasource` variable; objects picked only through the
//! `namespace` and `encryption_key` variables (`=~`, so "All" is `.*`); no variable that
//! is not defined.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use regex::Regex;
use serde_json::{Value, json};

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("charts/keyward/files/keyward-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard exists");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, with those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn collect<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in panels.as_array().expect("panels is a list") {
            into.push(panel);
            if let Some(nested) = panel.get("panels") {
                collect(nested, into);
            }
        }
    }
    let mut all = Vec::new();
    collect(&dashboard["panels"], &mut all);
    all
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn variables(dashboard: &Value) -> &Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list is a list")
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    variables(dashboard)
        .iter()
        .find(|variable| variable["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// Every query: each panel target's `expr`, with the panel's title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            queries.push((panel["title"].to_string(), expr.to_owned()));
        }
    }
    queries
}

fn the_datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Every string anywhere in `value`.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(text) => vec![text.as_str()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(fields) => fields.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_dashboard_has_what_grafana_needs_to_import_it() {
    let dashboard = dashboard();
    for field in ["title", "uid", "description"] {
        assert!(
            dashboard[field]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "the dashboard has no {field}"
        );
    }
    assert!(dashboard["schemaVersion"].is_u64(), "no schemaVersion");
    assert!(!panels(&dashboard).is_empty(), "no panels");
}

#[test]
fn every_panel_has_a_unique_id_a_place_a_title_and_a_description() {
    let dashboard = dashboard();
    let mut ids = HashSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without a numeric id: {}", panel["title"]));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "panel {id} has no title");
        let grid = &panel["gridPos"];
        for field in ["h", "w", "x", "y"] {
            assert!(
                grid[field].is_u64(),
                "panel {title:?} has no gridPos.{field}"
            );
        }
        let right = grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0);
        assert!(
            right <= 24,
            "panel {title:?} runs past the grid's 24 columns"
        );
        if !is_row(panel) {
            let description = panel["description"].as_str().unwrap_or_default();
            assert!(
                !description.trim().is_empty(),
                "panel {title:?} has no description"
            );
        }
    }
}

#[test]
fn panels_do_not_overlap() {
    let dashboard = dashboard();
    let boxes: Vec<(&str, [u64; 4])> = panels(&dashboard)
        .into_iter()
        .map(|panel| {
            let grid = &panel["gridPos"];
            let field = |name: &str| grid[name].as_u64().unwrap_or(0);
            (
                panel["title"].as_str().unwrap_or_default(),
                [field("x"), field("y"), field("w"), field("h")],
            )
        })
        .collect();
    for (index, (title, [x, y, w, h])) in boxes.iter().enumerate() {
        for (other, [ox, oy, ow, oh]) in &boxes[index + 1..] {
            let apart = x + w <= *ox || ox + ow <= *x || y + h <= *oy || oy + oh <= *y;
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
    }
}

#[test]
fn every_panel_and_query_reads_the_datasource_variable() {
    let dashboard = dashboard();
    let datasource = variable(&dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for panel in panels(&dashboard)
        .into_iter()
        .filter(|panel| !is_row(panel))
    {
        let title = &panel["title"];
        assert_eq!(
            panel["datasource"],
            the_datasource(),
            "panel {title} does not use $datasource"
        );
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let mut references = HashSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"],
                the_datasource(),
                "a query of panel {title} does not use $datasource"
            );
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel {title} has an empty query"
            );
            let reference = target["refId"].as_str().expect("a query's refId");
            assert!(
                references.insert(reference),
                "panel {title} repeats refId {reference}"
            );
        }
    }
    for templated in variables(&dashboard) {
        if templated["type"] != "datasource" {
            assert_eq!(
                templated["datasource"],
                the_datasource(),
                "variable {} does not use $datasource",
                templated["name"]
            );
        }
    }
}

#[test]
fn the_object_pickers_are_multi_value_label_queries() {
    let dashboard = dashboard();
    for name in ["namespace", "encryption_key"] {
        let picker = variable(&dashboard, name);
        assert_eq!(picker["type"], "query", "{name}");
        assert_eq!(picker["multi"], true, "{name} takes several values");
        assert_eq!(picker["includeAll"], true, "{name} offers All");
        assert_eq!(picker["allValue"], ".*", "{name}'s All is .*");
        let query = picker["query"].as_str().expect("a query string");
        assert!(
            query.starts_with("label_values(") && query.ends_with(&format!(", {name})")),
            "{name} lists the {name} label's values: {query}"
        );
    }
}

/// `namespace` and `encryption_key` are matched only as `=~"$namespace"` and
/// `=~"$encryption_key"`: nothing hard-coded, and "All" (`.*`) works.
#[test]
fn objects_are_picked_only_through_the_variables() {
    let dashboard = dashboard();
    let matcher =
        Regex::new(r#"\b(namespace|encryption_key)\s*(=~|!~|!=|=)\s*"([^"]*)""#).expect("a regex");
    let mut checked: Vec<(String, String)> = queries(&dashboard);
    for name in ["namespace", "encryption_key"] {
        let picker = variable(&dashboard, name);
        checked.push((
            name.to_owned(),
            picker["query"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    for (panel, expr) in &checked {
        for found in matcher.captures_iter(expr) {
            let label = &found[1];
            assert_eq!(
                (&found[2], &found[3]),
                ("=~", format!("${label}").as_str()),
                "{panel}: {label} must be matched as {label}=~\"${label}\" in {expr}"
            );
        }
    }
}

/// A selector of a metric about namespaced objects filters by the pickers, so that no
/// panel ignores them.
#[test]
fn every_query_of_an_object_metric_follows_the_pickers() {
    let dashboard = dashboard();
    let selector = Regex::new(r"\b(keyward_[a-z_]+)(\{[^}]*\})?").expect("a regex");
    for (panel, expr) in queries(&dashboard) {
        for found in selector.captures_iter(&expr) {
            let metric = &found[1];
            let matchers = found.get(2).map_or("", |m| m.as_str());
            let per_key = metric.starts_with("keyward_encryption_key_");
            let per_namespace = per_key
                || metric == "keyward_encryption_keys"
                || metric.starts_with("keyward_oauth_client")
                || metric == "keyward_client_secrets_written_total";
            if per_namespace {
                assert!(
                    matchers.contains(r#"namespace=~"$namespace""#),
                    "{panel}: {metric} without the namespace picker in {expr}"
                );
            }
            if per_key {
                assert!(
                    matchers.contains(r#"encryption_key=~"$encryption_key""#),
                    "{panel}: {metric} without the encryption_key picker in {expr}"
                );
            }
        }
    }
}

/// Queries use `$namespace`, `$encryption_key` and `$__rate_interval` only; anything
/// else the dashboard writes as `$name`, `${name}` or `[[name]]` is a defined variable.
#[test]
fn every_variable_used_is_defined() {
    let dashboard = dashboard();
    let reference = Regex::new(r"\$\{([A-Za-z0-9_]+)[^}]*\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)")
        .expect("a regex");
    let names = |text: &str| -> BTreeSet<String> {
        reference
            .captures_iter(text)
            .filter_map(|found| found.iter().skip(1).flatten().next())
            .map(|name| name.as_str().to_owned())
            .collect()
    };
    let defined: BTreeSet<String> = variables(&dashboard)
        .iter()
        .filter_map(|variable| variable["name"].as_str())
        .map(str::to_owned)
        .collect();
    for text in strings(&dashboard) {
        for name in names(text) {
            assert!(
                defined.contains(&name) || name == "__rate_interval",
                "${name} is not a variable of the dashboard, in {text:?}"
            );
        }
    }
    let allowed = ["namespace", "encryption_key", "__rate_interval"];
    for (panel, expr) in queries(&dashboard) {
        for name in names(&expr) {
            assert!(
                allowed.contains(&name.as_str()),
                "{panel}: a query uses ${name}, but only ${allowed:?} are substituted for it: {expr}"
            );
        }
    }
}

#[test]
fn every_panel_and_row_is_described_in_the_operations_guide() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let guide = std::fs::read_to_string(&path).expect("docs/operations.md exists");
    let section = guide
        .split_once("\n## The dashboard\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .expect("docs/operations.md has a section \"## The dashboard\"");
    let dashboard = dashboard();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        // Rows are the section's bold headings; panels are in italics in its lists.
        let mark = if is_row(panel) {
            format!("**{title}**")
        } else {
            format!("*{title}*")
        };
        assert!(
            section.contains(&mark),
            "docs/operations.md's \"The dashboard\" does not describe {title:?} (as {mark})"
        );
    }
}
