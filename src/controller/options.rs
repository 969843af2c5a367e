//! The operator's flags as the controllers read them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

/// Options of the operator process.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Watch these namespaces only; empty watches all.
    pub namespaces: Vec<String>,
    /// What the operator allows.
    pub policy: Policy,
    /// Name events are reported under (the pod name in a cluster).
    pub instance: Option<String>,
    /// Where and how re-encryption Jobs run.
    pub jobs: JobOptions,
    /// The leader election among replicas; `None` runs the controllers at once.
    pub election: Option<crate::leader::Election>,
    /// Reconciles each controller runs at once (per watched namespace); 0 for no bound.
    pub concurrency: u16,
}

/// What the operator's flags allow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// SHA-1 and MD5 may be used.
    pub allow_legacy_algorithms: bool,
    /// `Plaintext` secrets may be stored.
    pub allow_plaintext_secrets: bool,
}

/// Where and how the operator runs re-encryption Jobs (operator flags).
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// Container image of the Job: keyward itself.
    pub image: String,
    /// Node selector of the Job's pod.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Job's pod.
    pub tolerations: Vec<Toleration>,
    /// Whether `spec.reencryption.jobTemplate` may run: whoever may edit an
    /// EncryptionKey could otherwise run any image under any ServiceAccount of the
    /// namespace through the operator.
    pub allow_templates: bool,
    /// The operator's own ServiceAccount (namespace, name), when known: a Job template
    /// may never run as it.
    pub own_account: Option<(String, String)>,
}
