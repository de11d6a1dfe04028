//! The four PATCH flavours: JSON merge (RFC 7386), JSON patch (RFC 6902),
//! a strategic-merge subset for built-in kinds, and the merge step of
//! server-side apply (ownership is in [`crate::managed`]).

use serde_json::{Value, json};

use crate::{
    errors::{ApiError, ApiResult},
    managed::{Ctx, ListKind, same_key},
};

/// RFC 7386 merge patch.
pub fn merge(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 patch. Like evanphx/json-patch (used by the apiserver), a `test`
/// of `null` against a missing path succeeds — kube-runtime's finalizer
/// helper relies on it.
pub fn json_patch(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    for op in ops {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        let path = op.path().to_string();
        let is_test = matches!(op, json_patch::PatchOperation::Test(_));
        json_patch::patch(doc, &[op]).map_err(|e| {
            let msg = if is_test {
                format!("testing value {path} failed: test failed")
            } else {
                e.to_string()
            };
            ApiError::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            )
            .with_details(
                json!({"causes": [{"reason": "UnexpectedServerResponse", "message": msg}]}),
            )
        })?;
    }
    Ok(())
}

/// Strategic merge patch, reduced to: merge patch + keyed merging of the
/// well-known keyed lists + `$patch: delete` on list items; other `$`
/// directives are dropped.
pub fn strategic(doc: &mut Value, patch: &Value, field: &str) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    d.remove(k);
                } else if let Some(existing) = d.get_mut(k) {
                    strategic(existing, v, k);
                } else {
                    let mut fresh = Value::Null;
                    strategic(&mut fresh, v, k);
                    d.insert(k.clone(), fresh);
                }
            }
        }
        (Value::Array(d), Value::Array(p)) => match Ctx::Builtin.list_kind(field) {
            ListKind::Map(keys) => {
                for item in p {
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match d.iter().position(|x| same_key(x, item, &keys)) {
                        Some(i) if delete => {
                            d.remove(i);
                        }
                        Some(i) => strategic(&mut d[i], item, ""),
                        None if delete => {}
                        None => d.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in p {
                    if !d.contains(item) {
                        d.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *d = p.clone(),
        },
        (d, p) => {
            let mut p = p.clone();
            strip_directives(&mut p);
            *d = p;
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// The merge step of server-side apply (structured-merge-diff's `Merge`):
/// objects merge recursively, keyed lists merge by key, sets union,
/// everything else (scalars, atomic lists and maps) is replaced by the
/// applied value. `root` is true at the object's top level.
pub fn apply(live: &mut Value, cfg: &Value, ctx: Ctx, field: &str, root: bool) {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !matches!(ctx, Ctx::Schema(s) if s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")) =>
        {
            for (k, v) in c {
                let sub = ctx.child(k, root);
                // An explicit null is applied as a value: admission then
                // keeps it for nullable fields and prunes it otherwise, so a
                // manager can clear a field it owns.
                match l.get_mut(k) {
                    Some(existing) if !v.is_null() => apply(existing, v, sub, k, false),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => match ctx.list_kind(field) {
            ListKind::Map(keys) => {
                for item in c {
                    match l.iter().position(|x| same_key(x, item, &keys)) {
                        Some(i) => apply(&mut l[i], item, ctx.items(), "", false),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in c {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *l = c.clone(),
        },
        (l, c) => *l = c.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_patch_null_test_on_missing_path_passes() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                       {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        json_patch(&mut doc, &p).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn json_patch_failed_test_is_422() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}});
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["b"]},
                       {"op": "remove", "path": "/metadata/finalizers/0"}]);
        let err = json_patch(&mut doc, &p).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    }

    #[test]
    fn apply_merges_keyed_lists_by_key_and_replaces_atomic_ones() {
        let schema = json!({"properties": {"status": {"properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]},
            "plain": {"type": "array"}}}}});
        let mut live = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}],
            "plain": [{"type": "a"}, {"type": "b"}]}});
        let cfg = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                                    "plain": [{"type": "c"}]}});
        apply(&mut live, &cfg, Ctx::Schema(&schema), "", true);
        assert_eq!(
            live,
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}],
                "plain": [{"type": "c"}]}})
        );
    }

    #[test]
    fn apply_null_clears_a_field() {
        let mut live = json!({"status": {"arn": "x", "keep": 1}});
        apply(
            &mut live,
            &json!({"status": {"arn": null}}),
            Ctx::Builtin,
            "",
            true,
        );
        assert_eq!(live, json!({"status": {"arn": null, "keep": 1}}));
    }

    #[test]
    fn strategic_merges_keyed_lists_and_deletes() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "a", "image": "z"}, {"name": "b", "$patch": "delete"}]}}),
            "",
        );
        assert_eq!(
            doc["spec"]["containers"],
            json!([{"name": "a", "image": "z"}])
        );
    }
}
