//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with
//! columns from CRD additionalPrinterColumns evaluated as JSONPath.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// One column: header definition plus how to compute its cell.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub path: String,
}

fn col(name: &str, kind: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        kind: kind.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        path: path.into(),
    }
}

/// Columns after the leading Name column.
pub fn columns(def: &ResourceDef, version: &str) -> Vec<Column> {
    if def.custom {
        let defined = def
            .version(version)
            .map(|v| v.printer_columns.clone())
            .unwrap_or_default();
        if defined.is_empty() {
            return vec![col("Age", "date", ".metadata.creationTimestamp")];
        }
        return defined
            .iter()
            .map(|c| Column {
                name: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .into(),
                format: c.get("format").and_then(Value::as_str).unwrap_or("").into(),
                description: c
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                path: c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
            })
            .collect();
    }
    match def.key().as_str() {
        "/namespaces" => vec![
            col("Status", "string", ".status.phase"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        "/secrets" => vec![
            col("Type", "string", ".type"),
            col("Data", "integer", "#count:.data"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        "/configmaps" => vec![
            col("Data", "integer", "#count:.data"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        "apiextensions.k8s.io/customresourcedefinitions" => {
            vec![col("Created At", "date-raw", ".metadata.creationTimestamp")]
        }
        "coordination.k8s.io/leases" => vec![
            col("Holder", "string", ".spec.holderIdentity"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        _ => vec![col("Age", "date", ".metadata.creationTimestamp")],
    }
}

#[derive(Debug, PartialEq)]
enum Seg {
    Field(String),
    Index(usize),
    All,
    Filter(Vec<String>, String),
}

fn parse(path: &str) -> Vec<Seg> {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut segs = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let f: String = chars[start..i].iter().collect();
                if !f.is_empty() {
                    segs.push(Seg::Field(f));
                }
            }
            '[' => {
                let start = i + 1;
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '[' {
                        depth += 1;
                    } else if chars[i] == ']' {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    i += 1;
                }
                let inner: String = chars[start..i.min(chars.len())].iter().collect();
                i += 1;
                let inner = inner.trim();
                if inner == "*" {
                    segs.push(Seg::All);
                } else if let Ok(n) = inner.parse::<usize>() {
                    segs.push(Seg::Index(n));
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|s| s.strip_suffix(')')) {
                    if let Some((lhs, rhs)) = f.split_once("==") {
                        let key: Vec<String> = lhs
                            .trim()
                            .trim_start_matches('@')
                            .split('.')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect();
                        let val = rhs.trim().trim_matches('"').trim_matches('\'').to_string();
                        segs.push(Seg::Filter(key, val));
                    }
                } else {
                    let f = inner.trim_matches('\'').trim_matches('"').to_string();
                    segs.push(Seg::Field(f));
                }
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                segs.push(Seg::Field(chars[start..i].iter().collect()));
            }
        }
    }
    segs
}

/// Evaluates a kubectl-style JSONPath, returning every match.
pub fn eval<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![obj];
    for seg in parse(path) {
        let mut next = Vec::new();
        for v in cur {
            match &seg {
                Seg::Field(f) => next.extend(v.get(f.as_str())),
                Seg::Index(n) => next.extend(v.get(*n)),
                Seg::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(o) => next.extend(o.values()),
                    _ => {}
                },
                Seg::Filter(key, want) => {
                    if let Value::Array(a) = v {
                        for item in a {
                            let mut x = Some(item);
                            for k in key {
                                x = x.and_then(|x| x.get(k.as_str()));
                            }
                            let matches = match x {
                                Some(Value::String(s)) => s == want,
                                Some(other) => want.as_str() == other.to_string().as_str(),
                                None => false,
                            };
                            if matches {
                                next.push(item);
                            }
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// `duration.HumanDuration` from apimachinery, as kubectl shows ages.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{d}d");
    }
    let y = d / 365;
    if h < 24 * 365 * 8 {
        return format!("{y}y{}d", d % 365);
    }
    format!("{y}y")
}

fn cell(c: &Column, obj: &Value) -> Value {
    if let Some(p) = c.path.strip_prefix("#count:") {
        let n = eval(obj, p)
            .first()
            .map(|v| match v {
                Value::Object(o) => o.len(),
                Value::Array(a) => a.len(),
                _ => 0,
            })
            .unwrap_or(0);
        return json!(n);
    }
    let Some(v) = eval(obj, &c.path).into_iter().next() else {
        return Value::Null;
    };
    match c.kind.as_str() {
        "date" => match v
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => json!(human_duration(
                chrono::Utc::now().signed_duration_since(t).num_seconds()
            )),
            None => json!("<invalid>"),
        },
        "integer" | "number" | "boolean" => v.clone(),
        _ => match v {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
    }
}

/// Renders objects as a Table; `include` is the includeObject parameter.
pub fn table(
    def: &ResourceDef,
    version: &str,
    objs: &[Value],
    include: &str,
    list_meta: Value,
) -> Value {
    if def.key() == crate::events::STORAGE_KEY {
        return event_table(def, objs, include, list_meta);
    }
    let cols = columns(def, version);
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
    })];
    for c in &cols {
        let kind = if c.kind == "date-raw" {
            "date"
        } else {
            c.kind.as_str()
        };
        defs.push(json!({"name": c.name, "type": kind, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![json!(
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )];
            for c in &cols {
                if c.kind == "date-raw" {
                    cells.push(
                        eval(o, &c.path)
                            .first()
                            .map(|v| (*v).clone())
                            .unwrap_or(Value::Null),
                    );
                } else {
                    cells.push(cell(c, o));
                }
            }
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn since(t: Option<&str>) -> String {
    match t.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) {
        Some(t) => human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// The cells kube-apiserver's `printEvent` renders for a core/v1 Event.
fn event_cells(e: &Value) -> Vec<Value> {
    let s = |p: &str| {
        e.pointer(p)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let first = match s("/firstTimestamp") {
        Some(t) => since(Some(t)),
        None => since(s("/eventTime")),
    };
    let mut last = match s("/lastTimestamp") {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = e.get("count").and_then(Value::as_i64).unwrap_or(0);
    if e.get("series").is_some_and(Value::is_object) {
        last = since(s("/series/lastObservedTime"));
        count = e
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = s("/involvedObject/kind").unwrap_or("").to_lowercase();
    let target = match s("/involvedObject/name") {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let component = s("/source/component").or(s("/reportingComponent"));
    let instance = s("/source/host").or(s("/reportingInstance"));
    let source = match (component, instance) {
        (None, _) => "<unknown>".to_string(),
        (Some(c), None) => c.to_string(),
        (Some(c), Some(i)) => format!("{c}, {i}"),
    };
    vec![
        json!(last),
        json!(s("/type").unwrap_or("")),
        json!(s("/reason").unwrap_or("")),
        json!(target),
        json!(s("/involvedObject/fieldPath").unwrap_or("")),
        json!(source),
        json!(s("/message").unwrap_or("").trim()),
        json!(first),
        json!(count),
        json!(s("/metadata/name").unwrap_or("")),
    ]
}

/// Events print without a leading Name column, as on a real server.
fn event_table(def: &ResourceDef, objs: &[Value], include: &str, list_meta: Value) -> Value {
    let defs: Vec<Value> = [
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ]
    .iter()
    .map(|(n, p)| {
        let kind = if *n == "Count" { "integer" } else { "string" };
        json!({"name": n, "type": kind, "format": "", "description": "", "priority": p})
    })
    .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let core = if def.is_events_v1() {
                crate::events::v1_to_core(o)
            } else {
                o.clone()
            };
            let mut row = json!({"cells": event_cells(&core)});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_supports_fields_indexes_and_filters() {
        let o = json!({"spec": {"a": [{"b": 1}, {"b": 2}]},
                       "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(eval(&o, ".spec.a[1].b"), vec![&json!(2)]);
        assert_eq!(
            eval(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(
            eval(&o, "{.status.conditions[?(@.type=='Synced')].status}"),
            vec![&json!("False")]
        );
        assert!(eval(&o, ".spec.missing").is_empty());
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
