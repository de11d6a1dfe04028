//! The CustomResourceDefinitions kaws serves, as printed by `kaws crds` and kept in `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

use crate::core::registry::Kind;

pub fn crd(kind: &Kind) -> CustomResourceDefinition {
    let mut crd = kind.crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            sort_defaults(schema);
        }
    }
    crd
}

/// Object defaults (e.g. `metadataOptions: {httpTokens: required, …}`) come from serializing a
/// `Default` value, whose key order depends on whether serde_json's `preserve_order` feature is
/// on in the build; sorted keys make `kaws crds` print the same bytes in every build.
fn sort_defaults(schema: &mut JSONSchemaProps) {
    if let Some(JSON(value)) = schema.default.as_mut() {
        *value = sorted(std::mem::take(value));
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        sort_defaults(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => sort_defaults(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(sort_defaults),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        sort_defaults(extra);
    }
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The file name each CRD is kept under in `crds/`.
pub fn file_name(kind: &Kind) -> String {
    let crd = crd(kind);
    format!("{}.yaml", crd.metadata.name.unwrap_or_default())
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// Every selected CRD as a multi-document YAML stream.
pub fn all_yaml(kinds: &[&Kind]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for kind in kinds {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd(kind))?);
    }
    Ok(out)
}
