//! OAuthClients: how fast the operator issues N of them, the same writes issued directly
//! (the baseline), and how long one takes on an idle operator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use keyward::crd::OAuthClient;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::apiserver::{self, Counts, Kind};

/// How many applies the benchmark, playing the user, has in flight.
pub const APPLY_CONCURRENCY: usize = 16;

/// How long the operator's writes may go on after the last client turned ready before
/// the window is closed anyway.
const SETTLE_BOUND: Duration = Duration::from_secs(60);

/// How many clients' writes the baseline has in flight, each client's in order: the
/// operator's own default `--concurrency`.
pub const BASELINE_CONCURRENCY: usize = 32;

/// The names of the OAuthClients of a namespace that are `Ready=True` for their current
/// generation, with when the benchmark first saw each so.
#[derive(Clone)]
pub struct ReadyWatch {
    ready: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl ReadyWatch {
    /// Watches `namespace` and returns once the watch has listed what exists.
    pub async fn start(client: &Client, namespace: &str) -> Self {
        let api: Api<OAuthClient> = Api::namespaced(client.clone(), namespace);
        let ready = Arc::new(Mutex::new(HashMap::new()));
        let changed = Arc::new(Notify::new());
        let listed = Arc::new(Notify::new());
        let (sink, notify, done) = (ready.clone(), changed.clone(), listed.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Apply(client) | Event::InitApply(client)) if is_ready(&client) => {
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(client.name_any())
                            .or_insert_with(Instant::now);
                        notify.notify_waiters();
                    }
                    Ok(Event::InitDone) => done.notify_one(),
                    _ => {}
                }
            }
        });
        listed.notified().await;
        Self {
            ready,
            changed,
            task: Arc::new(task),
        }
    }

    /// When `name` was first seen ready.
    pub fn ready_at(&self, name: &str) -> Option<Instant> {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// The latest time any of `names` turned ready.
    pub fn last_ready(&self, names: &[String]) -> Option<Instant> {
        let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .iter()
            .filter_map(|name| ready.get(name))
            .max()
            .copied()
    }

    /// Waits until `test` holds or `deadline` passes; returns whether it holds.
    pub async fn until(&self, deadline: Instant, test: impl Fn(&Self) -> bool) -> bool {
        loop {
            let changed = self.changed.notified();
            if test(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Notifications can be missed between the test and the wait; a short period
            // bounds what that costs.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changed).await;
        }
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn watcher(
    api: Api<OAuthClient>,
) -> impl futures::Stream<Item = Result<Event<OAuthClient>, watcher::Error>> {
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// `Ready=True` for the current generation.
pub fn is_ready(client: &OAuthClient) -> bool {
    let generation = client.metadata.generation;
    client.status.as_ref().is_some_and(|status| {
        status.conditions.iter().any(|condition| {
            condition.type_ == "Ready"
                && condition.status == "True"
                && condition.observed_generation == generation
        })
    })
}

/// Applies one OAuthClient with the default spec (a hashed SHA-256 secret), as a user
/// or a GitOps tool would.
pub async fn apply(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &oauth_client_resource());
    let document = json!({
        "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name}, "spec": {},
    });
    api.patch(
        name,
        &PatchParams::apply("bench-user"),
        &Patch::Apply(&document),
    )
    .await
    .map(drop)
}

fn oauth_client_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "keyward.io",
        "v1alpha1",
        "OAuthClient",
    ))
}

/// The outcome of issuing N clients.
pub struct Issued {
    /// From the first apply to the last client turning ready, or `None` when not all did
    /// within the timeout.
    pub elapsed: Option<Duration>,
    /// How many turned ready.
    pub ready: usize,
    /// The API server's requests from the first apply until the operator's writes
    /// stopped.
    pub requests: Counts,
    /// How long after the last client turned ready its writes stopped (within a second).
    pub settled_after: Duration,
}

/// Applies `count` OAuthClients named `prefix-NNNNN` and waits until all are ready.
pub async fn issue(
    admin: &Client,
    watch: &ReadyWatch,
    namespace: &str,
    prefix: &str,
    count: usize,
    timeout: Duration,
) -> Issued {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    let before = apiserver::requests(admin).await;
    let start = Instant::now();
    let deadline = start + timeout;
    futures::stream::iter(names.iter())
        .map(|name| apply(admin, namespace, name))
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("OAuthClients apply");
    let all = watch
        .until(deadline, |watch| {
            names.iter().all(|name| watch.ready_at(name).is_some())
        })
        .await;
    // The operator may go on writing (status, events) after the last client turned
    // ready; its writes are counted until they stop, so none spill into the baseline.
    let settle_start = Instant::now();
    let mut after = apiserver::requests(admin).await;
    let quiet = |counts: &Counts| -> u64 {
        apiserver::filtered(counts, |kind| {
            apiserver::is_write(kind) && apiserver::is_client_work(kind)
        })
        .values()
        .sum()
    };
    while settle_start.elapsed() < SETTLE_BOUND {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = apiserver::requests(admin).await;
        let settled = quiet(&next) == quiet(&after);
        after = next;
        if settled {
            break;
        }
    }
    Issued {
        settled_after: settle_start.elapsed(),
        elapsed: all.then(|| watch.last_ready(&names).expect("all ready") - start),
        ready: names
            .iter()
            .filter(|name| watch.ready_at(name).is_some())
            .count(),
        requests: apiserver::delta(&before, &after),
    }
}

/// The writes the operator made, from a window's counts: the writes of client-work
/// kinds less the benchmark's own applies of the OAuthClients.
pub fn operator_writes(window: &Counts, applied: u64) -> Counts {
    let mut writes = apiserver::filtered(window, |kind| {
        apiserver::is_write(kind) && apiserver::is_client_work(kind)
    });
    let user_apply = Kind {
        verb: "APPLY".into(),
        group: "keyward.io".into(),
        resource: "oauthclients".into(),
        subresource: String::new(),
    };
    if let Some(count) = writes.get_mut(&user_apply) {
        *count = count.saturating_sub(applied);
    }
    writes.retain(|_, count| *count > 0);
    writes
}

/// A write the baseline can issue, as the operator's counts name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    SecretCreate,
    SecretUpdate,
    SecretApply,
    StatusApply,
    CoreEvent,
    Event,
}

fn write_of(kind: &Kind) -> Option<Write> {
    match (
        kind.verb.as_str(),
        kind.group.as_str(),
        kind.resource.as_str(),
        kind.subresource.as_str(),
    ) {
        ("POST", "", "secrets", "") => Some(Write::SecretCreate),
        ("PUT", "", "secrets", "") => Some(Write::SecretUpdate),
        ("APPLY" | "PATCH", "", "secrets", "") => Some(Write::SecretApply),
        ("APPLY" | "PATCH" | "PUT", "keyward.io", "oauthclients", "status") => {
            Some(Write::StatusApply)
        }
        ("POST", "", "events", "") => Some(Write::CoreEvent),
        ("POST", "events.k8s.io", "events", "") => Some(Write::Event),
        _ => None,
    }
}

/// The baseline's plan: how many writes of each kind, spread over `count` clients as
/// evenly as whole numbers allow; and the kinds it cannot replay.
pub struct Plan {
    writes: Vec<(Write, u64)>,
    pub not_replayed: Counts,
}

impl Plan {
    pub fn of(operator: &Counts) -> Self {
        let mut writes: Vec<(Write, u64)> = Vec::new();
        let mut not_replayed = Counts::new();
        for (kind, count) in operator {
            match write_of(kind) {
                Some(write) => match writes.iter_mut().find(|(known, _)| *known == write) {
                    Some((_, total)) => *total += count,
                    None => writes.push((write, *count)),
                },
                None => {
                    not_replayed.insert(kind.clone(), *count);
                }
            }
        }
        Self {
            writes,
            not_replayed,
        }
    }

    /// The total writes the plan issues for `count` clients (without the applies).
    pub fn total(&self) -> u64 {
        self.writes.iter().map(|(_, total)| total).sum()
    }

    /// How many of `write` client `index` of `count` issues.
    fn share(&self, write: Write, index: usize, count: usize) -> u64 {
        let total = self
            .writes
            .iter()
            .find(|(known, _)| *known == write)
            .map_or(0, |(_, total)| *total);
        let (count, index) = (count as u64, index as u64);
        total / count + u64::from(index < total % count)
    }
}

/// Issues, for each of `count` clients, the user's apply (as `user`) and then its share
/// of `plan`'s writes (as `writer`), [`BASELINE_CONCURRENCY`] clients at a time; returns the elapsed time, or
/// `None` past `timeout`.
pub async fn baseline(
    user: &Client,
    writer: &Client,
    namespace: &str,
    plan: &Plan,
    count: usize,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let work = futures::stream::iter(0..count)
        .map(|index| replay(user, writer, namespace, plan, index, count))
        .buffer_unordered(BASELINE_CONCURRENCY)
        .try_collect::<Vec<()>>();
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(_)) => Some(start.elapsed()),
        Ok(Err(error)) => panic!("a baseline write failed: {error}"),
        Err(_) => None,
    }
}

async fn replay(
    user: &Client,
    writer: &Client,
    namespace: &str,
    plan: &Plan,
    index: usize,
    count: usize,
) -> Result<(), kube::Error> {
    let name = format!("raw-{index:05}");
    // The user's apply, through the same client as in the operator's run.
    apply(user, namespace, &name).await?;
    let secrets: Api<Secret> = Api::namespaced(writer.clone(), namespace);
    let params = PostParams {
        field_manager: Some("keyward-oauth-client".into()),
        ..PostParams::default()
    };
    let mut written: Vec<Secret> = Vec::new();
    for step in 0..plan.share(Write::SecretCreate, index, count) {
        let suffix = match step {
            0 => "credentials".to_owned(),
            1 => "verifier".to_owned(),
            n => format!("extra-{n}"),
        };
        let secret = secret_like_keywards(&format!("{name}-{suffix}"), step as usize);
        written.push(secrets.create(&params, &secret).await?);
    }
    for step in 0..plan.share(Write::SecretUpdate, index, count) {
        let Some(last) = written.last_mut() else {
            break;
        };
        let mut next = last.clone();
        if let Some(data) = next.data.as_mut() {
            data.insert("step".into(), ByteString(step.to_string().into_bytes()));
        }
        *last = secrets.replace(&last.name_any(), &params, &next).await?;
    }
    for step in 0..plan.share(Write::SecretApply, index, count) {
        let mut secret = secret_like_keywards(&format!("{name}-verifier"), 1);
        if let Some(data) = secret.data.as_mut() {
            data.insert("step".into(), ByteString(step.to_string().into_bytes()));
        }
        let apply = PatchParams::apply("keyward-oauth-client").force();
        secrets
            .patch(&secret.name_any(), &apply, &Patch::Apply(&secret))
            .await?;
    }
    let clients: Api<DynamicObject> =
        Api::namespaced_with(writer.clone(), namespace, &oauth_client_resource());
    for step in 0..plan.share(Write::StatusApply, index, count) {
        let status = json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": name},
            "status": {
                "observedGeneration": 1,
                "clientId": format!("bench-client-id-{index:05}"),
                "secretVersion": 1,
                "hashAlgorithm": "SHA-256",
                "verifierSecretName": format!("{name}-verifier"),
                "deliverySecretName": format!("{name}-credentials"),
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Issued",
                    "message": format!("secret version 1 issued (step {step})"),
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            },
        });
        let apply = PatchParams::apply("keyward-oauth-client").force();
        clients
            .patch_status(&name, &apply, &Patch::Apply(&status))
            .await?;
    }
    for _ in 0..plan.share(Write::CoreEvent, index, count) {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(writer.clone(), namespace);
        events
            .create(&PostParams::default(), &core_event(namespace, &name))
            .await?;
    }
    for _ in 0..plan.share(Write::Event, index, count) {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(writer.clone(), namespace);
        events
            .create(&PostParams::default(), &event(namespace, &name))
            .await?;
    }
    Ok(())
}

/// A Secret of the size and shape of keyward's delivery or verifier Secret.
fn secret_like_keywards(name: &str, role: usize) -> Secret {
    let (role, data) = if role == 0 {
        (
            "delivery",
            BTreeMap::from([
                ("clientId".to_owned(), random_text(22)),
                ("clientSecret".to_owned(), random_text(43)),
            ]),
        )
    } else {
        (
            "verifier",
            BTreeMap::from([
                ("clientId".to_owned(), random_text(22)),
                ("secretVersion".to_owned(), "1".to_owned()),
                ("algorithm".to_owned(), "SHA-256".to_owned()),
                ("hash".to_owned(), random_text(64)),
            ]),
        )
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "keyward".to_owned(),
                ),
                ("keyward.io/role".to_owned(), role.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                "keyward.io/issued-at".to_owned(),
                "2026-01-01T00:00:00Z".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn random_text(len: usize) -> String {
    let mut text = String::new();
    while text.len() < len {
        text.push_str(&keyward::crypto::secret::generate_client_id().expect("randomness"));
    }
    text.truncate(len);
    text
}

fn core_event(namespace: &str, name: &str) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("keyward.io/v1alpha1".into()),
            kind: Some("OAuthClient".into()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        },
        reason: Some("Issued".into()),
        message: Some("issued secret version 1".into()),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some("keyward".into()),
            ..EventSource::default()
        }),
        ..Event::default()
    }
}

fn event(namespace: &str, name: &str) -> k8s_openapi::api::events::v1::Event {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Issue".into()),
        reason: Some("Issued".into()),
        note: Some("issued secret version 1".into()),
        type_: Some("Normal".into()),
        reporting_controller: Some("keyward".into()),
        reporting_instance: Some("keyward-bench".into()),
        regarding: Some(ObjectReference {
            api_version: Some("keyward.io/v1alpha1".into()),
            kind: Some("OAuthClient".into()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Applies `samples` clients one at a time on an idle operator and returns each one's
/// time from apply to ready; `None` for one that was not ready within `timeout`.
pub async fn latencies(
    admin: &Client,
    watch: &ReadyWatch,
    namespace: &str,
    samples: usize,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let mut found = Vec::new();
    for index in 0..samples {
        let name = format!("latency-{index:03}");
        let start = Instant::now();
        apply(admin, namespace, &name)
            .await
            .expect("OAuthClient applies");
        let ready = watch
            .until(start + timeout, |watch| watch.ready_at(&name).is_some())
            .await;
        found.push(
            ready
                .then(|| watch.ready_at(&name))
                .flatten()
                .map(|at| at - start),
        );
        // Idle between samples, so each one meets a quiet operator.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    found
}
