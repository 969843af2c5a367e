//! The Kubernetes objects of a rotation, built as pure values from the key and the
//! operator's Job options: the re-encryption Job and what it runs with (a ServiceAccount,
//! Role and RoleBinding of its own, the progress ConfigMap), and the external Job of
//! `spec.reencryption.jobTemplate` with the Secret handing it the key versions.
//!
//! Nothing here talks to the API server ([`super::cluster`] creates, reads and deletes
//! these objects). Every object carries the key's owner reference and keyward's labels
//! naming the key: [`is_keywards`] checks both marks before anything of a derived name
//! is used, replaced or deleted.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, JobTemplateSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, Secret, SecretVolumeSource, SecurityContext, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::controller::options::JobOptions;
use crate::crd::EncryptionKey;
use crate::crypto::{Keyring, VersionState};
use crate::names::{identity_name, progress_name, versions_secret_name};
use crate::store::{self, KEY_LABEL, MANAGED_BY, MANAGED_BY_VALUE, ROLE_LABEL};
use crate::{Error, Result};

/// The role label of the objects a rotation's Jobs run with, and of the Jobs.
pub const REENCRYPTION_ROLE: &str = "reencryption";
/// The role label of the Secret handing an external Job the key versions.
pub const KEY_VERSIONS_ROLE: &str = "key-versions";

/// Exit code of `keyward reencrypt` when some values do not decrypt: retrying cannot
/// help, so the Job fails at once.
const UNDECRYPTABLE_EXIT_CODE: i32 = 3;

/// The user the built-in Job's pod runs as (not root; the image's `nonroot`).
const JOB_USER: i64 = 65532;

/// Where the external Job's containers find the key versions.
const VERSIONS_MOUNT: &str = "/var/run/keyward/key-versions";

/// The volume of the external Job's pod holding the key versions.
const VERSIONS_VOLUME: &str = "keyward-key-versions";

/// Whether `meta` is of an object keyward made for `key` in `role`: the key's owner
/// reference (by uid) and keyward's labels naming the key. Anyone who may create objects
/// in the namespace can pick a name keyward derives; only keyward makes both marks.
pub fn is_keywards(meta: &ObjectMeta, key: &EncryptionKey, role: &str) -> bool {
    let labels = meta.labels.as_ref();
    let label = |name: &str| {
        labels
            .and_then(|labels| labels.get(name))
            .map(String::as_str)
    };
    store::is_owned_by(meta, key)
        && label(MANAGED_BY) == Some(MANAGED_BY_VALUE)
        && label(ROLE_LABEL) == Some(role)
        && label(KEY_LABEL) == Some(key.name_any().as_str())
}

/// The metadata of a rotation object `name` of `key`: in the key's namespace, owned by
/// it (as its controller), labelled as keyward's re-encryption objects of the key.
pub fn meta(key: &EncryptionKey, name: &str) -> Result<ObjectMeta> {
    let owner = key
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField {
            kind: "EncryptionKey",
            field: "metadata.uid",
        })?;
    Ok(ObjectMeta {
        name: Some(name.to_owned()),
        namespace: key.namespace(),
        labels: Some(store::labels(
            REENCRYPTION_ROLE,
            [(KEY_LABEL, key.name_any())],
        )),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The ServiceAccount the built-in Jobs of `key` run as.
pub fn service_account(key: &EncryptionKey) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        metadata: meta(key, &identity_name(&key.name_any()))?,
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    })
}

/// The Role of the Jobs' ServiceAccount: get/list/update Secrets in the key's namespace,
/// report progress in the key's ConfigMap only, read the key only.
pub fn role(key: &EncryptionKey) -> Result<Role> {
    let key_name = key.name_any();
    let progress = progress_name(&key_name);
    let rule = |groups: &str, resources: &str, verbs: &[&str], names: Option<&str>| PolicyRule {
        api_groups: Some(vec![groups.to_owned()]),
        resources: Some(vec![resources.to_owned()]),
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        resource_names: names.map(|name| vec![name.to_owned()]),
        ..PolicyRule::default()
    };
    Ok(Role {
        metadata: meta(key, &identity_name(&key_name))?,
        rules: Some(vec![
            rule("", "secrets", &["get", "list", "update"], None),
            rule(
                "",
                "configmaps",
                &["get", "update", "patch"],
                Some(&progress),
            ),
            rule("keyward.io", "encryptionkeys", &["get"], Some(&key_name)),
        ]),
    })
}

/// The RoleBinding giving the Jobs' ServiceAccount its Role.
pub fn role_binding(key: &EncryptionKey) -> Result<RoleBinding> {
    let identity = identity_name(&key.name_any());
    Ok(RoleBinding {
        metadata: meta(key, &identity)?,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: identity.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: identity,
            namespace: key.namespace(),
            ..Subject::default()
        }]),
    })
}

/// The ConfigMap the Jobs report progress in, as an attempt towards `target` starts:
/// clean progress, the target version only.
pub fn progress_config_map(key: &EncryptionKey, target: i64) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: meta(key, &progress_name(&key.name_any()))?,
        data: Some(BTreeMap::from([(
            "targetVersion".to_owned(),
            target.to_string(),
        )])),
        ..ConfigMap::default()
    })
}

/// `spec.reencryption.selector` as a label selector string, when set.
pub fn selector(key: &EncryptionKey) -> Result<Option<String>> {
    key.spec
        .reencryption
        .selector
        .clone()
        .map(|selector| {
            kube::core::Selector::try_from(selector)
                .map(|selector| selector.to_string())
                .map_err(|_| Error::MissingObjectField {
                    kind: "EncryptionKey",
                    field: "spec.reencryption.selector",
                })
        })
        .transpose()
}

/// The metadata of Job `job_name`: [`meta`] without the namespace, which the API the Job
/// is created through gives it.
fn job_meta(key: &EncryptionKey, job_name: &str) -> Result<ObjectMeta> {
    let mut metadata = meta(key, job_name)?;
    metadata.namespace = None;
    Ok(metadata)
}

/// The built-in re-encryption Job `job_name`: `keyward reencrypt` for the key, as its
/// ServiceAccount, locked down (non-root, read-only root, no capabilities, the runtime's
/// seccomp profile), failing at once when values do not decrypt and in time when its
/// pod never starts.
pub fn job(key: &EncryptionKey, options: &JobOptions, job_name: &str, pass: Pass) -> Result<Job> {
    let key_name = key.name_any();
    let labels = store::labels(REENCRYPTION_ROLE, [(KEY_LABEL, key_name.clone())]);
    let container = reencrypt_container(key, options, pass)?;
    Ok(Job {
        metadata: job_meta(key, job_name)?,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // A pod that never starts (image, quota, admission) fails the Job in time,
            // and the rotation retries with a reason instead of waiting forever.
            active_deadline_seconds: Some(3600),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        operator: "In".to_owned(),
                        values: vec![UNDECRYPTABLE_EXIT_CODE],
                        container_name: None,
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(identity_name(&key_name)),
                    restart_policy: Some("Never".to_owned()),
                    node_selector: (!options.node_selector.is_empty())
                        .then(|| options.node_selector.clone()),
                    tolerations: (!options.tolerations.is_empty())
                        .then(|| options.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(JOB_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// What a built-in Job rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Database values without a key id, under the current version (`--backfill`).
    Backfill,
    /// Everything under older versions, under the primary.
    Reencrypt,
}

/// The container of the built-in Job: `keyward reencrypt` for the key at the spec's
/// batch size and write rate, over the spec's selector, locked down.
fn reencrypt_container(key: &EncryptionKey, options: &JobOptions, pass: Pass) -> Result<Container> {
    let key_name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let reencryption = &key.spec.reencryption;
    let mut args = vec![
        "reencrypt".to_owned(),
        "--key".to_owned(),
        format!("{namespace}/{key_name}"),
        "--batch-size".to_owned(),
        reencryption.batch_size.to_string(),
        "--writes-per-second".to_owned(),
        reencryption.writes_per_second.to_string(),
        "--progress".to_owned(),
        progress_name(&key_name),
    ];
    if let Some(selector) = selector(key)? {
        args.extend(["--selector".to_owned(), selector]);
    }
    if pass == Pass::Backfill {
        args.push("--backfill".to_owned());
    }
    Ok(Container {
        name: "reencrypt".to_owned(),
        image: Some(options.image.clone()),
        command: Some(vec!["keyward".to_owned()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    })
}

/// `spec.reencryption.jobTemplate` as a Job template. What the parser says of a template
/// that does not parse goes to the log only: it may quote the template's values, and the
/// refusal reaches status and Events.
pub fn parse_template(
    key_name: &str,
    template: serde_json::Value,
) -> std::result::Result<JobTemplateSpec, String> {
    serde_json::from_value(template).map_err(|error| {
        tracing::warn!(key = key_name, %error, "spec.reencryption.jobTemplate does not parse as a batch/v1 Job template");
        "it does not parse as a batch/v1 Job template (the operator's log says where)".to_owned()
    })
}

/// The ServiceAccount a pod of `pod` runs as: `serviceAccountName`, else the deprecated
/// `serviceAccount` (which the API server copies into it), else `default`.
pub fn effective_account(pod: Option<&PodSpec>) -> &str {
    fn named(name: Option<&String>) -> Option<&str> {
        name.map(String::as_str).filter(|name| !name.is_empty())
    }
    pod.and_then(|pod| {
        named(pod.service_account_name.as_ref()).or_else(|| named(pod.service_account.as_ref()))
    })
    .unwrap_or("default")
}

/// Why a Job template may not run as ServiceAccount `account` of `namespace`, if it may
/// not: as any key's re-encryption account (each may update every Secret of its
/// namespace while a rotation runs), or as the operator's own (`own`, namespace and
/// name), whose rights span every namespace it watches.
pub fn refused_account(
    account: &str,
    namespace: &str,
    own: Option<&(String, String)>,
) -> Option<String> {
    if account.ends_with("-reencrypt") {
        return Some(format!(
            "it may not run as ServiceAccount {account:?}: accounts named *-reencrypt are the built-in re-encryption's"
        ));
    }
    if own
        .is_some_and(|(own_namespace, own_name)| own_namespace == namespace && own_name == account)
    {
        return Some(format!(
            "it may not run as ServiceAccount {account:?}: that is the operator's own"
        ));
    }
    None
}

/// Why `template` may not run for `key`, if it may not: the ServiceAccount its pods run
/// as (see [`refused_account`]).
pub fn refused_template(
    key: &EncryptionKey,
    template: &JobTemplateSpec,
    options: &JobOptions,
) -> Option<String> {
    let namespace = key.namespace().unwrap_or_default();
    let pod = template
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref());
    refused_account(
        effective_account(pod),
        &namespace,
        options.own_account.as_ref(),
    )
}

/// The labels of the external Job: the template's, with keyward's over them, so a
/// template can never make a Job look like another key's or like none of keyward's.
fn external_labels(
    template: Option<BTreeMap<String, String>>,
    keywards: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = template.unwrap_or_default();
    labels.extend(keywards.unwrap_or_default());
    labels
}

/// The versions an external Job is handed for a rotation to `target`: the keyring
/// without its retired versions, and the versions it re-encrypts from (comma-separated).
pub fn handed_versions(keyring: &Keyring, target: i64) -> (Keyring, String) {
    let mut handed = keyring.clone();
    handed
        .versions
        .retain(|version| version.state != VersionState::Retired);
    let old: Vec<String> = handed
        .versions
        .iter()
        .filter(|version| version.version != target)
        .map(|version| version.version.to_string())
        .collect();
    (handed, old.join(","))
}

/// The Secret handing the external Job of a rotation to `target` the `handed` keyring,
/// the `old` versions and the new one.
pub fn versions_secret(
    key: &EncryptionKey,
    handed: &Keyring,
    old: &str,
    target: i64,
) -> Result<Secret> {
    let key_name = key.name_any();
    let json = handed.to_json().map_err(Error::Key)?;
    let data = BTreeMap::from([
        (
            "keyring.json".to_owned(),
            ByteString(json.as_bytes().to_vec()),
        ),
        (
            "oldVersions".to_owned(),
            ByteString(old.as_bytes().to_vec()),
        ),
        (
            "newVersion".to_owned(),
            ByteString(target.to_string().into_bytes()),
        ),
    ]);
    store::secret(
        &versions_secret_name(&key_name, target),
        Some(key),
        store::labels(KEY_VERSIONS_ROLE, [(KEY_LABEL, key_name.clone())]),
        BTreeMap::new(),
        data,
    )
}

/// The external Job `job_name` from `template`: every container is told where the key
/// versions are (Secret `secret_name`, mounted read-only, and the version numbers in its
/// environment), and the Job carries keyward's name, owner and labels over the template's.
pub fn external_job(
    key: &EncryptionKey,
    template: JobTemplateSpec,
    job_name: &str,
    secret_name: &str,
    old: &str,
    target: i64,
) -> Result<Job> {
    let mut spec = template.spec.unwrap_or_default();
    let pod = spec.template.spec.get_or_insert_with(PodSpec::default);
    let env = [
        ("KEYWARD_KEY_VERSIONS_SECRET", secret_name.to_owned()),
        ("KEYWARD_OLD_VERSIONS", old.to_owned()),
        ("KEYWARD_NEW_VERSION", target.to_string()),
    ];
    for container in &mut pod.containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        for (name, value) in &env {
            vars.push(EnvVar {
                name: (*name).to_owned(),
                value: Some(value.clone()),
                ..Default::default()
            });
        }
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: VERSIONS_VOLUME.to_owned(),
                mount_path: VERSIONS_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
    }
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VERSIONS_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut metadata = job_meta(key, job_name)?;
    let template_labels = template.metadata.and_then(|meta| meta.labels);
    metadata.labels = Some(external_labels(template_labels, metadata.labels.take()));
    Ok(Job {
        metadata,
        spec: Some(spec),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Toleration;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::crypto::KeyMaterial;

    fn key(spec: serde_json::Value) -> EncryptionKey {
        EncryptionKey {
            metadata: ObjectMeta {
                name: Some("apim".to_owned()),
                namespace: Some("apps".to_owned()),
                uid: Some("uid-of-apim".to_owned()),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(spec).expect("spec"),
            status: None,
        }
    }

    fn options() -> JobOptions {
        JobOptions {
            image: "keyward:test".to_owned(),
            node_selector: BTreeMap::from([("pool".to_owned(), "jobs".to_owned())]),
            tolerations: vec![Toleration {
                key: Some("dedicated".to_owned()),
                ..Toleration::default()
            }],
            ..JobOptions::default()
        }
    }

    /// The owner reference every rotation object carries: the key's, as its controller.
    fn assert_owned_by_the_key(meta: &ObjectMeta) {
        let owners = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.kind, "EncryptionKey");
        assert_eq!(owner.name, "apim");
        assert_eq!(owner.uid, "uid-of-apim");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_without_the_parsers_words_or_its_values() {
        let template = serde_json::json!({
            "spec": {"template": {"spec": {"containers": "hunter2-in-a-template"}}}
        });
        let refusal = parse_template("apim", template).expect_err("not a Job template");
        assert!(refusal.contains("does not parse as a batch/v1 Job template"));
        assert!(
            !refusal.contains("hunter2") && !refusal.contains("invalid type"),
            "{refusal}"
        );
    }

    fn pod(name: Option<&str>, deprecated: Option<&str>) -> PodSpec {
        PodSpec {
            service_account_name: name.map(str::to_owned),
            service_account: deprecated.map(str::to_owned),
            ..PodSpec::default()
        }
    }

    #[test]
    fn the_effective_account_is_the_name_else_the_deprecated_field_else_default() {
        assert_eq!(effective_account(None), "default");
        assert_eq!(effective_account(Some(&pod(None, None))), "default");
        assert_eq!(effective_account(Some(&pod(Some(""), Some("")))), "default");
        assert_eq!(
            effective_account(Some(&pod(None, Some("apim-reencrypt")))),
            "apim-reencrypt"
        );
        assert_eq!(
            effective_account(Some(&pod(Some(""), Some("apim-reencrypt")))),
            "apim-reencrypt"
        );
        assert_eq!(
            effective_account(Some(&pod(Some("external"), Some("apim-reencrypt")))),
            "external"
        );
    }

    #[test]
    fn a_template_may_run_as_neither_a_reencrypt_account_nor_the_operators_own() {
        let own = ("keyward-system".to_owned(), "keyward".to_owned());
        assert!(refused_account("external", "apps", Some(&own)).is_none());
        assert!(refused_account("default", "apps", Some(&own)).is_none());
        // Any key's, not only this one's: each may update every Secret of the namespace.
        for account in ["apim-reencrypt", "other-key-reencrypt"] {
            let refusal = refused_account(account, "apps", Some(&own)).expect("refused");
            assert!(refusal.contains(account), "{refusal}");
        }
        assert!(refused_account("keyward", "keyward-system", Some(&own)).is_some());
        // The operator's account is only its own in its namespace.
        assert!(refused_account("keyward", "apps", Some(&own)).is_none());
        assert!(refused_account("keyward", "keyward-system", None).is_none());
    }

    #[test]
    fn a_template_is_refused_for_the_account_its_pods_run_as() {
        let apim = key(serde_json::json!({}));
        let as_account = |account: &str| -> JobTemplateSpec {
            serde_json::from_value(serde_json::json!({
                "spec": {"template": {"spec": {
                    "serviceAccountName": account,
                    "containers": [{"name": "external", "image": "external:1"}]
                }}}
            }))
            .expect("template")
        };
        let options = options();
        assert!(refused_template(&apim, &as_account("external"), &options).is_none());
        let refusal =
            refused_template(&apim, &as_account("apim-reencrypt"), &options).expect("refused");
        assert!(refusal.contains("apim-reencrypt"), "{refusal}");
    }

    #[test]
    fn template_labels_never_replace_keywards() {
        let template = BTreeMap::from([
            (ROLE_LABEL.to_owned(), "verifier".to_owned()),
            (KEY_LABEL.to_owned(), "other".to_owned()),
            (MANAGED_BY.to_owned(), "Helm".to_owned()),
            ("team".to_owned(), "payments".to_owned()),
        ]);
        let keywards = store::labels(REENCRYPTION_ROLE, [(KEY_LABEL, "apim".to_owned())]);
        let labels = external_labels(Some(template), Some(keywards.clone()));
        for (name, value) in &keywards {
            assert_eq!(labels.get(name), Some(value), "{name}");
        }
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    }

    #[test]
    fn only_an_object_with_the_keys_owner_reference_and_keywards_labels_is_keywards() {
        let key = key(serde_json::json!({}));
        let ours = meta(&key, "apim-versions-v2").expect("meta");
        assert!(is_keywards(&ours, &key, REENCRYPTION_ROLE));
        assert!(!is_keywards(&ours, &key, KEY_VERSIONS_ROLE));
        let unowned = ObjectMeta {
            owner_references: None,
            ..ours.clone()
        };
        assert!(!is_keywards(&unowned, &key, REENCRYPTION_ROLE));
        let unlabelled = ObjectMeta {
            labels: None,
            ..ours.clone()
        };
        assert!(!is_keywards(&unlabelled, &key, REENCRYPTION_ROLE));
        // A client's verifier of that name: owned by the client, not the key.
        let verifier = ObjectMeta {
            name: Some("apim-versions-v2".to_owned()),
            labels: Some(store::labels("verifier", [])),
            ..ObjectMeta::default()
        };
        assert!(!is_keywards(&verifier, &key, KEY_VERSIONS_ROLE));
    }

    #[test]
    fn a_key_without_a_uid_has_no_rotation_objects() {
        let mut key = key(serde_json::json!({}));
        key.metadata.uid = None;
        assert!(matches!(
            service_account(&key),
            Err(Error::MissingObjectField {
                field: "metadata.uid",
                ..
            })
        ));
    }

    #[test]
    fn the_jobs_identity_is_named_for_the_key_owned_by_it_and_labelled_as_keywards() {
        let apim = key(serde_json::json!({}));
        let account = service_account(&apim).expect("service account");
        let role = role(&apim).expect("role");
        let binding = role_binding(&apim).expect("role binding");
        for meta in [&account.metadata, &role.metadata, &binding.metadata] {
            assert_eq!(meta.name.as_deref(), Some("apim-reencrypt"));
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
            assert_owned_by_the_key(meta);
            assert!(is_keywards(meta, &apim, REENCRYPTION_ROLE));
        }
        assert_eq!(account.automount_service_account_token, Some(true));
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(binding.role_ref.name, "apim-reencrypt");
        let subjects = binding.subjects.expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "apim-reencrypt");
        assert_eq!(subjects[0].namespace.as_deref(), Some("apps"));
    }

    #[test]
    fn the_role_names_the_progress_config_map_and_the_key_and_no_other() {
        let rules = role(&key(serde_json::json!({})))
            .expect("role")
            .rules
            .expect("rules");
        let rule = |resource: &str| {
            rules
                .iter()
                .find(|rule| rule.resources.as_deref() == Some(&[resource.to_owned()][..]))
                .expect(resource)
        };
        let secrets = rule("secrets");
        assert_eq!(secrets.verbs, ["get", "list", "update"]);
        assert_eq!(secrets.resource_names, None);
        let config_maps = rule("configmaps");
        assert_eq!(config_maps.verbs, ["get", "update", "patch"]);
        assert_eq!(
            config_maps.resource_names.as_deref(),
            Some(&["apim-reencryption".to_owned()][..])
        );
        let keys = rule("encryptionkeys");
        assert_eq!(
            keys.api_groups.as_deref(),
            Some(&["keyward.io".to_owned()][..])
        );
        assert_eq!(keys.verbs, ["get"]);
        assert_eq!(
            keys.resource_names.as_deref(),
            Some(&["apim".to_owned()][..])
        );
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn an_attempt_starts_from_progress_that_holds_only_the_target() {
        let apim = key(serde_json::json!({}));
        let config_map = progress_config_map(&apim, 7).expect("config map");
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("apim-reencryption")
        );
        assert_owned_by_the_key(&config_map.metadata);
        assert_eq!(
            config_map.data,
            Some(BTreeMap::from([(
                "targetVersion".to_owned(),
                "7".to_owned()
            )]))
        );
    }

    #[test]
    fn a_backfill_job_is_the_same_job_asked_to_backfill() {
        let apim = key(serde_json::json!({}));
        let args = |pass| {
            job(&apim, &options(), "apim-backfill-v2-0", pass)
                .expect("job")
                .spec
                .and_then(|spec| spec.template.spec)
                .map(|pod| pod.containers[0].args.clone().unwrap_or_default())
                .expect("pod spec")
        };
        let (backfill, reencrypt) = (args(Pass::Backfill), args(Pass::Reencrypt));
        assert_eq!(backfill.last().map(String::as_str), Some("--backfill"));
        assert_eq!(backfill[..backfill.len() - 1], reencrypt[..]);
    }

    #[test]
    fn the_built_in_job_runs_keyward_reencrypt_locked_down_as_the_keys_account() {
        let apim = key(serde_json::json!({
            "reencryption": {"batchSize": 50, "writesPerSecond": 20,
                             "selector": {"matchLabels": {"app": "apim"}}}
        }));
        let job = job(&apim, &options(), "apim-reencrypt-v2-0", Pass::Reencrypt).expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("apim-reencrypt-v2-0"));
        assert_eq!(job.metadata.namespace, None);
        assert_owned_by_the_key(&job.metadata);
        assert!(is_keywards(&job.metadata, &apim, REENCRYPTION_ROLE));
        let spec = job.spec.expect("job spec");
        assert_eq!(spec.backoff_limit, Some(3));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let rule = &spec.pod_failure_policy.expect("pod failure policy").rules[0];
        assert_eq!(rule.action, "FailJob");
        assert_eq!(
            rule.on_exit_codes
                .as_ref()
                .map(|codes| codes.values.clone()),
            Some(vec![UNDECRYPTABLE_EXIT_CODE])
        );
        let pod_labels = spec.template.metadata.and_then(|meta| meta.labels);
        assert_eq!(
            pod_labels,
            Some(store::labels(
                REENCRYPTION_ROLE,
                [(KEY_LABEL, "apim".to_owned())]
            ))
        );
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.service_account_name.as_deref(), Some("apim-reencrypt"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.node_selector, Some(options().node_selector));
        assert_eq!(pod.tolerations, Some(options().tolerations));
        let pod_security = pod.security_context.expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(JOB_USER));
        assert_eq!(
            pod_security.seccomp_profile.map(|profile| profile.type_),
            Some("RuntimeDefault".to_owned())
        );
        let [container] = &pod.containers[..] else {
            panic!("one container: {:?}", pod.containers);
        };
        assert_eq!(container.image.as_deref(), Some("keyward:test"));
        assert_eq!(container.command, Some(vec!["keyward".to_owned()]));
        assert_eq!(
            container.args,
            Some(
                [
                    "reencrypt",
                    "--key",
                    "apps/apim",
                    "--batch-size",
                    "50",
                    "--writes-per-second",
                    "20",
                    "--progress",
                    "apim-reencryption",
                    "--selector",
                    "app=apim",
                ]
                .map(str::to_owned)
                .to_vec()
            )
        );
        let security = container
            .security_context
            .as_ref()
            .expect("security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .and_then(|capabilities| capabilities.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn without_options_the_job_has_no_node_selector_or_tolerations() {
        let apim = key(serde_json::json!({}));
        let job = job(
            &apim,
            &JobOptions::default(),
            "apim-reencrypt-v2-0",
            Pass::Reencrypt,
        )
        .expect("job");
        let pod = job.spec.and_then(|spec| spec.template.spec).expect("pod");
        assert_eq!(pod.node_selector, None);
        assert_eq!(pod.tolerations, None);
    }

    fn keyring_with_a_retired_version() -> Keyring {
        let mut keyring = Keyring::new(
            "apim",
            KeyMaterial::generate().expect("key"),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let now = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
        let second = keyring.stage(KeyMaterial::generate().expect("key"), now);
        keyring.promote(second).expect("promote 2");
        keyring.retire_all_but_primary(0).expect("retire 1");
        let third = keyring.stage(KeyMaterial::generate().expect("key"), now);
        keyring.promote(third).expect("promote 3");
        keyring
    }

    #[test]
    fn the_external_job_is_handed_every_unretired_version() {
        let keyring = keyring_with_a_retired_version();
        let (handed, old) = handed_versions(&keyring, 3);
        assert_eq!(old, "2");
        let versions: Vec<i64> = handed.versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, [2, 3]);
        let apim = key(serde_json::json!({}));
        let secret = versions_secret(&apim, &handed, &old, 3).expect("secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("apim-versions-v3"));
        assert!(is_keywards(&secret.metadata, &apim, KEY_VERSIONS_ROLE));
        let data = secret.data.expect("data");
        let text = |name: &str| String::from_utf8(data[name].0.clone()).expect("text");
        assert_eq!(text("oldVersions"), "2");
        assert_eq!(text("newVersion"), "3");
        assert_eq!(
            text("keyring.json"),
            handed.to_json().expect("keyring json").as_str()
        );
    }

    #[test]
    fn the_external_job_merges_keywards_name_labels_and_versions_into_the_template() {
        let apim = key(serde_json::json!({}));
        let template: JobTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "chosen-by-the-user",
                "labels": {"team": "payments", "keyward.io/encryption-key": "other"}
            },
            "spec": {"backoffLimit": 1, "template": {"spec": {
                "serviceAccountName": "external",
                "restartPolicy": "Never",
                "containers": [
                    {"name": "first", "image": "external:1",
                     "env": [{"name": "MODE", "value": "reencrypt"}]},
                    {"name": "second", "image": "external:1"}
                ],
                "volumes": [{"name": "scratch", "emptyDir": {}}]
            }}}
        }))
        .expect("template");
        let job = external_job(
            &apim,
            template,
            "apim-external-v3-0",
            "apim-versions-v3",
            "1,2",
            3,
        )
        .expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("apim-external-v3-0"));
        assert_eq!(job.metadata.namespace, None);
        assert_owned_by_the_key(&job.metadata);
        assert!(is_keywards(&job.metadata, &apim, REENCRYPTION_ROLE));
        let labels = job.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
        let spec = job.spec.expect("job spec");
        assert_eq!(spec.backoff_limit, Some(1));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.service_account_name.as_deref(), Some("external"));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].name, "scratch");
        assert_eq!(volumes[1].name, VERSIONS_VOLUME);
        assert_eq!(
            volumes[1]
                .secret
                .as_ref()
                .and_then(|secret| secret.secret_name.as_deref()),
            Some("apim-versions-v3")
        );
        assert_eq!(pod.containers.len(), 2);
        for container in &pod.containers {
            let env: Vec<(&str, Option<&str>)> = container
                .env
                .iter()
                .flatten()
                .map(|var| (var.name.as_str(), var.value.as_deref()))
                .collect();
            for wanted in [
                ("KEYWARD_KEY_VERSIONS_SECRET", Some("apim-versions-v3")),
                ("KEYWARD_OLD_VERSIONS", Some("1,2")),
                ("KEYWARD_NEW_VERSION", Some("3")),
            ] {
                assert!(env.contains(&wanted), "{wanted:?} in {env:?}");
            }
            let mounts = container.volume_mounts.as_ref().expect("mounts");
            assert!(mounts.iter().any(|mount| mount.name == VERSIONS_VOLUME
                && mount.mount_path == VERSIONS_MOUNT
                && mount.read_only == Some(true)));
        }
        assert!(
            pod.containers[0]
                .env
                .iter()
                .flatten()
                .any(|var| var.name == "MODE"),
            "the template's own environment stays"
        );
    }
}
