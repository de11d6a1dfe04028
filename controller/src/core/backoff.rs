//! Retry timing: per-object exponential backoff with jitter for transient errors, and the
//! jittered resync period for drift checks.

use std::{collections::HashMap, sync::Mutex, time::Duration};

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

/// How far a resync may fall from its period, in percent either way.
pub const RESYNC_JITTER_PERCENT: u32 = 10;

/// `period` give or take [`RESYNC_JITTER_PERCENT`], so objects created together do not resync
/// together.
pub fn jittered(period: Duration) -> Duration {
    let spread = period * RESYNC_JITTER_PERCENT / 100;
    let low = period.saturating_sub(spread);
    low + rand::rng().random_range(Duration::ZERO..=spread * 2)
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
}
