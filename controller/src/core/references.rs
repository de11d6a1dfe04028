//! References from one kaws object to another in its namespace (`code.bucketRef`, `roleRef`,
//! `policyRefs`, `iamInstanceProfile.ref`): the resolve step reads the referenced object and
//! goes on only once it is Ready at its current generation. Until then the referencing object
//! waits with `DependencyNotReady`; the runner's watch on the referenced kind wakes it as soon
//! as that changes (see `ManagedObject::dependencies`).

use kube::{Api, Client, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    conditions::is_true,
    driver::ManagedObject,
    error::{Error, Result},
    names::conditions,
};

/// A kaws object in the same namespace, by `metadata.name`.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
pub struct LocalRef {
    /// `metadata.name` of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The object of kind `D` named `name` in `namespace`, once it is Ready for its current
/// generation; `DependencyNotReady` naming `field` until then.
pub async fn ready<D: ManagedObject>(
    client: &Client,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<D> {
    let api: Api<D> = Api::namespaced(client.clone(), namespace);
    let Some(object) = api.get_opt(name).await? else {
        return Err(Error::DependencyNotReady(format!(
            "{} {name:?} referenced by {field} does not exist",
            D::KIND
        )));
    };
    if !is_ready(&object) {
        return Err(Error::DependencyNotReady(format!(
            "{} {name:?} referenced by {field} is not Ready",
            D::KIND
        )));
    }
    Ok(object)
}

/// Whether `object`'s conditions say Ready for its current generation.
pub fn is_ready<D: ManagedObject>(object: &D) -> bool {
    object.status().is_some_and(|s| {
        let common = D::common_status(s);
        common.observed_generation == object.meta().generation
            && is_true(&common.conditions, conditions::READY)
    })
}

/// The ARN a Ready referenced object reports, or `DependencyNotReady` when it has none yet.
pub fn arn_of<D: ManagedObject>(object: &D, field: &str) -> Result<String> {
    object
        .status()
        .and_then(|s| D::common_status(s).arn.clone())
        .ok_or_else(|| {
            Error::DependencyNotReady(format!(
                "{} {:?} referenced by {field} reports no ARN yet",
                D::KIND,
                object.name_any()
            ))
        })
}
