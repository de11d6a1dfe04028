//! Pure Bucket logic: spec validation and desired × observed → changes. No IO.

use std::collections::BTreeMap;

use super::types::{
    Bucket, BucketSpec, BucketStatus, CorsRule, Encryption, LifecycleRule, PublicAccessBlock,
    SseAlgorithm, VersioningStatus,
};
use crate::{
    aws::partition,
    core::{
        documents::Document,
        driver::{Availability, Change, Model, Target},
        names::tags::AWS_RESERVED_PREFIX,
    },
};

/// The bucket as S3 reports it, in the spec's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedBucket {
    pub region: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `None`: versioning was never enabled.
    pub versioning: Option<VersioningStatus>,
    pub encryption: Option<Encryption>,
    pub public_access_block: Option<PublicAccessBlock>,
    pub lifecycle_rules: Vec<LifecycleRule>,
    pub cors_rules: Vec<CorsRule>,
    pub policy: Option<String>,
}

/// One write that brings S3 closer to the spec. The order of the variants is the order they
/// are applied in: public access settings before a policy that depends on them.
#[derive(Clone, Debug, PartialEq)]
pub enum BucketChange {
    Tags(BTreeMap<String, String>),
    PublicAccessBlock(PublicAccessBlock),
    Encryption(Encryption),
    Versioning(VersioningStatus),
    /// Empty: remove the lifecycle configuration.
    LifecycleRules(Vec<LifecycleRule>),
    /// Empty: remove the CORS configuration.
    CorsRules(Vec<CorsRule>),
    /// `None`: remove the bucket policy.
    Policy(Option<String>),
}

impl Change for BucketChange {
    fn field(&self) -> &'static str {
        match self {
            BucketChange::Tags(_) => "tags",
            BucketChange::PublicAccessBlock(_) => "publicAccessBlock",
            BucketChange::Encryption(_) => "encryption",
            BucketChange::Versioning(_) => "versioning",
            BucketChange::LifecycleRules(_) => "lifecycleRules",
            BucketChange::CorsRules(_) => "corsRules",
            BucketChange::Policy(_) => "policy",
        }
    }
}

/// Storage classes a lifecycle transition can move objects to.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// Largest bucket policy S3 accepts.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// Checks S3's bucket naming rules and the parts of the spec S3 would reject, so the user
/// gets a clear message instead of an AWS error code.
pub fn validate(spec: &BucketSpec) -> Result<(), String> {
    validate_name(&spec.bucket_name)?;
    if let Some(policy) = &spec.policy {
        let text = policy.text();
        if text.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "spec.policy is {} bytes; S3 accepts bucket policies of at most {MAX_POLICY_BYTES} (20 KB)",
                text.len()
            ));
        }
        if let serde_json::Value::String(s) = &policy.0 {
            match serde_json::from_str::<serde_json::Value>(s) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return Err("policy must be a JSON object".to_string()),
                Err(e) => return Err(format!("policy is not valid JSON: {e}")),
            }
        }
        policy.check("spec.policy")?;
    }
    if let Some(enc) = &spec.encryption
        && enc.sse_algorithm == SseAlgorithm::Aes256
        && enc.kms_master_key_id.is_some()
    {
        return Err(
            "encryption.kmsMasterKeyID requires sseAlgorithm aws:kms or aws:kms:dsse".to_string(),
        );
    }
    let mut ids = std::collections::BTreeSet::new();
    for rule in &spec.lifecycle_rules {
        if !ids.insert(rule.id.as_str()) {
            return Err(format!("lifecycleRules: duplicate id {:?}", rule.id));
        }
        if rule.expiration_days.is_none()
            && rule.noncurrent_version_expiration_days.is_none()
            && rule.abort_incomplete_multipart_upload_days.is_none()
            && rule.transitions.is_empty()
        {
            return Err(format!(
                "lifecycleRules[{}]: the rule has no action",
                rule.id
            ));
        }
        if let Some(t) = rule
            .transitions
            .iter()
            .find(|t| !STORAGE_CLASSES.contains(&t.storage_class.as_str()))
        {
            return Err(format!(
                "spec.lifecycleRules[{}].transitions: storageClass {:?} is not one of {}",
                rule.id,
                t.storage_class,
                STORAGE_CLASSES.join(", ")
            ));
        }
    }
    for (i, rule) in spec.cors_rules.iter().enumerate() {
        if rule.allowed_methods.is_empty() || rule.allowed_origins.is_empty() {
            return Err(format!(
                "corsRules[{i}]: allowedMethods and allowedOrigins must not be empty"
            ));
        }
        for m in &rule.allowed_methods {
            if !["GET", "PUT", "POST", "DELETE", "HEAD"].contains(&m.as_str()) {
                return Err(format!("corsRules[{i}]: unsupported method {m:?}"));
            }
        }
    }
    spec.common.validate()?;
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "bucketName {name:?} is not a valid S3 bucket name: {why}"
        ))
    };
    if !(3..=63).contains(&name.len()) {
        return bad("it must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return bad("only lowercase letters, digits, dots and hyphens are allowed");
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_last_ok(name.chars().next()) || !first_last_ok(name.chars().last()) {
        return bad("it must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("it must not contain two adjacent dots");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("it must not look like an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return bad(&format!("the prefix {prefix:?} is reserved"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"] {
        if name.ends_with(suffix) {
            return bad(&format!("the suffix {suffix:?} is reserved"));
        }
    }
    Ok(())
}

/// The tag set to put when the observed one differs (`PutBucketTagging` replaces the whole set;
/// AWS-reserved `aws:*` tags are neither compared nor written).
pub fn tags_change(
    observed: &ObservedBucket,
    desired_tags: &BTreeMap<String, String>,
) -> Option<BucketChange> {
    let observed_tags: BTreeMap<String, String> = observed
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with(AWS_RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (&observed_tags != desired_tags).then(|| BucketChange::Tags(desired_tags.clone()))
}

/// The changes that make `observed` match `spec`; empty when S3 already matches.
pub fn diff(
    spec: &BucketSpec,
    observed: &ObservedBucket,
    desired_tags: &BTreeMap<String, String>,
) -> Vec<BucketChange> {
    let mut changes = Vec::new();
    changes.extend(tags_change(observed, desired_tags));

    let pab = spec.public_access_block.clone().unwrap_or_default();
    if observed.public_access_block.as_ref() != Some(&pab) {
        changes.push(BucketChange::PublicAccessBlock(pab));
    }

    let encryption = spec.encryption.clone().unwrap_or_default();
    if !encryption_matches(&encryption, observed.encryption.as_ref()) {
        changes.push(BucketChange::Encryption(encryption));
    }

    let versioning = spec.versioning;
    // A never-versioned bucket already behaves as Suspended; S3 cannot go back to it anyway.
    let observed_versioning = observed.versioning.unwrap_or(VersioningStatus::Suspended);
    if versioning != observed_versioning {
        changes.push(BucketChange::Versioning(versioning));
    }

    if normalized_lifecycle(&spec.lifecycle_rules)
        != normalized_lifecycle(&observed.lifecycle_rules)
    {
        changes.push(BucketChange::LifecycleRules(spec.lifecycle_rules.clone()));
    }

    if spec.cors_rules != observed.cors_rules {
        changes.push(BucketChange::CorsRules(spec.cors_rules.clone()));
    }

    if !policy_matches(spec.policy.as_ref(), observed.policy.as_deref()) {
        changes.push(BucketChange::Policy(
            spec.policy.as_ref().map(Document::text),
        ));
    }
    changes
}

fn encryption_matches(desired: &Encryption, observed: Option<&Encryption>) -> bool {
    let Some(observed) = observed else {
        return false;
    };
    if desired.sse_algorithm != observed.sse_algorithm {
        return false;
    }
    // S3 may report a key id given as an alias or bare id as a full ARN.
    let key_ok = match (&desired.kms_master_key_id, &observed.kms_master_key_id) {
        (None, _) => true,
        (Some(d), Some(o)) => o == d || o.ends_with(&format!("/{d}")),
        (Some(_), None) => false,
    };
    let bucket_key_ok = match desired.bucket_key_enabled {
        None => true,
        Some(d) => observed.bucket_key_enabled.unwrap_or(false) == d,
    };
    key_ok && bucket_key_ok
}

fn normalized_lifecycle(rules: &[LifecycleRule]) -> Vec<LifecycleRule> {
    let mut rules: Vec<LifecycleRule> = rules
        .iter()
        .cloned()
        .map(|mut r| {
            r.transitions.sort();
            if r.prefix.as_deref() == Some("") {
                r.prefix = None;
            }
            r
        })
        .collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    rules
}

/// Policies are compared by meaning (see `core::documents`), so S3 rewriting a document —
/// reformatted, one-element arrays collapsed — is not drift.
fn policy_matches(desired: Option<&Document>, observed: Option<&str>) -> bool {
    match (desired, observed) {
        (None, None) => true,
        (Some(d), Some(o)) => d.same_as(o),
        _ => false,
    }
}

/// The bucket's ARN (S3 bucket ARNs name no region or account; the partition follows the region).
pub fn bucket_arn(region: &str, bucket: &str) -> String {
    format!("arn:{}:s3:::{bucket}", partition(region))
}

/// The pure model of a Bucket: everything the driver decides without I/O.
pub struct BucketModel;

impl Model<Bucket> for BucketModel {
    type Observed = ObservedBucket;
    type Change = BucketChange;
    type Resolved = ();

    fn describe(obj: &Bucket) -> String {
        format!("S3 bucket {:?}", obj.spec.bucket_name)
    }

    fn validate(obj: &Bucket) -> std::result::Result<(), String> {
        validate(&obj.spec)
    }

    fn observed_tags(observed: &ObservedBucket) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(_observed: &ObservedBucket) -> Availability {
        // S3 buckets are usable as soon as CreateBucket returns.
        Availability::Available
    }

    fn plan(
        obj: &Bucket,
        observed: &ObservedBucket,
        _resolved: &(),
        tags: &BTreeMap<String, String>,
    ) -> Vec<BucketChange> {
        diff(&obj.spec, observed, tags)
    }

    fn tags_change(
        observed: &ObservedBucket,
        tags: &BTreeMap<String, String>,
    ) -> Option<BucketChange> {
        tags_change(observed, tags)
    }

    fn fill_status(
        obj: &Bucket,
        target: &Target,
        observed: &ObservedBucket,
        status: &mut BucketStatus,
    ) {
        let b = &obj.spec.bucket_name;
        status.bucket_name = Some(b.clone());
        status.common.arn = Some(bucket_arn(&target.region, b));
        status.versioning = observed.versioning.map(|v| match v {
            VersioningStatus::Enabled => "Enabled".to_string(),
            VersioningStatus::Suspended => "Suspended".to_string(),
        });
        status.sse_algorithm = observed.encryption.as_ref().map(|e| {
            serde_json::to_value(e.sse_algorithm)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        });
        status.public_access_block = observed.public_access_block.clone();
        status.lifecycle_rule_count = Some(observed.lifecycle_rules.len() as u32);
        status.cors_rule_count = Some(observed.cors_rules.len() as u32);
        status.has_policy = Some(observed.policy.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BucketSpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    fn tags() -> BTreeMap<String, String> {
        BTreeMap::from([("kaws.io/owner".to_string(), "c/ns/b".to_string())])
    }

    /// A bucket exactly as the default spec wants it.
    fn converged() -> ObservedBucket {
        ObservedBucket {
            tags: tags(),
            versioning: None,
            encryption: Some(Encryption::default()),
            public_access_block: Some(PublicAccessBlock::default()),
            ..Default::default()
        }
    }

    fn fields(changes: &[BucketChange]) -> Vec<&'static str> {
        changes.iter().map(Change::field).collect()
    }

    #[test]
    fn diff_cases() {
        let cases: Vec<(&str, &str, ObservedBucket, Vec<&str>)> = vec![
            (
                "default spec on a converged bucket needs nothing",
                "bucketName: b01",
                converged(),
                vec![],
            ),
            (
                "a brand-new bucket gets secure defaults and tags",
                "bucketName: b01",
                ObservedBucket::default(),
                vec!["tags", "publicAccessBlock", "encryption"],
            ),
            (
                "AWS-reserved tags are not drift",
                "bucketName: b01",
                ObservedBucket {
                    tags: {
                        let mut t = tags();
                        t.insert("aws:cloudformation:stack-name".into(), "x".into());
                        t
                    },
                    ..converged()
                },
                vec![],
            ),
            (
                "a tag added outside kaws is removed",
                "bucketName: b01",
                ObservedBucket {
                    tags: {
                        let mut t = tags();
                        t.insert("rogue".into(), "x".into());
                        t
                    },
                    ..converged()
                },
                vec!["tags"],
            ),
            (
                "versioning suspended outside is re-enabled",
                "bucketName: b01\nversioning: Enabled",
                ObservedBucket {
                    versioning: Some(VersioningStatus::Suspended),
                    ..converged()
                },
                vec!["versioning"],
            ),
            (
                "never-versioned bucket already counts as Suspended",
                "bucketName: b01\nversioning: Suspended",
                converged(),
                vec![],
            ),
            (
                "PAB turned off outside is turned back on",
                "bucketName: b01",
                ObservedBucket {
                    public_access_block: Some(PublicAccessBlock {
                        block_public_policy: false,
                        ..Default::default()
                    }),
                    ..converged()
                },
                vec!["publicAccessBlock"],
            ),
            (
                "KMS key reported as ARN matches a bare key id",
                "bucketName: b01\nencryption: {sseAlgorithm: 'aws:kms', kmsMasterKeyID: k-1}",
                ObservedBucket {
                    encryption: Some(Encryption {
                        sse_algorithm: SseAlgorithm::AwsKms,
                        kms_master_key_id: Some("arn:aws:kms:eu-west-1:1:key/k-1".into()),
                        bucket_key_enabled: None,
                    }),
                    ..converged()
                },
                vec![],
            ),
            (
                "lifecycle rules compare regardless of order",
                "bucketName: b01\nlifecycleRules: [{id: a, expirationDays: 3}, {id: b, expirationDays: 5}]",
                ObservedBucket {
                    lifecycle_rules: vec![
                        LifecycleRule {
                            id: "b".into(),
                            expiration_days: Some(5),
                            ..Default::default()
                        },
                        LifecycleRule {
                            id: "a".into(),
                            expiration_days: Some(3),
                            ..Default::default()
                        },
                    ],
                    ..converged()
                },
                vec![],
            ),
            (
                "removing lifecycle rules from the spec removes them from S3",
                "bucketName: b01",
                ObservedBucket {
                    lifecycle_rules: vec![LifecycleRule {
                        id: "a".into(),
                        expiration_days: Some(3),
                        ..Default::default()
                    }],
                    ..converged()
                },
                vec!["lifecycleRules"],
            ),
            (
                "policy whitespace and key order are not drift",
                "bucketName: b01\npolicy: '{\"Version\": \"2012-10-17\", \"Statement\": []}'",
                ObservedBucket {
                    policy: Some("{\"Statement\":[],\"Version\":\"2012-10-17\"}".into()),
                    ..converged()
                },
                vec![],
            ),
            (
                "S3 handing the policy back with one-element arrays collapsed is not drift",
                "bucketName: b01\npolicy: '{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Deny\", \"Principal\": {\"AWS\": [\"*\"]}, \"Action\": [\"s3:DeleteBucket\"], \"Resource\": [\"arn:aws:s3:::b01\"]}]}'",
                ObservedBucket {
                    policy: Some("{\"Version\":\"2012-10-17\",\"Statement\":{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:DeleteBucket\",\"Resource\":\"arn:aws:s3:::b01\"}}".into()),
                    ..converged()
                },
                vec![],
            ),
            (
                "a policy written as YAML structure is the document S3 hands back",
                "bucketName: b01\npolicy:\n  Version: '2012-10-17'\n  Statement:\n    - Effect: Deny\n      Principal: '*'\n      Action: s3:DeleteBucket\n      Resource: arn:aws:s3:::b01",
                ObservedBucket {
                    policy: Some("{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:DeleteBucket\",\"Resource\":\"arn:aws:s3:::b01\"}]}".into()),
                    ..converged()
                },
                vec![],
            ),
            (
                "a policy added outside is removed",
                "bucketName: b01",
                ObservedBucket {
                    policy: Some("{}".into()),
                    ..converged()
                },
                vec!["policy"],
            ),
            (
                "CORS added in the spec is applied",
                "bucketName: b01\ncorsRules: [{allowedMethods: [GET], allowedOrigins: ['*']}]",
                converged(),
                vec!["corsRules"],
            ),
        ];
        for (why, yaml, observed, want) in cases {
            let got = diff(&spec(yaml), &observed, &tags());
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn validation_cases() {
        let big_policy = format!(
            "bucketName: b01\npolicy: '{{\"a\": \"{}\"}}'",
            "x".repeat(20480)
        );
        let cases: Vec<(&str, &str, Option<&str>)> = vec![
            ("plain name", "bucketName: my-logs.2024", None),
            (
                "uppercase",
                "bucketName: My_Bucket",
                Some("only lowercase letters"),
            ),
            ("too short", "bucketName: ab", Some("3 to 63")),
            (
                "ends with hyphen",
                "bucketName: logs-",
                Some("begin and end"),
            ),
            ("adjacent dots", "bucketName: a..b", Some("adjacent dots")),
            ("IP address", "bucketName: 192.168.1.1", Some("IP address")),
            (
                "reserved suffix",
                "bucketName: logs-s3alias",
                Some("reserved"),
            ),
            (
                "policy not JSON",
                "bucketName: b01\npolicy: '{not json'",
                Some("policy is not valid JSON"),
            ),
            (
                "a policy statement with a wrong value names where",
                "bucketName: b01\npolicy: '{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": [1, {}]}]}'",
                Some("spec.policy: Statement[0].Action[1]: must be a string"),
            ),
            (
                "policy not an object",
                "bucketName: b01\npolicy: '[1]'",
                Some("JSON object"),
            ),
            (
                "KMS key with AES256",
                "bucketName: b01\nencryption: {kmsMasterKeyID: k}",
                Some("requires sseAlgorithm"),
            ),
            (
                "duplicate lifecycle id",
                "bucketName: b01\nlifecycleRules: [{id: a, expirationDays: 1}, {id: a, expirationDays: 2}]",
                Some("duplicate id"),
            ),
            (
                "lifecycle rule without action",
                "bucketName: b01\nlifecycleRules: [{id: a}]",
                Some("no action"),
            ),
            (
                "bad CORS method",
                "bucketName: b01\ncorsRules: [{allowedMethods: [PATCH], allowedOrigins: ['*']}]",
                Some("unsupported method"),
            ),
            (
                "reserved tag prefix",
                "bucketName: b01\ntags: {'aws:x': v}",
                Some("reserved by AWS"),
            ),
            (
                "kaws' own tag prefix is refused, not silently dropped",
                "bucketName: b01\ntags: {'kaws.io/team': v}",
                Some("spec.tags[\"kaws.io/team\"]"),
            ),
            (
                "a made-up region",
                "bucketName: b01\nregion: mars-1",
                Some("spec.region \"mars-1\""),
            ),
            (
                "a transition to an unknown storage class",
                "bucketName: b01\nlifecycleRules: [{id: a, transitions: [{days: 30, storageClass: COLD}]}]",
                Some("storageClass \"COLD\""),
            ),
            (
                "a transition to Glacier Instant Retrieval",
                "bucketName: b01\nlifecycleRules: [{id: a, transitions: [{days: 30, storageClass: GLACIER_IR}]}]",
                None,
            ),
            ("a policy over 20 KB", &big_policy, Some("at most 20480")),
        ];
        for (why, yaml, want) in cases {
            let got = validate(&spec(yaml));
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(fragment) => {
                    let msg = got.expect_err(why);
                    assert!(msg.contains(fragment), "{why}: {msg}");
                }
            }
        }
    }
}
