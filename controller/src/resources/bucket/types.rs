//! The `Bucket` API (`s3.kaws.io/v1alpha1`): what users write and what kaws reports. No AWS here.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::{
    api::{CommonSpec, CommonStatus, Regional},
    documents::Document,
};

/// An S3 bucket managed by kaws. Secure by default: all public access blocked and default
/// encryption (SSE-S3) on.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3.kaws.io",
    version = "v1alpha1",
    kind = "Bucket",
    namespaced,
    status = "BucketStatus",
    shortname = "bkt",
    category = "aws",
    doc = "An S3 bucket managed by kaws",
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.bucketName"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::core::api::REGION_IMMUTABLE_RULE).message("region is immutable"))]
pub struct BucketSpec {
    /// Globally unique name of the S3 bucket: 3-63 lowercase letters, digits, dots and hyphens.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("bucketName is immutable"))]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket_name: String,

    #[serde(flatten)]
    pub common: CommonSpec,

    /// Versioning state: `Enabled` or `Suspended` (default). S3 cannot return a bucket to
    /// unversioned once versioning was enabled; `Suspended` is the closest state.
    #[serde(default)]
    pub versioning: VersioningStatus,

    /// Default server-side encryption. Defaults to SSE-S3 (`AES256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,

    /// Public access block. Every setting defaults to `true` (all public access blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<PublicAccessBlock>,

    /// Lifecycle rules, at most 1000. An empty or absent list removes every lifecycle rule from
    /// the bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub lifecycle_rules: Vec<LifecycleRule>,

    /// CORS rules, at most 100. An empty or absent list removes the CORS configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub cors_rules: Vec<CorsRule>,

    /// Bucket policy: a policy document as YAML structure or a JSON string, at most 20 KB as
    /// JSON; compared by meaning. Absent removes the bucket policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Document>,

    /// On delete, first remove every object version and delete marker. Without it a non-empty
    /// bucket blocks deletion (reason `BucketNotEmpty`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_delete: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum VersioningStatus {
    Enabled,
    #[default]
    Suspended,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SseAlgorithm {
    /// SSE-S3, keys managed by S3.
    #[default]
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS.
    #[serde(rename = "aws:kms")]
    AwsKms,
    /// Dual-layer SSE-KMS.
    #[serde(rename = "aws:kms:dsse")]
    AwsKmsDsse,
}

/// Default encryption of new objects.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `AES256` (SSE-S3, default), `aws:kms` or `aws:kms:dsse`.
    #[serde(default)]
    pub sse_algorithm: SseAlgorithm,
    /// KMS key id or ARN, for the KMS algorithms. Absent uses the AWS-managed `aws/s3` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "kmsMasterKeyID")]
    pub kms_master_key_id: Option<String>,
    /// Use an S3 Bucket Key to cut KMS request costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_key_enabled: Option<bool>,
}

fn yes() -> bool {
    true
}

/// S3 Block Public Access settings for the bucket.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublicAccessBlock {
    /// Reject PUTs that carry public ACLs. Default true.
    #[serde(default = "yes")]
    pub block_public_acls: bool,
    /// Ignore public ACLs on the bucket and its objects. Default true.
    #[serde(default = "yes")]
    pub ignore_public_acls: bool,
    /// Reject bucket policies that grant public access. Default true.
    #[serde(default = "yes")]
    pub block_public_policy: bool,
    /// Restrict access to a bucket with a public policy to AWS principals. Default true.
    #[serde(default = "yes")]
    pub restrict_public_buckets: bool,
}

impl Default for PublicAccessBlock {
    fn default() -> Self {
        Self {
            block_public_acls: true,
            ignore_public_acls: true,
            block_public_policy: true,
            restrict_public_buckets: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RuleStatus {
    #[default]
    Enabled,
    Disabled,
}

/// One lifecycle rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    /// Unique name of the rule within the bucket.
    #[schemars(length(min = 1, max = 255))]
    pub id: String,
    /// `Enabled` (default) or `Disabled`.
    #[serde(default)]
    pub status: RuleStatus,
    /// Apply the rule to objects whose key starts with this prefix. Absent: every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Expire current object versions this many days after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expiration_days: Option<i32>,
    /// Permanently delete noncurrent versions this many days after they became noncurrent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub noncurrent_version_expiration_days: Option<i32>,
    /// Abort incomplete multipart uploads this many days after they started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub abort_incomplete_multipart_upload_days: Option<i32>,
    /// Move current versions to other storage classes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
}

/// Move objects to a storage class after a number of days.
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Days after creation.
    #[schemars(range(min = 0))]
    pub days: i32,
    /// Target storage class, e.g. `STANDARD_IA`, `GLACIER_IR`, `GLACIER`, `DEEP_ARCHIVE`.
    pub storage_class: String,
}

/// One CORS rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    /// Optional name of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "id")]
    pub id: Option<String>,
    /// HTTP methods: `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
    pub allowed_methods: Vec<String>,
    /// Origins allowed to make cross-origin requests, e.g. `https://example.com` or `*`.
    pub allowed_origins: Vec<String>,
    /// Headers allowed in a preflight request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long the browser may cache a preflight response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// What kaws last saw in S3.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the bucket in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// Observed versioning state: `Enabled`, `Suspended`, or absent when never enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
    /// Observed default encryption algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_algorithm: Option<String>,
    /// Observed public access block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<PublicAccessBlock>,
    /// Number of lifecycle rules in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_rule_count: Option<u32>,
    /// Number of CORS rules in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_rule_count: Option<u32>,
    /// Whether a bucket policy is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_policy: Option<bool>,
}

impl crate::core::driver::ManagedObject for Bucket {
    type Status = BucketStatus;
    const KIND: &'static str = "Bucket";
    type Placement = Regional;

    fn common_spec(&self) -> &CommonSpec {
        &self.spec.common
    }
    fn status(&self) -> Option<&BucketStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &BucketStatus) -> &CommonStatus {
        &status.common
    }
    fn common_status_mut(status: &mut BucketStatus) -> &mut CommonStatus {
        &mut status.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::driver::settled;

    fn bucket(yaml: &str) -> Bucket {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    const SETTLED: &str = "
metadata: {name: a, namespace: n, generation: 2, finalizers: [kaws.io/finalizer]}
spec: {bucketName: a-bucket}
status:
  observedGeneration: 2
  conditions:
    - {type: Ready, status: 'True', reason: Available, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}
    - {type: Synced, status: 'True', reason: Synced, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}
";

    /// What a (re)started kaws may spread over the resync period, and what it must reconcile
    /// at once.
    #[test]
    fn only_objects_whose_status_records_their_spec_as_handled_are_settled() {
        assert!(settled(&bucket(SETTLED)), "applied, Ready and Synced");
        let paused = SETTLED
            .replace(
                "name: a,",
                "name: a, annotations: {kaws.io/paused: 'true'},",
            )
            .replace(
                "status: 'True', reason: Synced",
                "status: 'False', reason: Paused",
            );
        assert!(settled(&bucket(&paused)), "paused, and its status says so");
        let at_once = [
            (
                "no status yet",
                SETTLED.split("status:\n").next().unwrap().to_string(),
            ),
            (
                "spec changed while kaws was down",
                SETTLED.replace("generation: 2,", "generation: 3,"),
            ),
            (
                "not Ready",
                SETTLED.replace(
                    "status: 'True', reason: Available",
                    "status: 'False', reason: Creating",
                ),
            ),
            (
                "a failure being retried",
                SETTLED.replace(
                    "status: 'True', reason: Synced",
                    "status: 'False', reason: Throttled",
                ),
            ),
            (
                "paused since its last reconcile",
                SETTLED.replace(
                    "name: a,",
                    "name: a, annotations: {kaws.io/paused: 'true'},",
                ),
            ),
            (
                "unpaused since its last reconcile",
                paused.replace("kaws.io/paused: 'true'", "kaws.io/paused: 'false'"),
            ),
            (
                "no finalizer",
                SETTLED.replace("finalizers: [kaws.io/finalizer]", "finalizers: []"),
            ),
            (
                "being deleted",
                SETTLED.replace(
                    "generation: 2,",
                    "generation: 2, deletionTimestamp: '2026-01-01T00:00:00Z',",
                ),
            ),
            (
                "a reconcile requested",
                SETTLED.replace(
                    "name: a,",
                    "name: a, annotations: {kaws.io/reconcile-requested-at: '1'},",
                ),
            ),
        ];
        for (why, yaml) in at_once {
            assert!(!settled(&bucket(&yaml)), "{why}");
        }
        let handled = SETTLED
            .replace(
                "name: a,",
                "name: a, annotations: {kaws.io/reconcile-requested-at: '1'},",
            )
            .replace(
                "observedGeneration: 2",
                "observedGeneration: 2\n  lastHandledReconcileAt: '1'",
            );
        assert!(
            settled(&bucket(&handled)),
            "the requested reconcile was handled"
        );
    }
}
