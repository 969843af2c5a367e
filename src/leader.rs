//! Leader election: of all replicas, only the holder of a `coordination.k8s.io` Lease
//! runs the controllers; the others stand by.
//!
//! kube-lease-manager acquires and renews the Lease. On top of it each replica fences
//! itself: it watches the Lease and stops its controllers as soon as `renew_deadline` has
//! passed since it last saw a renewal. That is before the Lease expires for the others
//! (`lease_duration`), so a replica cut off from the API server has stopped acting
//! before another one may start.
//!
//! The fence reads no wall clock. A renewal's age is measured on this process's own
//! monotonic clock, from the moment the watch showed `renewTime` change, never by
//! comparing `renewTime` (the holder's wall clock, or whatever was written there) with
//! the local time: a holder's clock that is off or was stepped, or a `renewTime` written
//! far in the future or past, neither extends a term nor ends one. A renewal is seen
//! after it was made, so the fence can only close early, never late. What remains on
//! wall clocks is the takeover: a standby's kube-lease-manager takes the Lease once
//! `renewTime + lease_duration` has passed on the standby's clock, so the replicas'
//! clocks must agree to well within `lease_duration - renew_deadline` (NTP does), and a
//! renewal must reach the leader's watch within that margin too.
//!
//! Each replica needs an identity of its own in the Lease: the Pod's name, else the host
//! name with a random suffix — never the process id, which is 1 in every container.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::time::Instant;

/// Random bytes in an identity made from the host name: two replicas on one host (or
/// two containers with one host name) still differ.
const IDENTITY_SUFFIX_BYTES: usize = 4;

/// This replica's identity in the Lease: `instance` (the Pod's name, from `--instance`
/// or `$POD_NAME`) when it is given and not blank, else `host_name` (else `keyward`)
/// with `suffix`. Pod names are unique among running Pods; a host name alone is not
/// (containers of one Pod share it, and so may two processes on one machine).
pub fn identity(instance: Option<&str>, host_name: Option<&str>, suffix: &str) -> String {
    fn named(name: Option<&str>) -> Option<&str> {
        name.map(str::trim).filter(|name| !name.is_empty())
    }
    match named(instance) {
        Some(instance) => instance.to_owned(),
        None => format!("{}-{suffix}", named(host_name).unwrap_or("keyward")),
    }
}

/// [`identity`] with this machine's host name and a fresh random suffix.
pub fn default_identity(
    instance: Option<&str>,
) -> Result<String, crate::crypto::secret::RandomError> {
    let mut random = [0u8; IDENTITY_SUFFIX_BYTES];
    crate::crypto::secret::fill_random(&mut random)?;
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    Ok(identity(
        instance,
        host_name.as_deref(),
        &hex::encode(random),
    ))
}

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

/// The Lease's holder and its last renewal, as seen through the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    identity: String,
    /// `renewTime` as written: compared with the next one to tell a renewal, never
    /// with a clock.
    renew_time: MicroTime,
    /// When this replica saw that renewal (or this holder) first, on its monotonic clock.
    observed: Instant,
}

impl Holder {
    /// The holder the Lease shows now, `identity` with `renew_time`, seen at `now`: the
    /// same renewal as `previous` keeps the instant it was first seen (a relist or
    /// another field's change is not a renewal); a new renewal or holder is seen now.
    fn seen(
        previous: Option<&Holder>,
        identity: String,
        renew_time: MicroTime,
        now: Instant,
    ) -> Self {
        let observed = previous
            .filter(|previous| previous.identity == identity && previous.renew_time == renew_time)
            .map_or(now, |previous| previous.observed);
        Self {
            identity,
            renew_time,
            observed,
        }
    }
}

/// How long a term has left at `now` when the last renewal was seen at `observed`, or
/// `None` once `renew_deadline` has passed since.
fn term_left(observed: Instant, renew_deadline: Duration, now: Instant) -> Option<Duration> {
    (observed + renew_deadline)
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
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
        term_left(
            holder.observed,
            self.election.renew_deadline,
            Instant::now(),
        )
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
                let now = Instant::now();
                let holder = spec
                    .holder_identity
                    .zip(spec.renew_time)
                    .map(|(identity, at)| Holder::seen(seen.borrow().as_ref(), identity, at, now));
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

    /// A renewal seen `ago`, on the monotonic clock.
    fn seen_ago(ago: Duration) -> Instant {
        Instant::now()
            .checked_sub(ago)
            .expect("the clock has run that long")
    }

    fn renew_time(text: &str) -> MicroTime {
        MicroTime(text.parse().expect("timestamp"))
    }

    /// A view in which the lease manager says this replica leads and the Lease shows
    /// `holder` with a renewal this replica saw `ago`.
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
            renew_time: renew_time("2026-01-01T00:00:00Z"),
            observed: seen_ago(ago),
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
            renew_time: renew_time("2026-01-01T00:00:00Z"),
            observed: Instant::now(),
        }));
        tokio::time::timeout(Duration::from_secs(1), watching.fenced())
            .await
            .expect("fenced when another replica holds the Lease");
    }

    #[test]
    fn the_pod_name_is_the_identity_else_the_host_name_with_a_random_suffix() {
        assert_eq!(
            identity(Some("keyward-7d9f-x2"), Some("node-1"), "ab12"),
            "keyward-7d9f-x2"
        );
        for blank in [None, Some(""), Some("  ")] {
            assert_eq!(identity(blank, Some("node-1"), "ab12"), "node-1-ab12");
            assert_eq!(identity(blank, None, "ab12"), "keyward-ab12");
            assert_eq!(identity(blank, Some(""), "ab12"), "keyward-ab12");
        }
        // Two containers of one host (or two processes, each PID 1 in its container)
        // never share an identity.
        let first = default_identity(None).expect("randomness");
        let second = default_identity(Some("")).expect("randomness");
        assert_ne!(first, second);
        for identity in [&first, &second] {
            assert!(
                !identity.ends_with(&format!("-{}", std::process::id())),
                "{identity}"
            );
            assert_ne!(identity.as_str(), "keyward-1");
        }
    }

    #[test]
    fn a_renewal_is_dated_when_it_is_seen_and_only_a_new_one_moves_that_date() {
        let first_seen = seen_ago(Duration::from_secs(4));
        let renewed = Holder::seen(
            None,
            "me".into(),
            renew_time("2026-01-01T00:00:00Z"),
            first_seen,
        );
        assert_eq!(renewed.observed, first_seen);
        let now = Instant::now();
        // The same renewal again (a relist, a label change): still dated when first seen.
        let again = Holder::seen(
            Some(&renewed),
            "me".into(),
            renew_time("2026-01-01T00:00:00Z"),
            now,
        );
        assert_eq!(again.observed, first_seen);
        // A new renewTime, whatever its value, or a new holder: dated now.
        for (holder, at) in [
            ("me", "2026-01-01T00:00:05Z"),
            ("me", "1970-01-01T00:00:00Z"),
            ("other", "2026-01-01T00:00:00Z"),
        ] {
            let next = Holder::seen(Some(&renewed), holder.into(), renew_time(at), now);
            assert_eq!(next.observed, now, "{holder} at {at}");
        }
    }

    #[test]
    fn a_term_lasts_the_renew_deadline_from_when_the_renewal_was_seen() {
        let deadline = Duration::from_secs(10);
        let seen = Instant::now();
        assert_eq!(term_left(seen, deadline, seen), Some(deadline));
        assert_eq!(
            term_left(seen, deadline, seen + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(term_left(seen, deadline, seen + deadline), None);
        assert_eq!(
            term_left(seen, deadline, seen + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn the_holders_wall_clock_neither_ends_nor_extends_a_term() {
        let election = election();
        // A holder whose clock is an hour behind, or a century ahead: what counts is
        // when this replica saw the renewal.
        for written in [
            "2026-12-04T20:00:00Z",
            "2126-12-04T20:00:00Z",
            "1970-01-01T00:00:01Z",
        ] {
            let (fresh, _leading, holder) = view(&election, "me", Duration::ZERO);
            holder.send_replace(Some(Holder::seen(
                None,
                "me".into(),
                renew_time(written),
                Instant::now(),
            )));
            assert!(
                fresh.lead_left().is_some(),
                "a renewal written as {written} just seen"
            );
            holder.send_replace(Some(Holder::seen(
                None,
                "me".into(),
                renew_time(written),
                seen_ago(Duration::from_secs(11)),
            )));
            assert_eq!(
                fresh.lead_left(),
                None,
                "a renewal written as {written} seen 11s ago"
            );
        }
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
