//! The `Instance` API (`ec2.kaws.io/v1alpha1`): what users write and what kaws reports. No AWS
//! here.

use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::api::{CommonSpec, CommonStatus, Regional};

/// An EC2 instance managed by kaws. EC2 assigns the instance id; kaws creates exactly one instance
/// per object (the `RunInstances` client token comes from the object's UID) and keeps its power
/// state, type, security groups, monitoring, metadata options and tags as the spec says.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ec2.kaws.io",
    version = "v1alpha1",
    kind = "Instance",
    namespaced,
    status = "InstanceStatus",
    shortname = "ec2i",
    category = "aws",
    doc = "An EC2 instance managed by kaws",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".status.instanceId"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.instanceType"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Private-IP","type":"string","jsonPath":".status.privateIpAddress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::core::api::REGION_IMMUTABLE_RULE).message("region is immutable"))]
#[x_kube(validation = Rule::new(USER_DATA_RULE).message("userData and userDataSecretRef are immutable unless replaceOnUserDataChange is true (the instance is then replaced)"))]
#[x_kube(validation = Rule::new("!(has(self.userData) && has(self.userDataSecretRef))").message("set at most one of userData and userDataSecretRef"))]
pub struct InstanceSpec {
    /// AMI to launch, e.g. `ami-0abcdef1234567890`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("imageId is immutable"))]
    #[schemars(regex(pattern = r"^ami-[0-9a-f]{8,17}$"))]
    pub image_id: String,

    /// Instance type, e.g. `t3.micro`. Changing it on a running instance stops the instance,
    /// modifies it and starts it again (if `desiredState` is `running`), one step per reconcile.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"))]
    pub instance_type: String,

    /// Subnet to launch into; absent: the default VPC's default subnet. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subnetId is immutable"))]
    #[schemars(regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub subnet_id: Option<String>,

    /// Security groups (ids) of the instance's primary network interface; changed in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<SecurityGroupId>,

    /// Name of the EC2 key pair for SSH. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("keyName is immutable"))]
    #[schemars(length(min = 1, max = 255))]
    pub key_name: Option<String>,

    /// Instance profile (IAM role) of the instance, by `name` or `arn`; changed in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_instance_profile: Option<IamInstanceProfile>,

    /// User data as plain text; kaws base64-encodes it. At most 16 KiB. Immutable unless
    /// `replaceOnUserDataChange` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub user_data: Option<String>,

    /// User data read from a key of a Secret in the object's namespace (plain text, as in
    /// `userData`). Never copied into status or Events. A changed value is treated like a
    /// changed `userData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<SecretKeySelector>,

    /// When true, a change of the user data (inline or in the Secret) replaces the instance:
    /// kaws terminates it and launches a new one. When false (default) user data is immutable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_on_user_data_change: bool,

    /// EBS volumes to attach at launch, e.g. the root volume's size and type. Volumes are
    /// encrypted unless `ebs.encrypted` is false; without an entry for the root device kaws adds
    /// one that encrypts the root volume. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("blockDeviceMappings are immutable"))]
    pub block_device_mappings: Vec<BlockDeviceMapping>,

    /// Instance metadata service options; IMDSv2 (`httpTokens: required`) by default. Changed
    /// in place.
    #[serde(default)]
    pub metadata_options: MetadataOptions,

    /// Detailed (1-minute) CloudWatch monitoring. Changed in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitoring: bool,

    /// EBS-optimized instance; absent: the type's default. A change stops and restarts a running
    /// instance, like a type change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs_optimized: Option<bool>,

    /// Termination protection. While true, deleting the object is blocked (reason
    /// `TerminationProtected`) until it is set to false. Changed in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_api_termination: bool,

    /// `running` (default) or `stopped`; kaws starts or stops the instance to match.
    #[serde(default)]
    pub desired_state: DesiredState,

    /// When true, an instance terminated outside Kubernetes is replaced by a new one. When false
    /// (default) it is reported (`Ready=False`, reason `Terminated`) and left alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recreate_on_termination: bool,

    #[serde(flatten)]
    pub common: CommonSpec,
}

/// Inline user data may change only when replacement is allowed; the Secret reference likewise.
const USER_DATA_RULE: &str = "(has(self.replaceOnUserDataChange) && self.replaceOnUserDataChange) || (has(self.userData) == has(oldSelf.userData) && (!has(self.userData) || self.userData == oldSelf.userData) && has(self.userDataSecretRef) == has(oldSelf.userDataSecretRef) && (!has(self.userDataSecretRef) || self.userDataSecretRef == oldSelf.userDataSecretRef))";

/// A security group id, `sg-` followed by hex digits.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct SecurityGroupId(#[schemars(regex(pattern = r"^sg-[0-9a-f]{8,17}$"))] pub String);

/// An IAM instance profile, by name, by ARN or as a kaws `InstanceProfile` (exactly one).
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.name), has(self.arn), has(self.ref)].filter(x, x).size() == 1").message("set exactly one of name, arn and ref"))]
pub struct IamInstanceProfile {
    /// Name of the instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ARN of the instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// A kaws `InstanceProfile` in the same namespace; the instance waits with
    /// `DependencyNotReady` until it is Ready, then uses its ARN.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::core::references::LocalRef>,
}

/// A key of a Secret in the object's namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// One EBS volume attached at launch.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// Device name, e.g. `/dev/xvda` (the root device of Amazon Linux AMIs) or `/dev/sdf`.
    #[schemars(regex(pattern = r"^/dev/[a-z0-9]+$"))]
    pub device_name: String,
    /// The EBS volume.
    #[serde(default)]
    pub ebs: EbsVolume,
}

/// Settings of an EBS volume created at launch.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EbsVolume {
    /// Size in GiB; absent: the snapshot's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub volume_size: Option<i32>,
    /// `gp3` (AWS default), `gp2`, `io1`, `io2`, `st1`, `sc1` or `standard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
    /// IOPS for `io1`, `io2` and `gp3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    /// Throughput in MiB/s for `gp3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i32>,
    /// Encrypt the volume; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// KMS key (id or ARN) for encryption; absent: the account's default EBS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Delete the volume when the instance terminates; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
}

/// EBS volume types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Gp2,
    Gp3,
    Io1,
    Io2,
    St1,
    Sc1,
    Standard,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Gp2 => "gp2",
            VolumeType::Gp3 => "gp3",
            VolumeType::Io1 => "io1",
            VolumeType::Io2 => "io2",
            VolumeType::St1 => "st1",
            VolumeType::Sc1 => "sc1",
            VolumeType::Standard => "standard",
        }
    }
}

/// Instance metadata service (IMDS) settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// `required` (IMDSv2 only, default) or `optional` (IMDSv1 allowed).
    #[serde(default = "HttpTokens::required")]
    pub http_tokens: HttpTokens,
    /// Hops a metadata response may travel, 1-64; default 2 so containers on the instance reach
    /// IMDS.
    #[serde(default = "default_hop_limit")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: i32,
    /// `enabled` (default) or `disabled`: whether the metadata endpoint is reachable at all.
    #[serde(default = "Toggle::enabled")]
    pub http_endpoint: Toggle,
    /// `enabled` or `disabled` (default): whether instance tags are readable from the metadata
    /// service.
    #[serde(default = "Toggle::disabled")]
    pub instance_metadata_tags: Toggle,
}

/// An EC2 `enabled` / `disabled` switch.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    Enabled,
    Disabled,
}

impl Toggle {
    fn enabled() -> Self {
        Toggle::Enabled
    }
    fn disabled() -> Self {
        Toggle::Disabled
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Toggle::Enabled => "enabled",
            Toggle::Disabled => "disabled",
        }
    }
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::Required,
            http_put_response_hop_limit: default_hop_limit(),
            http_endpoint: Toggle::Enabled,
            instance_metadata_tags: Toggle::Disabled,
        }
    }
}

fn default_hop_limit() -> i32 {
    2
}

/// IMDS token mode.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    Required,
    Optional,
}

impl HttpTokens {
    fn required() -> Self {
        HttpTokens::Required
    }
    pub fn as_str(self) -> &'static str {
        match self {
            HttpTokens::Required => "required",
            HttpTokens::Optional => "optional",
        }
    }
}

/// The power state kaws keeps the instance in.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// What kaws last saw in EC2.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Id EC2 assigned, e.g. `i-0123456789abcdef0`; written as soon as `RunInstances` returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down` or `terminated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Private IPv4 address of the primary network interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip_address: Option<String>,
    /// Public IPv4 address, if the instance has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip_address: Option<String>,
    /// Private DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns_name: Option<String>,
    /// Public DNS name, if the instance has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_dns_name: Option<String>,
    /// VPC of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Availability Zone of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// When the instance was last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_time: Option<String>,
    /// CPU architecture, e.g. `x86_64` or `arm64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Instance type EC2 reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

/// Annotation naming an existing instance to adopt (with `kaws.io/adopt: "true"`), since EC2
/// instances have no user-chosen name to find them by.
pub const ADOPT_INSTANCE_ID: &str = "ec2.kaws.io/instance-id";

impl Instance {
    /// The instance this object refers to: the one it created, or the one it was told to adopt.
    pub fn known_instance_id(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.instance_id.as_deref())
            .or_else(|| {
                self.annotations()
                    .get(ADOPT_INSTANCE_ID)
                    .map(String::as_str)
            })
    }
}

impl crate::core::driver::ManagedObject for Instance {
    type Status = InstanceStatus;
    const KIND: &'static str = "Instance";
    type Placement = Regional;

    fn dependencies() -> Vec<crate::core::driver::Dependency<Self>> {
        vec![crate::core::driver::Dependency::on::<
            crate::resources::instanceprofile::InstanceProfile,
        >(|i| {
            i.spec
                .iam_instance_profile
                .iter()
                .filter_map(|p| p.reference.as_ref().map(|r| r.name.clone()))
                .collect()
        })]
    }
    const WATCHES_SECRETS: bool = true;

    fn common_spec(&self) -> &CommonSpec {
        &self.spec.common
    }
    fn status(&self) -> Option<&InstanceStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &InstanceStatus) -> &CommonStatus {
        &status.common
    }
    fn common_status_mut(status: &mut InstanceStatus) -> &mut CommonStatus {
        &mut status.common
    }
    fn referenced_secrets(&self) -> Vec<String> {
        self.spec
            .user_data_secret_ref
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }
}
