//! Events: one store, two API views. As in kube-apiserver, `events.k8s.io/v1`
//! Events are stored as core/v1 Events and converted on the way in and out
//! (k8s.io/kubernetes `pkg/apis/events/v1/conversion.go`), so `kubectl
//! describe` and `kubectl events` (core/v1) see what a kube-runtime `Recorder`
//! writes (events.k8s.io/v1), and a watch on either view sees writes to both.

use serde_json::{Map, Value};

/// Storage key shared by both views.
pub const STORAGE_KEY: &str = "/events";

/// The group of the newer view.
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// Fields renamed between the views: (core/v1 name, events.k8s.io/v1 name).
/// Every other field (metadata, eventTime, series, reason, action, type,
/// related, reportingInstance) has the same name in both.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

fn rename(obj: &Value, from_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMED.iter().find_map(|(core, v1)| {
            let (from, to) = if from_core { (core, v1) } else { (v1, core) };
            (k == from).then_some(*to)
        });
        // A field that only the other view has (e.g. `note` sent to core/v1)
        // is unknown there: dropped, as decoding into the typed struct would.
        let foreign = RENAMED
            .iter()
            .any(|(core, v1)| k == if from_core { v1 } else { core });
        match renamed {
            Some(to) => {
                out.insert(to.to_string(), v.clone());
            }
            None if foreign => {}
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// A core/v1 Event as served by `events.k8s.io/v1` (apiVersion/kind are set by the caller).
pub fn core_to_v1(core: &Value) -> Value {
    rename(core, true)
}

/// An `events.k8s.io/v1` Event as stored (core/v1 form).
pub fn v1_to_core(v1: &Value) -> Value {
    rename(v1, false)
}

/// The field label a core/v1 Event is selected by, for a label given to the
/// `events.k8s.io/v1` view (the real server's field label conversion), or
/// `None` when that view does not support it.
pub fn v1_field_label(label: &str) -> Option<&'static str> {
    Some(match label {
        "metadata.name" => "metadata.name",
        "metadata.namespace" => "metadata.namespace",
        "reason" => "reason",
        "type" => "type",
        "source" => "source",
        "reportingController" => "reportingComponent",
        "regarding.kind" => "involvedObject.kind",
        "regarding.namespace" => "involvedObject.namespace",
        "regarding.name" => "involvedObject.name",
        "regarding.uid" => "involvedObject.uid",
        "regarding.apiVersion" => "involvedObject.apiVersion",
        "regarding.resourceVersion" => "involvedObject.resourceVersion",
        "regarding.fieldPath" => "involvedObject.fieldPath",
        _ => return None,
    })
}

/// Field labels core/v1 Events support (`pkg/registry/core/event/strategy.go`).
pub const CORE_FIELD_LABELS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The value of a core field label on a stored Event: `source` is
/// `source.component`, falling back to the reporting controller.
pub fn core_field_value(obj: &Value, label: &str) -> Option<String> {
    if label == "source" {
        let component = obj
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or("");
        let v = if component.is_empty() {
            obj.get("reportingComponent")
                .and_then(Value::as_str)
                .unwrap_or("")
        } else {
            component
        };
        return Some(v.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conversion_round_trips_every_renamed_field() {
        let v1 = json!({
            "metadata": {"name": "e"}, "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
            "reportingController": "kaws", "reportingInstance": "kaws-0", "action": "Create",
            "reason": "Created", "regarding": {"kind": "Bucket", "name": "b"},
            "related": {"kind": "Secret", "name": "s"}, "note": "made", "type": "Normal",
            "deprecatedSource": {"component": "kaws", "host": "h"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2024-01-01T00:02:00Z"
        });
        let core = v1_to_core(&v1);
        assert_eq!(
            core,
            json!({
                "metadata": {"name": "e"}, "eventTime": "2024-01-01T00:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
                "reportingComponent": "kaws", "reportingInstance": "kaws-0", "action": "Create",
                "reason": "Created", "involvedObject": {"kind": "Bucket", "name": "b"},
                "related": {"kind": "Secret", "name": "s"}, "message": "made", "type": "Normal",
                "source": {"component": "kaws", "host": "h"}, "count": 3,
                "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:02:00Z"
            })
        );
        assert_eq!(core_to_v1(&core), v1);
    }

    #[test]
    fn fields_of_the_other_view_are_dropped() {
        assert_eq!(
            v1_to_core(&json!({"message": "x", "note": "y"})),
            json!({"message": "y"})
        );
    }

    #[test]
    fn source_label_falls_back_to_the_reporting_controller() {
        let e = json!({"reportingComponent": "kaws"});
        assert_eq!(core_field_value(&e, "source").as_deref(), Some("kaws"));
        let e = json!({"source": {"component": "kubelet"}, "reportingComponent": "kaws"});
        assert_eq!(core_field_value(&e, "source").as_deref(), Some("kubelet"));
    }
}
