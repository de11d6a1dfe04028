//! Retry timing: per-object exponential backoff with jitter for transient errors, and the
//! jittered resync period for drift checks, due on a coarse grid of ticks.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use rand::Rng;

/// Exponential backoff per object, reset when the object reconciles cleanly.
#[derive(Debug)]
pub struct Backoffs {
    base: Duration,
    max: Duration,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoffs {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next retry of `key`, counting this failure.
    pub fn next_delay(&self, key: &str) -> Duration {
        self.next_delay_capped(key, self.max)
    }

    /// As [`Backoffs::next_delay`], with a lower ceiling for errors that heal on AWS's side
    /// within seconds (throttling, 5xx): waiting minutes after they stop only delays recovery.
    pub fn next_delay_capped(&self, key: &str, cap: Duration) -> Duration {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let ceiling = exponential(self.base, self.max.min(cap), attempt);
        // "Equal jitter": at least half the ceiling, so retries never collapse to zero,
        // spread over the other half so many objects failing together do not retry together.
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn attempts(&self, key: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(max)
}

/// The shortest and the longest drift-check period kaws takes (`--resync-period`,
/// `kaws.io/resync-period`): at least a second, so no object loops on its resync; at most 30
/// days, so the arithmetic on it never overflows (kube-runtime holds a requeue for 6 months
/// at most anyway).
pub const MIN_RESYNC_PERIOD: Duration = Duration::from_secs(1);
pub const MAX_RESYNC_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// How far a resync may fall from its period, in percent either way.
pub const RESYNC_JITTER_PERCENT: u32 = 10;

/// `period` give or take [`RESYNC_JITTER_PERCENT`], so objects created together do not resync
/// together.
fn jittered(period: Duration) -> Duration {
    let spread = period * RESYNC_JITTER_PERCENT / 100;
    let low = period.saturating_sub(spread);
    low + rand::rng().random_range(Duration::ZERO..=spread * 2)
}

/// The grid resyncs fall due on, as a share of their period in percent (at most
/// [`MAX_RESYNC_TICK`]): 0.6 s at a 30 s period, 10 s at the default 10 minutes.
pub const RESYNC_TICK_PERCENT: u32 = 2;
pub const MAX_RESYNC_TICK: Duration = Duration::from_secs(10);

/// When an object's next drift check is due: [`jittered`], then rounded up to the next tick of
/// a grid shared by every object of the process ([`RESYNC_TICK_PERCENT`] of the period, the
/// ticks counted from the first resync kaws scheduled).
///
/// Why a grid: a resync's cost is mostly its AWS reads, and an SDK call that wakes an idle
/// process costs about half again as much CPU as one among others in flight (a plain SDK loop
/// making a Bucket's 7 reads: 0.30 ms per read with one bucket every 150 ms, 0.20 ms with 4
/// every 600 ms — the same rate). Resyncs due on the same tick run together, up to
/// `--concurrency` per kind, instead of one by one. The jitter still spreads objects over the
/// ±10 % window (10 ticks; 12 at the default 10 minutes, where the tick is capped at 10 s); a
/// resync comes at most one tick later than its jittered time.
pub fn resync_in(period: Duration) -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let now = Instant::now();
    let epoch = *EPOCH.get_or_init(|| now);
    resync_due(now, epoch, period).saturating_duration_since(now)
}

fn resync_due(now: Instant, epoch: Instant, period: Duration) -> Instant {
    on_the_grid(now + jittered(period), epoch, resync_tick(period))
}

fn resync_tick(period: Duration) -> Duration {
    (period * RESYNC_TICK_PERCENT / 100).clamp(Duration::from_millis(1), MAX_RESYNC_TICK)
}

/// `due` rounded up to the next multiple of `tick` after `epoch`.
fn on_the_grid(due: Instant, epoch: Instant, tick: Duration) -> Instant {
    let tick_ns = tick.as_nanos().max(1);
    let ticks = due
        .saturating_duration_since(epoch)
        .as_nanos()
        .div_ceil(tick_ns);
    // Beyond 584 years from the epoch (never, with periods of at most [`MAX_RESYNC_PERIOD`]):
    // the time itself.
    u64::try_from(ticks * tick_ns)
        .ok()
        .and_then(|offset| epoch.checked_add(Duration::from_nanos(offset)))
        .map_or(due, |on| on.max(due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let b = Backoffs::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay("ns/a")).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(
            delays[9] >= Duration::from_secs(30),
            "capped delay keeps its floor"
        );
        assert_eq!(b.attempts("ns/a"), 10);
        assert_eq!(b.attempts("ns/b"), 0, "backoff is per object");
        b.reset("ns/a");
        assert!(b.next_delay("ns/a") <= Duration::from_secs(1));
    }

    #[test]
    fn resync_jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(600));
            assert!(
                d >= Duration::from_secs(540) && d <= Duration::from_secs(660),
                "{d:?}"
            );
        }
    }

    #[test]
    fn resyncs_fall_due_on_a_shared_grid_within_the_jitter_and_one_tick() {
        let epoch = Instant::now();
        let tick = Duration::from_millis(600);
        for due_ms in [0u64, 1, 599, 600, 601, 29_999, 33_000] {
            let due = epoch + Duration::from_millis(due_ms);
            let on = on_the_grid(due, epoch, tick);
            assert!(
                on >= due && on - due < tick,
                "{due_ms} ms → {:?}",
                on - epoch
            );
            assert_eq!(
                (on - epoch).as_nanos() % tick.as_nanos(),
                0,
                "{due_ms} ms → {:?}",
                on - epoch
            );
        }
        assert_eq!(resync_tick(Duration::from_secs(30)), tick);
        assert_eq!(resync_tick(Duration::from_secs(600)), MAX_RESYNC_TICK);
        // Objects scheduled at different times but due on the same tick are due at one
        // instant; every delay stays within the jitter and one tick.
        let period = Duration::from_secs(30);
        let mut dues = std::collections::BTreeSet::new();
        for i in 0..200 {
            let now = epoch + Duration::from_millis(7 * i);
            let due = resync_due(now, epoch, period);
            assert!(
                due >= now + Duration::from_secs(27) && due <= now + Duration::from_secs(33) + tick,
                "{:?}",
                due - now
            );
            dues.insert(due);
        }
        // Scheduled over 1.4 s, due over 1.4 s and the ±3 s window: 7.4 s, 13 ticks at most.
        assert!(dues.len() <= 14, "{} distinct instants", dues.len());
        assert!(resync_in(period) <= Duration::from_secs(33) + tick);
    }
}
