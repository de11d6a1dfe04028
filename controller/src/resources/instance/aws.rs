//! The Instance's AWS side: EC2 calls that observe, launch, change and terminate instances.
//!
//! Observation is batched: at a steady-state resync every Instance object of a region is served
//! from one paged `DescribeInstances` filtered by this cluster's owner tag, taken at most once
//! per snapshot lifetime, instead of one call per object. Objects in flux (just created or
//! changed, being deleted, not Ready) are described individually so they never act on a stale
//! view.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types as ec2,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use base64::Engine;
use kube::{Resource, ResourceExt};

use super::{
    diff::{self, InstanceChange, ObservedInstance, Resolved, USER_DATA_TAG, state},
    types::{ADOPT_INSTANCE_ID, IamInstanceProfile, Instance, InstanceStatus},
};
use crate::{
    aws::{self, CallMetrics, RegionalClients, classify},
    core::{
        batch::{self, BatchedView},
        driver::{Connect, Created, DeleteProgress, External, Reads, Target},
        error::{Error, Result},
        names::tags,
        references,
        secrets::{self, Redacted},
    },
    metrics::SharedMetrics,
    resources::instanceprofile::InstanceProfile,
};

/// EC2 clients per region, the batched instance index and the Kubernetes client that reads
/// `userDataSecretRef`.
pub struct Ec2 {
    ec2: RegionalClients<Client>,
    kube: kube::Client,
    /// This cluster's instances per region, from one `DescribeInstances` filtered by the owner
    /// tag.
    index: BatchedView<ObservedInstance>,
    /// `tag:kaws.io/owner` filter value matching every object of this cluster.
    owner_filter: String,
    /// Instance types and AMIs already looked up, per region.
    lookups: Lookups,
    /// The controller's resync period, for objects without `kaws.io/resync-period`.
    resync_period: Duration,
}

impl Ec2 {
    /// `resync_period` (or an object's `kaws.io/resync-period`) sizes the batch: see
    /// [`max_snapshot_age`].
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        kube: kube::Client,
        cluster_id: &str,
        resync_period: Duration,
    ) -> Self {
        Self {
            ec2: RegionalClients::new(sdk, metrics, build_client),
            kube,
            index: BatchedView::default(),
            owner_filter: format!("{cluster_id}/*"),
            lookups: Lookups::default(),
            resync_period,
        }
    }
}

fn build_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> Client {
    let conf = aws_sdk_ec2::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

/// EC2 errors that heal by themselves: a state race (start while stopping) and the short
/// eventual consistency after `RunInstances`.
fn ec2_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some("IncorrectInstanceState" | "InvalidInstanceID.NotFound") => Error::AwsTransient {
            operation: operation.to_string(),
            message: aws::describe(err),
        },
        _ => classify(operation, err),
    }
}

fn not_found<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    matches!(
        err.code(),
        Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed")
    )
}

type DescribeBuilder =
    aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder;

/// Every instance a `DescribeInstances` request returns, all pages.
async fn describe(
    client: &Client,
    request: impl FnOnce(DescribeBuilder) -> DescribeBuilder,
) -> Result<Vec<ObservedInstance>> {
    let mut pages = request(client.describe_instances())
        .max_results(1000)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ec2_error("DescribeInstances", &e))?;
        for r in page.reservations() {
            for i in r.instances() {
                if let Some(o) = to_observed(i, r.owner_id()) {
                    out.push(o);
                }
            }
        }
    }
    Ok(out)
}

/// One instance by id; `None` when EC2 does not know it (any more).
async fn describe_one(client: &Client, id: &str) -> Result<Option<ObservedInstance>> {
    let out = client.describe_instances().instance_ids(id).send().await;
    match out {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().map(move |i| (r, i)))
            .find_map(|(r, i)| to_observed(i, r.owner_id()))),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(ec2_error("DescribeInstances", &e)),
    }
}

fn to_observed(i: &ec2::Instance, owner: Option<&str>) -> Option<ObservedInstance> {
    let id = i.instance_id()?.to_string();
    let metadata = i.metadata_options().map(|m| {
        diff::metadata_options(
            m.http_tokens().map(|t| t.as_str()),
            m.http_put_response_hop_limit(),
            m.http_endpoint().map(|e| e.as_str()),
            m.instance_metadata_tags().map(|t| t.as_str()),
        )
    });
    Some(ObservedInstance {
        instance_id: id,
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        subnet_id: i.subnet_id().filter(|s| !s.is_empty()).map(str::to_string),
        vpc_id: i.vpc_id().filter(|s| !s.is_empty()).map(str::to_string),
        key_name: i.key_name().filter(|s| !s.is_empty()).map(str::to_string),
        security_group_ids: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        iam_instance_profile_arn: i
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .map(str::to_string),
        monitoring: i.monitoring().and_then(|m| m.state()).is_some_and(|s| {
            matches!(
                s,
                ec2::MonitoringState::Enabled | ec2::MonitoringState::Pending
            )
        }),
        ebs_optimized: i.ebs_optimized().unwrap_or(false),
        metadata_options: metadata,
        disable_api_termination: None,
        tags: i
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
        volume_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_string))
            .collect(),
        private_ip_address: i.private_ip_address().map(str::to_string),
        public_ip_address: i.public_ip_address().map(str::to_string),
        private_dns_name: i
            .private_dns_name()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        public_dns_name: i
            .public_dns_name()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        launch_time: i.launch_time().map(|t| t.to_string()),
        architecture: i.architecture().map(|a| a.as_str().to_string()),
        owner_account: owner.map(str::to_string),
        wanted_user_data_hash: None,
    })
}

impl Ec2 {
    /// Every instance of this cluster in the client's region, by instance id.
    async fn owned_instances(&self, client: &Client) -> Result<HashMap<String, ObservedInstance>> {
        let filter = ec2::Filter::builder()
            .name(format!("tag:{}", tags::OWNER))
            .values(&self.owner_filter)
            .build();
        Ok(describe(client, |r| r.filters(filter))
            .await?
            .into_iter()
            .map(|i| (i.instance_id.clone(), i))
            .collect())
    }

    /// The user data the spec asks for: inline, or read from the Secret.
    /// The instance profile to use: as the spec names it, or the ARN of the Ready
    /// `InstanceProfile` its `ref` names.
    async fn profile(&self, obj: &Instance) -> Result<Option<IamInstanceProfile>> {
        let Some(p) = &obj.spec.iam_instance_profile else {
            return Ok(None);
        };
        let Some(r) = &p.reference else {
            return Ok(Some(p.clone()));
        };
        let ns = obj.namespace().unwrap_or_default();
        let profile: InstanceProfile =
            references::ready(&self.kube, &ns, &r.name, "spec.iamInstanceProfile.ref").await?;
        Ok(Some(IamInstanceProfile {
            arn: Some(references::arn_of(&profile, "spec.iamInstanceProfile.ref")?),
            ..IamInstanceProfile::default()
        }))
    }

    async fn user_data(&self, obj: &Instance) -> Result<Option<Redacted>> {
        if let Some(data) = &obj.spec.user_data {
            return Ok(Some(Redacted(data.clone())));
        }
        let Some(r) = &obj.spec.user_data_secret_ref else {
            return Ok(None);
        };
        let ns = obj.namespace().unwrap_or_default();
        match secrets::read_key(&self.kube, &ns, &r.name, &r.key).await? {
            Some(v) => {
                let field = format!(
                    "spec.userDataSecretRef (Secret {:?}, key {:?})",
                    r.name, r.key
                );
                diff::check_user_data_size(&field, &v.0).map_err(Error::InvalidSpec)?;
                Ok(Some(v))
            }
            None => Err(secrets::missing(&self.kube, &ns, &r.name, &r.key).await),
        }
    }

    /// Adds what a batched `DescribeInstances` leaves out, for objects in flux: termination
    /// protection (one call per instance).
    async fn complete(&self, client: &Client, observed: &mut ObservedInstance) -> Result<()> {
        if observed.is(state::TERMINATED) || observed.is(state::SHUTTING_DOWN) {
            return Ok(());
        }
        observed.disable_api_termination =
            Some(termination_protection(client, &observed.instance_id).await?);
        Ok(())
    }

    /// A live instance carrying this object's UID tag: one launched before kaws could record
    /// its id (a crash, or a lost status write).
    async fn find_by_uid(&self, client: &Client, uid: &str) -> Result<Option<ObservedInstance>> {
        let filter = ec2::Filter::builder()
            .name(format!("tag:{}", tags::UID))
            .values(uid)
            .build();
        let live = ec2::Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                [
                    state::PENDING,
                    state::RUNNING,
                    state::STOPPING,
                    state::STOPPED,
                ]
                .map(String::from)
                .to_vec(),
            ))
            .build();
        let mut found = describe(client, |r| r.filters(filter).filters(live)).await?;
        found.sort_by(|a, b| a.launch_time.cmp(&b.launch_time));
        Ok(found.into_iter().next())
    }

    /// Whether a terminated instance should make way for a new one instead of being reported.
    fn replace_terminated(obj: &Instance, terminated: &ObservedInstance) -> bool {
        obj.spec.recreate_on_termination
            || (obj.spec.replace_on_user_data_change && !terminated.user_data_matches())
    }

    async fn observe_instance(
        &self,
        obj: &Instance,
        target: &Target,
        user_data: Option<&Option<Redacted>>,
        reads: Reads,
    ) -> Result<Option<ObservedInstance>> {
        let client = self.ec2.get(&target.region);
        let uid = obj.uid().unwrap_or_default();
        if let Some(id) = obj.known_instance_id() {
            let batched = if reads == Reads::Steady {
                let max_age = batch::max_age(obj, self.resync_period);
                let list = || self.owned_instances(&client);
                self.index.get(&target.region, id, max_age, list).await?
            } else {
                None
            };
            let found = match batched {
                Some(o) => Some(o),
                None => describe_one(&client, id).await?,
            };
            match found {
                Some(mut o) if !o.is(state::TERMINATED) => {
                    if reads == Reads::Full {
                        self.complete(&client, &mut o).await?;
                    }
                    return Ok(Some(o));
                }
                Some(terminated) => {
                    if let Some(next) = self.find_by_uid(&client, &uid).await? {
                        return Ok(Some(next));
                    }
                    if obj.meta().deletion_timestamp.is_some() {
                        return Ok(Some(terminated));
                    }
                    let mut terminated = terminated;
                    terminated.wanted_user_data_hash =
                        Self::wanted_hash(obj, &terminated, user_data);
                    if Self::replace_terminated(obj, &terminated) {
                        return Ok(None);
                    }
                    return Ok(Some(terminated));
                }
                None if obj.status.as_ref().and_then(|s| s.instance_id.as_deref()) == Some(id) => {
                    // EC2 forgets terminated instances after about an hour: the instance this
                    // object launched is gone. Report it like a terminated one.
                    if let Some(next) = self.find_by_uid(&client, &uid).await? {
                        return Ok(Some(next));
                    }
                    if obj.spec.recreate_on_termination || obj.meta().deletion_timestamp.is_some() {
                        return Ok(None);
                    }
                    return Ok(Some(ObservedInstance {
                        instance_id: id.to_string(),
                        state: state::TERMINATED.to_string(),
                        tags: target.owner.system_tags(),
                        ..Default::default()
                    }));
                }
                None => {
                    return Err(Error::InvalidSpec(format!(
                        "the instance {id} named by the annotation {ADOPT_INSTANCE_ID} does not exist in {}",
                        target.region
                    )));
                }
            }
        }
        let Some(mut o) = self.find_by_uid(&client, &uid).await? else {
            return Ok(None);
        };
        self.complete(&client, &mut o).await?;
        Ok(Some(o))
    }

    /// The fingerprint of the user data the spec asks for, when the instance has one to compare
    /// with and the user data was resolved (not while deleting or under ObserveOnly).
    fn wanted_hash(
        obj: &Instance,
        observed: &ObservedInstance,
        user_data: Option<&Option<Redacted>>,
    ) -> Option<String> {
        let data = user_data?;
        if !observed.tags.contains_key(USER_DATA_TAG) {
            return None;
        }
        let uid = obj.uid().unwrap_or_default();
        Some(diff::user_data_hash(
            &uid,
            data.as_ref().map(|d| d.0.as_str()).unwrap_or_default(),
        ))
    }
}

async fn termination_protection(client: &Client, id: &str) -> Result<bool> {
    let out = client
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(ec2::InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .map_err(|e| ec2_error("DescribeInstanceAttribute", &e))?;
    Ok(out
        .disable_api_termination()
        .and_then(|v| v.value())
        .unwrap_or(false))
}

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<ec2::Tag> {
    tags.iter()
        .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
        .collect()
}

fn bool_value(b: bool) -> ec2::AttributeBooleanValue {
    ec2::AttributeBooleanValue::builder().value(b).build()
}

fn profile_spec(p: &IamInstanceProfile) -> ec2::IamInstanceProfileSpecification {
    ec2::IamInstanceProfileSpecification::builder()
        .set_name(p.name.clone())
        .set_arn(p.arn.clone())
        .build()
}

/// Checks that EC2 offers the instance type in the region (moto and AWS answer
/// `InvalidInstanceType` for unknown ones), so a typo is a clear terminal error, not a launch
/// failure.
async fn check_instance_type(client: &Client, instance_type: &str) -> Result<()> {
    let out = client
        .describe_instance_types()
        .instance_types(ec2::InstanceType::from(instance_type))
        .send()
        .await;
    match out {
        Ok(o) if !o.instance_types().is_empty() => Ok(()),
        Ok(_) => Err(unknown_type(instance_type)),
        Err(e) if e.code() == Some("InvalidInstanceType") => Err(unknown_type(instance_type)),
        Err(e) => Err(ec2_error("DescribeInstanceTypes", &e)),
    }
}

fn unknown_type(instance_type: &str) -> Error {
    Error::InvalidSpec(format!(
        "instanceType {instance_type:?} is not offered by EC2 in this region"
    ))
}

/// How long a positive lookup is reused: an offered instance type stays offered and an AMI's
/// root device never changes; the limit only bounds how long a deregistered AMI is believed to
/// exist (RunInstances then refuses it anyway).
const LOOKUP_TTL: Duration = Duration::from_secs(3600);

/// What EC2 answered about instance types and AMIs, per region: every create of the same
/// instance type and image asked the same two questions again (100 of 300 calls for 50
/// instances). Only answers that let a create go on are kept; a refusal is asked again, so a
/// fixed spec (or a newly shared AMI) is seen at once.
#[derive(Debug, Default)]
struct Lookups {
    types: Answers<()>,
    images: Answers<Option<RootDevice>>,
}

/// Answers per (region, what was asked), with when they were given.
type Answers<V> = Mutex<HashMap<(String, String), (Instant, V)>>;

impl Lookups {
    async fn instance_type(
        &self,
        client: &Client,
        region: &str,
        instance_type: &str,
    ) -> Result<()> {
        let key = (region.to_string(), instance_type.to_string());
        if fresh(&self.types, &key).is_some() {
            return Ok(());
        }
        check_instance_type(client, instance_type).await?;
        lock(&self.types).insert(key, (Instant::now(), ()));
        Ok(())
    }

    async fn root_device(
        &self,
        client: &Client,
        region: &str,
        image_id: &str,
    ) -> Result<Option<RootDevice>> {
        let key = (region.to_string(), image_id.to_string());
        if let Some(root) = fresh(&self.images, &key) {
            return Ok(root);
        }
        let root = root_device(client, image_id).await?;
        lock(&self.images).insert(key, (Instant::now(), root.clone()));
        Ok(root)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cached answer younger than [`LOOKUP_TTL`].
fn fresh<V: Clone>(map: &Answers<V>, key: &(String, String)) -> Option<V> {
    lock(map)
        .get(key)
        .filter(|(at, _)| at.elapsed() < LOOKUP_TTL)
        .map(|(_, v)| v.clone())
}

/// The AMI's root device: its name and, when the AMI tells, its size in GiB. Also proves the
/// AMI exists.
#[derive(Clone, Debug)]
struct RootDevice {
    name: String,
    size: Option<i32>,
}

async fn root_device(client: &Client, image_id: &str) -> Result<Option<RootDevice>> {
    let out = client.describe_images().image_ids(image_id).send().await;
    let missing = || {
        Error::InvalidSpec(format!(
            "imageId {image_id:?} does not exist in this region (or is not visible to this account)"
        ))
    };
    match out {
        Ok(o) => {
            let image = o.images().first().ok_or_else(missing)?;
            Ok(image.root_device_name().map(|name| RootDevice {
                name: name.to_string(),
                size: image
                    .block_device_mappings()
                    .iter()
                    .find(|m| m.device_name() == Some(name))
                    .and_then(|m| m.ebs())
                    .and_then(|e| e.volume_size()),
            }))
        }
        Err(e)
            if matches!(
                e.code(),
                Some("InvalidAMIID.NotFound" | "InvalidAMIID.Malformed")
            ) =>
        {
            Err(missing())
        }
        Err(e) => Err(ec2_error("DescribeImages", &e)),
    }
}

/// The spec's block devices, encrypted and deleted with the instance unless said otherwise,
/// plus an encrypted root volume when the spec does not mention the root device. A root volume
/// without a size gets the AMI's; any other volume needs one (EC2 cannot guess it).
fn block_devices(
    obj: &Instance,
    root: Option<&RootDevice>,
) -> Result<Vec<ec2::BlockDeviceMapping>> {
    let root_name = root.map(|r| r.name.as_str());
    let mut out = Vec::new();
    for m in &obj.spec.block_device_mappings {
        let e = &m.ebs;
        let is_root = Some(m.device_name.as_str()) == root_name;
        let size = e
            .volume_size
            .or(root.filter(|_| is_root).and_then(|r| r.size));
        if size.is_none() && !is_root {
            return Err(Error::InvalidSpec(format!(
                "blockDeviceMappings {}: volumeSize is required for a volume that is not the AMI's root device ({})",
                m.device_name,
                root_name.unwrap_or("unknown")
            )));
        }
        out.push(
            ec2::BlockDeviceMapping::builder()
                .device_name(&m.device_name)
                .ebs(
                    ec2::EbsBlockDevice::builder()
                        .set_volume_size(size)
                        .set_volume_type(e.volume_type.map(|t| ec2::VolumeType::from(t.as_str())))
                        .set_iops(e.iops)
                        .set_throughput(e.throughput)
                        .encrypted(e.encrypted.unwrap_or(true))
                        .set_kms_key_id(e.kms_key_id.clone())
                        .delete_on_termination(e.delete_on_termination.unwrap_or(true))
                        .build(),
                )
                .build(),
        );
    }
    if let Some(root) = root
        && !obj
            .spec
            .block_device_mappings
            .iter()
            .any(|m| m.device_name == root.name)
    {
        out.push(
            ec2::BlockDeviceMapping::builder()
                .device_name(&root.name)
                .ebs(
                    ec2::EbsBlockDevice::builder()
                        .set_volume_size(root.size)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
    }
    Ok(out)
}

#[async_trait]
impl External<Instance> for Ec2 {
    type Model = diff::InstanceModel;
    const IAM_STATEMENTS: &'static str = "EC2";
    const READS_FROM_MEMORY: bool = true;

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            c.sdk.clone(),
            c.metrics.clone(),
            c.client.clone(),
            c.cluster_id,
            c.resync_period,
        )
    }

    /// The user data: inline, or read from `userDataSecretRef` (`SecretNotFound` when missing,
    /// `InvalidSpec` when too large).
    async fn resolve(&self, obj: &Instance, _target: &Target) -> Result<Resolved> {
        Ok(Resolved {
            user_data: self.user_data(obj).await?,
            profile: self.profile(obj).await?,
        })
    }

    async fn observe(
        &self,
        obj: &Instance,
        target: &Target,
        resolved: Option<&Resolved>,
        reads: Reads,
    ) -> Result<Option<ObservedInstance>> {
        let resolved = resolved.map(|r| &r.user_data);
        let Some(mut observed) = self.observe_instance(obj, target, resolved, reads).await? else {
            return Ok(None);
        };
        if observed.wanted_user_data_hash.is_none() {
            observed.wanted_user_data_hash = Self::wanted_hash(obj, &observed, resolved);
        }
        Ok(Some(observed))
    }

    async fn create(
        &self,
        obj: &Instance,
        target: &Target,
        resolved: &mut Resolved,
        tags: &BTreeMap<String, String>,
        status: &mut InstanceStatus,
    ) -> Result<Created> {
        let client = self.ec2.get(&target.region);
        let spec = &obj.spec;
        let uid = obj.uid().unwrap_or_default();
        let user_data = resolved.user_data.clone();
        self.lookups
            .instance_type(&client, &target.region, &spec.instance_type)
            .await?;
        let root = self
            .lookups
            .root_device(&client, &target.region, &spec.image_id)
            .await?;
        let devices = block_devices(obj, root.as_ref())?;
        let previous = status.instance_id.clone();
        let token = diff::client_token(&uid, previous.as_deref());
        let mut instance_tags = tags.clone();
        instance_tags.insert(
            USER_DATA_TAG.to_string(),
            diff::user_data_hash(
                &uid,
                user_data.as_ref().map(|d| d.0.as_str()).unwrap_or_default(),
            ),
        );
        let m = &spec.metadata_options;
        let out = client
            .run_instances()
            .client_token(token)
            .image_id(&spec.image_id)
            .instance_type(ec2::InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids((!spec.security_group_ids.is_empty()).then(|| {
                spec.security_group_ids
                    .iter()
                    .map(|g| g.0.clone())
                    .collect()
            }))
            .set_key_name(spec.key_name.clone())
            .set_iam_instance_profile(resolved.profile.as_ref().map(profile_spec))
            .set_user_data(
                user_data
                    .as_ref()
                    .map(|d| base64::engine::general_purpose::STANDARD.encode(&d.0)),
            )
            .set_block_device_mappings(Some(devices))
            .metadata_options(
                ec2::InstanceMetadataOptionsRequest::builder()
                    .http_tokens(ec2::HttpTokensState::from(m.http_tokens.as_str()))
                    .http_put_response_hop_limit(m.http_put_response_hop_limit)
                    .http_endpoint(ec2::InstanceMetadataEndpointState::from(
                        m.http_endpoint.as_str(),
                    ))
                    .instance_metadata_tags(ec2::InstanceMetadataTagsState::from(
                        m.instance_metadata_tags.as_str(),
                    ))
                    .build(),
            )
            .monitoring(
                ec2::RunInstancesMonitoringEnabled::builder()
                    .enabled(spec.monitoring)
                    .build(),
            )
            .set_ebs_optimized(spec.ebs_optimized)
            .disable_api_termination(spec.disable_api_termination)
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::Instance)
                    .set_tags(Some(ec2_tags(&instance_tags)))
                    .build(),
            )
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::Volume)
                    .set_tags(Some(ec2_tags(tags)))
                    .build(),
            )
            // Not retried inside the SDK: EC2 honours the client token, but not every endpoint
            // does, and the uid lookup on the next reconcile finds an instance whose answer was
            // lost.
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| ec2_error("RunInstances", &e))?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| Error::AwsTransient {
                operation: "RunInstances".into(),
                message: "EC2 returned no instance".into(),
            })?;
        self.index.written(id);
        status.instance_id = Some(id.to_string());
        status.state = Some(state::PENDING.to_string());
        Ok(Created::New)
    }

    async fn update(
        &self,
        obj: &Instance,
        target: &Target,
        observed: &ObservedInstance,
        _resolved: &mut Resolved,
        changes: &[InstanceChange],
    ) -> Result<()> {
        let client = self.ec2.get(&target.region);
        let id = observed.instance_id.as_str();
        // A type EC2 does not offer must not cost a running instance a stop.
        if changes.contains(&InstanceChange::StopToModify) {
            check_instance_type(&client, &obj.spec.instance_type).await?;
        }
        self.index.written(id);
        for change in changes {
            apply(&client, observed, change).await?;
        }
        self.index.written(id);
        Ok(())
    }

    async fn delete(
        &self,
        obj: &Instance,
        target: &Target,
        observed: &ObservedInstance,
    ) -> Result<DeleteProgress> {
        let client = self.ec2.get(&target.region);
        let id = observed.instance_id.as_str();
        if observed.is(state::TERMINATED) {
            return Ok(DeleteProgress::Gone);
        }
        if observed.is(state::SHUTTING_DOWN) {
            return Ok(DeleteProgress::InProgress);
        }
        if termination_protection(&client, id).await? {
            if obj.spec.disable_api_termination {
                return Err(Error::Blocked {
                    reason: "TerminationProtected",
                    message: format!(
                        "EC2 instance {id} has termination protection (spec.disableApiTermination: true); set it to false to let kaws terminate the instance"
                    ),
                });
            }
            // Turned on outside Kubernetes; the spec (which kaws owns) says off.
            client
                .modify_instance_attribute()
                .instance_id(id)
                .disable_api_termination(bool_value(false))
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceAttribute", &e))?;
        }
        self.index.written(id);
        client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| ec2_error("TerminateInstances", &e))?;
        Ok(DeleteProgress::InProgress)
    }
}

/// Makes one change.
async fn apply(
    client: &Client,
    observed: &ObservedInstance,
    change: &InstanceChange,
) -> Result<()> {
    let id = observed.instance_id.as_str();
    match change {
        InstanceChange::Tags(t) => {
            let mut resources = vec![id.to_string()];
            resources.extend(observed.volume_ids.iter().cloned());
            if !t.set.is_empty() {
                client
                    .create_tags()
                    .set_resources(Some(resources.clone()))
                    .set_tags(Some(ec2_tags(&t.set)))
                    .send()
                    .await
                    .map_err(|e| ec2_error("CreateTags", &e))?;
            }
            if !t.remove.is_empty() {
                client
                    .delete_tags()
                    .set_resources(Some(resources))
                    .set_tags(Some(
                        t.remove
                            .iter()
                            .map(|k| ec2::Tag::builder().key(k).build())
                            .collect(),
                    ))
                    .send()
                    .await
                    .map_err(|e| ec2_error("DeleteTags", &e))?;
            }
        }
        InstanceChange::SecurityGroups(groups) => {
            client
                .modify_instance_attribute()
                .instance_id(id)
                .set_groups(Some(groups.clone()))
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceAttribute", &e))?;
        }
        InstanceChange::Monitoring(true) => {
            client
                .monitor_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| ec2_error("MonitorInstances", &e))?;
        }
        InstanceChange::Monitoring(false) => {
            client
                .unmonitor_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| ec2_error("UnmonitorInstances", &e))?;
        }
        InstanceChange::TerminationProtection(on) => {
            client
                .modify_instance_attribute()
                .instance_id(id)
                .disable_api_termination(bool_value(*on))
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceAttribute", &e))?;
        }
        InstanceChange::MetadataOptions(m) => {
            client
                .modify_instance_metadata_options()
                .instance_id(id)
                .http_tokens(ec2::HttpTokensState::from(m.http_tokens.as_str()))
                .http_put_response_hop_limit(m.http_put_response_hop_limit)
                .http_endpoint(ec2::InstanceMetadataEndpointState::from(
                    m.http_endpoint.as_str(),
                ))
                .instance_metadata_tags(ec2::InstanceMetadataTagsState::from(
                    m.instance_metadata_tags.as_str(),
                ))
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceMetadataOptions", &e))?;
        }
        InstanceChange::IamInstanceProfile(wanted) => {
            set_profile(client, id, wanted.as_ref()).await?
        }
        InstanceChange::StopToModify | InstanceChange::Stop => {
            client
                .stop_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| ec2_error("StopInstances", &e))?;
        }
        InstanceChange::InstanceType(t) => {
            check_instance_type(client, t).await?;
            client
                .modify_instance_attribute()
                .instance_id(id)
                .instance_type(ec2::AttributeValue::builder().value(t).build())
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceAttribute", &e))?;
        }
        InstanceChange::EbsOptimized(on) => {
            client
                .modify_instance_attribute()
                .instance_id(id)
                .ebs_optimized(bool_value(*on))
                .send()
                .await
                .map_err(|e| ec2_error("ModifyInstanceAttribute", &e))?;
        }
        InstanceChange::Start => {
            client
                .start_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| ec2_error("StartInstances", &e))?;
        }
        InstanceChange::Replace => {
            if termination_protection(client, id).await? {
                return Err(Error::Blocked {
                    reason: "TerminationProtected",
                    message: format!(
                        "EC2 instance {id} must be replaced for its new user data but has termination protection; set disableApiTermination: false"
                    ),
                });
            }
            client
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| ec2_error("TerminateInstances", &e))?;
        }
    }
    Ok(())
}

/// Associates, replaces or removes the instance profile.
async fn set_profile(client: &Client, id: &str, wanted: Option<&IamInstanceProfile>) -> Result<()> {
    let out = client
        .describe_iam_instance_profile_associations()
        .filters(
            ec2::Filter::builder()
                .name("instance-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .map_err(|e| ec2_error("DescribeIamInstanceProfileAssociations", &e))?;
    let current = out
        .iam_instance_profile_associations()
        .iter()
        .find(|a| {
            matches!(
                a.state(),
                Some(
                    ec2::IamInstanceProfileAssociationState::Associated
                        | ec2::IamInstanceProfileAssociationState::Associating
                )
            )
        })
        .and_then(|a| a.association_id())
        .map(str::to_string);
    match (wanted, current) {
        (Some(p), Some(association)) => {
            client
                .replace_iam_instance_profile_association()
                .association_id(association)
                .iam_instance_profile(profile_spec(p))
                .send()
                .await
                .map_err(|e| ec2_error("ReplaceIamInstanceProfileAssociation", &e))?;
        }
        (Some(p), None) => {
            client
                .associate_iam_instance_profile()
                .instance_id(id)
                .iam_instance_profile(profile_spec(p))
                .send()
                .await
                .map_err(|e| ec2_error("AssociateIamInstanceProfile", &e))?;
        }
        (None, Some(association)) => {
            client
                .disassociate_iam_instance_profile()
                .association_id(association)
                .send()
                .await
                .map_err(|e| ec2_error("DisassociateIamInstanceProfile", &e))?;
        }
        (None, None) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn instance_types_and_images_are_asked_once_per_region_and_refusals_again() {
        use aws_sdk_ec2::operation::{
            describe_images::DescribeImagesOutput,
            describe_instance_types::DescribeInstanceTypesOutput,
        };
        use aws_smithy_mocks::{RuleMode, mock, mock_client};

        let types = mock!(Client::describe_instance_types).then_output(|| {
            DescribeInstanceTypesOutput::builder()
                .instance_types(
                    ec2::InstanceTypeInfo::builder()
                        .instance_type(ec2::InstanceType::T3Micro)
                        .build(),
                )
                .build()
        });
        let images = mock!(Client::describe_images).then_output(|| {
            DescribeImagesOutput::builder()
                .images(
                    ec2::Image::builder()
                        .image_id("ami-1")
                        .root_device_name("/dev/xvda")
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&types, &images]);
        let lookups = Lookups::default();
        for _ in 0..3 {
            lookups
                .instance_type(&client, "eu-west-1", "t3.micro")
                .await
                .expect("offered");
            let root = lookups
                .root_device(&client, "eu-west-1", "ami-1")
                .await
                .expect("exists");
            assert_eq!(root.map(|r| r.name), Some("/dev/xvda".to_string()));
        }
        assert_eq!((types.num_calls(), images.num_calls()), (1, 1));
        lookups
            .instance_type(&client, "us-east-1", "t3.micro")
            .await
            .expect("offered");
        assert_eq!(types.num_calls(), 2, "another region asks again");

        // A type EC2 does not offer is refused every time, never remembered.
        let none = mock!(Client::describe_instance_types)
            .then_output(|| DescribeInstanceTypesOutput::builder().build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&none]);
        for _ in 0..2 {
            let err = lookups
                .instance_type(&client, "eu-west-1", "t9.huge")
                .await
                .expect_err("not offered");
            assert!(err.to_string().contains("t9.huge"), "{err}");
        }
        assert_eq!(none.num_calls(), 2);
    }
}
