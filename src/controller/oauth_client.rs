//! Reconciler of `OAuthClient`.
//!
//! Credential issuing is not built yet: the reconciler reports that in status, as
//! `Ready=False` with reason `NotImplemented`, and issues nothing.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};

use super::{Context, apply_status, namespaced_api, not_implemented, watcher_config};
use crate::Result;
use crate::crd::OAuthClient;

/// The OAuthClient controller, watching `api`.
pub fn controller(api: Api<OAuthClient>, _context: Arc<Context>) -> Controller<OAuthClient> {
    Controller::new(api, watcher_config())
}

/// Brings one OAuthClient's status up to date.
pub async fn reconcile(client: Arc<OAuthClient>, context: Arc<Context>) -> Result<Action> {
    let api = namespaced_api(&context.client, client.as_ref())?;
    let status = not_implemented(
        client.status.clone().unwrap_or_default(),
        client.metadata.generation,
        "this keyward version does not issue OAuth client credentials yet",
        Timestamp::now(),
    );
    apply_status(&api, client.as_ref(), client.status.as_ref(), &status).await?;
    context.record_success(client.as_ref());
    Ok(Action::await_change())
}
