//! The custom resources keyward serves (group `keyward.io`, version `v1alpha1`) and the
//! pieces they share: object references, durations and status conditions.
//!
//! These types are the API. Their generated schema (see [`crds`]) is what the API server
//! validates at apply time, so every bound and cross-field rule lives here, next to the
//! field it guards. Nothing in this module talks to a cluster.

pub mod condition;
pub mod database;
pub mod encryption_key;
pub mod oauth_client;

pub use condition::{
    ConditionStatus, ConditionType, Progress, find_condition, is_true, set_condition, set_progress,
};
pub use encryption_key::{EncryptionKey, EncryptionKeySpec, EncryptionKeyStatus};
pub use oauth_client::{OAuthClient, OAuthClientSpec, OAuthClientStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every keyward resource.
pub const GROUP: &str = "keyward.io";

/// Regular expression for a Kubernetes object name (an RFC 1123 DNS subdomain).
pub(crate) const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Regular expression for a key inside a Secret's `data`.
pub(crate) const SECRET_DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";

/// Regular expression for a Go duration without sign, as `metav1.Duration` writes it
/// (`90s`, `1h30m`, `720h`).
pub(crate) const GO_DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// A reference to a Secret in the resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the namespace of the resource that refers to it.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// A reference to one key of a Secret in the resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the resource that refers to it.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY))]
    pub key: String,
}

/// Every CustomResourceDefinition keyward serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![EncryptionKey::crd(), OAuthClient::crd()];
    crds.iter_mut().for_each(unobserved_until_reported);
    crds
}

/// The `status.observedGeneration` of a resource keyward has not reported on yet: the
/// API server defaults a missing status to it (a real generation starts at 1).
pub const UNOBSERVED_GENERATION: i64 = 0;

/// A resource keyward has not reported on yet reads as `status.observedGeneration: 0`
/// (the API server defaults it): to kstatus (Flux, kpt) and Argo CD a generation not yet
/// observed is in progress, where no status at all would read as current, and a `wait`
/// right after the first apply would pass before keyward has looked.
fn unobserved_until_reported(crd: &mut CustomResourceDefinition) {
    let schemas = crd
        .spec
        .versions
        .iter_mut()
        .filter_map(|version| version.schema.as_mut()?.open_api_v3_schema.as_mut());
    for schema in schemas {
        if let Some(status) = schema
            .properties
            .as_mut()
            .and_then(|properties| properties.get_mut("status"))
        {
            status.default = Some(JSON(
                serde_json::json!({"observedGeneration": UNOBSERVED_GENERATION}),
            ));
        }
    }
}

/// The CEL rule that bounds a resource's `metadata.name`, as `<kind>.rs` writes it.
const NAME_SIZE_RULE: &str = "self.metadata.name.size() <= ";

/// The longest `metadata.name` the CRD of `kind` admits, as the API server will enforce
/// it: the size its CEL rule on the name allows, else a DNS subdomain's 253 characters.
/// `None` for a kind keyward does not serve. What every name derived from it must fit.
pub fn longest_admitted_name(kind: &str) -> Option<usize> {
    let crd = crds().into_iter().find(|crd| crd.spec.names.kind == kind)?;
    let bound = crd
        .spec
        .versions
        .iter()
        .filter_map(|version| version.schema.as_ref()?.open_api_v3_schema.as_ref())
        .flat_map(|schema| schema.x_kubernetes_validations.iter().flatten())
        .find_map(|validation| validation.rule.strip_prefix(NAME_SIZE_RULE)?.parse().ok());
    Some(bound.unwrap_or(crate::names::OBJECT_NAME_LIMIT))
}

/// The CRDs as a multi-document YAML stream, as `keyward crds` prints it and `crds/`
/// holds it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_not_yet_reported_defaults_to_an_unobserved_generation() {
        for crd in crds() {
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref());
                let status = schema
                    .and_then(|schema| schema.properties.as_ref()?.get("status"))
                    .unwrap_or_else(|| panic!("{} has a status", crd.spec.names.kind));
                assert_eq!(
                    status.default,
                    Some(JSON(serde_json::json!({"observedGeneration": 0}))),
                    "{}",
                    crd.spec.names.kind
                );
                assert!(
                    status
                        .properties
                        .as_ref()
                        .is_some_and(|fields| fields.contains_key("observedGeneration")),
                    "the default names a field the schema keeps"
                );
            }
        }
    }

    #[test]
    fn the_longest_admitted_names_are_those_the_crds_rules_say() {
        assert_eq!(longest_admitted_name("EncryptionKey"), Some(50));
        assert_eq!(longest_admitted_name("OAuthClient"), Some(63));
        assert_eq!(longest_admitted_name("Secret"), None);
    }
}
