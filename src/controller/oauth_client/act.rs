//! What the OAuthClient reconciler does about the step [`super::decide`] chose: one
//! function per kind of step, generating secrets, writing and deleting the client's
//! Secrets (through [`SecretWriter`]) and telling of it in metrics and Events.
//!
//! It never decides — a step that finds the world other than the decision saw it does
//! nothing, and the next reconcile decides again — and never writes status; the
//! plaintext secret goes only into the delivery Secret and the verifier record.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::decide::{self, IssueCause, Step};
use super::reasons::{self, action};
use super::secrets::{self, Bookkeeping, SecretWriter};
use super::status::Problem;
use super::world::{Delivered, ImportSource, IssuedRecord, Observed, Verifier};
use crate::controller::context::{Context, Notice};
use crate::crd::OAuthClient;
use crate::crd::oauth_client::{OAuthClientSpec, SecretType};
use crate::crypto::envelope::EnvelopeError;
use crate::crypto::secret::{generate_client_id, generate_client_secret};
use crate::crypto::{
    Credential, HashAlgorithm, Keyring, PreviousCredential, SecretBytes, VerifierRecord,
};
use crate::{Error, Result};

/// What a step leaves the reconcile to do.
pub enum Next {
    /// Secrets were written: the next step (or the status) follows from what was just
    /// written and fresh reads of the rest.
    LookAgain,
    /// Nothing to write: report status, with `problem` keeping the client from being
    /// ready, and look again after `recheck_in` or on a change.
    Report {
        problem: Option<Problem>,
        recheck_in: Option<Duration>,
    },
}

/// Who takes a step: the shared context it tells through, the client, where its
/// Secrets go, and the time the step was decided at.
pub struct Actor<'a> {
    pub context: &'a Context,
    pub client: &'a OAuthClient,
    pub writer: &'a SecretWriter<'a>,
    pub now: Timestamp,
}

/// Takes `step`, decided from `observed`.
pub async fn take(step: Step, actor: &Actor<'_>, observed: &Observed) -> Result<Next> {
    let wrote = |()| Next::LookAgain;
    match step {
        Step::Refuse { reason, message } => Ok(Next::Report {
            problem: Some(Problem::warning(reason, message)),
            // A time refused as lying ahead is accepted once the clock passes it.
            recheck_in: decide::clock_recheck(observed, actor.now),
        }),
        Step::Wait { reason, message } => Ok(Next::Report {
            problem: Some(Problem::normal(reason, message)),
            recheck_in: None,
        }),
        Step::UpToDate {
            recheck_in,
            not_ready,
        } => actor.up_to_date(observed, recheck_in, not_ready).await,
        Step::Issue {
            version,
            client_id,
            cause,
        } => actor
            .issue(observed, version, client_id, cause)
            .await
            .map(wrote),
        Step::CompleteIssue => actor.complete_issue(observed).await.map(wrote),
        Step::Import { version, client_id } => {
            actor.import(observed, version, client_id).await.map(wrote)
        }
        Step::ExpirePrevious => actor.expire_previous(observed).await.map(wrote),
        Step::DeleteDelivery => actor.delete_delivery(observed).await.map(wrote),
    }
}

impl Actor<'_> {
    /// Nothing to do but put back the verifier's key label if it went missing:
    /// rotations find the record by that label, and the next step starts from the
    /// relabelled Secret.
    async fn up_to_date(
        &self,
        observed: &Observed,
        recheck_in: Option<Duration>,
        not_ready: Option<(&'static str, String)>,
    ) -> Result<Next> {
        let existing = self.writer.existing.verifier.as_ref();
        if let Some(key) = secrets::missing_key_label(&observed.verifier, existing) {
            self.writer.relabel_verifier(&key).await?;
            return Ok(Next::LookAgain);
        }
        Ok(Next::Report {
            problem: not_ready.map(|(reason, message)| Problem::normal(reason, message)),
            recheck_in,
        })
    }

    /// Generates a secret, delivers it, then writes the verifier record for it: a
    /// reconcile that stops between the two finds the delivery newer than the record
    /// and completes the issue.
    async fn issue(
        &self,
        observed: &Observed,
        version: i64,
        client_id: String,
        cause: IssueCause,
    ) -> Result<()> {
        let client_id = generated_unless_given(client_id)?;
        // Within SECRET_LENGTHS: the decision refuses any other length.
        let length = usize::try_from(self.client.spec.secret_length).unwrap_or_default();
        let secret = generate_client_secret(length).map_err(Error::Random)?;
        self.writer
            .delivery(&client_id, &secret, version, self.now)
            .await?;
        let record = VerifierRecord {
            client_id: client_id.clone(),
            secret_version: version,
            current: self.credential(observed, &secret)?,
            previous: self.previous_after_rotation(issued(observed)),
        };
        let bookkeeping = Bookkeeping {
            rotation_generation: self.rotation_generation(),
            issued_at: self.now,
            delivery_deleted_at: None,
        };
        self.writer.verifier(&record, &bookkeeping).await?;
        self.announce_issue(cause.reason(), version, &client_id)
            .await;
        Ok(())
    }

    /// Writes the verifier record for the secret a delivery holds whose issue stopped
    /// before its record was written.
    async fn complete_issue(&self, observed: &Observed) -> Result<()> {
        let delivered: &Delivered =
            observed
                .delivery
                .as_ref()
                .ok_or(Error::MissingObjectField {
                    kind: "delivery Secret",
                    field: "data",
                })?;
        let record = VerifierRecord {
            client_id: delivered.client_id.clone(),
            secret_version: delivered.secret_version,
            current: self.credential(observed, &delivered.secret)?,
            previous: self.previous_after_rotation(issued(observed)),
        };
        let bookkeeping = Bookkeeping {
            rotation_generation: self.rotation_generation(),
            issued_at: delivered.written_at,
            delivery_deleted_at: None,
        };
        self.writer.verifier(&record, &bookkeeping).await?;
        self.announce_issue(
            IssueCause::Initial.reason(),
            delivered.secret_version,
            &delivered.client_id,
        )
        .await;
        Ok(())
    }

    /// Keeps the imported plaintext in the verifier record; the source Secret is the
    /// user's and stays.
    async fn import(&self, observed: &Observed, version: i64, client_id: String) -> Result<()> {
        let ImportSource::Present { secret, .. } = &observed.import_source else {
            return Ok(());
        };
        let client_id = generated_unless_given(client_id)?;
        let record = VerifierRecord {
            client_id: client_id.clone(),
            secret_version: version,
            current: self.credential(observed, secret)?,
            previous: None,
        };
        let bookkeeping = Bookkeeping {
            rotation_generation: self.rotation_generation(),
            issued_at: self.now,
            delivery_deleted_at: None,
        };
        self.writer.verifier(&record, &bookkeeping).await?;
        let source = self
            .client
            .spec
            .import_from
            .as_ref()
            .map(|import| import.secret_name.as_str())
            .unwrap_or_default();
        let note = format!(
            "stored the secret of Secret {source:?} as version {version} for client id {client_id}; the source Secret may now be deleted"
        );
        self.context.metrics.client_secret_written(
            &self.client.namespace().unwrap_or_default(),
            reasons::IMPORTED,
        );
        self.context
            .publish(
                self.client,
                Notice::normal(reasons::IMPORTED, action::IMPORT, note),
            )
            .await;
        Ok(())
    }

    /// Drops the previous secret, whose grace period is over, from the record.
    async fn expire_previous(&self, observed: &Observed) -> Result<()> {
        let Some(issued) = issued(observed) else {
            return Ok(());
        };
        let mut record = issued.record.clone();
        record.previous = None;
        self.writer
            .verifier(&record, &Bookkeeping::of(issued))
            .await?;
        let note = format!(
            "the grace period of the secret before version {} is over; it no longer verifies",
            record.secret_version
        );
        self.context
            .publish(
                self.client,
                Notice::normal(reasons::PREVIOUS_SECRET_EXPIRED, action::EXPIRE, note),
            )
            .await;
        Ok(())
    }

    /// Deletes the delivery Secret after its TTL and records when in the verifier's
    /// bookkeeping.
    async fn delete_delivery(&self, observed: &Observed) -> Result<()> {
        let (Some(issued), Some(delivered)) = (issued(observed), &observed.delivery) else {
            return Ok(());
        };
        if !self.writer.delete_delivery(delivered).await? {
            return Ok(());
        }
        let bookkeeping = Bookkeeping {
            delivery_deleted_at: Some(self.now),
            ..Bookkeeping::of(issued)
        };
        self.writer.verifier(&issued.record, &bookkeeping).await?;
        let names = self.writer.names;
        let note = format!("deleted delivery Secret {:?} after its TTL", names.delivery);
        self.context
            .publish(
                self.client,
                Notice::normal(reasons::DELIVERY_SECRET_DELETED, action::DELETE, note),
            )
            .await;
        Ok(())
    }

    /// The credential the verifier keeps for `secret`, sealed under the keyring
    /// `observed` holds when the spec asks for `Encrypted`.
    fn credential(&self, observed: &Observed, secret: &SecretBytes) -> Result<Credential> {
        let namespace = self.client.namespace().unwrap_or_default();
        let verifier = &self.writer.names.verifier;
        credential_for(
            &self.client.spec,
            secret,
            observed.keyring(),
            &namespace,
            verifier,
        )
        .map_err(Error::Envelope)
    }

    /// `spec.rotation.generation`, which a new record answers.
    fn rotation_generation(&self) -> i64 {
        self.client
            .spec
            .rotation
            .as_ref()
            .map_or(0, |rotation| rotation.generation)
    }

    /// What a new record keeps of the one it replaces: its secret, verifying until the
    /// grace period from now is over (none without a grace period).
    fn previous_after_rotation(&self, issued: Option<&IssuedRecord>) -> Option<PreviousCredential> {
        let grace = self
            .client
            .spec
            .rotation
            .as_ref()
            .and_then(|rotation| rotation.grace_period)
            .map(Duration::from)
            .filter(|grace| !grace.is_zero())?;
        let old = issued?;
        let expires_at = self
            .now
            .checked_add(SignedDuration::try_from(grace).ok()?)
            .ok()?;
        Some(PreviousCredential {
            credential: old.record.current.clone(),
            expires_at,
        })
    }

    /// Counts a secret written and tells of it. A client's first secret gets no event: the
    /// Ready condition's transition and `status.issuedAt` record it, and at thousands of
    /// clients an event each would be a third of the API writes. Rotations and re-issues,
    /// which replace a working secret, are always told.
    async fn announce_issue(&self, reason: &'static str, version: i64, client_id: &str) {
        let (context, client) = (self.context, self.client);
        context
            .metrics
            .client_secret_written(&client.namespace().unwrap_or_default(), reason);
        if reason != IssueCause::Initial.reason() {
            let note = format!("issued secret version {version} for client id {client_id}");
            context
                .publish(client, Notice::normal(reason, action::ISSUE, note))
                .await;
        }
        if client.spec.secret_type == SecretType::Hashed && client.spec.hash_algorithm.is_legacy() {
            let note = format!(
                "verifier record uses the legacy algorithm {}",
                client.spec.hash_algorithm.as_str()
            );
            context
                .publish(
                    client,
                    Notice::warning(reasons::LEGACY_ALGORITHM, action::ISSUE, note),
                )
                .await;
        }
    }
}

/// The record `observed` holds, if it could be read.
fn issued(observed: &Observed) -> Option<&IssuedRecord> {
    match &observed.verifier {
        Verifier::Present(issued) => Some(issued),
        Verifier::Absent | Verifier::Damaged(_) => None,
    }
}

/// `client_id`, or a new one when it is empty (the spec names none and none was issued).
fn generated_unless_given(client_id: String) -> Result<String> {
    if client_id.is_empty() {
        generate_client_id().map_err(Error::Random)
    } else {
        Ok(client_id)
    }
}

/// The credential the spec asks the verifier to keep for `secret`; `Encrypted` seals it
/// under `keyring`, bound to the verifier Secret `verifier` in `namespace`.
pub fn credential_for(
    spec: &OAuthClientSpec,
    secret: &SecretBytes,
    keyring: Option<&Keyring>,
    namespace: &str,
    verifier: &str,
) -> Result<Credential, EnvelopeError> {
    Ok(match (spec.secret_type, keyring) {
        (SecretType::Plaintext, _) => Credential::Plaintext(secret.clone()),
        (SecretType::Hashed, _) => {
            Credential::hashed(HashAlgorithm::from(spec.hash_algorithm), secret.expose())
        }
        (SecretType::Encrypted, Some(keyring)) => {
            Credential::encrypted(keyring, namespace, verifier, secret.expose())?
        }
        (SecretType::Encrypted, None) => {
            return Err(EnvelopeError::Encrypt(
                "the EncryptionKey's keyring is not loaded",
            ));
        }
    })
}
