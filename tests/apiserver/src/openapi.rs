//! OpenAPI v3 documents built from the served resources, and the OpenAPI v2
//! (Swagger 2.0) document with the same definitions. kubectl 1.32 needs v3
//! to decide that the server does field validation (it looks for the
//! `fieldValidation` parameter on the PATCH operation of the kind) and for
//! `kubectl explain`; client-go's `OpenAPISchema()` (Argo CD's cluster
//! cache, `kubectl explain --output=plaintext-openapiv2`) reads v2 as
//! protobuf, see `openapi_pb`.

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
    kind_schema_for(def, version, false)
}

/// The kind's schema, for v3 or (`v2`) converted as kube-apiserver's
/// `ToStructuralOpenAPIV2` does before the type meta properties are added.
fn kind_schema_for(def: &ResourceDef, version: &str, v2: bool) -> Value {
    let mut s = def
        .version(version)
        .and_then(|v| v.schema.clone())
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if v2 {
        s = to_v2(s);
    }
    if !s.get("properties").is_some_and(Value::is_object) {
        s["properties"] = json!({});
    }
    s["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    s["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    s["properties"]["metadata"] = if v2 {
        json!({"$ref": format!("#/definitions/{OBJECT_META}"), "description": "Standard object's metadata."})
    } else {
        json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."})
    };
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

/// OpenAPI v3 → v2 for a CRD schema (`ToStructuralOpenAPIV2`): no
/// allOf/anyOf/oneOf/not, no nullable (a nullable field loses its type,
/// items and properties and is no longer required), no items or properties
/// under `x-kubernetes-preserve-unknown-fields`, no `type: array` without
/// items.
fn to_v2(mut s: Value) -> Value {
    let Some(m) = s.as_object_mut() else {
        return s;
    };
    for k in ["allOf", "anyOf", "oneOf", "not"] {
        m.remove(k);
    }
    if m.remove("nullable") == Some(Value::Bool(true)) {
        m.remove("type");
        m.remove("items");
        m.remove("properties");
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        m.remove("items");
        m.remove("properties");
    }
    if m.get("type").and_then(Value::as_str) == Some("array") && !m.contains_key("items") {
        m.remove("type");
    }
    if let Some(Value::Object(props)) = m.remove("properties") {
        let nullable: Vec<String> = props
            .iter()
            .filter(|(_, p)| p.get("nullable") == Some(&Value::Bool(true)))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(Value::Array(req)) = m.get_mut("required") {
            req.retain(|r| !nullable.iter().any(|n| r == n.as_str()));
            if req.is_empty() {
                m.remove("required");
            }
        }
        let props: Map<String, Value> = props.into_iter().map(|(k, v)| (k, to_v2(v))).collect();
        m.insert("properties".into(), Value::Object(props));
    }
    if let Some(items) = m.remove("items") {
        m.insert("items".into(), to_v2(items));
    }
    if let Some(ap) = m.remove("additionalProperties") {
        let ap = if ap.is_object() { to_v2(ap) } else { ap };
        m.insert("additionalProperties".into(), ap);
    }
    s
}

fn v2_query(name: &str) -> Value {
    json!({"name": name, "in": "query", "type": "string", "uniqueItems": true})
}

fn v2_op(
    def: &ResourceDef,
    version: &str,
    action: &str,
    mut params: Vec<Value>,
    body: bool,
) -> Value {
    let reference = json!({"$ref": format!("#/definitions/{}", schema_name(def, version))});
    if body {
        params.insert(
            0,
            json!({"name": "body", "in": "body", "required": true, "schema": reference}),
        );
    }
    let mut o = json!({
        "operationId": format!("{action}{}", def.kind),
        "consumes": ["*/*"],
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {"200": {"description": "OK", "schema": reference}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": def.group, "version": version, "kind": def.kind},
    });
    if action == "patch" {
        o["consumes"] = json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml"
        ]);
    }
    o
}

/// `/openapi/v2`: every served kind's definition (the same schemas as v3,
/// converted) with `x-kubernetes-group-version-kind`, ObjectMeta, and the
/// paths with the parameters kubectl's v2 validation looks for.
pub fn v2(st: &State) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    definitions.insert(OBJECT_META.into(), object_meta());
    for (group, version) in discovery::group_versions(st) {
        let base = format!("/{}", gv_path(&group, &version));
        for def in st
            .defs
            .values()
            .filter(|d| d.group == group && d.version(&version).is_some())
        {
            definitions.insert(
                schema_name(def, &version),
                kind_schema_for(def, &version, true),
            );
            let write = vec![
                v2_query("dryRun"),
                v2_query("fieldManager"),
                v2_query("fieldValidation"),
            ];
            let mut patch_params = write.clone();
            patch_params.push(v2_query("force"));
            let collection = if def.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}", def.plural)
            } else {
                format!("{base}/{}", def.plural)
            };
            let v = version.as_str();
            paths.insert(
                collection.clone(),
                json!({
                    "get": v2_op(def, v, "list", vec![v2_query("labelSelector"), v2_query("fieldSelector"), v2_query("limit"), v2_query("continue"), v2_query("watch")], false),
                    "post": v2_op(def, v, "post", write.clone(), true),
                    "delete": v2_op(def, v, "deletecollection", vec![v2_query("propagationPolicy")], false),
                }),
            );
            paths.insert(
                format!("{collection}/{{name}}"),
                json!({
                    "get": v2_op(def, v, "get", vec![], false),
                    "put": v2_op(def, v, "put", write.clone(), true),
                    "patch": v2_op(def, v, "patch", patch_params.clone(), true),
                    "delete": v2_op(def, v, "delete", vec![v2_query("dryRun"), v2_query("propagationPolicy")], false),
                }),
            );
            if def.has_status(v) {
                paths.insert(
                    format!("{collection}/{{name}}/status"),
                    json!({
                        "get": v2_op(def, v, "get", vec![], false),
                        "put": v2_op(def, v, "put", write.clone(), true),
                        "patch": v2_op(def, v, "patch", patch_params, true),
                    }),
                );
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
}
