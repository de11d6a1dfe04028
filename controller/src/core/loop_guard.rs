//! The update-loop guard: an AWS API that accepts a write and then does not show it (eventual
//! consistency gone wrong, an endpoint bug, another writer) would otherwise get the same write
//! every second for as long as it lasts — the most reported failure of ACK and Crossplane
//! providers. The driver asks [`UpdateGuard::check`] before every update; after [`LIMIT`]
//! writes of one change set in a row, with confirmations at growing intervals, it holds the
//! object (`NotConverging`) and allows one write per resync period until AWS shows the change,
//! the spec changes or a reconcile is requested.
//!
//! The record is in memory: a restarted kaws starts counting again (at most [`LIMIT`] more
//! writes), which is the price of writing nothing to the object while it is held.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Writes of one change set in a row before the guard holds the object.
pub const LIMIT: u32 = 3;

/// How soon to confirm the `n`th write of one change set (1-based): 1 s, 2 s, 4 s. AWS that is
/// merely slow to show a change gets 7 s in all before the guard holds the object.
pub fn confirm_after(write: u32) -> Duration {
    Duration::from_secs(1 << write.saturating_sub(1).min(6))
}

/// Identifies one attempt at converging: the change set, and what resets the count when it
/// changes (the generation, and the `kaws.io/reconcile-requested-at` token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// A hash of the change set (never its values: they may hold secrets).
    pub changes: u64,
    pub generation: Option<i64>,
    pub requested_at: Option<String>,
}

#[derive(Debug)]
struct Record {
    attempt: Attempt,
    writes: u32,
    last_write: Instant,
    /// Since when writing is held; `None` while writes are still allowed.
    held: Option<Instant>,
}

/// What the guard allows for one reconcile that found changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write; this is the `n`th write of this change set in a row (confirm after
    /// [`confirm_after`]`(n)`).
    Write(u32),
    /// Do not write. `first` is true only for the reconcile that starts the hold (the one that
    /// tells it, with a Warning Event); `writes` is how many writes AWS ignored.
    Hold { writes: u32, first: bool },
}

/// Per-object records, keyed like the backoffs (kind/namespace/name).
#[derive(Debug, Default)]
pub struct UpdateGuard {
    records: Mutex<HashMap<String, Record>>,
}

impl UpdateGuard {
    /// Decides whether the object `key` may write the change set `attempt` now, and counts the
    /// write when it may. `resync` is the object's resync period: a held object gets one write
    /// per period.
    pub fn check(&self, key: &str, attempt: Attempt, resync: Duration, now: Instant) -> Verdict {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = match records.get_mut(key) {
            Some(r) if r.attempt == attempt => r,
            _ => {
                records.insert(
                    key.to_string(),
                    Record {
                        attempt,
                        writes: 1,
                        last_write: now,
                        held: None,
                    },
                );
                return Verdict::Write(1);
            }
        };
        if record.writes < LIMIT {
            record.writes += 1;
            record.last_write = now;
            return Verdict::Write(record.writes);
        }
        match record.held {
            None => {
                record.held = Some(now);
                Verdict::Hold {
                    writes: record.writes,
                    first: true,
                }
            }
            Some(_) if now.duration_since(record.last_write) >= resync => {
                // One more try per resync period: AWS may have healed. A write it ignores again
                // is held again at once, without another Event.
                record.writes += 1;
                record.last_write = now;
                Verdict::Write(record.writes)
            }
            Some(_) => Verdict::Hold {
                writes: record.writes,
                first: false,
            },
        }
    }

    /// AWS matches the spec (or the object is gone): forget the object's record.
    pub fn converged(&self, key: &str) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether the object is held now (for tests and metrics).
    pub fn is_held(&self, key: &str) -> bool {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|r| r.held.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(600);

    fn attempt(changes: u64) -> Attempt {
        Attempt {
            changes,
            generation: Some(1),
            requested_at: None,
        }
    }

    #[test]
    fn the_same_change_is_written_three_times_then_held_with_one_event() {
        let guard = UpdateGuard::default();
        let t = Instant::now();
        assert_eq!(guard.check("k", attempt(7), RESYNC, t), Verdict::Write(1));
        assert_eq!(guard.check("k", attempt(7), RESYNC, t), Verdict::Write(2));
        assert_eq!(guard.check("k", attempt(7), RESYNC, t), Verdict::Write(3));
        assert_eq!(
            guard.check("k", attempt(7), RESYNC, t),
            Verdict::Hold {
                writes: 3,
                first: true
            }
        );
        assert!(guard.is_held("k"));
        // Reconciles before the resync period (a watch event, a dependency) write nothing and
        // tell nothing again.
        let later = t + Duration::from_secs(30);
        assert_eq!(
            guard.check("k", attempt(7), RESYNC, later),
            Verdict::Hold {
                writes: 3,
                first: false
            }
        );
    }

    #[test]
    fn a_held_object_gets_one_write_per_resync_period() {
        let guard = UpdateGuard::default();
        let t = Instant::now();
        for _ in 0..4 {
            guard.check("k", attempt(7), RESYNC, t);
        }
        let resync = t + RESYNC;
        assert_eq!(
            guard.check("k", attempt(7), RESYNC, resync),
            Verdict::Write(4)
        );
        assert_eq!(
            guard.check("k", attempt(7), RESYNC, resync + Duration::from_secs(1)),
            Verdict::Hold {
                writes: 4,
                first: false
            },
            "ignored again: held at once, no second Event"
        );
    }

    #[test]
    fn a_different_change_set_generation_or_request_starts_counting_again() {
        let t = Instant::now();
        let held = || {
            let guard = UpdateGuard::default();
            for _ in 0..4 {
                guard.check("k", attempt(7), RESYNC, t);
            }
            assert!(guard.is_held("k"));
            guard
        };
        let guard = held();
        assert_eq!(guard.check("k", attempt(8), RESYNC, t), Verdict::Write(1));
        let guard = held();
        let next_generation = Attempt {
            generation: Some(2),
            ..attempt(7)
        };
        assert_eq!(
            guard.check("k", next_generation, RESYNC, t),
            Verdict::Write(1)
        );
        let guard = held();
        let requested = Attempt {
            requested_at: Some("now".into()),
            ..attempt(7)
        };
        assert_eq!(guard.check("k", requested, RESYNC, t), Verdict::Write(1));
    }

    #[test]
    fn converging_forgets_the_record_and_objects_do_not_share_one() {
        let guard = UpdateGuard::default();
        let t = Instant::now();
        for _ in 0..4 {
            guard.check("a", attempt(7), RESYNC, t);
        }
        assert_eq!(guard.check("b", attempt(7), RESYNC, t), Verdict::Write(1));
        guard.converged("a");
        assert!(!guard.is_held("a"));
        assert_eq!(guard.check("a", attempt(7), RESYNC, t), Verdict::Write(1));
    }

    #[test]
    fn confirmations_wait_longer_each_time() {
        assert_eq!(
            (1..=3).map(confirm_after).collect::<Vec<_>>(),
            [1, 2, 4].map(Duration::from_secs)
        );
        assert_eq!(confirm_after(40), Duration::from_secs(64));
    }
}
