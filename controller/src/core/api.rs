//! API fields every kind shares: the common spec fields and the common status fields.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to the AWS resource when the Kubernetes object is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the AWS resource, then release the object.
    #[default]
    Delete,
    /// Release the object and leave the AWS resource untouched.
    Retain,
}

/// Whether kaws may write to the AWS resource.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ManagementPolicy {
    /// Create, update and delete the AWS resource to match the spec.
    #[default]
    Manage,
    /// Only read an existing AWS resource into status; never create, change or delete it.
    ObserveOnly,
}

/// Spec fields shared by every kind (flattened into each kind's spec).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommonSpec {
    /// AWS region of the resource, e.g. `eu-west-1`. Defaults to the controller's region. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `Delete` (default: the controller's `--default-deletion-policy`) deletes the AWS resource
    /// with the object; `Retain` leaves it in AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// `Manage` (default) keeps AWS matching the spec; `ObserveOnly` only reads an existing
    /// resource into status and never writes or deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
    /// Tags for the AWS resource. Merged with the tags kaws sets itself (`kaws.io/*`), which
    /// cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl CommonSpec {
    pub fn management_policy(&self) -> ManagementPolicy {
        self.management_policy.unwrap_or_default()
    }

    /// Pure check of the user's tags: AWS refuses `aws:*` keys on every service.
    pub fn validate_tags(&self) -> Result<(), String> {
        let reserved = super::names::tags::AWS_RESERVED_PREFIX;
        match self.tags.keys().find(|k| k.starts_with(reserved)) {
            Some(key) => Err(format!(
                "tags: the prefix {reserved:?} is reserved by AWS ({key:?})"
            )),
            None => Ok(()),
        }
    }
}

/// Status fields shared by every kind (flattened into each kind's status).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the AWS resource exists, is usable and matches the spec.
    /// `Synced`: the last reconcile reached AWS and applied the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// ARN of the AWS resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Region the AWS resource lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The last `kaws.io/reconcile-requested-at` annotation value that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// CEL rule that makes the optional `region` immutable: it may be neither added, removed nor
/// changed after creation.
pub const REGION_IMMUTABLE_RULE: &str = "has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)";
