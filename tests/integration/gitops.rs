//! keyward under a GitOps tool, against the real control plane: Argo CD and Flux
//! server-side apply their manifests again on every sync, under a field manager of their
//! own and with `force`. Syncing `examples/` over and over must leave every Secret
//! keyward wrote untouched, roll no pods, and keep every resource `Ready` for the
//! generation it has, which is what `kubectl wait`, kstatus and Argo CD read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::workload::rolled_out_and_available;
use crate::support::{self, Operator, TestCluster, jobs, manifest, wait};

/// The field manager Argo CD's server-side sync writes as.
const GITOPS_MANAGER: &str = "argocd-controller";

/// How many revisions are synced after the first.
const REVISIONS: usize = 10;

/// The label each sync stamps with the revision it applies. A label, not an annotation:
/// a Deployment's generation counts annotation changes too.
const REVISION_LABEL: &str = "gitops.example.com/revision";

/// Every document of `examples/*.yaml`, in file order.
fn examples() -> Vec<serde_json::Value> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("examples/ is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            let yaml = std::fs::read_to_string(file).expect("example is readable");
            manifest::documents(&yaml)
        })
        .collect()
}

/// The names of the documents of `kind`.
fn names_of(documents: &[serde_json::Value], kind: &str) -> Vec<String> {
    documents
        .iter()
        .filter(|document| document["kind"] == kind)
        .map(|document| {
            document["metadata"]["name"]
                .as_str()
                .expect("metadata.name")
                .to_owned()
        })
        .collect()
}

/// `documents` as the commit `revision` holds them: labelled with it.
fn at_revision(documents: &[serde_json::Value], revision: usize) -> Vec<serde_json::Value> {
    documents
        .iter()
        .map(|document| {
            let mut document = document.clone();
            document["metadata"]["labels"][REVISION_LABEL] = json!(revision.to_string());
            document
        })
        .collect()
}

/// One sync: every document server-side applied as [`GITOPS_MANAGER`], forcing
/// conflicts, as Argo CD (`ServerSideApply=true`) and Flux's kustomize-controller do.
async fn sync(cluster: &TestCluster, documents: &[serde_json::Value]) {
    let params = PatchParams::apply(GITOPS_MANAGER)
        .force()
        .validation_strict();
    for document in documents {
        let object: DynamicObject =
            serde_json::from_value(document.clone()).expect("a Kubernetes object");
        let types = object.types.as_ref().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(types).expect("valid apiVersion");
        let (resource, _) = pinned_kind(&cluster.client, &gvk)
            .await
            .expect("the kind is served");
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
        api.patch(&object.name_any(), &params, &Patch::Apply(document))
            .await
            .unwrap_or_else(|error| panic!("{} {} applies: {error}", gvk.kind, object.name_any()));
    }
}

fn is_ready<K: wait::Conditioned>(object: &K) -> bool {
    wait::ready(object).is_some_and(|(status, _)| status == "True")
}

/// What a rollout would change: the Deployment's generation, its ReplicaSets and the
/// pods that run.
#[derive(Debug, PartialEq, Eq)]
struct Workload {
    generation: Option<i64>,
    replica_sets: BTreeSet<String>,
    pods: BTreeSet<String>,
}

async fn workload(cluster: &TestCluster, name: &str) -> Workload {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let deployment = deployments.get(name).await.expect("Deployment");
    let uid = deployment.uid().expect("uid");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let replica_sets = replica_sets
        .list(&ListParams::default())
        .await
        .expect("ReplicaSets")
        .items
        .into_iter()
        .filter(|replica_set| {
            replica_set
                .owner_references()
                .iter()
                .any(|owner| owner.uid == uid)
        })
        .map(|replica_set| replica_set.name_any())
        .collect();
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| pod.name_any())
        .collect();
    Workload {
        generation: deployment.metadata.generation,
        replica_sets,
        pods,
    }
}

/// The resourceVersion of every Secret in the namespace, by name.
async fn secret_versions(cluster: &TestCluster) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    secrets
        .list(&ListParams::default())
        .await
        .expect("Secrets")
        .items
        .into_iter()
        .map(|secret| {
            let version = secret.resource_version().expect("resourceVersion");
            (secret.name_any(), version)
        })
        .collect()
}

/// The status of every example resource, by `kind/name` as kubectl takes it.
async fn statuses(
    clients: &Api<OAuthClient>,
    keys: &Api<EncryptionKey>,
    client_names: &[String],
    key_names: &[String],
) -> BTreeMap<String, serde_json::Value> {
    let mut statuses = BTreeMap::new();
    for name in client_names {
        let client = clients.get(name).await.expect("OAuthClient");
        let status = serde_json::to_value(&client.status).expect("status serializes");
        statuses.insert(format!("oauthclient/{name}"), status);
    }
    for name in key_names {
        let key = keys.get(name).await.expect("EncryptionKey");
        let status = serde_json::to_value(&key.status).expect("status serializes");
        statuses.insert(format!("encryptionkey/{name}"), status);
    }
    statuses
}

/// The last `count` lines of `log`, for a failure message.
fn last_lines(log: &str, count: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The field managers of `object` whose fields include some of `spec`.
fn spec_managers<K: Resource>(object: &K) -> BTreeSet<String> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.get("f:spec").is_some())
        })
        .map(|entry| entry.manager.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn syncing_the_examples_again_and_again_rewrites_no_secret_rolls_no_pod_and_stays_ready() {
    let cluster = support::cluster("gitops").await;
    let operator = Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &[],
    );
    let documents = examples();
    let client_names = names_of(&documents, "OAuthClient");
    let key_names = names_of(&documents, "EncryptionKey");
    let deployment_names = names_of(&documents, "Deployment");
    assert!(
        !client_names.is_empty() && !key_names.is_empty() && !deployment_names.is_empty(),
        "examples/ holds OAuthClients, an EncryptionKey and a Deployment"
    );
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let keys: Api<EncryptionKey> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);

    // The first sync, then everything issued, distributed and rolled out.
    sync(&cluster, &at_revision(&documents, 0)).await;
    for name in &key_names {
        wait::until(&keys, name, "the EncryptionKey is Ready", is_ready).await;
    }
    for name in &client_names {
        wait::until(&clients, name, "the OAuthClient is Ready", is_ready).await;
    }
    for name in &deployment_names {
        wait::until(
            &deployments,
            name,
            "the Deployment has rolled out",
            rolled_out_and_available,
        )
        .await;
    }
    let secrets_before = secret_versions(&cluster).await;
    for name in &client_names {
        for secret in [format!("{name}-verifier"), format!("{name}-credentials")] {
            assert!(secrets_before.contains_key(&secret), "{secret} exists");
        }
    }
    for name in &key_names {
        for secret in [format!("{name}-keyring"), format!("{name}-distribution")] {
            assert!(secrets_before.contains_key(&secret), "{secret} exists");
        }
    }
    let mut workloads_before = BTreeMap::new();
    for name in &deployment_names {
        workloads_before.insert(name.clone(), workload(&cluster, name).await);
    }
    let statuses_before = statuses(&clients, &keys, &client_names, &key_names).await;
    // Each revision stamps itself on every object, as a commit that changes only a
    // label does, so its first sync is a real update every watch sees; the second is
    // the unchanged re-apply of every periodic sync, which the API server drops.
    for revision in 1..=REVISIONS {
        for _ in 0..2 {
            sync(&cluster, &at_revision(&documents, revision)).await;
        }
    }
    // A resource of each kind created after the syncs: each controller takes its events
    // in order, so once both are Ready it has taken every event the syncs caused.
    let barrier = [
        json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": "gitops-barrier"}, "spec": {},
        }),
        json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "EncryptionKey",
            "metadata": {"name": "gitops-barrier"}, "spec": {},
        }),
    ];
    sync(&cluster, &barrier).await;
    wait::until(&clients, "gitops-barrier", "the barrier is Ready", is_ready).await;
    wait::until(&keys, "gitops-barrier", "the barrier is Ready", is_ready).await;
    // Reconciles run concurrently, so one the last syncs caused may still be running:
    // a graceful stop lets it finish, and what follows reads a settled cluster.
    let (exit, log) = operator.terminate(Duration::from_secs(30));
    assert!(exit.success(), "the operator stops cleanly: {exit}\n{log}");
    let log = last_lines(&log, 40);

    // No Secret keyward wrote (nor any other) was written again, but for the Secrets the
    // sync carries itself (the API manager's database URL), whose revision label changes.
    let synced_secrets = names_of(&documents, "Secret");
    let secrets_after = secret_versions(&cluster).await;
    let rewritten: Vec<String> = secrets_before
        .iter()
        .filter(|(name, _)| !synced_secrets.contains(name))
        .filter(|(name, version)| secrets_after.get(*name) != Some(*version))
        .map(|(name, version)| {
            let after = secrets_after.get(name).map(String::as_str);
            format!("{name} ({version} -> {after:?})")
        })
        .collect();
    assert!(
        rewritten.is_empty(),
        "syncing {REVISIONS} revisions rewrote Secrets: {rewritten:?}\nend of the operator log:\n{log}"
    );

    // No rollout: the same template generation, ReplicaSets and pods.
    for (name, before) in &workloads_before {
        assert_eq!(
            &workload(&cluster, name).await,
            before,
            "syncing {REVISIONS} revisions rolled Deployment {name}\nend of the operator log:\n{log}"
        );
    }

    // Nor did keyward's status of any resource move (no status churn for GitOps tools
    // to show).
    let statuses_after = statuses(&clients, &keys, &client_names, &key_names).await;
    for (resource, before) in &statuses_before {
        assert_eq!(
            statuses_after.get(resource),
            Some(before),
            "syncing {REVISIONS} revisions changed the status of {resource}"
        );
    }

    // What GitOps tools read: `kubectl wait` on Ready, status.observedGeneration, and
    // keyward's writes confined to status.
    let resources: Vec<String> = statuses_before.keys().cloned().collect();
    let output = Command::new(jobs::kubectl())
        .arg("--kubeconfig")
        .arg(&support::control_plane().kubeconfig)
        .args(["-n", &cluster.namespace])
        .args(["wait", "--for=condition=Ready", "--timeout=60s"])
        .args(&resources)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl wait --for=condition=Ready {resources:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let gitops_only = BTreeSet::from([GITOPS_MANAGER.to_owned()]);
    for name in &client_names {
        let client = clients.get(name).await.expect("OAuthClient");
        let observed = client.status.as_ref().and_then(|s| s.observed_generation);
        assert_eq!(observed, client.metadata.generation, "oauthclient/{name}");
        assert_eq!(spec_managers(&client), gitops_only, "oauthclient/{name}");
    }
    for name in &key_names {
        let key = keys.get(name).await.expect("EncryptionKey");
        let observed = key.status.as_ref().and_then(|s| s.observed_generation);
        assert_eq!(observed, key.metadata.generation, "encryptionkey/{name}");
        assert_eq!(spec_managers(&key), gitops_only, "encryptionkey/{name}");
    }
}
