//! Pure Function logic: spec validation, the observed shape of a function, and the diff from
//! observed to desired. No AWS or Kubernetes calls, so all of it is tested from YAML fixtures.

use crate::core::ownership::{TagChanges, tag_changes};
use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

use super::types::{CodeSource, FunctionSpec, FunctionStatus};
use crate::core::driver::Change;
use crate::core::secrets::Redacted;

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
    /// The values of `environment.fromSecrets`, read from the Secrets.
    pub secret_variables: BTreeMap<String, Redacted>,
    /// A Secret (name, key) of `environment.fromSecrets` that could not be read.
    pub secret_missing: Option<(String, String)>,
    pub architectures: Vec<String>,
    pub layers: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub tracing_mode: Option<String>,
    pub code_sha256: Option<String>,
    pub code_size: i64,
    pub state: Option<String>,
    pub state_reason: Option<String>,
    pub last_update_status: Option<String>,
    pub revision_id: Option<String>,
    pub last_modified: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The S3 object the spec points at now; `None` for zip code.
    pub source: Option<CodeSource>,
    /// Why the code's S3 object could not be resolved (dependency not ready), if it could not.
    pub source_problem: Option<String>,
}

/// Where the code to deploy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodePlan {
    /// The spec's `zipFile` (decoded when the call is made).
    Zip,
    /// An S3 object, pinned to its version when it has one.
    S3(CodeSource),
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
            },
            FunctionChange::Tags { .. } => "tags",
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
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err(
            "code: set exactly one of zipFile, s3Bucket (with s3Key) or bucketRef (with s3Key)"
                .to_string(),
        );
    }
    if code.zip_file.is_some() {
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
    if !RUNTIMES.contains(&spec.runtime.as_str()) {
        return Err(format!(
            "runtime {:?} is not a Lambda runtime; one of {}",
            spec.runtime,
            RUNTIMES.join(", ")
        ));
    }
    if spec.handler.is_empty() {
        return Err("handler is required for zip packages".to_string());
    }
    if !spec.role.starts_with("arn:") || !spec.role.contains(":role/") {
        return Err(format!("role {:?} is not an IAM role ARN", spec.role));
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
    spec.common.validate_tags()?;
    Ok(())
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
) -> Option<CodePlan> {
    if let Some(bytes) = zip_bytes(spec) {
        return (observed.code_sha256.as_deref() != Some(code_sha256(&bytes).as_str()))
            .then_some(CodePlan::Zip);
    }
    // S3: the object at the key now against the one last deployed (by ETag / version id).
    let source = observed.source.as_ref()?;
    let deployed = status.and_then(|s| s.code_source.as_ref());
    (deployed != Some(source)).then(|| CodePlan::S3(source.clone()))
}

/// The changes that make `observed` match `spec`; an empty list means nothing to do.
pub fn diff(
    spec: &FunctionSpec,
    status: Option<&FunctionStatus>,
    observed: &ObservedFunction,
    desired_tags: &BTreeMap<String, String>,
) -> Vec<FunctionChange> {
    let mut changes = Vec::new();
    let arch_differs =
        !spec.architectures.is_empty() && observed.architectures != spec.architectures;
    match code_change(spec, status, observed) {
        Some(plan) => changes.push(FunctionChange::Code(plan)),
        None if arch_differs => {
            // Architectures are set with the code: deploy the same code again.
            let plan = match &observed.source {
                Some(source) => CodePlan::S3(source.clone()),
                None => CodePlan::Zip,
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
    config(
        observed.runtime.as_deref() != Some(spec.runtime.as_str()),
        ConfigField::Runtime,
    );
    config(
        observed.handler.as_deref() != Some(spec.handler.as_str()),
        ConfigField::Handler,
    );
    config(observed.role != spec.role, ConfigField::Role);
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
        observed.variables != desired_variables(spec, &observed.secret_variables),
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

    if let Some(TagChanges { set, remove }) = tag_changes(desired_tags, &observed.tags) {
        changes.push(FunctionChange::Tags { set, remove });
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
/// reconcile. Tags are not an update and go along with either.
pub fn next_batch(changes: &[FunctionChange]) -> Vec<&FunctionChange> {
    let has_code = changes.iter().any(|c| matches!(c, FunctionChange::Code(_)));
    changes
        .iter()
        .filter(|c| match c {
            FunctionChange::Code(_) | FunctionChange::Tags { .. } => true,
            FunctionChange::Config(_) => !has_code,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::function::Function;

    const ROLE: &str = "arn:aws:iam::123456789012:role/fn";
    // base64 of "zip-v1"
    const ZIP: &str = "emlwLXYx";

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

    fn tags() -> BTreeMap<String, String> {
        [("kaws.io/owner".to_string(), "c/n/f".to_string())].into()
    }

    fn converged(spec: &FunctionSpec) -> ObservedFunction {
        ObservedFunction {
            arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            runtime: Some(spec.runtime.clone()),
            handler: Some(spec.handler.clone()),
            role: spec.role.clone(),
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
                    s.runtime = "cobol85".into();
                    s
                },
                Some("not a Lambda runtime"),
            ),
            (
                "handler missing for zip",
                {
                    let mut s = zip_spec("");
                    s.handler = String::new();
                    s
                },
                Some("handler is required"),
            ),
            (
                "role that is not a role ARN",
                {
                    let mut s = zip_spec("");
                    s.role = "fn-role".into();
                    s
                },
                Some("not an IAM role ARN"),
            ),
            (
                "aws: tags are reserved",
                zip_spec("  tags: {'aws:x': v}\n"),
                Some("reserved"),
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
                "same S3 object as deployed: nothing",
                s3_spec.clone(),
                Some(deployed.clone()),
                ObservedFunction {
                    source: Some(source.clone()),
                    ..converged(&s3_spec)
                },
                vec![],
            ),
            (
                "new object at the same key: code",
                s3_spec.clone(),
                Some(deployed.clone()),
                ObservedFunction {
                    source: Some(CodeSource {
                        etag: Some("\"e2\"".into()),
                        ..source.clone()
                    }),
                    ..converged(&s3_spec)
                },
                vec!["code"],
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
            let got = diff(&spec, status.as_ref(), &observed, &tags());
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn code_goes_before_configuration() {
        let s = zip_spec("  memorySize: 256\n");
        let observed = ObservedFunction {
            code_sha256: Some("old".into()),
            ..converged(&s)
        };
        let changes = diff(&s, None, &observed, &tags());
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
