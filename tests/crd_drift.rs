//! The CRD manifests in `crds/` are generated from the Rust types, and the chart holds a
//! copy of them; this fails when someone changes a type without regenerating both
//! (`make crds`).

use std::path::PathBuf;
use std::process::Command;

fn committed() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds/keyward.yaml");
    std::fs::read_to_string(&path).expect("crds/keyward.yaml exists")
}

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = keyward::crd::crds_yaml().expect("CRDs render");
    assert!(
        generated == committed(),
        "crds/keyward.yaml differs from what the Rust types generate: run `make crds` and commit the result"
    );
}

#[test]
fn keyward_crds_prints_the_committed_crds() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("crds")
        .output()
        .expect("keyward crds runs");
    assert!(output.status.success(), "keyward crds exits 0");
    assert_eq!(
        String::from_utf8(output.stdout).expect("UTF-8 YAML"),
        committed()
    );
}

#[test]
fn the_charts_crds_are_the_committed_crds() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/keyward/files/crds.yaml");
    let chart = std::fs::read(&path).expect("charts/keyward/files/crds.yaml exists");
    assert!(
        chart == committed().into_bytes(),
        "charts/keyward/files/crds.yaml differs from crds/keyward.yaml: run `make crds` and commit the result"
    );
}
