//! The Function's AWS side: Lambda calls that observe, create, update and delete a function, and
//! the S3 HEAD that tells whether a new object sits at the code's key.
//!
//! Observation is batched: at a steady-state resync the functions of a region are served from
//! one paged `ListFunctions` (see `core::batch`). The listing lacks tags, the reserved
//! concurrency and an image's URI; those come from the function's last `GetFunction`, read
//! again about every [`DETAILS_EVERY`](batch::DETAILS_EVERY) resync periods (1 hour at the default 10 minutes), after
//! any write by kaws, and whenever the function's `RevisionId` moved. Drift of those three
//! fields is therefore corrected within that longer period; drift of everything else at the
//! next resync.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_lambda::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    primitives::Blob,
    types as lambda,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use kube::ResourceExt;

use super::{
    diff::{self, CodePlan, ConfigField, FunctionChange, ObservedFunction, Resolved},
    types::{CodeSource, Function, FunctionStatus},
};
use crate::{
    aws::{CallMetrics, RegionalClients, classify, describe},
    core::secrets::{self, Redacted},
    core::{
        batch::{self, BatchedView, Remembered},
        driver::{Connect, Created, DeleteProgress, External, Model, Reads, Target},
        error::{Error, Result},
        references,
    },
    metrics::SharedMetrics,
    resources::{bucket::Bucket, role::Role},
};

/// Lambda and S3 clients, one per region, and the Kubernetes client that resolves `bucketRef`.
pub struct Lambda {
    lambda: RegionalClients<Client>,
    s3: RegionalClients<aws_sdk_s3::Client>,
    kube: kube::Client,
    /// The region's functions from one `ListFunctions`, by name.
    index: BatchedView<ObservedFunction>,
    /// What the listing lacks, per (region, function name), from the last `GetFunction`.
    details: Remembered<(String, String), Details>,
    /// The controller's resync period, for objects without `kaws.io/resync-period`.
    resync_period: Duration,
}

/// What `ListFunctions` does not return, as the last `GetFunction` had it.
#[derive(Clone, Debug)]
struct Details {
    revision_id: Option<String>,
    tags: BTreeMap<String, String>,
    reserved_concurrency: Option<i32>,
    image_uri: Option<String>,
}

impl Details {
    fn of(o: &ObservedFunction) -> Self {
        Self {
            revision_id: o.revision_id.clone(),
            tags: o.tags.clone(),
            reserved_concurrency: o.reserved_concurrency,
            image_uri: o.image_uri.clone(),
        }
    }

    /// `listed` completed with these details, if they still describe it.
    fn complete(&self, mut listed: ObservedFunction) -> Option<ObservedFunction> {
        if self.revision_id != listed.revision_id {
            return None;
        }
        listed.tags = self.tags.clone();
        listed.reserved_concurrency = self.reserved_concurrency;
        listed.image_uri = self.image_uri.clone();
        Some(listed)
    }
}

impl Lambda {
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        kube: kube::Client,
        resync_period: Duration,
        full_read_every: u32,
    ) -> Self {
        Self {
            lambda: RegionalClients::new(sdk.clone(), metrics.clone(), build_client),
            s3: RegionalClients::new(sdk, metrics, build_s3_client),
            kube,
            index: BatchedView::default(),
            details: Remembered::new(full_read_every),
            resync_period,
        }
    }

    /// Before any write to function `name`: neither the listing nor the details answer for it
    /// until it was read again.
    fn writing(&self, region: &str, name: &str) {
        self.index.written(name);
        self.details.forget(&(region.to_string(), name.to_string()));
    }

    /// The function from the region's listing and its last details, when both are recent
    /// enough for a steady object.
    async fn batched(
        &self,
        client: &Client,
        obj: &Function,
        region: &str,
    ) -> Result<Option<ObservedFunction>> {
        let name = &obj.spec.function_name;
        let key = (region.to_string(), name.clone());
        let Some(details) = self.details.get(obj, self.resync_period, &key) else {
            return Ok(None);
        };
        let max_age = batch::max_age(obj, self.resync_period);
        let listed = self
            .index
            .get(region, name, max_age, || list_functions(client))
            .await?;
        Ok(listed.and_then(|l| details.complete(l)))
    }
}

/// Every function (`$LATEST`) in the client's region, by name, all pages; without tags,
/// reserved concurrency and image URI, which `ListFunctions` does not return.
async fn list_functions(client: &Client) -> Result<HashMap<String, ObservedFunction>> {
    let mut pages = client
        .list_functions()
        .max_items(50)
        .into_paginator()
        .send();
    let mut out = HashMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| lambda_error("ListFunctions", &e))?;
        for c in page.functions() {
            if let Some(name) = c.function_name() {
                out.insert(name.to_string(), from_configuration(c));
            }
        }
    }
    Ok(out)
}

fn build_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> Client {
    let conf = aws_sdk_lambda::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

fn build_s3_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        // Custom endpoints (moto, MinIO, LocalStack) rarely resolve virtual-hosted names.
        .force_path_style(sdk.endpoint_url().is_some())
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// How long a role Lambda cannot assume is retried before the error becomes terminal. IAM is
/// eventually consistent: a role (or trust policy) created moments ago gets this error too. Two
/// minutes is the propagation allowance Terraform's AWS provider uses for the same error.
pub const ROLE_GRACE: Duration = Duration::from_secs(120);

/// Condition reason of a role Lambda cannot assume.
pub const INVALID_ROLE: &str = "InvalidRole";

/// Lambda's error classes on top of the shared ones: a role it cannot assume (transient for
/// [`ROLE_GRACE`], then terminal) and a function busy with another update (retried on a short
/// fixed cadence).
fn lambda_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let assumable = err
        .message()
        .unwrap_or_default()
        .contains("cannot be assumed");
    if err.code() == Some("InvalidParameterValueException") && assumable {
        return Error::RejectedWithGrace {
            reason: INVALID_ROLE,
            operation: operation.to_string(),
            message: describe(err),
            grace: ROLE_GRACE,
        };
    }
    // Another update is in progress or the function is being created; or (with a RevisionId)
    // the function changed since it was observed. Either way: look again shortly.
    if matches!(
        err.code(),
        Some("ResourceConflictException" | "PreconditionFailedException")
    ) {
        return Error::Busy {
            operation: operation.to_string(),
            message: describe(err),
        };
    }
    classify(operation, err)
}

fn to_observed(
    out: &aws_sdk_lambda::operation::get_function::GetFunctionOutput,
) -> Option<ObservedFunction> {
    let mut observed = from_configuration(out.configuration()?);
    observed.reserved_concurrency = out
        .concurrency()
        .and_then(|c| c.reserved_concurrent_executions());
    observed.image_uri = out.code().and_then(|c| c.image_uri()).map(str::to_string);
    observed.tags = out
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Some(observed)
}

/// The function as its configuration tells it (what `GetFunction` and `ListFunctions` share):
/// no tags, reserved concurrency or image URI.
fn from_configuration(c: &lambda::FunctionConfiguration) -> ObservedFunction {
    ObservedFunction {
        arn: c.function_arn().unwrap_or_default().to_string(),
        version: c.version().map(str::to_string),
        runtime: c.runtime().map(|r| r.as_str().to_string()),
        handler: c.handler().map(str::to_string),
        role: c.role().unwrap_or_default().to_string(),
        description: c.description().unwrap_or_default().to_string(),
        memory_size: c.memory_size(),
        timeout: c.timeout(),
        ephemeral_storage: c.ephemeral_storage().map(|e| e.size()),
        variables: c
            .environment()
            .and_then(|e| e.variables())
            .map(|v| {
                v.iter()
                    .map(|(k, v)| (k.clone(), Redacted(v.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        architectures: c
            .architectures()
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
        layers: c
            .layers()
            .iter()
            .filter_map(|l| l.arn().map(str::to_string))
            .collect(),
        subnet_ids: c
            .vpc_config()
            .map(|v| v.subnet_ids().to_vec())
            .unwrap_or_default(),
        security_group_ids: c
            .vpc_config()
            .map(|v| v.security_group_ids().to_vec())
            .unwrap_or_default(),
        tracing_mode: c
            .tracing_config()
            .and_then(|t| t.mode())
            .map(|m| m.as_str().to_string()),
        dead_letter_target: c
            .dead_letter_config()
            .and_then(|d| d.target_arn())
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        reserved_concurrency: None,
        package_type: c.package_type().map(|p| p.as_str().to_string()),
        image_uri: None,
        code_sha256: c.code_sha256().map(str::to_string),
        code_size: c.code_size(),
        state: c.state().map(|s| s.as_str().to_string()),
        state_reason: c.state_reason().map(str::to_string),
        last_update_status: c.last_update_status().map(|s| s.as_str().to_string()),
        revision_id: c.revision_id().map(str::to_string),
        last_modified: c.last_modified().map(str::to_string),
        tags: BTreeMap::new(),
    }
}

/// `GetFunction`, `None` when the function does not exist. GetFunction reports a concurrency
/// reservation in the same answer; only when a reservation is expected (`confirm_concurrency`:
/// the spec asks for one, or kaws saw one last time) and the answer shows none is
/// `GetFunctionConcurrency` asked too, since a reservation of 0 can be left out. A steady state
/// costs one read.
pub async fn get_function(
    client: &Client,
    name: &str,
    confirm_concurrency: bool,
) -> Result<Option<ObservedFunction>> {
    let out = match client.get_function().function_name(name).send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(lambda_error("GetFunction", &e)),
    };
    let Some(mut observed) = to_observed(&out) else {
        return Ok(None);
    };
    if confirm_concurrency && observed.reserved_concurrency.is_none() {
        observed.reserved_concurrency = client
            .get_function_concurrency()
            .function_name(name)
            .send()
            .await
            .map_err(|e| lambda_error("GetFunctionConcurrency", &e))?
            .reserved_concurrent_executions();
    }
    Ok(Some(observed))
}

impl Lambda {
    /// The S3 bucket the code lives in: `s3Bucket`, or the referenced kaws Bucket once Ready.
    async fn code_bucket(&self, obj: &Function) -> Result<Option<String>> {
        let code = &obj.spec.code;
        if let Some(bucket) = &code.s3_bucket {
            return Ok(Some(bucket.clone()));
        }
        let Some(r) = &code.bucket_ref else {
            return Ok(None);
        };
        let ns = obj.namespace().unwrap_or_default();
        let bucket: Bucket = references::ready(&self.kube, &ns, &r.name, "code.bucketRef").await?;
        Ok(Some(bucket.spec.bucket_name.clone()))
    }

    /// The execution role's ARN: `role`, or that of the Ready Role `roleRef` names.
    async fn role(&self, obj: &Function) -> Result<String> {
        if let Some(role) = &obj.spec.role {
            return Ok(role.clone());
        }
        let Some(r) = &obj.spec.role_ref else {
            return Err(Error::InvalidSpec(
                "set exactly one of spec.role and spec.roleRef".to_string(),
            ));
        };
        let ns = obj.namespace().unwrap_or_default();
        let role: Role = references::ready(&self.kube, &ns, &r.name, "spec.roleRef").await?;
        references::arn_of(&role, "spec.roleRef")
    }

    /// The object at the code's key now (its ETag and version id), `None` for zip code.
    async fn code_source(&self, obj: &Function, region: &str) -> Result<Option<CodeSource>> {
        let Some(bucket) = self.code_bucket(obj).await? else {
            return Ok(None);
        };
        let key = obj.spec.code.s3_key.clone().unwrap_or_default();
        let head = self
            .s3
            .get(region)
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .set_version_id(obj.spec.code.s3_object_version.clone())
            .send()
            .await;
        match head {
            Ok(h) => Ok(Some(CodeSource {
                bucket,
                key,
                version_id: h.version_id().filter(|v| *v != "null").map(str::to_string),
                etag: h.e_tag().map(str::to_string),
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(Error::DependencyNotReady(format!(
                    "the code object s3://{bucket}/{key} does not exist"
                )))
            }
            Err(e) => Err(classify("HeadObject", &e)),
        }
    }
}

fn s3_code(
    b: lambda::builders::FunctionCodeBuilder,
    s: &CodeSource,
) -> lambda::builders::FunctionCodeBuilder {
    b.s3_bucket(&s.bucket)
        .s3_key(&s.key)
        .set_s3_object_version(s.version_id.clone())
}

fn hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn environment(
    obj: &Function,
    secret_variables: &BTreeMap<String, Redacted>,
) -> lambda::Environment {
    let vars = diff::desired_variables(&obj.spec, secret_variables)
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    lambda::Environment::builder()
        .set_variables(Some(vars))
        .build()
}

/// Reads `environment.fromSecrets`; `Err((secret, key))` names the first one missing.
async fn read_secret_variables(
    client: &kube::Client,
    obj: &Function,
) -> Result<std::result::Result<BTreeMap<String, Redacted>, (String, String)>> {
    let ns = obj.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    for entry in obj
        .spec
        .environment
        .iter()
        .flat_map(|e| e.from_secrets.iter())
    {
        let r = &entry.secret_key_ref;
        match secrets::read_key(client, &ns, &r.name, &r.key).await? {
            Some(value) => {
                out.insert(entry.name.clone(), value);
            }
            None => return Ok(Err((r.name.clone(), r.key.clone()))),
        }
    }
    Ok(Ok(out))
}

fn vpc_config(obj: &Function) -> Option<lambda::VpcConfig> {
    obj.spec.vpc_config.as_ref().map(|v| {
        lambda::VpcConfig::builder()
            .set_subnet_ids(Some(v.subnet_ids.clone()))
            .set_security_group_ids(Some(v.security_group_ids.clone()))
            .build()
    })
}

fn ephemeral_storage(obj: &Function) -> Result<Option<lambda::EphemeralStorage>> {
    obj.spec
        .ephemeral_storage
        .map(|size| {
            lambda::EphemeralStorage::builder()
                .size(size)
                .build()
                .map_err(|e| Error::InvalidSpec(e.to_string()))
        })
        .transpose()
}

fn tracing(obj: &Function) -> Option<lambda::TracingConfig> {
    obj.spec.tracing_config.as_ref().map(|t| {
        lambda::TracingConfig::builder()
            .mode(lambda::TracingMode::from(t.mode.as_str()))
            .build()
    })
}

fn dead_letter(obj: &Function) -> Option<lambda::DeadLetterConfig> {
    obj.spec.dead_letter_config.as_ref().map(|d| {
        lambda::DeadLetterConfig::builder()
            .target_arn(&d.target_arn)
            .build()
    })
}

/// Sends one batch of changes (see [`diff::next_batch`]): tags and reserved concurrency, then
/// either `UpdateFunctionCode` or one `UpdateFunctionConfiguration` with only the changed
/// fields, or `PublishVersion`. Returns the version published, if one was.
pub async fn send_changes(
    c: &Client,
    obj: &Function,
    observed: &ObservedFunction,
    resolved: &Resolved,
    changes: &[FunctionChange],
) -> Result<Option<String>> {
    let name = obj.spec.function_name.as_str();
    for change in changes {
        match change {
            FunctionChange::Tags { set, remove } => {
                // Set first: the owner tag must never be missing in between.
                if !set.is_empty() {
                    c.tag_resource()
                        .resource(&observed.arn)
                        .set_tags(Some(hash_map(set)))
                        .send()
                        .await
                        .map_err(|e| lambda_error("TagResource", &e))?;
                }
                if !remove.is_empty() {
                    c.untag_resource()
                        .resource(&observed.arn)
                        .set_tag_keys(Some(remove.clone()))
                        .send()
                        .await
                        .map_err(|e| lambda_error("UntagResource", &e))?;
                }
            }
            FunctionChange::Concurrency(Some(n)) => {
                c.put_function_concurrency()
                    .function_name(name)
                    .reserved_concurrent_executions(*n)
                    .send()
                    .await
                    .map_err(|e| lambda_error("PutFunctionConcurrency", &e))?;
            }
            FunctionChange::Concurrency(None) => {
                c.delete_function_concurrency()
                    .function_name(name)
                    .send()
                    .await
                    .map_err(|e| lambda_error("DeleteFunctionConcurrency", &e))?;
            }
            _ => {}
        }
    }
    if let Some(plan) = changes.iter().find_map(|c| match c {
        FunctionChange::Code(plan) => Some(plan),
        _ => None,
    }) {
        let mut req = c
            .update_function_code()
            .function_name(name)
            .set_architectures(architectures(obj));
        req = match plan {
            CodePlan::Zip => {
                let bytes = diff::zip_bytes(&obj.spec).ok_or_else(|| {
                    Error::InvalidSpec("code.zipFile is not valid base64".to_string())
                })?;
                req.zip_file(Blob::new(bytes))
            }
            CodePlan::S3(s) => req
                .s3_bucket(&s.bucket)
                .s3_key(&s.key)
                .set_s3_object_version(s.version_id.clone()),
            CodePlan::Image(uri) => req.image_uri(uri),
        };
        req.send()
            .await
            .map_err(|e| lambda_error("UpdateFunctionCode", &e))?;
        // The configuration waits: Lambda refuses it until the code update has finished.
        return Ok(None);
    }
    let fields: Vec<&ConfigField> = changes
        .iter()
        .filter_map(|c| match c {
            FunctionChange::Config(f) => Some(f),
            _ => None,
        })
        .collect();
    if !fields.is_empty() {
        let spec = &obj.spec;
        let mut req = c.update_function_configuration().function_name(name);
        for field in fields {
            req = match field {
                ConfigField::Runtime => {
                    req.set_runtime(spec.runtime.as_deref().map(lambda::Runtime::from))
                }
                ConfigField::Handler => req.set_handler(spec.handler.clone()),
                ConfigField::Role => req.role(&resolved.role),
                ConfigField::Description => {
                    req.description(spec.description.clone().unwrap_or_default())
                }
                ConfigField::MemorySize => req.set_memory_size(spec.memory_size),
                ConfigField::Timeout => req.set_timeout(spec.timeout),
                ConfigField::EphemeralStorage => req.set_ephemeral_storage(ephemeral_storage(obj)?),
                ConfigField::Environment => {
                    req.environment(environment(obj, &resolved.secret_variables))
                }
                ConfigField::Layers => req.set_layers(Some(spec.layers.clone())),
                ConfigField::VpcConfig => req.set_vpc_config(vpc_config(obj)),
                ConfigField::TracingConfig => req.set_tracing_config(tracing(obj)),
                ConfigField::DeadLetterConfig => req.set_dead_letter_config(dead_letter(obj)),
            };
        }
        req.send()
            .await
            .map_err(|e| lambda_error("UpdateFunctionConfiguration", &e))?;
        return Ok(None);
    }
    if let Some(revision_id) = changes.iter().find_map(|c| match c {
        FunctionChange::Publish { revision_id, .. } => Some(revision_id),
        _ => None,
    }) {
        // With the RevisionId observed, Lambda publishes exactly what kaws saw, or refuses.
        let out = c
            .publish_version()
            .function_name(name)
            .set_revision_id(revision_id.clone())
            .send()
            .await
            .map_err(|e| lambda_error("PublishVersion", &e))?;
        return Ok(out.version().map(str::to_string));
    }
    Ok(None)
}

fn architectures(obj: &Function) -> Option<Vec<lambda::Architecture>> {
    (!obj.spec.architectures.is_empty()).then(|| {
        obj.spec
            .architectures
            .iter()
            .map(|a| lambda::Architecture::from(a.as_str()))
            .collect()
    })
}

#[async_trait]
impl External<Function> for Lambda {
    type Model = diff::FunctionModel;
    const IAM_STATEMENTS: &'static str = "Lambda";
    const READS_FROM_MEMORY: bool = true;
    // The code object, Secrets and references it resolves and the function it observes are
    // independent reads.
    const OBSERVE_READS_RESOLVED: bool = false;

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            c.sdk.clone(),
            c.metrics.clone(),
            c.client.clone(),
            c.resync_period,
            c.full_read_every,
        )
    }

    /// The values of `environment.fromSecrets` (`SecretNotFound` names the first missing one)
    /// and the code's S3 object: `s3Bucket`, or the referenced Bucket once Ready, and the object
    /// at the key now (`DependencyNotReady` while either is missing).
    async fn resolve(&self, obj: &Function, target: &Target) -> Result<Resolved> {
        let secret_variables = match read_secret_variables(&self.kube, obj).await? {
            Ok(vars) => vars,
            Err((name, key)) => {
                let ns = obj.namespace().unwrap_or_default();
                return Err(secrets::missing(&self.kube, &ns, &name, &key).await);
            }
        };
        let source = self.code_source(obj, &target.region).await?;
        Ok(Resolved {
            role: self.role(obj).await?,
            secret_variables,
            source,
        })
    }

    async fn observe(
        &self,
        obj: &Function,
        target: &Target,
        _resolved: Option<&Resolved>,
        reads: Reads,
    ) -> Result<Option<ObservedFunction>> {
        let confirm_concurrency = obj.spec.reserved_concurrent_executions.is_some()
            || obj
                .status
                .as_ref()
                .is_some_and(|s| s.reserved_concurrent_executions.is_some());
        let client = self.lambda.get(&target.region);
        if reads == Reads::Steady
            && let Some(observed) = self.batched(&client, obj, &target.region).await?
        {
            return Ok(Some(observed));
        }
        let name = &obj.spec.function_name;
        let observed = get_function(&client, name, confirm_concurrency).await?;
        let key = (target.region.clone(), name.clone());
        let found = observed.as_ref().map(Details::of);
        self.details.full_read(obj, self.resync_period, key, found);
        Ok(observed)
    }

    async fn create(
        &self,
        obj: &Function,
        target: &Target,
        resolved: &mut Resolved,
        tags: &BTreeMap<String, String>,
        status: &mut FunctionStatus,
    ) -> Result<Created> {
        self.writing(&target.region, &obj.spec.function_name);
        let spec = &obj.spec;
        let Resolved {
            role,
            secret_variables,
            source,
        } = &*resolved;
        let code = match (source, diff::zip_bytes(spec), &spec.code.image_uri) {
            (Some(s), _, _) => s3_code(lambda::FunctionCode::builder(), s).build(),
            (None, Some(bytes), _) => lambda::FunctionCode::builder()
                .zip_file(Blob::new(bytes))
                .build(),
            (None, None, Some(uri)) => lambda::FunctionCode::builder().image_uri(uri).build(),
            (None, None, None) => {
                return Err(Error::InvalidSpec("code has no source".to_string()));
            }
        };
        let out = self
            .lambda
            .get(&target.region)
            .create_function()
            .function_name(&spec.function_name)
            .package_type(lambda::PackageType::from(diff::package_type(spec)))
            .set_runtime(spec.runtime.as_deref().map(lambda::Runtime::from))
            .set_handler(spec.handler.clone())
            .role(role)
            .code(code)
            .set_description(spec.description.clone())
            .set_memory_size(spec.memory_size)
            .set_timeout(spec.timeout)
            .set_ephemeral_storage(ephemeral_storage(obj)?)
            .environment(environment(obj, secret_variables))
            .set_architectures(architectures(obj))
            .set_layers((!spec.layers.is_empty()).then(|| spec.layers.clone()))
            .set_vpc_config(vpc_config(obj))
            .set_tracing_config(tracing(obj))
            .set_dead_letter_config(dead_letter(obj))
            .set_tags(Some(hash_map(tags)))
            .customize()
            .config_override(
                // Never retried inside the SDK: a retry after a lost answer would be told the
                // function exists and could not tell that it created it itself.
                aws_sdk_lambda::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // CreateFunction's conflict means the name is taken (by another object, or by a
            // create of ours whose answer was lost): the next observe decides whose it is.
            Err(e) if e.code() == Some("ResourceConflictException") => {
                return Ok(Created::Existed);
            }
            Err(e) => return Err(lambda_error("CreateFunction", &e)),
        };
        status.function_name = Some(spec.function_name.clone());
        status.common.arn = out.function_arn().map(str::to_string);
        status.code_sha256 = out.code_sha256().map(str::to_string);
        status.state = out.state().map(|s| s.as_str().to_string());
        status.code_source = source.clone();
        Ok(Created::New)
    }

    async fn update(
        &self,
        obj: &Function,
        target: &Target,
        observed: &ObservedFunction,
        resolved: &mut Resolved,
        changes: &[FunctionChange],
    ) -> Result<()> {
        self.writing(&target.region, &obj.spec.function_name);
        send_changes(
            &self.lambda.get(&target.region),
            obj,
            observed,
            resolved,
            changes,
        )
        .await?;
        Ok(())
    }

    /// `update`, then records in status what it applied: the S3 object deployed, and the
    /// version Lambda published.
    async fn apply_changes(
        &self,
        obj: &Function,
        target: &Target,
        observed: &ObservedFunction,
        resolved: &mut Resolved,
        changes: &[FunctionChange],
        status: &mut FunctionStatus,
    ) -> Result<()> {
        self.writing(&target.region, &obj.spec.function_name);
        let published = send_changes(
            &self.lambda.get(&target.region),
            obj,
            observed,
            resolved,
            changes,
        )
        .await?;
        <Self as External<Function>>::Model::after_update(obj, changes, status);
        // Code or configuration sent: what `version` holds is no longer what runs; the next
        // reconcile that finds them applied publishes a version.
        if changes
            .iter()
            .any(|c| matches!(c, FunctionChange::Code(_) | FunctionChange::Config(_)))
        {
            status.published_from = None;
        }
        if let Some(version) = published {
            status.version = Some(version);
            // Never `None` after a publish: `None` means "not published yet".
            status.published_from = changes.iter().find_map(|c| match c {
                FunctionChange::Publish { last_modified, .. } => {
                    Some(last_modified.clone().unwrap_or_default())
                }
                _ => None,
            });
        }
        Ok(())
    }

    async fn delete(
        &self,
        obj: &Function,
        target: &Target,
        _observed: &ObservedFunction,
    ) -> Result<DeleteProgress> {
        self.writing(&target.region, &obj.spec.function_name);
        match self
            .lambda
            .get(&target.region)
            .delete_function()
            .function_name(&obj.spec.function_name)
            .send()
            .await
        {
            Ok(_) => Ok(DeleteProgress::Gone),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(DeleteProgress::Gone),
            Err(e) => Err(lambda_error("DeleteFunction", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Lambda answers moto cannot give: moto applies every update at once (never
    //! `LastUpdateStatus: InProgress`), never answers `ResourceConflictException`, and drops
    //! `DeadLetterConfig`. Driven through the real Lambda client with canned responses.

    use aws_sdk_lambda::{
        config::retry::RetryConfig,
        operation::{
            get_function::GetFunctionOutput,
            get_function_concurrency::GetFunctionConcurrencyOutput,
            update_function_code::UpdateFunctionCodeOutput,
            update_function_configuration::UpdateFunctionConfigurationOutput,
        },
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::core::driver::Change;
    use crate::{core::driver::Availability, resources::function::diff::availability};

    const ROLE: &str = "arn:aws:iam::123456789012:role/fn";

    fn function(code: &[u8], extra: &str) -> Function {
        use base64::Engine;
        let zip = base64::engine::general_purpose::STANDARD.encode(code);
        serde_saphyr::from_str(&format!(
            "apiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata: {{name: f, namespace: n}}\nspec:\n  functionName: f\n  runtime: python3.12\n  handler: app.handler\n  role: {ROLE}\n  code: {{zipFile: {zip}}}\n{extra}"
        ))
        .expect("fixture parses")
    }

    fn tags() -> BTreeMap<String, String> {
        [("kaws.io/owner".to_string(), "c/n/f".to_string())].into()
    }

    /// What GetFunction answers: the code in the package, memory, LastUpdateStatus and more.
    fn got(
        code: &[u8],
        memory: i32,
        update: &str,
        more: impl FnOnce(
            lambda::builders::FunctionConfigurationBuilder,
        ) -> lambda::builders::FunctionConfigurationBuilder,
    ) -> GetFunctionOutput {
        let c = lambda::FunctionConfiguration::builder()
            .function_name("f")
            .function_arn("arn:aws:lambda:eu-west-1:123456789012:function:f")
            .runtime(lambda::Runtime::Python312)
            .handler("app.handler")
            .role(ROLE)
            .memory_size(memory)
            .code_sha256(diff::code_sha256(code))
            .package_type(lambda::PackageType::Zip)
            .state(lambda::State::Active)
            .last_update_status(lambda::LastUpdateStatus::from(update));
        GetFunctionOutput::builder()
            .configuration(more(c).build())
            .set_tags(Some(hash_map(&tags())))
            .build()
    }

    fn client(rules: &[&aws_smithy_mocks::Rule]) -> Client {
        mock_client!(aws_sdk_lambda, RuleMode::MatchAny, rules, |c| c
            .retry_config(RetryConfig::disabled()))
    }

    /// One reconcile as the driver runs it: observe, wait while Lambda is busy (`None`: the
    /// driver requeues without any write), else diff and send one batch.
    async fn reconcile_once(client: &Client, obj: &Function) -> Result<Option<Vec<&'static str>>> {
        let observed = get_function(
            client,
            "f",
            obj.spec.reserved_concurrent_executions.is_some(),
        )
        .await?
        .expect("the function exists");
        if let Availability::Busy { .. } = availability(&observed) {
            return Ok(None);
        }
        let resolved = Resolved {
            role: ROLE.into(),
            ..Resolved::default()
        };
        let all = diff::diff(
            &obj.spec,
            obj.status.as_ref(),
            &observed,
            &resolved,
            &tags(),
        );
        let batch: Vec<FunctionChange> = diff::next_batch(&all).into_iter().cloned().collect();
        send_changes(client, obj, &observed, &resolved, &batch).await?;
        Ok(Some(batch.iter().map(Change::field).collect()))
    }

    #[tokio::test]
    async fn configuration_waits_until_the_code_update_has_finished() {
        let obj = function(b"v2", "  memorySize: 256\n");
        let get = mock!(Client::get_function)
            .sequence()
            .output(|| got(b"v1", 128, "Successful", |c| c))
            .output(|| got(b"v2", 128, "InProgress", |c| c))
            .times(2)
            .output(|| got(b"v2", 128, "Successful", |c| c))
            .output(|| got(b"v2", 256, "Successful", |c| c))
            .build();
        let code = mock!(Client::update_function_code)
            .then_output(|| UpdateFunctionCodeOutput::builder().build());
        let config = mock!(Client::update_function_configuration)
            .match_requests(|r| r.memory_size() == Some(256) && r.handler().is_none())
            .then_output(|| UpdateFunctionConfigurationOutput::builder().build());
        let client = client(&[&get, &code, &config]);

        let step = reconcile_once(&client, &obj).await.expect("reconcile");
        assert_eq!(step, Some(vec!["code"]), "the code goes first, alone");
        assert_eq!((code.num_calls(), config.num_calls()), (1, 0));
        for _ in 0..2 {
            let step = reconcile_once(&client, &obj).await.expect("reconcile");
            assert_eq!(
                step, None,
                "InProgress: no call at all, the driver polls again"
            );
        }
        assert_eq!(
            (code.num_calls(), config.num_calls()),
            (1, 0),
            "no configuration call while the code update is in progress"
        );
        let step = reconcile_once(&client, &obj).await.expect("reconcile");
        assert_eq!(step, Some(vec!["memorySize"]));
        assert_eq!((code.num_calls(), config.num_calls()), (1, 1));
        let step = reconcile_once(&client, &obj).await.expect("reconcile");
        assert_eq!(step, Some(vec![]), "converged");
        assert_eq!(get.num_calls(), 5);
    }

    fn lambda_error_body(code: &str, message: &str) -> String {
        format!(r#"{{"__type":"{code}","Type":"User","message":"{message}"}}"#)
    }

    async fn config_error(status: u16, code: &str, message: &str) -> Error {
        let obj = function(b"v1", "  memorySize: 256\n");
        let get = mock!(Client::get_function).then_output(|| got(b"v1", 128, "Successful", |c| c));
        let config = mock!(Client::update_function_configuration)
            .sequence()
            .http_status(status, Some(lambda_error_body(code, message)))
            .build();
        let client = client(&[&get, &config]);
        let err = reconcile_once(&client, &obj)
            .await
            .expect_err("Lambda refuses");
        assert_eq!(config.num_calls(), 1, "one attempt, no SDK retry");
        err
    }

    #[tokio::test]
    async fn a_busy_function_is_retried_on_a_short_fixed_cadence() {
        for code in ["ResourceConflictException", "PreconditionFailedException"] {
            let status = if code == "ResourceConflictException" {
                409
            } else {
                412
            };
            let err = config_error(
                status,
                code,
                "An update is in progress for resource: arn:aws:lambda:eu-west-1:123456789012:function:f",
            )
            .await;
            assert_eq!(err.category(), "Busy", "{code}: {err}");
            assert!(!err.is_terminal(), "{code}");
            assert_eq!(
                err.fixed_retry(),
                Some(Duration::from_secs(5)),
                "{code}: fixed, not backoff"
            );
        }
    }

    #[tokio::test]
    async fn a_role_lambda_cannot_assume_is_transient_for_a_grace_period() {
        let err = config_error(
            400,
            "InvalidParameterValueException",
            "The role defined for the function cannot be assumed by Lambda.",
        )
        .await;
        assert_eq!(err.category(), INVALID_ROLE, "{err}");
        assert!(!err.is_terminal());
        assert_eq!(err.grace_period(), Some(ROLE_GRACE));
        assert!(err.to_string().contains("cannot be assumed"), "{err}");

        let other = config_error(
            400,
            "InvalidParameterValueException",
            "Unzipped size must be smaller than 262144000 bytes",
        )
        .await;
        assert!(
            other.is_terminal(),
            "other validation errors stay terminal: {other}"
        );
        assert_eq!(other.grace_period(), None);
    }

    #[tokio::test]
    async fn dead_letter_target_is_sent_alone_and_read_back() {
        let want = "arn:aws:sqs:eu-west-1:123456789012:dlq";
        let obj = function(
            b"v1",
            &format!("  deadLetterConfig: {{targetArn: '{want}'}}\n"),
        );
        let dlc = |arn: &str| lambda::DeadLetterConfig::builder().target_arn(arn).build();
        let get = mock!(Client::get_function)
            .sequence()
            .output(move || {
                got(b"v1", 128, "Successful", |c| {
                    c.dead_letter_config(dlc("arn:aws:sqs:eu-west-1:123456789012:old"))
                })
            })
            .output(move || {
                got(b"v1", 128, "Successful", |c| {
                    c.dead_letter_config(dlc(want))
                })
            })
            .build();
        let config = mock!(Client::update_function_configuration)
            .match_requests(move |r| {
                r.dead_letter_config().and_then(|d| d.target_arn()) == Some(want)
                    && r.memory_size().is_none()
                    && r.environment().is_none()
            })
            .then_output(|| UpdateFunctionConfigurationOutput::builder().build());
        let client = client(&[&get, &config]);
        let step = reconcile_once(&client, &obj).await.expect("reconcile");
        assert_eq!(step, Some(vec!["deadLetterConfig"]));
        assert_eq!(config.num_calls(), 1);
        let step = reconcile_once(&client, &obj).await.expect("reconcile");
        assert_eq!(step, Some(vec![]), "read back from GetFunction: converged");
        assert_eq!(config.num_calls(), 1);
    }

    #[tokio::test]
    async fn concurrency_is_confirmed_with_a_second_read_only_when_get_function_shows_none() {
        let get = mock!(Client::get_function).then_output(|| got(b"v1", 128, "Successful", |c| c));
        let concurrency = mock!(Client::get_function_concurrency).then_output(|| {
            GetFunctionConcurrencyOutput::builder()
                .reserved_concurrent_executions(0)
                .build()
        });
        let client = client(&[&get, &concurrency]);
        let unset = function(b"v1", "");
        assert_eq!(
            reconcile_once(&client, &unset).await.expect("reconcile"),
            Some(vec![])
        );
        assert_eq!(concurrency.num_calls(), 0, "no reservation asked: one read");
        let zero = function(b"v1", "  reservedConcurrentExecutions: 0\n");
        assert_eq!(
            reconcile_once(&client, &zero).await.expect("reconcile"),
            Some(vec![]),
            "a reservation of 0 left out of GetFunction is not rewritten"
        );
        assert_eq!(concurrency.num_calls(), 1);
    }
}
