//! The errors of the operator. Each variant names the thing that failed; none carries
//! secret material in its message.

/// Everything that can fail in keyward.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// The kubeconfig or in-cluster configuration could not be loaded.
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),

    /// An object came back from the API server without a field it always has.
    #[error("{kind} has no {field}")]
    MissingObjectField {
        kind: &'static str,
        field: &'static str,
    },

    /// The CRDs could not be rendered as YAML.
    #[error("cannot render the CRDs as YAML: {0}")]
    RenderCrds(#[from] serde_yaml::Error),

    /// The operating system's random number generator failed.
    #[error(transparent)]
    Random(#[from] crate::crypto::secret::RandomError),

    /// Key material or a keyring could not be used.
    #[error(transparent)]
    Key(crate::crypto::keyring::KeyError),

    /// A value could not be encrypted or decrypted.
    #[error(transparent)]
    Envelope(#[from] crate::crypto::envelope::EnvelopeError),

    /// A Secret keyward was about to write turned out to belong to someone else.
    #[error("Secret {name:?} exists and is not keyward's to write")]
    SecretNotOwned { name: String },

    /// An object keyward was about to write exists and belongs to someone else.
    #[error("{kind} {name:?} exists and is not keyward's to write")]
    ObjectNotOwned { kind: String, name: String },

    /// `spec.reencryption.jobTemplate` cannot run: it does not parse, or it asks for what keyward refuses.
    #[error("spec.reencryption.jobTemplate cannot run: {0}")]
    JobTemplate(String),

    /// The verification scan of a rotation failed. Its source is the scan's own error,
    /// held as a trait object: the scan's error type holds this one, and naming it here
    /// would tie this module and the scan's into an import cycle.
    #[error("cannot scan for ciphertext: {0}")]
    Scan(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Leader election could not start.
    #[error("leader election failed: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),

    /// A reconcile panicked (a bug): caught, so that it fails this object only.
    #[error("the reconcile of {kind} {name} panicked")]
    ReconcilePanicked { kind: String, name: String },

    /// Status could not be serialized.
    #[error("cannot serialize status: {0}")]
    SerializeStatus(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable label for metrics (never contains object names or values).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Config(_) => "config",
            Self::MissingObjectField { .. } => "missing_object_field",
            Self::RenderCrds(_) => "render_crds",
            Self::Random(_) => "random",
            Self::Key(_) => "key",
            Self::Envelope(_) => "envelope",
            Self::SecretNotOwned { .. } => "secret_not_owned",
            Self::ObjectNotOwned { .. } => "object_not_owned",
            Self::JobTemplate(_) => "job_template",
            Self::Scan(_) => "scan",
            Self::LeaderElection(_) => "leader_election",
            Self::SerializeStatus(_) => "serialize_status",
            Self::ReconcilePanicked { .. } => "reconcile_panicked",
        }
    }
}

/// Result with keyward's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
