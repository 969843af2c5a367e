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
