//! A status write races with the user's spec changes: its response may carry a spec
//! newer than the one the status was decided from, and nothing keyward remembers may
//! then stand in for deciding from that spec.
//!
//! A real admission webhook, served by the test, holds the operator's status write
//! while the test changes the spec, so the race is taken every time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keyward::crd::OAuthClient;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

use crate::support::{self, Operator, TestCluster, WAIT, manifest, wait};

/// The test's webhook server, stopped when dropped.
struct HoldingWebhook {
    process: Child,
    dir: PathBuf,
    port: u16,
    certificate: Vec<u8>,
}

impl HoldingWebhook {
    /// Serves on a free loopback port with a certificate made for it, holding the first
    /// status update of `name`.
    fn start(namespace: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keyward-webhook-{namespace}"));
        std::fs::create_dir_all(&dir).expect("webhook directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(made.success(), "a serving certificate is made");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/support/hold_webhook.py");
        let mut process = Command::new("python3")
            .arg(script)
            .arg(&dir)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .arg(name)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the webhook");
        let stdout = process.stdout.take().expect("piped stdout");
        let listening = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "listening");
        assert!(listening, "the webhook serves");
        Self {
            process,
            certificate: std::fs::read(&cert).expect("certificate"),
            dir,
            port,
        }
    }

    fn has(&self, file: &str) -> bool {
        self.dir.join(file).exists()
    }

    fn release(&self) {
        std::fs::write(self.dir.join("release"), b"").expect("release written");
    }

    /// The webhook's registration, for OAuthClients of `namespace` only.
    fn configuration(&self, namespace: &str) -> ValidatingWebhookConfiguration {
        let rule = RuleWithOperations {
            api_groups: Some(vec!["keyward.io".to_owned()]),
            api_versions: Some(vec!["v1alpha1".to_owned()]),
            operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
            resources: Some(vec![
                "oauthclients".to_owned(),
                "oauthclients/status".to_owned(),
            ]),
            scope: Some("Namespaced".to_owned()),
        };
        let in_namespace = LabelSelector {
            match_labels: Some(
                [(
                    "kubernetes.io/metadata.name".to_owned(),
                    namespace.to_owned(),
                )]
                .into(),
            ),
            ..LabelSelector::default()
        };
        ValidatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(webhook_name(namespace)),
                ..ObjectMeta::default()
            },
            webhooks: Some(vec![ValidatingWebhook {
                name: "hold.keyward-tests.io".to_owned(),
                admission_review_versions: vec!["v1".to_owned()],
                client_config: WebhookClientConfig {
                    url: Some(format!("https://127.0.0.1:{}/validate", self.port)),
                    ca_bundle: Some(ByteString(self.certificate.clone())),
                    ..WebhookClientConfig::default()
                },
                failure_policy: Some("Fail".to_owned()),
                namespace_selector: Some(in_namespace),
                rules: Some(vec![rule]),
                side_effects: "None".to_owned(),
                timeout_seconds: Some(30),
                ..ValidatingWebhook::default()
            }]),
        }
    }
}

impl Drop for HoldingWebhook {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn webhook_name(namespace: &str) -> String {
    format!("keyward-tests-hold-{namespace}")
}

/// Registers `webhook` and waits until the API server calls it: dry-run creates of an
/// OAuthClient reach it once the registration is in effect.
async fn register(cluster: &TestCluster, webhook: &HoldingWebhook) {
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client.clone());
    configurations
        .create(
            &PostParams::default(),
            &webhook.configuration(&cluster.namespace),
        )
        .await
        .expect("webhook registered");
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let probe: OAuthClient = serde_json::from_value(json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": "probe"}, "spec": {},
    }))
    .expect("an OAuthClient");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let in_effect = async {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        while !webhook.has("requests") {
            every.tick().await;
            clients
                .create(&dry_run, &probe)
                .await
                .expect("dry-run create");
        }
    };
    tokio::time::timeout(WAIT, in_effect)
        .await
        .expect("the API server calls the webhook");
}

#[tokio::test]
async fn a_rotation_requested_while_the_status_write_is_held_is_carried_out() {
    let cluster = support::cluster("status-held").await;
    let webhook = HoldingWebhook::start(&cluster.namespace, "billing");
    register(&cluster, &webhook).await;
    let _operator = Operator::start(
        &support::control_plane().kubeconfig,
        &cluster.namespace,
        &[],
    );
    manifest::apply_keyward(&cluster, "OAuthClient", "billing", json!({})).await;

    // The first status write, decided from generation 1, is held; meanwhile the user asks
    // for a rotation. The write then lands on generation 2, and its response says so.
    wait::until_true("the status write is held", WAIT, || webhook.has("held")).await;
    manifest::apply_keyward(
        &cluster,
        "OAuthClient",
        "billing",
        json!({"rotation": {"generation": 1}}),
    )
    .await;
    webhook.release();

    let clients: Api<OAuthClient> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let rotated = wait::until(
        &clients,
        "billing",
        "the rotation of generation 2 is carried out",
        |client| {
            let status = client.status.as_ref();
            status.and_then(|status| status.observed_generation) == client.metadata.generation
                && status.and_then(|status| status.secret_version) == Some(2)
                && wait::ready(client) == Some(("True".to_owned(), "Issued".to_owned()))
        },
    )
    .await;
    assert_eq!(rotated.metadata.generation, Some(2));

    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client.clone());
    configurations
        .delete(&webhook_name(&cluster.namespace), &DeleteParams::default())
        .await
        .expect("webhook unregistered");
}
