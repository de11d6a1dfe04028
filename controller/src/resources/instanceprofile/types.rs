//! The `InstanceProfile` API (`iam.kaws.io/v1alpha1`): the container that hands an IAM role to
//! EC2 instances. No AWS here.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::core::{
    api::{CommonSpec, CommonStatus, Global},
    driver::Dependency,
    references::LocalRef,
};

/// An IAM instance profile managed by kaws, holding at most one role.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iam.kaws.io",
    version = "v1alpha1",
    kind = "InstanceProfile",
    namespaced,
    status = "InstanceProfileStatus",
    shortname = "iamip",
    category = "aws",
    doc = "An IAM instance profile managed by kaws",
    printcolumn = r#"{"name":"InstanceProfile","type":"string","jsonPath":".spec.instanceProfileName"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".status.roleName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) == has(oldSelf.path) && (!has(self.path) || self.path == oldSelf.path)").message("path is immutable"))]
#[x_kube(validation = Rule::new("!(has(self.roleRef) && has(self.roleName))").message("set roleRef or roleName, not both"))]
pub struct InstanceProfileSpec {
    /// Name of the instance profile (unique in the account): 1-128 letters, digits and
    /// `+=,.@_-`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("instanceProfileName is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9+=,.@_-]+$"))]
    pub instance_profile_name: String,

    #[serde(flatten)]
    pub common: CommonSpec<Global>,

    /// IAM path of the instance profile. Default: the controller's path prefix
    /// (`--iam-path-prefix`, `/kaws/`); a path outside it is refused. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub path: Option<String>,

    /// A kaws `Role` in the same namespace to put in the profile; the profile waits with
    /// `DependencyNotReady` until it is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<LocalRef>,

    /// Name of an existing IAM role to put in the profile instead. It must lie under the
    /// controller's path prefix: handing any other role to EC2 would grant what kaws may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
}

/// What kaws last saw in IAM.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceProfileStatus {
    #[serde(flatten)]
    pub common: CommonStatus<Global>,
    /// Name of the instance profile in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_name: Option<String>,
    /// IAM's unique id of the instance profile (`AIPA…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_id: Option<String>,
    /// IAM path of the instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role in the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
}

impl crate::core::driver::ManagedObject for InstanceProfile {
    type Status = InstanceProfileStatus;
    const KIND: &'static str = "InstanceProfile";
    type Placement = Global;

    fn common_spec(&self) -> &CommonSpec<Global> {
        &self.spec.common
    }
    fn status(&self) -> Option<&InstanceProfileStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &InstanceProfileStatus) -> &CommonStatus<Global> {
        &status.common
    }
    fn common_status_mut(status: &mut InstanceProfileStatus) -> &mut CommonStatus<Global> {
        &mut status.common
    }
    fn dependencies() -> Vec<Dependency<Self>> {
        vec![Dependency::on::<crate::resources::role::Role>(|p| {
            p.spec.role_ref.iter().map(|r| r.name.clone()).collect()
        })]
    }
}
