//! Applying YAML manifests the way `kubectl apply --server-side` does, with strict
//! field validation, to any kind the API server serves.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use serde::Deserialize;

/// The documents of a multi-document YAML stream.
pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| serde_json::Value::deserialize(document).expect("YAML document parses"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Applies a keyward resource of `kind` named `name` with `spec` in the test's namespace,
/// as a GitOps tool does (field manager `gitops`).
pub async fn apply_keyward(
    cluster: &super::TestCluster,
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let document = serde_json::json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    });
    apply(&cluster.client, &cluster.namespace, "gitops", &document)
        .await
        .unwrap_or_else(|error| panic!("{kind} {name} applies: {error}"));
}

/// Server-side applies `document` in `namespace` as `field_manager`.
pub async fn apply(
    client: &Client,
    namespace: &str,
    field_manager: &str,
    document: &serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject =
        serde_json::from_value(document.clone()).expect("a Kubernetes object");
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("valid apiVersion");
    let (resource, _) = pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams::apply(field_manager).validation_strict();
    api.patch(&object.name_any(), &params, &Patch::Apply(document))
        .await
}
