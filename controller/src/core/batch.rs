//! Batched observation: where AWS has a list call that returns what a kind's diff needs (EC2
//! `DescribeInstances`, RDS `DescribeDBInstances`, Lambda `ListFunctions`), the objects of a
//! region that resync together are served from one listing instead of one read each.
//!
//! A listing serves only objects in a steady state ([`steady`]: applied, Ready, Synced, not being
//! deleted) and only while it is recent enough for the object ([`max_age`]). It never answers
//! for a resource kaws wrote after the listing started ([`BatchedView::written`]), and a
//! resource missing from it is never taken as gone: the kind reads it directly then.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::Resource;

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
}
