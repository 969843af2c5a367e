//! A WSO2 API Manager fleet on the control plane: an EncryptionKey in the `Wso2Toml`
//! format, projected as the two environment variables WSO2's `deployment.toml` reads
//! (`$env{…}`), gives every pod a valid `key` and `old_key` at every instant of a
//! rotation, in the order WSO2's decrypt rule needs; and what each rendering gives a pod
//! is checked with the Java stand-in, which reads rows as WSO2 does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::support::api::{deployments, secrets};
use crate::support::encryption_key::{apply_key, bump, key_until, stored_keyring, until_rotated};
use crate::support::jobs;
use crate::support::operator::operator_running_jobs;
use crate::support::workload::deploy;
use crate::support::wso2_java::Wso2Java;
use crate::support::wso2_rendering::{Pair, pair_of, renderings};
use crate::support::{self, wait};

/// How long a watch may take to deliver what the API server already holds.
const WATCHED: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_wso2_fleet_holds_both_keys_of_every_rotation_phase_through_its_environment() {
    let cluster = support::cluster("wso2-rollout").await;
    let _operator = operator_running_jobs(&cluster, &[]);
    let _log = jobs::runner().log_on_failure(&cluster.namespace);
    deploy(&cluster, "apim", 2).await;
    let spec = json!({
        "targets": [{"kind": "Deployment", "name": "apim"}],
        "distribution": {"format": "Wso2Toml", "projection": "Env"},
    });
    apply_key(&cluster, "apim", spec.clone()).await;
    let ready = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    let distribution = ready
        .status
        .and_then(|status| status.distribution)
        .expect("distribution");
    assert_eq!((distribution.pods_in_sync, distribution.pods_total), (2, 2));
    assert_eq!(distribution.versions, vec![1]);

    // Every container reads both variables from the distribution Secret.
    let template = deployments(&cluster)
        .get("apim")
        .await
        .expect("Deployment")
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    let env: Vec<(String, String)> = template.containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|env| {
            let reference = env.value_from.as_ref()?.secret_key_ref.as_ref()?;
            assert_eq!(reference.name, "apim-distribution");
            Some((env.name.clone(), reference.key.clone()))
        })
        .collect();
    assert_eq!(
        env,
        [
            ("KEYWARD_ENCRYPTION_KEY".to_owned(), "key".to_owned()),
            (
                "KEYWARD_ENCRYPTION_OLD_KEY".to_owned(),
                "old_key".to_owned()
            ),
        ]
    );

    // Every rendering the Secret takes during a rotation, in order.
    let seen: Arc<Mutex<Vec<Pair>>> = Arc::default();
    let watch = {
        let seen = Arc::clone(&seen);
        let stream = renderings(&cluster, "apim-distribution");
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(pair) = stream.next().await {
                let mut seen = seen.lock().expect("not poisoned");
                if seen.last() != Some(&pair) {
                    seen.push(pair);
                }
            }
        })
    };
    wait_for_first_rendering(&seen).await;
    bump(&cluster, "apim", &spec, 1).await;
    until_rotated(&cluster, "apim", 2).await;
    let done = key_until(&cluster, "apim", "True", "KeyDistributed").await;
    assert_eq!(
        done.status
            .and_then(|status| status.distribution)
            .map(|distribution| distribution.versions),
        Some(vec![2])
    );
    let final_secret = secrets(&cluster)
        .get("apim-distribution")
        .await
        .expect("distribution Secret");
    wait_for_rendering(&seen, pair_of(&final_secret).expect("both keys")).await;
    watch.abort();

    let keyring = stored_keyring(&cluster, "apim").await;
    let hex_of = |version: i64| {
        hex::encode(
            keyring
                .version(version)
                .expect("version kept")
                .material
                .expose(),
        )
    };
    let (a, b) = (hex_of(1), hex_of(2));
    let pair = |key: &str, old_key: &str| Pair {
        key: key.to_owned(),
        old_key: old_key.to_owned(),
    };
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [pair(&a, &a), pair(&a, &b), pair(&b, &a), pair(&b, &b)],
        "before, staged, promoted, retired (WSO2-INTEROP §2)"
    );

    // What each rendering lets a WSO2 node read, as Java's JCE does it: rows with A's
    // key id until retirement, B's from staging on, and rows without a key id only while
    // old_key is the key that wrote them.
    let mut java = Wso2Java::start();
    let plaintext = b"consumer-secret";
    let under_a = java.encrypt(&a, true, 128, plaintext);
    let under_b = java.encrypt(&b, true, 128, plaintext);
    let a_without_key_id = java.encrypt(&a, false, 16, plaintext);
    let expected = [
        (true, false, true),
        (true, true, false),
        (true, true, true),
        (false, true, false),
    ];
    for (rendering, (reads_a, reads_b, reads_bare)) in seen.iter().zip(expected) {
        let mut reads = |value: &str| {
            java.decrypt(&rendering.key, Some(&rendering.old_key), true, value)
                .is_ok_and(|read| read == plaintext)
        };
        assert_eq!(
            (reads(&under_a), reads(&under_b), reads(&a_without_key_id)),
            (reads_a, reads_b, reads_bare),
            "{rendering:?}"
        );
    }
}

async fn wait_for_first_rendering(seen: &Mutex<Vec<Pair>>) {
    wait::until_true("the distribution Secret is watched", WATCHED, || {
        !seen.lock().expect("not poisoned").is_empty()
    })
    .await;
}

async fn wait_for_rendering(seen: &Mutex<Vec<Pair>>, last: Pair) {
    wait::until_true("the watch saw the final rendering", WATCHED, || {
        seen.lock().expect("not poisoned").last() == Some(&last)
    })
    .await;
}
