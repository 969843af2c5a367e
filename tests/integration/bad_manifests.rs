//! Every manifest in `tests/bad-manifests/` is refused by the API server at apply time,
//! with a message naming the offending field. Each file says what it expects in
//! `# expect:` lines; when it holds several documents, all but the last are valid and
//! applied first, so transition rules (immutability, counters) are exercised too.

use std::path::PathBuf;

use crate::support::{self, manifest};

struct Case {
    name: String,
    expectations: Vec<String>,
    documents: Vec<serde_json::Value>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad-manifests");
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .expect("tests/bad-manifests exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .map(|path| {
            let yaml = std::fs::read_to_string(&path).expect("manifest reads");
            let expectations: Vec<String> = yaml
                .lines()
                .filter_map(|line| line.strip_prefix("# expect: "))
                .map(str::to_owned)
                .collect();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            assert!(!expectations.is_empty(), "{name} has no `# expect:` line");
            Case {
                name,
                expectations,
                documents: manifest::documents(&yaml),
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

#[tokio::test]
async fn every_bad_manifest_is_rejected_at_apply_time_naming_the_field() {
    let cluster = support::cluster("bad-manifests").await;
    let cases = corpus();
    assert!(
        cases.len() >= 12,
        "the corpus covers at least 12 mistakes, has {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let (last, earlier) = case.documents.split_last().expect("at least one document");
        for document in earlier {
            if let Err(error) =
                manifest::apply(&cluster.client, &cluster.namespace, "gitops", document).await
            {
                failures.push(format!(
                    "{}: valid setup document was refused: {error}",
                    case.name
                ));
            }
        }
        match manifest::apply(&cluster.client, &cluster.namespace, "gitops", last).await {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(kube::Error::Api(status)) => {
                let message = &status.message;
                // Server-side apply refuses fields outside the schema with a 500 that names
                // them ("field not declared in schema"); everything else is a 4xx.
                let schema_refusal =
                    status.code == 500 && message.contains("field not declared in schema");
                if !(400..500).contains(&status.code) && !schema_refusal {
                    failures.push(format!(
                        "{}: HTTP {} instead of a validation error: {message}",
                        case.name, status.code
                    ));
                }
                for expected in &case.expectations {
                    if !message.contains(expected.as_str()) {
                        failures.push(format!(
                            "{}: message lacks {expected:?}: {message}",
                            case.name
                        ));
                    }
                }
            }
            Err(error) => failures.push(format!("{}: request failed: {error}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_examples_apply_cleanly_and_defaults_are_filled_in() {
    let cluster = support::cluster("examples").await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/ holds manifests");

    let mut applied = Vec::new();
    for file in files {
        let yaml = std::fs::read_to_string(&file).expect("example reads");
        for document in manifest::documents(&yaml) {
            let object = manifest::apply(&cluster.client, &cluster.namespace, "gitops", &document)
                .await
                .unwrap_or_else(|error| panic!("{} applies: {error}", file.display()));
            applied.push(object);
        }
    }

    let portal = applied
        .iter()
        .find(|object| object.metadata.name.as_deref() == Some("developer-portal"))
        .expect("the developer-portal OAuthClient");
    let spec = &portal.data["spec"];
    assert_eq!(spec["secretType"], "Hashed");
    assert_eq!(spec["hashAlgorithm"], "SHA-256");
    assert_eq!(spec["secretLength"], 32);
}
