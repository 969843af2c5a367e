//! What keyward creates by name during a rotation, against the real control plane: an
//! object of someone else's under a derived name is never used or deleted, the
//! re-encryption identity has its rights only while its Job runs, a Job template never
//! runs as a re-encryption account, and every derived name fits its limit for the
//! longest name the CRDs admit.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use keyward::crd::OAuthClient;
use keyward::crd::encryption_key::RotationPhase;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::support::api::{keys, role_bindings, secrets};
use crate::support::ciphertext::write_ciphertexts;
use crate::support::encryption_key::{ROTATION, bump, until_distributed, until_rotated};
use crate::support::jobs::external_template;
use crate::support::oauth_client::{delivered_secret, keyward_verify, until_client_ready};
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::{self, jobs, manifest, wait};

fn longest_admitted(kind: &str) -> usize {
    keyward::crd::longest_admitted_name(kind).expect("a kind keyward serves")
}

/// A DNS-1123 name of exactly `length` characters starting with `stem`.
fn name_of_length(stem: &str, length: usize) -> String {
    let mut name: String = stem.chars().cycle().take(length).collect();
    if name.ends_with('-') {
        name.pop();
        name.push('z');
    }
    name
}

/// Whether `account` of `namespace` may update Secrets there, as the API server decides.
async fn may_update_secrets(client: &Client, namespace: &str, account: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{namespace}:{account}")),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some("update".to_owned()),
                resource: Some("secrets".to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("the API server reviews the access");
    answer.status.is_some_and(|status| status.allowed)
}

/// An OAuthClient whose verifier Secret has the name of a rotation's versions Secret
/// keeps it: the rotation neither mounts it into its Job nor deletes it, and says why it
/// stops. The client is never re-issued and its secret still verifies.
#[tokio::test]
async fn a_clients_verifier_named_like_a_rotations_versions_secret_is_never_deleted() {
    let cluster = support::cluster("owned-versions-secret").await;
    let _operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "portal",
        json!({"verifierSecret": {"name": "apim-versions-v2"}}),
    )
    .await;
    let issued = until_client_ready(&cluster, "portal", "Issued", Some(1)).await;
    let verifier = secrets(&cluster)
        .get("apim-versions-v2")
        .await
        .expect("the verifier");
    let presented = delivered_secret(&cluster, "portal-credentials").await;
    assert_eq!(keyward_verify(&cluster, "apim-versions-v2", &presented), 0);

    let spec = json!({
        "distribution": {"format": "Keyring"},
        "reencryption": {"jobTemplate": external_template(&cluster, "true").await},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    until_distributed(&cluster, "apim").await;
    bump(&cluster, "apim", &spec, 1).await;

    let stopped = wait::until_within(
        &keys(&cluster),
        "apim",
        "the rotation reports the Secret in its way",
        ROTATION,
        |key| wait::ready(key) == Some(("False".into(), "ObjectConflict".into())),
    )
    .await;
    let degraded = stopped
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("Secret \"apim-versions-v2\""),
        "{}",
        degraded.message
    );
    let external: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(
        external
            .get_opt("apim-external-v2-0")
            .await
            .expect("get")
            .is_none(),
        "no Job was started with the client's verifier mounted"
    );

    // A few more turns of the rotation change nothing of the client's.
    let apim = stopped
        .status
        .as_ref()
        .and_then(|status| status.rotation.as_ref());
    assert_eq!(
        apim.map(|rotation| rotation.phase),
        Some(RotationPhase::Reencrypting)
    );
    let still = secrets(&cluster)
        .get("apim-versions-v2")
        .await
        .expect("the verifier is still there");
    assert_eq!(
        still.uid(),
        verifier.uid(),
        "the verifier was never re-created"
    );
    assert_eq!(
        still.resource_version(),
        verifier.resource_version(),
        "the verifier was never written"
    );
    let client: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let client = client.get("portal").await.expect("the client");
    assert_eq!(
        client
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        issued
            .status
            .as_ref()
            .and_then(|status| status.secret_version),
        "the client was never re-issued"
    );
    assert_eq!(keyward_verify(&cluster, "apim-versions-v2", &presented), 0);
}

/// The `<key>-reencrypt` ServiceAccount may update the namespace's Secrets only while a
/// Job of the key runs: its RoleBinding exists during re-encryption (and comes back if a
/// restarted operator finds it missing), and is gone once the rotation has succeeded.
#[tokio::test]
async fn the_reencryption_identity_may_update_secrets_only_while_its_job_runs() {
    let cluster = support::cluster("owned-reencrypt-binding").await;
    let operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    // The external Job holds the rotation in re-encryption until the test says go.
    let wait_for_go = r#"until "$KUBECTL" get configmap go >/dev/null 2>&1; do sleep 1; done"#;
    let spec = json!({
        "distribution": {"format": "Keyring"},
        "reencryption": {"jobTemplate": external_template(&cluster, wait_for_go).await},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    until_distributed(&cluster, "apim").await;
    write_ciphertexts(&cluster, "apim", 5).await;
    assert!(!may_update_secrets(&cluster.client, &cluster.namespace, "apim-reencrypt").await);
    bump(&cluster, "apim", &spec, 1).await;

    wait::until_within(
        &role_bindings(&cluster),
        "apim-reencrypt",
        "the re-encryption identity is bound while its Job runs",
        ROTATION,
        |_| true,
    )
    .await;
    let rotating = keys(&cluster).get("apim").await.expect("the key");
    let phase = rotating
        .status
        .as_ref()
        .and_then(|status| status.rotation.as_ref())
        .map(|rotation| rotation.phase);
    assert_eq!(phase, Some(RotationPhase::Reencrypting));
    assert!(may_update_secrets(&cluster.client, &cluster.namespace, "apim-reencrypt").await);

    // The operator stops mid-re-encryption, once the built-in Job is done and the
    // template's still runs, and the binding goes missing meanwhile: the restarted
    // operator resumes the rotation with the binding restored.
    let jobs_api: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    wait::until_within(
        &jobs_api,
        "apim-reencrypt-v2-0",
        "the built-in Job has succeeded",
        ROTATION,
        |job| job.status.as_ref().and_then(|status| status.succeeded) == Some(1),
    )
    .await;
    drop(operator);
    role_bindings(&cluster)
        .delete("apim-reencrypt", &DeleteParams::default())
        .await
        .expect("the binding is deleted");
    let _operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    wait::until(
        &role_bindings(&cluster),
        "apim-reencrypt",
        "the resumed rotation restores the binding",
        |_| true,
    )
    .await;

    let go = ConfigMap {
        metadata: ObjectMeta {
            name: Some("go".to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(cluster.client.clone(), &cluster.namespace)
        .create(&PostParams::default(), &go)
        .await
        .expect("go");
    until_rotated(&cluster, "apim", 2).await;
    assert!(
        role_bindings(&cluster)
            .get_opt("apim-reencrypt")
            .await
            .expect("get")
            .is_none(),
        "no binding stands once the rotation has succeeded"
    );
    assert!(!may_update_secrets(&cluster.client, &cluster.namespace, "apim-reencrypt").await);

    // A binding an older keyward left standing after its last rotation goes too, at the
    // key's next reconcile.
    let key = keys(&cluster).get("apim").await.expect("the key");
    let leftover: RoleBinding = serde_json::from_value(json!({
        "metadata": {
            "name": "apim-reencrypt",
            "labels": {
                "app.kubernetes.io/managed-by": "keyward",
                "keyward.io/role": "reencryption",
                "keyward.io/encryption-key": "apim",
            },
            "ownerReferences": [key.controller_owner_ref(&()).expect("owner")],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "apim-reencrypt"},
        "subjects": [{"kind": "ServiceAccount", "name": "apim-reencrypt", "namespace": cluster.namespace}],
    }))
    .expect("a RoleBinding");
    role_bindings(&cluster)
        .create(&PostParams::default(), &leftover)
        .await
        .expect("the leftover binding");
    let mut touched = spec.clone();
    touched["rotation"]["generation"] = json!(1);
    touched["reencryption"]["batchSize"] = json!(50);
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", touched).await;
    wait::until_gone(
        &role_bindings(&cluster),
        "apim-reencrypt",
        "the leftover binding is taken away",
    )
    .await;
}

/// A Job template that names a re-encryption account through the deprecated
/// `serviceAccount` field (which the API server still honours) is refused like one that
/// names it in `serviceAccountName`, and no Job of it is created.
#[tokio::test]
async fn a_template_running_as_a_reencrypt_account_through_the_deprecated_field_is_refused() {
    let cluster = support::cluster("owned-template-account").await;
    let _operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let mut borrowing = external_template(&cluster, "true").await;
    let pod = &mut borrowing["spec"]["template"]["spec"];
    pod.as_object_mut()
        .expect("a pod spec")
        .remove("serviceAccountName");
    pod["serviceAccount"] = json!("apim-reencrypt");
    let pod = &borrowing["spec"]["template"]["spec"];
    assert!(pod.get("serviceAccountName").is_none(), "{pod}");
    let spec = json!({
        "distribution": {"format": "Keyring"},
        "reencryption": {"jobTemplate": borrowing},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", "apim", spec.clone()).await;
    until_distributed(&cluster, "apim").await;
    bump(&cluster, "apim", &spec, 1).await;

    let refused = wait::until_within(
        &keys(&cluster),
        "apim",
        "the template is refused",
        ROTATION,
        |key| wait::ready(key) == Some(("False".into(), "InvalidJobTemplate".into())),
    )
    .await;
    let message = refused
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| condition.message.clone())
        .unwrap_or_default();
    assert!(message.contains("apim-reencrypt"), "{message}");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(
        jobs.get_opt("apim-external-v2-0")
            .await
            .expect("get")
            .is_none(),
        "no Job of the template was created"
    );
}

/// An EncryptionKey with the longest name its CRD admits rotates to `Succeeded`, through
/// a built-in and a template Job, and its pods hold it: every name derived from it fits.
#[tokio::test]
async fn a_key_with_the_longest_name_the_crd_admits_rotates_to_succeeded() {
    let cluster = support::cluster("owned-longest-key").await;
    let _operator = operator_running_jobs(&cluster, &["--allow-job-templates"]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    let name = name_of_length("longest-key-name-", longest_admitted("EncryptionKey"));
    deploy(&cluster, "apim", 1).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Keyring"},
        "reencryption": {"jobTemplate": external_template(&cluster, "true").await},
    });
    manifest::apply_keyward(&cluster, "EncryptionKey", &name, spec.clone()).await;
    until_distributed(&cluster, &name).await;
    write_ciphertexts(&cluster, &name, 5).await;
    bump(&cluster, &name, &spec, 1).await;

    until_rotated(&cluster, &name, 2).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let ran = jobs
        .list(&ListParams::default().labels(&format!("keyward.io/encryption-key={name}")))
        .await
        .expect("list");
    assert_eq!(ran.items.len(), 2, "the built-in and the template Job ran");
    for job in &ran {
        assert!(job.name_any().len() <= 63, "{}", job.name_any());
        assert_eq!(
            job.status.as_ref().and_then(|status| status.succeeded),
            Some(1),
            "{} succeeded",
            job.name_any()
        );
    }
    until_distributed(&cluster, &name).await;
}

/// An OAuthClient with the longest name its CRD admits is issued: its Secrets' default
/// names and its label on them fit.
#[tokio::test]
async fn a_client_with_the_longest_name_the_crd_admits_becomes_ready() {
    let cluster = support::cluster("owned-longest-client").await;
    let _operator = support::Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &[],
    );
    let name = name_of_length("longest-client-name-", longest_admitted("OAuthClient"));
    manifest::apply_keyward(&cluster, "OAuthClient", &name, json!({})).await;
    until_client_ready(&cluster, &name, "Issued", Some(1)).await;
    let presented = delivered_secret(&cluster, &format!("{name}-credentials")).await;
    assert_eq!(
        keyward_verify(&cluster, &format!("{name}-verifier"), &presented),
        0
    );
}

/// A dot is allowed in a key's name and not in a pod's volume name: a key named with one
/// still reaches every pod of its target.
#[tokio::test]
async fn a_key_whose_name_has_a_dot_reaches_the_pods_of_its_target() {
    let cluster = support::cluster("owned-dotted-key").await;
    let _operator = support::Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &[],
    );
    deploy(&cluster, "apim", 1).await;
    let spec = json!({"targets": [{"kind": "Deployment", "name": "apim"}]});
    manifest::apply_keyward(&cluster, "EncryptionKey", "api.manager", spec).await;
    let key = until_distributed(&cluster, "api.manager").await;
    let distribution = key
        .status
        .as_ref()
        .and_then(|status| status.distribution.as_ref())
        .expect("distribution");
    assert_eq!((distribution.pods_in_sync, distribution.pods_total), (1, 1));
}
