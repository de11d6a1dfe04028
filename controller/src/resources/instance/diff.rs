//! Pure Instance logic: spec validation, desired × observed → the next changes, and the
//! identities (client token, user-data fingerprint) that make creation idempotent. No IO.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use kube::ResourceExt;

use super::types::{
    DesiredState, HttpTokens, IamInstanceProfile, Instance, InstanceSpec, InstanceStatus,
    MetadataOptions, Toggle, VolumeType,
};
use crate::{
    aws::partition,
    core::{
        driver::{Availability, Change, Model, Target},
        ownership::{TagChanges, tag_changes},
        secrets::Redacted,
    },
};

/// Tag holding a fingerprint of the user data the instance was launched with. EC2 does not
/// return user data with `DescribeInstances`; the tag lets a batched observation tell whether
/// the user data changed without one extra call per instance.
pub const USER_DATA_TAG: &str = "kaws.io/user-data-hash";

/// EC2's instance states.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const RUNNING: &str = "running";
    pub const STOPPING: &str = "stopping";
    pub const STOPPED: &str = "stopped";
    pub const SHUTTING_DOWN: &str = "shutting-down";
    pub const TERMINATED: &str = "terminated";
}

/// The instance as EC2 reports it, in the spec's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedInstance {
    pub instance_id: String,
    pub state: String,
    pub instance_type: String,
    pub image_id: String,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub key_name: Option<String>,
    pub security_group_ids: BTreeSet<String>,
    /// ARN of the associated instance profile.
    pub iam_instance_profile_arn: Option<String>,
    pub monitoring: bool,
    pub ebs_optimized: bool,
    pub metadata_options: Option<MetadataOptions>,
    /// `None`: not read in this observation (it needs a call per instance, so batched
    /// observations leave it out).
    pub disable_api_termination: Option<bool>,
    pub tags: BTreeMap<String, String>,
    pub volume_ids: Vec<String>,
    pub private_ip_address: Option<String>,
    pub public_ip_address: Option<String>,
    pub private_dns_name: Option<String>,
    pub public_dns_name: Option<String>,
    pub availability_zone: Option<String>,
    pub launch_time: Option<String>,
    pub architecture: Option<String>,
    pub owner_account: Option<String>,
    /// Fingerprint of the user data the spec asks for now (see [`USER_DATA_TAG`]); `None` when
    /// the instance carries no fingerprint to compare with.
    pub wanted_user_data_hash: Option<String>,
}

impl ObservedInstance {
    pub fn is(&self, state: &str) -> bool {
        self.state == state
    }

    /// Whether the instance runs the user data the spec asks for; unknown counts as yes.
    pub fn user_data_matches(&self) -> bool {
        match (&self.wanted_user_data_hash, self.tags.get(USER_DATA_TAG)) {
            (Some(wanted), Some(launched)) => wanted == launched,
            _ => true,
        }
    }
}

/// One write that brings EC2 closer to the spec. Changes that need a stopped instance come one
/// step per reconcile: stop, then modify, then start.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceChange {
    /// Applied to the instance and its volumes.
    Tags(TagChanges),
    SecurityGroups(Vec<String>),
    Monitoring(bool),
    TerminationProtection(bool),
    MetadataOptions(MetadataOptions),
    /// `None`: remove the association.
    IamInstanceProfile(Option<IamInstanceProfile>),
    /// Stop a running instance so its type (or EBS optimisation) can change.
    StopToModify,
    InstanceType(String),
    EbsOptimized(bool),
    Start,
    Stop,
    /// Terminate the instance so a new one starts with the new user data.
    Replace,
}

impl Change for InstanceChange {
    fn field(&self) -> &'static str {
        match self {
            InstanceChange::Tags(_) => "tags",
            InstanceChange::SecurityGroups(_) => "securityGroupIds",
            InstanceChange::Monitoring(_) => "monitoring",
            InstanceChange::TerminationProtection(_) => "disableApiTermination",
            InstanceChange::MetadataOptions(_) => "metadataOptions",
            InstanceChange::IamInstanceProfile(_) => "iamInstanceProfile",
            InstanceChange::StopToModify => "instanceType (stopping the instance to change it)",
            InstanceChange::InstanceType(_) => "instanceType",
            InstanceChange::EbsOptimized(_) => "ebsOptimized",
            InstanceChange::Start => "desiredState (starting)",
            InstanceChange::Stop => "desiredState (stopping)",
            InstanceChange::Replace => "userData (replacing the instance)",
        }
    }
}

fn is_hex_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|rest| {
        (8..=17).contains(&rest.len())
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// Checks what EC2 would reject (or what moto would wrongly accept), so the user gets a clear
/// message instead of an AWS error code.
pub fn validate(spec: &InstanceSpec) -> Result<(), String> {
    // The instance also carries the user-data fingerprint tag.
    spec.common.validate_reserving(1)?;
    if !is_hex_id(&spec.image_id, "ami-") {
        return Err(format!(
            "imageId {:?} is not an AMI id (ami- followed by 8 or 17 hex digits)",
            spec.image_id
        ));
    }
    validate_instance_type(&spec.instance_type)?;
    if let Some(subnet) = &spec.subnet_id
        && !is_hex_id(subnet, "subnet-")
    {
        return Err(format!("subnetId {subnet:?} is not a subnet id"));
    }
    if let Some(sg) = spec
        .security_group_ids
        .iter()
        .find(|sg| !is_hex_id(&sg.0, "sg-"))
    {
        return Err(format!(
            "securityGroupIds: {:?} is not a security group id",
            sg.0
        ));
    }
    if let Some(p) = &spec.iam_instance_profile
        && [p.name.is_some(), p.arn.is_some(), p.reference.is_some()]
            .iter()
            .filter(|set| **set)
            .count()
            != 1
    {
        return Err("iamInstanceProfile: set exactly one of name, arn and ref".into());
    }
    if spec.user_data.is_some() && spec.user_data_secret_ref.is_some() {
        return Err("set at most one of userData and userDataSecretRef".into());
    }
    if let Some(data) = &spec.user_data {
        check_user_data_size("spec.userData", data)?;
    }
    let hop = spec.metadata_options.http_put_response_hop_limit;
    if !(1..=64).contains(&hop) {
        return Err(format!(
            "metadataOptions.httpPutResponseHopLimit must be 1-64, not {hop}"
        ));
    }
    let mut devices = BTreeSet::new();
    for m in &spec.block_device_mappings {
        if !devices.insert(m.device_name.as_str()) {
            return Err(format!(
                "blockDeviceMappings: device {} is listed twice",
                m.device_name
            ));
        }
        let t = m.ebs.volume_type;
        if m.ebs.iops.is_some()
            && !matches!(t, Some(VolumeType::Io1 | VolumeType::Io2 | VolumeType::Gp3))
        {
            return Err(format!(
                "blockDeviceMappings {}: iops applies only to io1, io2 and gp3 volumes",
                m.device_name
            ));
        }
        if m.ebs.throughput.is_some() && t != Some(VolumeType::Gp3) {
            return Err(format!(
                "blockDeviceMappings {}: throughput applies only to gp3 volumes",
                m.device_name
            ));
        }
        if m.ebs.kms_key_id.is_some() && m.ebs.encrypted == Some(false) {
            return Err(format!(
                "blockDeviceMappings {}: kmsKeyId needs encrypted: true",
                m.device_name
            ));
        }
    }
    Ok(())
}

/// EC2 takes at most 16 KiB of user data (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// User data over EC2's limit, inline or read from the Secret, is refused before `RunInstances`.
/// The message names the field and the size, never the content.
pub fn check_user_data_size(field: &str, data: &str) -> Result<(), String> {
    if data.len() > MAX_USER_DATA {
        Err(format!(
            "{field}: the user data is {} bytes; EC2 accepts at most {MAX_USER_DATA} bytes (16 KiB) before base64",
            data.len()
        ))
    } else {
        Ok(())
    }
}

/// `family.size`, e.g. `t3.micro`, `m7g.2xlarge`, `u-6tb1.metal`.
pub fn validate_instance_type(t: &str) -> Result<(), String> {
    let ok = t.split_once('.').is_some_and(|(family, size)| {
        family.starts_with(|c: char| c.is_ascii_lowercase())
            && family
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && family.chars().any(|c| c.is_ascii_digit())
            && !size.is_empty()
            && size
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instanceType {t:?} is not an EC2 instance type (family.size, e.g. t3.micro)"
        ))
    }
}

/// The `RunInstances` client token: the same for every attempt to create this object's
/// instance, different for a replacement (which follows a known earlier instance).
pub fn client_token(uid: &str, replaces: Option<&str>) -> String {
    let digest = Sha256::digest(format!("{uid}/{}", replaces.unwrap_or("")));
    format!("kaws-{}", &hex(&digest)[..48])
}

/// Fingerprint of user data, salted with the object's UID so equal user data of two objects
/// (or a guessable Secret) cannot be recognised from the tag.
pub fn user_data_hash(uid: &str, user_data: &str) -> String {
    let digest = Sha256::digest(format!("{uid}\n{user_data}"));
    hex(&digest)[..32].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the instance can take a change now, or why not.
pub fn availability(observed: &ObservedInstance) -> Availability {
    let id = &observed.instance_id;
    let busy = |reason: &str, what: &str| Availability::Busy {
        reason: reason.to_string(),
        message: format!("EC2 instance {id} is {what}"),
    };
    match observed.state.as_str() {
        state::PENDING => busy("Pending", "starting"),
        state::STOPPING => busy("Stopping", "stopping"),
        state::SHUTTING_DOWN => busy("ShuttingDown", "shutting down"),
        state::TERMINATED => Availability::Failed {
            reason: "Terminated".to_string(),
            message: format!(
                "EC2 instance {id} was terminated outside Kubernetes; set recreateOnTermination: true to let kaws launch a new one"
            ),
        },
        state::RUNNING | state::STOPPED => Availability::Available,
        other => busy("Unavailable", other),
    }
}

/// Whether the profile the spec names is the one EC2 reports (EC2 reports only the ARN; a name
/// matches the ARN's last path segment).
fn profile_matches(wanted: Option<&IamInstanceProfile>, observed_arn: Option<&str>) -> bool {
    match (wanted, observed_arn) {
        (None, None) => true,
        (Some(w), Some(arn)) => match (&w.arn, &w.name) {
            (Some(want), _) => want == arn,
            (None, Some(name)) => arn.rsplit('/').next() == Some(name.as_str()),
            (None, None) => false,
        },
        _ => false,
    }
}

/// The changes that bring `observed` closer to the spec, for an instance that is running or
/// stopped. `tags` are the desired tags (user tags plus kaws' system tags).
pub fn diff(
    spec: &InstanceSpec,
    observed: &ObservedInstance,
    tags: &BTreeMap<String, String>,
) -> Vec<InstanceChange> {
    let running = observed.is(state::RUNNING);
    if !running && !observed.is(state::STOPPED) {
        return Vec::new();
    }
    if spec.replace_on_user_data_change && !observed.user_data_matches() {
        return vec![InstanceChange::Replace];
    }
    let mut changes = Vec::new();
    if let Some(t) = tag_changes(tags, &observed.tags) {
        changes.push(InstanceChange::Tags(t));
    }
    let wanted_groups: BTreeSet<String> = spec
        .security_group_ids
        .iter()
        .map(|g| g.0.clone())
        .collect();
    if !wanted_groups.is_empty() && wanted_groups != observed.security_group_ids {
        changes.push(InstanceChange::SecurityGroups(
            wanted_groups.into_iter().collect(),
        ));
    }
    if spec.monitoring != observed.monitoring {
        changes.push(InstanceChange::Monitoring(spec.monitoring));
    }
    if observed
        .disable_api_termination
        .is_some_and(|on| on != spec.disable_api_termination)
    {
        changes.push(InstanceChange::TerminationProtection(
            spec.disable_api_termination,
        ));
    }
    if observed
        .metadata_options
        .as_ref()
        .is_some_and(|m| *m != spec.metadata_options)
    {
        changes.push(InstanceChange::MetadataOptions(
            spec.metadata_options.clone(),
        ));
    }
    if !profile_matches(
        spec.iam_instance_profile.as_ref(),
        observed.iam_instance_profile_arn.as_deref(),
    ) {
        changes.push(InstanceChange::IamInstanceProfile(
            spec.iam_instance_profile.clone(),
        ));
    }

    let type_differs = spec.instance_type != observed.instance_type;
    let ebs_differs = spec
        .ebs_optimized
        .is_some_and(|e| e != observed.ebs_optimized);
    if type_differs || ebs_differs {
        if running {
            changes.push(InstanceChange::StopToModify);
        } else {
            if type_differs {
                changes.push(InstanceChange::InstanceType(spec.instance_type.clone()));
            }
            if let Some(e) = spec.ebs_optimized.filter(|_| ebs_differs) {
                changes.push(InstanceChange::EbsOptimized(e));
            }
        }
        return changes;
    }
    match (spec.desired_state, running) {
        (DesiredState::Running, false) => changes.push(InstanceChange::Start),
        (DesiredState::Stopped, true) => changes.push(InstanceChange::Stop),
        _ => {}
    }
    changes
}

/// Metadata options as EC2 reports them, in the spec's terms.
pub fn metadata_options(
    http_tokens: Option<&str>,
    hop_limit: Option<i32>,
    http_endpoint: Option<&str>,
    instance_metadata_tags: Option<&str>,
) -> MetadataOptions {
    let toggle = |v: Option<&str>, default: Toggle| match v {
        Some("enabled") => Toggle::Enabled,
        Some("disabled") => Toggle::Disabled,
        _ => default,
    };
    MetadataOptions {
        http_tokens: match http_tokens {
            Some("required") => HttpTokens::Required,
            _ => HttpTokens::Optional,
        },
        http_put_response_hop_limit: hop_limit.unwrap_or(1),
        http_endpoint: toggle(http_endpoint, Toggle::Enabled),
        instance_metadata_tags: toggle(instance_metadata_tags, Toggle::Disabled),
    }
}

/// Copies what users need from the observed instance into status.
pub fn fill_status(
    observed: &ObservedInstance,
    region: &str,
    partition: &str,
    status: &mut InstanceStatus,
) {
    status.instance_id = Some(observed.instance_id.clone());
    status.state = Some(observed.state.clone());
    status.instance_type = Some(observed.instance_type.clone());
    status.private_ip_address = observed.private_ip_address.clone();
    status.public_ip_address = observed.public_ip_address.clone();
    status.private_dns_name = observed.private_dns_name.clone();
    status.public_dns_name = observed.public_dns_name.clone();
    status.vpc_id = observed.vpc_id.clone();
    status.availability_zone = observed.availability_zone.clone();
    status.launch_time = observed.launch_time.clone();
    status.architecture = observed.architecture.clone();
    if let Some(account) = &observed.owner_account {
        status.common.arn = Some(format!(
            "arn:{partition}:ec2:{region}:{account}:instance/{}",
            observed.instance_id
        ));
    }
}

/// What the resolve step read: the user data (inline or from its Secret) and the instance
/// profile to use (as the spec names it, or the ARN of the Ready `InstanceProfile` of `ref`).
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub user_data: Option<Redacted>,
    pub profile: Option<IamInstanceProfile>,
}

/// The pure model of an Instance: everything the driver decides without I/O.
pub struct InstanceModel;

impl Model<Instance> for InstanceModel {
    type Observed = ObservedInstance;
    type Change = InstanceChange;
    type Resolved = Resolved;

    fn describe(obj: &Instance) -> String {
        match obj.known_instance_id() {
            Some(id) => format!("EC2 instance {id}"),
            None => format!("EC2 instance of {}", obj.name_any()),
        }
    }

    fn validate(obj: &Instance) -> std::result::Result<(), String> {
        validate(&obj.spec)
    }

    fn observed_tags(observed: &ObservedInstance) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(observed: &ObservedInstance) -> Availability {
        availability(observed)
    }

    /// Refuses what cannot be changed in place: an adopted instance must match the spec's
    /// immutable fields, and user data changes only with `replaceOnUserDataChange`.
    fn conflict(obj: &Instance, observed: &ObservedInstance) -> Option<String> {
        if observed.is(state::TERMINATED) {
            return None;
        }
        let spec = &obj.spec;
        let mismatch = |field: &str, want: &str, got: &str| {
            format!(
                "{field} is {want:?} but EC2 instance {} has {got:?}; {field} cannot change in place",
                observed.instance_id
            )
        };
        if spec.image_id != observed.image_id {
            return Some(mismatch("imageId", &spec.image_id, &observed.image_id));
        }
        if let Some(subnet) = &spec.subnet_id
            && Some(subnet) != observed.subnet_id.as_ref()
        {
            return Some(mismatch(
                "subnetId",
                subnet,
                observed.subnet_id.as_deref().unwrap_or(""),
            ));
        }
        if let Some(key) = &spec.key_name
            && Some(key) != observed.key_name.as_ref()
        {
            return Some(mismatch(
                "keyName",
                key,
                observed.key_name.as_deref().unwrap_or(""),
            ));
        }
        if !spec.replace_on_user_data_change && !observed.user_data_matches() {
            return Some(format!(
                "the user data differs from what EC2 instance {} was launched with; user data is immutable unless replaceOnUserDataChange is true (which replaces the instance)",
                observed.instance_id
            ));
        }
        None
    }

    fn plan(
        obj: &Instance,
        observed: &ObservedInstance,
        resolved: &Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<InstanceChange> {
        if obj.spec.iam_instance_profile == resolved.profile {
            return diff(&obj.spec, observed, tags);
        }
        let spec = InstanceSpec {
            iam_instance_profile: resolved.profile.clone(),
            ..obj.spec.clone()
        };
        diff(&spec, observed, tags)
    }

    fn tags_change(
        observed: &ObservedInstance,
        tags: &BTreeMap<String, String>,
    ) -> Option<InstanceChange> {
        tag_changes(tags, &observed.tags).map(InstanceChange::Tags)
    }

    fn fill_status(
        _obj: &Instance,
        target: &Target,
        observed: &ObservedInstance,
        status: &mut InstanceStatus,
    ) {
        fill_status(observed, &target.region, partition(&target.region), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::instance::types::InstanceSpec;

    fn spec(yaml: &str) -> InstanceSpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    const SPEC: &str = "imageId: ami-12c6146b\ninstanceType: t3.micro\n";

    fn observed(state: &str) -> ObservedInstance {
        ObservedInstance {
            instance_id: "i-0123456789abcdef0".into(),
            state: state.into(),
            instance_type: "t3.micro".into(),
            image_id: "ami-12c6146b".into(),
            metadata_options: Some(MetadataOptions::default()),
            disable_api_termination: Some(false),
            ..Default::default()
        }
    }

    fn fields(changes: &[InstanceChange]) -> Vec<&'static str> {
        changes.iter().map(Change::field).collect()
    }

    #[test]
    fn user_data_and_tags_fit_what_ec2_takes() {
        let base = "imageId: ami-12c6146b\ninstanceType: t3.micro\n";
        let tags = |n: usize| {
            let t: Vec<String> = (0..n).map(|i| format!("t{i}: v")).collect();
            format!("{base}tags: {{{}}}\n", t.join(", "))
        };
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            (
                "16 KiB of user data fit",
                format!("{base}userData: '{}'\n", "x".repeat(MAX_USER_DATA)),
                None,
            ),
            (
                "one byte more does not",
                format!("{base}userData: '{}'\n", "x".repeat(MAX_USER_DATA + 1)),
                Some("spec.userData: the user data is 16385 bytes"),
            ),
            ("47 user tags fit next to kaws' three", tags(47), None),
            (
                "48 do not: the user-data fingerprint is a tag too",
                tags(48),
                Some("at most 47"),
            ),
            (
                "a made-up region",
                format!("{base}region: mars-1\n"),
                Some("spec.region"),
            ),
        ];
        for (why, yaml, want) in cases {
            let got = validate(&spec(&yaml));
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
    fn oversized_user_data_from_a_secret_is_named_never_shown() {
        let data = format!("CANARY{}", "x".repeat(MAX_USER_DATA));
        let msg = check_user_data_size("spec.userDataSecretRef (Secret \"ud\", key \"k\")", &data)
            .expect_err("too big");
        assert!(msg.starts_with("spec.userDataSecretRef"), "{msg}");
        assert!(!msg.contains("CANARY"), "{msg}");
        assert_eq!(check_user_data_size("f", "x"), Ok(()));
    }

    #[test]
    fn validation_catches_what_ec2_would_reject() {
        let cases = [
            (
                "imageId: ami-XYZ\ninstanceType: t3.micro\n",
                "not an AMI id",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: huge\n",
                "instanceType",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nsubnetId: sn-1\n",
                "subnetId",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nsecurityGroupIds: [default]\n",
                "security group id",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\niamInstanceProfile: {name: a, arn: b}\n",
                "exactly one",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nuserData: x\nuserDataSecretRef: {name: s, key: k}\n",
                "at most one",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nblockDeviceMappings: [{deviceName: /dev/xvda, ebs: {volumeType: gp2, throughput: 200}}]\n",
                "throughput",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nblockDeviceMappings: [{deviceName: /dev/xvda}, {deviceName: /dev/xvda}]\n",
                "twice",
            ),
            (
                "imageId: ami-12c6146b\ninstanceType: t3.micro\nmetadataOptions: {httpPutResponseHopLimit: 0}\n",
                "1-64",
            ),
        ];
        for (yaml, expected) in cases {
            let err = validate(&spec(yaml)).expect_err(yaml);
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        validate(&spec(
            "imageId: ami-0abcdef1234567890\ninstanceType: m7g.2xlarge\nsubnetId: subnet-0abc1234\nsecurityGroupIds: [sg-0abc1234]\n",
        ))
        .expect("valid spec");
        let too_big = format!("{SPEC}userData: {}\n", "x".repeat(MAX_USER_DATA + 1));
        assert!(validate(&spec(&too_big)).is_err());
    }

    #[test]
    fn defaults_are_secure() {
        let s = spec(SPEC);
        assert_eq!(s.metadata_options.http_tokens, HttpTokens::Required);
        assert_eq!(s.metadata_options.http_put_response_hop_limit, 2);
        assert_eq!(s.desired_state, DesiredState::Running);
        assert!(!s.recreate_on_termination);
    }

    #[test]
    fn matching_instance_needs_no_change() {
        assert!(diff(&spec(SPEC), &observed(state::RUNNING), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn power_state_follows_desired_state() {
        let stopped = spec(&format!("{SPEC}desiredState: stopped\n"));
        assert_eq!(
            diff(&stopped, &observed(state::RUNNING), &BTreeMap::new()),
            vec![InstanceChange::Stop]
        );
        assert_eq!(
            diff(&spec(SPEC), &observed(state::STOPPED), &BTreeMap::new()),
            vec![InstanceChange::Start]
        );
        assert!(diff(&stopped, &observed(state::STOPPED), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn type_change_is_stop_then_modify_then_start() {
        let bigger = spec("imageId: ami-12c6146b\ninstanceType: t3.large\n");
        let step1 = diff(&bigger, &observed(state::RUNNING), &BTreeMap::new());
        assert_eq!(step1, vec![InstanceChange::StopToModify]);
        let step2 = diff(&bigger, &observed(state::STOPPED), &BTreeMap::new());
        assert_eq!(step2, vec![InstanceChange::InstanceType("t3.large".into())]);
        let mut resized = observed(state::STOPPED);
        resized.instance_type = "t3.large".into();
        assert_eq!(
            diff(&bigger, &resized, &BTreeMap::new()),
            vec![InstanceChange::Start]
        );
        let stays_stopped =
            spec("imageId: ami-12c6146b\ninstanceType: t3.large\ndesiredState: stopped\n");
        assert!(diff(&stays_stopped, &resized, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn in_place_changes_do_not_stop_the_instance() {
        let s = spec(&format!(
            "{SPEC}securityGroupIds: [sg-0abc1234]\nmonitoring: true\ndisableApiTermination: true\nmetadataOptions: {{httpTokens: optional}}\n"
        ));
        let mut o = observed(state::RUNNING);
        o.security_group_ids = ["sg-0def5678".to_string()].into();
        let got = diff(&s, &o, &BTreeMap::new());
        assert_eq!(
            fields(&got),
            vec![
                "securityGroupIds",
                "monitoring",
                "disableApiTermination",
                "metadataOptions"
            ]
        );
        assert!(!got.contains(&InstanceChange::StopToModify));
    }

    #[test]
    fn unread_termination_protection_is_not_a_change() {
        let s = spec(&format!("{SPEC}disableApiTermination: true\n"));
        let mut o = observed(state::RUNNING);
        o.disable_api_termination = None;
        assert!(diff(&s, &o, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn instance_profile_by_name_matches_the_arn() {
        let s = spec(&format!("{SPEC}iamInstanceProfile: {{name: web}}\n"));
        let mut o = observed(state::RUNNING);
        o.iam_instance_profile_arn =
            Some("arn:aws:iam::123456789012:instance-profile/app/web".into());
        assert!(diff(&s, &o, &BTreeMap::new()).is_empty());
        o.iam_instance_profile_arn = Some("arn:aws:iam::123456789012:instance-profile/db".into());
        assert_eq!(
            fields(&diff(&s, &o, &BTreeMap::new())),
            vec!["iamInstanceProfile"]
        );
    }

    #[test]
    fn changed_user_data_replaces_only_with_opt_in() {
        let mut o = observed(state::RUNNING);
        o.tags.insert(USER_DATA_TAG.into(), "old".into());
        o.wanted_user_data_hash = Some("new".into());
        assert!(!o.user_data_matches());
        let opt_in = spec(&format!("{SPEC}replaceOnUserDataChange: true\n"));
        assert_eq!(
            diff(&opt_in, &o, &BTreeMap::new()),
            vec![InstanceChange::Replace]
        );
        assert!(diff(&spec(SPEC), &o, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn tag_drift_is_corrected_but_kaws_tags_are_kept() {
        let mut o = observed(state::RUNNING);
        o.tags = BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            (USER_DATA_TAG.to_string(), "h".to_string()),
        ]);
        let desired = BTreeMap::from([("team".to_string(), "b".to_string())]);
        let got = diff(&spec(SPEC), &o, &desired);
        let [InstanceChange::Tags(t)] = got.as_slice() else {
            panic!("expected one tag change, got {got:?}");
        };
        assert_eq!(t.set.get("team").map(String::as_str), Some("b"));
        assert!(t.remove.is_empty(), "kaws.io/ tags are never removed");
    }

    #[test]
    fn client_token_is_stable_per_object_and_new_per_replacement() {
        let uid = "6c1f0e1a-0000-4000-8000-000000000001";
        let first = client_token(uid, None);
        assert_eq!(first, client_token(uid, None));
        assert!(first.len() <= 64);
        assert_ne!(first, client_token(uid, Some("i-0123456789abcdef0")));
        assert_ne!(first, client_token("another-uid", None));
    }

    #[test]
    fn states_map_to_availability() {
        assert_eq!(
            availability(&observed(state::RUNNING)),
            Availability::Available
        );
        assert_eq!(
            availability(&observed(state::STOPPED)),
            Availability::Available
        );
        assert!(matches!(
            availability(&observed(state::PENDING)),
            Availability::Busy { .. }
        ));
        assert!(matches!(
            availability(&observed(state::TERMINATED)),
            Availability::Failed { reason, .. } if reason == "Terminated"
        ));
        assert!(diff(&spec(SPEC), &observed(state::PENDING), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn status_carries_identity_and_addresses() {
        let mut o = observed(state::RUNNING);
        o.private_ip_address = Some("10.0.0.5".into());
        o.owner_account = Some("123456789012".into());
        let mut status = InstanceStatus::default();
        fill_status(&o, "eu-west-1", "aws", &mut status);
        assert_eq!(status.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(status.private_ip_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(
            status.common.arn.as_deref(),
            Some("arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0")
        );
    }
}
