//! The leader fence: whether this process may write to AWS at this instant.
//!
//! With leader election, a replica may write only while it knows its Lease to be valid, with a
//! margin. The elector (`leader.rs`) extends the fence after every successful renewal to
//! `instant the renewal request was sent + lease duration − margin`, on the local monotonic
//! clock; any standby judges the Lease expired no earlier than `instant it saw that renewal +
//! lease duration`, which is later, so the two windows never overlap whatever the remote clocks
//! say. Every AWS client checks the fence right before each write request leaves the process
//! (`aws::CallMetrics`), so a leader paused by SIGSTOP, a GC-like stall or a frozen node cannot
//! write after resuming, not even from a retry inside the SDK. Without leader election the fence
//! is always open.
//!
//! What the margin covers: the time between the check and the request reaching AWS (queueing,
//! upload, network), and scheduling delays in the elector. A request already on the wire when
//! the process is paused is not recalled: the fence bounds when writes start, not when AWS
//! applies them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Shared, cheap to clone; every clone sees the same validity.
#[derive(Clone, Debug, Default)]
pub struct Fence(Option<Arc<Mutex<Option<Instant>>>>);

impl Fence {
    /// A fence that is always open: leader election is off, this process is the only writer.
    pub fn open() -> Fence {
        Fence(None)
    }

    /// A fence that is closed until the elector extends it.
    pub fn lease() -> Fence {
        Fence(Some(Arc::new(Mutex::new(None))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Instant>) -> T) -> Option<T> {
        self.0
            .as_ref()
            .map(|m| f(&mut m.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Allows writes until `until` (never shortens the validity: renewals are sequential, and
    /// an older renewal finishing late proves nothing newer).
    pub fn extend(&self, until: Instant) {
        self.with(|v| {
            if v.is_none_or(|old| old < until) {
                *v = Some(until);
            }
        });
    }

    /// Closes the fence at once: leading ended (lost, expired, released).
    pub fn revoke(&self) {
        self.with(|v| *v = None);
    }

    /// Whether a write may start at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.with(|v| v.is_some_and(|until| now < until))
            .unwrap_or(true)
    }

    /// How long writes stay allowed after `now`; `None` when the fence is open for good.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.with(|v| v.map_or(Duration::ZERO, |until| until.saturating_duration_since(now)))
    }
}

/// The error a fenced write fails with (inside the SDK's error chain; `aws::classify` finds it).
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica does not hold the leader lease with margin")]
pub struct Fenced;

/// Operations that only read. Everything else is treated as a write: a new kind of call is
/// fenced unless it is known to be harmless.
pub fn is_read(operation: &str) -> bool {
    ["Get", "Describe", "List", "Head"]
        .iter()
        .any(|prefix| operation.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_leader_election_the_fence_is_always_open() {
        let fence = Fence::open();
        assert!(fence.allows(Instant::now()));
        fence.revoke();
        assert!(fence.allows(Instant::now()), "nothing to revoke");
        assert_eq!(fence.remaining(Instant::now()), None);
    }

    #[test]
    fn a_lease_fence_is_closed_until_extended_and_closes_at_its_instant() {
        let fence = Fence::lease();
        let now = Instant::now();
        assert!(!fence.allows(now), "closed before the first acquisition");
        fence.extend(now + Duration::from_secs(2));
        assert!(fence.allows(now + Duration::from_secs(1)));
        assert!(
            !fence.allows(now + Duration::from_secs(2)),
            "closed at the instant"
        );
        assert_eq!(
            fence.remaining(now + Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn an_older_renewal_never_shortens_the_validity() {
        let fence = Fence::lease();
        let now = Instant::now();
        fence.extend(now + Duration::from_secs(5));
        fence.extend(now + Duration::from_secs(3));
        assert!(fence.allows(now + Duration::from_secs(4)));
    }

    #[test]
    fn revoking_closes_every_clone_at_once() {
        let fence = Fence::lease();
        let clone = fence.clone();
        fence.extend(Instant::now() + Duration::from_secs(60));
        assert!(clone.allows(Instant::now()));
        fence.revoke();
        assert!(!clone.allows(Instant::now()));
    }

    #[test]
    fn reads_are_get_describe_list_head_and_everything_else_writes() {
        for op in [
            "GetBucketPolicy",
            "DescribeInstances",
            "ListObjectVersions",
            "HeadBucket",
        ] {
            assert!(is_read(op), "{op}");
        }
        for op in [
            "RunInstances",
            "CreateBucket",
            "PutBucketTagging",
            "DeleteObjects",
            "TagResource",
            "UpdateTable",
            "StartInstances",
        ] {
            assert!(!is_read(op), "{op}");
        }
    }
}
