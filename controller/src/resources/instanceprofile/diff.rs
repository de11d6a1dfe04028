//! Pure InstanceProfile logic: spec validation and desired × observed → changes. No IO.

use std::collections::BTreeMap;

use super::types::{InstanceProfile, InstanceProfileSpec, InstanceProfileStatus};
use crate::{
    core::{
        driver::{Availability, Change, Model, Target},
        ownership::{TagChanges, tag_changes},
    },
    iam::check_name,
};

/// The instance profile as IAM reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedInstanceProfile {
    pub arn: String,
    pub id: String,
    pub path: String,
    /// Names of the roles in it (IAM allows one).
    pub roles: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// What the resolve step worked out: the path under the controller's guard and the name of the
/// role to put in the profile (checked to lie under the guard's prefix too).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub path: String,
    pub role: Option<String>,
}

/// One write that brings IAM closer to the spec, removals first (a profile holds one role).
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceProfileChange {
    Tags(TagChanges),
    RemoveRole(String),
    AddRole(String),
}

impl Change for InstanceProfileChange {
    fn field(&self) -> &'static str {
        match self {
            InstanceProfileChange::Tags(_) => "tags",
            InstanceProfileChange::RemoveRole(_) | InstanceProfileChange::AddRole(_) => "role",
        }
    }
}

pub fn validate(spec: &InstanceProfileSpec) -> Result<(), String> {
    check_name("instanceProfileName", &spec.instance_profile_name, 128)?;
    if spec.role_ref.is_some() && spec.role_name.is_some() {
        return Err("set spec.roleRef or spec.roleName, not both".to_string());
    }
    if let Some(role) = &spec.role_name {
        check_name("roleName", role, 64)?;
    }
    spec.common.validate()
}

pub fn diff(
    observed: &ObservedInstanceProfile,
    resolved: &Resolved,
    tags: &BTreeMap<String, String>,
) -> Vec<InstanceProfileChange> {
    let mut changes = Vec::new();
    changes.extend(tag_changes(tags, &observed.tags).map(InstanceProfileChange::Tags));
    for role in &observed.roles {
        if resolved.role.as_ref() != Some(role) {
            changes.push(InstanceProfileChange::RemoveRole(role.clone()));
        }
    }
    if let Some(role) = &resolved.role
        && !observed.roles.contains(role)
    {
        changes.push(InstanceProfileChange::AddRole(role.clone()));
    }
    changes
}

/// The pure model of an InstanceProfile.
pub struct InstanceProfileModel;

impl Model<InstanceProfile> for InstanceProfileModel {
    type Observed = ObservedInstanceProfile;
    type Change = InstanceProfileChange;
    type Resolved = Resolved;

    fn describe(obj: &InstanceProfile) -> String {
        format!("IAM instance profile {:?}", obj.spec.instance_profile_name)
    }

    fn validate(obj: &InstanceProfile) -> Result<(), String> {
        validate(&obj.spec)
    }

    fn conflict(obj: &InstanceProfile, observed: &ObservedInstanceProfile) -> Option<String> {
        let path = obj.spec.path.as_deref()?;
        (path != observed.path).then(|| {
            format!(
                "spec.path {path:?} differs from the instance profile's path {:?}, which IAM cannot change",
                observed.path
            )
        })
    }

    fn observed_tags(observed: &ObservedInstanceProfile) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(_observed: &ObservedInstanceProfile) -> Availability {
        Availability::Available
    }

    fn plan(
        _obj: &InstanceProfile,
        observed: &ObservedInstanceProfile,
        resolved: &Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<InstanceProfileChange> {
        diff(observed, resolved, tags)
    }

    fn tags_change(
        observed: &ObservedInstanceProfile,
        tags: &BTreeMap<String, String>,
    ) -> Option<InstanceProfileChange> {
        tag_changes(tags, &observed.tags).map(InstanceProfileChange::Tags)
    }

    fn fill_status(
        obj: &InstanceProfile,
        _target: &Target,
        observed: &ObservedInstanceProfile,
        status: &mut InstanceProfileStatus,
    ) {
        status.instance_profile_name = Some(obj.spec.instance_profile_name.clone());
        status.common.arn = Some(observed.arn.clone());
        status.instance_profile_id = Some(observed.id.clone());
        status.path = Some(observed.path.clone());
        status.role_name = observed.roles.first().cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(roles: &[&str]) -> ObservedInstanceProfile {
        ObservedInstanceProfile {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    fn wants(role: Option<&str>) -> Resolved {
        Resolved {
            path: "/kaws/".into(),
            role: role.map(str::to_string),
        }
    }

    #[test]
    fn the_profile_holds_exactly_the_wanted_role() {
        let none = BTreeMap::new();
        assert_eq!(diff(&observed(&["a"]), &wants(Some("a")), &none), vec![]);
        assert_eq!(
            diff(&observed(&[]), &wants(Some("a")), &none),
            vec![InstanceProfileChange::AddRole("a".into())]
        );
        assert_eq!(
            diff(&observed(&["b"]), &wants(Some("a")), &none),
            vec![
                InstanceProfileChange::RemoveRole("b".into()),
                InstanceProfileChange::AddRole("a".into())
            ]
        );
        assert_eq!(
            diff(&observed(&["b"]), &wants(None), &none),
            vec![InstanceProfileChange::RemoveRole("b".into())]
        );
    }
}
