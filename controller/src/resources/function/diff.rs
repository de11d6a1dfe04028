//! Pure Function logic: spec validation, the observed shape of a function, and the diff from
//! observed to desired. No AWS or Kubernetes calls, so all of it is tested from YAML fixtures.

use crate::core::ownership::{TagChanges, tag_changes};
use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

use super::types::{CodeSource, Environment, Function, FunctionSpec, FunctionStatus};
use crate::core::secrets::Redacted;
use crate::core::{
    driver::{Availability, Change, Model, Target},
    names::reasons,
};

/// Runtimes Lambda accepts for zip packages (current and deprecated-but-updatable ones).
const RUNTIMES: &[&str] = &[
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "java11",
    "java17",
    "java21",
    "java8.al2",
    "dotnet8",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided.al2",
    "provided.al2023",
];

/// The function configuration as Lambda reports it, in spec terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedFunction {
    pub arn: String,
    pub version: Option<String>,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: String,
    pub description: String,
    pub memory_size: Option<i32>,
    pub timeout: Option<i32>,
    pub ephemeral_storage: Option<i32>,
    /// Lambda's environment; values may come from Secrets, hence redacted in `Debug`.
    pub variables: BTreeMap<String, Redacted>,
    pub architectures: Vec<String>,
    pub layers: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub tracing_mode: Option<String>,
    /// Dead-letter target ARN, when one is set.
    pub dead_letter_target: Option<String>,
    /// Reserved concurrency, when the function has a reservation.
    pub reserved_concurrency: Option<i32>,
    /// `Zip` or `Image`.
    pub package_type: Option<String>,
    /// The image URI deployed (image packages).
    pub image_uri: Option<String>,
    pub code_sha256: Option<String>,
    pub code_size: i64,
    pub state: Option<String>,
    pub state_reason: Option<String>,
    pub last_update_status: Option<String>,
    pub revision_id: Option<String>,
    pub last_modified: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// What the spec references outside Lambda, as the resolve step read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// The execution role's ARN: `role`, or the ARN of the Ready Role `roleRef` names.
    pub role: String,
    /// The values of `environment.fromSecrets`, read from the Secrets.
    pub secret_variables: BTreeMap<String, Redacted>,
    /// The S3 object the spec points at now (`s3Bucket` or the Bucket of `bucketRef`, the key,
    /// its ETag and version id); `None` for zip and image code.
    pub source: Option<CodeSource>,
}

/// Where the code to deploy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodePlan {
    /// The spec's `zipFile` (decoded when the call is made).
    Zip,
    /// An S3 object, pinned to its version when it has one.
    S3(CodeSource),
    /// A container image (`imageUri`).
    Image(String),
}

/// One configuration field to send in `UpdateFunctionConfiguration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigField {
    Runtime,
    Handler,
    Role,
    Description,
    MemorySize,
    Timeout,
    EphemeralStorage,
    Environment,
    Layers,
    VpcConfig,
    TracingConfig,
    DeadLetterConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunctionChange {
    /// `UpdateFunctionCode` (architectures go with the code).
    Code(CodePlan),
    /// One field of `UpdateFunctionConfiguration`; all such changes go in one call.
    Config(ConfigField),
    Tags {
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    /// `PutFunctionConcurrency` with the value, or `DeleteFunctionConcurrency` for `None`.
    Concurrency(Option<i32>),
    /// `PublishVersion` of what Lambda reports now: its `RevisionId` (so nothing else is
    /// published) and `LastModified` (recorded as `status.publishedFrom`).
    Publish {
        revision_id: Option<String>,
        last_modified: Option<String>,
    },
}

impl Change for FunctionChange {
    fn field(&self) -> &'static str {
        match self {
            FunctionChange::Code(_) => "code",
            FunctionChange::Config(f) => match f {
                ConfigField::Runtime => "runtime",
                ConfigField::Handler => "handler",
                ConfigField::Role => "role",
                ConfigField::Description => "description",
                ConfigField::MemorySize => "memorySize",
                ConfigField::Timeout => "timeout",
                ConfigField::EphemeralStorage => "ephemeralStorage",
                ConfigField::Environment => "environment",
                ConfigField::Layers => "layers",
                ConfigField::VpcConfig => "vpcConfig",
                ConfigField::TracingConfig => "tracingConfig",
                ConfigField::DeadLetterConfig => "deadLetterConfig",
            },
            FunctionChange::Tags { .. } => "tags",
            FunctionChange::Concurrency(_) => "reservedConcurrentExecutions",
            FunctionChange::Publish { .. } => "version",
        }
    }
}

/// Pure checks the CRD schema cannot express.
pub fn validate(spec: &FunctionSpec) -> Result<(), String> {
    let name = &spec.function_name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "functionName {name:?} must be 1-64 letters, digits, hyphens or underscores"
        ));
    }
    let code = &spec.code;
    let sources = [
        code.zip_file.is_some(),
        code.s3_bucket.is_some(),
        code.bucket_ref.is_some(),
        code.image_uri.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err(
            "code: set exactly one of zipFile, s3Bucket (with s3Key), bucketRef (with s3Key) or imageUri"
                .to_string(),
        );
    }
    if let Some(uri) = &code.image_uri {
        validate_image(spec, uri)?;
    } else if code.zip_file.is_some() {
        if code.s3_key.is_some() || code.s3_object_version.is_some() {
            return Err(
                "code: s3Key and s3ObjectVersion go with s3Bucket or bucketRef, not zipFile"
                    .to_string(),
            );
        }
        if zip_bytes(spec).is_none() {
            return Err("code.zipFile is not valid base64".to_string());
        }
    } else if code.s3_key.as_deref().is_none_or(str::is_empty) {
        return Err("code.s3Key is required with s3Bucket or bucketRef".to_string());
    }
    if code.image_uri.is_none() {
        let runtime = spec.runtime.as_deref().unwrap_or_default();
        if runtime.is_empty() {
            return Err("runtime is required for zip packages".to_string());
        }
        if !RUNTIMES.contains(&runtime) {
            return Err(format!(
                "runtime {runtime:?} is not a Lambda runtime; one of {}",
                RUNTIMES.join(", ")
            ));
        }
        if spec.handler.as_deref().is_none_or(str::is_empty) {
            return Err("handler is required for zip packages".to_string());
        }
    }
    match (&spec.role, &spec.role_ref) {
        (Some(role), None) if !role.starts_with("arn:") || !role.contains(":role/") => {
            return Err(format!("role {role:?} is not an IAM role ARN"));
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err("set exactly one of spec.role and spec.roleRef".to_string());
        }
        _ => {}
    }
    for arch in &spec.architectures {
        if arch != "x86_64" && arch != "arm64" {
            return Err(format!("architectures: {arch:?} is not x86_64 or arm64"));
        }
    }
    if spec.architectures.len() > 1 {
        return Err("architectures: Lambda takes one architecture".to_string());
    }
    if let Some(t) = &spec.tracing_config
        && t.mode != "Active"
        && t.mode != "PassThrough"
    {
        return Err(format!(
            "tracingConfig.mode {:?} is not Active or PassThrough",
            t.mode
        ));
    }
    if let Some(dlc) = &spec.dead_letter_config
        && !dlc.target_arn.is_empty()
        && !(dlc.target_arn.starts_with("arn:")
            && (dlc.target_arn.contains(":sqs:") || dlc.target_arn.contains(":sns:")))
    {
        return Err(format!(
            "deadLetterConfig.targetArn {:?} is not the ARN of an SQS queue or SNS topic",
            dlc.target_arn
        ));
    }
    if spec.reserved_concurrent_executions.is_some_and(|n| n < 0) {
        return Err("reservedConcurrentExecutions must be 0 or more".to_string());
    }
    if let Some(env) = &spec.environment {
        validate_environment(env)?;
    }
    spec.common.validate()?;
    // Last, so a spec with a structural mistake is told about that first.
    if let Some(bytes) = zip_bytes(spec) {
        check_zip(&bytes)?;
    }
    Ok(())
}

/// Variables Lambda sets itself and refuses in a function's configuration (the reserved ones in
/// "Defined runtime environment variables"). Not a prefix rule: `AWS_LAMBDA_EXEC_WRAPPER`,
/// `AWS_XRAY_CONTEXT_MISSING` and `AWS_XRAY_DAEMON_ADDRESS` are documented as settable. `TZ` is
/// in that list too, yet Lambda accepts it and users rely on it, so it is allowed.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Lambda's limit on all environment variable names and values together.
pub const MAX_ENV_BYTES: usize = 4 * 1024;

/// Largest zip Lambda takes in a direct upload (`ZipFile`); bigger packages go through S3.
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;

/// A name Lambda accepts: `[a-zA-Z][a-zA-Z0-9_]+`.
pub const ENV_NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9_]+$";

fn check_env_name(field: &str, name: &str) -> Result<(), String> {
    if RESERVED_ENV.contains(&name) {
        return Err(format!(
            "{field}: {name:?} is reserved by Lambda, which sets it itself"
        ));
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a valid environment variable name: a letter followed by at least one letter, digit or underscore"
        ))
    }
}

/// Names as Lambda accepts them and the inline variables within 4 KB. Values are never quoted:
/// they may be credentials.
fn validate_environment(env: &Environment) -> Result<(), String> {
    for name in env.variables.keys() {
        check_env_name(&format!("spec.environment.variables[{name:?}]"), name)?;
    }
    for (i, s) in env.from_secrets.iter().enumerate() {
        check_env_name(&format!("spec.environment.fromSecrets[{i}].name"), &s.name)?;
    }
    let size: usize = env.variables.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENV_BYTES {
        return Err(format!(
            "spec.environment.variables take {size} bytes; Lambda accepts at most {MAX_ENV_BYTES} (4 KB) for all names and values together"
        ));
    }
    Ok(())
}

/// A deployment package must be a zip archive (a local file header, or the end record of an
/// empty archive) within the direct-upload limit.
pub fn check_zip(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_ZIP_BYTES {
        return Err(format!(
            "spec.code.zipFile is {} bytes; Lambda accepts at most {MAX_ZIP_BYTES} (50 MB) directly: upload the package to S3 and use code.s3Bucket",
            bytes.len()
        ));
    }
    if !(bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")) {
        return Err(
            "spec.code.zipFile is not a zip archive: it must be the base64 encoding of a .zip file"
                .to_string(),
        );
    }
    Ok(())
}

/// Container images: Lambda takes the entry point from the image and refuses a runtime, a
/// handler, S3 fields or layers with it.
fn validate_image(spec: &FunctionSpec, uri: &str) -> Result<(), String> {
    let code = &spec.code;
    if code.s3_key.is_some() || code.s3_object_version.is_some() {
        return Err(
            "code: s3Key and s3ObjectVersion go with s3Bucket or bucketRef, not imageUri"
                .to_string(),
        );
    }
    // <account>.dkr.ecr.<region>.amazonaws.com/<repo>(:<tag>|@sha256:<digest>)
    let (registry, rest) = uri.split_once('/').unwrap_or_default();
    let pinned = rest.contains(':') || rest.contains('@');
    if !registry.contains(".dkr.ecr.") || rest.is_empty() || !pinned {
        return Err(format!(
            "code.imageUri {uri:?} must be an Amazon ECR image with a tag or digest, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1.0"
        ));
    }
    if spec.runtime.is_some() || spec.handler.is_some() {
        return Err(
            "runtime and handler must not be set for a container image (code.imageUri): the image defines them"
                .to_string(),
        );
    }
    if !spec.layers.is_empty() {
        return Err("layers cannot be used with a container image (code.imageUri)".to_string());
    }
    Ok(())
}

/// The package type the spec asks for.
pub fn package_type(spec: &FunctionSpec) -> &'static str {
    if spec.code.image_uri.is_some() {
        "Image"
    } else {
        "Zip"
    }
}

/// Lambda cannot change a function's package type: an existing function of the other type (an
/// adopted one, or the object edited past the CRD's rule) is a terminal spec error.
pub fn package_type_conflict(spec: &FunctionSpec, observed: &ObservedFunction) -> Option<String> {
    let want = package_type(spec);
    let have = observed.package_type.as_deref().unwrap_or("Zip");
    (have != want).then(|| {
        format!(
            "code: the function {:?} has package type {have} and the spec asks for {want}; Lambda cannot switch a function between a zip package and a container image, so delete the function and create it again",
            spec.function_name
        )
    })
}

/// The decoded zip archive, `None` when absent or not base64.
pub fn zip_bytes(spec: &FunctionSpec) -> Option<Vec<u8>> {
    let text: String = spec
        .code
        .zip_file
        .as_deref()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(text).ok()
}

/// Base64 SHA-256 of the bytes, as Lambda reports `CodeSha256`.
pub fn code_sha256(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

/// Whether the deployed code is what the spec asks for.
fn code_change(
    spec: &FunctionSpec,
    status: Option<&FunctionStatus>,
    observed: &ObservedFunction,
    resolved: &Resolved,
) -> Option<CodePlan> {
    if let Some(uri) = &spec.code.image_uri {
        return (observed.image_uri.as_deref() != Some(uri.as_str()))
            .then(|| CodePlan::Image(uri.clone()));
    }
    if let Some(bytes) = zip_bytes(spec) {
        return (observed.code_sha256.as_deref() != Some(code_sha256(&bytes).as_str()))
            .then_some(CodePlan::Zip);
    }
    // S3: the object at the key now against the one last deployed (by ETag / version id).
    let source = resolved.source.as_ref()?;
    let deployed = status.and_then(|s| s.code_source.as_ref());
    (deployed != Some(source)).then(|| CodePlan::S3(source.clone()))
}

/// The changes that make `observed` match `spec`; an empty list means nothing to do.
pub fn diff(
    spec: &FunctionSpec,
    status: Option<&FunctionStatus>,
    observed: &ObservedFunction,
    resolved: &Resolved,
    desired_tags: &BTreeMap<String, String>,
) -> Vec<FunctionChange> {
    let mut changes = Vec::new();
    let arch_differs =
        !spec.architectures.is_empty() && observed.architectures != spec.architectures;
    match code_change(spec, status, observed, resolved) {
        Some(plan) => changes.push(FunctionChange::Code(plan)),
        None if arch_differs => {
            // Architectures are set with the code: deploy the same code again.
            let plan = match (&resolved.source, &spec.code.image_uri) {
                (Some(source), _) => CodePlan::S3(source.clone()),
                (None, Some(uri)) => CodePlan::Image(uri.clone()),
                (None, None) => CodePlan::Zip,
            };
            changes.push(FunctionChange::Code(plan));
        }
        None => {}
    }
    let mut config = |differs: bool, field: ConfigField| {
        if differs {
            changes.push(FunctionChange::Config(field));
        }
    };
    // Images carry their own runtime and entry point: validation keeps both unset for them.
    config(
        spec.runtime.is_some() && observed.runtime != spec.runtime,
        ConfigField::Runtime,
    );
    config(
        spec.handler.is_some() && observed.handler != spec.handler,
        ConfigField::Handler,
    );
    config(observed.role != resolved.role, ConfigField::Role);
    config(
        observed.description != spec.description.clone().unwrap_or_default(),
        ConfigField::Description,
    );
    config(
        spec.memory_size.is_some() && observed.memory_size != spec.memory_size,
        ConfigField::MemorySize,
    );
    config(
        spec.timeout.is_some() && observed.timeout != spec.timeout,
        ConfigField::Timeout,
    );
    config(
        spec.ephemeral_storage.is_some() && observed.ephemeral_storage != spec.ephemeral_storage,
        ConfigField::EphemeralStorage,
    );
    config(
        observed.variables != desired_variables(spec, &resolved.secret_variables),
        ConfigField::Environment,
    );
    config(observed.layers != spec.layers, ConfigField::Layers);
    config(
        spec.vpc_config.as_ref().is_some_and(|v| {
            sorted(&v.subnet_ids) != sorted(&observed.subnet_ids)
                || sorted(&v.security_group_ids) != sorted(&observed.security_group_ids)
        }),
        ConfigField::VpcConfig,
    );
    config(
        spec.tracing_config
            .as_ref()
            .is_some_and(|t| observed.tracing_mode.as_deref() != Some(t.mode.as_str())),
        ConfigField::TracingConfig,
    );
    config(
        spec.dead_letter_config.as_ref().is_some_and(|d| {
            observed.dead_letter_target.as_deref().unwrap_or_default() != d.target_arn
        }),
        ConfigField::DeadLetterConfig,
    );

    if let Some(TagChanges { set, remove }) = tag_changes(desired_tags, &observed.tags) {
        changes.push(FunctionChange::Tags { set, remove });
    }
    if observed.reserved_concurrency != spec.reserved_concurrent_executions {
        changes.push(FunctionChange::Concurrency(
            spec.reserved_concurrent_executions,
        ));
    }
    // Publish what is deployed once code and configuration match, and only when nothing was
    // published yet or kaws changed the code or configuration since (`apply_changes` clears
    // `publishedFrom` then). Lambda's LastModified is not compared: whether publishing moves it
    // is not something to bet a publish loop on, and moto never moves it.
    let updating = changes
        .iter()
        .any(|c| matches!(c, FunctionChange::Code(_) | FunctionChange::Config(_)));
    let published = status.is_some_and(|s| s.published_from.is_some());
    if spec.publish == Some(true) && !updating && !published {
        changes.push(FunctionChange::Publish {
            revision_id: observed.revision_id.clone(),
            last_modified: observed.last_modified.clone(),
        });
    }
    changes
}

/// The environment the function should have: `variables`, then the values read for
/// `fromSecrets` (which win on a name clash).
pub fn desired_variables(
    spec: &FunctionSpec,
    secret_variables: &BTreeMap<String, Redacted>,
) -> BTreeMap<String, Redacted> {
    let mut vars: BTreeMap<String, Redacted> = spec
        .environment
        .iter()
        .flat_map(|e| e.variables.iter())
        .map(|(k, v)| (k.clone(), Redacted(v.clone())))
        .collect();
    vars.extend(secret_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars
}

fn sorted(v: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = v.iter().collect();
    v.sort();
    v
}

/// Lambda takes one update at a time: the code first, then the configuration, each in its own
/// reconcile, then (once both match) the version. Tags and reserved concurrency are not
/// updates of the function's code or configuration and go along with any of them.
pub fn next_batch(changes: &[FunctionChange]) -> Vec<&FunctionChange> {
    let has_code = changes.iter().any(|c| matches!(c, FunctionChange::Code(_)));
    changes
        .iter()
        .filter(|c| match c {
            FunctionChange::Code(_)
            | FunctionChange::Tags { .. }
            | FunctionChange::Concurrency(_)
            | FunctionChange::Publish { .. } => true,
            FunctionChange::Config(_) => !has_code,
        })
        .collect()
}

/// Whether Lambda takes the next update now: not while it creates the function, nor while an
/// update is in progress (it would answer `ResourceConflictException`).
pub fn availability(observed: &ObservedFunction) -> Availability {
    if observed.state.as_deref() == Some("Pending") {
        return Availability::Busy {
            reason: reasons::CREATING.to_string(),
            message: "Lambda is still creating the function".to_string(),
        };
    }
    if observed.last_update_status.as_deref() == Some("InProgress") {
        return Availability::Busy {
            reason: reasons::UPDATING.to_string(),
            message: "Lambda is applying the last update".to_string(),
        };
    }
    Availability::Available
}

/// The pure model of a Function: everything the driver decides without I/O.
pub struct FunctionModel;

impl Model<Function> for FunctionModel {
    type Observed = ObservedFunction;
    type Change = FunctionChange;
    type Resolved = Resolved;

    fn describe(obj: &Function) -> String {
        format!("Lambda function {:?}", obj.spec.function_name)
    }

    fn validate(obj: &Function) -> std::result::Result<(), String> {
        validate(&obj.spec)
    }

    fn observed_tags(observed: &ObservedFunction) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(observed: &ObservedFunction) -> Availability {
        availability(observed)
    }

    fn plan(
        obj: &Function,
        observed: &ObservedFunction,
        resolved: &Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<FunctionChange> {
        diff(&obj.spec, obj.status.as_ref(), observed, resolved, tags)
    }

    /// Lambda takes code and configuration in separate calls, one at a time (see
    /// [`next_batch`]).
    fn next_batch(plan: Vec<FunctionChange>) -> Vec<FunctionChange> {
        next_batch(&plan).into_iter().cloned().collect()
    }

    /// Lambda cannot switch a function between zip and image packages.
    fn conflict(obj: &Function, observed: &ObservedFunction) -> Option<String> {
        package_type_conflict(&obj.spec, observed)
    }

    fn tags_change(
        observed: &ObservedFunction,
        tags: &BTreeMap<String, String>,
    ) -> Option<FunctionChange> {
        tag_changes(tags, &observed.tags)
            .map(|TagChanges { set, remove }| FunctionChange::Tags { set, remove })
    }

    fn fill_status(
        obj: &Function,
        _target: &Target,
        observed: &ObservedFunction,
        status: &mut FunctionStatus,
    ) {
        status.function_name = Some(obj.spec.function_name.clone());
        status.common.arn = Some(observed.arn.clone());
        if obj.spec.publish != Some(true) {
            status.version = observed.version.clone();
            status.published_from = None;
        }
        status.package_type = observed.package_type.clone();
        status.image_uri = observed.image_uri.clone();
        status.reserved_concurrent_executions = observed.reserved_concurrency;
        status.state = observed.state.clone();
        status.state_reason = observed.state_reason.clone();
        status.last_update_status = observed.last_update_status.clone();
        status.code_sha256 = observed.code_sha256.clone();
        status.code_size = Some(observed.code_size);
        status.revision_id = observed.revision_id.clone();
        status.last_modified = observed.last_modified.clone();
        if obj.spec.code.zip_file.is_some() {
            status.code_source = None;
        }
    }

    fn after_update(_obj: &Function, changes: &[FunctionChange], status: &mut FunctionStatus) {
        for change in changes {
            if let FunctionChange::Code(CodePlan::S3(source)) = change {
                status.code_source = Some(source.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::function::Function;

    const ROLE: &str = "arn:aws:iam::123456789012:role/fn";
    // base64 of a zip local file header followed by "zip-v1"
    const ZIP: &str = "UEsDBHppcC12MQ==";

    fn spec(extra: &str) -> FunctionSpec {
        let yaml = format!(
            "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata: {{name: f, namespace: n}}\nspec:\n  functionName: f\n  runtime: python3.12\n  handler: app.handler\n  role: {ROLE}\n{extra}"
        );
        let f: Function = serde_saphyr::from_str(&yaml).expect("fixture parses");
        f.spec
    }

    fn zip_spec(extra: &str) -> FunctionSpec {
        spec(&format!("  code: {{zipFile: {ZIP}}}\n{extra}"))
    }

    const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1.0";

    fn image_spec(uri: &str, extra: &str) -> FunctionSpec {
        let yaml = format!(
            "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata: {{name: f, namespace: n}}\nspec:\n  functionName: f\n  role: {ROLE}\n  code: {{imageUri: '{uri}'}}\n{extra}"
        );
        let f: Function = serde_saphyr::from_str(&yaml).expect("fixture parses");
        f.spec
    }

    fn tags() -> BTreeMap<String, String> {
        [("kaws.io/owner".to_string(), "c/n/f".to_string())].into()
    }

    fn converged(spec: &FunctionSpec) -> ObservedFunction {
        ObservedFunction {
            arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            runtime: spec.runtime.clone(),
            handler: spec.handler.clone(),
            package_type: Some(package_type(spec).into()),
            image_uri: spec.code.image_uri.clone(),
            role: spec.role.clone().unwrap_or_default(),
            memory_size: Some(128),
            timeout: Some(3),
            code_sha256: zip_bytes(spec).map(|b| code_sha256(&b)),
            architectures: vec!["x86_64".into()],
            state: Some("Active".into()),
            last_update_status: Some("Successful".into()),
            tags: tags(),
            ..Default::default()
        }
    }

    fn fields(changes: &[FunctionChange]) -> Vec<&'static str> {
        changes.iter().map(Change::field).collect()
    }

    #[test]
    fn environment_and_package_are_checked_as_lambda_would() {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let big = format!(
            "  environment: {{variables: {{BIG: '{}'}}}}\n",
            "x".repeat(4096)
        );
        let zip_of = |bytes: &[u8]| {
            let mut s = zip_spec("");
            s.code.zip_file = Some(STANDARD.encode(bytes));
            s
        };
        let cases: Vec<(&str, FunctionSpec, Option<&str>)> = vec![
            (
                "ordinary names",
                zip_spec(
                    "  environment: {variables: {LOG_LEVEL: debug, TZ: Europe/Berlin, AWS_LAMBDA_EXEC_WRAPPER: /opt/w}}\n",
                ),
                None,
            ),
            (
                "AWS_REGION is set by Lambda",
                zip_spec("  environment: {variables: {AWS_REGION: eu-west-1}}\n"),
                Some(
                    "spec.environment.variables[\"AWS_REGION\"]: \"AWS_REGION\" is reserved by Lambda",
                ),
            ),
            (
                "credentials are set by Lambda",
                zip_spec("  environment: {variables: {AWS_SECRET_ACCESS_KEY: x}}\n"),
                Some("reserved by Lambda"),
            ),
            (
                "_HANDLER is named as reserved, not as a bad name",
                zip_spec("  environment: {variables: {_HANDLER: x}}\n"),
                Some("reserved by Lambda"),
            ),
            (
                "a name starting with a digit",
                zip_spec("  environment: {variables: {1ST: x}}\n"),
                Some("not a valid environment variable name"),
            ),
            (
                "a name with a hyphen",
                zip_spec("  environment: {variables: {MY-VAR: x}}\n"),
                Some("not a valid environment variable name"),
            ),
            (
                "a one-letter name",
                zip_spec("  environment: {variables: {X: x}}\n"),
                Some("not a valid environment variable name"),
            ),
            (
                "a reserved name from a Secret",
                zip_spec(
                    "  environment: {fromSecrets: [{name: AWS_SESSION_TOKEN, secretKeyRef: {name: s, key: k}}]}\n",
                ),
                Some("spec.environment.fromSecrets[0].name"),
            ),
            (
                "more than 4 KB of variables",
                zip_spec(&big),
                Some("at most 4096"),
            ),
            (
                "a zip file that is not a zip",
                zip_of(b"print('hello')"),
                Some("spec.code.zipFile is not a zip archive"),
            ),
            ("an empty zip archive", zip_of(b"PK\x05\x06\0\0\0\0"), None),
        ];
        for (why, spec, want) in cases {
            let got = validate(&spec);
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(fragment) => {
                    let msg = got.expect_err(why);
                    assert!(msg.contains(fragment), "{why}: {msg}");
                }
            }
        }
    }

    #[test]
    fn an_environment_message_never_quotes_a_value() {
        let spec = zip_spec("  environment: {variables: {AWS_ACCESS_KEY_ID: AKIASECRETCANARY}}\n");
        let msg = validate(&spec).expect_err("reserved");
        assert!(!msg.contains("AKIASECRETCANARY"), "{msg}");
    }

    #[test]
    fn a_package_over_the_direct_upload_limit_is_refused() {
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.resize(MAX_ZIP_BYTES + 1, 0);
        let msg = check_zip(&bytes).expect_err("too big");
        assert!(msg.contains("use code.s3Bucket"), "{msg}");
    }

    #[test]
    fn validation_rejects_what_lambda_would() {
        let cases: Vec<(&str, FunctionSpec, Option<&str>)> = vec![
            ("a zip function is valid", zip_spec(""), None),
            (
                "two code sources",
                spec(&format!(
                    "  code: {{zipFile: {ZIP}, s3Bucket: b, s3Key: k}}\n"
                )),
                Some("exactly one"),
            ),
            ("no code source", spec("  code: {}\n"), Some("exactly one")),
            (
                "s3Bucket without a key",
                spec("  code: {s3Bucket: b}\n"),
                Some("s3Key is required"),
            ),
            (
                "bucketRef with a key is valid",
                spec("  code: {bucketRef: {name: b}, s3Key: k}\n"),
                None,
            ),
            (
                "zip that is not base64",
                spec("  code: {zipFile: '%%%'}\n"),
                Some("base64"),
            ),
            (
                "unknown runtime",
                {
                    let mut s = zip_spec("");
                    s.runtime = Some("cobol85".into());
                    s
                },
                Some("not a Lambda runtime"),
            ),
            (
                "handler missing for zip",
                {
                    let mut s = zip_spec("");
                    s.handler = None;
                    s
                },
                Some("handler is required"),
            ),
            (
                "role that is not a role ARN",
                {
                    let mut s = zip_spec("");
                    s.role = Some("fn-role".into());
                    s
                },
                Some("not an IAM role ARN"),
            ),
            (
                "aws: tags are reserved",
                zip_spec("  tags: {'aws:x': v}\n"),
                Some("reserved"),
            ),
            ("an image is valid", image_spec(IMAGE, ""), None),
            (
                "an image with a runtime",
                {
                    let mut s = image_spec(IMAGE, "");
                    s.runtime = Some("python3.12".into());
                    s
                },
                Some("must not be set for a container image"),
            ),
            (
                "an image and a zip",
                {
                    let mut s = image_spec(IMAGE, "");
                    s.code.zip_file = Some(ZIP.into());
                    s
                },
                Some("exactly one"),
            ),
            (
                "an image without tag or digest",
                image_spec("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", ""),
                Some("with a tag or digest"),
            ),
            (
                "an image outside ECR",
                image_spec("docker.io/library/python:3.12", ""),
                Some("Amazon ECR"),
            ),
            (
                "an image with layers",
                image_spec(IMAGE, "  layers: [arn:aws:lambda:eu-west-1:1:layer:l:1]\n"),
                Some("layers cannot be used"),
            ),
            (
                "runtime missing for zip",
                {
                    let mut s = zip_spec("");
                    s.runtime = None;
                    s
                },
                Some("runtime is required"),
            ),
            (
                "dead-letter target that is a queue",
                zip_spec(
                    "  deadLetterConfig: {targetArn: 'arn:aws:sqs:eu-west-1:123456789012:dlq'}\n",
                ),
                None,
            ),
            (
                "dead-letter target that is neither queue nor topic",
                zip_spec("  deadLetterConfig: {targetArn: 'arn:aws:s3:::bucket'}\n"),
                Some("SQS queue or SNS topic"),
            ),
            (
                "empty dead-letter target removes it",
                zip_spec("  deadLetterConfig: {targetArn: ''}\n"),
                None,
            ),
            (
                "negative reserved concurrency",
                zip_spec("  reservedConcurrentExecutions: -1\n"),
                Some("0 or more"),
            ),
        ];
        for (why, spec, want) in cases {
            match (validate(&spec), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{why}: {e}"),
                (got, want) => panic!("{why}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Why, spec, previous status, what Lambda reports, the fields expected to change.
    type Case = (
        &'static str,
        FunctionSpec,
        Option<FunctionStatus>,
        ObservedFunction,
        Vec<&'static str>,
    );

    #[test]
    fn diff_lists_only_what_differs() {
        let cases: Vec<Case> = vec![
            (
                "converged zip function: nothing",
                zip_spec(""),
                None,
                converged(&zip_spec("")),
                vec![],
            ),
            (
                "new zip: one code change",
                zip_spec(""),
                None,
                ObservedFunction {
                    code_sha256: Some("old".into()),
                    ..converged(&zip_spec(""))
                },
                vec!["code"],
            ),
            (
                "memory and env changed: only those fields",
                zip_spec("  memorySize: 256\n  environment: {variables: {A: b}}\n"),
                None,
                converged(&zip_spec("")),
                vec!["memorySize", "environment"],
            ),
            (
                "unset optional fields are Lambda's business",
                zip_spec(""),
                None,
                ObservedFunction {
                    memory_size: Some(512),
                    timeout: Some(30),
                    ..converged(&zip_spec(""))
                },
                vec![],
            ),
            (
                "same image: nothing (no runtime or handler to compare)",
                image_spec(IMAGE, ""),
                None,
                converged(&image_spec(IMAGE, "")),
                vec![],
            ),
            (
                "new image digest: code",
                image_spec(
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:abc",
                    "",
                ),
                None,
                converged(&image_spec(IMAGE, "")),
                vec!["code"],
            ),
            (
                "dead-letter target differs",
                zip_spec("  deadLetterConfig: {targetArn: 'arn:aws:sqs:eu-west-1:1:dlq'}\n"),
                None,
                ObservedFunction {
                    dead_letter_target: Some("arn:aws:sqs:eu-west-1:1:old".into()),
                    ..converged(&zip_spec(""))
                },
                vec!["deadLetterConfig"],
            ),
            (
                "dead-letter target absent from the spec is not managed",
                zip_spec(""),
                None,
                ObservedFunction {
                    dead_letter_target: Some("arn:aws:sqs:eu-west-1:1:old".into()),
                    ..converged(&zip_spec(""))
                },
                vec![],
            ),
            (
                "empty dead-letter target removes one",
                zip_spec("  deadLetterConfig: {targetArn: ''}\n"),
                None,
                ObservedFunction {
                    dead_letter_target: Some("arn:aws:sqs:eu-west-1:1:old".into()),
                    ..converged(&zip_spec(""))
                },
                vec!["deadLetterConfig"],
            ),
            (
                "reserved concurrency set",
                zip_spec("  reservedConcurrentExecutions: 5\n"),
                None,
                converged(&zip_spec("")),
                vec!["reservedConcurrentExecutions"],
            ),
            (
                "reserved concurrency already as asked: nothing",
                zip_spec("  reservedConcurrentExecutions: 0\n"),
                None,
                ObservedFunction {
                    reserved_concurrency: Some(0),
                    ..converged(&zip_spec(""))
                },
                vec![],
            ),
            (
                "a reservation made outside is removed when the spec sets none",
                zip_spec(""),
                None,
                ObservedFunction {
                    reserved_concurrency: Some(7),
                    ..converged(&zip_spec(""))
                },
                vec!["reservedConcurrentExecutions"],
            ),
            (
                "publish with nothing published yet: a version",
                zip_spec("  publish: true\n"),
                None,
                converged(&zip_spec("")),
                vec!["version"],
            ),
            (
                "publish and nothing changed since the last version: nothing",
                zip_spec("  publish: true\n"),
                Some(FunctionStatus {
                    published_from: Some("t1".into()),
                    ..Default::default()
                }),
                ObservedFunction {
                    last_modified: Some("t1".into()),
                    ..converged(&zip_spec(""))
                },
                vec![],
            ),
            (
                "publish after kaws changed the code or configuration: a version",
                zip_spec("  publish: true\n"),
                Some(FunctionStatus {
                    version: Some("1".into()),
                    published_from: None,
                    ..Default::default()
                }),
                ObservedFunction {
                    last_modified: Some("t2".into()),
                    ..converged(&zip_spec(""))
                },
                vec!["version"],
            ),
            (
                "a change outside to a field the spec leaves alone is not published",
                zip_spec("  publish: true\n"),
                Some(FunctionStatus {
                    published_from: Some("t1".into()),
                    ..Default::default()
                }),
                ObservedFunction {
                    last_modified: Some("t2".into()),
                    memory_size: Some(1024),
                    ..converged(&zip_spec(""))
                },
                vec![],
            ),
            (
                "publish waits until the configuration is applied",
                zip_spec("  publish: true\n  memorySize: 256\n"),
                Some(FunctionStatus {
                    published_from: Some("t1".into()),
                    ..Default::default()
                }),
                ObservedFunction {
                    last_modified: Some("t2".into()),
                    ..converged(&zip_spec(""))
                },
                vec!["memorySize"],
            ),
            (
                "a rogue tag goes, kaws' own stay",
                zip_spec(""),
                None,
                ObservedFunction {
                    tags: {
                        let mut t = tags();
                        t.insert("rogue".into(), "x".into());
                        t.insert("kaws.io/other".into(), "x".into());
                        t
                    },
                    ..converged(&zip_spec(""))
                },
                vec!["tags"],
            ),
        ];
        for (why, spec, status, observed, want) in cases {
            let got = diff(
                &spec,
                status.as_ref(),
                &observed,
                &Resolved {
                    role: ROLE.into(),
                    ..Resolved::default()
                },
                &tags(),
            );
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn s3_code_follows_the_object_the_resolve_step_found() {
        let source = CodeSource {
            bucket: "b".into(),
            key: "k".into(),
            version_id: None,
            etag: Some("\"e1\"".into()),
        };
        let s3_spec = spec("  code: {s3Bucket: b, s3Key: k}\n");
        let deployed = FunctionStatus {
            code_source: Some(source.clone()),
            ..Default::default()
        };
        let at = |source: CodeSource| Resolved {
            role: ROLE.into(),
            source: Some(source),
            ..Default::default()
        };
        let cases: Vec<(&str, Resolved, Vec<&str>)> = vec![
            (
                "same S3 object as deployed: nothing",
                at(source.clone()),
                vec![],
            ),
            (
                "new object at the same key: code",
                at(CodeSource {
                    etag: Some("\"e2\"".into()),
                    ..source.clone()
                }),
                vec!["code"],
            ),
            (
                "a secret variable's value changed: environment",
                Resolved {
                    role: ROLE.into(),
                    secret_variables: [("TOKEN".to_string(), Redacted("new".into()))].into(),
                    source: Some(source.clone()),
                },
                vec!["environment"],
            ),
        ];
        for (why, resolved, want) in cases {
            let got = diff(
                &s3_spec,
                Some(&deployed),
                &converged(&s3_spec),
                &resolved,
                &tags(),
            );
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn switching_between_zip_and_image_is_refused() {
        let zip = zip_spec("");
        let image = image_spec(IMAGE, "");
        assert_eq!(package_type_conflict(&zip, &converged(&zip)), None);
        assert_eq!(package_type_conflict(&image, &converged(&image)), None);
        let err = package_type_conflict(&image, &converged(&zip)).expect("conflict");
        assert!(
            err.contains("package type Zip") && err.contains("cannot switch"),
            "{err}"
        );
        assert!(package_type_conflict(&zip, &converged(&image)).is_some());
    }

    #[test]
    fn code_goes_before_configuration() {
        let s = zip_spec("  memorySize: 256\n");
        let observed = ObservedFunction {
            code_sha256: Some("old".into()),
            ..converged(&s)
        };
        let changes = diff(
            &s,
            None,
            &observed,
            &Resolved {
                role: ROLE.into(),
                ..Resolved::default()
            },
            &tags(),
        );
        assert_eq!(fields(&changes), vec!["code", "memorySize"]);
        let batch: Vec<&str> = next_batch(&changes)
            .into_iter()
            .map(Change::field)
            .collect();
        assert_eq!(
            batch,
            vec!["code"],
            "configuration waits for the next reconcile"
        );
    }
}
