//! The Function's AWS side: Lambda calls that observe, create, update and delete a function, and
//! the S3 HEAD that tells whether a new object sits at the code's key.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_lambda::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    primitives::Blob,
    types as lambda,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use kube::{Api, ResourceExt};

use super::{
    diff::{self, CodePlan, ConfigField, FunctionChange, ObservedFunction},
    types::{CodeSource, Function, FunctionStatus},
};
use crate::{
    aws::{CallMetrics, RegionalClients, classify},
    core::secrets::{self, Redacted},
    core::{
        conditions::is_true,
        driver::{Availability, DeleteProgress, External, Target},
        error::{Error, Result},
        names::{conditions, reasons},
    },
    metrics::SharedMetrics,
    resources::bucket::Bucket,
};

/// Lambda and S3 clients, one per region, and the Kubernetes client that resolves `bucketRef`.
pub struct Lambda {
    lambda: RegionalClients<Client>,
    s3: RegionalClients<aws_sdk_s3::Client>,
    kube: kube::Client,
}

impl Lambda {
    pub fn new(sdk: SdkConfig, metrics: SharedMetrics, kube: kube::Client) -> Self {
        Self {
            lambda: RegionalClients::new(sdk.clone(), metrics.clone(), build_client),
            s3: RegionalClients::new(sdk, metrics, build_s3_client),
            kube,
        }
    }
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

/// Lambda's answer to a role it cannot assume yet. IAM is eventually consistent, so a role created
/// moments ago gets this too: retried with backoff rather than given up on.
fn lambda_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = err.message().unwrap_or_default();
    if err.code() == Some("InvalidParameterValueException") && message.contains("cannot be assumed")
    {
        return Error::AwsTransient {
            operation: operation.to_string(),
            message: message.to_string(),
        };
    }
    // Another update is in progress or the function is being created: the next reconcile waits.
    if err.code() == Some("ResourceConflictException") {
        return Error::AwsTransient {
            operation: operation.to_string(),
            message: message.to_string(),
        };
    }
    classify(operation, err)
}

fn to_observed(
    out: &aws_sdk_lambda::operation::get_function::GetFunctionOutput,
) -> Option<ObservedFunction> {
    let c = out.configuration()?;
    Some(ObservedFunction {
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
        secret_variables: BTreeMap::new(),
        secret_missing: None,
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
        code_sha256: c.code_sha256().map(str::to_string),
        code_size: c.code_size(),
        state: c.state().map(|s| s.as_str().to_string()),
        state_reason: c.state_reason().map(str::to_string),
        last_update_status: c.last_update_status().map(|s| s.as_str().to_string()),
        revision_id: c.revision_id().map(str::to_string),
        last_modified: c.last_modified().map(str::to_string),
        tags: out
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        source: None,
        source_problem: None,
    })
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
        let api: Api<Bucket> = Api::namespaced(self.kube.clone(), &ns);
        let Some(bucket) = api.get_opt(&r.name).await? else {
            return Err(Error::DependencyNotReady(format!(
                "Bucket {:?} referenced by code.bucketRef does not exist",
                r.name
            )));
        };
        let ready = bucket.status.as_ref().is_some_and(|s| {
            s.common.observed_generation == bucket.metadata.generation
                && is_true(&s.common.conditions, conditions::READY)
        });
        if !ready {
            return Err(Error::DependencyNotReady(format!(
                "Bucket {:?} referenced by code.bucketRef is not Ready",
                r.name
            )));
        }
        Ok(Some(bucket.spec.bucket_name.clone()))
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
    type Observed = ObservedFunction;
    type Change = FunctionChange;

    fn describe(&self, obj: &Function) -> String {
        format!("Lambda function {:?}", obj.spec.function_name)
    }

    fn validate(&self, obj: &Function) -> std::result::Result<(), String> {
        diff::validate(&obj.spec)
    }

    async fn observe(&self, obj: &Function, target: &Target) -> Result<Option<ObservedFunction>> {
        let out = self
            .lambda
            .get(&target.region)
            .get_function()
            .function_name(&obj.spec.function_name)
            .send()
            .await;
        let mut observed = match out {
            Ok(out) => match to_observed(&out) {
                Some(o) => o,
                None => return Ok(None),
            },
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(lambda_error("GetFunction", &e)),
        };
        match read_secret_variables(&self.kube, obj).await? {
            Ok(vars) => observed.secret_variables = vars,
            Err(missing) => observed.secret_missing = Some(missing),
        }
        match self.code_source(obj, &target.region).await {
            Ok(source) => observed.source = source,
            Err(Error::DependencyNotReady(message)) => observed.source_problem = Some(message),
            Err(e) => return Err(e),
        }
        Ok(Some(observed))
    }
    fn observed_tags<'a>(&self, observed: &'a ObservedFunction) -> &'a BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(&self, observed: &ObservedFunction) -> Availability {
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

    /// A code source that cannot be resolved (the Bucket is missing or not Ready, the object is
    /// not there) stops the apply path here; deleting never needs it.
    async fn after_observe(
        &self,
        _obj: &Function,
        _target: &Target,
        observed: &ObservedFunction,
    ) -> Result<()> {
        if let Some((name, key)) = &observed.secret_missing {
            return Err(Error::SecretNotFound {
                name: name.clone(),
                key: Some(key.clone()),
            });
        }
        match &observed.source_problem {
            Some(message) => Err(Error::DependencyNotReady(message.clone())),
            None => Ok(()),
        }
    }

    fn diff(
        &self,
        obj: &Function,
        observed: &ObservedFunction,
        tags: &BTreeMap<String, String>,
    ) -> Vec<FunctionChange> {
        let all = diff::diff(&obj.spec, obj.status.as_ref(), observed, tags);
        diff::next_batch(&all).into_iter().cloned().collect()
    }

    async fn create(
        &self,
        obj: &Function,
        target: &Target,
        tags: &BTreeMap<String, String>,
        status: &mut FunctionStatus,
    ) -> Result<()> {
        let spec = &obj.spec;
        let secret_variables = match read_secret_variables(&self.kube, obj).await? {
            Ok(vars) => vars,
            Err((name, key)) => {
                let ns = obj.namespace().unwrap_or_default();
                return Err(secrets::missing(&self.kube, &ns, &name, &key).await);
            }
        };
        let source = self.code_source(obj, &target.region).await?;
        let code = match (&source, diff::zip_bytes(spec)) {
            (Some(s), _) => s3_code(lambda::FunctionCode::builder(), s).build(),
            (None, Some(bytes)) => lambda::FunctionCode::builder()
                .zip_file(Blob::new(bytes))
                .build(),
            (None, None) => return Err(Error::InvalidSpec("code has no source".to_string())),
        };
        let out = self
            .lambda
            .get(&target.region)
            .create_function()
            .function_name(&spec.function_name)
            .runtime(lambda::Runtime::from(spec.runtime.as_str()))
            .handler(&spec.handler)
            .role(&spec.role)
            .code(code)
            .set_description(spec.description.clone())
            .set_memory_size(spec.memory_size)
            .set_timeout(spec.timeout)
            .set_ephemeral_storage(ephemeral_storage(obj)?)
            .environment(environment(obj, &secret_variables))
            .set_architectures(architectures(obj))
            .set_layers((!spec.layers.is_empty()).then(|| spec.layers.clone()))
            .set_vpc_config(vpc_config(obj))
            .set_tracing_config(tracing(obj))
            .set_tags(Some(hash_map(tags)))
            .send()
            .await
            .map_err(|e| lambda_error("CreateFunction", &e))?;
        status.function_name = Some(spec.function_name.clone());
        status.common.arn = out.function_arn().map(str::to_string);
        status.code_sha256 = out.code_sha256().map(str::to_string);
        status.state = out.state().map(|s| s.as_str().to_string());
        status.code_source = source;
        Ok(())
    }

    async fn update(
        &self,
        obj: &Function,
        target: &Target,
        observed: &ObservedFunction,
        changes: &[FunctionChange],
    ) -> Result<()> {
        let c = self.lambda.get(&target.region);
        let name = obj.spec.function_name.as_str();
        for change in changes {
            if let FunctionChange::Tags { set, remove } = change {
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
            };
            req.send()
                .await
                .map_err(|e| lambda_error("UpdateFunctionCode", &e))?;
            return Ok(());
        }
        let fields: Vec<&ConfigField> = changes
            .iter()
            .filter_map(|c| match c {
                FunctionChange::Config(f) => Some(f),
                _ => None,
            })
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        let spec = &obj.spec;
        let mut req = c.update_function_configuration().function_name(name);
        for field in fields {
            req = match field {
                ConfigField::Runtime => req.runtime(lambda::Runtime::from(spec.runtime.as_str())),
                ConfigField::Handler => req.handler(&spec.handler),
                ConfigField::Role => req.role(&spec.role),
                ConfigField::Description => {
                    req.description(spec.description.clone().unwrap_or_default())
                }
                ConfigField::MemorySize => req.set_memory_size(spec.memory_size),
                ConfigField::Timeout => req.set_timeout(spec.timeout),
                ConfigField::EphemeralStorage => req.set_ephemeral_storage(ephemeral_storage(obj)?),
                ConfigField::Environment => {
                    req.environment(environment(obj, &observed.secret_variables))
                }
                ConfigField::Layers => req.set_layers(Some(spec.layers.clone())),
                ConfigField::VpcConfig => req.set_vpc_config(vpc_config(obj)),
                ConfigField::TracingConfig => req.set_tracing_config(tracing(obj)),
            };
        }
        req.send()
            .await
            .map_err(|e| lambda_error("UpdateFunctionConfiguration", &e))?;
        Ok(())
    }

    fn after_update(
        &self,
        _obj: &Function,
        changes: &[FunctionChange],
        status: &mut FunctionStatus,
    ) {
        for change in changes {
            if let FunctionChange::Code(CodePlan::S3(source)) = change {
                status.code_source = Some(source.clone());
            }
        }
    }

    async fn delete(
        &self,
        obj: &Function,
        target: &Target,
        _observed: &ObservedFunction,
    ) -> Result<DeleteProgress> {
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

    fn fill_status(
        &self,
        obj: &Function,
        _target: &Target,
        observed: &ObservedFunction,
        status: &mut FunctionStatus,
    ) {
        status.function_name = Some(obj.spec.function_name.clone());
        status.common.arn = Some(observed.arn.clone());
        status.version = observed.version.clone();
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
}
