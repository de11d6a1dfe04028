//! Structural-schema handling for custom resources: pruning of unknown
//! fields, defaulting, OpenAPI keyword validation and CEL rules (via
//! kube-cel), producing field errors worded like apiextensions-apiserver's.

use serde_json::{Map, Value};

use crate::errors::Cause;

/// The Go-ish rendering used inside "Invalid value: X" messages.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The JSON type name apiextensions reports for a value ("string", "object", ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Removes fields the schema does not declare, recording their paths (for
/// `fieldValidation`); also drops `null` for non-nullable fields, which the
/// real server prunes before defaulting. `root` keeps apiVersion/kind/metadata.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let addl = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| addl.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if map.get(&k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                            map.remove(&k);
                            continue;
                        }
                        if let Some(child) = map.get_mut(&k) {
                            prune(sub, child, &join(path, &k), false, unknown);
                        }
                    }
                    None if preserve || addl.is_some_and(|a| a == &Value::Bool(true)) => {}
                    None => {
                        unknown.push(join(path, &k));
                        map.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in schema defaults (kube-cel implements the walk the apiserver does).
pub fn default(schema: &Value, value: &Value) -> Value {
    kube_cel::apply_defaults(schema, value)
}

fn invalid(errs: &mut Vec<Cause>, path: &str, shown: String, detail: String) {
    errs.push(Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {detail}"),
        field: path.to_string(),
    });
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// OpenAPI keyword validation of `value` at `path`.
pub fn validate(schema: &Value, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    if value.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            invalid(
                errs,
                path,
                "\"null\"".into(),
                format!("{path} in body must be of type {t}: \"null\""),
            );
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            let t = type_name(value);
            invalid(
                errs,
                path,
                format!("\"{t}\""),
                format!("{path} in body must be of type integer,string: \"{t}\""),
            );
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = match t {
            "number" => value.is_number(),
            other => other == actual,
        };
        if !ok {
            invalid(
                errs,
                path,
                format!("\"{actual}\""),
                format!("{path} in body must be of type {t}: \"{actual}\""),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(show).collect();
        errs.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ),
            field: path.to_string(),
        });
    }
    match value {
        Value::String(s) => validate_string(schema, s, value, path, errs),
        Value::Number(_) => validate_number(schema, value, path, errs),
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                invalid(
                    errs,
                    path,
                    n.to_string(),
                    format!("{path} in body should have at least {min} items"),
                );
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                errs.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!("Too many: {n}: must have at most {max} items"),
                    field: path.to_string(),
                });
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, path, errs),
        _ => {}
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, value, path, errs);
        }
    }
}

fn validate_string(schema: &Value, s: &str, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        invalid(
            errs,
            path,
            show(value),
            format!("{path} in body should be at least {min} chars long"),
        );
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errs.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {max} bytes"),
            field: path.to_string(),
        });
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match compiled(p) {
            Some(re) if !re.is_match(s) => invalid(
                errs,
                path,
                show(value),
                format!("{path} in body should match '{p}'"),
            ),
            _ => {}
        }
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        let ok = match f {
            "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            "byte" => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(s).is_ok()
            }
            "uuid" => uuid::Uuid::parse_str(s).is_ok(),
            _ => true,
        };
        if !ok {
            invalid(
                errs,
                path,
                show(value),
                format!("{path} in body must be of type {f}: {}", show(value)),
            );
        }
    }
}

fn validate_number(schema: &Value, value: &Value, path: &str, errs: &mut Vec<Cause>) {
    let Some(n) = num(value) else { return };
    if let Some(min) = schema.get("minimum").and_then(num) {
        let excl = flag(schema, "exclusiveMinimum");
        if (excl && n <= min) || (!excl && n < min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            invalid(
                errs,
                path,
                value.to_string(),
                format!("{path} in body should be {rel} {}", fmt_num(min)),
            );
        }
    }
    if let Some(max) = schema.get("maximum").and_then(num) {
        let excl = flag(schema, "exclusiveMaximum");
        if (excl && n >= max) || (!excl && n > max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            invalid(
                errs,
                path,
                value.to_string(),
                format!("{path} in body should be {rel} {}", fmt_num(max)),
            );
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(num)
        && m != 0.0
        && (n / m).fract() != 0.0
    {
        invalid(
            errs,
            path,
            value.to_string(),
            format!("{path} in body should be a multiple of {}", fmt_num(m)),
        );
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errs: &mut Vec<Cause>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: join(path, r),
                });
            }
        }
    }
    let n = map.len() as u64;
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        invalid(
            errs,
            path,
            n.to_string(),
            format!("{path} in body should have at least {min} properties"),
        );
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        invalid(
            errs,
            path,
            n.to_string(),
            format!("{path} in body should have at most {max} properties"),
        );
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let addl = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        // Root metadata is validated as ObjectMeta elsewhere, not by the CRD schema.
        if path.is_empty() && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)).or(addl) {
            validate(sub, v, &join(path, k), errs);
        }
    }
}

/// Finds the value a CEL error's field path points at, to name its type.
fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (name, idx) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Runs the schema's `x-kubernetes-validations` (transition rules see `old`).
pub fn validate_cel(
    validator: &kube_cel::Validator,
    compiled: &kube_cel::CompiledSchema,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<Cause> {
    match validator.validate_compiled(compiled, obj, old) {
        Ok(()) => Vec::new(),
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| {
                let field = e.field_path.trim_start_matches('.').to_string();
                let t = value_at(obj, &field).map(type_name).unwrap_or("object");
                let reason = e
                    .reason
                    .clone()
                    .unwrap_or_else(|| "FieldValueInvalid".into());
                let message = match reason.as_str() {
                    "FieldValueForbidden" => format!("Forbidden: {}", e.message),
                    "FieldValueRequired" => format!("Required value: {}", e.message),
                    "FieldValueDuplicate" => format!("Duplicate value: {}", e.message),
                    _ => format!("Invalid value: \"{t}\": {}", e.message),
                };
                Cause {
                    reason,
                    message,
                    field,
                }
            })
            .collect(),
    }
}

/// `pattern` compiled once per distinct pattern (they come from installed CRDs, so the set is
/// small): compiling one on every validated field took a third of a write's CPU time.
fn compiled(pattern: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Option<regex::Regex>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
                        "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                        "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "port": {"x-kubernetes-int-or-string": true},
                        "opt": {"type": "string", "nullable": true}
                    }
                }
            }
        })
    }

    fn errors(v: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate(&schema(), &v, "", &mut errs);
        errs.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn each_keyword_reports_like_the_apiserver() {
        let cases = [
            (json!({"spec": {}}), "spec.name: Required value"),
            (
                json!({"spec": {"name": "ABC"}}),
                "spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'",
            ),
            (
                json!({"spec": {"name": "a"}}),
                "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
            ),
            (
                json!({"spec": {"name": "abcdef"}}),
                "spec.name: Too long: may not be more than 5 bytes",
            ),
            (
                json!({"spec": {"name": "ab", "size": "x"}}),
                "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
            ),
            (
                json!({"spec": {"name": "ab", "size": 0}}),
                "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
            ),
            (
                json!({"spec": {"name": "ab", "size": 11}}),
                "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
            ),
            (
                json!({"spec": {"name": "ab", "ratio": 0}}),
                "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0",
            ),
            (
                json!({"spec": {"name": "ab", "mode": "c"}}),
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            ),
            (
                json!({"spec": {"name": "ab", "tags": ["a", "b", "c"]}}),
                "spec.tags: Too many: 3: must have at most 2 items",
            ),
            (
                json!({"spec": {"name": "ab", "tags": []}}),
                "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
            ),
            (
                json!({"spec": {"name": "ab", "labels": {"a": 1}}}),
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
            ),
            (
                json!({"spec": {"name": "ab", "port": true}}),
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(errors(obj.clone()), vec![want.to_string()], "{obj}");
        }
    }

    #[test]
    fn valid_objects_pass() {
        assert!(
            errors(json!({"spec": {"name": "ab", "port": "http", "opt": null, "free": {"x": 1}}}))
                .is_empty()
        );
        assert!(errors(json!({"spec": {"name": "ab", "port": 80, "ratio": 0.5}})).is_empty());
    }

    #[test]
    fn pruning_drops_unknown_fields_but_keeps_preserved_and_root_meta() {
        let mut v = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "extra": 1},
            "spec": {"name": "ab", "bogus": 1, "free": {"any": {"thing": 1}}, "labels": {"k": "v"}},
            "junk": true
        });
        let mut unknown = Vec::new();
        prune(&schema(), &mut v, "", true, &mut unknown);
        // Map order depends on serde_json's `preserve_order`, which the workspace may enable.
        unknown.sort();
        assert_eq!(unknown, vec!["junk".to_string(), "spec.bogus".to_string()]);
        assert_eq!(v["metadata"]["extra"], 1);
        assert_eq!(v["spec"]["free"]["any"]["thing"], 1);
        assert_eq!(v["spec"]["labels"]["k"], "v");
        assert!(v["spec"].get("bogus").is_none());
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let v = default(&schema(), &json!({"spec": {"name": "ab"}}));
        assert_eq!(v["spec"]["size"], 3);
    }
}
