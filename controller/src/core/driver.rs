//! The reconcile pipeline every kind runs: finalizer (beside the first reads, for a new object)
//! → paused? → validate → resolve and observe → ownership → diff → act → status. Kinds plug in
//! through [`ManagedObject`] (their CRD type) and [`External`] (their AWS calls); everything
//! else lives here once.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::FutureExt;
use k8s_openapi::{
    NamespaceResourceScope,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::ApiResource,
    runtime::{
        controller::Action,
        finalizer::{self, Event as FinalizerEvent},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    api::{CommonSpec, CommonStatus, DeletionPolicy, ManagementPolicy, Placement, Scope},
    backoff::{Backoffs, MAX_RESYNC_PERIOD, MIN_RESYNC_PERIOD, resync_in},
    conditions::{ConditionState, is_true, set_condition},
    error::{Error, Result},
    events::Events,
    loop_guard::{self, Attempt, UpdateGuard, Verdict},
    names::{FIELD_MANAGER, FINALIZER, annotations, conditions, reasons},
    own_writes::OwnWrites,
    ownership::{self, Owner, Ownership},
    policy::{self, Decision, Facts, Notice, Outcome, Progress, Requeue, Severity},
    status_writes::{self, StatusWrites},
};
use crate::metrics::SharedMetrics;

/// What the shared machinery needs from a kind's CRD type.
pub trait ManagedObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: Clone + Default + Debug + Serialize + DeserializeOwned + Send + Sync;

    /// The kind's name in metrics, logs and Events.
    const KIND: &'static str;

    /// [`Regional`](super::api::Regional) (`spec.region`, `status.region`) or
    /// [`Global`](super::api::Global) (neither).
    type Placement: Placement;

    fn common_spec(&self) -> &CommonSpec<Self::Placement>;
    fn status(&self) -> Option<&Self::Status>;
    fn common_status(status: &Self::Status) -> &CommonStatusOf<Self>;
    fn common_status_mut(status: &mut Self::Status) -> &mut CommonStatusOf<Self>;

    /// Whether objects of this kind reference Secrets. When true the runner watches the metadata
    /// of Secrets in the watched namespaces (RBAC: `list`/`watch` on `secrets`) and reconciles
    /// the objects whose [`ManagedObject::referenced_secrets`] name a Secret that changed.
    const WATCHES_SECRETS: bool = false;

    /// Names of the Secrets in the object's namespace whose changes must trigger a reconcile.
    fn referenced_secrets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Regional resources live in `spec.region` (default: the controller's region) and report
    /// `status.region`; global ones (IAM) have neither.
    const SCOPE: Scope = <Self::Placement as Placement>::SCOPE;

    /// Other kaws kinds whose objects (same namespace) objects of this kind reference, e.g. a
    /// Function's `code.bucketRef`: `vec![Dependency::on::<Bucket>(|f| …names…)]`. The runner
    /// watches each and reconciles the referencing objects when one changes, not only at
    /// resync; the chart grants read access to them.
    fn dependencies() -> Vec<Dependency<Self>> {
        Vec::new()
    }
}

/// Objects of another kaws kind that objects of kind `K` reference by name in their namespace.
pub struct Dependency<K> {
    /// The referenced kind's API.
    pub api: ApiResource,
    /// The names of the referenced objects, read from a `K` object's spec.
    pub names: fn(&K) -> Vec<String>,
}

impl<K> Dependency<K> {
    /// `K` objects reference `D` objects named `names(k)`.
    pub fn on<D: Resource<DynamicType = ()>>(names: fn(&K) -> Vec<String>) -> Self {
        Self {
            api: ApiResource::erase::<D>(&()),
            names,
        }
    }
}

/// The shared status fields of kind `K`, with its scope's.
pub type CommonStatusOf<K> = CommonStatus<<<K as ManagedObject>::Placement as Placement>::Status>;

/// A change the diff found; `field` names it in Events (`DriftCorrected: versioning, tags`).
pub trait Change: Debug + Send + Sync {
    fn field(&self) -> &'static str;
}

/// Where an AWS resource lives and who owns it.
#[derive(Clone, Debug)]
pub struct Target {
    pub region: String,
    pub owner: Owner,
}

/// How much of the resource an [`External::observe`] may take from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The first observe of a [`settled`] object's reconcile: what changes rarely may come from
    /// a recent listing ([`batch::BatchedView`](super::batch::BatchedView)) or the resource's
    /// last full read ([`batch::Remembered`](super::batch::Remembered)). Such an observation may
    /// only ever conclude "nothing to do": anything else (the resource gone, not ours, in
    /// conflict, busy, or a change to make) is read again in full before the driver acts on it.
    Steady,
    /// Everything read from AWS now: objects in flux, observes that confirm a write, deletion.
    Full,
}

impl Reads {
    /// What the first observe of `obj`'s reconcile may read.
    pub fn first<K: ManagedObject>(obj: &K) -> Self {
        if settled(obj) {
            Self::Steady
        } else {
            Self::Full
        }
    }
}

/// Whether AWS says the resource can take the next change now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Not usable yet (creating, modifying…): no write call now; poll again soon.
    Busy {
        reason: String,
        message: String,
    },
    /// In a state kaws will not change by itself (e.g. an EC2 instance terminated outside
    /// Kubernetes): `Ready=False` and `Synced=False` with this reason, a Warning Event, no write
    /// call, and the next look at the normal resync — never a hot loop.
    Failed {
        reason: String,
        message: String,
    },
}

/// What a create call found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// AWS created the resource for this call.
    New,
    /// AWS answered that the resource already exists (a race with another object, or a retry of
    /// a create whose answer was lost): nothing was created for this call, and nothing about the
    /// existing resource is known yet. The next observe decides whose it is.
    Existed,
}

/// Result of a delete call that never blocks on AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteProgress {
    Gone,
    InProgress,
}

/// A kind's pure model: everything the driver decides about a resource without I/O — whether the
/// spec is valid, whether it can converge with what AWS has, what to change and in which
/// batches, whether AWS can take a change now, and what status shows. Implemented on a unit
/// type next to the kind's diff; tested without any client.
pub trait Model<K: ManagedObject>: Send + Sync + 'static {
    /// The AWS resource as the kind's client read it.
    type Observed: Send + Sync;
    type Change: Change;
    /// What [`External::resolve`] read; `()` for a kind that references nothing.
    type Resolved: Send + Sync;

    /// How Events and messages name the AWS resource, e.g. `S3 bucket "logs"`.
    fn describe(obj: &K) -> String;
    /// Checks of the spec alone; the message goes into the `Synced` condition (`InvalidSpec`).
    fn validate(obj: &K) -> std::result::Result<(), String>;
    /// Checks of the spec against the existing resource: why it can never converge (an
    /// immutable field AWS has otherwise), if it cannot — `InvalidSpec`, no write.
    fn conflict(_obj: &K, _observed: &Self::Observed) -> Option<String> {
        None
    }
    /// Tags of the observed resource, for the ownership check.
    fn observed_tags(observed: &Self::Observed) -> &BTreeMap<String, String>;
    /// Whether AWS can take the next change now.
    fn availability(observed: &Self::Observed) -> Availability;
    /// The plan: every change that makes `observed` match the spec (tags included), in the
    /// order they must be applied. Empty: converged.
    fn plan(
        obj: &K,
        observed: &Self::Observed,
        resolved: &Self::Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<Self::Change>;
    /// The part of a non-empty plan to apply in this reconcile: all of it, unless AWS takes
    /// some changes only one call at a time (one DynamoDB index step, Lambda's code before its
    /// configuration); the rest follows once AWS shows these — in the same reconcile when AWS
    /// shows them at once and is ready for more, up to a few batches.
    fn next_batch(plan: Vec<Self::Change>) -> Vec<Self::Change> {
        plan
    }
    /// The change that gives `observed` the tags `tags` (owner tags included), if any. Applied
    /// alone when kaws recovers a resource it created but could not tag.
    fn tags_change(
        observed: &Self::Observed,
        tags: &BTreeMap<String, String>,
    ) -> Option<Self::Change>;
    /// Copies what users need from the observed resource into status.
    fn fill_status(obj: &K, target: &Target, observed: &Self::Observed, status: &mut K::Status);
    /// Records in status what applied changes did (e.g. the S3 object whose code was deployed).
    fn after_update(_obj: &K, _changes: &[Self::Change], _status: &mut K::Status) {}
}

/// The observed resource type of kind `K` with AWS side `E`.
pub type ObservedOf<K, E> = <<E as External<K>>::Model as Model<K>>::Observed;
/// The change type of kind `K` with AWS side `E`.
pub type ChangeOf<K, E> = <<E as External<K>>::Model as Model<K>>::Change;
/// What the resolve step of kind `K` with AWS side `E` reads.
pub type ResolvedOf<K, E> = <<E as External<K>>::Model as Model<K>>::Resolved;

/// A kind's I/O: the AWS calls (and the Kubernetes reads and writes tied to them), shaped like
/// crossplane's ExternalClient. `create`, `update` and `delete` are idempotent and start
/// operations without waiting for AWS to finish them. Every decision is the [`Model`]'s.
#[async_trait]
pub trait External<K: ManagedObject>: Send + Sync + 'static {
    type Model: Model<K>;

    /// The `Sid` prefix of this kind's statements in `deploy/iam/policy.json` (e.g. `S3`).
    const IAM_STATEMENTS: &'static str;

    /// Builds the client `kaws run` starts the kind with.
    fn connect(connect: &Connect<'_>) -> Self
    where
        Self: Sized;

    /// Whether [`observe`](Self::observe) reads what [`resolve`](Self::resolve) returned. When
    /// it does not, the driver makes the two reads at the same time (a reconcile waits for the
    /// slower, not for both) and `observe` gets `None` — except for an object whose last
    /// reconcile stopped at a missing Secret or dependency: it resolves first, so objects
    /// waiting on a reference make no AWS call.
    const OBSERVE_READS_RESOLVED: bool = true;

    /// Whether [`observe`](Self::observe) with [`Reads::Steady`] may take anything from memory
    /// or a listing. A kind that always reads everything has its steady observations acted on
    /// as they are, without a second read.
    const READS_FROM_MEMORY: bool = false;

    /// The resolve step: reads what the spec references outside AWS (Secrets, other kaws objects
    /// and what they point to) for the steps that act on it. The driver runs it with the first
    /// `observe` of every apply reconcile, before it or beside it (see
    /// [`OBSERVE_READS_RESOLVED`](Self::OBSERVE_READS_RESOLVED)); for a new object both beside
    /// the finalizer's patch (read again if that patch shows the object changed). Never on
    /// delete, never under `ObserveOnly`, never cached across reconciles — so `SecretNotFound`
    /// and `DependencyNotReady` come from here only; its error is the reconcile's even when the
    /// observe beside it failed too. Reads only. What the kind's own writes change of it (a
    /// DBInstance's connection Secret) the steps that write it (`after_observe`,
    /// `before_create`, `create`, `update`, `apply_changes`) record in `resolved`, so the
    /// observes that confirm them within the reconcile need no second read.
    async fn resolve(&self, obj: &K, target: &Target) -> Result<ResolvedOf<K, Self>>;
    /// Reads the AWS resource; `Ok(None)` when it does not exist. AWS calls only: it runs on
    /// delete and under `ObserveOnly` too, where `resolved` is `None` (and always, for a kind
    /// whose `OBSERVE_READS_RESOLVED` is `false`). `reads`: whether what changes rarely may
    /// come from memory ([`Reads::Steady`]) or must be read now.
    async fn observe(
        &self,
        obj: &K,
        target: &Target,
        resolved: Option<&ResolvedOf<K, Self>>,
        reads: Reads,
    ) -> Result<Option<ObservedOf<K, Self>>>;
    /// Called after `observe` found a resource this object owns (or adopts), before the
    /// availability check and the plan: the place for Kubernetes-side writes tied to the AWS
    /// resource, such as keeping a connection Secret current (recorded in `resolved` if the
    /// resolve step reads it). Not called on deletion.
    async fn after_observe(
        &self,
        _obj: &K,
        _target: &Target,
        _observed: &ObservedOf<K, Self>,
        _resolved: &mut ResolvedOf<K, Self>,
    ) -> Result<()> {
        Ok(())
    }
    /// What must be stored before AWS hears of a create (a DBInstance's generated password),
    /// written while the driver records its create intent, at the same time: `create` is called
    /// only once both are. Kubernetes-side writes only; nothing by default.
    async fn before_create(
        &self,
        _obj: &K,
        _target: &Target,
        _resolved: &mut ResolvedOf<K, Self>,
    ) -> Result<()> {
        Ok(())
    }
    /// Creates the resource with `tags`; records its identity in `status`. Makes no other
    /// write to a resource that already existed: whose it is must be proven by its tags first.
    async fn create(
        &self,
        obj: &K,
        target: &Target,
        resolved: &mut ResolvedOf<K, Self>,
        tags: &BTreeMap<String, String>,
        status: &mut K::Status,
    ) -> Result<Created>;
    /// Applies one batch of the plan.
    async fn update(
        &self,
        obj: &K,
        target: &Target,
        observed: &ObservedOf<K, Self>,
        resolved: &mut ResolvedOf<K, Self>,
        changes: &[ChangeOf<K, Self>],
    ) -> Result<()>;
    /// Checks that may block deletion (e.g. deletion protection), then deletes.
    async fn delete(
        &self,
        obj: &K,
        target: &Target,
        observed: &ObservedOf<K, Self>,
    ) -> Result<DeleteProgress>;
    /// What the driver calls to apply a batch: `update`, then the model's `after_update`. Kinds
    /// override it when a call's response belongs in status (e.g. the version Lambda published).
    async fn apply_changes(
        &self,
        obj: &K,
        target: &Target,
        observed: &ObservedOf<K, Self>,
        resolved: &mut ResolvedOf<K, Self>,
        changes: &[ChangeOf<K, Self>],
        status: &mut K::Status,
    ) -> Result<()> {
        self.update(obj, target, observed, resolved, changes)
            .await?;
        Self::Model::after_update(obj, changes, status);
        Ok(())
    }
}

/// What `kaws run` hands a kind's AWS side when it starts it (see [`External::connect`]).
pub struct Connect<'a> {
    pub sdk: &'a aws_config::SdkConfig,
    pub metrics: &'a SharedMetrics,
    pub client: &'a Client,
    pub cluster_id: &'a str,
    /// What the IAM kinds may create and change (`--iam-path-prefix`, `--iam-permissions-boundary`).
    pub iam: &'a crate::iam::Guard,
    /// The controller's default resync period.
    pub resync_period: Duration,
    /// Every how many resyncs a steady object is read in full (`--full-read-every`, see
    /// [`Remembered`](super::batch::Remembered)).
    pub full_read_every: u32,
    /// Where a kind records its writes to objects kaws watches (see `own_writes.rs`).
    pub own_writes: &'a Arc<OwnWrites>,
}

/// Controller-wide settings and clients shared by every kind.
pub struct Shared {
    pub client: Client,
    pub cluster_id: String,
    pub default_region: String,
    pub default_deletion_policy: DeletionPolicy,
    pub resync_period: Duration,
    pub metrics: SharedMetrics,
    pub events: Events,
    pub backoffs: Backoffs,
    /// Stops repeating a write AWS accepts but does not show (see `loop_guard.rs`).
    pub update_guard: UpdateGuard,
    /// Skips status writes that change nothing (see `status_writes.rs`).
    pub status_writes: StatusWrites,
    /// Writes to watched objects whose echo must not reconcile the writer (see `own_writes.rs`).
    pub own_writes: Arc<OwnWrites>,
}

/// Everything one kind's reconciler needs.
pub struct Context<E> {
    pub shared: Arc<Shared>,
    pub external: E,
    /// `--concurrency`: reconciles of this kind at once, over every watched namespace (the
    /// runner starts one kube-runtime controller per namespace). The only limit: a FIFO
    /// semaphore, so objects are served in the order their reconciles were due (see
    /// `runner.rs` for why kube-runtime's own limit is not used).
    pub in_flight: tokio::sync::Semaphore,
}

/// How often to look again while AWS is busy with a change.
const POLL_BUSY: Duration = Duration::from_secs(5);
/// How soon to confirm a create or a tag write just made (updates: [`loop_guard::confirm_after`]).
const POLL_AFTER_WRITE: Duration = Duration::from_secs(1);

/// Backoff and metric key: kinds share one backoff table, so the kind is part of the key.
pub fn object_key<K: ManagedObject>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Whether the object's last reconcile found its AWS resource: `Ready` (the resource exists and
/// is usable) and not being deleted. A kind whose resource's name and region are immutable may
/// read such a resource without first asking whether it is there (Bucket: no `HeadBucket`;
/// Table: its four reads at once), provided its reads still tell "gone" apart, and that what
/// was read beside the existence check is kept only if it is still the same resource: a name
/// may be taken again by someone else's in between (Table: checked by its id or creation time).
pub fn found_last_time<K: ManagedObject>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_none()
        && obj
            .status()
            .is_some_and(|s| is_true(&K::common_status(s).conditions, conditions::READY))
}

/// Changes to anything but status: the only changes that need a reconcile. Status writes by
/// kaws itself are filtered out, which is what keeps terminal errors from looping. Finalizers
/// are left out too: kaws adds its own and goes on in the same reconcile (see
/// [`add_finalizer`]), so the watch event of that patch needs no second reconcile; a finalizer
/// someone removes is put back at the object's next reconcile.
pub fn trigger_hash<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut h = DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

/// The reconcile entry point for kube-runtime's `Controller`.
pub async fn reconcile<K, E>(obj: Arc<K>, ctx: Arc<Context<E>>) -> Result<Action>
where
    K: ManagedObject,
    E: External<K>,
{
    let Ok(_permit) = ctx.in_flight.acquire().await else {
        // Closed only when the controller stops.
        return Ok(Action::await_change());
    };
    // Reconciles handed on by the admission queue (2 per permit) and the resyncs and retries
    // kube-runtime's scheduler starts wait for a permit above, so what waits must be small:
    // the reconcile itself, a future of several KiB, is allocated only once it may run.
    Box::pin(reconcile_now(obj, &ctx)).await
}

async fn reconcile_now<K, E>(obj: Arc<K>, ctx: &Context<E>) -> Result<Action>
where
    K: ManagedObject,
    E: External<K>,
{
    let started = Instant::now();
    let key = object_key(obj.as_ref());
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let result = match add_finalizer_reading(&api, obj, ctx).await {
        Ok((obj, fresh, early)) => run_finalizer(&api, obj, fresh, early, ctx).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(Error::StillDeleting(_)) => "deleting",
        Err(_) => "error",
    };
    ctx.shared
        .metrics
        .reconciled(K::KIND, outcome, started.elapsed());
    tracing::debug!(kind = K::KIND, object = %key, outcome, elapsed = ?started.elapsed(), "reconciled");
    result
}

/// Puts kaws' finalizer on an object that lacks it and is not being deleted, and returns the
/// object as the API server now has it (`true`: fresh, not from the watch cache), so that the
/// same reconcile goes on to create: no round trip through the watch (which is why
/// [`trigger_hash`] leaves finalizers out). The patch tests the list it extends, so a
/// concurrent change to the finalizers fails it (retried).
async fn add_finalizer<K: ManagedObject>(api: &Api<K>, obj: Arc<K>) -> Result<(Arc<K>, bool)> {
    let has = obj.finalizers().iter().any(|f| f == FINALIZER);
    if has || obj.meta().deletion_timestamp.is_some() {
        return Ok((obj, false));
    }
    let patch = if obj.finalizers().is_empty() {
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])
    } else {
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": obj.finalizers() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| Error::InvalidSpec(format!("finalizer patch: {e}")))?;
    let patched = api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    Ok((Arc::new(patched), true))
}

/// [`add_finalizer`], and for an object that lacks the finalizer and would be applied, the
/// apply's first reads ([`first_reads`]) at the same time: a new object's create waits for the
/// slower of the two round trips, not for both. The finalizer is still on before anything is
/// written (every write comes after both, in `apply`). Read ahead only where the apply would
/// read — not being deleted, not paused, `Manage`d, valid — and given up at once if the patch
/// fails. The reads are dropped (the apply makes them again) unless the API server's answer
/// shows the same object as the watch did: uid, generation, kaws' annotations and status.
async fn add_finalizer_reading<K, E>(
    api: &Api<K>,
    obj: Arc<K>,
    ctx: &Context<E>,
) -> Result<(Arc<K>, bool, Option<FirstReads<K, E>>)>
where
    K: ManagedObject,
    E: External<K>,
{
    let reads_ahead = !obj.finalizers().iter().any(|f| f == FINALIZER)
        && obj.meta().deletion_timestamp.is_none()
        && !is_paused(obj.as_ref())
        && obj.common_spec().management_policy() == ManagementPolicy::Manage
        && E::Model::validate(obj.as_ref()).is_ok();
    if !reads_ahead {
        let (obj, fresh) = add_finalizer(api, obj).await?;
        return Ok((obj, fresh, None));
    }
    let target = target(obj.as_ref(), &ctx.shared);
    let ((patched, fresh), reads) = futures::future::try_join(
        add_finalizer(api, obj.clone()),
        first_reads(obj.as_ref(), ctx, &target).map(Ok),
    )
    .await?;
    let (was, now) = (obj.meta(), patched.meta());
    let unchanged = now.uid == was.uid
        && now.generation == was.generation
        && kaws_annotations(now) == kaws_annotations(was)
        && serde_json::to_value(patched.status()).ok() == serde_json::to_value(obj.status()).ok();
    Ok((patched, fresh, unchanged.then_some(reads)))
}

/// The annotations kaws reads (the watch cache keeps no others, the API server's answers have
/// all).
fn kaws_annotations(meta: &ObjectMeta) -> Vec<(&String, &String)> {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(key, _)| annotations::is_kaws(key))
        .collect()
}

/// kube-runtime's finalizer flow (the finalizer is on by now, or the object is being deleted):
/// apply (with the first reads, if [`add_finalizer_reading`] made them), or clean up and
/// release.
async fn run_finalizer<K, E>(
    api: &Api<K>,
    obj: Arc<K>,
    fresh: bool,
    early: Option<FirstReads<K, E>>,
    ctx: &Context<E>,
) -> Result<Action>
where
    K: ManagedObject,
    E: External<K>,
{
    finalizer::finalizer(api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(o.as_ref(), fresh, early, ctx, api).await,
            FinalizerEvent::Cleanup(o) => cleanup(o.as_ref(), ctx, api).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::InvalidSpec(other.to_string()),
    })
}

/// What to do after an error that escaped `reconcile`.
pub fn error_policy<K, E>(obj: Arc<K>, err: &Error, ctx: Arc<Context<E>>) -> Action
where
    K: ManagedObject,
    E: External<K>,
{
    let key = object_key(obj.as_ref());
    match policy::retry_after_error(err) {
        Requeue::AwaitChange => Action::await_change(),
        Requeue::After(delay) => Action::requeue(delay),
        Requeue::Resync => Action::requeue(resync_in(resync_period(
            obj.as_ref(),
            ctx.shared.resync_period,
        ))),
        Requeue::Backoff { cap } => {
            let delay = backoff(&ctx.shared, &key, cap);
            tracing::debug!(kind = K::KIND, object = %key, ?delay, error = %err, "retrying");
            Action::requeue(delay)
        }
    }
}

fn annotation<'a, K: Resource>(obj: &'a K, name: &str) -> Option<&'a String> {
    obj.meta().annotations.as_ref().and_then(|a| a.get(name))
}

fn is_paused<K: Resource>(obj: &K) -> bool {
    annotation(obj, annotations::PAUSED).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether `obj`'s status already records its current spec as handled — applied (Ready and
/// Synced) or paused — with kaws' finalizer on and no reconcile requested or deletion pending:
/// then nothing is due before its next drift check. What a (re)started kaws finds in this state
/// is first reconciled at a random point of its resync period (see `runner.rs`) rather than all
/// at once: a restart with 10,000 objects would otherwise start 10,000 reconciles together,
/// each with its AWS reads, ahead of any object that does need work.
pub fn settled<K: ManagedObject>(obj: &K) -> bool {
    let Some(status) = obj.status() else {
        return false;
    };
    let common = K::common_status(status);
    let handled = if is_paused(obj) {
        common.conditions.iter().any(|c| {
            c.type_ == conditions::SYNCED && c.status == "False" && c.reason == reasons::PAUSED
        }) && common.observed_generation == obj.meta().generation
            && obj.meta().deletion_timestamp.is_none()
    } else {
        super::batch::steady(obj)
    };
    handled
        && obj.finalizers().iter().any(|f| f == FINALIZER)
        && annotation(obj, annotations::RECONCILE_REQUESTED_AT)
            .is_none_or(|token| common.last_handled_reconcile_at.as_ref() == Some(token))
}

/// The object's drift-check period: its `kaws.io/resync-period` annotation, else `default`;
/// an annotation below [`MIN_RESYNC_PERIOD`] or unreadable is ignored, one above
/// [`MAX_RESYNC_PERIOD`] taken as that.
pub fn resync_period<K: Resource>(obj: &K, default: Duration) -> Duration {
    annotation(obj, annotations::RESYNC_PERIOD)
        .and_then(|v| humantime::parse_duration(v).ok())
        .filter(|d| *d >= MIN_RESYNC_PERIOD)
        .unwrap_or(default)
        .clamp(MIN_RESYNC_PERIOD, MAX_RESYNC_PERIOD)
}

fn target<K: ManagedObject>(obj: &K, shared: &Shared) -> Target {
    let meta = obj.meta();
    Target {
        region: obj
            .common_spec()
            .placement
            .region()
            .map_or_else(|| shared.default_region.clone(), str::to_string),
        owner: Owner::new(
            &shared.cluster_id,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
        ),
    }
}

fn starting_status<K: ManagedObject>(obj: &K) -> K::Status {
    let mut status = obj.status().cloned().unwrap_or_default();
    if let Some(token) = annotation(obj, annotations::RECONCILE_REQUESTED_AT) {
        K::common_status_mut(&mut status).last_handled_reconcile_at = Some(token.clone());
    }
    status
}

/// Writes status by server-side apply on `/status`, from the typed struct.
async fn write_status<K: ManagedObject>(api: &Api<K>, obj: &K, status: &K::Status) -> Result<()> {
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Ends a reconcile with `status`: written, unless the API server already has exactly it.
async fn settle_status<K: ManagedObject>(
    shared: &Shared,
    api: &Api<K>,
    obj: &K,
    status: &K::Status,
) -> Result<()> {
    let key = written_key(obj);
    let new = status_writes::fingerprint(status);
    let cached = obj.status().map(status_writes::fingerprint);
    if !shared.status_writes.needed(&key, cached, new) {
        shared.metrics.status_write(K::KIND, "skipped");
        return Ok(());
    }
    write_status(api, obj, status).await?;
    shared.status_writes.wrote(&key, new);
    shared.metrics.status_write(K::KIND, "written");
    Ok(())
}

/// The key of an object's last status write: a recreated object (new uid) starts afresh.
fn written_key<K: ManagedObject>(obj: &K) -> String {
    format!("{}/{}", object_key(obj), obj.uid().unwrap_or_default())
}

/// `Synced=False`, reason `Paused`; `Ready` stays as it was, since nothing was observed.
async fn write_paused<K: ManagedObject>(
    shared: &Shared,
    obj: &K,
    what: &str,
    api: &Api<K>,
    status: &mut K::Status,
    deleting: bool,
) -> Result<Action> {
    let previous = obj.status();
    let decision = decide_for(obj, status, previous, what, Outcome::Paused { deleting });
    // Paused is not an error: backoff, metrics and `Ready` stay as they were.
    set_conditions(obj, status, decision.ready.as_ref(), &decision.synced);
    settle_status(shared, api, obj, status).await?;
    Ok(Action::await_change())
}

fn set_conditions<K: ManagedObject>(
    obj: &K,
    status: &mut K::Status,
    ready: Option<&ConditionState>,
    synced: &ConditionState,
) {
    let generation = obj.meta().generation;
    let now = Timestamp::now();
    let common = K::common_status_mut(status);
    if let Some(ready) = ready {
        set_condition(
            &mut common.conditions,
            conditions::READY,
            ready,
            generation,
            now,
        );
    }
    set_condition(
        &mut common.conditions,
        conditions::SYNCED,
        synced,
        generation,
        now,
    );
    common.observed_generation = generation;
}

/// `fresh`: `obj` is the API server's answer to a write of this reconcile, not the watch cache's
/// copy, so its status is known current.
async fn apply<K, E>(
    obj: &K,
    fresh: bool,
    early: Option<FirstReads<K, E>>,
    ctx: &Context<E>,
    api: &Api<K>,
) -> Result<Action>
where
    K: ManagedObject,
    E: External<K>,
{
    let shared = &ctx.shared;
    let key = object_key(obj);
    let mut status = starting_status(obj);

    if is_paused(obj) {
        let what = E::Model::describe(obj);
        return write_paused(shared, obj, &what, api, &mut status, false).await;
    }

    let previous = obj.status().cloned();
    let result = apply_inner(obj, fresh, early, ctx, api, &mut status, previous.as_ref()).await;
    let outcome = match &result {
        Ok(progress) => Outcome::Applied(progress.clone()),
        Err(err) => {
            tracing::warn!(kind = K::KIND, object = %key, category = err.category(), error = %err, "reconcile failed");
            Outcome::ApplyFailed(err)
        }
    };
    let what = E::Model::describe(obj);
    let decision = decide_for(obj, &status, previous.as_ref(), &what, outcome);
    let requeue = decision.requeue;
    enact(obj, shared, api, &mut status, decision).await?;
    Ok(match requeue {
        Requeue::Resync => Action::requeue(resync_in(resync_period(obj, shared.resync_period))),
        Requeue::After(delay) => Action::requeue(delay),
        Requeue::Backoff { cap } => Action::requeue(backoff(shared, &key, cap)),
        Requeue::AwaitChange => Action::await_change(),
    })
}

/// [`policy::decide`] for this object.
fn decide_for<K: ManagedObject>(
    obj: &K,
    status: &K::Status,
    previous: Option<&K::Status>,
    what: &str,
    outcome: Outcome<'_>,
) -> Decision {
    let facts = Facts {
        previous: previous.map(K::common_status),
        current: K::common_status(status),
        generation: obj.meta().generation,
        now: Timestamp::now(),
        what,
    };
    policy::decide(&facts, outcome)
}

/// Carries a decision out: metrics, backoff reset, conditions, the Event, the status write.
/// When to reconcile again is the caller's: `apply` returns it, `cleanup` returns the error,
/// which [`error_policy`] turns into the same requeue.
async fn enact<K: ManagedObject>(
    obj: &K,
    shared: &Shared,
    api: &Api<K>,
    status: &mut K::Status,
    decision: Decision,
) -> Result<()> {
    let key = object_key(obj);
    if let Some(category) = decision.error {
        shared.metrics.error(K::KIND, category);
    }
    if decision.reset_backoff {
        shared.backoffs.reset(&key);
    }
    set_conditions(obj, status, decision.ready.as_ref(), &decision.synced);
    if let Some(first) = decision.synced_since {
        // The grace period is measured from here; see `policy::first_failure`.
        let common = K::common_status_mut(status);
        for c in common
            .conditions
            .iter_mut()
            .filter(|c| c.type_ == conditions::SYNCED)
        {
            c.last_transition_time = Time(first);
        }
    }
    if let Some(event) = decision.event {
        let events = &shared.events;
        match event.severity {
            Severity::Normal => events.normal(obj, &event.reason, event.message).await,
            Severity::Warning => events.warning(obj, &event.reason, event.message).await,
            Severity::Retrying => events.retrying(obj, &event.reason, event.message).await,
        }
    }
    settle_status(shared, api, obj, status).await?;
    let ready = is_true(&K::common_status(status).conditions, conditions::READY);
    shared.metrics.object_ready(K::KIND, &key, Some(ready));
    Ok(())
}

fn backoff(shared: &Shared, key: &str, cap: Option<Duration>) -> Duration {
    match cap {
        Some(cap) => shared.backoffs.next_delay_capped(key, cap),
        None => shared.backoffs.next_delay(key),
    }
}

/// `managementPolicy: ObserveOnly`: reads the resource into status and never writes; nothing the
/// spec references is needed, since nothing is created or changed.
async fn observe_only<K, E>(
    obj: &K,
    ctx: &Context<E>,
    target: &Target,
    what: &str,
    status: &mut K::Status,
) -> Result<Progress>
where
    K: ManagedObject,
    E: External<K>,
{
    let external = &ctx.external;
    let observed_only = |ready| Progress {
        ready,
        synced: ConditionState::yes(
            reasons::OBSERVED,
            "managementPolicy is ObserveOnly: kaws reads AWS into status and never writes",
        ),
        requeue: None,
        event: None,
    };
    let Some(observed) = external
        .observe(obj, target, None, Reads::first(obj))
        .await?
    else {
        return Ok(observed_only(ConditionState::no(
            reasons::NOT_FOUND,
            format!("{what} does not exist"),
        )));
    };
    E::Model::fill_status(obj, target, &observed, status);
    K::Placement::record(&mut K::common_status_mut(status).placement, &target.region);
    Ok(observed_only(match E::Model::availability(&observed) {
        Availability::Available => {
            ConditionState::yes(reasons::AVAILABLE, format!("{what} is available"))
        }
        Availability::Busy { reason, message } | Availability::Failed { reason, message } => {
            ConditionState::no(&reason, message)
        }
    }))
}

/// What one reconcile has done so far: it goes on observing after its own create and its own
/// writes, so a resource AWS shows at once converges in this reconcile instead of the next.
struct Done<O> {
    /// The object came fresh from the API server (see [`apply`]): what its status says about
    /// an earlier create attempt needs no second read.
    fresh: bool,
    /// The first observe's answer (see [`first_reads`]) and how it read; taken by the first
    /// step.
    first_observe: Option<(Option<O>, Reads)>,
    /// This reconcile created the resource.
    created: bool,
    /// The batches this reconcile applied.
    wrote: Option<Wrote>,
}

/// Batches applied in one reconcile, told as one Event.
struct Wrote {
    /// Fields changed, in order, each once.
    fields: Vec<&'static str>,
    /// A correction of drift rather than a spec change.
    drift: bool,
    /// The last batch, as the loop guard identifies it.
    last: u64,
    /// How many batches were applied.
    batches: u32,
    /// The loop guard's count for the last batch.
    write: u32,
}

/// Most batches one reconcile applies; the rest follows at the next (see [`Model::next_batch`]).
const MAX_BATCHES: u32 = 4;

impl Wrote {
    fn fields(&self) -> String {
        self.fields.join(", ")
    }

    fn event(&self, what: &str) -> Notice {
        if self.drift {
            Notice::normal(
                reasons::DRIFT_CORRECTED,
                format!("corrected drift of {what}: {}", self.fields()),
            )
        } else {
            Notice::normal(
                reasons::UPDATED,
                format!("updated {what}: {}", self.fields()),
            )
        }
    }

    /// How the reconcile ends when AWS does not show the last batch yet.
    fn pending(&self, what: &str) -> Progress {
        let fields = self.fields();
        Progress {
            ready: ConditionState::no(
                reasons::UPDATING,
                format!("{what} is being updated: {fields}"),
            ),
            synced: ConditionState::yes(
                if self.drift {
                    reasons::DRIFT_CORRECTED
                } else {
                    reasons::RECONCILE_SUCCESS
                },
                format!("applied {fields}"),
            ),
            requeue: Some(loop_guard::confirm_after(self.write)),
            event: Some(self.event(what)),
        }
    }
}

/// Where one observe-and-act step left the reconcile.
enum Step {
    /// The reconcile ends with this.
    Finished(Progress),
    /// It created the resource or applied a batch: observe again to confirm.
    Confirm,
    /// A [`Reads::Steady`] observation found something to act on: read in full first.
    ReadInFull,
}

#[allow(clippy::too_many_arguments)] // the reconcile's state, threaded through its steps
async fn apply_inner<K, E>(
    obj: &K,
    fresh: bool,
    early: Option<FirstReads<K, E>>,
    ctx: &Context<E>,
    api: &Api<K>,
    status: &mut K::Status,
    previous: Option<&K::Status>,
) -> Result<Progress>
where
    K: ManagedObject,
    E: External<K>,
{
    E::Model::validate(obj).map_err(Error::InvalidSpec)?;
    let target = target(obj, &ctx.shared);
    let what = E::Model::describe(obj);
    if obj.common_spec().management_policy() == ManagementPolicy::ObserveOnly {
        return observe_only(obj, ctx, &target, &what, status).await;
    }
    // Once per apply (never on delete, never cached): what the spec references, and the first
    // observe. The kind's own writes below keep `resolved` current.
    let (mut resolved, first_observe) = match early {
        Some(reads) => reads?,
        None => first_reads(obj, ctx, &target).await?,
    };
    let mut done = Done {
        fresh,
        first_observe: Some(first_observe),
        created: false,
        wrote: None,
    };
    // One create and at most `MAX_BATCHES` writes, each confirmed by the next step, so the loop
    // always ends.
    loop {
        let step = observe_and_act(
            obj,
            ctx,
            api,
            &target,
            &mut resolved,
            &what,
            status,
            previous,
            &mut done,
        )
        .await?;
        if let Step::Finished(progress) = step {
            return Ok(progress);
        }
    }
}

/// What [`first_reads`] read: the resolve step's answer and the first observe's.
type FirstReads<K, E> = Result<(ResolvedOf<K, E>, (Option<ObservedOf<K, E>>, Reads))>;

/// An apply's first reads: the resolve step, and the first observe — beside it when the kind's
/// observe does not read what it resolves and the object is not waiting on a reference, else
/// after it. The resolve step's error comes first (it names what the user must fix: a missing
/// Secret, a dependency not ready), and once it fails the observe is not waited for.
async fn first_reads<K, E>(obj: &K, ctx: &Context<E>, target: &Target) -> FirstReads<K, E>
where
    K: ManagedObject,
    E: External<K>,
{
    let external = &ctx.external;
    let reads = Reads::first(obj);
    if E::OBSERVE_READS_RESOLVED || waiting_on_references(obj) {
        let resolved = external.resolve(obj, target).await?;
        let resolved_for_observe = E::OBSERVE_READS_RESOLVED.then_some(&resolved);
        let observed = external
            .observe(obj, target, resolved_for_observe, reads)
            .await?;
        return Ok((resolved, (observed, reads)));
    }
    let resolve = external.resolve(obj, target);
    let observe = external.observe(obj, target, None, reads);
    tokio::pin!(resolve, observe);
    tokio::select! {
        resolved = &mut resolve => {
            let resolved = resolved?;
            Ok((resolved, (observe.await?, reads)))
        }
        observed = &mut observe => {
            let resolved = resolve.await?;
            Ok((resolved, (observed?, reads)))
        }
    }
}

/// Whether the object's last reconcile stopped at what its spec references (a Secret missing,
/// a dependency not ready): until it is there, its reconciles read nothing from AWS.
fn waiting_on_references<K: ManagedObject>(obj: &K) -> bool {
    obj.status().is_some_and(|status| {
        K::common_status(status).conditions.iter().any(|c| {
            c.status == "False"
                && (c.reason == reasons::SECRET_NOT_FOUND
                    || c.reason == reasons::DEPENDENCY_NOT_READY)
        })
    })
}

#[allow(clippy::too_many_arguments)] // the reconcile's state, threaded through its steps
async fn observe_and_act<K, E>(
    obj: &K,
    ctx: &Context<E>,
    api: &Api<K>,
    target: &Target,
    resolved: &mut ResolvedOf<K, E>,
    what: &str,
    status: &mut K::Status,
    previous: Option<&K::Status>,
    done: &mut Done<ObservedOf<K, E>>,
) -> Result<Step>
where
    K: ManagedObject,
    E: External<K>,
{
    let shared = &ctx.shared;
    let external = &ctx.external;
    let (observed, reads) = match done.first_observe.take() {
        Some(first) => first,
        None => {
            let resolved = E::OBSERVE_READS_RESOLVED.then_some(&*resolved);
            let observed = external.observe(obj, target, resolved, Reads::Full).await?;
            (observed, Reads::Full)
        }
    };
    // A steady observation may take what changes rarely from memory: it may conclude "nothing
    // to do", and nothing else (see `Reads::Steady`).
    let steady = reads == Reads::Steady && E::READS_FROM_MEMORY;
    let Some(observed) = observed else {
        if steady {
            return Ok(Step::ReadInFull);
        }
        if done.created {
            // Created, but not shown yet (AWS reads are eventually consistent): confirm soon.
            return Ok(Step::Finished(creating(
                format!("{what} is being created"),
                "created",
                POLL_AFTER_WRITE,
            )));
        }
        let created = create(obj, ctx, api, target, resolved, done.fresh, status).await?;
        return Ok(match created {
            Created::New => {
                done.created = true;
                Step::Confirm
            }
            // Someone else's, most likely (it may still lack its owner's tags): look again once
            // its creator had time to tag it.
            Created::Existed => Step::Finished(creating(
                format!("{what} already exists; checking whose it is"),
                "create found an existing resource",
                POLL_BUSY,
            )),
        });
    };

    E::Model::fill_status(obj, target, &observed, status);
    K::Placement::record(&mut K::common_status_mut(status).placement, &target.region);
    let availability = E::Model::availability(&observed);

    let mut create_pending = K::common_status(status).create_pending_since.is_some();
    if !create_pending
        && !E::Model::observed_tags(&observed).contains_key(super::names::tags::OWNER)
        && let Some(since) = recorded_create(api, obj).await?
    {
        K::common_status_mut(status).create_pending_since = Some(since);
        create_pending = true;
    }
    let ownership = ownership::check(
        what,
        &target.owner,
        E::Model::observed_tags(&observed),
        obj.annotations(),
        create_pending,
    );
    if steady && (create_pending || !matches!(ownership, Ok(Ownership::Ours))) {
        return Ok(Step::ReadInFull);
    }
    if matches!(ownership, Err(_) | Ok(Ownership::Ours)) {
        // Our owner tag is on, or another owner's is: the pending create is settled either way.
        K::common_status_mut(status).create_pending_since = None;
    }
    let ownership = ownership?;
    let tags = target.owner.desired_tags(&obj.common_spec().tags);
    match ownership {
        // `Created` is told only now that the resource is proven ours: a create that merely
        // reached an existing resource (a lost name race) never claims it did. Unless this very
        // reconcile created it, the intent is confirmed fresh first: a watch cache lagging
        // behind the status write that settled it would otherwise tell `Created` twice (seen in
        // `make chaos`, name-races).
        Ownership::Ours if create_pending => {
            if done.created || recorded_create(api, obj).await?.is_some() {
                shared
                    .events
                    .normal(obj, reasons::CREATED, format!("created {what}"))
                    .await;
            }
        }
        Ownership::Ours => {}
        Ownership::Adopt => {
            shared
                .events
                .normal(obj, reasons::ADOPTED, format!("adopted existing {what}"))
                .await;
        }
        Ownership::Recover => {
            // Tags only: every other write waits until the next observe shows our owner tag,
            // so two objects racing for one name can never both configure it.
            if let Some(change) = E::Model::tags_change(&observed, &tags) {
                external
                    .update(obj, target, &observed, resolved, &[change])
                    .await?;
            }
            tracing::info!(kind = K::KIND, object = %object_key(obj), "tagged {what}, created by this object before its owner tags were on");
            return Ok(Step::Finished(creating(
                format!("{what} is being created"),
                "tagged",
                POLL_AFTER_WRITE,
            )));
        }
    }
    // Before `after_observe`, whose Kubernetes-side writes (a connection Secret) must not
    // follow a drift seen in a listing either.
    if steady
        && (E::Model::conflict(obj, &observed).is_some()
            || availability != Availability::Available
            || !E::Model::plan(obj, &observed, resolved, &tags).is_empty())
    {
        return Ok(Step::ReadInFull);
    }
    if let Some(why) = E::Model::conflict(obj, &observed) {
        return Err(Error::InvalidSpec(why));
    }
    external
        .after_observe(obj, target, &observed, resolved)
        .await?;

    match availability {
        Availability::Available => {}
        Availability::Busy { reason, message } => {
            // What this reconcile applied is still told, with the state AWS is in now.
            let event = done.wrote.as_ref().map(|w| w.event(what));
            return Ok(Step::Finished(Progress {
                ready: ConditionState::no(&reason, message),
                synced: ConditionState::yes(reasons::RECONCILE_SUCCESS, "waiting for AWS"),
                requeue: Some(POLL_BUSY),
                event,
            }));
        }
        Availability::Failed { reason, message } => {
            let state = ConditionState::no(&reason, message.clone());
            return Ok(Step::Finished(Progress {
                ready: state.clone(),
                synced: state,
                requeue: None,
                event: Some(Notice::warning(&reason, message)),
            }));
        }
    }

    let plan = E::Model::plan(obj, &observed, resolved, &tags);
    let changes = if plan.is_empty() {
        plan
    } else {
        E::Model::next_batch(plan)
    };
    if steady && !changes.is_empty() {
        return Ok(Step::ReadInFull);
    }
    let key = object_key(obj);
    if changes.is_empty() {
        shared.update_guard.converged(&key);
        return Ok(Step::Finished(Progress {
            ready: ConditionState::yes(
                reasons::AVAILABLE,
                format!("{what} is available and matches the spec"),
            ),
            synced: ConditionState::yes(reasons::RECONCILE_SUCCESS, "AWS matches the spec"),
            requeue: None,
            // What this reconcile applied, now shown by AWS.
            event: done.wrote.as_ref().map(|w| w.event(what)),
        }));
    }
    let this = attempt(obj, &changes);
    if let Some(wrote) = &done.wrote
        && (wrote.last == this.changes || wrote.batches >= MAX_BATCHES)
    {
        // AWS does not show this reconcile's last batch yet: the next reconcile confirms it,
        // and the loop guard counts it if AWS never does.
        return Ok(Step::Finished(wrote.pending(what)));
    }

    let fields = changed_fields(&changes);
    let changes_hash = this.changes;
    let write = match shared.update_guard.check(
        &key,
        this,
        resync_period(obj, shared.resync_period),
        Instant::now(),
    ) {
        Verdict::Write(n) => n,
        Verdict::Hold { writes, first } => {
            let message = format!(
                "applied {fields} to {what} {writes} times in a row and AWS still does not show it; \
                 kaws stops writing until the next resync, a spec change or the annotation {}",
                annotations::RECONCILE_REQUESTED_AT
            );
            let state = ConditionState::no(reasons::NOT_CONVERGING, message.clone());
            return Ok(Step::Finished(Progress {
                ready: state.clone(),
                synced: state,
                requeue: None,
                event: first.then(|| Notice::warning(reasons::NOT_CONVERGING, message)),
            }));
        }
    };
    external
        .apply_changes(obj, target, &observed, resolved, &changes, status)
        .await?;
    let wrote = done.wrote.get_or_insert_with(|| Wrote {
        fields: Vec::new(),
        // The spec this status describes was already applied and converged (Ready), or a
        // drift correction is still under way: what differs now was changed outside
        // Kubernetes. Kinds that apply a spec change in several reconciles (one DynamoDB step
        // at a time) pass through Ready=False in between, so their later steps are not
        // mistaken for drift.
        drift: ownership == Ownership::Ours
            && previous.is_some_and(|p| {
                let c = K::common_status(p);
                let drift_under_way = c
                    .conditions
                    .iter()
                    .any(|c| c.type_ == conditions::SYNCED && c.reason == reasons::DRIFT_CORRECTED);
                c.observed_generation == obj.meta().generation
                    && is_true(&c.conditions, conditions::SYNCED)
                    && (is_true(&c.conditions, conditions::READY) || drift_under_way)
            }),
        last: 0,
        batches: 0,
        write: 0,
    });
    for field in changes.iter().map(Change::field) {
        if !wrote.fields.contains(&field) {
            wrote.fields.push(field);
        }
    }
    wrote.last = changes_hash;
    wrote.batches += 1;
    wrote.write = write;
    Ok(Step::Confirm)
}

/// `Ready=False`, reason `Creating`: the resource was just created or is being claimed.
fn creating(ready: String, synced: &str, requeue: Duration) -> Progress {
    Progress {
        ready: ConditionState::no(reasons::CREATING, ready),
        synced: ConditionState::yes(reasons::RECONCILE_SUCCESS, synced),
        requeue: Some(requeue),
        event: None,
    }
}

/// What the update-loop guard compares between reconciles: the change set (hashed, so no value
/// is kept), the generation and the reconcile-request token.
fn attempt<K: ManagedObject, C: Change>(obj: &K, changes: &[C]) -> Attempt {
    let mut h = DefaultHasher::new();
    format!("{changes:?}").hash(&mut h);
    Attempt {
        changes: h.finish(),
        generation: obj.meta().generation,
        requested_at: annotation(obj, annotations::RECONCILE_REQUESTED_AT).cloned(),
    }
}

/// The create intent as the API server has it. The watch cache can lag behind kaws' own last
/// status write (a dropped or slow watch), and a reconcile from such a stale copy must neither
/// call its own untagged resource someone else's nor write the intent away; so where the answer
/// decides ownership, it is read fresh (only on the rare untagged and create paths).
async fn recorded_create<K: ManagedObject>(api: &Api<K>, obj: &K) -> Result<Option<Time>> {
    let fresh = api.get_opt(&obj.name_any()).await?;
    Ok(fresh
        .as_ref()
        .and_then(|o| o.status())
        .and_then(|s| K::common_status(s).create_pending_since.clone()))
}

/// The create step. The intent is on the object before AWS hears of it
/// (`status.createPendingSince`), so that whatever happens next — a crash, a lost answer, an
/// endpoint that drops create-time tags — the resource is recognised afterwards (see
/// [`Ownership::Recover`]) instead of being reported as someone else's and leaked.
async fn create<K, E>(
    obj: &K,
    ctx: &Context<E>,
    api: &Api<K>,
    target: &Target,
    resolved: &mut ResolvedOf<K, E>,
    fresh: bool,
    status: &mut K::Status,
) -> Result<Created>
where
    K: ManagedObject,
    E: External<K>,
{
    let common = K::common_status_mut(status);
    K::Placement::record(&mut common.placement, &target.region);
    // Set by an earlier attempt whose outcome is unknown: keep its time and never clear it here,
    // since that attempt may have created the resource. The watch cache may lag behind it; an
    // object fresh from the API server does not.
    if common.create_pending_since.is_none() && !fresh {
        common.create_pending_since = recorded_create(api, obj).await?;
    }
    let common = K::common_status_mut(status);
    let earlier_attempt = common.create_pending_since.is_some();
    if !earlier_attempt {
        common.create_pending_since = Some(Time(Timestamp::now()));
    }
    let intent = async {
        if !earlier_attempt {
            write_status(api, obj, status).await?;
            // Known as written: the end of this reconcile must not take a cache that lacks the
            // intent for the API server's view and skip the write that settles it.
            ctx.shared
                .status_writes
                .wrote(&written_key(obj), status_writes::fingerprint(status));
        }
        Ok::<_, Error>(())
    };
    let (intent, prepared) =
        tokio::join!(intent, ctx.external.before_create(obj, target, resolved));
    match (intent, prepared) {
        (Ok(()), Ok(())) => {}
        // No create was sent: the intent this reconcile recorded is withdrawn by the status
        // write that reports the error (known to differ from the intent's, so never skipped).
        (Ok(()), Err(e)) => {
            if !earlier_attempt {
                K::common_status_mut(status).create_pending_since = None;
            }
            return Err(e);
        }
        // Whether the API server took the intent is unknown (a lost answer): it stays, and the
        // status write that reports the error records it either way.
        (Err(e), _) => return Err(e),
    }
    let tags = target.owner.desired_tags(&obj.common_spec().tags);
    let created = ctx
        .external
        .create(obj, target, resolved, &tags, status)
        .await;
    // Whether AWS's answer proves this call created nothing: it said the resource exists, or
    // refused the request (throttling is a refusal too). A timeout, a reset connection or a 5xx
    // leave it open, so the intent stays recorded.
    let settled_without_resource = match &created {
        Ok(Created::Existed) => true,
        Err(e) => {
            e.is_terminal()
                || matches!(
                    e,
                    Error::Throttled { .. } | Error::Busy { .. } | Error::RejectedWithGrace { .. }
                )
        }
        Ok(Created::New) => false,
    };
    if settled_without_resource && !earlier_attempt {
        K::common_status_mut(status).create_pending_since = None;
    }
    created
}

fn changed_fields<C: Change>(changes: &[C]) -> String {
    let mut fields: Vec<&str> = changes.iter().map(Change::field).collect();
    fields.dedup();
    fields.join(", ")
}

async fn cleanup<K, E>(obj: &K, ctx: &Context<E>, api: &Api<K>) -> Result<Action>
where
    K: ManagedObject,
    E: External<K>,
{
    let shared = &ctx.shared;
    let key = object_key(obj);
    let mut status = starting_status(obj);
    let what = E::Model::describe(obj);
    shared.update_guard.converged(&key);

    if is_paused(obj) {
        write_paused(shared, obj, &what, api, &mut status, true).await?;
        return Err(Error::Paused);
    }

    let policy = obj
        .common_spec()
        .deletion_policy
        .unwrap_or(shared.default_deletion_policy);
    let observe_only = obj.common_spec().management_policy() == ManagementPolicy::ObserveOnly;
    if policy == DeletionPolicy::Retain || observe_only {
        let why = if observe_only {
            "managementPolicy is ObserveOnly"
        } else {
            "deletionPolicy is Retain"
        };
        shared
            .events
            .normal(obj, reasons::RETAINED, format!("left {what} in AWS: {why}"))
            .await;
        shared.metrics.object_ready(K::KIND, &key, None);
        shared.status_writes.forget(&written_key(obj));
        return Ok(Action::await_change());
    }

    match cleanup_inner(obj, ctx, api, &what).await {
        Ok(()) => {
            shared.backoffs.reset(&key);
            shared.metrics.object_ready(K::KIND, &key, None);
            shared.status_writes.forget(&written_key(obj));
            Ok(Action::await_change())
        }
        Err(err) => {
            let previous = obj.status();
            let decision = decide_for(obj, &status, previous, &what, Outcome::CleanupFailed(&err));
            enact(obj, shared, api, &mut status, decision).await?;
            Err(err)
        }
    }
}

async fn cleanup_inner<K, E>(obj: &K, ctx: &Context<E>, api: &Api<K>, what: &str) -> Result<()>
where
    K: ManagedObject,
    E: External<K>,
{
    let shared = &ctx.shared;
    let target = target(obj, shared);
    let common = obj.status().map(K::common_status);
    // Whether kaws may ever have created the resource: it recorded a create attempt, or knows the
    // resource's identity. Without either, a spec AWS can never accept has nothing to delete.
    let may_exist = common.is_some_and(|c| c.create_pending_since.is_some() || c.arn.is_some());
    if !may_exist && let Err(why) = E::Model::validate(obj) {
        shared
            .events
            .normal(
                obj,
                reasons::NOTHING_TO_DELETE,
                format!("released without AWS calls: the spec was never valid ({why}), so kaws created nothing"),
            )
            .await;
        return Ok(());
    }
    let observed = match ctx.external.observe(obj, &target, None, Reads::Full).await {
        // AWS refuses to even look the identity up (e.g. a name it does not accept): nothing of
        // that identity can exist, unless kaws recorded a create for it.
        Err(err @ Error::AwsRejected { .. }) if !may_exist => {
            shared
                .events
                .normal(
                    obj,
                    reasons::NOTHING_TO_DELETE,
                    format!("released without deleting: AWS rejects this identity ({err}) and kaws never created it"),
                )
                .await;
            return Ok(());
        }
        other => other?,
    };
    let Some(observed) = observed else {
        shared
            .events
            .normal(obj, reasons::DELETED, format!("{what} is gone"))
            .await;
        return Ok(());
    };
    let tags = E::Model::observed_tags(&observed);
    let owner = tags.get(super::names::tags::OWNER);
    // Untagged but with a create of ours pending: the resource kaws created before it could tag
    // it (see `Ownership::Recover`); leaving it would leak it.
    let ours = owner == Some(&target.owner.owner)
        || (owner.is_none()
            && (common.is_some_and(|c| c.create_pending_since.is_some())
                || recorded_create(api, obj).await?.is_some()));
    if !ours {
        // Never delete what kaws does not own; releasing the object is all that is left.
        shared
            .events
            .normal(
                obj,
                reasons::RETAINED,
                format!("left {what} in AWS: it is not owned by this object"),
            )
            .await;
        return Ok(());
    }
    match ctx.external.delete(obj, &target, &observed).await? {
        DeleteProgress::Gone => {
            shared
                .events
                .normal(obj, reasons::DELETED, format!("deleted {what}"))
                .await;
            Ok(())
        }
        DeleteProgress::InProgress => Err(Error::StillDeleting(what.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    /// Any object does: the driver reads only metadata here (no kind is imported into core).
    fn object() -> ConfigMap {
        serde_saphyr::from_str("metadata: {name: a, namespace: n, generation: 1}\ndata: {k: v}\n")
            .expect("fixture parses")
    }

    #[test]
    fn only_changes_that_need_a_reconcile_trigger_one() {
        let base = object();
        let cases: Vec<(&str, ConfigMap, bool)> = vec![
            (
                "status written by kaws (here: anything outside the hashed metadata)",
                {
                    let mut b = base.clone();
                    b.data = Some([("k".to_string(), "w".to_string())].into());
                    b.metadata.resource_version = Some("9".into());
                    b
                },
                false,
            ),
            (
                "spec change bumps generation",
                {
                    let mut b = base.clone();
                    b.metadata.generation = Some(2);
                    b
                },
                true,
            ),
            (
                "annotation such as kaws.io/paused",
                {
                    let mut b = base.clone();
                    b.metadata.annotations =
                        Some([(annotations::PAUSED.to_string(), "true".to_string())].into());
                    b
                },
                true,
            ),
            (
                "finalizer added (kaws' own, in the reconcile that goes on to create)",
                {
                    let mut b = base.clone();
                    b.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
                    b
                },
                false,
            ),
            (
                "deletion requested",
                {
                    let mut b = base.clone();
                    b.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                    b
                },
                true,
            ),
        ];
        for (why, changed, triggers) in cases {
            assert_eq!(
                trigger_hash(&base) != trigger_hash(&changed),
                triggers,
                "{why}"
            );
        }
    }

    #[test]
    fn resync_period_annotation_overrides_the_default() {
        let default = Duration::from_secs(600);
        let mut b = object();
        assert_eq!(resync_period(&b, default), default);
        b.metadata.annotations =
            Some([(annotations::RESYNC_PERIOD.to_string(), "30s".to_string())].into());
        assert_eq!(resync_period(&b, default), Duration::from_secs(30));
        b.metadata.annotations =
            Some([(annotations::RESYNC_PERIOD.to_string(), "soon".to_string())].into());
        assert_eq!(
            resync_period(&b, default),
            default,
            "an unparsable value falls back"
        );
        b.metadata.annotations =
            Some([(annotations::RESYNC_PERIOD.to_string(), "100ms".to_string())].into());
        assert_eq!(resync_period(&b, default), default, "too short: ignored");
        b.metadata.annotations = Some(
            [(
                annotations::RESYNC_PERIOD.to_string(),
                "100000000000y".to_string(),
            )]
            .into(),
        );
        let longest = resync_period(&b, default);
        assert_eq!(longest, MAX_RESYNC_PERIOD, "too long: capped");
        // Everything computed from the longest period stays in range (no overflow panic).
        let d = resync_in(longest);
        assert!(d >= longest * 9 / 10 && d <= longest * 11 / 10 + Duration::from_secs(10));
        assert!(crate::core::batch::max_age(&b, default) <= Duration::from_secs(300));
    }
}
