//! Pure Role logic: spec validation and desired × observed → changes. No IO.

use std::collections::{BTreeMap, BTreeSet};

use super::types::{Role, RoleSpec, RoleStatus};
use crate::{
    core::{
        driver::{Availability, Change, Model, Target},
        ownership::{TagChanges, tag_changes},
    },
    iam::check_name,
};

/// What IAM assumes when a role names no longest session.
pub const DEFAULT_MAX_SESSION_DURATION: i32 = 3600;

/// The role as IAM reports it, documents URL-decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedRole {
    pub arn: String,
    pub role_id: String,
    pub path: String,
    pub description: Option<String>,
    pub assume_role_policy: String,
    pub max_session_duration: i32,
    pub permissions_boundary: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Inline policies by name.
    pub inline_policies: BTreeMap<String, String>,
    /// ARNs of the attached managed policies.
    pub attached: BTreeSet<String>,
}

/// What the resolve step worked out: the role's path and boundary under the controller's
/// guard, and every managed policy to attach (`managedPolicyArns` and the `policyRefs`' ARNs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub path: String,
    pub boundary: Option<String>,
    pub policy_arns: BTreeSet<String>,
}

/// One write that brings IAM closer to the spec, in the order they are applied: the boundary
/// before anything that grants permissions, removals before additions.
#[derive(Clone, Debug, PartialEq)]
pub enum RoleChange {
    Tags(TagChanges),
    /// `None`: remove the boundary.
    PermissionsBoundary(Option<String>),
    AssumeRolePolicy(String),
    /// One `UpdateRole` with both settings: IAM (and moto) take them together.
    Settings {
        description: String,
        max_session_duration: i32,
        /// Which of them differ, for Events.
        changed: &'static str,
    },
    DeleteInlinePolicy(String),
    PutInlinePolicy {
        name: String,
        document: String,
    },
    Detach(String),
    Attach(String),
}

impl Change for RoleChange {
    fn field(&self) -> &'static str {
        match self {
            RoleChange::Tags(_) => "tags",
            RoleChange::PermissionsBoundary(_) => "permissionsBoundary",
            RoleChange::AssumeRolePolicy(_) => "assumeRolePolicy",
            RoleChange::Settings { changed, .. } => changed,
            RoleChange::DeleteInlinePolicy(_) | RoleChange::PutInlinePolicy { .. } => {
                "inlinePolicies"
            }
            RoleChange::Detach(_) | RoleChange::Attach(_) => "managedPolicyArns",
        }
    }
}

/// Checks the parts of the spec IAM would reject, so the user gets a clear message.
pub fn validate(spec: &RoleSpec) -> Result<(), String> {
    check_name("roleName", &spec.role_name, 64)?;
    spec.assume_role_policy.check("spec.assumeRolePolicy")?;
    for (name, document) in &spec.inline_policies {
        check_name("inlinePolicies: name", name, 128)?;
        document.check(&format!("spec.inlinePolicies.{name}"))?;
    }
    for arn in &spec.managed_policy_arns {
        check_policy_arn("spec.managedPolicyArns", arn)?;
    }
    if let Some(arn) = &spec.permissions_boundary {
        check_policy_arn("spec.permissionsBoundary", arn)?;
    }
    let mut refs = BTreeSet::new();
    for r in &spec.policy_refs {
        if !refs.insert(&r.name) {
            return Err(format!("spec.policyRefs: {:?} is listed twice", r.name));
        }
    }
    if let Some(seconds) = spec.max_session_duration
        && !(3600..=43200).contains(&seconds)
    {
        return Err(format!(
            "spec.maxSessionDuration {seconds} must be 3600 to 43200 seconds"
        ));
    }
    spec.common.validate()
}

/// A managed policy ARN: `arn:<partition>:iam::<account or aws>:policy/<path><name>`.
pub fn check_policy_arn(field: &str, arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[5].starts_with("policy/")
        && parts[5].len() > "policy/".len();
    if ok {
        Ok(())
    } else {
        Err(format!("{field}: {arn:?} is not an IAM managed policy ARN"))
    }
}

/// The changes that make `observed` match the spec; empty when IAM already matches.
pub fn diff(
    spec: &RoleSpec,
    observed: &ObservedRole,
    resolved: &Resolved,
    tags: &BTreeMap<String, String>,
) -> Vec<RoleChange> {
    let mut changes = Vec::new();
    changes.extend(tag_changes(tags, &observed.tags).map(RoleChange::Tags));
    if resolved.boundary != observed.permissions_boundary {
        changes.push(RoleChange::PermissionsBoundary(resolved.boundary.clone()));
    }
    if !spec
        .assume_role_policy
        .same_as(&observed.assume_role_policy)
    {
        changes.push(RoleChange::AssumeRolePolicy(spec.assume_role_policy.text()));
    }
    let description = spec.description.clone().unwrap_or_default();
    let max_session_duration = spec
        .max_session_duration
        .unwrap_or(DEFAULT_MAX_SESSION_DURATION);
    let changed = match (
        description != observed.description.clone().unwrap_or_default(),
        max_session_duration != observed.max_session_duration,
    ) {
        (true, true) => Some("description, maxSessionDuration"),
        (true, false) => Some("description"),
        (false, true) => Some("maxSessionDuration"),
        (false, false) => None,
    };
    if let Some(changed) = changed {
        changes.push(RoleChange::Settings {
            description,
            max_session_duration,
            changed,
        });
    }
    for name in observed.inline_policies.keys() {
        if !spec.inline_policies.contains_key(name) {
            changes.push(RoleChange::DeleteInlinePolicy(name.clone()));
        }
    }
    for arn in observed.attached.difference(&resolved.policy_arns) {
        changes.push(RoleChange::Detach(arn.clone()));
    }
    for (name, document) in &spec.inline_policies {
        let current = observed.inline_policies.get(name);
        if !current.is_some_and(|c| document.same_as(c)) {
            changes.push(RoleChange::PutInlinePolicy {
                name: name.clone(),
                document: document.text(),
            });
        }
    }
    for arn in resolved.policy_arns.difference(&observed.attached) {
        changes.push(RoleChange::Attach(arn.clone()));
    }
    changes
}

/// The pure model of a Role.
pub struct RoleModel;

impl Model<Role> for RoleModel {
    type Observed = ObservedRole;
    type Change = RoleChange;
    type Resolved = Resolved;

    fn describe(obj: &Role) -> String {
        format!("IAM role {:?}", obj.spec.role_name)
    }

    fn validate(obj: &Role) -> Result<(), String> {
        validate(&obj.spec)
    }

    fn conflict(obj: &Role, observed: &ObservedRole) -> Option<String> {
        let path = obj.spec.path.as_deref()?;
        (path != observed.path).then(|| {
            format!(
                "spec.path {path:?} differs from the role's path {:?}, which IAM cannot change",
                observed.path
            )
        })
    }

    fn observed_tags(observed: &ObservedRole) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(_observed: &ObservedRole) -> Availability {
        // IAM applies changes as it answers (propagation aside, which no API shows).
        Availability::Available
    }

    fn plan(
        obj: &Role,
        observed: &ObservedRole,
        resolved: &Resolved,
        tags: &BTreeMap<String, String>,
    ) -> Vec<RoleChange> {
        diff(&obj.spec, observed, resolved, tags)
    }

    fn tags_change(observed: &ObservedRole, tags: &BTreeMap<String, String>) -> Option<RoleChange> {
        tag_changes(tags, &observed.tags).map(RoleChange::Tags)
    }

    fn fill_status(obj: &Role, _target: &Target, observed: &ObservedRole, status: &mut RoleStatus) {
        status.role_name = Some(obj.spec.role_name.clone());
        status.common.arn = Some(observed.arn.clone());
        status.role_id = Some(observed.role_id.clone());
        status.path = Some(observed.path.clone());
        status.inline_policy_count = Some(observed.inline_policies.len() as u32);
        status.attached_policy_count = Some(observed.attached.len() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com"]},"Action":["sts:AssumeRole"]}]}"#;
    /// The same trust policy as IAM hands it back: URL-encoded, one-element arrays collapsed.
    const TRUST_FROM_IAM: &str = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22lambda.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
    const READ: &str = r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}"#;

    fn spec(yaml: &str) -> RoleSpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    fn base() -> String {
        format!("roleName: app\nassumeRolePolicy: '{TRUST}'\n")
    }

    fn tags() -> BTreeMap<String, String> {
        BTreeMap::from([("kaws.io/owner".to_string(), "c/ns/r".to_string())])
    }

    fn resolved(arns: &[&str]) -> Resolved {
        Resolved {
            path: "/kaws/".into(),
            boundary: None,
            policy_arns: arns.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn converged() -> ObservedRole {
        ObservedRole {
            arn: "arn:aws:iam::123456789012:role/kaws/app".into(),
            role_id: "AROA1".into(),
            path: "/kaws/".into(),
            assume_role_policy: crate::iam::decoded(TRUST_FROM_IAM),
            max_session_duration: 3600,
            tags: tags(),
            ..Default::default()
        }
    }

    fn fields(changes: &[RoleChange]) -> Vec<&'static str> {
        changes.iter().map(Change::field).collect()
    }

    #[test]
    fn diff_cases() {
        let arn = "arn:aws:iam::aws:policy/ReadOnlyAccess";
        let cases: Vec<(&str, String, ObservedRole, Resolved, Vec<&str>)> = vec![
            (
                "a trust policy IAM handed back rewritten is no drift",
                base(),
                converged(),
                resolved(&[]),
                vec![],
            ),
            (
                "the trust policy written as YAML structure is the same document",
                "roleName: app\nassumeRolePolicy:\n  Version: '2012-10-17'\n  Statement:\n    - Effect: Allow\n      Principal: {Service: lambda.amazonaws.com}\n      Action: sts:AssumeRole\n".into(),
                converged(),
                resolved(&[]),
                vec![],
            ),
            (
                "a changed trust policy is written",
                base().replace("lambda.amazonaws.com", "ec2.amazonaws.com"),
                converged(),
                resolved(&[]),
                vec!["assumeRolePolicy"],
            ),
            (
                "an inline policy added outside kaws is deleted",
                base(),
                ObservedRole {
                    inline_policies: BTreeMap::from([("rogue".into(), READ.into())]),
                    ..converged()
                },
                resolved(&[]),
                vec!["inlinePolicies"],
            ),
            (
                "an attachment made outside kaws is detached, a wanted one attached",
                base(),
                ObservedRole {
                    attached: BTreeSet::from(["arn:aws:iam::aws:policy/AdministratorAccess".into()]),
                    ..converged()
                },
                resolved(&[arn]),
                vec!["managedPolicyArns", "managedPolicyArns"],
            ),
            (
                "an inline policy equal by meaning is not rewritten",
                format!("{}inlinePolicies:\n  read: '{READ}'\n", base()),
                ObservedRole {
                    inline_policies: BTreeMap::from([(
                        "read".into(),
                        r#"{"Version":"2008-10-17","Statement":[{"Resource":["*"],"Action":["s3:GetObject"],"Effect":"Allow"}]}"#.into(),
                    )]),
                    ..converged()
                },
                resolved(&[]),
                vec![],
            ),
            (
                "description and longest session follow the spec",
                format!("{}description: app role\nmaxSessionDuration: 7200\n", base()),
                converged(),
                resolved(&[]),
                vec!["description, maxSessionDuration"],
            ),
            (
                "the controller's boundary goes on first",
                base(),
                ObservedRole {
                    tags: BTreeMap::new(),
                    ..converged()
                },
                Resolved {
                    boundary: Some("arn:aws:iam::123456789012:policy/boundary".into()),
                    ..resolved(&[])
                },
                vec!["tags", "permissionsBoundary"],
            ),
        ];
        for (name, yaml, observed, resolved, want) in cases {
            let changes = diff(&spec(&yaml), &observed, &resolved, &tags());
            assert_eq!(fields(&changes), want, "{name}: {changes:?}");
        }
    }

    #[test]
    fn invalid_specs_name_the_problem() {
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "a trust policy with a bad action",
                "roleName: app\nassumeRolePolicy: {Statement: [{Effect: Allow, Action: [sts:AssumeRole, {x: 1}]}]}\n".into(),
                "spec.assumeRolePolicy: Statement[0].Action[1]: must be a string",
            ),
            (
                "a trust policy that is not JSON",
                "roleName: app\nassumeRolePolicy: 'not json'\n".into(),
                "spec.assumeRolePolicy: the document is not JSON",
            ),
            (
                "an inline policy without statements",
                format!("{}inlinePolicies:\n  read: {{Version: '2012-10-17'}}\n", base()),
                "spec.inlinePolicies.read: Statement is missing",
            ),
            (
                "a managed policy that is no ARN",
                format!("{}managedPolicyArns: [ReadOnlyAccess]\n", base()),
                "is not an IAM managed policy ARN",
            ),
            (
                "a policy referenced twice",
                format!("{}policyRefs: [{{name: p}}, {{name: p}}]\n", base()),
                "listed twice",
            ),
            (
                "a role name IAM refuses",
                "roleName: 'my role'\nassumeRolePolicy: {Statement: []}\n".into(),
                "roleName \"my role\" may hold",
            ),
        ];
        for (name, yaml, want) in cases {
            let err = validate(&spec(&yaml)).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        assert!(validate(&spec(&base())).is_ok());
    }

    #[test]
    fn a_path_iam_cannot_change_is_a_conflict() {
        let role: Role = serde_saphyr::from_str(&format!(
            "apiVersion: iam.kaws.io/v1alpha1\nkind: Role\nmetadata: {{name: r, namespace: n}}\nspec:\n  roleName: app\n  path: /kaws/other/\n  assumeRolePolicy: '{TRUST}'\n"
        ))
        .unwrap();
        let message = RoleModel::conflict(&role, &converged()).expect("conflict");
        assert!(message.contains("/kaws/other/"), "{message}");
    }
}
