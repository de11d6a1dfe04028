//! The `Policy` API (`iam.kaws.io/v1alpha1`): an IAM managed policy. No AWS here.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::core::{
    api::{CommonSpec, CommonStatus, Global},
    documents::Document,
};

/// An IAM managed policy managed by kaws. A document change becomes a new default version.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iam.kaws.io",
    version = "v1alpha1",
    kind = "Policy",
    plural = "policies",
    namespaced,
    status = "PolicyStatus",
    shortname = "iampolicy",
    category = "aws",
    doc = "An IAM managed policy managed by kaws",
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policyName"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.defaultVersionId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) == has(oldSelf.path) && (!has(self.path) || self.path == oldSelf.path)").message("path is immutable"))]
#[x_kube(validation = Rule::new("has(self.description) == has(oldSelf.description) && (!has(self.description) || self.description == oldSelf.description)").message("description is immutable (IAM cannot change a policy's description)"))]
pub struct PolicySpec {
    /// Name of the managed policy (unique in the account): 1-128 letters, digits and
    /// `+=,.@_-`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("policyName is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9+=,.@_-]+$"))]
    pub policy_name: String,

    #[serde(flatten)]
    pub common: CommonSpec<Global>,

    /// IAM path of the policy. Default: the controller's path prefix (`--iam-path-prefix`,
    /// `/kaws/`); a path outside it is refused. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub path: Option<String>,

    /// Description, at most 1000 characters. Immutable: IAM cannot change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub description: Option<String>,

    /// The permissions: a policy document as YAML structure or a JSON string, compared by
    /// meaning. A change creates a new default version; when IAM's limit of 5 versions is
    /// reached the oldest non-default one is deleted first.
    pub document: Document,
}

/// What kaws last saw in IAM.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(flatten)]
    pub common: CommonStatus<Global>,
    /// Name of the policy in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// IAM's unique id of the policy (`ANPA…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// IAM path of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The version in force, e.g. `v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version_id: Option<String>,
    /// Roles, users and groups the policy is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_count: Option<i32>,
}

impl crate::core::driver::ManagedObject for Policy {
    type Status = PolicyStatus;
    const KIND: &'static str = "Policy";
    type Placement = Global;

    fn common_spec(&self) -> &CommonSpec<Global> {
        &self.spec.common
    }
    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &PolicyStatus) -> &CommonStatus<Global> {
        &status.common
    }
    fn common_status_mut(status: &mut PolicyStatus) -> &mut CommonStatus<Global> {
        &mut status.common
    }
}
