//! The `Function` API (`lambda.kaws.io/v1alpha1`): what users write and what kaws reports. No AWS
//! here.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    core::{
        api::{CommonSpec, CommonStatus, Regional},
        driver::Dependency,
        references::LocalRef,
    },
    resources::bucket::Bucket,
};

/// A Lambda function managed by kaws. Code changes are deployed: a changed `zipFile`, a new
/// object uploaded at the same S3 key, or a changed `imageUri` triggers `UpdateFunctionCode`.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lambda.kaws.io",
    version = "v1alpha1",
    kind = "Function",
    namespaced,
    status = "FunctionStatus",
    shortname = "lfn",
    category = "aws",
    doc = "A Lambda function managed by kaws",
    printcolumn = r#"{"name":"Function","type":"string","jsonPath":".spec.functionName"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtime"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::core::api::REGION_IMMUTABLE_RULE).message("region is immutable"))]
#[x_kube(validation = Rule::new("has(self.role) != has(self.roleRef)").message("set exactly one of role and roleRef"))]
pub struct FunctionSpec {
    /// Name of the Lambda function: 1-64 letters, digits, hyphens and underscores. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("functionName is immutable"))]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_-]{1,64}$"))]
    pub function_name: String,

    #[serde(flatten)]
    pub common: CommonSpec,

    /// Where the deployment package comes from: exactly one of `zipFile`, `s3Bucket` + `s3Key`,
    /// `bucketRef` + `s3Key` (zip packages) or `imageUri` (a container image). Lambda cannot
    /// switch a function between a zip package and an image, so `imageUri` can be neither added
    /// nor removed after creation.
    #[x_kube(validation = Rule::new("has(self.imageUri) == has(oldSelf.imageUri)").message("code.imageUri cannot be added or removed: Lambda cannot switch a function between a zip package and a container image; create a new function instead"))]
    pub code: FunctionCode,

    /// Runtime identifier, e.g. `python3.12`, `nodejs20.x`, `provided.al2023`. Required for zip
    /// packages; must not be set for container images (`code.imageUri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,

    /// Function entry point in the code, e.g. `index.handler`. Required for zip packages; must
    /// not be set for container images (the image's CMD is the handler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[^\s]+$"))]
    pub handler: Option<String>,

    /// ARN of the IAM role Lambda assumes to run the function. Set this or `roleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-zA-Z-]*:iam::[0-9]{12}:role/[a-zA-Z0-9+=,.@_/-]+$"))]
    pub role: Option<String>,

    /// A kaws `Role` in the same namespace whose ARN Lambda assumes, instead of `role`. The
    /// function waits with `DependencyNotReady` until the Role is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<LocalRef>,

    /// Description of the function, at most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,

    /// Memory in MB, 128-10240. Lambda's default is 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 10240))]
    pub memory_size: Option<i32>,

    /// Timeout in seconds, 1-900. Lambda's default is 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 900))]
    pub timeout: Option<i32>,

    /// Size of `/tmp` in MB, 512-10240.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 512, max = 10240))]
    pub ephemeral_storage: Option<i32>,

    /// Environment variables of the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,

    /// Instruction set: `x86_64` (default) or `arm64`. Applied with the code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub architectures: Vec<String>,

    /// ARNs of layer versions to add to the function's execution environment, at most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub layers: Vec<String>,

    /// Subnets and security groups to run the function in a VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<VpcConfig>,

    /// X-Ray tracing: `Active` or `PassThrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_config: Option<TracingConfig>,

    /// Where Lambda sends events of asynchronous invocations that failed: an SQS queue or SNS
    /// topic. Absent = not managed; `targetArn: ""` removes the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_config: Option<DeadLetterConfig>,

    /// Concurrent executions reserved for this function (`PutFunctionConcurrency`); `0` stops
    /// all invocations. Absent = no reservation: one set outside kaws is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub reserved_concurrent_executions: Option<i32>,

    /// Publish an immutable version after each code or configuration change (`PublishVersion`);
    /// `status.version` is the latest published version. Nothing is published when nothing
    /// changed. Default `false`: only `$LATEST` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
}

/// Dead-letter target of asynchronous invocations.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterConfig {
    /// ARN of an SQS queue or SNS topic; empty removes the dead-letter target.
    pub target_arn: String,
}

/// The deployment package. Exactly one source.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCode {
    /// The zip archive, base64-encoded (at most 50 MB decoded; bigger packages go through S3). A
    /// change is deployed when its SHA-256 differs from the function's `CodeSha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip_file: Option<String>,
    /// S3 bucket holding the zip archive (in the function's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    /// A kaws `Bucket` in the same namespace holding the zip archive. The function waits with
    /// `Ready=False` reason `DependencyNotReady` until that Bucket is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_ref: Option<BucketRef>,
    /// Key of the zip archive in the bucket. A new object uploaded at this key (its ETag or
    /// version id changes) is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    /// Pin one version of the object (versioned buckets). Without it the latest version is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_object_version: Option<String>,
    /// URI of a container image in Amazon ECR (`PackageType: Image`), by tag
    /// (`<repo>:<tag>`) or digest (`<repo>@sha256:<digest>`). A changed URI is deployed; pin a
    /// digest (or change the tag) to roll out a new image, since a tag pushed again is not
    /// noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
}

/// Reference to a kaws `Bucket` in the same namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct BucketRef {
    /// `metadata.name` of the Bucket object (not the S3 bucket name).
    pub name: String,
}

/// Environment of the function.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Variables set in the function's environment. Names are a letter followed by letters,
    /// digits and underscores; the names Lambda sets itself (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `_HANDLER`, `LAMBDA_TASK_ROOT` …) are refused; names and values together at most 4 KB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Variables whose values come from keys of Secrets in the same namespace, read at every
    /// reconcile (and when the Secret changes). The values go to Lambda only: never into status,
    /// Events or logs. A name here wins over the same name in `variables`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_secrets: Vec<EnvFromSecret>,
}

/// One environment variable read from a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSecret {
    /// Name of the environment variable: a letter followed by letters, digits and underscores.
    #[schemars(regex(pattern = "^[a-zA-Z][a-zA-Z0-9_]+$"))]
    pub name: String,
    /// The Secret key holding the value.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// VPC placement of the function.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VpcConfig {
    /// Subnet ids, at most 16.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub subnet_ids: Vec<String>,
    /// Security group ids, at most 5.
    #[serde(default)]
    #[schemars(length(max = 5))]
    pub security_group_ids: Vec<String>,
}

/// X-Ray tracing mode.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TracingConfig {
    /// `Active` samples and traces incoming requests; `PassThrough` only traces when the caller
    /// did.
    pub mode: String,
}

/// The S3 object the deployed code came from.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CodeSource {
    /// S3 bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Object version id, when the bucket is versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Object ETag when it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// What kaws last saw in Lambda.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the function in Lambda.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_name: Option<String>,
    /// With `publish: true`, the latest version kaws published; otherwise `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The function's `lastModified` when `version` was published. Cleared when kaws changes the
    /// code or configuration: absent means a version is still to be published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_from: Option<String>,
    /// `Zip` or `Image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_type: Option<String>,
    /// The container image deployed (image packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    /// Concurrent executions reserved for the function, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrent_executions: Option<i32>,
    /// `Pending`, `Active`, `Inactive` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the function is in its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// `Successful`, `Failed` or `InProgress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_status: Option<String>,
    /// Base64 SHA-256 of the deployed package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    /// Size of the deployed package in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_size: Option<i64>,
    /// Revision of the function's configuration and code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    /// When the function was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The S3 object the deployed code came from (S3 sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_source: Option<CodeSource>,
}

impl crate::core::driver::ManagedObject for Function {
    type Status = FunctionStatus;
    const KIND: &'static str = "Function";
    type Placement = Regional;

    fn common_spec(&self) -> &CommonSpec {
        &self.spec.common
    }
    fn status(&self) -> Option<&FunctionStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &FunctionStatus) -> &CommonStatus {
        &status.common
    }
    fn common_status_mut(status: &mut FunctionStatus) -> &mut CommonStatus {
        &mut status.common
    }
    const WATCHES_SECRETS: bool = true;

    fn referenced_secrets(&self) -> Vec<String> {
        self.spec
            .environment
            .iter()
            .flat_map(|e| e.from_secrets.iter().map(|s| s.secret_key_ref.name.clone()))
            .collect()
    }
    fn dependencies() -> Vec<Dependency<Self>> {
        vec![
            Dependency::on::<Bucket>(|f| {
                f.spec
                    .code
                    .bucket_ref
                    .iter()
                    .map(|r| r.name.clone())
                    .collect()
            }),
            Dependency::on::<crate::resources::role::Role>(|f| {
                f.spec.role_ref.iter().map(|r| r.name.clone()).collect()
            }),
        ]
    }
}
