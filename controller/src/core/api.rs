//! API fields every kind shares: the common spec fields and the common status fields.

use std::{collections::BTreeMap, fmt::Debug, sync::LazyLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Where a kind's AWS resources live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// In one region: the spec has `region` (default: the controller's), status reports it.
    Regional,
    /// Account-wide (IAM): no `region` in spec or status.
    Global,
}

/// What happens to the AWS resource when the Kubernetes object is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the AWS resource, then release the object.
    #[default]
    Delete,
    /// Release the object and leave the AWS resource untouched.
    Retain,
}

/// Whether kaws may write to the AWS resource.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ManagementPolicy {
    /// Create, update and delete the AWS resource to match the spec.
    #[default]
    Manage,
    /// Only read an existing AWS resource into status; never create, change or delete it.
    ObserveOnly,
}

/// What a group of API fields flattened into a spec or status must be.
pub trait ApiFields:
    Clone
    + Debug
    + Default
    + Serialize
    + DeserializeOwned
    + JsonSchema
    + PartialEq
    + Send
    + Sync
    + 'static
{
}

impl<T> ApiFields for T where
    T: Clone
        + Debug
        + Default
        + Serialize
        + DeserializeOwned
        + JsonSchema
        + PartialEq
        + Send
        + Sync
        + 'static
{
}

/// The fields a kind's [`Scope`] adds to its spec and status: [`Regional`] or [`Global`].
pub trait Placement: ApiFields {
    const SCOPE: Scope;
    /// What it adds to the status.
    type Status: ApiFields;

    /// `spec.region`, when the kind has one and it is set.
    fn region(&self) -> Option<&str>;
    /// Pure checks of the placement fields.
    fn validate(&self) -> Result<(), String>;
    /// Records where the resource lives in the status (nothing for a global kind).
    fn record(status: &mut Self::Status, region: &str);
}

/// Spec fields of a regional kind (flattened into [`CommonSpec`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct Regional {
    /// AWS region of the resource, e.g. `eu-west-1`. Defaults to the controller's region. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN))]
    pub region: Option<String>,
}

/// Status fields of a regional kind (flattened into [`CommonStatus`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct RegionStatus {
    /// Region the AWS resource lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Placement for Regional {
    const SCOPE: Scope = Scope::Regional;
    type Status = RegionStatus;

    fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The region, when given, must look like an AWS region: a made-up one would only fail at
    /// the first AWS call (an endpoint that does not resolve), retried forever.
    fn validate(&self) -> Result<(), String> {
        match &self.region {
            Some(region) if !REGION.is_match(region) => Err(format!(
                "spec.region {region:?} is not an AWS region name (e.g. eu-west-1, us-gov-west-1)"
            )),
            _ => Ok(()),
        }
    }

    fn record(status: &mut RegionStatus, region: &str) {
        status.region = Some(region.to_string());
    }
}

/// A global kind (IAM) adds nothing: no `region` in spec or status. Its AWS calls go to the
/// service's global endpoint through a client built for the controller's region.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct Global {}

impl Placement for Global {
    const SCOPE: Scope = Scope::Global;
    type Status = Global;

    fn region(&self) -> Option<&str> {
        None
    }
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn record(_: &mut Global, _: &str) {}
}

/// Spec fields shared by every kind (flattened into each kind's spec); `P` adds the scope's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommonSpec<P = Regional> {
    #[serde(flatten)]
    pub placement: P,
    /// `Delete` (default: the controller's `--default-deletion-policy`) deletes the AWS resource
    /// with the object; `Retain` leaves it in AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// `Manage` (default) keeps AWS matching the spec; `ObserveOnly` only reads an existing
    /// resource into status and never writes or deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
    /// Tags for the AWS resource, at most 48: AWS allows 50 per resource and kaws adds two of its
    /// own, `kaws.io/owner` and `kaws.io/uid` (an Instance also `kaws.io/user-data-hash`, so 47
    /// there). Keys are 1-128 and values 0-256 letters, digits, spaces and `_ . : / = + - @`.
    /// The prefixes `kaws.io/` (kaws' own tags) and `aws:` (reserved by AWS) are refused.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_USER_TAGS,
        "additionalProperties" = {"type": "string", "maxLength": TAG_VALUE_MAX, "pattern": TAG_CHARS_PATTERN},
        "x-kubernetes-validations" = [
            {"rule": "self.all(k, size(k) >= 1 && size(k) <= 128)", "message": "tag keys must be 1 to 128 characters"},
            {"rule": "self.all(k, !k.startsWith('kaws.io/'))", "message": "tag keys starting with kaws.io/ are reserved for the tags kaws sets itself (kaws.io/owner, kaws.io/uid)"},
            {"rule": "self.all(k, !k.startsWith('aws:'))", "message": "tag keys starting with aws: are reserved by AWS"},
        ],
    ))]
    pub tags: Tags,
}

/// A spec's tags: one entry per key, sorted by key; in the API, a map of strings. Held as a
/// sorted vector rather than a `BTreeMap`, whose first node takes ~540 bytes however few tags
/// it holds: every cached object keeps its spec, and most carry a handful of tags (10,000
/// objects with three tags each: ~4 MiB less).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tags in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(String, String)> for Tags {
    /// The last value given for a key wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter.into_iter().collect();
        Tags(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Tags {
    fn from(tags: [(String, String); N]) -> Self {
        tags.into_iter().collect()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer)
            .map(|map| Tags(map.into_iter().collect()))
    }
}

impl JsonSchema for Tags {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, String>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, String>>::json_schema(generator)
    }

    fn inline_schema() -> bool {
        <BTreeMap<String, String>>::inline_schema()
    }
}

/// An AWS region name: `eu-west-1`, `us-gov-west-1`, `us-isob-east-1`, `eusc-de-east-1` …
pub const REGION_PATTERN: &str = r"^[a-z]{2,4}(-gov|-iso[a-z]?)?(-[a-z]+){1,2}-[0-9]{1,2}$";

/// Tags per resource on S3, RDS, DynamoDB, Lambda and EC2 alike.
pub const AWS_MAX_TAGS: usize = 50;
/// What is left for the user: AWS's limit minus `kaws.io/owner` and `kaws.io/uid`.
pub const MAX_USER_TAGS: usize = AWS_MAX_TAGS - 2;
/// Longest tag key AWS accepts, in characters.
pub const TAG_KEY_MAX: usize = 128;
/// Longest tag value AWS accepts, in characters.
pub const TAG_VALUE_MAX: usize = 256;
/// Characters every one of the five services accepts in tag keys and values (EC2 accepts more,
/// the others do not).
pub const TAG_CHARS_PATTERN: &str = r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$";

fn regex(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("the pattern is a valid regular expression")
}

static REGION: LazyLock<regex::Regex> = LazyLock::new(|| regex(REGION_PATTERN));
static TAG_CHARS: LazyLock<regex::Regex> = LazyLock::new(|| regex(TAG_CHARS_PATTERN));

impl<P: Placement> CommonSpec<P> {
    pub fn management_policy(&self) -> ManagementPolicy {
        self.management_policy.unwrap_or_default()
    }

    /// Pure checks of the shared fields, for kinds that write no tags beyond the owner and uid
    /// tags. The CRD schema holds the same rules; this catches objects stored before it did.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_reserving(0)
    }

    /// [`Self::validate`] for a kind that writes `own_tags` more tags of its own, which count
    /// against AWS's limit too.
    pub fn validate_reserving(&self, own_tags: usize) -> Result<(), String> {
        self.validate_region()?;
        self.validate_tags_within(MAX_USER_TAGS.saturating_sub(own_tags))
    }

    /// The placement fields ([`Placement::validate`]).
    pub fn validate_region(&self) -> Result<(), String> {
        self.placement.validate()
    }

    /// The user's tags as all five services accept them: at most 48 (the default), keys of
    /// 1-128 and values of 0-256 allowed characters, no `kaws.io/` (kaws' own tags, which would
    /// be written once and never removed again) and no `aws:` (AWS's, refused by every service).
    pub fn validate_tags(&self) -> Result<(), String> {
        self.validate_tags_within(MAX_USER_TAGS)
    }

    /// [`Self::validate_tags`] with at most `max` tags.
    pub fn validate_tags_within(&self, max: usize) -> Result<(), String> {
        if self.tags.len() > max {
            return Err(format!(
                "spec.tags has {} tags; at most {max} are allowed (AWS allows {AWS_MAX_TAGS} per resource and kaws adds {} of its own)",
                self.tags.len(),
                AWS_MAX_TAGS - max
            ));
        }
        for (key, value) in self.tags.iter() {
            check_tag(key, value).map_err(|why| format!("spec.tags[{key:?}]: {why}"))?;
        }
        Ok(())
    }
}

/// Why AWS would refuse one tag. The value is never quoted: a message names the key only.
fn check_tag(key: &str, value: &str) -> Result<(), String> {
    use super::names::tags::{AWS_RESERVED_PREFIX, KAWS_PREFIX, OWNER, UID};
    const ALLOWED: &str = "letters, digits, spaces and _ . : / = + - @";
    if key.starts_with(KAWS_PREFIX) {
        return Err(format!(
            "the prefix {KAWS_PREFIX:?} is reserved for the tags kaws sets itself ({OWNER}, {UID}); use another key"
        ));
    }
    if key.to_ascii_lowercase().starts_with(AWS_RESERVED_PREFIX) {
        return Err(format!(
            "the prefix {AWS_RESERVED_PREFIX:?} is reserved by AWS"
        ));
    }
    if !(1..=TAG_KEY_MAX).contains(&key.chars().count()) {
        return Err(format!("a tag key must be 1 to {TAG_KEY_MAX} characters"));
    }
    if !TAG_CHARS.is_match(key) {
        return Err(format!("a tag key may contain only {ALLOWED}"));
    }
    if value.chars().count() > TAG_VALUE_MAX {
        return Err(format!(
            "the value must be at most {TAG_VALUE_MAX} characters"
        ));
    }
    if !TAG_CHARS.is_match(value) {
        return Err(format!("the value may contain only {ALLOWED}"));
    }
    Ok(())
}

/// Status fields shared by every kind (flattened into each kind's status); `R` adds the scope's
/// ([`Placement::Status`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus<R = RegionStatus> {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the AWS resource exists, is usable and matches the spec.
    /// `Synced`: the last reconcile reached AWS and applied the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// ARN of the AWS resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(flatten)]
    pub placement: R,
    /// The last `kaws.io/reconcile-requested-at` annotation value that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Set just before kaws asks AWS to create the resource, cleared once kaws has seen it carry
    /// this object's owner tags. While set, a resource with this identity and no owner tag is
    /// recognised as the one kaws created (a crash, a lost answer or an endpoint that drops
    /// create-time tags) and tagged, never reported as `AlreadyExists` or left behind on delete.
    // Always written, as null once settled: server-side apply clears a field only when told.
    #[serde(default)]
    pub create_pending_since: Option<Time>,
}

/// CEL rule that makes the optional `region` immutable: it may be neither added, removed nor
/// changed after creation.
pub const REGION_IMMUTABLE_RULE: &str = "has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)";

#[cfg(test)]
mod tests {
    use super::*;

    fn common(yaml: &str) -> CommonSpec {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn tags_read_and_write_as_a_map_in_key_order() {
        let spec = common("tags: {zeta: '1', alpha: '2', mid: ''}");
        assert_eq!(
            spec.tags
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["alpha", "mid", "zeta"]
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"tags": {"alpha": "2", "mid": "", "zeta": "1"}})
        );
        assert_eq!(
            serde_json::to_value(common("{}")).unwrap(),
            serde_json::json!({}),
            "no tags: no field"
        );
        let last_wins: Tags = [
            ("k".to_string(), "a".to_string()),
            ("k".to_string(), "b".to_string()),
        ]
        .into();
        assert_eq!(
            last_wins.iter().collect::<Vec<_>>(),
            [(&"k".to_string(), &"b".to_string())]
        );
        // The schema is a map of strings, as it was when the field was a `BTreeMap`.
        assert_eq!(
            schemars::schema_for!(Tags),
            schemars::schema_for!(BTreeMap<String, String>)
        );
    }

    fn many_tags(n: usize) -> String {
        let tags: Vec<String> = (0..n).map(|i| format!("t{i}: v")).collect();
        format!("tags: {{{}}}", tags.join(", "))
    }

    #[test]
    fn shared_fields_are_checked_as_aws_would() {
        let long = "k".repeat(129);
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("no region: the controller's", "{}".into(), None),
            ("a commercial region", "region: eu-west-1".into(), None),
            ("a GovCloud region", "region: us-gov-west-1".into(), None),
            ("an ISO region", "region: us-isob-east-1".into(), None),
            (
                "the European sovereign cloud",
                "region: eusc-de-east-1".into(),
                None,
            ),
            (
                "a made-up region",
                "region: mars-1".into(),
                Some("spec.region \"mars-1\" is not an AWS region"),
            ),
            (
                "upper case",
                "region: EU-WEST-1".into(),
                Some("spec.region"),
            ),
            (
                "an availability zone",
                "region: eu-west-1a".into(),
                Some("spec.region"),
            ),
            (
                "plain tags",
                "tags: {team: data, 'cost center': '4711', 'a/b': 'x=y+z@w:v'}".into(),
                None,
            ),
            (
                "unicode letters are allowed",
                "tags: {équipe: données}".into(),
                None,
            ),
            ("an empty value is allowed", "tags: {flag: ''}".into(), None),
            (
                "kaws' own prefix is refused, not silently dropped",
                "tags: {'kaws.io/owner': me}".into(),
                Some("spec.tags[\"kaws.io/owner\"]: the prefix \"kaws.io/\" is reserved"),
            ),
            (
                "AWS's prefix",
                "tags: {'aws:x': v}".into(),
                Some("reserved by AWS"),
            ),
            (
                "AWS's prefix in capitals",
                "tags: {'AWS:x': v}".into(),
                Some("reserved by AWS"),
            ),
            (
                "a key too long",
                format!("tags: {{{long}: v}}"),
                Some("1 to 128 characters"),
            ),
            (
                "a value too long",
                format!("tags: {{k: {}}}", "v".repeat(257)),
                Some("at most 256"),
            ),
            (
                "a key with a forbidden character",
                "tags: {'a*b': v}".into(),
                Some("spec.tags[\"a*b\"]: a tag key may contain only"),
            ),
            (
                "a value with a forbidden character",
                "tags: {k: 'a;b'}".into(),
                Some("the value may contain only"),
            ),
            ("48 tags fit", many_tags(48), None),
            (
                "49 tags do not",
                many_tags(49),
                Some("spec.tags has 49 tags; at most 48"),
            ),
        ];
        for (why, yaml, want) in cases {
            let got = common(&yaml).validate();
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
    fn a_kind_with_tags_of_its_own_leaves_fewer_for_the_user() {
        let spec = common(&many_tags(48));
        assert_eq!(spec.validate(), Ok(()));
        let msg = spec
            .validate_reserving(1)
            .expect_err("48 + 3 kaws tags > 50");
        assert!(msg.contains("at most 47"), "{msg}");
    }

    #[test]
    fn a_global_kind_has_no_region_in_spec_or_status() {
        let props = |schema: schemars::Schema| {
            let mut keys: Vec<String> = schema
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        let regional = props(schemars::schema_for!(CommonSpec<Regional>));
        let global = props(schemars::schema_for!(CommonSpec<Global>));
        assert!(regional.contains(&"region".to_string()), "{regional:?}");
        assert!(!global.contains(&"region".to_string()), "{global:?}");
        assert_eq!(regional.len(), global.len() + 1);
        let status = props(schemars::schema_for!(CommonStatus<Global>));
        assert!(!status.contains(&"region".to_string()), "{status:?}");
        assert!(props(schemars::schema_for!(CommonStatus)).contains(&"region".to_string()));

        // A region sent to a global kind anyway is not part of its spec (the API server prunes
        // it; kaws never reads it), and recording a region in its status writes nothing.
        let spec: CommonSpec<Global> =
            serde_saphyr::from_str("region: eu-west-1\ntags: {a: b}").expect("parses");
        assert_eq!(spec.placement.region(), None);
        assert_eq!(spec.validate(), Ok(()));
        let mut status = CommonStatus::<Global>::default();
        Global::record(&mut status.placement, "eu-west-1");
        let json = serde_json::to_value(&status).expect("serializes");
        assert!(json.get("region").is_none(), "{json}");
    }

    #[test]
    fn a_tag_message_never_quotes_the_value() {
        let msg = common("tags: {k: 'secret;value'}")
            .validate()
            .expect_err("bad value");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
