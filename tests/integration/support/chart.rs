//! The Helm chart (`charts/keyward`) as the tests render it: `helm template` with a
//! release namespace and any further helm arguments (`-f VALUES`, `--show-only
//! templates/rbac.yaml`, `--set …`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory of the chart.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/keyward")
}

/// The `helm` of the control plane's binaries: from `$KUBEBUILDER_ASSETS` when it holds
/// one, else from `hack/test-bins.sh --with-helm` (which builds it once into its cache).
pub fn helm() -> PathBuf {
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let helm = PathBuf::from(assets).join("helm");
        if helm.is_file() {
            return helm;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/test-bins.sh");
    let output = Command::new(script)
        .arg("--with-helm")
        .output()
        .expect("hack/test-bins.sh runs");
    assert!(
        output.status.success(),
        "hack/test-bins.sh --with-helm failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim()).join("helm")
}

/// The chart rendered as release `keyward` in `namespace` with `args` added; panics
/// with helm's message when it refuses.
pub fn template(namespace: &str, args: &[&str]) -> String {
    template_release("keyward", namespace, args)
}

/// The chart rendered as release `release` in `namespace` with `args` added. Tests that
/// apply cluster-scoped objects (a ClusterRole) give each release a name of its own, so
/// that tests running at once never share one.
pub fn template_release(release: &str, namespace: &str, args: &[&str]) -> String {
    let output = Command::new(helm())
        .args(["template", release])
        .arg(dir())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 manifests")
}
