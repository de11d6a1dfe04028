//! Runs one kind's kube-runtime `Controller` per watched scope, wired to the shared driver.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    core::{DynamicObject, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Config as ControllerConfig, Error as ControllerError},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    admission,
    driver::{self, Context, Dependency, External, ManagedObject, Shared},
    names,
    own_writes::OwnWrites,
};

const READY_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Reconciles handed to kube-runtime at once, per `--concurrency` permit: the permits' holders
/// and as many waiting next in line (see `admission.rs`).
const ADMITTED_PER_PERMIT: usize = 2;

/// Counts watches whose initial list has not finished; `/readyz` is true at zero.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pending: Arc<AtomicUsize>,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl Readiness {
    pub fn expect(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
    }
    fn done(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) && self.pending.load(Ordering::SeqCst) == 0
    }
}

/// Where and how hard one kind's controller works.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    /// Only objects with these labels (`--label-selector`): one shard of the cluster's objects.
    pub label_selector: Option<String>,
}

/// Drops from a cached object what kaws never reads: `managedFields`, labels (selectors are
/// evaluated by the API server) and every annotation but kaws' own (`kaws.io/…`,
/// `<kind>.kaws.io/…`); on a real cluster `managedFields` and `last-applied-configuration` are
/// often larger than the rest of the object together. Safe because kaws never writes an object
/// back from its cache: its writes are patches of the fields they change. Nor do other
/// annotations trigger a reconcile any more ([`driver::trigger_hash`] hashes what is left).
pub fn strip<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| names::annotations::is_kaws(key));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Runs the controller for kind `K` until `shutdown` fires.
pub async fn run_kind<K, E>(
    shared: Arc<Shared>,
    external: E,
    options: RunOptions,
    readiness: Readiness,
    shutdown: CancellationToken,
) where
    K: ManagedObject,
    E: External<K>,
{
    let ctx = Arc::new(Context {
        shared: shared.clone(),
        external,
        in_flight: tokio::sync::Semaphore::new(options.concurrency.max(1).into()),
    });
    let apis: Vec<Api<K>> = if options.namespaces.is_empty() {
        vec![Api::all(shared.client.clone())]
    } else {
        options
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(shared.client.clone(), ns))
            .collect()
    };
    readiness.expect(apis.len());
    let mut controllers = Vec::new();
    for api in apis {
        let scope = api.namespace().map(str::to_string);
        let (reader, writer) = reflector::store();
        let mut config = watcher::Config::default();
        if let Some(selector) = &options.label_selector {
            config = config.labels(selector);
        }
        let (defer, deferred) = mpsc::unbounded_channel();
        let (finish, finished) = mpsc::unbounded_channel();
        let default_resync = shared.resync_period;
        let watch = watcher(api, config)
            .default_backoff()
            .modify(strip::<K>)
            .reflect(writer)
            .filter_map(move |event| {
                futures::future::ready(match event {
                    // Found by a (re)list with nothing due: spread over its resync period.
                    Ok(watcher::Event::InitApply(obj)) if driver::settled(&obj) => {
                        let delay = spread(driver::resync_period(&obj, default_resync));
                        // Closed only when the controller is stopping.
                        let _ = defer.send((admission::reference(&obj), delay));
                        None
                    }
                    Ok(watcher::Event::InitApply(obj) | watcher::Event::Apply(obj)) => {
                        Some(Ok(obj))
                    }
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                })
            })
            .predicate_filter(driver::trigger_hash::<K>, Default::default())
            .filter_map(|obj| {
                futures::future::ready(match obj {
                    Ok(obj) => Some((admission::reference(&obj), admission::CHANGED)),
                    Err(err) => {
                        tracing::debug!(kind = K::KIND, error = %err, "watch");
                        None
                    }
                })
            });
        let ready_reader = reader.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            // The store's readiness is a oneshot that wakes only the last task polling it and
            // the controller polls it too, so poll again on a timer instead of waiting once.
            loop {
                match tokio::time::timeout(READY_POLL, ready_reader.wait_until_ready()).await {
                    Ok(Ok(())) => break readiness.done(),
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
            }
        });
        let mut changes = vec![watch.boxed()];
        for dependency in K::dependencies() {
            changes.push(
                dependency_triggers(&shared.client, scope.as_deref(), reader.clone(), dependency)
                    .boxed(),
            );
        }
        if K::WATCHES_SECRETS {
            // Metadata only: kaws never caches Secret content. Same scope as the kind's watch.
            let secrets: Api<PartialObjectMeta<Secret>> = match scope.as_deref() {
                Some(ns) => Api::namespaced(shared.client.clone(), ns),
                None => Api::all(shared.client.clone()),
            };
            changes.push(
                secret_triggers(secrets, reader.clone(), shared.own_writes.clone())
                    .map(|obj| (obj, admission::SECRET))
                    .boxed(),
            );
        }
        let admitted = admission::admitted(
            admission::Inputs {
                changes: futures::stream::select_all(changes),
                deferred,
                finished,
            },
            usize::from(options.concurrency.max(1)) * ADMITTED_PER_PERMIT,
            shared.metrics.admission(K::KIND),
        );
        let token = shutdown.clone();
        // Every trigger comes through the admission queue (`reconcile_on`); the main stream is
        // empty, the watch feeding the store is polled by that queue.
        let controller = Controller::for_stream(
            futures::stream::pending::<Result<K, watcher::Error>>(),
            reader,
        )
        .reconcile_on(admitted)
        // No limit here: kube-runtime keeps the messages a full runner cannot take in a hash
        // set and picks from it in hash order, so under sustained load (resyncs arriving
        // faster than they finish) some objects are never picked — in a bench of 200 Buckets
        // at a 5 s resync, 43 were never reconciled in 12 minutes. Triggers wait in kaws'
        // FIFO admission queue instead, and every reconcile handed on waits on
        // `Context::in_flight`, a FIFO semaphore.
        .with_config(ControllerConfig::default())
        .graceful_shutdown_on(async move { token.cancelled().await })
        .run(
            driver::reconcile::<K, E>,
            driver::error_policy::<K, E>,
            ctx.clone(),
        )
        .for_each(move |result| {
            // Every reconcile handed on ends here, run or dropped (object gone).
            let done = match &result {
                Ok((obj, _)) => Some(admission::plain(obj)),
                Err(
                    ControllerError::ReconcilerFailed(_, obj)
                    | ControllerError::ObjectNotFound(obj),
                ) => Some(admission::unerased(obj)),
                Err(_) => None,
            };
            if let Some(obj) = done {
                // Closed only when the controller is stopping.
                let _ = finish.send(obj);
            }
            if let Err(err) = result {
                tracing::debug!(kind = K::KIND, error = %err, "reconcile did not finish");
            }
            futures::future::ready(())
        });
        controllers.push(controller);
    }
    futures::future::join_all(controllers).await;
    tracing::info!(kind = K::KIND, "controller stopped");
}

/// A uniformly random point of `period`: when a settled object found at start-up is first
/// reconciled.
fn spread(period: Duration) -> Duration {
    rand::rng().random_range(Duration::ZERO..period.max(Duration::from_millis(1)))
}

/// Which objects of kind `K` each Secret change reconciles: every one that references it, but
/// not the writer of kaws' own write of it (its echo, see `own_writes.rs`); a deletion,
/// whatever its version, reconciles the writer too.
fn secret_triggers<K: ManagedObject>(
    secrets: Api<PartialObjectMeta<Secret>>,
    store: Store<K>,
    own_writes: Arc<OwnWrites>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    watcher(secrets, watcher::Config::default())
        .default_backoff()
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => Some((s, false)),
                Ok(watcher::Event::Delete(s)) => Some((s, true)),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(err) => {
                    tracing::debug!(kind = K::KIND, error = %err, "Secret watch");
                    None
                }
            })
        })
        .then(move |(secret, deleted)| {
            let (own_writes, store) = (own_writes.clone(), store.clone());
            async move {
                if deleted {
                    own_writes.forget(&secret);
                }
                let objects = objects_referencing(&store, &secret, None);
                // Only a Secret this kind references is worth waiting for a write's answer.
                let writer = if deleted || objects.is_empty() {
                    None
                } else {
                    own_writes.writer_of(&secret).await
                };
                futures::stream::iter(match writer {
                    Some(writer) => objects_referencing(&store, &secret, Some(&writer)),
                    None => objects,
                })
            }
        })
        .flatten()
}

/// The cached objects whose spec references `secret` (same namespace, named in
/// [`ManagedObject::referenced_secrets`]), but `except` (an object key, see
/// [`driver::object_key`]).
pub(crate) fn objects_referencing<K: ManagedObject>(
    store: &Store<K>,
    secret: &PartialObjectMeta<Secret>,
    except: Option<&str>,
) -> Vec<ObjectRef<K>> {
    let name = secret.name_any();
    let ns = secret.namespace();
    store
        .state()
        .iter()
        .filter(|obj| obj.namespace() == ns && obj.referenced_secrets().contains(&name))
        .filter(|obj| except.is_none_or(|key| driver::object_key(obj.as_ref()) != key))
        .map(|obj| admission::reference(obj.as_ref()))
        .collect()
}

/// The objects of kind `K` that reference an object of `dependency`'s kind (same namespace,
/// named by [`Dependency::names`]), each time that object changes, status included. Metadata
/// only: a change is enough of a trigger, the reconcile reads the object itself.
fn dependency_triggers<K: ManagedObject>(
    client: &Client,
    scope: Option<&str>,
    store: Store<K>,
    dependency: Dependency<K>,
) -> impl futures::Stream<Item = (ObjectRef<K>, admission::Reason)> + Send + 'static {
    let Dependency {
        api: resource,
        names,
    } = dependency;
    let api: Api<PartialObjectMeta<DynamicObject>> = match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|dep| {
            futures::future::ready(match dep {
                Ok(dep) => Some(dep),
                Err(err) => {
                    tracing::debug!(kind = K::KIND, error = %err, "dependency watch");
                    None
                }
            })
        })
        .flat_map(move |dep: PartialObjectMeta<DynamicObject>| {
            let name = dep.name_any();
            let ns = dep.namespace();
            futures::stream::iter(
                store
                    .state()
                    .iter()
                    .filter(|obj| obj.namespace() == ns && names(obj).contains(&name))
                    .map(|obj| (admission::reference(obj.as_ref()), admission::DEPENDENCY))
                    .collect::<Vec<_>>(),
            )
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
    };

    use super::*;

    /// The annotation `kubectl apply` keeps the whole applied object in.
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

    #[test]
    fn caches_keep_nothing_kaws_never_reads() {
        let mut obj = ConfigMap::default();
        obj.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        obj.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{\"big\": \"copy\"}".to_string()),
                ("kaws.io/adopt".to_string(), "true".to_string()),
                ("ec2.kaws.io/instance-id".to_string(), "i-1".to_string()),
                ("team.example.com/owner".to_string(), "web".to_string()),
            ]
            .into(),
        );
        obj.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        strip(&mut obj);
        assert_eq!(
            obj.metadata.managed_fields, None,
            "no empty Vec kept either"
        );
        assert_eq!(obj.metadata.labels, None);
        assert_eq!(
            obj.annotations().keys().collect::<Vec<_>>(),
            ["ec2.kaws.io/instance-id", "kaws.io/adopt"],
            "kaws' own annotations stay"
        );
        // Nothing of kaws' left: no empty map kept.
        obj.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        strip(&mut obj);
        assert_eq!(obj.metadata.annotations, None);
        for other in [
            "notkaws.io/x",
            "kaws.io.evil.com/x",
            "kaws.io",
            "example.com/kaws.io/x",
        ] {
            assert!(!names::annotations::is_kaws(other), "{other}");
        }
    }
}
