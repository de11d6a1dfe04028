//! Field ownership for server-side apply: `metadata.managedFields` in the
//! FieldsV1 format, kept the way kube-apiserver's fieldmanager
//! (sigs.k8s.io/structured-merge-diff) keeps it. A field set is a set of
//! paths whose elements are written as in FieldsV1 (`f:name`,
//! `k:{"type":"Ready"}`, `v:"value"`, `i:0`), which makes the JSON encoding
//! and the conflict messages direct.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::errors::ApiError;

pub type Path = Vec<String>;
pub type Set = BTreeSet<Path>;

/// How a list merges and is owned.
#[derive(Clone, Debug, PartialEq)]
pub enum ListKind {
    Map(Vec<String>),
    Set,
    Atomic,
}

/// The schema at one point of an object.
#[derive(Clone, Copy, Debug)]
pub enum Ctx<'a> {
    /// A node of a CRD's structural schema: lists are atomic unless
    /// `x-kubernetes-list-type` says `map` or `set`.
    Schema(&'a Value),
    /// Built-in kinds and ObjectMeta (no schema here): list semantics by
    /// field name, as Kubernetes' Go types declare them.
    Builtin,
    /// Untyped data (`x-kubernetes-preserve-unknown-fields`): maps are
    /// owned key by key, lists as a whole.
    Deduced,
}

impl<'a> Ctx<'a> {
    pub fn root(schema: Option<&'a Value>) -> Self {
        schema.map_or(Ctx::Builtin, Ctx::Schema)
    }

    /// The context of `key` inside this object; `root` when this is the
    /// object's top level (where `metadata` is always ObjectMeta).
    pub fn child(self, key: &str, root: bool) -> Self {
        match self {
            Ctx::Schema(_) if root && key == "metadata" => Ctx::Builtin,
            Ctx::Schema(s) => s
                .get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                .map_or(Ctx::Deduced, Ctx::Schema),
            other => other,
        }
    }

    pub fn items(self) -> Self {
        match self {
            Ctx::Schema(s) => s.get("items").map_or(Ctx::Deduced, Ctx::Schema),
            other => other,
        }
    }

    pub fn schema(self) -> Option<&'a Value> {
        match self {
            Ctx::Schema(s) => Some(s),
            _ => None,
        }
    }

    /// Whether an object here is owned as one value (`x-kubernetes-map-type: atomic`).
    fn atomic_map(self) -> bool {
        matches!(self, Ctx::Schema(s) if s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"))
    }

    pub fn list_kind(self, field: &str) -> ListKind {
        match self {
            Ctx::Schema(s) => match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => ListKind::Map(
                    s.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => ListKind::Set,
                _ => ListKind::Atomic,
            },
            Ctx::Deduced => ListKind::Atomic,
            Ctx::Builtin => match field {
                "conditions" => ListKind::Map(vec!["type".into()]),
                "finalizers" => ListKind::Set,
                "ownerReferences" => ListKind::Map(vec!["uid".into()]),
                "containers" | "initContainers" | "env" | "ports" | "volumes" | "volumeMounts" => {
                    ListKind::Map(vec!["name".into()])
                }
                _ => ListKind::Atomic,
            },
        }
    }
}

/// Whether two list items have the same key (all key fields present and equal).
pub fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    !keys.is_empty()
        && keys
            .iter()
            .all(|k| a.get(k).is_some() && a.get(k) == b.get(k))
}

/// `k:{"a":1,"b":"x"}`: the key fields of a list-map item, sorted by name.
fn key_element(item: &Value, keys: &[String]) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let parts: Vec<String> = sorted
        .iter()
        .map(|k| {
            format!(
                "{}:{}",
                json!(k),
                item.get(k.as_str()).cloned().unwrap_or(Value::Null)
            )
        })
        .collect();
    format!("k:{{{}}}", parts.join(","))
}

fn field_name(elem: &str) -> &str {
    elem.strip_prefix("f:").unwrap_or("")
}

/// Every leaf and list item of `obj` (structured-merge-diff's `ToFieldSet`).
pub fn field_set(obj: &Value, ctx: Ctx) -> Set {
    let mut out = Set::new();
    walk(obj, ctx, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, ctx: Ctx, path: &mut Path, out: &mut Set) {
    match v {
        Value::Object(m) if !ctx.atomic_map() => {
            let root = path.is_empty();
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, ctx.child(k, root), path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let field = path.last().map(|e| field_name(e)).unwrap_or("");
            match ctx.list_kind(field) {
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
                ListKind::Set => {
                    for item in items {
                        let mut p = path.clone();
                        p.push(format!("v:{item}"));
                        out.insert(p);
                    }
                }
                ListKind::Map(keys) => {
                    for item in items {
                        path.push(key_element(item, &keys));
                        out.insert(path.clone());
                        walk(item, ctx.items(), path, out);
                        path.pop();
                    }
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Finds the child a path element names.
fn step<'v>(v: &'v Value, elem: &str) -> Option<&'v Value> {
    if let Some(f) = elem.strip_prefix("f:") {
        return v.get(f);
    }
    let items = v.as_array()?;
    if let Some(k) = elem.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(val) = elem.strip_prefix("v:") {
        let val: Value = serde_json::from_str(val).ok()?;
        return items.iter().find(|i| **i == val);
    }
    let i: usize = elem.strip_prefix("i:")?.parse().ok()?;
    items.get(i)
}

pub fn get<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, e| step(cur, e))
}

/// Removes what `path` names from `v`, then any object it leaves empty
/// (a container that only held fields being removed goes with them).
pub fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(container) = get_mut(v, parent) else {
        return;
    };
    match container {
        Value::Object(m) => {
            m.remove(field_name(last));
        }
        Value::Array(items) => {
            let found = step(&Value::Array(items.clone()), last).cloned();
            if let Some(found) = found
                && let Some(i) = items.iter().position(|x| *x == found)
            {
                items.remove(i);
            }
        }
        _ => return,
    }
    if !parent.is_empty() && container.as_object().is_some_and(Map::is_empty) {
        remove(v, parent);
    }
}

fn get_mut<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = v;
    for e in path {
        let idx = match &*cur {
            Value::Object(_) => None,
            Value::Array(items) => {
                let target = step(&*cur, e)?.clone();
                Some(items.iter().position(|x| *x == target)?)
            }
            _ => return None,
        };
        cur = match idx {
            None => cur.get_mut(field_name(e))?,
            Some(i) => cur.get_mut(i)?,
        };
    }
    Some(cur)
}

/// What changed between two versions of an object, as structured-merge-diff's
/// `Compare`: paths only in `new`, paths in both with a different leaf value,
/// paths only in `old`.
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

pub fn compare(old: &Value, new: &Value, ctx: Ctx) -> Comparison {
    let a = field_set(old, ctx);
    let b = field_set(new, ctx);
    let modified = a
        .intersection(&b)
        .filter(|p| !p.last().is_some_and(|e| e.starts_with("k:")))
        .filter(|p| get(old, p) != get(new, p))
        .cloned()
        .collect();
    Comparison {
        added: b.difference(&a).cloned().collect(),
        removed: a.difference(&b).cloned().collect(),
        modified,
    }
}

/// `.spec.x`, `.status.conditions[type="Ready"]`, `.metadata.finalizers[="f"]`.
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = e.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// The FieldsV1 tree of a set: each member is a `{}` leaf, or carries a
/// `.` entry when it also has members below it.
pub fn to_fields_v1(set: &Set) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for e in path {
            let next = node.entry(e.clone()).or_insert_with(|| json!({}));
            node = match next {
                Value::Object(m) => m,
                _ => unreachable!("every node is an object"),
            };
        }
        if !node.is_empty() {
            node.insert(".".into(), json!({}));
        }
    }
    // A member inserted before its children needs its `.` marker too.
    fn mark(v: &mut Map<String, Value>, members: &Set, path: &mut Path) {
        for (k, child) in v.iter_mut() {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            if let Value::Object(m) = child {
                if !m.is_empty() && members.contains(path) {
                    m.insert(".".into(), json!({}));
                }
                mark(m, members, path);
            }
            path.pop();
        }
    }
    mark(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> Set {
    fn go(v: &Value, path: &mut Path, out: &mut Set) {
        let Some(m) = v.as_object() else {
            return;
        };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = Set::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// Fields no manager owns: set by the server, or identity.
pub fn strip(set: &mut Set) {
    const SERVER: &[&str] = &[
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    set.retain(|p| {
        let top = p.first().map(|e| field_name(e)).unwrap_or("");
        if matches!(top, "apiVersion" | "kind") {
            return false;
        }
        !(top == "metadata"
            && (p.len() == 1 || p.get(1).is_some_and(|e| SERVER.contains(&field_name(e)))))
    });
}

/// Keeps only paths under (`inside`) or outside top-level field `top`.
pub fn filter_top(set: &mut Set, top: &str, inside: bool) {
    let f = format!("f:{top}");
    set.retain(|p| (p.first() == Some(&f)) == inside);
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: Set,
}

impl Entry {
    /// Who this entry belongs to: appliers are one manager whatever the
    /// apiVersion, updaters one per apiVersion (kube-apiserver's
    /// `BuildManagerIdentifier`).
    pub fn same_manager(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        sub: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == sub
            && (operation == "Apply" || self.api_version == api_version)
    }

    /// How conflict messages name the manager (`printManager`).
    pub fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// The entries stored in `obj`'s metadata (unreadable entries are dropped).
pub fn decode(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some(Entry {
                        manager: e.get("manager")?.as_str()?.to_string(),
                        operation: e.get("operation")?.as_str()?.to_string(),
                        api_version: e
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        time: e.get("time").and_then(Value::as_str).map(String::from),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a request asks to reset ownership (`managedFields: [{}]`).
pub fn is_reset(obj: &Value) -> bool {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

/// Entries as stored, sorted as kube-apiserver sorts them (operation, time,
/// manager, apiVersion, subresource); empty sets are dropped.
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| !e.set.is_empty()).collect();
    sorted.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_fields_v1(&e.set),
                });
                if let Some(t) = &e.time {
                    v["time"] = json!(t);
                }
                if !e.subresource.is_empty() {
                    v["subresource"] = json!(e.subresource);
                }
                v
            })
            .collect(),
    )
}

/// The 409 a non-forced apply gets (`NewConflictError` in the apiserver's fieldmanager).
pub fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": path_string(p)})
        })
        .collect();
    let message = if let [(m, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            path_string(p)
        )
    } else {
        let mut lines = Vec::new();
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.dedup();
        for m in managers {
            lines.push(format!("conflicts with {m}"));
            for (_, p) in conflicts.iter().filter(|(x, _)| x == m) {
                lines.push(format!("- {}", path_string(p)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(elems: &[&str]) -> Path {
        elems.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn field_sets_follow_list_types() {
        let schema = json!({"properties": {"spec": {"properties": {
            "atomic": {"type": "array"},
            "keyed": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            "set": {"type": "array", "x-kubernetes-list-type": "set"}}}}});
        let obj = json!({"metadata": {"finalizers": ["f"], "labels": {"a": "1"}}, "spec": {
            "atomic": [1, 2], "keyed": [{"name": "x", "v": 1}], "set": ["s"], "empty": {}}});
        let set = field_set(&obj, Ctx::Schema(&schema));
        let want: Set = [
            p(&["f:metadata", "f:finalizers", "v:\"f\""]),
            p(&["f:metadata", "f:labels", "f:a"]),
            p(&["f:spec", "f:atomic"]),
            p(&["f:spec", "f:keyed", "k:{\"name\":\"x\"}"]),
            p(&["f:spec", "f:keyed", "k:{\"name\":\"x\"}", "f:name"]),
            p(&["f:spec", "f:keyed", "k:{\"name\":\"x\"}", "f:v"]),
            p(&["f:spec", "f:set", "v:\"s\""]),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
    }

    #[test]
    fn fields_v1_round_trips_with_dot_markers() {
        let set: Set = [
            p(&["f:status", "f:conditions", "k:{\"type\":\"Ready\"}"]),
            p(&[
                "f:status",
                "f:conditions",
                "k:{\"type\":\"Ready\"}",
                "f:status",
            ]),
            p(&["f:spec", "f:size"]),
        ]
        .into_iter()
        .collect();
        let v = to_fields_v1(&set);
        assert_eq!(
            v,
            json!({"f:spec": {"f:size": {}}, "f:status": {"f:conditions": {
                "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}}})
        );
        assert_eq!(from_fields_v1(&v), set);
    }

    #[test]
    fn paths_print_like_structured_merge_diff() {
        assert_eq!(
            path_string(&p(&[
                "f:status",
                "f:conditions",
                "k:{\"type\":\"Ready\"}",
                "f:status"
            ])),
            ".status.conditions[type=\"Ready\"].status"
        );
        assert_eq!(
            path_string(&p(&["f:metadata", "f:finalizers", "v:\"a\""])),
            ".metadata.finalizers[=\"a\"]"
        );
    }

    #[test]
    fn compare_reports_leaf_changes_not_item_containers() {
        let old = json!({"c": [{"type": "A", "s": "1"}], "x": 1, "gone": 2});
        let new = json!({"c": [{"type": "A", "s": "2"}], "x": 1, "y": 3});
        let c = compare(&old, &new, Ctx::Builtin);
        assert_eq!(c.added, [p(&["f:y"])].into_iter().collect());
        assert_eq!(c.removed, [p(&["f:gone"])].into_iter().collect());
        // `c` is atomic under Builtin rules (not a known keyed list name).
        assert_eq!(c.modified, [p(&["f:c"])].into_iter().collect());
        let old = json!({"conditions": [{"type": "A", "s": "1"}]});
        let new = json!({"conditions": [{"type": "A", "s": "2"}]});
        let c = compare(&old, &new, Ctx::Builtin);
        assert_eq!(
            c.modified,
            [p(&["f:conditions", "k:{\"type\":\"A\"}", "f:s"])]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn remove_drops_emptied_containers() {
        let mut v =
            json!({"spec": {"tags": {"a": "1"}, "keep": 1}, "l": [{"name": "x"}, {"name": "y"}]});
        remove(&mut v, &p(&["f:spec", "f:tags", "f:a"]));
        remove(&mut v, &p(&["f:l", "k:{\"name\":\"x\"}"]));
        assert_eq!(v, json!({"spec": {"keep": 1}, "l": [{"name": "y"}]}));
    }

    #[test]
    fn conflict_message_matches_the_apiserver() {
        let e = conflict_error(&[("\"mgr\"".into(), p(&["f:spec", "f:x"]))]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                409,
                "Apply failed with 1 conflict: conflict with \"mgr\": .spec.x"
            )
        );
        let e = conflict_error(&[
            ("\"a\"".into(), p(&["f:spec", "f:x"])),
            ("\"a\"".into(), p(&["f:spec", "f:y"])),
        ]);
        assert_eq!(
            e.message,
            "Apply failed with 2 conflicts: conflicts with \"a\"\n- .spec.x\n- .spec.y"
        );
    }
}
