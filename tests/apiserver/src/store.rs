//! The in-memory object store: one global resourceVersion counter, a
//! BTreeMap per resource, a bounded event log per resource for watches, and
//! the write paths (create / update / patch / delete) with the Kubernetes
//! object semantics that controllers depend on.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use base64::Engine;
use serde_json::{Value, json};

use crate::{
    errors::{ApiError, ApiResult, Cause},
    events,
    managed::{self, Ctx, Entry},
    patch, resources,
    resources::ResourceDef,
    schema,
    selectors::Selectors,
};

/// Watch event types as they appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of a resource's event log; `old` lets selector-filtered
/// watches turn "stopped matching" into DELETED.
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub obj: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

type ObjKey = (String, String);

/// Objects and history of one resource (all versions share it).
#[derive(Default)]
pub struct Bucket {
    pub objects: BTreeMap<ObjKey, Arc<Value>>,
    pub log: VecDeque<Event>,
    /// resourceVersion of the newest event dropped from `log`.
    pub compacted: u64,
}

/// How to treat fields the schema does not know (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Per-request write options.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: Option<String>,
    pub force: bool,
    /// The request's User-Agent: names the manager of a write without `fieldManager`.
    pub user_agent: String,
}

impl WriteOpts {
    /// The manager a non-apply write is recorded under: `fieldManager`, or
    /// the User-Agent up to its first `/` (kube-apiserver's `prefixFromUserAgent`).
    pub fn update_manager(&self) -> String {
        match self.field_manager.as_deref() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect(),
        }
    }
}

/// How a write records field ownership in `metadata.managedFields`.
#[derive(Clone, Copy, Debug)]
enum Track<'a> {
    /// A create, update or non-apply patch by this manager (operation `Update`).
    Update(&'a str),
    /// Already recorded (server-side apply computes ownership itself).
    Keep,
}

/// Where a request points.
#[derive(Clone, Debug)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: Option<String>,
}

/// `DeleteOptions.propagationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// Options from a DeleteOptions body / query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// `None`: the object's own orphan / foregroundDeletion finalizer
    /// decides, else Background (the default of every kind served here).
    pub propagation: Option<Propagation>,
    /// The deprecated `orphanDependents`; never set together with `propagation`.
    pub orphan_dependents: Option<bool>,
}

/// The garbage collector's finalizers (`metav1.FinalizerOrphanDependents`,
/// `metav1.FinalizerDeleteDependents`) and apiextensions' cleanup finalizer.
pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// The manager the controllers inside this server write as
/// (`prefixFromUserAgent` of kube-controller-manager / kube-apiserver).
const GC_MANAGER: &str = "kube-controller-manager";
const CRD_MANAGER: &str = "kube-apiserver";

/// An object by storage key, namespace and name.
type ObjRef = (String, String, String);

/// Result of a successful write: the stored object plus `Warning` headers.
pub struct Written {
    pub obj: Value,
    pub warnings: Vec<String>,
}

pub struct State {
    pub rv: u64,
    pub defs: BTreeMap<String, Arc<ResourceDef>>,
    pub buckets: HashMap<String, Bucket>,
    history: usize,
    validator: kube_cel::Validator,
    /// Changes whenever the set of served resources changes (OpenAPI/discovery hashes).
    pub epoch: u64,
    /// owner uid → dependents, for garbage collection.
    owners: HashMap<String, HashSet<ObjRef>>,
    /// uid → object, for the garbage collector's owner lookups.
    uids: HashMap<String, ObjRef>,
    /// Objects being deleted with the orphan or foregroundDeletion finalizer.
    gc_pending: BTreeSet<ObjRef>,
    /// Objects written with a reference to an owner that does not exist.
    gc_dangling: BTreeSet<ObjRef>,
}

/// Shared handle: the state behind one lock, plus a channel that carries the
/// newest resourceVersion so watches wake up without polling.
pub struct Store {
    state: Mutex<State>,
    pub notify: tokio::sync::watch::Sender<u64>,
}

/// The object as served at the target's version (conversion strategy None:
/// only apiVersion changes). Needs no lock, so watches can call it freely.
pub fn present(t: &Target, obj: &Value) -> Value {
    let mut v = if t.def.is_events_v1() {
        events::core_to_v1(obj)
    } else {
        obj.clone()
    };
    v["apiVersion"] = json!(t.def.api_version(&t.version));
    v["kind"] = json!(t.def.kind);
    v
}

/// Sets a status condition as apiextensions' `SetCRDCondition` does: the
/// transition time changes only with the status.
fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if !obj["status"].get("conditions").is_some_and(Value::is_array) {
        obj["status"]["conditions"] = json!([]);
    }
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let fresh = json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now()});
    match conds.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = fresh["lastTransitionTime"].clone();
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(fresh),
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The finalizers a DELETE leaves on the object: the registry's
/// `deletionFinalizersForGarbageCollection` (explicit orphanDependents, then
/// propagationPolicy, then an orphan / foregroundDeletion finalizer already
/// present, then the kind's default, Background for everything served here).
fn gc_finalizers(current: &[String], opts: &DeleteOpts) -> Vec<String> {
    let (orphan, foreground) = match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => (o, false),
        (None, Some(Propagation::Orphan)) => (true, false),
        (None, Some(Propagation::Foreground)) => (false, true),
        (None, Some(Propagation::Background)) => (false, false),
        (None, None) => {
            let first = current
                .iter()
                .find(|f| *f == ORPHAN_FINALIZER || *f == FOREGROUND_FINALIZER)
                .map(String::as_str);
            (
                first == Some(ORPHAN_FINALIZER),
                first == Some(FOREGROUND_FINALIZER),
            )
        }
    };
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        out.push(FOREGROUND_FINALIZER.into());
    }
    let same = out.len() == current.len() && out.iter().all(|f| current.contains(f));
    if same { current.to_vec() } else { out }
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops what Go's `omitempty` would drop and what this server does not keep.
fn normalize_meta(obj: &mut Value) {
    let m = meta_mut(obj);
    for k in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "managedFields",
    ] {
        let empty = match m.get(k) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(k);
        }
    }
    m.remove("selfLink");
}

fn dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn dns1123_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && dns1123_subdomain(s)
}

fn name_causes(def: &ResourceDef, name: &str) -> Vec<Cause> {
    if def.plural == "namespaces" {
        if !dns1123_label(name) {
            return vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                ),
                field: "metadata.name".into(),
            }];
        }
    } else if !dns1123_subdomain(name) {
        return vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
            field: "metadata.name".into(),
        }];
    }
    Vec::new()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Everything but metadata (and status when it is a subresource): what
/// `metadata.generation` tracks.
fn spec_part(obj: &Value, status_sub: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if status_sub {
            m.remove("status");
        }
    }
    v
}

fn without_rv(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

fn crd_status(crd: &Value, def: &ResourceDef) -> Value {
    let t = now();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t}
        ],
        "storedVersions": [def.storage_version()]
    })
}

impl Store {
    pub fn new(history: usize) -> Self {
        let mut defs = BTreeMap::new();
        for d in resources::builtins() {
            defs.insert(d.id(), Arc::new(d));
        }
        let mut state = State {
            rv: 1,
            defs,
            buckets: HashMap::new(),
            history: history.max(1),
            validator: kube_cel::Validator::new(),
            epoch: 1,
            owners: HashMap::new(),
            uids: HashMap::new(),
            gc_pending: BTreeSet::new(),
            gc_dangling: BTreeSet::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = state.target("", "namespaces", None);
            if let Some(t) = t {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let opts = WriteOpts {
                    user_agent: "kube-apiserver".into(),
                    ..WriteOpts::default()
                };
                let _ = state.create(&t, body, &opts);
            }
        }
        let (notify, _) = tokio::sync::watch::channel(state.rv);
        Self {
            state: Mutex::new(state),
            notify,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a state mutation, lets the server's own controllers (garbage
    /// collector, CRD finalizer) react to it, and wakes watchers afterwards.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, rv) = {
            let mut st = self.lock();
            let out = f(&mut st);
            st.settle();
            (out, st.rv)
        };
        self.notify.send_if_modified(|v| {
            if *v != rv {
                *v = rv;
                true
            } else {
                false
            }
        });
        out
    }
}

impl State {
    pub fn target(&self, group: &str, plural: &str, namespace: Option<&str>) -> Option<Target> {
        let def = self.defs.get(&format!("{group}/{plural}"))?.clone();
        let version = def.storage_version().to_string();
        Some(Target {
            def,
            version,
            namespace: namespace.map(String::from),
        })
    }

    /// The resource served at `group/version` with this plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .get(&format!("{group}/{plural}"))
            .filter(|d| d.version(version).is_some())
            .cloned()
    }

    pub fn bucket(&self, key: &str) -> Option<&Bucket> {
        self.buckets.get(key)
    }

    /// The object as served at the requested version.
    pub fn present(&self, t: &Target, obj: &Value) -> Value {
        present(t, obj)
    }

    fn ns_key(t: &Target, name: &str) -> ObjKey {
        (t.namespace.clone().unwrap_or_default(), name.to_string())
    }

    pub fn get_raw(&self, t: &Target, name: &str) -> Option<Arc<Value>> {
        self.buckets
            .get(&t.def.key())?
            .objects
            .get(&Self::ns_key(t, name))
            .cloned()
    }

    pub fn get(&self, t: &Target, name: &str) -> ApiResult<Value> {
        let obj = self
            .get_raw(t, name)
            .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
        Ok(self.present(t, &self.read_defaults(t, &obj)))
    }

    /// Defaults are also applied on read, so objects stored before a schema
    /// gained a default look defaulted (as on a real server).
    fn read_defaults(&self, t: &Target, obj: &Value) -> Value {
        match t.def.version(&t.version).and_then(|v| v.schema.as_ref()) {
            Some(s) => schema::default(s, obj),
            None => obj.clone(),
        }
    }

    /// A page of objects matching the selectors, sorted by namespace/name.
    pub fn list(
        &self,
        t: &Target,
        sel: &Selectors,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> ApiResult<Value> {
        let empty = Bucket::default();
        let bucket = self.buckets.get(&t.def.key()).unwrap_or(&empty);
        let mut rv = self.rv;
        let mut start: Option<ObjKey> = None;
        if let Some(token) = cont.filter(|c| !c.is_empty()) {
            let (trv, key) = decode_continue(token)?;
            if trv < bucket.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            rv = trv;
            start = Some(key);
        }
        let range: Box<dyn Iterator<Item = (&ObjKey, &Arc<Value>)>> = match &start {
            Some(k) => Box::new(bucket.objects.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            ))),
            None => Box::new(bucket.objects.iter()),
        };
        let ns = t.namespace.clone();
        let mut matching = range
            .filter(|(k, _)| ns.as_ref().is_none_or(|n| &k.0 == n))
            .filter(|(_, o)| sel.matches(o));
        let mut items = Vec::new();
        let mut last = None;
        let lim = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        for (k, o) in matching.by_ref() {
            if items.len() >= lim {
                last = Some(k.clone());
                break;
            }
            items.push(self.present(t, &self.read_defaults(t, o)));
        }
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if last.is_some() {
            let remaining = 1 + matching.count();
            if let Some(Value::Object(o)) = items.last().and_then(|i| i.get("metadata")) {
                let key = (
                    o.get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    o.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                );
                meta["continue"] = json!(encode_continue(rv, &key));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": t.def.list_kind,
            "apiVersion": t.def.api_version(&t.version),
            "metadata": meta,
            "items": items,
        }))
    }

    /// Events of `key` after `since`, or Err(oldest retained rv) when
    /// `since` predates the retained history.
    pub fn events_since(&self, key: &str, since: u64) -> Result<Vec<Event>, u64> {
        let Some(b) = self.buckets.get(key) else {
            return Ok(Vec::new());
        };
        if since < b.compacted {
            return Err(b.compacted + 1);
        }
        let idx = b.log.partition_point(|e| e.rv <= since);
        Ok(b.log.range(idx..).cloned().collect())
    }

    pub fn snapshot(&self, t: &Target, sel: &Selectors) -> Vec<Arc<Value>> {
        let Some(b) = self.buckets.get(&t.def.key()) else {
            return Vec::new();
        };
        b.objects
            .iter()
            .filter(|(k, _)| t.namespace.as_ref().is_none_or(|n| &k.0 == n))
            .filter(|(_, o)| sel.matches(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    // ---- commit primitives -------------------------------------------------

    fn log_event(&mut self, key: &str, kind: EventType, obj: Arc<Value>, old: Option<Arc<Value>>) {
        let history = self.history;
        let rv = self.rv;
        let b = self.buckets.entry(key.to_string()).or_default();
        b.log.push_back(Event { rv, kind, obj, old });
        while b.log.len() > history {
            if let Some(e) = b.log.pop_front() {
                b.compacted = e.rv;
            }
        }
    }

    fn index_owners(&mut self, key: &str, obj: &Value, add: bool) {
        let Some(refs) = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            return;
        };
        let me = (
            key.to_string(),
            namespace_of(obj).to_string(),
            name_of(obj).to_string(),
        );
        for r in refs {
            if let Some(uid) = r.get("uid").and_then(Value::as_str) {
                if add {
                    self.owners
                        .entry(uid.to_string())
                        .or_default()
                        .insert(me.clone());
                } else if let Some(set) = self.owners.get_mut(uid) {
                    set.remove(&me);
                    if set.is_empty() {
                        self.owners.remove(uid);
                    }
                }
            }
        }
    }

    fn commit_put(&mut self, t: &Target, mut obj: Value, old: Option<Arc<Value>>) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = t.def.key();
        let okey = (namespace_of(&obj).to_string(), name_of(&obj).to_string());
        if let Some(o) = &old {
            self.index_owners(&key, o, false);
        }
        self.index_owners(&key, &obj, true);
        let me = (key.clone(), okey.0.clone(), okey.1.clone());
        self.uids
            .insert(meta_str(&obj, "uid").to_string(), me.clone());
        let fins = finalizers(&obj);
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            && fins
                .iter()
                .any(|f| f == ORPHAN_FINALIZER || f == FOREGROUND_FINALIZER)
        {
            self.gc_pending.insert(me.clone());
        } else {
            self.gc_pending.remove(&me);
        }
        let dangling = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| !self.uids.contains_key(r["uid"].as_str().unwrap_or("")));
        if dangling {
            self.gc_dangling.insert(me);
        }
        let arc = Arc::new(obj.clone());
        self.buckets
            .entry(key.clone())
            .or_default()
            .objects
            .insert(okey, arc.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.log_event(&key, kind, arc, old);
        if t.def.key() == "apiextensions.k8s.io/customresourcedefinitions"
            && let Ok(d) = resources::from_crd(&obj)
        {
            self.defs.insert(d.id(), Arc::new(d));
            self.epoch += 1;
        }
        obj
    }

    fn commit_remove(&mut self, t: &Target, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = t.def.key();
        let okey = (namespace_of(&obj).to_string(), name_of(&obj).to_string());
        let old = self
            .buckets
            .get_mut(&key)
            .and_then(|b| b.objects.remove(&okey));
        if let Some(o) = &old {
            self.index_owners(&key, o, false);
        }
        self.uids.remove(meta_str(&obj, "uid"));
        self.gc_pending
            .remove(&(key.clone(), okey.0.clone(), okey.1.clone()));
        let arc = Arc::new(obj.clone());
        self.log_event(&key, EventType::Deleted, arc, old);
        if key == "apiextensions.k8s.io/customresourcedefinitions" {
            self.remove_crd_resource(&obj);
        }
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.collect_garbage(uid);
        }
        obj
    }

    /// A CRD that is gone stops being served. Instances left behind (only
    /// when someone removed the cleanup finalizer by hand) stay in storage,
    /// as in etcd, and are served again if the CRD comes back.
    fn remove_crd_resource(&mut self, crd: &Value) {
        let id = format!(
            "{}/{}",
            str_at(crd, "/spec/group"),
            str_at(crd, "/spec/names/plural")
        );
        if self.defs.get(&id).is_some_and(|d| d.custom) {
            self.defs.remove(&id);
            self.epoch += 1;
        }
    }

    // ---- the server's own controllers ----------------------------------------

    /// Runs the garbage collector and the CRD finalizer until nothing
    /// changes, so a request's consequences are visible when it returns
    /// (kube-controller-manager would get there a moment later).
    pub fn settle(&mut self) {
        for _ in 0..100 {
            let before = self.rv;
            let pending: Vec<ObjRef> = self.gc_pending.iter().cloned().collect();
            for owner in pending {
                self.process_deleting_owner(&owner);
            }
            for dep in std::mem::take(&mut self.gc_dangling) {
                self.attempt_to_delete(&dep);
            }
            self.finalize_crds();
            if self.rv == before {
                break;
            }
        }
    }

    fn target_for(&self, key: &str, ns: &str) -> Option<Target> {
        let def = self.defs.get(key)?.clone();
        Some(Target {
            version: def.storage_version().to_string(),
            def,
            namespace: Some(ns.to_string()).filter(|s| !s.is_empty()),
        })
    }

    fn lookup(&self, r: &ObjRef) -> Option<(Target, Arc<Value>)> {
        let t = self.target_for(&r.0, &r.1)?;
        let obj = self.get_raw(&t, &r.2)?;
        Some((t, obj))
    }

    /// A write by one of the server's controllers: no admission (they only
    /// remove finalizers and owner references or set conditions), ownership
    /// recorded under `manager`, removal when the last finalizer goes.
    fn controller_write(
        &mut self,
        t: &Target,
        old: Arc<Value>,
        mut new: Value,
        manager: &str,
        sub: Option<&str>,
    ) {
        normalize_meta(&mut new);
        self.track_update(t, Some(&old), &mut new, manager, sub);
        if without_rv(&new) == without_rv(&old) {
            return;
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && finalizers(&new).is_empty() && t.def.plural != "namespaces" {
            self.commit_remove(t, new);
        } else {
            self.commit_put(t, new, Some(old));
        }
    }

    fn remove_finalizer(&mut self, t: &Target, old: Arc<Value>, finalizer: &str) {
        let mut new = (*old).clone();
        let fins: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        meta_mut(&mut new).insert("finalizers".into(), json!(fins));
        self.controller_write(t, old, new, GC_MANAGER, None);
    }

    fn remove_owner_refs(&mut self, dep: &ObjRef, uids: &[String]) {
        let Some((t, old)) = self.lookup(dep) else {
            return;
        };
        let mut new = (*old).clone();
        let refs: Vec<Value> = new
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| !uids.iter().any(|u| r["uid"] == u.as_str()))
            .cloned()
            .collect();
        meta_mut(&mut new).insert("ownerReferences".into(), json!(refs));
        self.controller_write(&t, old, new, GC_MANAGER, None);
    }

    /// The garbage collector's `attemptToDeleteItem` for a dependent whose
    /// owner is absent (gone, or never existed with that uid) or waits for
    /// its dependents (Foreground): with
    /// another live owner it only loses the references to the absent and
    /// waiting owners; otherwise it is deleted (in Foreground when an owner
    /// waits and it has dependents itself, else with its own finalizers
    /// deciding the policy).
    fn attempt_to_delete(&mut self, dep: &ObjRef) {
        let Some((t, obj)) = self.lookup(dep) else {
            return;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let mut solid = false;
        let mut waiting = false;
        let mut dropped = Vec::new();
        for r in obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            let owner = self
                .uids
                .get(uid)
                .cloned()
                .and_then(|o| self.lookup(&o))
                .map(|(_, o)| o);
            match owner {
                None => dropped.push(uid.to_string()),
                Some(o)
                    if o.pointer("/metadata/deletionTimestamp").is_some()
                        && finalizers(&o).iter().any(|f| f == FOREGROUND_FINALIZER) =>
                {
                    waiting = true;
                    dropped.push(uid.to_string());
                }
                Some(_) => solid = true,
            }
        }
        if dropped.is_empty() {
            // Every owner is alive (or there is none): not garbage.
            return;
        }
        if solid {
            self.remove_owner_refs(dep, &dropped);
            return;
        }
        let has_dependents = self
            .owners
            .get(meta_str(&obj, "uid"))
            .is_some_and(|d| !d.is_empty());
        let opts = DeleteOpts {
            propagation: (waiting && has_dependents).then_some(Propagation::Foreground),
            ..DeleteOpts::default()
        };
        let _ = self.delete(&t, &dep.2, &opts);
    }

    /// An owner being deleted with the orphan finalizer (dependents lose
    /// their references to it, then the finalizer goes) or the
    /// foregroundDeletion finalizer (dependents are deleted; the finalizer
    /// goes once no dependent with `blockOwnerDeletion: true` is left).
    fn process_deleting_owner(&mut self, owner: &ObjRef) {
        let Some((t, obj)) = self.lookup(owner) else {
            self.gc_pending.remove(owner);
            return;
        };
        let uid = meta_str(&obj, "uid").to_string();
        let dependents = |st: &Self| -> Vec<ObjRef> {
            st.owners
                .get(&uid)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default()
        };
        let fins = finalizers(&obj);
        if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
            for dep in dependents(self) {
                self.remove_owner_refs(&dep, std::slice::from_ref(&uid));
            }
            if let Some(obj) = self.get_raw(&t, &owner.2) {
                self.remove_finalizer(&t, obj, ORPHAN_FINALIZER);
            }
        } else if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
            for dep in dependents(self) {
                self.attempt_to_delete(&dep);
            }
            let blocked = dependents(self).iter().any(|d| {
                self.lookup(d).is_some_and(|(_, o)| {
                    o.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|r| r["uid"] == uid.as_str() && r["blockOwnerDeletion"] == true)
                })
            });
            if !blocked && let Some(obj) = self.get_raw(&t, &owner.2) {
                self.remove_finalizer(&t, obj, FOREGROUND_FINALIZER);
            }
        } else {
            self.gc_pending.remove(owner);
        }
    }

    /// Background garbage collection once an owner is gone.
    fn collect_garbage(&mut self, uid: &str) {
        let Some(deps) = self.owners.remove(uid) else {
            return;
        };
        for dep in deps {
            self.attempt_to_delete(&dep);
        }
    }

    /// apiextensions' CRD finalizer controller: for every CRD being deleted
    /// with the cleanup finalizer, delete its instances (each honouring its
    /// own finalizers) and, once none is left, drop the finalizer (and with
    /// it the CRD, unless it has finalizers of its own).
    fn finalize_crds(&mut self) {
        let Some(crdt) = self.target("apiextensions.k8s.io", "customresourcedefinitions", None)
        else {
            return;
        };
        let crds: Vec<Arc<Value>> = self
            .buckets
            .get(CRD_KEY)
            .map(|b| {
                b.objects
                    .values()
                    .filter(|c| {
                        c.pointer("/metadata/deletionTimestamp").is_some()
                            && finalizers(c).iter().any(|f| f == CRD_CLEANUP_FINALIZER)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for crd in crds {
            let name = name_of(&crd).to_string();
            let id = format!(
                "{}/{}",
                str_at(&crd, "/spec/group"),
                str_at(&crd, "/spec/names/plural")
            );
            let mut marked = (*crd).clone();
            set_condition(
                &mut marked,
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            );
            self.controller_write(&crdt, crd, marked, CRD_MANAGER, Some("status"));
            let instances: Vec<Arc<Value>> = match self.defs.get(&id) {
                Some(def) if def.custom => self
                    .buckets
                    .get(&def.key())
                    .map(|b| b.objects.values().cloned().collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let mut left = 0;
            for o in instances {
                if o.pointer("/metadata/deletionTimestamp").is_none()
                    && let Some(t) = self.target_for(&id, namespace_of(&o))
                {
                    let _ = self.delete(&t, name_of(&o), &DeleteOpts::default());
                }
                if let Some(t) = self.target_for(&id, namespace_of(&o))
                    && self.get_raw(&t, name_of(&o)).is_some()
                {
                    left += 1;
                }
            }
            if left > 0 {
                continue;
            }
            let Some(crd) = self.get_raw(&crdt, &name) else {
                continue;
            };
            let mut done = (*crd).clone();
            set_condition(
                &mut done,
                "Terminating",
                "False",
                "InstanceDeletionCompleted",
                "removed all instances",
            );
            let fins: Vec<String> = finalizers(&done)
                .into_iter()
                .filter(|f| f != CRD_CLEANUP_FINALIZER)
                .collect();
            meta_mut(&mut done).insert("finalizers".into(), json!(fins));
            self.controller_write(&crdt, crd, done, CRD_MANAGER, Some("status"));
        }
    }

    // ---- admission -----------------------------------------------------------

    /// Kind-specific defaulting that the real registry strategies do.
    fn prepare_builtin(&self, t: &Target, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        match t.def.key().as_str() {
            "/secrets" => {
                if let Some(Value::Object(sd)) =
                    obj.as_object_mut().and_then(|o| o.remove("stringData"))
                {
                    if !obj.get("data").is_some_and(Value::is_object) {
                        obj["data"] = json!({});
                    }
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                    }
                }
                if obj
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    obj["type"] = json!("Opaque");
                }
            }
            "/namespaces" => {
                let name = name_of(obj).to_string();
                let m = meta_mut(obj);
                if !m.get("labels").is_some_and(Value::is_object) {
                    m.insert("labels".into(), json!({}));
                }
                m["labels"]["kubernetes.io/metadata.name"] = json!(name);
                if obj.pointer("/spec/finalizers").is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
            }
            "apiextensions.k8s.io/customresourcedefinitions" => match resources::from_crd(obj) {
                Ok(def) => {
                    let mut status = crd_status(obj, &def);
                    // Keep condition timestamps stable so re-applying an
                    // unchanged CRD is a no-op.
                    if let Some(conds) = old.and_then(|o| o.pointer("/status/conditions")) {
                        status["conditions"] = conds.clone();
                    }
                    obj["status"] = status;
                }
                Err(errs) => {
                    let causes = errs
                        .into_iter()
                        .map(|(field, message)| Cause {
                            reason: "FieldValueInvalid".into(),
                            message,
                            field,
                        })
                        .collect();
                    return Err(ApiError::invalid(
                        &t.def.group,
                        &t.def.kind,
                        name_of(obj),
                        causes,
                    ));
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// Prune, default and validate a custom object; returns Warning texts.
    fn admit(
        &self,
        t: &Target,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> ApiResult<Vec<String>> {
        let name = name_of(obj).to_string();
        let mut causes = name_causes(&t.def, &name);
        let mut warnings = Vec::new();
        self.prepare_builtin(t, obj, old)?;
        let vdef = t.def.version(&t.version);
        if let Some(s) = vdef.and_then(|v| v.schema.as_ref()) {
            let mut unknown = Vec::new();
            schema::prune(s, obj, "", true, &mut unknown);
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = unknown
                            .iter()
                            .map(|u| format!("unknown field \"{u}\""))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                            t.def.kind,
                            t.version,
                            t.def.kind,
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
                    }
                    FieldValidation::Ignore => {}
                }
            }
            *obj = schema::default(s, obj);
            schema::validate(s, obj, "", &mut causes);
            if let Some(compiled) = vdef.and_then(|v| v.cel.as_ref()) {
                let old_defaulted = old.map(|o| schema::default(s, o));
                causes.extend(schema::validate_cel(
                    &self.validator,
                    compiled,
                    obj,
                    old_defaulted.as_ref(),
                ));
            }
        }
        if let Some(old) = old
            && old.pointer("/metadata/deletionTimestamp").is_some()
        {
            let before = finalizers(old);
            let added: Vec<String> = finalizers(obj)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                causes.push(Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
                        ),
                        field: "metadata.finalizers".into(),
                    });
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&t.def.group, &t.def.kind, &name, causes));
        }
        Ok(warnings)
    }

    fn check_namespace(&self, t: &Target) -> ApiResult<()> {
        let Some(ns) = t.namespace.as_deref() else {
            return Ok(());
        };
        let Some(nst) = self.target("", "namespaces", None) else {
            return Ok(());
        };
        match self.get_raw(&nst, ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", crate::errors::qualified(&t.def.group, &t.def.plural), "")
                    .replace(" \"\" is", " is"),
            )
            .with_details(json!({"group": t.def.group, "kind": t.def.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
            Some(_) => Ok(()),
        }
    }

    // ---- verbs ---------------------------------------------------------------

    pub fn create(&mut self, t: &Target, body: Value, opts: &WriteOpts) -> ApiResult<Written> {
        if t.def.terminating {
            // The custom resource handler refuses only `create` (an apply
            // that creates still passes, as on a real server).
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            )
            .with_details(json!({"group": t.def.group, "kind": t.def.plural})));
        }
        let manager = opts.update_manager();
        self.create_tracked(t, body, opts, Track::Update(&manager))
    }

    fn create_tracked(
        &mut self,
        t: &Target,
        mut body: Value,
        opts: &WriteOpts,
        track: Track,
    ) -> ApiResult<Written> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the request body",
            ));
        }
        if t.def.is_events_v1() {
            body = events::v1_to_core(&body);
        }
        if t.def.namespaced && t.namespace.is_none() {
            return Err(ApiError::method_not_allowed());
        }
        body["apiVersion"] = json!(t.def.api_version(&t.version));
        body["kind"] = json!(t.def.kind);
        normalize_meta(&mut body);
        if let Some(ns) = &t.namespace {
            let body_ns = namespace_of(&body);
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta_mut(&mut body).insert("namespace".into(), json!(ns));
        } else {
            meta_mut(&mut body).remove("namespace");
        }
        if !meta_str(&body, "resourceVersion").is_empty() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.check_namespace(t)?;
        if name_of(&body).is_empty() {
            let prefix = meta_str(&body, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &t.def.group,
                    &t.def.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            let mut name = format!("{prefix}{}", random_suffix());
            while self.get_raw(t, &name).is_some() {
                name = format!("{prefix}{}", random_suffix());
            }
            meta_mut(&mut body).insert("name".into(), json!(name));
        }
        {
            let m = meta_mut(&mut body);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                m.remove(k);
            }
        }
        if t.def.tracks_generation() {
            meta_mut(&mut body).insert("generation".into(), json!(1));
        }
        if t.def.has_status(&t.version)
            && t.def.custom
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        if t.def.plural == "namespaces" {
            body["status"] = json!({"phase": "Active"});
        }
        let warnings = self.admit(t, &mut body, None, opts)?;
        if let Track::Update(manager) = track {
            self.track_update(t, None, &mut body, manager, None);
        }
        let name = name_of(&body).to_string();
        if self.get_raw(t, &name).is_some() {
            return Err(ApiError::already_exists(&t.def.group, &t.def.plural, &name));
        }
        let obj = if opts.dry_run {
            body
        } else {
            self.commit_put(t, body, None)
        };
        Ok(Written {
            obj: self.present(t, &obj),
            warnings,
        })
    }

    /// Builds the object an update would store: status-subresource rules and
    /// immutable metadata.
    fn compose(&self, t: &Target, old: &Value, body: Value, sub: Option<&str>) -> Value {
        let status_sub = t.def.has_status(&t.version);
        let mut new = if sub == Some("status") {
            let mut n = old.clone();
            // Ownership was recorded on the request's object (the status
            // strategy keeps managedFields from it and everything else from old).
            match body.pointer("/metadata/managedFields") {
                Some(mf) => {
                    meta_mut(&mut n).insert("managedFields".into(), mf.clone());
                }
                None => {
                    meta_mut(&mut n).remove("managedFields");
                }
            }
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = body;
            if status_sub {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(o) = n.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            n
        };
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        normalize_meta(&mut new);
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let m = meta_mut(&mut new);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "generateName",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        new
    }

    /// Validation, generation, no-op detection, finalizer-driven removal.
    fn finish_update(
        &mut self,
        t: &Target,
        old: Arc<Value>,
        mut new: Value,
        opts: &WriteOpts,
        track: Track,
        sub: Option<&str>,
    ) -> ApiResult<Written> {
        let warnings = self.admit(t, &mut new, Some(&old), opts)?;
        if let Track::Update(manager) = track {
            self.track_update(t, Some(&old), &mut new, manager, sub);
        }
        if t.def.tracks_generation() {
            let status_sub = t.def.has_status(&t.version);
            if spec_part(&old, status_sub) != spec_part(&new, status_sub) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        if without_rv(&new) == without_rv(&old) && !(deleting && finalizers(&new).is_empty()) {
            return Ok(Written {
                obj: self.present(t, &old),
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                obj: self.present(t, &new),
                warnings,
            });
        }
        let stored = if deleting && finalizers(&new).is_empty() && t.def.plural != "namespaces" {
            self.commit_remove(t, new)
        } else {
            self.commit_put(t, new, Some(old))
        };
        Ok(Written {
            obj: self.present(t, &stored),
            warnings,
        })
    }

    pub fn update(
        &mut self,
        t: &Target,
        name: &str,
        mut body: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the request body",
            ));
        }
        if t.def.is_events_v1() {
            body = events::v1_to_core(&body);
        }
        let body_name = name_of(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self
            .get_raw(t, name)
            .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
        let rv = meta_str(&body, "resourceVersion");
        if rv.is_empty() {
            if t.def.custom {
                return Err(ApiError::invalid(
                    &t.def.group,
                    &t.def.kind,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid".into(),
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                        field: "metadata.resourceVersion".into(),
                    }],
                ));
            }
        } else if rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::modified(&t.def.group, &t.def.plural, name));
        }
        let new = self.compose(t, &old, body, sub);
        let manager = opts.update_manager();
        self.finish_update(t, old, new, opts, Track::Update(&manager), sub)
    }

    pub fn patch(
        &mut self,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        let parse_json = || -> ApiResult<Value> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
        };
        let is_apply = content_type == "application/apply-patch+yaml";
        if is_apply {
            return self.apply(t, name, sub, body, opts);
        }
        if opts.force {
            return Err(patch_options_invalid(
                "force",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        let old = self.get_raw(t, name);
        let old = old.ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
        let mut patched = self.present(t, &old);
        match content_type {
            "application/merge-patch+json" => patch::merge(&mut patched, &parse_json()?),
            "application/json-patch+json" => patch::json_patch(&mut patched, &parse_json()?)?,
            "application/strategic-merge-patch+json" if !t.def.custom => {
                patch::strategic(&mut patched, &parse_json()?, "")
            }
            other => {
                let mut accepted = vec![
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ];
                if !t.def.custom {
                    accepted.insert(2, "application/strategic-merge-patch+json");
                }
                return Err(ApiError::unsupported_media_type(other, &accepted));
            }
        }
        if t.def.is_events_v1() {
            patched = events::v1_to_core(&patched);
        }
        self.check_patched_rv(t, name, &old, &patched)?;
        meta_mut(&mut patched).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        let new = self.compose(t, &old, patched, sub);
        let manager = opts.update_manager();
        self.finish_update(t, old, new, opts, Track::Update(&manager), sub)
    }

    /// Server-side apply (structured-merge-diff's `Updater.Apply`): merge the
    /// configuration into the live object, drop what this manager applied
    /// before and no other manager owns, refuse changes to fields other
    /// managers own unless forced, and record who owns what.
    fn apply(
        &mut self,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        body: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Written> {
        let manager = opts
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                patch_options_invalid(
                    "fieldManager",
                    "Required value: is required for apply patch",
                )
            })?;
        if manager.len() > 128 {
            return Err(patch_options_invalid(
                "fieldManager",
                "Too long: may not be more than 128 bytes",
            ));
        }
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let cfg: Value = serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !cfg.is_object() {
            return Err(ApiError::bad_request(
                "apply configuration must be an object",
            ));
        }
        let cfg_name = name_of(&cfg);
        if !cfg_name.is_empty() && cfg_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({cfg_name}) does not match the name on the URL ({name})"
            )));
        }
        let status_sub = t.def.has_status(&t.version);
        let mut scoped = match (sub, status_sub) {
            (Some("status"), _) => {
                json!({"status": cfg.get("status").cloned().unwrap_or(json!({}))})
            }
            (_, true) => {
                let mut c = cfg.clone();
                if let Some(o) = c.as_object_mut() {
                    o.remove("status");
                }
                c
            }
            _ => cfg.clone(),
        };
        if let Some(m) = scoped.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let schema = t.def.version(&t.version).and_then(|v| v.schema.clone());
        let ctx = Ctx::root(schema.as_ref());
        let api_version = t.def.api_version(&t.version);
        let me_sub = sub.unwrap_or("");
        let mut applied = managed::field_set(&scoped, ctx);
        managed::strip(&mut applied);
        reset_fields(t, sub, &mut applied);
        let Some(old) = self.get_raw(t, name) else {
            if sub.is_some() {
                return Err(ApiError::not_found(&t.def.group, &t.def.plural, name));
            }
            let mut body = scoped;
            let entry = Entry {
                manager,
                operation: "Apply".into(),
                api_version,
                time: Some(now()),
                subresource: String::new(),
                set: applied,
            };
            let m = meta_mut(&mut body);
            m.insert("name".into(), json!(name));
            m.insert("managedFields".into(), managed::encode(&[entry]));
            return self.create_tracked(t, body, opts, Track::Keep);
        };
        let mut live = self.present(t, &old);
        meta_mut(&mut live).remove("managedFields");
        let mut merged = live.clone();
        patch::apply(&mut merged, &scoped, ctx, "", true);
        let mut entries = managed::decode(&old);
        let mine = entries
            .iter()
            .position(|e| e.same_manager(&manager, "Apply", &api_version, me_sub));
        if let Some(i) = mine {
            // What this manager applied before and no longer applies goes,
            // unless another manager owns it (or something below it).
            let others: managed::Set = entries
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, e)| e.set.iter().cloned())
                .collect();
            let owned = |p: &managed::Path| {
                others
                    .iter()
                    .chain(applied.iter())
                    .any(|o| o.starts_with(p))
            };
            for p in entries[i].set.difference(&applied) {
                if !owned(p) {
                    managed::remove(&mut merged, p);
                }
            }
        }
        let cmp = managed::compare(&live, &merged, ctx);
        let mut changed: managed::Set = cmp.added.union(&cmp.modified).cloned().collect();
        managed::strip(&mut changed);
        let mut conflicts = Vec::new();
        for (j, e) in entries.iter().enumerate() {
            if Some(j) != mine {
                for p in e.set.intersection(&changed) {
                    conflicts.push((e.display(), p.clone()));
                }
            }
        }
        if !opts.force && !conflicts.is_empty() {
            conflicts.sort();
            return Err(managed::conflict_error(&conflicts));
        }
        for (j, e) in entries.iter_mut().enumerate() {
            if Some(j) != mine {
                e.set
                    .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
            }
        }
        let time = if merged != live || mine.is_none() {
            Some(now())
        } else {
            mine.and_then(|i| entries[i].time.clone())
        };
        let entry = Entry {
            manager,
            operation: "Apply".into(),
            api_version,
            time,
            subresource: me_sub.to_string(),
            set: applied,
        };
        match mine {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
        meta_mut(&mut merged).insert("managedFields".into(), managed::encode(&entries));
        if t.def.is_events_v1() {
            merged = events::v1_to_core(&merged);
        }
        self.check_patched_rv(t, name, &old, &merged)?;
        meta_mut(&mut merged).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        let new = self.compose(t, &old, merged, sub);
        self.finish_update(t, old, new, opts, Track::Keep, sub)
    }

    /// Records an `Update` by `manager` in `new`'s managedFields: it owns
    /// what it changed, and every manager loses what it changed or removed
    /// (kube-apiserver's `managedFieldsUpdater.Update`).
    fn track_update(
        &self,
        t: &Target,
        old: Option<&Value>,
        new: &mut Value,
        manager: &str,
        sub: Option<&str>,
    ) {
        let mut entries = if managed::is_reset(new) {
            Vec::new()
        } else {
            let from_request = managed::decode(new);
            // A client that does not know managedFields must not wipe them;
            // a subresource write cannot set them.
            if sub.is_none() && !from_request.is_empty() {
                from_request
            } else {
                old.map(managed::decode).unwrap_or_default()
            }
        };
        let schema = t.def.version(&t.version).and_then(|v| v.schema.clone());
        let ctx = Ctx::root(schema.as_ref());
        let view = |o: &Value| {
            let mut v = self.present(t, o);
            meta_mut(&mut v).remove("managedFields");
            v
        };
        let before = old.map(view).unwrap_or_else(|| json!({}));
        let cmp = managed::compare(&before, &view(new), ctx);
        let mut changed: managed::Set = cmp.added.union(&cmp.modified).cloned().collect();
        managed::strip(&mut changed);
        reset_fields(t, sub, &mut changed);
        for e in &mut entries {
            e.set
                .retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
        }
        let api_version = t.def.api_version(&t.version);
        let sub = sub.unwrap_or("");
        if !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.same_manager(manager, "Update", &api_version, sub))
            {
                Some(e) => {
                    e.set.extend(changed);
                    e.time = Some(now());
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version,
                    time: Some(now()),
                    subresource: sub.to_string(),
                    set: changed,
                }),
            }
        }
        let encoded = managed::encode(&entries);
        let m = meta_mut(new);
        if encoded.as_array().is_some_and(Vec::is_empty) {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), encoded);
        }
    }

    /// A resourceVersion carried in a patch is a precondition, as on the real server.
    fn check_patched_rv(
        &self,
        t: &Target,
        name: &str,
        old: &Value,
        patched: &Value,
    ) -> ApiResult<()> {
        let want = meta_str(patched, "resourceVersion");
        if !want.is_empty() && want != meta_str(old, "resourceVersion") {
            return Err(ApiError::modified(&t.def.group, &t.def.plural, name));
        }
        Ok(())
    }

    /// DELETE: finalizers turn it into setting deletionTimestamp.
    pub fn delete(&mut self, t: &Target, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
        let old = self
            .get_raw(t, name)
            .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
        if let Some(uid) = &opts.uid {
            let actual = meta_str(&old, "uid");
            if uid != actual {
                return Err(ApiError::conflict(
                    &t.def.group,
                    &t.def.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let actual = meta_str(&old, "resourceVersion");
            if rv != actual {
                return Err(ApiError::conflict(
                    &t.def.group,
                    &t.def.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        let is_ns = t.def.key() == "/namespaces";
        if is_ns && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
            .with_details(json!({"name": name, "kind": "namespaces"})));
        }
        let deleting = old.pointer("/metadata/deletionTimestamp").is_some();
        if t.def.key() == CRD_KEY && !deleting {
            // apiextensions' REST Delete: the first DELETE only marks the CRD
            // and adds the cleanup finalizer (DeleteOptions' propagation is
            // not consulted); `finalize_crds` deletes the instances.
            let mut new = (*old).clone();
            meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now()));
            let mut fins = finalizers(&new);
            if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                fins.push(CRD_CLEANUP_FINALIZER.into());
            }
            meta_mut(&mut new).insert("finalizers".into(), json!(fins));
            set_condition(
                &mut new,
                "Terminating",
                "True",
                "InstanceDeletionPending",
                "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            );
            if opts.dry_run {
                return Ok(self.present(t, &new));
            }
            let stored = self.commit_put(t, new, Some(old));
            return Ok(self.present(t, &stored));
        }
        let fins = finalizers(&old);
        let new_fins = gc_finalizers(&fins, opts);
        if is_ns || !new_fins.is_empty() {
            if deleting {
                // A repeated DELETE may only switch the GC finalizers.
                if new_fins == fins {
                    return Ok(self.present(t, &old));
                }
                let mut new = (*old).clone();
                meta_mut(&mut new).insert("finalizers".into(), json!(new_fins));
                normalize_meta(&mut new);
                if opts.dry_run {
                    return Ok(self.present(t, &new));
                }
                let stored = self.commit_put(t, new, Some(old));
                return Ok(self.present(t, &stored));
            }
            let mut new = (*old).clone();
            {
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                m.insert("finalizers".into(), json!(new_fins));
            }
            normalize_meta(&mut new);
            if t.def.tracks_generation() {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
            if is_ns {
                new["status"] = json!({"phase": "Terminating"});
            }
            if opts.dry_run {
                return Ok(self.present(t, &new));
            }
            let stored = self.commit_put(t, new, Some(old));
            return Ok(self.present(t, &stored));
        }
        if opts.dry_run {
            return Ok(self.present(t, &old));
        }
        let removed = self.commit_remove(t, (*old).clone());
        if t.def.custom {
            Ok(self.present(t, &removed))
        } else {
            Ok(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": t.def.group, "kind": t.def.plural, "uid": meta_str(&removed, "uid")}
            }))
        }
    }

    pub fn delete_collection(
        &mut self,
        t: &Target,
        sel: &Selectors,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let names: Vec<(String, String)> = self
            .snapshot(t, sel)
            .iter()
            .map(|o| (namespace_of(o).to_string(), name_of(o).to_string()))
            .collect();
        let mut items = Vec::new();
        for (ns, name) in names {
            let mut t = t.clone();
            t.namespace = Some(ns).filter(|s| !s.is_empty());
            if let Ok(v) = self.delete(&t, &name, opts)
                && v.get("kind").and_then(Value::as_str) != Some("Status")
            {
                items.push(v);
            }
        }
        Ok(json!({
            "kind": t.def.list_kind,
            "apiVersion": t.def.api_version(&t.version),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// One pass of the namespace lifecycle controller: empty terminating
    /// namespaces, then remove them once nothing is left.
    pub fn finalize_namespaces(&mut self) {
        let Some(nst) = self.target("", "namespaces", None) else {
            return;
        };
        let terminating: Vec<Value> = self
            .buckets
            .get("/namespaces")
            .map(|b| {
                b.objects
                    .values()
                    .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
                    .map(|n| (**n).clone())
                    .collect()
            })
            .unwrap_or_default();
        for ns in terminating {
            let nsname = name_of(&ns).to_string();
            let mut remaining = 0;
            let defs: Vec<Arc<ResourceDef>> = self
                .defs
                .values()
                .filter(|d| d.namespaced)
                .cloned()
                .collect();
            for def in defs {
                let t = Target {
                    version: def.storage_version().to_string(),
                    def,
                    namespace: Some(nsname.clone()),
                };
                for o in self.snapshot(&t, &Selectors::default()) {
                    remaining += 1;
                    if o.pointer("/metadata/deletionTimestamp").is_none() {
                        // The namespace controller deletes with Background.
                        let opts = DeleteOpts {
                            propagation: Some(Propagation::Background),
                            ..DeleteOpts::default()
                        };
                        let _ = self.delete(&t, name_of(&o), &opts);
                    }
                }
            }
            // metadata.finalizers (e.g. the GC's orphan) hold it like any object.
            if remaining == 0 && finalizers(&ns).is_empty() {
                self.commit_remove(&nst, ns);
            }
        }
    }
}

/// What a write to the main resource or to `/status` may not change (the
/// strategies' `GetResetFields`): ownership of those fields is not recorded.
fn reset_fields(t: &Target, sub: Option<&str>, set: &mut managed::Set) {
    if sub == Some("status") {
        managed::filter_top(set, "status", true);
    } else if t.def.has_status(&t.version)
        || t.def.key() == "apiextensions.k8s.io/customresourcedefinitions"
    {
        managed::filter_top(set, "status", false);
    }
}

/// 422 for a bad PATCH option, as `ValidatePatchOptions` words it.
fn patch_options_invalid(field: &str, message: &str) -> ApiError {
    let reason = if message.starts_with("Required") {
        "FieldValueRequired"
    } else if message.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else {
        "FieldValueTooLong"
    };
    ApiError::invalid(
        "meta.k8s.io",
        "PatchOptions",
        "",
        vec![Cause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(u64, ObjKey)> {
    let bad = || ApiError::bad_request(format!("invalid continue token: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v
        .pointer("/start/0")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    let name = v
        .pointer("/start/1")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_round_trips() {
        let key = ("ns".to_string(), "a".to_string());
        let (rv, k) = decode_continue(&encode_continue(42, &key)).unwrap();
        assert_eq!((rv, k), (42, key));
        assert!(decode_continue("!!").is_err());
    }

    #[test]
    fn names_are_checked_as_dns_subdomains() {
        assert!(dns1123_subdomain("a.b-c"));
        assert!(!dns1123_subdomain("A"));
        assert!(!dns1123_subdomain("-a"));
        assert!(!dns1123_label("a.b"));
    }
}
