//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one of several replicas
//! reconciles and writes to AWS at a time, and a paused leader cannot write after losing it.
//!
//! Our own elector rather than a crate (kube-lease-manager before): fencing AWS writes needs the
//! instant each renewal request was sent, and a prompt hand-over needs the standby to follow the
//! Lease as it changes. kube-lease-manager exposes neither: its standby slept until the expiry
//! it last saw, so a Lease released on SIGTERM was taken 5–10 s late, and a leader resumed
//! after SIGSTOP could not tell how long it had been valid. The protocol is client-go's
//! (`leaderelection` with a `LeaseLock`):
//!
//! - the record is read with GET and written with create, or replace carrying the
//!   resourceVersion read: of two candidates writing over the same version exactly one succeeds
//!   (the API server's optimistic concurrency; the other gets 409 and loses);
//! - the holder renews every duration/3;
//! - a standby judges expiry from the local monotonic instant at which it saw the record
//!   change (client-go's observedTime), never from the timestamps in it: node clocks disagree,
//!   and a renewTime says nothing about a writer that is paused;
//! - the standby follows the Lease with a watch (field selector `metadata.name`), so a release
//!   (holderIdentity cleared, as client-go does) is acted on at once and a renewal resets its
//!   view of the expiry as it happens;
//! - the leader extends the [`Fence`] after each renewal to `instant the request was sent +
//!   duration − margin`; every AWS client refuses writes once it lapses (`fence.rs`).
//!
//! Losing: a renewal refused because someone else wrote the Lease, or the fence lapsing without
//! a successful renewal (the API server unreachable for too long, or the process paused past
//! it — a 100 ms ticker notices a lapse at once after a resume and logs the pause), ends
//! leading. The fence is closed first, then the caller stops every worker and exits non-zero,
//! so that the pod restarts as a standby. A failed renewal is retried while the fence is still
//! valid, as client-go retries until its renew deadline: the fence already blocks writes the
//! moment validity lapses, and one dropped request should not restart a healthy leader. A pause
//! that ends while the fence is still valid is harmless for the same reason — no standby can
//! take the Lease before this replica's fence lapses — so it is logged and leading continues.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::Notify, task::JoinHandle};

use crate::{fence::Fence, metrics::SharedMetrics};

/// Why leading stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lost the lease {lease} to {}", holder.as_deref().unwrap_or("nobody (released)"))]
    Lost {
        lease: String,
        holder: Option<String>,
    },
    #[error(
        "the lease {lease} lapsed without a successful renewal{}",
        paused.map(|p| format!(" (the process was paused for {p:.1?})")).unwrap_or_default()
    )]
    Expired {
        lease: String,
        paused: Option<Duration>,
    },
    #[error("invalid lease duration {0:?}: must be whole seconds, at least 2s")]
    Duration(Duration),
}

/// Where the Lease lives and how long it is valid without renewal.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Also the longest a standby waits after the leader died.
    pub duration: Duration,
    /// Unique per process: `<instance>-<random>`.
    pub identity: String,
}

/// A unique holder identity: the instance (pod) name plus a random suffix, so that a restarted
/// pod with the same name never mistakes the previous process's lock for its own.
pub fn identity(instance: Option<&str>) -> String {
    format!(
        "{}-{:08x}",
        instance.unwrap_or("kaws"),
        rand::random::<u32>()
    )
}

/// The part of a Lease the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `None` when released (absent or empty holderIdentity).
    pub holder: Option<String>,
    /// The holder's leaseDurationSeconds.
    pub duration: Option<Duration>,
    /// Changes with every write, renewals included.
    pub version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What this process last saw of the Lease (`None`: absent), and the local instant at which it
/// saw it change.
#[derive(Clone, Debug)]
pub struct Observed {
    pub record: Option<Record>,
    pub since: Instant,
}

/// What a candidate does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No Lease yet: create it, holding it.
    Create,
    /// Released or expired: write ourselves in as holder over the version seen.
    Take,
    /// Ours already: renew it.
    Renew,
    /// Another holder's, valid until this instant (unless it changes meanwhile).
    WaitUntil(Instant),
}

/// The election decision, pure: the Lease as last observed × now × who we are. `duration` is
/// ours, used when the record names none.
pub fn decide(observed: &Observed, now: Instant, identity: &str, duration: Duration) -> Action {
    let Some(record) = &observed.record else {
        return Action::Create;
    };
    match &record.holder {
        None => Action::Take,
        Some(holder) if holder == identity => Action::Renew,
        Some(_) => {
            let expiry = observed.since + record.duration.unwrap_or(duration);
            if now >= expiry {
                Action::Take
            } else {
                Action::WaitUntil(expiry)
            }
        }
    }
}

/// How the leader's timing follows from the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub duration: Duration,
    /// Renew this long after the last renewal was sent (client-go: every duration/3 or so).
    pub renew_every: Duration,
    /// Retry a failed renewal after this long, while the fence is still valid.
    pub retry_every: Duration,
    /// Writes stop this long before a standby can take the Lease: covers requests on their way
    /// to AWS and scheduling delays.
    pub margin: Duration,
}

impl Timing {
    pub fn new(duration: Duration) -> Timing {
        let renew_every = duration / 3;
        Timing {
            duration,
            renew_every,
            retry_every: renew_every / 4,
            margin: (duration / 5).max(Duration::from_millis(500)),
        }
    }

    /// Until when writes may start after a renewal sent at `sent` succeeded.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        sent + self.duration - self.margin
    }
}

/// How often the leader checks its fence; a gap much longer than this between two ticks means
/// the process was paused (SIGSTOP, a frozen node, CPU starvation).
const TICK: Duration = Duration::from_millis(100);
const PAUSE: Duration = Duration::from_secs(1);
/// Wait after a failed read of the Lease while standing by: nothing is at stake.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// What the leader keeps between renewals.
struct Held {
    /// The Lease as our last write left it (its resourceVersion is the one to write over).
    lease: Lease,
    next_renew: Instant,
}

/// This process's candidacy for the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    lease: String,
    timing: Timing,
    metrics: SharedMetrics,
    observed: Option<Observed>,
    held: Option<Held>,
    changed: Arc<Notify>,
    watch: JoinHandle<()>,
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// Starts following the Lease; makes no write. `metrics` carries the fence to extend.
    pub fn new(
        client: Client,
        settings: &LeaseSettings,
        metrics: SharedMetrics,
    ) -> Result<Elector, LeaderError> {
        if settings.duration.as_secs() < 2 || settings.duration.subsec_nanos() != 0 {
            return Err(LeaderError::Duration(settings.duration));
        }
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let changed = Arc::new(Notify::new());
        let watch = tokio::spawn(follow(api.clone(), settings.name.clone(), changed.clone()));
        metrics.set_leading(false);
        Ok(Elector {
            api,
            lease: format!("{}/{}", settings.namespace, settings.name),
            timing: Timing::new(settings.duration),
            settings: settings.clone(),
            metrics,
            observed: None,
            held: None,
            changed,
            watch,
        })
    }

    fn fence(&self) -> &Fence {
        self.metrics.fence()
    }

    /// Records a read of the Lease; `since` moves only when the record changed.
    fn observe(&mut self, lease: Option<&Lease>, now: Instant) {
        let record = lease.map(Record::of);
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed { record, since: now });
        }
    }

    /// A Lease naming us as holder, renewed now.
    fn ours(&self, base: Option<Lease>, taking: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut lease = base.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if taking {
            let had_holder = spec.holder_identity.as_ref().is_some_and(|h| !h.is_empty());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(had_holder));
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds = i32::try_from(self.timing.duration.as_secs()).ok();
        spec.renew_time = Some(now);
        lease
    }

    /// Returns once this process holds the Lease. API errors are retried: nothing is at stake
    /// while not leading.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease, identity = %self.settings.identity, "acquired the lease: leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.lease, error = %e, "failed to read or write the lease; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(STANDBY_RETRY) => {}
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }

    /// One round: read, decide, and write or wait. `Ok(true)` once leading.
    async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let now = Instant::now();
        self.observe(current.as_ref(), now);
        let Some(observed) = &self.observed else {
            return Ok(false);
        };
        let action = decide(observed, now, &self.settings.identity, self.timing.duration);
        let write = match action {
            Action::WaitUntil(until) => {
                tracing::debug!(lease = %self.lease, holder = ?observed.record.as_ref().and_then(|r| r.holder.clone()), wait = ?until.saturating_duration_since(now), "the lease is held; standing by");
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = self.changed.notified() => {}
                }
                return Ok(false);
            }
            Action::Create => None,
            Action::Take => Some(self.ours(current, true)),
            Action::Renew => Some(self.ours(current, false)),
        };
        let sent = Instant::now();
        let result = match write {
            None => {
                self.api
                    .create(&PostParams::default(), &self.ours(None, true))
                    .await
            }
            Some(lease) => {
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                self.lead(sent, lease);
                Ok(true)
            }
            // Another candidate wrote first: read again.
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn lead(&mut self, sent: Instant, lease: Lease) {
        self.fence().extend(self.timing.valid_until(sent));
        self.metrics.set_leading(true);
        self.held = Some(Held {
            lease,
            next_renew: sent + self.timing.renew_every,
        });
    }

    fn lose(&mut self, error: LeaderError) -> LeaderError {
        // First of all: no AWS write from here on.
        self.fence().revoke();
        self.metrics.set_leading(false);
        self.held = None;
        error
    }

    fn expired(&self, paused: Option<Duration>) -> LeaderError {
        LeaderError::Expired {
            lease: self.lease.clone(),
            paused,
        }
    }

    /// Keeps the Lease renewed while leading; returns why leading ended, with the fence already
    /// closed. Cancel-safe: dropping it stops renewing (the fence then lapses on its own).
    pub async fn hold(&mut self) -> LeaderError {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            let Some(held) = &self.held else {
                return self.lose(self.expired(None));
            };
            let renew_at = held.next_renew;
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let gap = now.saturating_duration_since(last_tick);
                    last_tick = now;
                    let paused = (gap > PAUSE).then_some(gap);
                    if let Some(gap) = paused {
                        tracing::warn!(lease = %self.lease, paused = ?gap, "the process was paused");
                    }
                    if !self.fence().allows(now) {
                        return self.lose(self.expired(paused));
                    }
                }
                _ = tokio::time::sleep_until(renew_at.into()) => {
                    if let Err(e) = self.renew().await {
                        return self.lose(e);
                    }
                }
            }
        }
    }

    /// One renewal attempt, bounded by the fence's remaining validity.
    async fn renew(&mut self) -> Result<(), LeaderError> {
        let Some(held) = &self.held else {
            return Err(self.expired(None));
        };
        let lease = self.ours(Some(held.lease.clone()), false);
        let sent = Instant::now();
        let Some(left) = self.fence().remaining(sent).filter(|d| !d.is_zero()) else {
            return Err(self.expired(None));
        };
        let result = tokio::time::timeout(
            left,
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease),
        )
        .await;
        let retry_at = Instant::now() + self.timing.retry_every;
        match result {
            Err(_) => Err(self.expired(None)),
            Ok(Ok(lease)) => {
                self.fence().extend(self.timing.valid_until(sent));
                self.held = Some(Held {
                    lease,
                    next_renew: sent + self.timing.renew_every,
                });
                Ok(())
            }
            Ok(Err(e)) if is_conflict(&e) => {
                // Written since our last renewal: by someone else, unless our own earlier write
                // landed after all or someone edited labels; look.
                let left = self.fence().remaining(Instant::now()).unwrap_or_default();
                match tokio::time::timeout(left, self.api.get_opt(&self.settings.name)).await {
                    Err(_) => Err(self.expired(None)),
                    Ok(Ok(current)) => {
                        let record = current.as_ref().map(Record::of);
                        let holder = record.and_then(|r| r.holder);
                        match current {
                            Some(lease) if holder.as_deref() == Some(&self.settings.identity) => {
                                self.held = Some(Held {
                                    lease,
                                    next_renew: Instant::now(),
                                });
                                Ok(())
                            }
                            _ => Err(LeaderError::Lost {
                                lease: self.lease.clone(),
                                holder,
                            }),
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %self.lease, error = %e, "failed to read the lease after a conflict; retrying while it is still valid");
                        self.reschedule(retry_at);
                        Ok(())
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.lease, error = %e, valid_for = ?self.fence().remaining(Instant::now()), "failed to renew the lease; retrying while it is still valid");
                self.reschedule(retry_at);
                Ok(())
            }
        }
    }

    fn reschedule(&mut self, at: Instant) {
        if let Some(held) = &mut self.held {
            held.next_renew = at;
        }
    }

    /// Gives the Lease back (clears the holder) if this process holds it, so that a standby
    /// takes over at once instead of waiting for the expiry. Closes the fence first. Reads the
    /// Lease before writing, so a renewal interrupted by the caller cannot leave a stale
    /// version behind.
    pub async fn release(&mut self) {
        self.fence().revoke();
        self.metrics.set_leading(false);
        self.held = None;
        for _ in 0..3 {
            let attempt = async {
                let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
                    return Ok(false);
                };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
                    return Ok(false);
                }
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            };
            match tokio::time::timeout(self.timing.duration, attempt).await {
                Ok(Ok(true)) => {
                    tracing::info!(lease = %self.lease, "released the lease");
                    return;
                }
                Ok(Ok(false)) => return,
                Ok(Err(e)) if is_conflict(&e) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease, error = %e, "failed to release the lease; it expires on its own");
                    return;
                }
                Err(_) => break,
            }
        }
        tracing::warn!(lease = %self.lease, "failed to release the lease; it expires on its own");
    }
}

/// Follows the Lease with a watch and wakes the candidate on every change. Errors are retried
/// with the watcher's backoff; meanwhile the candidate still wakes at the expiry it computed.
async fn follow(api: Api<Lease>, name: String, changed: Arc<Notify>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::debug!(error = %e, "lease watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "kaws-a-00000001";
    const D: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, duration: Option<u64>) -> Option<Record> {
        Some(Record {
            holder: holder.map(str::to_string),
            duration: duration.map(Duration::from_secs),
            version: Some("7".to_string()),
        })
    }

    #[test]
    fn election_decisions() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (why, record, observed since, now, expected)
        let cases: Vec<(&str, Option<Record>, Instant, Instant, Action)> = vec![
            ("no Lease yet: create it", None, t0, t0, Action::Create),
            (
                "released (holder cleared): take it at once, whatever was observed when",
                held_by(None, Some(15)),
                t0,
                t0,
                Action::Take,
            ),
            (
                "ours: renew",
                held_by(Some(ME), Some(15)),
                t0,
                t0 + s(60),
                Action::Renew,
            ),
            (
                "another holder, just seen changing: wait a full duration from the sighting",
                held_by(Some("kaws-b-1"), Some(15)),
                t0,
                t0,
                Action::WaitUntil(t0 + s(15)),
            ),
            (
                "another holder, unchanged for less than its duration: keep waiting",
                held_by(Some("kaws-b-1"), Some(15)),
                t0,
                t0 + s(14),
                Action::WaitUntil(t0 + s(15)),
            ),
            (
                "another holder, unchanged for its whole duration: expired, take it",
                held_by(Some("kaws-b-1"), Some(15)),
                t0,
                t0 + s(15),
                Action::Take,
            ),
            (
                "the holder's own duration counts, not ours",
                held_by(Some("kaws-b-1"), Some(40)),
                t0,
                t0 + s(20),
                Action::WaitUntil(t0 + s(40)),
            ),
            (
                "a record without a duration: ours",
                held_by(Some("kaws-b-1"), None),
                t0,
                t0 + s(1),
                Action::WaitUntil(t0 + D),
            ),
        ];
        for (why, record, since, now, expected) in cases {
            let observed = Observed { record, since };
            assert_eq!(decide(&observed, now, ME, D), expected, "{why}");
        }
    }

    #[test]
    fn an_empty_holder_is_a_released_lease() {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                ..Default::default()
            }),
        };
        assert_eq!(Record::of(&lease).holder, None);
    }

    #[test]
    fn the_fence_lapses_before_any_standby_can_take_the_lease() {
        for secs in [2, 3, 15, 60] {
            let t = Timing::new(Duration::from_secs(secs));
            let sent = Instant::now();
            // A standby sees the renewal no earlier than it was sent, and waits a full duration.
            let earliest_takeover = sent + t.duration;
            assert!(
                t.valid_until(sent) + t.margin <= earliest_takeover,
                "{secs}s"
            );
            assert!(t.margin >= Duration::from_millis(500), "{secs}s");
            // Renewals come several times within the validity, retries several times between.
            assert!(t.renew_every * 2 < t.duration - t.margin, "{secs}s");
            assert!(t.retry_every < t.renew_every, "{secs}s");
        }
    }
}
