//! Which reconciles kaws hands kube-runtime, and when: every trigger (a watch event, a Secret or
//! dependency change, a start-up reconcile spread over the resync period) waits in one FIFO
//! queue, and at most `limit` of them are handed on at once.
//!
//! Why: kube-runtime starts every request it is given (kaws sets no limit there, see
//! `runner.rs`), and each started one holds a task, a tracing span and a slot in the runner's
//! map until it finishes. 10,000 objects created faster than kaws reconciles them (or found
//! unsettled at start-up) were 10,000 started reconciles at once: a map and span pool sized for
//! 10,000 that never shrink, ~13 MiB kept after the burst, and a runner that polls every slot
//! on each wake-up. Queued here, a trigger costs one object reference.
//!
//! Order is kept: the queue is FIFO, an object already queued is not queued twice, and an
//! object whose reconcile is running waits in its place until that one finishes. What the
//! reconciles themselves ask for (a resync, a retry after a backoff) stays with kube-runtime's
//! scheduler: those are spread over time by the reconciles that asked for them.

use std::{
    collections::{HashSet, VecDeque},
    task::Poll,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use kube::{
    core::DynamicObject,
    runtime::reflector::{Lookup, ObjectRef},
};
use prometheus_client::metrics::{gauge::Gauge, histogram::Histogram};
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

/// Queue capacity kept once a burst has drained.
const KEPT_CAPACITY: usize = 256;

/// Why an object was queued (logged at debug when it is handed on): [`CHANGED`], [`SECRET`],
/// [`DEPENDENCY`] or [`START_UP`].
pub type Reason = &'static str;
pub const CHANGED: Reason = "object changed";
pub const SECRET: Reason = "referenced Secret changed";
pub const DEPENDENCY: Reason = "referenced object changed";
pub const START_UP: Reason = "start-up, spread over the resync period";

/// What a queue reports: how many wait (`kaws_queued_reconciles`, shared by a kind's scopes)
/// and how long each waited (`kaws_queue_wait_seconds`).
#[derive(Clone, Debug)]
pub struct Observe {
    pub kind: &'static str,
    pub depth: Gauge,
    pub wait: Histogram,
}

/// The inputs of one kind's (and one watched scope's) admission queue.
pub struct Inputs<C, K: Lookup> {
    /// Triggers due now, in the order they happened.
    pub changes: C,
    /// Triggers due after a delay (start-up reconciles of settled objects).
    pub deferred: mpsc::UnboundedReceiver<(ObjectRef<K>, Duration)>,
    /// Objects whose reconcile finished (or was dropped: object gone), whatever started it.
    pub finished: mpsc::UnboundedReceiver<ObjectRef<K>>,
}

/// The reference kaws queues: name and namespace only (no resourceVersion or uid, which
/// equality ignores anyway and which would cost two more strings per queued object).
fn named<K: Lookup<DynamicType = ()>>(name: &str, namespace: Option<&str>) -> ObjectRef<K> {
    let named = ObjectRef::new(name);
    match namespace {
        Some(ns) => named.within(ns),
        None => named,
    }
}

/// [`named`] for a reference that may carry a version.
pub fn plain<K: Lookup<DynamicType = ()>>(obj: &ObjectRef<K>) -> ObjectRef<K> {
    named(&obj.name, obj.namespace.as_deref())
}

/// [`named`] for `obj`.
pub fn reference<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    named(
        obj.meta().name.as_deref().unwrap_or_default(),
        obj.meta().namespace.as_deref(),
    )
}

/// [`named`] for an object kube-runtime names in an error.
pub fn unerased<K: Lookup<DynamicType = ()>>(obj: &ObjectRef<DynamicObject>) -> ObjectRef<K> {
    named(&obj.name, obj.namespace.as_deref())
}

struct Waiting<K: Lookup> {
    obj: ObjectRef<K>,
    reason: Reason,
    since: Instant,
}

struct Queue<K: Lookup> {
    waiting: VecDeque<Waiting<K>>,
    /// What `waiting` holds, to queue an object once.
    queued: HashSet<ObjectRef<K>>,
    /// Handed on and not finished yet.
    admitted: HashSet<ObjectRef<K>>,
    limit: usize,
    observe: Observe,
}

impl<K: Lookup> Drop for Queue<K> {
    fn drop(&mut self) {
        // A stopped controller (shutdown, leadership lost) no longer counts what it held.
        self.observe.depth.dec_by(self.waiting.len() as i64);
    }
}

impl<K> Queue<K>
where
    K: Lookup<DynamicType = ()>,
{
    fn push(&mut self, obj: ObjectRef<K>, reason: Reason) {
        let obj = if obj.extra.resource_version.is_some() || obj.extra.uid.is_some() {
            plain(&obj)
        } else {
            obj
        };
        if self.queued.insert(obj.clone()) {
            self.waiting.push_back(Waiting {
                obj,
                reason,
                since: Instant::now(),
            });
            self.observe.depth.inc();
        }
    }

    /// The first waiting object that is not running, if fewer than `limit` run.
    fn next(&mut self) -> Option<ObjectRef<K>> {
        if self.admitted.len() >= self.limit {
            return None;
        }
        // Skips at most `limit` objects: only running ones are held back.
        let at = self
            .waiting
            .iter()
            .position(|w| !self.admitted.contains(&w.obj))?;
        let Waiting { obj, reason, since } = self.waiting.remove(at)?;
        let waited = since.elapsed();
        self.observe.depth.dec();
        self.observe.wait.observe(waited.as_secs_f64());
        tracing::debug!(kind = self.observe.kind, object = %obj, reason, ?waited, "admitted");
        self.queued.remove(&obj);
        self.admitted.insert(obj.clone());
        if self.waiting.is_empty() && self.waiting.capacity() > KEPT_CAPACITY {
            // A burst is over: give back what it grew (a `VecDeque` and a `HashSet` never
            // shrink by themselves).
            self.waiting.shrink_to(KEPT_CAPACITY);
            self.queued.shrink_to(KEPT_CAPACITY);
        }
        Some(obj)
    }
}

/// The admitted triggers, for `Controller::reconcile_on`. Inputs are drained on every poll
/// (the watch feeding `changes` also keeps the reflector store current, so it must never wait
/// for a free slot); the stream ends when `changes` ends and nothing is left to hand on.
pub fn admitted<C, K>(
    inputs: Inputs<C, K>,
    limit: usize,
    observe: Observe,
) -> impl Stream<Item = ObjectRef<K>>
where
    C: Stream<Item = (ObjectRef<K>, Reason)> + Unpin,
    K: Lookup<DynamicType = ()>,
{
    let Inputs {
        mut changes,
        mut deferred,
        mut finished,
    } = inputs;
    let mut queue = Queue {
        waiting: VecDeque::new(),
        queued: HashSet::new(),
        admitted: HashSet::new(),
        limit: limit.max(1),
        observe,
    };
    let mut later = DelayQueue::new();
    let (mut changes_open, mut deferred_open) = (true, true);
    futures::stream::poll_fn(move |cx| {
        while let Poll::Ready(done) = finished.poll_recv(cx) {
            match done {
                Some(obj) => {
                    queue.admitted.remove(&obj);
                }
                // The controller stopped: nothing more will be admitted.
                None => return Poll::Ready(None),
            }
        }
        while changes_open {
            match changes.poll_next_unpin(cx) {
                Poll::Ready(Some((obj, reason))) => queue.push(obj, reason),
                Poll::Ready(None) => changes_open = false,
                Poll::Pending => break,
            }
        }
        while deferred_open {
            match deferred.poll_recv(cx) {
                Poll::Ready(Some((obj, delay))) => {
                    later.insert(obj, delay);
                }
                Poll::Ready(None) => deferred_open = false,
                Poll::Pending => break,
            }
        }
        // Polled after the inserts above: an empty `DelayQueue` registers no waker.
        while let Poll::Ready(Some(due)) = later.poll_expired(cx) {
            queue.push(due.into_inner(), START_UP);
        }
        if later.is_empty() && later.capacity() > KEPT_CAPACITY {
            // The start-up spread is over (10,000 entries: ~2 MiB).
            later.compact();
        }
        if let Some(obj) = queue.next() {
            return Poll::Ready(Some(obj));
        }
        if !changes_open && queue.waiting.is_empty() && later.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    type Ref = ObjectRef<ConfigMap>;

    fn r(name: &str) -> Ref {
        ObjectRef::new(name).within("ns")
    }

    struct Harness {
        changes: mpsc::UnboundedSender<(Ref, Reason)>,
        deferred: mpsc::UnboundedSender<(Ref, Duration)>,
        finished: mpsc::UnboundedSender<Ref>,
        /// How many changes the queue has taken from its input.
        taken: Arc<AtomicUsize>,
        depth: Gauge,
        out: std::pin::Pin<Box<dyn Stream<Item = Ref>>>,
    }

    fn harness(limit: usize) -> Harness {
        let (changes, mut rx) = mpsc::unbounded_channel();
        let (deferred, deferred_rx) = mpsc::unbounded_channel();
        let (finished, finished_rx) = mpsc::unbounded_channel();
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let depth = Gauge::default();
        let wait = Histogram::new([0.001, 1.0]);
        let input = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let out = admitted(
            Inputs {
                changes: Box::pin(input),
                deferred: deferred_rx,
                finished: finished_rx,
            },
            limit,
            Observe {
                kind: "ConfigMap",
                depth: depth.clone(),
                wait,
            },
        );
        Harness {
            changes,
            deferred,
            finished,
            taken,
            depth,
            out: Box::pin(out),
        }
    }

    impl Harness {
        /// What the queue hands on now, without waiting.
        fn ready(&mut self) -> Vec<String> {
            let mut names = Vec::new();
            while let Some(Some(obj)) = self.out.next().now_or_never() {
                names.push(obj.name);
            }
            names
        }
    }

    #[tokio::test]
    async fn hands_on_in_order_and_at_most_limit_at_once() {
        let mut h = harness(2);
        for name in ["a", "b", "c", "d"] {
            h.changes.send((r(name), CHANGED)).unwrap();
        }
        assert_eq!(h.ready(), ["a", "b"]);
        assert_eq!(
            h.taken.load(Ordering::SeqCst),
            4,
            "the input is drained even while every slot is taken"
        );
        assert_eq!(h.depth.get(), 2, "c and d wait");
        h.finished.send(r("b")).unwrap();
        assert_eq!(h.ready(), ["c"]);
        h.finished.send(r("a")).unwrap();
        h.finished.send(r("c")).unwrap();
        assert_eq!(h.ready(), ["d"]);
        assert_eq!(h.depth.get(), 0);
        // What a stopped controller held is no longer counted.
        h.changes.send((r("e"), CHANGED)).unwrap();
        h.changes.send((r("f"), CHANGED)).unwrap();
        assert_eq!(h.ready(), ["e"], "d and e run, f waits");
        assert_eq!(h.depth.get(), 1);
        let depth = h.depth.clone();
        drop(h);
        assert_eq!(depth.get(), 0);
    }

    #[tokio::test]
    async fn an_object_is_queued_once_and_waits_while_its_reconcile_runs() {
        let mut h = harness(3);
        for name in ["a", "b", "a", "b"] {
            h.changes.send((r(name), CHANGED)).unwrap();
        }
        assert_eq!(h.ready(), ["a", "b"], "queued once each");
        // `a` changes again while it runs: it waits for that reconcile, `c` does not.
        h.changes.send((r("a"), CHANGED)).unwrap();
        h.changes.send((r("c"), CHANGED)).unwrap();
        assert_eq!(h.ready(), ["c"]);
        h.finished.send(r("a")).unwrap();
        assert_eq!(h.ready(), ["a"]);
        // A finish for an object kaws did not hand on (a resync kube-runtime started) changes
        // nothing.
        h.finished.send(r("z")).unwrap();
        h.changes.send((r("d"), CHANGED)).unwrap();
        assert_eq!(h.ready(), Vec::<String>::new(), "a, b and c still run");
    }

    #[tokio::test]
    async fn the_reference_handed_on_carries_no_version() {
        let mut h = harness(1);
        let mut versioned = r("a");
        versioned.extra.resource_version = Some("42".into());
        versioned.extra.uid = Some("u".into());
        h.changes.send((versioned, CHANGED)).unwrap();
        let obj = h.out.next().await.unwrap();
        assert_eq!(obj, r("a"));
        assert_eq!(obj.extra.resource_version, None);
        assert_eq!(obj.extra.uid, None);
    }

    #[tokio::test]
    async fn a_deferred_trigger_joins_the_queue_when_due() {
        let mut h = harness(1);
        h.deferred
            .send((r("later"), Duration::from_millis(50)))
            .unwrap();
        h.changes.send((r("now"), CHANGED)).unwrap();
        assert_eq!(h.ready(), ["now"]);
        h.finished.send(r("now")).unwrap();
        assert_eq!(h.ready(), Vec::<String>::new(), "not due yet");
        let due = tokio::time::timeout(Duration::from_secs(5), h.out.next())
            .await
            .expect("handed on once due");
        assert_eq!(due.unwrap().name, "later");
    }

    #[tokio::test]
    async fn ends_when_the_controller_stops() {
        let h = harness(1);
        h.changes.send((r("a"), CHANGED)).unwrap();
        let Harness {
            finished, mut out, ..
        } = h;
        assert_eq!(out.next().await.unwrap().name, "a");
        drop(finished);
        assert!(out.next().await.is_none());
    }
}
