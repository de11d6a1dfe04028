//! The CustomResourceDefinitions kaws serves, as printed by `kaws crds` and kept in `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{
    cli::KindName,
    resources::{
        bucket::Bucket, dbinstance::DBInstance, function::Function, instance::Instance,
        table::Table,
    },
};

pub fn crd(kind: KindName) -> CustomResourceDefinition {
    match kind {
        KindName::Bucket => Bucket::crd(),
        KindName::DBInstance => DBInstance::crd(),
        KindName::Table => Table::crd(),
        KindName::Instance => Instance::crd(),
        KindName::Function => Function::crd(),
    }
}

/// The file name each CRD is kept under in `crds/`.
pub fn file_name(kind: KindName) -> String {
    let crd = crd(kind);
    format!("{}.yaml", crd.metadata.name.unwrap_or_default())
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// Every selected CRD as a multi-document YAML stream.
pub fn all_yaml(kinds: &[KindName]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for kind in kinds {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd(*kind))?);
    }
    Ok(out)
}
