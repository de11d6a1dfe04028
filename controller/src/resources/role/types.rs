//! The `Role` API (`iam.kaws.io/v1alpha1`): what users write and what kaws reports. No AWS here.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::core::{
    api::{CommonSpec, CommonStatus, Global},
    documents::Document,
    driver::Dependency,
    references::LocalRef,
};

/// An IAM role managed by kaws. kaws owns everything attached to a role it owns: inline
/// policies and managed-policy attachments added outside kaws are removed.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iam.kaws.io",
    version = "v1alpha1",
    kind = "Role",
    namespaced,
    status = "RoleStatus",
    shortname = "iamrole",
    category = "aws",
    doc = "An IAM role managed by kaws",
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.roleName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) == has(oldSelf.path) && (!has(self.path) || self.path == oldSelf.path)").message("path is immutable"))]
pub struct RoleSpec {
    /// Name of the IAM role (unique in the account): 1-64 letters, digits and `+=,.@_-`.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("roleName is immutable"))]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9+=,.@_-]+$"))]
    pub role_name: String,

    #[serde(flatten)]
    pub common: CommonSpec<Global>,

    /// IAM path of the role, e.g. `/kaws/team-a/`. Default: the controller's path prefix
    /// (`--iam-path-prefix`, `/kaws/`); a path outside it is refused. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub path: Option<String>,

    /// Description of the role, at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub description: Option<String>,

    /// The trust policy: who may assume the role. A policy document as YAML structure or a
    /// JSON string; compared by meaning, never as text.
    pub assume_role_policy: Document,

    /// Inline policies by name (1-128 letters, digits and `+=,.@_-`). kaws owns all inline
    /// policies of the role: one added outside kaws is deleted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline_policies: BTreeMap<String, Document>,

    /// ARNs of managed policies to attach (AWS-managed or others). Together with `policyRefs`
    /// the complete set: an attachment made outside kaws is detached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub managed_policy_arns: Vec<String>,

    /// kaws `Policy` objects in the same namespace to attach. The role waits with
    /// `DependencyNotReady` until each is Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub policy_refs: Vec<LocalRef>,

    /// ARN of the managed policy that bounds the role's permissions. When the controller runs
    /// with `--iam-permissions-boundary`, that boundary is set on every role and a spec naming
    /// another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions_boundary: Option<String>,

    /// Longest session, in seconds, for those who assume the role: 3600 (default) to 43200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3600, max = 43200))]
    pub max_session_duration: Option<i32>,
}

/// What kaws last saw in IAM.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    #[serde(flatten)]
    pub common: CommonStatus<Global>,
    /// Name of the role in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    /// IAM's unique id of the role (`AROA…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// IAM path of the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Number of inline policies in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_policy_count: Option<u32>,
    /// Number of managed policies attached in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_policy_count: Option<u32>,
}

impl crate::core::driver::ManagedObject for Role {
    type Status = RoleStatus;
    const KIND: &'static str = "Role";
    type Placement = Global;

    fn common_spec(&self) -> &CommonSpec<Global> {
        &self.spec.common
    }
    fn status(&self) -> Option<&RoleStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &RoleStatus) -> &CommonStatus<Global> {
        &status.common
    }
    fn common_status_mut(status: &mut RoleStatus) -> &mut CommonStatus<Global> {
        &mut status.common
    }
    fn dependencies() -> Vec<Dependency<Self>> {
        vec![Dependency::on::<crate::resources::policy::Policy>(|r| {
            r.spec.policy_refs.iter().map(|p| p.name.clone()).collect()
        })]
    }
}
