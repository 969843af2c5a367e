//! Waiting for the Events keyward publishes, as `kubectl describe` shows them.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{TestCluster, WAIT};

/// Waits until an event about `object` with `reason` (and `type_`, when given) exists.
pub async fn until_event(
    cluster: &TestCluster,
    object: &str,
    type_: Option<&str>,
    reason: &str,
) -> Event {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stream = watcher(events, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let found = async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.try_next().await.expect("events watch") {
            if event.involved_object.name.as_deref() == Some(object)
                && event.reason.as_deref() == Some(reason)
                && type_.is_none_or(|type_| event.type_.as_deref() == Some(type_))
            {
                return event;
            }
        }
        panic!("the events watch ended")
    };
    tokio::time::timeout(WAIT, found).await.unwrap_or_else(|_| {
        panic!("timed out after {WAIT:?} waiting for a {type_:?} event {reason} about {object}")
    })
}
