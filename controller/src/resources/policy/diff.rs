//! Pure Policy logic: spec validation and desired × observed → changes. No IO.

use std::collections::BTreeMap;

use super::types::{Policy, PolicySpec, PolicyStatus};
use crate::{
    core::{
        driver::{Availability, Change, Model, Target},
        ownership::{TagChanges, tag_changes},
    },
    iam::check_name,
};

/// How many versions IAM keeps of one managed policy.
pub const MAX_VERSIONS: usize = 5;

/// One stored version of the policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Version {
    pub id: String,
    pub is_default: bool,
    /// Seconds since the epoch.
    pub created: i64,
}

/// The policy as IAM reports it, the default version's document URL-decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedPolicy {
    pub arn: String,
    pub policy_id: String,
    pub path: String,
    pub description: Option<String>,
    pub default_version_id: String,
    pub document: String,
    pub versions: Vec<Version>,
    pub attachment_count: i32,
    pub tags: BTreeMap<String, String>,
}

/// What the resolve step worked out: the path under the controller's guard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub path: String,
}

/// One write that brings IAM closer to the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyChange {
    Tags(TagChanges),
    /// A new default version with this document, after deleting `make_room` (the oldest
    /// non-default version) when IAM's limit is reached.
    Document {
        document: String,
        make_room: Option<String>,
    },
}

impl Change for PolicyChange {
    fn field(&self) -> &'static str {
        match self {
            PolicyChange::Tags(_) => "tags",
            PolicyChange::Document { .. } => "document",
        }
    }
}

pub fn validate(spec: &PolicySpec) -> Result<(), String> {
    check_name("policyName", &spec.policy_name, 128)?;
    spec.document.check("spec.document")?;
    spec.common.validate()
}

/// The oldest version that is not the default, when the policy has as many as IAM keeps.
pub fn version_to_delete(versions: &[Version]) -> Option<String> {
    if versions.len() < MAX_VERSIONS {
        return None;
    }
    versions
        .iter()
        .filter(|v| !v.is_default)
        .min_by_key(|v| (v.created, v.id.clone()))
        .map(|v| v.id.clone())
}

pub fn diff(
    spec: &PolicySpec,
    observed: &ObservedPolicy,
    tags: &BTreeMap<String, String>,
) -> Vec<PolicyChange> {
    let mut changes = Vec::new();
    changes.extend(tag_changes(tags, &observed.tags).map(PolicyChange::Tags));
    if !spec.document.same_as(&observed.document) {
        changes.push(PolicyChange::Document {
            document: spec.document.text(),
            make_room: version_to_delete(&observed.versions),
        });
    }
    changes
}

/// The pure model of a Policy.
pub struct PolicyModel;

impl Model<Policy> for PolicyModel {
    type Observed = ObservedPolicy;
    type Change = PolicyChange;
    type Resolved = Resolved;

    fn describe(obj: &Policy) -> String {
        format!("IAM policy {:?}", obj.spec.policy_name)
    }

    fn validate(obj: &Policy) -> Result<(), String> {
        validate(&obj.spec)
    }

    fn conflict(obj: &Policy, observed: &ObservedPolicy) -> Option<String> {
        if let Some(path) = obj.spec.path.as_deref()
            && path != observed.path
        {
            return Some(format!(
                "spec.path {path:?} differs from the policy's path {:?}, which IAM cannot change",
                observed.path
            ));
        }
        let wanted = obj.spec.description.as_deref().unwrap_or_default();
        let has = observed.description.as_deref().unwrap_or_default();
        (wanted != has).then(|| {
            format!(
                "spec.description differs from the policy's description {has:?}, which IAM cannot change"
            )
        })
    }

    fn observed_tags(observed: &ObservedPolicy) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(_observed: &ObservedPolicy) -> Availability {
        Availability::Available
    }

    fn plan(
        obj: &Policy,
        observed: &ObservedPolicy,
        _resolved: &Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<PolicyChange> {
        diff(&obj.spec, observed, tags)
    }

    fn tags_change(
        observed: &ObservedPolicy,
        tags: &BTreeMap<String, String>,
    ) -> Option<PolicyChange> {
        tag_changes(tags, &observed.tags).map(PolicyChange::Tags)
    }

    fn fill_status(
        obj: &Policy,
        _target: &Target,
        observed: &ObservedPolicy,
        status: &mut PolicyStatus,
    ) {
        status.policy_name = Some(obj.spec.policy_name.clone());
        status.common.arn = Some(observed.arn.clone());
        status.policy_id = Some(observed.policy_id.clone());
        status.path = Some(observed.path.clone());
        status.default_version_id = Some(observed.default_version_id.clone());
        status.attachment_count = Some(observed.attachment_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PolicySpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    fn version(id: &str, is_default: bool, created: i64) -> Version {
        Version {
            id: id.into(),
            is_default,
            created,
        }
    }

    #[test]
    fn the_oldest_non_default_version_makes_room_at_the_limit() {
        let four = vec![
            version("v1", false, 1),
            version("v2", false, 2),
            version("v3", false, 3),
            version("v4", true, 4),
        ];
        assert_eq!(version_to_delete(&four), None);
        let five = vec![
            version("v1", true, 1),
            version("v2", false, 2),
            version("v3", false, 3),
            version("v4", false, 4),
            version("v5", false, 5),
        ];
        assert_eq!(version_to_delete(&five).as_deref(), Some("v2"));
    }

    #[test]
    fn a_document_iam_rewrote_is_no_change_and_a_new_one_is() {
        let s = spec(
            "policyName: p\ndocument: {Version: '2012-10-17', Statement: [{Effect: Allow, Action: [s3:GetObject], Resource: ['*']}]}\n",
        );
        let observed = ObservedPolicy {
            document: crate::iam::decoded(
                "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22%2A%22%7D%7D",
            ),
            ..Default::default()
        };
        assert_eq!(diff(&s, &observed, &BTreeMap::new()), vec![]);
        let changed = ObservedPolicy {
            document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}]}"#.into(),
            versions: (1..=5).map(|i| version(&format!("v{i}"), i == 5, i)).collect(),
            ..observed
        };
        let changes = diff(&s, &changed, &BTreeMap::new());
        assert!(
            matches!(&changes[..], [PolicyChange::Document { make_room: Some(v), .. }] if v == "v1"),
            "{changes:?}"
        );
    }

    #[test]
    fn description_and_path_iam_cannot_change_are_conflicts() {
        let p = |extra: &str| -> Policy {
            serde_saphyr::from_str(&format!(
                "apiVersion: iam.kaws.io/v1alpha1\nkind: Policy\nmetadata: {{name: p, namespace: n}}\nspec:\n  policyName: p\n  document: {{Statement: []}}\n{extra}"
            ))
            .unwrap()
        };
        let observed = ObservedPolicy {
            path: "/kaws/".into(),
            description: Some("old".into()),
            ..Default::default()
        };
        assert!(PolicyModel::conflict(&p("  description: new\n"), &observed).is_some());
        assert!(PolicyModel::conflict(&p("  description: old\n"), &observed).is_none());
        assert!(
            PolicyModel::conflict(&p("  description: old\n  path: /kaws/x/\n"), &observed)
                .is_some()
        );
    }
}
