//! OpenAPI v3 documents built from the served resources. kubectl 1.32 needs
//! them to decide that the server does field validation (it looks for the
//! `fieldValidation` parameter on the PATCH operation of the kind) and for
//! `kubectl explain`.

use serde_json::{Map, Value, json};

use crate::{discovery, resources::ResourceDef, store::State};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group/version; the hash changes whenever the
/// served resources change so clients refetch.
pub fn root(st: &State) -> Value {
    let mut paths = Map::new();
    for (g, v) in discovery::group_versions(st) {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/{p}?hash={:016X}", st.epoch).replacen('/', "/openapi/v3/", 1)}),
        );
    }
    json!({"paths": paths})
}

fn schema_name(def: &ResourceDef, version: &str) -> String {
    if def.group.is_empty() {
        return format!("io.k8s.api.core.v1.{}", def.kind);
    }
    let mut parts: Vec<&str> = def.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), version, def.kind)
}

fn object_meta() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": s("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": s("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "List of objects depended by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
        }
    })
}

fn kind_schema(def: &ResourceDef, version: &str) -> Value {
    let mut s = def
        .version(version)
        .and_then(|v| v.schema.clone())
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !s.get("properties").is_some_and(Value::is_object) {
        s["properties"] = json!({});
    }
    s["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    s["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    s["properties"]["metadata"] = json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."});
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": def.group, "version": version, "kind": def.kind}]);
    s
}

fn op(
    def: &ResourceDef,
    version: &str,
    action: &str,
    params: Vec<Value>,
    body: Option<&[&str]>,
) -> Value {
    let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(def, version))});
    let mut o = json!({
        "operationId": format!("{action}{}", def.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": def.group, "version": version, "kind": def.kind},
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
    });
    if let Some(types) = body {
        let mut content = Map::new();
        for t in types {
            content.insert(t.to_string(), json!({"schema": reference}));
        }
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub fn group_version(st: &State, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta());
    let base = format!("/{}", gv_path(group, version));
    for def in st
        .defs
        .values()
        .filter(|d| d.group == group && d.version(version).is_some())
    {
        schemas.insert(schema_name(def, version), kind_schema(def, version));
        let write = vec![
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation"),
        ];
        // Strategic merge is deliberately not advertised, even for built-ins:
        // kubectl would then compute SMPs from these minimal schemas instead
        // of its compiled-in types.
        let patch_types = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ];
        let mut patch_params = write.clone();
        patch_params.push(query("force"));
        let collection = if def.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", def.plural)
        } else {
            format!("{base}/{}", def.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": op(def, version, "list", vec![query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("watch")], None),
                "post": op(def, version, "post", write.clone(), Some(&["application/json"])),
                "delete": op(def, version, "deletecollection", vec![], None),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op(def, version, "get", vec![], None),
                "put": op(def, version, "put", write.clone(), Some(&["application/json"])),
                "patch": op(def, version, "patch", patch_params.clone(), Some(&patch_types)),
                "delete": op(def, version, "delete", vec![query("dryRun")], None),
            }),
        );
        if def.has_status(version) {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({
                    "get": op(def, version, "get", vec![], None),
                    "put": op(def, version, "put", write.clone(), Some(&["application/json"])),
                    "patch": op(def, version, "patch", patch_params, Some(&patch_types)),
                }),
            );
        }
        if def.namespaced {
            paths.insert(
                format!("{base}/{}", def.plural),
                json!({"get": op(def, version, "list", vec![query("labelSelector"), query("fieldSelector")], None)}),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
