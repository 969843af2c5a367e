//! Leader election: of all replicas, only the holder of a `coordination.k8s.io` Lease
//! runs the controllers; the others stand by.
//!
//! kube-lease-manager acquires and renews the Lease. On top of it each replica fences
//! itself: it watches the Lease and stops its controllers as soon as `renew_deadline` has
//! passed since the last renewal it can see. That is before the Lease expires for the
//! others (`lease_duration`), so a replica cut off from the API server has stopped
//! acting before another one may start.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Where and how the replicas elect their leader.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's name in the Lease (`holderIdentity`).
    pub identity: String,
    /// How long a Lease stays held after its last renewal; then another replica may take
    /// it.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a renewal: shorter than
    /// `lease_duration`, so it has stopped before the Lease expires.
    pub renew_deadline: Duration,
}

impl Election {
    /// Checks the timings: renewals every half `renew_deadline`, in whole seconds, and
    /// a `renew_deadline` shorter than `lease_duration`.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline < Duration::from_secs(2) {
            return Err("--leader-election-renew-deadline must be at least 2s".to_owned());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(
                "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Seconds between renewals: half the renew deadline, so one failed renewal is
    /// survived.
    fn renew_every(&self) -> u64 {
        (self.renew_deadline.as_secs() / 2).max(1)
    }
}

/// What this replica is doing, for `/readyz` and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Not yet connected to the Lease.
    #[default]
    Starting,
    /// Another replica (named, when known) holds the Lease.
    Standby(Option<String>),
    /// This replica holds the Lease and runs the controllers.
    Leading,
    /// Shutting down.
    Stopping,
}

/// The current [`Role`], shared with the health endpoints.
#[derive(Debug, Default)]
pub struct RoleCell(Mutex<Role>);

impl RoleCell {
    /// The current role.
    pub fn get(&self) -> Role {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the role; says so in the log when it changes.
    pub fn set(&self, role: Role) {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *current != role {
            match &role {
                Role::Standby(Some(holder)) => {
                    tracing::info!(%holder, "standing by: another replica holds the lease")
                }
                Role::Standby(None) => tracing::info!("standing by for the lease"),
                Role::Leading => tracing::info!("holding the lease: running the controllers"),
                Role::Starting | Role::Stopping => {}
            }
            *current = role;
        }
    }
}

/// The Lease's holder and when it last renewed, as seen through the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    identity: String,
    renewed: SystemTime,
}

/// Runs `term` whenever this replica holds the Lease, until it returns (the controllers
/// return on SIGTERM) or a shutdown signal arrives while standing by. A term whose
/// renew deadline passes is dropped at once, which cancels every reconcile in flight;
/// the replica then stands by again. On the way out the Lease is released, so another
/// replica takes over without waiting for it to expire.
pub async fn lead<F, Fut>(
    client: Client,
    election: Election,
    role: &RoleCell,
    mut term: F,
) -> Result<(), kube_lease_manager::LeaseManagerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let duration = election.lease_duration.as_secs().max(2);
    let grace = duration
        .saturating_sub(election.renew_every())
        .clamp(1, duration - 1);
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    let (seen, holder) = watch::channel(None);
    let leases: Api<Lease> = Api::namespaced(client, &election.namespace);
    let observer = tokio::spawn(observe(leases, election.lease_name.clone(), seen));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut watching = Watching {
        leading,
        holder,
        election: &election,
    };
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            held = watching.acquired(role) => if !held { break },
        }
        role.set(Role::Leading);
        tokio::select! {
            // The fence first: a replica resumed after a pause (a stopped process, a
            // starved node) must find it passed before its controllers act again.
            biased;
            () = watching.fenced() => {
                tracing::warn!(
                    "leadership lost (no renewal within the renew deadline, or another holder): controllers stopped"
                );
            }
            () = term() => break,
        }
    }
    role.set(Role::Stopping);
    observer.abort();
    // Closing the channel makes the manager release the Lease.
    drop(watching);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "cannot release the lease"),
        Ok(Err(error)) => tracing::warn!(%error, "lease manager task failed"),
        Err(_) => tracing::warn!("lease not released within 5s; it expires by itself"),
    }
    Ok(())
}

/// This replica's view of the election: the manager's verdict and the Lease as watched.
struct Watching<'a> {
    leading: watch::Receiver<bool>,
    holder: watch::Receiver<Option<Holder>>,
    election: &'a Election,
}

impl Watching<'_> {
    /// Whether this replica leads now: the manager says so, and the Lease shows it as
    /// holder with a renewal inside the renew deadline. Returns how long that lasts.
    fn lead_left(&self) -> Option<Duration> {
        if !*self.leading.borrow() {
            return None;
        }
        let holder = self.holder.borrow();
        let holder = holder.as_ref()?;
        if holder.identity != self.election.identity {
            return None;
        }
        let deadline = holder.renewed.checked_add(self.election.renew_deadline)?;
        deadline
            .duration_since(SystemTime::now())
            .ok()
            .filter(|left| !left.is_zero())
    }

    /// Waits until this replica leads, reporting who does meanwhile. False when the
    /// election can no longer be followed (its tasks ended).
    async fn acquired(&mut self, role: &RoleCell) -> bool {
        loop {
            if self.lead_left().is_some() {
                return true;
            }
            let holder = self.holder.borrow().as_ref().map(|h| h.identity.clone());
            role.set(Role::Standby(
                holder.filter(|holder| *holder != self.election.identity),
            ));
            tokio::select! {
                changed = self.leading.changed() => if changed.is_err() { return false },
                changed = self.holder.changed() => if changed.is_err() { return false },
                // A renewal seen before the manager's verdict may age out meanwhile.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Returns once this replica no longer leads: its renew deadline passed without a
    /// renewal, another replica holds the Lease, or the manager says it lost it.
    async fn fenced(&mut self) {
        loop {
            let Some(left) = self.lead_left() else { return };
            tokio::select! {
                changed = self.leading.changed() => if changed.is_err() { return },
                changed = self.holder.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// Follows the Lease named `name`, publishing its holder and last renewal.
async fn observe(leases: Api<Lease>, name: String, seen: watch::Sender<Option<Holder>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(leases, config).default_backoff());
    // A relist that no longer finds the Lease means it was deleted meanwhile.
    let mut relisted = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relisted = false,
            Ok(Event::InitDone) if !relisted => {
                seen.send_replace(None);
            }
            Ok(Event::InitDone) => {}
            Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                relisted = true;
                let spec = lease.spec.unwrap_or_default();
                let holder = spec
                    .holder_identity
                    .zip(spec.renew_time)
                    .map(|(identity, at)| Holder {
                        identity,
                        renewed: at.0.into(),
                    });
                seen.send_replace(holder);
            }
            Ok(Event::Delete(_)) => {
                seen.send_replace(None);
            }
            Err(error) => tracing::warn!(%error, "watching the leader lease failed; retrying"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election() -> Election {
        Election {
            namespace: "keyward".to_owned(),
            lease_name: "keyward".to_owned(),
            identity: "me".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
        }
    }

    /// A view in which the lease manager says this replica leads and the Lease shows
    /// `holder` renewed `ago`.
    fn view<'a>(
        election: &'a Election,
        holder: &str,
        ago: Duration,
    ) -> (
        Watching<'a>,
        watch::Sender<bool>,
        watch::Sender<Option<Holder>>,
    ) {
        let (leading_tx, leading) = watch::channel(true);
        let (holder_tx, holder_rx) = watch::channel(Some(Holder {
            identity: holder.to_owned(),
            renewed: SystemTime::now() - ago,
        }));
        let watching = Watching {
            leading,
            holder: holder_rx,
            election,
        };
        (watching, leading_tx, holder_tx)
    }

    #[tokio::test]
    async fn the_fence_closes_at_the_renew_deadline_though_the_manager_still_says_leader() {
        let election = election();
        let (mut watching, _leading, _holder) = view(&election, "me", Duration::from_millis(9_700));
        assert!(watching.lead_left().is_some(), "leads until the deadline");
        // Nothing changes on either channel: only the deadline can end the term, and it
        // must, well before the Lease expires for the others (5s later).
        tokio::time::timeout(Duration::from_secs(3), watching.fenced())
            .await
            .expect("fenced at the renew deadline");
    }

    #[test]
    fn a_renewal_older_than_the_deadline_or_another_holder_is_not_leading() {
        let election = election();
        let (stale, _l, _h) = view(&election, "me", Duration::from_secs(11));
        assert_eq!(stale.lead_left(), None);
        let (other, _l, _h) = view(&election, "other", Duration::ZERO);
        assert_eq!(other.lead_left(), None);
        let (fresh, leading, _h) = view(&election, "me", Duration::ZERO);
        assert!(fresh.lead_left().is_some());
        leading.send_replace(false);
        assert_eq!(fresh.lead_left(), None, "the manager's verdict counts too");
    }

    #[tokio::test]
    async fn another_holder_fences_at_once() {
        let election = election();
        let (mut watching, _leading, holder) = view(&election, "me", Duration::ZERO);
        holder.send_replace(Some(Holder {
            identity: "other".to_owned(),
            renewed: SystemTime::now(),
        }));
        tokio::time::timeout(Duration::from_secs(1), watching.fenced())
            .await
            .expect("fenced when another replica holds the Lease");
    }

    #[test]
    fn timings_are_checked() {
        let mut election = election();
        assert_eq!(election.validate(), Ok(()));
        assert_eq!(election.renew_every(), 5);
        election.renew_deadline = Duration::from_secs(15);
        assert!(election.validate().is_err());
        election.renew_deadline = Duration::from_secs(1);
        assert!(election.validate().is_err());
    }
}
