//! Prometheus metrics: reconciles, errors by category, durations, AWS calls, managed objects.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::fence::Fence;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub ready: String,
}

/// All metrics kaws exports, registered once and shared by every kind.
///
/// It also carries the leader [`Fence`]: every AWS client's shared interceptor
/// (`aws::CallMetrics`) is built from this handle, so carrying the fence here fences every
/// client of every kind in one place.
pub struct Metrics {
    registry: Registry,
    fence: Fence,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    aws_calls: Family<AwsCallLabels, Counter>,
    objects: Family<ObjectLabels, Gauge>,
    status_writes: Family<ReconcileLabels, Counter>,
    queued: Family<KindLabels, Gauge>,
    queue_wait: Family<KindLabels, Histogram>,
    leading: Gauge,
    /// Each object's Ready, keyed by a 64-bit hash of its key (16 bytes an object, not its key's
    /// string; two keys sharing a hash, odds ~10⁻¹¹ at 10,000 objects, would miscount by one).
    readiness: Mutex<HashMap<u64, bool>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics with an open fence (no leader election).
    pub fn new() -> Self {
        Self::with_fence(Fence::open())
    }

    /// Metrics whose AWS clients write only while `fence` allows it.
    pub fn with_fence(fence: Fence) -> Self {
        let mut registry = Registry::with_prefix("kaws");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let objects = Family::<ObjectLabels, Gauge>::default();
        let status_writes = Family::<ReconcileLabels, Counter>::default();
        let queued = Family::<KindLabels, Gauge>::default();
        let queue_wait = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0])
        });
        let leading = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind and category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            durations.clone(),
        );
        registry.register(
            "aws_api_calls",
            "AWS API calls by service, operation and outcome",
            aws_calls.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects by kind and Ready condition",
            objects.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes at the end of a reconcile by kind: written, or skipped because the status is unchanged",
            status_writes.clone(),
        );
        registry.register(
            "queued_reconciles",
            "Reconciles waiting in kaws' admission queue by kind (watch events, Secret and dependency changes, start-up reconciles now due); one that stays high means more work than --concurrency gets through",
            queued.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long a reconcile waited in kaws' admission queue before it was handed on, by kind",
            queue_wait.clone(),
        );
        registry.register(
            "leading",
            "1 while this replica holds the leader-election Lease (always 1 without leader election)",
            leading.clone(),
        );
        Self {
            registry,
            fence,
            leading,
            reconciles,
            errors,
            durations,
            aws_calls,
            objects,
            status_writes,
            queued,
            queue_wait,
            readiness: Mutex::new(HashMap::new()),
        }
    }

    /// The leader fence AWS writes are checked against.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether this replica leads (holds the Lease, or leader election is off).
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    pub fn reconciled(&self, kind: &str, outcome: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A status write at the end of a reconcile: `written`, or `skipped` (unchanged).
    pub fn status_write(&self, kind: &str, outcome: &str) {
        self.status_writes
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn error(&self, kind: &str, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                category: category.to_string(),
            })
            .inc();
    }

    pub fn aws_call(&self, service: &str, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&AwsCallLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// What `kind`'s admission queues report (see `core/admission.rs`).
    pub fn admission(&self, kind: &'static str) -> crate::core::admission::Observe {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        crate::core::admission::Observe {
            kind,
            depth: self.queued.get_or_create(&labels).clone(),
            wait: self.queue_wait.get_or_create(&labels).clone(),
        }
    }

    /// Records whether object `key` (`Kind/namespace/name`) of `kind` is Ready; `None` forgets
    /// it (object gone).
    pub fn object_ready(&self, kind: &str, key: &str, ready: Option<bool>) {
        let key = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(key, &mut h);
            std::hash::Hasher::finish(&h)
        };
        let mut readiness = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
        // O(1) per reconcile: only a change moves the counts (a count over every object here
        // cost 10,000 comparisons per reconcile with 10,000 objects).
        let old = match (ready, readiness.get_mut(&key)) {
            (Some(r), Some(slot)) => Some(std::mem::replace(slot, r)),
            (Some(r), None) => readiness.insert(key, r),
            (None, _) => readiness.remove(&key),
        };
        if old == ready {
            return;
        }
        let gauge = |r: bool| {
            self.objects.get_or_create(&ObjectLabels {
                kind: kind.to_string(),
                ready: r.to_string(),
            })
        };
        if let Some(old) = old {
            gauge(old).dec();
        }
        if let Some(new) = ready {
            gauge(new).inc();
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_calls_and_objects() {
        let m = Metrics::new();
        m.aws_call("s3", "GetBucketTagging", "success");
        m.aws_call("s3", "GetBucketTagging", "success");
        m.object_ready("Bucket", "Bucket/ns/a", Some(true));
        m.object_ready("Bucket", "Bucket/ns/a", Some(true));
        m.object_ready("Bucket", "Bucket/ns/b", Some(false));
        m.object_ready("Bucket", "Bucket/ns/b", None);
        m.object_ready("Bucket", "Bucket/ns/b", None);
        m.object_ready("Table", "Table/ns/a", Some(false));
        m.object_ready("Table", "Table/ns/a", Some(true));
        m.object_ready("Table", "Table/ns/c", Some(true));
        m.object_ready("Table", "Table/ns/c", Some(false));
        let text = m.encode();
        assert!(text.contains(
            r#"kaws_aws_api_calls_total{service="s3",operation="GetBucketTagging",outcome="success"} 2"#
        ), "{text}");
        assert!(
            text.contains(r#"kaws_managed_objects{kind="Bucket",ready="true"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kaws_managed_objects{kind="Bucket",ready="false"} 0"#),
            "{text}"
        );
        for line in [
            r#"kaws_managed_objects{kind="Table",ready="true"} 1"#,
            r#"kaws_managed_objects{kind="Table",ready="false"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
