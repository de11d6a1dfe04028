//! One module tree per kind, each the same shape: `types` (API), `diff` (pure), `aws` (calls),
//! and the registry of them all.
//!
//! Adding a kind = its module here + one line in [`KINDS`]. Everything else — the CLI's kind
//! names, `kaws crds`, the controllers `kaws run` starts, the watches of the kinds it references,
//! the chart's RBAC (`charts/kaws/files/kinds.yaml`, `make crds`) — is derived from that list.

pub mod bucket;
pub mod dbinstance;
pub mod function;
pub mod instance;
pub mod instanceprofile;
pub mod policy;
pub mod role;
pub mod table;

use crate::core::registry::Kind;

/// Every kind kaws serves, in the order `kaws crds` prints them.
pub const KINDS: &[Kind] = &[
    Kind::of::<bucket::Bucket, bucket::aws::S3>(),
    Kind::of::<dbinstance::DBInstance, dbinstance::aws::Rds>(),
    Kind::of::<table::Table, table::aws::DynamoDb>(),
    Kind::of::<instance::Instance, instance::aws::Ec2>(),
    Kind::of::<function::Function, function::aws::Lambda>(),
    Kind::of::<role::Role, role::aws::Iam>(),
    Kind::of::<policy::Policy, policy::aws::Iam>(),
    Kind::of::<instanceprofile::InstanceProfile, instanceprofile::aws::Iam>(),
];

/// The names `--kinds` accepts, e.g. `dbinstance`.
pub fn kind_names() -> Vec<String> {
    KINDS.iter().map(Kind::name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{api::Scope, registry};

    #[test]
    fn the_chart_reads_the_registry() {
        let chart = include_str!("../../../charts/kaws/files/kinds.yaml");
        assert!(
            chart == registry::chart_data(KINDS),
            "charts/kaws/files/kinds.yaml differs from the kind registry: run `make crds` and commit it"
        );
    }

    #[test]
    fn every_kind_has_statements_in_the_iam_policy_and_every_statement_a_kind() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/iam/policy.json"))
                .expect("the policy is JSON");
        let sids: Vec<&str> = policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .map(|s| s["Sid"].as_str().expect("every statement has a Sid"))
            .collect();
        for kind in KINDS {
            assert!(
                sids.iter().any(|s| s.starts_with(kind.iam_statements())),
                "{}: no statement in deploy/iam/policy.json starts with {:?}",
                kind.kind(),
                kind.iam_statements()
            );
        }
        for sid in sids {
            let owners: Vec<&str> = KINDS
                .iter()
                .filter(|k| sid.starts_with(k.iam_statements()))
                .map(Kind::kind)
                .collect();
            assert_eq!(owners.len(), 1, "statement {sid} belongs to {owners:?}");
        }
    }

    #[test]
    fn a_kind_has_a_region_exactly_when_it_is_regional() {
        for kind in KINDS {
            let crd = kind.crd();
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema");
            let props = schema.properties.as_ref().expect("properties");
            let has = |part: &str| {
                props[part]
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key("region"))
            };
            let regional = kind.scope() == Scope::Regional;
            assert_eq!(has("spec"), regional, "{}: spec.region", kind.kind());
            assert_eq!(has("status"), regional, "{}: status.region", kind.kind());
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names = kind_names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
    }
}
