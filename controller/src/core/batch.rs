//! Batched observation: where AWS has a list call that returns what a kind's diff needs (EC2
//! `DescribeInstances`, RDS `DescribeDBInstances`, Lambda `ListFunctions`), the objects of a
//! region that resync together are served from one listing instead of one read each.
//!
//! A listing serves only objects in a steady state ([`steady`]: applied, Ready, Synced, not being
//! deleted) and only while it is recent enough for the object ([`max_age`]). It never answers
//! for a resource kaws wrote after the listing started ([`BatchedView::written`]), and a
//! resource missing from it is never taken as gone: the kind reads it directly then.
//!
//! What a steady resync reads of a resource beside (or instead of) a listing, a kind may take
//! from the resource's last full read for a while ([`Remembered`]): what rarely changes and no
//! cheap read returns (a Function's tags, a Bucket's settings but its tags, a Table's tags, TTL
//! and backups) is read again about every [`DETAILS_EVERY`] resyncs.

use std::{
    collections::HashMap,
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::Resource;
use rand::Rng;

use super::{
    backoff::{RESYNC_JITTER_PERCENT, RESYNC_TICK_PERCENT},
    conditions::is_true,
    driver::{ManagedObject, resync_period},
    error::Result,
    names::conditions,
};

/// The oldest listing any object is served from.
const MAX_AGE: Duration = Duration::from_secs(300);

/// One listing of a region.
struct Snapshot<T> {
    /// When the listing started: anything written after it is not reflected.
    started: Instant,
    items: HashMap<String, T>,
}

/// A region's latest listing, behind the lock that makes concurrent reconciles share one.
type Slot<T> = Arc<tokio::sync::Mutex<Option<Snapshot<T>>>>;

/// The latest listing per region of one kind's resources, keyed by the resource's identifier.
pub struct BatchedView<T> {
    regions: Mutex<HashMap<String, Slot<T>>>,
    /// When kaws last wrote to each resource (kept for [`MAX_AGE`]).
    writes: Mutex<HashMap<String, Instant>>,
}

impl<T> Default for BatchedView<T> {
    fn default() -> Self {
        Self {
            regions: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> BatchedView<T> {
    /// Records a write to resource `id` (create, update, delete): listings that started before
    /// it no longer answer for it.
    pub fn written(&self, id: &str) {
        let now = Instant::now();
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.retain(|_, at| now.duration_since(*at) < MAX_AGE);
        writes.insert(id.to_string(), now);
    }

    fn written_since(&self, id: &str, when: Instant) -> bool {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|w| *w >= when)
    }

    /// Resource `id` of `region` from a listing at most `max_age` old, made by `list` when the
    /// last one is older. `None`: the listing cannot answer for it (not in it, or written by
    /// kaws since); read it directly.
    pub async fn get<F, Fut>(
        &self,
        region: &str,
        id: &str,
        max_age: Duration,
        list: F,
    ) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>>>,
    {
        let slot = self
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(region.to_string())
            .or_default()
            .clone();
        let mut snapshot = slot.lock().await;
        if snapshot
            .as_ref()
            .is_none_or(|s| s.started.elapsed() >= max_age.min(MAX_AGE))
        {
            // Dropped first: a failed listing leaves none rather than an old one.
            *snapshot = None;
            let started = Instant::now();
            let items = list().await?;
            *snapshot = Some(Snapshot { started, items });
        }
        let Some(s) = snapshot.as_ref() else {
            return Ok(None);
        };
        if self.written_since(id, s.started) {
            return Ok(None);
        }
        Ok(s.items.get(id).cloned())
    }
}

/// How old a listing may be to serve `obj`'s resync: resyncs are jittered by
/// ±[`RESYNC_JITTER_PERCENT`] and then rounded up to a tick of [`RESYNC_TICK_PERCENT`], so
/// objects that resync together fall within twice the one share and the other of their period;
/// a listing living that and a little more (a quarter period at ±10% and 2%) serves all of
/// them. Sized by the object's own period (`kaws.io/resync-period`), so an object
/// checked more often than the controller's default never gets an older view than it asked for.
pub fn max_age<K: Resource>(obj: &K, default_resync: Duration) -> Duration {
    let period = resync_period(obj, default_resync);
    (period * (2 * RESYNC_JITTER_PERCENT + RESYNC_TICK_PERCENT + 3) / 100)
        .clamp(Duration::from_secs(1), MAX_AGE)
}

/// Whether `obj` is in a steady state (its generation applied, Ready and Synced, not being
/// deleted), so a listing is recent enough for it. Objects in flux are read directly, so they
/// never act on a stale view.
pub fn steady<K: ManagedObject>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_none()
        && obj.status().is_some_and(|s| {
            let c = K::common_status(s);
            c.observed_generation == obj.meta().generation
                && is_true(&c.conditions, conditions::READY)
                && is_true(&c.conditions, conditions::SYNCED)
        })
}

/// By default (`--full-read-every`), about every how many of its resync periods a steady object
/// reads again what its kind takes from the resource's last full read in between
/// ([`Remembered`]). At the default 10-minute resync, drift there is corrected within about an
/// hour; anything else a kind reads at every resync.
pub const DETAILS_EVERY: u32 = 6;

/// Entries kept before the first pruning of those no longer used.
const PRUNE_FROM: usize = 1024;

/// Per resource and object, what a kind took from the resource's last full read for that
/// object, and when the next full read is due. Only an observe with
/// [`Reads::Steady`](super::driver::Reads::Steady) is served from it (the first of a settled
/// object's reconcile: applied, Ready, Synced, no reconcile requested), and only what a full
/// read for the same object at its current generation recorded; whatever such an observation
/// finds to act on is read again in full before the driver acts, so a remembered value can
/// only ever delay the detection of drift (at most until the next full read), never cause a
/// write. The kind [forgets](Remembered::forget) a resource, for every object, before every
/// write to it and when it is found gone.
///
/// A full read is due `every` periods (`--full-read-every`, [`DETAILS_EVERY`] by default) less
/// half a period after the last one (so the resync about `every` periods on makes it, whatever
/// the jitter did in between; with 1, every resync reads in full). The
/// first entry of a resource is due at a random point before that: every object kaws starts
/// with or creates is read in full at its first reconcile, and their next full reads would
/// otherwise all fall due on the same resync.
pub struct Remembered<K, T> {
    entries: Mutex<Entries<K, T>>,
    /// In resync periods.
    every: u32,
}

struct Entries<K, T> {
    /// Per resource, one entry per object that reads it (usually one).
    by_key: HashMap<K, Vec<Entry<T>>>,
    /// The size at which entries past their due time (objects deleted, kaws' resources
    /// released) are dropped.
    prune_at: usize,
}

struct Entry<T> {
    /// The object whose full read this was (its uid, hashed) and its generation then.
    object: u64,
    generation: Option<i64>,
    read: Instant,
    due: Instant,
    value: T,
}

/// Which object a full read was made for: its uid, hashed.
fn object_of<O: Resource>(obj: &O) -> u64 {
    let mut h = DefaultHasher::new();
    obj.meta().uid.hash(&mut h);
    h.finish()
}

/// An object (its uid, hashed) at a generation.
type Object = (u64, Option<i64>);

/// How long after a full read the next is due, for an object resynced every `period` and read
/// in full every `n` resyncs.
fn every(period: Duration, n: u32) -> Duration {
    (period * n).saturating_sub(period / 2)
}

impl<K: Hash + Eq, T: Clone> Remembered<K, T> {
    /// Full reads due about every `every` resync periods (`--full-read-every`).
    pub fn new(every: u32) -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_key: HashMap::new(),
                prune_at: PRUNE_FROM,
            }),
            every: every.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<K, T>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the last full read of resource `key` found for `obj` (the same object, at its
    /// current generation) — `None` when nothing is remembered or a full read is due (also
    /// when the object's resync period was shortened since).
    pub fn get<O: Resource>(&self, obj: &O, default_resync: Duration, key: &K) -> Option<T> {
        let every = every(resync_period(obj, default_resync), self.every);
        let object = (object_of(obj), obj.meta().generation);
        self.at(key, object, every, Instant::now())
    }

    fn at(&self, key: &K, object: Object, every: Duration, now: Instant) -> Option<T> {
        let entries = self.entries();
        let entry = entries
            .by_key
            .get(key)?
            .iter()
            .find(|e| (e.object, e.generation) == object)?;
        (now < entry.due && now.saturating_duration_since(entry.read) < every)
            .then(|| entry.value.clone())
    }

    /// Records what a full read of resource `key` found for `obj`, whose kind's default
    /// resync period is `default_resync`.
    pub fn read<O: Resource>(&self, obj: &O, default_resync: Duration, key: K, value: T) {
        let every = every(resync_period(obj, default_resync), self.every);
        let object = (object_of(obj), obj.meta().generation);
        self.record(key, object, every, value, Instant::now());
    }

    fn record(
        &self,
        key: K,
        (object, generation): Object,
        every: Duration,
        value: T,
        now: Instant,
    ) {
        let mut entries = self.entries();
        let of_resource = entries.by_key.entry(key).or_default();
        let known = of_resource.iter().position(|e| e.object == object);
        let wait = match known {
            Some(i) => {
                of_resource.swap_remove(i);
                every
            }
            None => rand::rng().random_range(Duration::ZERO..=every),
        };
        of_resource.push(Entry {
            object,
            generation,
            read: now,
            due: now + wait,
            value,
        });
        if entries.by_key.len() >= entries.prune_at {
            entries.by_key.retain(|_, of_resource| {
                of_resource.retain(|e| e.due > now);
                !of_resource.is_empty()
            });
            entries.prune_at = (entries.by_key.len() * 2).max(PRUNE_FROM);
        }
    }

    /// After a full read of resource `key` for `obj`: records what it `found`, or forgets the
    /// resource when it found none.
    pub fn full_read<O: Resource>(
        &self,
        obj: &O,
        default_resync: Duration,
        key: K,
        found: Option<T>,
    ) {
        match found {
            Some(value) => self.read(obj, default_resync, key, value),
            None => self.forget(&key),
        }
    }

    /// Before any write to resource `key`, and when it was found gone: the next read of it is
    /// a full one.
    pub fn forget(&self, key: &K) {
        self.entries().by_key.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::core::names::annotations;

    /// Any object does: `max_age` reads only its annotations.
    fn object(resync_annotation: Option<&str>) -> ConfigMap {
        let mut obj = ConfigMap::default();
        if let Some(period) = resync_annotation {
            obj.metadata.annotations =
                Some([(annotations::RESYNC_PERIOD.into(), period.into())].into());
        }
        obj
    }

    #[test]
    fn a_listing_is_never_older_than_a_share_of_the_objects_own_resync_period() {
        let default = Duration::from_secs(600);
        // The controller's period: a quarter of it (resyncs spread ±10%).
        assert_eq!(max_age(&object(None), default), Duration::from_secs(150));
        // An object checked every 30 s must not be served a 150 s old view.
        assert_eq!(
            max_age(&object(Some("30s")), default),
            Duration::from_millis(7500)
        );
        // Bounds: at least 1 s, at most 5 min.
        assert_eq!(
            max_age(&object(Some("2s")), default),
            Duration::from_secs(1)
        );
        assert_eq!(
            max_age(&object(Some("24h")), default),
            Duration::from_secs(300)
        );
    }

    fn listing(calls: &AtomicUsize) -> Result<HashMap<String, u32>> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok([("a".to_string(), 1), ("b".to_string(), 2)].into())
    }

    #[tokio::test]
    async fn one_listing_serves_every_object_until_it_is_too_old() {
        let view = BatchedView::default();
        let calls = AtomicUsize::new(0);
        let long = Duration::from_secs(60);
        let get = |id: &'static str, age| {
            let view = &view;
            let calls = &calls;
            async move { view.get("r", id, age, || async { listing(calls) }).await }
        };
        assert_eq!(get("a", long).await.unwrap(), Some(1));
        assert_eq!(get("b", long).await.unwrap(), Some(2));
        assert_eq!(
            get("c", long).await.unwrap(),
            None,
            "missing: read directly"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            get("a", Duration::from_millis(10)).await.unwrap(),
            Some(1),
            "an object with a shorter period gets a new listing"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_write_after_the_listing_started_is_never_answered_from_it() {
        let view = BatchedView::default();
        let calls = AtomicUsize::new(0);
        let long = Duration::from_secs(60);
        assert_eq!(
            view.get("r", "a", long, || async { listing(&calls) })
                .await
                .unwrap(),
            Some(1)
        );
        view.written("a");
        assert_eq!(
            view.get("r", "a", long, || async { listing(&calls) })
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            view.get("r", "b", long, || async { listing(&calls) })
                .await
                .unwrap(),
            Some(2),
            "other resources are still served"
        );
        assert_eq!(
            view.get("other-region", "a", long, || async { listing(&calls) })
                .await
                .unwrap(),
            Some(1),
            "a listing that started after the write answers for it"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one listing per region");
    }

    #[tokio::test]
    async fn a_failed_listing_is_an_error_and_leaves_no_stale_one() {
        let view: BatchedView<u32> = BatchedView::default();
        let calls = AtomicUsize::new(0);
        view.get("r", "a", Duration::from_millis(1), || async {
            listing(&calls)
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let failed = view
            .get("r", "a", Duration::from_millis(1), || async {
                Err(crate::core::error::Error::AwsTransient {
                    operation: "List".into(),
                    message: "boom".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            view.get("r", "a", Duration::from_secs(60), || async {
                listing(&calls)
            })
            .await
            .unwrap(),
            Some(1)
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "listed again after the failure"
        );
    }

    #[test]
    fn a_remembered_read_serves_until_the_next_full_read_is_due() {
        let r: Remembered<&str, u32> = Remembered::new(DETAILS_EVERY);
        let every = every(Duration::from_secs(10), DETAILS_EVERY);
        assert_eq!(
            every,
            Duration::from_secs(55),
            "6 periods less half a period"
        );
        assert_eq!(
            super::every(Duration::from_secs(10), 1),
            Duration::from_secs(5),
            "--full-read-every 1: due before the next resync"
        );
        let (object, t0) = ((7, Some(1)), Instant::now());
        assert_eq!(r.at(&"a", object, every, t0), None, "nothing read yet");
        // The first read of a resource is due at a random point within `every`.
        r.record("a", object, every, 1, t0);
        let first_due = r.entries().by_key["a"][0].due;
        assert!(first_due >= t0 && first_due <= t0 + every);
        // Later reads: due `every` after them.
        r.record("a", object, every, 2, t0);
        assert_eq!(r.at(&"a", object, every, t0), Some(2));
        let almost = t0 + every - Duration::from_millis(1);
        assert_eq!(r.at(&"a", object, every, almost), Some(2));
        assert_eq!(
            r.at(&"a", object, every, t0 + every),
            None,
            "a full read is due"
        );
        assert_eq!(
            r.at(&"a", object, every / 2, almost),
            None,
            "due sooner for an object whose period was shortened since"
        );
        assert_eq!(
            r.at(&"a", (7, Some(2)), every, t0),
            None,
            "recorded at another generation"
        );
        // Another object reading the same resource has its own entry.
        r.record("a", (8, Some(1)), every, 3, t0);
        r.record("a", (8, Some(1)), every, 4, t0);
        assert_eq!(r.at(&"a", (8, Some(1)), every, t0), Some(4));
        assert_eq!(r.at(&"a", object, every, t0), Some(2), "each its own");
        assert_eq!(r.at(&"b", object, every, t0), None, "per resource");
        r.forget(&"a");
        assert_eq!(
            r.at(&"a", object, every, t0),
            None,
            "forgotten before a write"
        );
    }

    #[test]
    fn first_full_reads_fall_due_spread_over_the_whole_interval() {
        let r: Remembered<u32, ()> = Remembered::new(DETAILS_EVERY);
        let every = every(Duration::from_secs(60), DETAILS_EVERY);
        let t0 = Instant::now();
        for key in 0..400 {
            r.record(key, (0, None), every, (), t0);
        }
        // Due in each quarter of the interval: ~100 of 400 each.
        for quarter in 0..4u32 {
            let (from, to) = (t0 + every * quarter / 4, t0 + every * (quarter + 1) / 4);
            let due_within = (0..400)
                .filter(|k| {
                    r.at(k, (0, None), every, from).is_some()
                        && r.at(k, (0, None), every, to).is_none()
                })
                .count();
            assert!(
                (50..=150).contains(&due_within),
                "{due_within} of 400 due in quarter {quarter}"
            );
        }
    }

    #[test]
    fn entries_past_their_due_time_are_dropped_as_new_ones_come() {
        let r: Remembered<usize, ()> = Remembered::new(DETAILS_EVERY);
        let t0 = Instant::now();
        let every = every(Duration::from_millis(10), DETAILS_EVERY);
        for key in 0..PRUNE_FROM - 1 {
            r.record(key, (0, None), every, (), t0);
        }
        // Much later, one more read: the stale entries go.
        r.record(
            PRUNE_FROM,
            (0, None),
            every,
            (),
            t0 + Duration::from_secs(1),
        );
        let entries = r.entries();
        assert_eq!(entries.by_key.len(), 1);
        assert_eq!(entries.prune_at, PRUNE_FROM);
    }
}
