//! The Bucket's AWS side: S3 calls that observe, create, update and delete a bucket.
//!
//! S3 has no call that returns a bucket's settings, so a full read is 7 (`GetBucketTagging`
//! and one per setting). A steady resync reads the tags alone — they say the bucket is there,
//! still this account's and still kaws' — and takes the settings from the bucket's last full
//! read ([`Remembered`]), made again about every [`DETAILS_EVERY`](crate::core::batch::DETAILS_EVERY) resync periods, after any
//! write by kaws and whenever the tags differ from what that read found. Drift of the tags is
//! corrected at the next resync, drift of a setting within that longer period (about an hour at
//! the default 10 minutes; `kaws.io/reconcile-requested-at` asks for a full read at once).

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_s3::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        get_bucket_cors::{GetBucketCorsError, GetBucketCorsOutput},
        get_bucket_encryption::{GetBucketEncryptionError, GetBucketEncryptionOutput},
        get_bucket_lifecycle_configuration::{
            GetBucketLifecycleConfigurationError, GetBucketLifecycleConfigurationOutput,
        },
        get_bucket_policy::{GetBucketPolicyError, GetBucketPolicyOutput},
        get_bucket_tagging::{GetBucketTaggingError, GetBucketTaggingOutput},
        get_bucket_versioning::{GetBucketVersioningError, GetBucketVersioningOutput},
        get_public_access_block::{GetPublicAccessBlockError, GetPublicAccessBlockOutput},
    },
    types as s3,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::operation::BuildError;

use super::{
    diff::{self, BucketChange, ObservedBucket, bucket_arn},
    types::{
        Bucket, BucketStatus, CorsRule, Encryption, LifecycleRule, PublicAccessBlock, RuleStatus,
        SseAlgorithm, Transition, VersioningStatus,
    },
};
use crate::{
    aws::{CallMetrics, RegionalClients, classify},
    core::{
        batch::Remembered,
        driver::{Connect, Created, DeleteProgress, External, Reads, Target, found_last_time},
        error::{Error, Result},
    },
    metrics::SharedMetrics,
};

/// How many pages of object versions one reconcile deletes before requeueing, so that
/// emptying a huge bucket never holds a worker for long.
const EMPTY_PAGES_PER_RECONCILE: usize = 10;

/// S3 clients, one per region.
pub struct S3 {
    clients: RegionalClients<Client>,
    /// Per (region, bucket name), what the last full read found.
    settings: Remembered<(String, String), Settings>,
    /// The controller's resync period, for objects without `kaws.io/resync-period`.
    resync_period: Duration,
}

impl S3 {
    /// Before any write to bucket `b`: its next read is a full one.
    fn writing(&self, region: &str, b: &str) {
        self.settings.forget(&(region.to_string(), b.to_string()));
    }

    /// `resync_period`: the controller's; `full_read_every`: in resyncs (see [`Remembered`]).
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        resync_period: Duration,
        full_read_every: u32,
    ) -> Self {
        Self {
            clients: RegionalClients::new(sdk, metrics, build_client),
            settings: Remembered::new(full_read_every),
            resync_period,
        }
    }
}

/// A bucket as its last full read found it: its settings, and its tags as a hash (a steady
/// resync reads them again and compares).
#[derive(Clone, Debug)]
struct Settings {
    tags: u64,
    /// With no tags.
    observed: ObservedBucket,
}

impl Settings {
    fn of(observed: &ObservedBucket) -> Self {
        Self {
            tags: tags_hash(&observed.tags),
            observed: ObservedBucket {
                tags: BTreeMap::new(),
                ..observed.clone()
            },
        }
    }
}

fn tags_hash(tags: &BTreeMap<String, String>) -> u64 {
    let mut h = DefaultHasher::new();
    tags.hash(&mut h);
    h.finish()
}

/// What a steady resync's one read (`GetBucketTagging`) found.
#[derive(Debug)]
enum SteadyRead {
    /// The tags the last full read found: the bucket with its remembered settings.
    Unchanged(ObservedBucket),
    /// Other tags: read in full.
    TagsChanged,
    /// An answer about the bucket itself (gone, moved, another account's): `HeadBucket` tells.
    AboutTheBucket,
}

async fn steady_read(s3c: &Client, b: &str, settings: &Settings) -> Result<SteadyRead> {
    let read = s3c.get_bucket_tagging().bucket(b).send().await;
    if about_the_bucket(&read) {
        return Ok(SteadyRead::AboutTheBucket);
    }
    let tags = tag_map(absent_if(
        "GetBucketTagging",
        read,
        &["NoSuchTagSet", "NoSuchTagSetError"],
    )?);
    if tags_hash(&tags) != settings.tags {
        return Ok(SteadyRead::TagsChanged);
    }
    Ok(SteadyRead::Unchanged(ObservedBucket {
        tags,
        ..settings.observed.clone()
    }))
}

fn tag_map(tags: Option<GetBucketTaggingOutput>) -> BTreeMap<String, String> {
    tags.map(|t| {
        t.tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect()
    })
    .unwrap_or_default()
}

fn build_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        // Custom endpoints (moto, MinIO, LocalStack) rarely resolve virtual-hosted names.
        .force_path_style(sdk.endpoint_url().is_some())
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

/// A create call is never retried inside the SDK: a retry after a lost answer would be told the
/// resource exists and could not tell that it created it itself.
fn single_attempt() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

fn built<T>(r: std::result::Result<T, BuildError>) -> Result<T> {
    r.map_err(|e| Error::InvalidSpec(e.to_string()))
}

fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A read whose "not configured" error code means `None`.
fn absent_if<T, E>(
    operation: &str,
    res: std::result::Result<T, SdkError<E, HttpResponse>>,
    absent_codes: &[&str],
) -> Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code().is_some_and(|c| absent_codes.contains(&c)) => Ok(None),
        // The bucket vanished between two reads: look again soon rather than give up.
        Err(e) if e.code() == Some("NoSuchBucket") => Err(Error::AwsTransient {
            operation: operation.to_string(),
            message: "the bucket disappeared while being read".to_string(),
        }),
        Err(e) => Err(classify(operation, &e)),
    }
}

/// Bucket `b` in `region`, `None` if there is none.
///
/// A bucket `known` to be there ([`found_last_time`]) is read without `HeadBucket` first, 7
/// calls instead of 8 per resync or per observe around a write: its configuration reads answer
/// what `HeadBucket` would (a bucket gone: `NoSuchBucket`; in another region: 301; another
/// account's: 403). Any such answer, or a bucket not known to be there (a new object: one
/// `HeadBucket` and its 404 before the create), takes the `HeadBucket` path, which tells those
/// apart.
async fn observe_bucket(
    s3c: &Client,
    b: &str,
    region: &str,
    known: bool,
) -> Result<Option<ObservedBucket>> {
    if known {
        let reads = ConfigurationReads::send(s3c, b).await;
        if !reads.about_the_bucket() {
            // Answered from this region's endpoint, so the bucket is in this region.
            return reads.observed(Some(region.to_string())).map(Some);
        }
    }
    let head = match s3c.head_bucket().bucket(b).send().await {
        Ok(head) => head,
        Err(e) => {
            return match http_status(&e) {
                Some(404) => Ok(None),
                Some(301) => Err(Error::InvalidSpec(format!(
                    "bucket {b:?} exists in another region than {region}"
                ))),
                Some(403) => Err(Error::OwnedByOther {
                    resource: format!("S3 bucket {b:?}"),
                    owner: "another AWS account (S3 bucket names are global)".to_string(),
                }),
                _ => Err(classify("HeadBucket", &e)),
            };
        }
    };
    if let Some(actual) = head.bucket_region()
        && actual != region
    {
        return Err(Error::InvalidSpec(format!(
            "bucket {b:?} exists in region {actual}, not {region}"
        )));
    }
    ConfigurationReads::send(s3c, b)
        .await
        .observed(head.bucket_region().map(str::to_string))
        .map(Some)
}

type Read<O, E> = std::result::Result<O, SdkError<E, HttpResponse>>;

/// Whether a read's answer is about the bucket itself rather than its configuration: the bucket
/// is gone (`NoSuchBucket`), in another region (301, or S3's global endpoint's
/// `AuthorizationHeaderMalformed` naming the region it expected) or not this account's to read
/// (403).
fn about_the_bucket<O, E: ProvideErrorMetadata>(read: &Read<O, E>) -> bool {
    read.as_ref().err().is_some_and(|e| {
        matches!(
            e.code(),
            Some("NoSuchBucket" | "AuthorizationHeaderMalformed")
        ) || matches!(http_status(e), Some(301 | 403))
    })
}

/// A bucket's 7 configuration reads, made at once.
struct ConfigurationReads {
    tags: Read<GetBucketTaggingOutput, GetBucketTaggingError>,
    versioning: Read<GetBucketVersioningOutput, GetBucketVersioningError>,
    encryption: Read<GetBucketEncryptionOutput, GetBucketEncryptionError>,
    pab: Read<GetPublicAccessBlockOutput, GetPublicAccessBlockError>,
    lifecycle: Read<GetBucketLifecycleConfigurationOutput, GetBucketLifecycleConfigurationError>,
    cors: Read<GetBucketCorsOutput, GetBucketCorsError>,
    policy: Read<GetBucketPolicyOutput, GetBucketPolicyError>,
}

impl ConfigurationReads {
    async fn send(s3c: &Client, b: &str) -> Self {
        let (tags, versioning, encryption, pab, lifecycle, cors, policy) = futures::join!(
            s3c.get_bucket_tagging().bucket(b).send(),
            s3c.get_bucket_versioning().bucket(b).send(),
            s3c.get_bucket_encryption().bucket(b).send(),
            s3c.get_public_access_block().bucket(b).send(),
            s3c.get_bucket_lifecycle_configuration().bucket(b).send(),
            s3c.get_bucket_cors().bucket(b).send(),
            s3c.get_bucket_policy().bucket(b).send(),
        );
        Self {
            tags,
            versioning,
            encryption,
            pab,
            lifecycle,
            cors,
            policy,
        }
    }

    fn about_the_bucket(&self) -> bool {
        about_the_bucket(&self.tags)
            || about_the_bucket(&self.versioning)
            || about_the_bucket(&self.encryption)
            || about_the_bucket(&self.pab)
            || about_the_bucket(&self.lifecycle)
            || about_the_bucket(&self.cors)
            || about_the_bucket(&self.policy)
    }

    /// The bucket as these reads show it ("not configured" answers as absent).
    fn observed(self, region: Option<String>) -> Result<ObservedBucket> {
        let tags = absent_if(
            "GetBucketTagging",
            self.tags,
            &["NoSuchTagSet", "NoSuchTagSetError"],
        )?;
        let versioning = absent_if("GetBucketVersioning", self.versioning, &[])?;
        let encryption = absent_if(
            "GetBucketEncryption",
            self.encryption,
            &["ServerSideEncryptionConfigurationNotFoundError"],
        )?;
        let pab = absent_if(
            "GetPublicAccessBlock",
            self.pab,
            &["NoSuchPublicAccessBlockConfiguration"],
        )?;
        let lifecycle = absent_if(
            "GetBucketLifecycleConfiguration",
            self.lifecycle,
            &["NoSuchLifecycleConfiguration"],
        )?;
        let cors = absent_if("GetBucketCors", self.cors, &["NoSuchCORSConfiguration"])?;
        let policy = absent_if("GetBucketPolicy", self.policy, &["NoSuchBucketPolicy"])?;

        Ok(ObservedBucket {
            region,
            tags: tag_map(tags),
            versioning: versioning.and_then(|v| match v.status() {
                Some(s3::BucketVersioningStatus::Enabled) => Some(VersioningStatus::Enabled),
                Some(s3::BucketVersioningStatus::Suspended) => Some(VersioningStatus::Suspended),
                _ => None,
            }),
            encryption: encryption.and_then(|e| {
                let rule = e.server_side_encryption_configuration()?.rules().first()?;
                let default = rule.apply_server_side_encryption_by_default()?;
                Some(Encryption {
                    sse_algorithm: sse_algorithm(default.sse_algorithm()),
                    kms_master_key_id: default.kms_master_key_id().map(str::to_string),
                    bucket_key_enabled: rule.bucket_key_enabled(),
                })
            }),
            public_access_block: pab.and_then(|p| {
                let c = p.public_access_block_configuration()?;
                Some(PublicAccessBlock {
                    block_public_acls: c.block_public_acls().unwrap_or(false),
                    ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
                    block_public_policy: c.block_public_policy().unwrap_or(false),
                    restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
                })
            }),
            lifecycle_rules: lifecycle
                .map(|l| l.rules().iter().map(to_observed_lifecycle).collect())
                .unwrap_or_default(),
            cors_rules: cors
                .map(|c| c.cors_rules().iter().map(to_observed_cors).collect())
                .unwrap_or_default(),
            policy: policy.and_then(|p| p.policy().map(str::to_string)),
        })
    }
}

fn to_observed_lifecycle(rule: &s3::LifecycleRule) -> LifecycleRule {
    #[allow(deprecated)]
    let legacy_prefix = rule.prefix();
    LifecycleRule {
        id: rule.id().unwrap_or_default().to_string(),
        status: if *rule.status() == s3::ExpirationStatus::Disabled {
            RuleStatus::Disabled
        } else {
            RuleStatus::Enabled
        },
        prefix: rule
            .filter()
            .and_then(|f| f.prefix())
            .or(legacy_prefix)
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        expiration_days: rule.expiration().and_then(|e| e.days()),
        noncurrent_version_expiration_days: rule
            .noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days()),
        abort_incomplete_multipart_upload_days: rule
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        transitions: rule
            .transitions()
            .iter()
            .map(|t| Transition {
                days: t.days().unwrap_or_default(),
                storage_class: t
                    .storage_class()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

fn to_s3_lifecycle(rule: &LifecycleRule) -> Result<s3::LifecycleRule> {
    let mut b = s3::LifecycleRule::builder()
        .id(&rule.id)
        .status(match rule.status {
            RuleStatus::Enabled => s3::ExpirationStatus::Enabled,
            RuleStatus::Disabled => s3::ExpirationStatus::Disabled,
        })
        .filter(
            s3::LifecycleRuleFilter::builder()
                .prefix(rule.prefix.clone().unwrap_or_default())
                .build(),
        );
    if let Some(days) = rule.expiration_days {
        b = b.expiration(s3::LifecycleExpiration::builder().days(days).build());
    }
    if let Some(days) = rule.noncurrent_version_expiration_days {
        b = b.noncurrent_version_expiration(
            s3::NoncurrentVersionExpiration::builder()
                .noncurrent_days(days)
                .build(),
        );
    }
    if let Some(days) = rule.abort_incomplete_multipart_upload_days {
        b = b.abort_incomplete_multipart_upload(
            s3::AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(days)
                .build(),
        );
    }
    for t in &rule.transitions {
        b = b.transitions(
            s3::Transition::builder()
                .days(t.days)
                .storage_class(s3::TransitionStorageClass::from(t.storage_class.as_str()))
                .build(),
        );
    }
    built(b.build())
}

fn to_observed_cors(rule: &s3::CorsRule) -> CorsRule {
    CorsRule {
        id: rule.id().map(str::to_string),
        allowed_methods: rule.allowed_methods().to_vec(),
        allowed_origins: rule.allowed_origins().to_vec(),
        allowed_headers: rule.allowed_headers().to_vec(),
        expose_headers: rule.expose_headers().to_vec(),
        max_age_seconds: rule.max_age_seconds(),
    }
}

fn to_s3_cors(rule: &CorsRule) -> Result<s3::CorsRule> {
    built(
        s3::CorsRule::builder()
            .set_id(rule.id.clone())
            .set_allowed_methods(Some(rule.allowed_methods.clone()))
            .set_allowed_origins(Some(rule.allowed_origins.clone()))
            .set_allowed_headers(
                (!rule.allowed_headers.is_empty()).then(|| rule.allowed_headers.clone()),
            )
            .set_expose_headers(
                (!rule.expose_headers.is_empty()).then(|| rule.expose_headers.clone()),
            )
            .set_max_age_seconds(rule.max_age_seconds)
            .build(),
    )
}

fn sse_algorithm(a: &s3::ServerSideEncryption) -> SseAlgorithm {
    match a {
        s3::ServerSideEncryption::AwsKms => SseAlgorithm::AwsKms,
        s3::ServerSideEncryption::AwsKmsDsse => SseAlgorithm::AwsKmsDsse,
        _ => SseAlgorithm::Aes256,
    }
}

fn s3_sse_algorithm(a: SseAlgorithm) -> s3::ServerSideEncryption {
    match a {
        SseAlgorithm::Aes256 => s3::ServerSideEncryption::Aes256,
        SseAlgorithm::AwsKms => s3::ServerSideEncryption::AwsKms,
        SseAlgorithm::AwsKmsDsse => s3::ServerSideEncryption::AwsKmsDsse,
    }
}

impl S3 {
    async fn apply_change(&self, s3c: &Client, bucket: &str, change: &BucketChange) -> Result<()> {
        match change {
            BucketChange::Tags(tags) => {
                let set = tags
                    .iter()
                    .map(|(k, v)| built(s3::Tag::builder().key(k).value(v).build()))
                    .collect::<Result<Vec<_>>>()?;
                s3c.put_bucket_tagging()
                    .bucket(bucket)
                    .tagging(built(
                        s3::Tagging::builder().set_tag_set(Some(set)).build(),
                    )?)
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketTagging", &e))?;
            }
            BucketChange::PublicAccessBlock(p) => {
                s3c.put_public_access_block()
                    .bucket(bucket)
                    .public_access_block_configuration(
                        s3::PublicAccessBlockConfiguration::builder()
                            .block_public_acls(p.block_public_acls)
                            .ignore_public_acls(p.ignore_public_acls)
                            .block_public_policy(p.block_public_policy)
                            .restrict_public_buckets(p.restrict_public_buckets)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| classify("PutPublicAccessBlock", &e))?;
            }
            BucketChange::Encryption(enc) => {
                let default = built(
                    s3::ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(s3_sse_algorithm(enc.sse_algorithm))
                        .set_kms_master_key_id(enc.kms_master_key_id.clone())
                        .build(),
                )?;
                let rule = s3::ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default)
                    .set_bucket_key_enabled(enc.bucket_key_enabled)
                    .build();
                s3c.put_bucket_encryption()
                    .bucket(bucket)
                    .server_side_encryption_configuration(built(
                        s3::ServerSideEncryptionConfiguration::builder()
                            .rules(rule)
                            .build(),
                    )?)
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketEncryption", &e))?;
            }
            BucketChange::Versioning(v) => {
                let status = match v {
                    VersioningStatus::Enabled => s3::BucketVersioningStatus::Enabled,
                    VersioningStatus::Suspended => s3::BucketVersioningStatus::Suspended,
                };
                s3c.put_bucket_versioning()
                    .bucket(bucket)
                    .versioning_configuration(
                        s3::VersioningConfiguration::builder()
                            .status(status)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketVersioning", &e))?;
            }
            BucketChange::LifecycleRules(rules) if rules.is_empty() => {
                s3c.delete_bucket_lifecycle()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteBucketLifecycle", &e))?;
            }
            BucketChange::LifecycleRules(rules) => {
                let rules = rules
                    .iter()
                    .map(to_s3_lifecycle)
                    .collect::<Result<Vec<_>>>()?;
                s3c.put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .lifecycle_configuration(built(
                        s3::BucketLifecycleConfiguration::builder()
                            .set_rules(Some(rules))
                            .build(),
                    )?)
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketLifecycleConfiguration", &e))?;
            }
            BucketChange::CorsRules(rules) if rules.is_empty() => {
                s3c.delete_bucket_cors()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteBucketCors", &e))?;
            }
            BucketChange::CorsRules(rules) => {
                let rules = rules.iter().map(to_s3_cors).collect::<Result<Vec<_>>>()?;
                s3c.put_bucket_cors()
                    .bucket(bucket)
                    .cors_configuration(built(
                        s3::CorsConfiguration::builder()
                            .set_cors_rules(Some(rules))
                            .build(),
                    )?)
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketCors", &e))?;
            }
            BucketChange::Policy(None) => {
                s3c.delete_bucket_policy()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteBucketPolicy", &e))?;
            }
            BucketChange::Policy(Some(policy)) => {
                s3c.put_bucket_policy()
                    .bucket(bucket)
                    .policy(policy)
                    .send()
                    .await
                    .map_err(|e| classify("PutBucketPolicy", &e))?;
            }
        }
        Ok(())
    }

    /// Deletes up to [`EMPTY_PAGES_PER_RECONCILE`] pages of object versions and delete markers.
    /// Returns whether objects remain.
    async fn empty_some(&self, s3c: &Client, bucket: &str) -> Result<bool> {
        for _ in 0..EMPTY_PAGES_PER_RECONCILE {
            let page = s3c
                .list_object_versions()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| classify("ListObjectVersions", &e))?;
            let mut ids = Vec::new();
            for v in page.versions() {
                if let Some(key) = v.key() {
                    ids.push(built(
                        s3::ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(v.version_id().map(str::to_string))
                            .build(),
                    )?);
                }
            }
            for m in page.delete_markers() {
                if let Some(key) = m.key() {
                    ids.push(built(
                        s3::ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(m.version_id().map(str::to_string))
                            .build(),
                    )?);
                }
            }
            if ids.is_empty() {
                return Ok(false);
            }
            let out = s3c
                .delete_objects()
                .bucket(bucket)
                .delete(built(
                    s3::Delete::builder()
                        .set_objects(Some(ids))
                        .quiet(true)
                        .build(),
                )?)
                .send()
                .await
                .map_err(|e| classify("DeleteObjects", &e))?;
            if let Some(failed) = out.errors().first() {
                return Err(Error::AwsTransient {
                    operation: "DeleteObjects".to_string(),
                    message: format!(
                        "{} objects could not be deleted, e.g. {:?}: {}",
                        out.errors().len(),
                        failed.key().unwrap_or_default(),
                        failed.message().unwrap_or_default()
                    ),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl External<Bucket> for S3 {
    type Model = diff::BucketModel;
    const IAM_STATEMENTS: &'static str = "S3";
    const READS_FROM_MEMORY: bool = true;

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            c.sdk.clone(),
            c.metrics.clone(),
            c.resync_period,
            c.full_read_every,
        )
    }

    /// References nothing outside AWS.
    async fn resolve(&self, _obj: &Bucket, _target: &Target) -> Result<()> {
        Ok(())
    }

    async fn observe(
        &self,
        obj: &Bucket,
        target: &Target,
        _resolved: Option<&()>,
        reads: Reads,
    ) -> Result<Option<ObservedBucket>> {
        let s3c = self.clients.get(&target.region);
        let b = &obj.spec.bucket_name;
        let key = (target.region.clone(), b.clone());
        let mut known = found_last_time(obj);
        if reads == Reads::Steady
            && let Some(settings) = self.settings.get(obj, self.resync_period, &key)
        {
            match steady_read(&s3c, b, &settings).await? {
                SteadyRead::Unchanged(observed) => return Ok(Some(observed)),
                SteadyRead::TagsChanged => {}
                SteadyRead::AboutTheBucket => known = false,
            }
        }
        let observed = observe_bucket(&s3c, b, &target.region, known).await?;
        let found = observed.as_ref().map(Settings::of);
        self.settings.full_read(obj, self.resync_period, key, found);
        Ok(observed)
    }

    async fn create(
        &self,
        obj: &Bucket,
        target: &Target,
        _resolved: &mut (),
        tags: &BTreeMap<String, String>,
        status: &mut BucketStatus,
    ) -> Result<Created> {
        let s3c = self.clients.get(&target.region);
        let b = obj.spec.bucket_name.as_str();
        self.writing(&target.region, b);
        let mut config = s3::CreateBucketConfiguration::builder();
        // us-east-1 is the one region S3 wants no location constraint for.
        if target.region != "us-east-1" {
            config = config
                .location_constraint(s3::BucketLocationConstraint::from(target.region.as_str()));
        }
        for (k, v) in tags {
            config = config.tags(built(s3::Tag::builder().key(k).value(v).build())?);
        }
        let created = s3c
            .create_bucket()
            .bucket(b)
            .create_bucket_configuration(config.build())
            .object_ownership(s3::ObjectOwnership::BucketOwnerEnforced)
            .customize()
            .config_override(single_attempt())
            .send()
            .await;
        match created {
            // Outside us-east-1 this is the only answer that proves this call created the bucket;
            // in us-east-1 S3 also answers 200 for a bucket the account already has. Either way
            // nothing else is written now: the owner tags decide on the next observe (an
            // endpoint that drops create-time tags gets them through `tags_change` then).
            Ok(_) => {}
            // Another object (or a create of ours whose answer was lost; the driver keeps the
            // intent for that case) got the name first.
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => return Ok(Created::Existed),
            Err(e) if e.code() == Some("BucketAlreadyExists") => {
                return Err(Error::OwnedByOther {
                    resource: format!("S3 bucket {b:?}"),
                    owner: "another AWS account (S3 bucket names are global)".to_string(),
                });
            }
            Err(e) => return Err(classify("CreateBucket", &e)),
        }
        status.bucket_name = Some(b.to_string());
        status.common.arn = Some(bucket_arn(&target.region, b));
        Ok(Created::New)
    }

    async fn update(
        &self,
        obj: &Bucket,
        target: &Target,
        _observed: &ObservedBucket,
        _resolved: &mut (),
        changes: &[BucketChange],
    ) -> Result<()> {
        let s3c = self.clients.get(&target.region);
        self.writing(&target.region, &obj.spec.bucket_name);
        for change in changes {
            self.apply_change(&s3c, &obj.spec.bucket_name, change)
                .await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        obj: &Bucket,
        target: &Target,
        _observed: &ObservedBucket,
    ) -> Result<DeleteProgress> {
        let s3c = self.clients.get(&target.region);
        let b = obj.spec.bucket_name.as_str();
        self.writing(&target.region, b);
        if obj.spec.force_delete && self.empty_some(&s3c, b).await? {
            return Ok(DeleteProgress::InProgress);
        }
        match s3c.delete_bucket().bucket(b).send().await {
            Ok(_) => Ok(DeleteProgress::Gone),
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(DeleteProgress::Gone),
            Err(e) if e.code() == Some("BucketNotEmpty") => Err(Error::Blocked {
                reason: "BucketNotEmpty",
                message: format!(
                    "S3 bucket {b:?} is not empty; empty it, or set spec.forceDelete: true to delete every object version with it"
                ),
            }),
            Err(e) => Err(classify("DeleteBucket", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_config::retry::RetryConfig;
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    use super::*;
    use crate::aws::test_answers::{response, s3_error};

    /// HeadBucket's answer: a bucket in `region`, or `status` with no body (a HEAD has none).
    fn head_bucket(status: u16, region: &'static str) -> Rule {
        mock!(Client::head_bucket)
            .sequence()
            .http_response(move || response(status, "", &[("x-amz-bucket-region", region)]))
            .repeatedly()
            .build()
    }

    /// The configuration reads of a bucket with an owner tag, versioning on and nothing else
    /// configured; `moved`: every read answers that status and error code instead.
    fn configuration(moved: Option<(u16, &'static str)>) -> Vec<Rule> {
        fn rule<I, O, E>(
            builder: aws_smithy_mocks::RuleBuilder<I, O, E>,
            moved: Option<(u16, &'static str)>,
            status: u16,
            body: &'static str,
        ) -> Rule
        where
            I: Send + Sync + std::fmt::Debug + 'static,
            O: Send + Sync + std::fmt::Debug + 'static,
            E: Send + Sync + std::fmt::Debug + std::error::Error + 'static,
        {
            let (status, body) = match moved {
                Some((status, code)) => (status, code),
                None => (status, body),
            };
            builder
                .sequence()
                .http_response(move || {
                    if body.starts_with('<') {
                        response(status, body, &[])
                    } else {
                        response(status, &s3_error(body), &[])
                    }
                })
                .repeatedly()
                .build()
        }
        vec![
            rule(
                mock!(Client::get_bucket_tagging),
                moved,
                200,
                "<Tagging><TagSet><Tag><Key>kaws.io/owner</Key><Value>c/n/b</Value></Tag></TagSet></Tagging>",
            ),
            rule(
                mock!(Client::get_bucket_versioning),
                moved,
                200,
                "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
            ),
            rule(
                mock!(Client::get_bucket_encryption),
                moved,
                404,
                "ServerSideEncryptionConfigurationNotFoundError",
            ),
            rule(
                mock!(Client::get_public_access_block),
                moved,
                404,
                "NoSuchPublicAccessBlockConfiguration",
            ),
            rule(
                mock!(Client::get_bucket_lifecycle_configuration),
                moved,
                404,
                "NoSuchLifecycleConfiguration",
            ),
            rule(
                mock!(Client::get_bucket_cors),
                moved,
                404,
                "NoSuchCORSConfiguration",
            ),
            rule(
                mock!(Client::get_bucket_policy),
                moved,
                404,
                "NoSuchBucketPolicy",
            ),
        ]
    }

    fn client(rules: &[&Rule]) -> Client {
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
            .retry_config(RetryConfig::disabled()))
    }

    fn calls(rules: &[Rule]) -> usize {
        rules.iter().map(Rule::num_calls).sum()
    }

    async fn observe(head: &Rule, reads: &[Rule], known: bool) -> Result<Option<ObservedBucket>> {
        let mut rules: Vec<&Rule> = reads.iter().collect();
        rules.push(head);
        observe_bucket(&client(&rules), "b", "eu-west-1", known).await
    }

    #[tokio::test]
    async fn a_bucket_known_to_be_there_is_read_with_its_seven_configuration_reads_alone() {
        let (head, reads) = (head_bucket(200, "eu-west-1"), configuration(None));
        let observed = observe(&head, &reads, true)
            .await
            .expect("read")
            .expect("there");
        assert_eq!(head.num_calls(), 0, "no HeadBucket");
        assert_eq!(calls(&reads), 7);
        assert_eq!(observed.region.as_deref(), Some("eu-west-1"));
        assert_eq!(observed.versioning, Some(VersioningStatus::Enabled));
        assert_eq!(
            observed.tags.get("kaws.io/owner").map(String::as_str),
            Some("c/n/b")
        );
        assert_eq!(observed.policy, None);
    }

    #[tokio::test]
    async fn a_steady_resync_reads_the_tags_alone_and_takes_the_settings_from_the_last_full_read() {
        let (head, reads) = (head_bucket(200, "eu-west-1"), configuration(None));
        let full = observe(&head, &reads, true).await.unwrap().unwrap();
        let settings = Settings::of(&full);

        let reads = configuration(None);
        let rules: Vec<&Rule> = reads.iter().collect();
        let SteadyRead::Unchanged(steady) =
            steady_read(&client(&rules), "b", &settings).await.unwrap()
        else {
            panic!("the same tags: served from the full read");
        };
        assert_eq!(calls(&reads), 1, "GetBucketTagging alone");
        assert_eq!(reads[0].num_calls(), 1);
        assert_eq!(
            steady, full,
            "the tags read now, the settings from the full read"
        );

        // Other tags than the full read found (edited, or another bucket under the name).
        let mut other = full.clone();
        other.tags.insert("team".into(), "x".into());
        let read = steady_read(&client(&rules), "b", &Settings::of(&other)).await;
        assert!(matches!(read, Ok(SteadyRead::TagsChanged)), "{read:?}");

        // Gone, moved or another account's: HeadBucket tells which.
        for moved in [
            (404, "NoSuchBucket"),
            (301, "PermanentRedirect"),
            (403, "AccessDenied"),
        ] {
            let reads = configuration(Some(moved));
            let rules: Vec<&Rule> = reads.iter().collect();
            let read = steady_read(&client(&rules), "b", &settings).await;
            assert!(
                matches!(read, Ok(SteadyRead::AboutTheBucket)),
                "{moved:?}: {read:?}"
            );
        }

        // Anything else is the reconcile's error, as for a full read.
        let reads = configuration(Some((503, "SlowDown")));
        let rules: Vec<&Rule> = reads.iter().collect();
        assert!(steady_read(&client(&rules), "b", &settings).await.is_err());
    }

    #[tokio::test]
    async fn a_bucket_not_known_to_be_there_is_checked_with_head_bucket_first() {
        let (head, reads) = (head_bucket(200, "eu-west-1"), configuration(None));
        let observed = observe(&head, &reads, false).await.expect("read");
        assert!(observed.is_some());
        assert_eq!((head.num_calls(), calls(&reads)), (1, 7));

        let (head, reads) = (head_bucket(404, "eu-west-1"), configuration(None));
        assert!(observe(&head, &reads, false).await.expect("read").is_none());
        assert_eq!(
            (head.num_calls(), calls(&reads)),
            (1, 0),
            "none: no more reads"
        );

        let (head, reads) = (head_bucket(200, "us-east-2"), configuration(None));
        let err = observe(&head, &reads, false).await.expect_err("elsewhere");
        assert!(
            matches!(err, Error::InvalidSpec(ref m) if m.contains("us-east-2")),
            "{err}"
        );
        assert_eq!(calls(&reads), 0);
    }

    #[tokio::test]
    async fn a_known_bucket_that_is_gone_elsewhere_or_foreign_is_told_apart_by_head_bucket() {
        // Gone: the reads say NoSuchBucket, HeadBucket 404: none (the driver creates it again).
        let (head, reads) = (
            head_bucket(404, "eu-west-1"),
            configuration(Some((404, "NoSuchBucket"))),
        );
        assert!(observe(&head, &reads, true).await.expect("read").is_none());
        assert_eq!((head.num_calls(), calls(&reads)), (1, 7));

        // In another region now: 301 on the reads and on HeadBucket.
        let (head, reads) = (
            head_bucket(301, "us-east-2"),
            configuration(Some((301, "PermanentRedirect"))),
        );
        let err = observe(&head, &reads, true).await.expect_err("moved");
        assert!(matches!(err, Error::InvalidSpec(_)), "{err}");

        // Signed for the wrong region (S3's global endpoint): HeadBucket is asked, and its
        // answer is the reconcile's.
        let (head, reads) = (
            head_bucket(400, "eu-west-1"),
            configuration(Some((400, "AuthorizationHeaderMalformed"))),
        );
        observe(&head, &reads, true)
            .await
            .expect_err("wrong region");
        assert_eq!(head.num_calls(), 1);

        // Another account's (the name was freed and taken): 403 on the reads and on HeadBucket.
        let (head, reads) = (
            head_bucket(403, "eu-west-1"),
            configuration(Some((403, "AccessDenied"))),
        );
        let err = observe(&head, &reads, true).await.expect_err("foreign");
        assert!(matches!(err, Error::OwnedByOther { .. }), "{err}");
        assert_eq!(head.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_configuration_read_kaws_may_not_make_still_fails_after_head_bucket_says_it_is_there()
    {
        // 403 on the reads, HeadBucket 200: the bucket is ours and there, so the reads are
        // made again after it and their error is the reconcile's (a missing IAM permission).
        let (head, reads) = (
            head_bucket(200, "eu-west-1"),
            configuration(Some((403, "AccessDenied"))),
        );
        let err = observe(&head, &reads, true).await.expect_err("denied");
        assert!(!matches!(err, Error::OwnedByOther { .. }), "{err}");
        assert_eq!((head.num_calls(), calls(&reads)), (1, 14));
    }
}
