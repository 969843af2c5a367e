//! Reconciler of `EncryptionKey`.
//!
//! Key management is not built yet: the reconciler reports that in status, as
//! `Ready=False` with reason `NotImplemented`, and creates no key.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};

use super::{Context, apply_status, namespaced_api, not_implemented, watcher_config};
use crate::Result;
use crate::crd::EncryptionKey;

/// The EncryptionKey controller, watching `api`.
pub fn controller(api: Api<EncryptionKey>, _context: Arc<Context>) -> Controller<EncryptionKey> {
    Controller::new(api, watcher_config())
}

/// Brings one EncryptionKey's status up to date.
pub async fn reconcile(key: Arc<EncryptionKey>, context: Arc<Context>) -> Result<Action> {
    let api = namespaced_api(&context.client, key.as_ref())?;
    let status = not_implemented(
        key.status.clone().unwrap_or_default(),
        key.metadata.generation,
        "this keyward version does not manage encryption keys yet",
        Timestamp::now(),
    );
    apply_status(&api, key.as_ref(), key.status.as_ref(), &status).await?;
    context.record_success(key.as_ref());
    Ok(Action::await_change())
}
