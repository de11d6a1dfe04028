//! The Role's AWS side: IAM calls that observe, create, update and delete a role.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_iam::{Client, error::ProvideErrorMetadata};
use kube::ResourceExt;

use super::{
    diff::{self, ObservedRole, Resolved, RoleChange},
    types::{Role, RoleStatus},
};
use crate::{
    aws::classify,
    core::{
        driver::{Connect, Created, DeleteProgress, External, Reads, Target},
        error::{Error, Result},
        ownership::TagChanges,
        references,
    },
    iam::{self, Guard, decoded, is_no_such_entity, owned_by_cluster, tag_list, tag_map},
    resources::policy::Policy,
};

/// IAM client, with what the role kind needs besides it.
pub struct Iam {
    iam: Client,
    kube: kube::Client,
    guard: Guard,
    cluster_id: String,
}

impl Iam {
    pub fn new(iam: Client, kube: kube::Client, guard: Guard, cluster_id: String) -> Self {
        Self {
            iam,
            kube,
            guard,
            cluster_id,
        }
    }

    async fn apply_change(&self, role: &str, change: &RoleChange) -> Result<()> {
        let c = &self.iam;
        match change {
            RoleChange::Tags(TagChanges { set, remove }) => {
                if !remove.is_empty() {
                    c.untag_role()
                        .role_name(role)
                        .set_tag_keys(Some(remove.clone()))
                        .send()
                        .await
                        .map_err(|e| classify("UntagRole", &e))?;
                }
                if !set.is_empty() {
                    c.tag_role()
                        .role_name(role)
                        .set_tags(Some(tag_list(set)?))
                        .send()
                        .await
                        .map_err(|e| classify("TagRole", &e))?;
                }
            }
            RoleChange::PermissionsBoundary(Some(arn)) => {
                c.put_role_permissions_boundary()
                    .role_name(role)
                    .permissions_boundary(arn)
                    .send()
                    .await
                    .map_err(|e| classify("PutRolePermissionsBoundary", &e))?;
            }
            RoleChange::PermissionsBoundary(None) => {
                c.delete_role_permissions_boundary()
                    .role_name(role)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteRolePermissionsBoundary", &e))?;
            }
            RoleChange::AssumeRolePolicy(document) => {
                c.update_assume_role_policy()
                    .role_name(role)
                    .policy_document(document)
                    .send()
                    .await
                    .map_err(|e| classify("UpdateAssumeRolePolicy", &e))?;
            }
            RoleChange::Settings {
                description,
                max_session_duration,
                ..
            } => {
                c.update_role()
                    .role_name(role)
                    .description(description)
                    .max_session_duration(*max_session_duration)
                    .send()
                    .await
                    .map_err(|e| classify("UpdateRole", &e))?;
            }
            RoleChange::DeleteInlinePolicy(name) => {
                iam::removed(
                    "DeleteRolePolicy",
                    c.delete_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .send()
                        .await,
                )?;
            }
            RoleChange::PutInlinePolicy { name, document } => {
                c.put_role_policy()
                    .role_name(role)
                    .policy_name(name)
                    .policy_document(document)
                    .send()
                    .await
                    .map_err(|e| classify("PutRolePolicy", &e))?;
            }
            RoleChange::Detach(arn) => detach(c, role, arn).await?,
            RoleChange::Attach(arn) => {
                c.attach_role_policy()
                    .role_name(role)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| classify("AttachRolePolicy", &e))?;
            }
        }
        Ok(())
    }

    /// Removes the role from the instance profiles kaws owns; refuses (before any write) when
    /// an instance profile kaws does not own uses it.
    async fn leave_instance_profiles(&self, role: &str) -> Result<()> {
        let profiles = self
            .iam
            .list_instance_profiles_for_role()
            .role_name(role)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("ListInstanceProfilesForRole", &e))?;
        let mut ours = Vec::new();
        for profile in profiles {
            let name = profile.instance_profile_name().to_string();
            let tags = match self
                .iam
                .get_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await
            {
                Ok(out) => out
                    .instance_profile()
                    .map(|p| tag_map(p.tags()))
                    .unwrap_or_default(),
                Err(e) if is_no_such_entity(&e) => continue,
                Err(e) => return Err(classify("GetInstanceProfile", &e)),
            };
            if !owned_by_cluster(&tags, &self.cluster_id) {
                return Err(Error::Blocked {
                    reason: "RoleInUse",
                    message: format!(
                        "IAM role {role:?} is used by instance profile {name:?}, which kaws does not own: remove the role from it (aws iam remove-role-from-instance-profile) and kaws deletes the role"
                    ),
                });
            }
            ours.push(name);
        }
        for name in ours {
            iam::removed(
                "RemoveRoleFromInstanceProfile",
                self.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(&name)
                    .role_name(role)
                    .send()
                    .await,
            )?;
        }
        Ok(())
    }
}

/// Detaches a managed policy; already detached is done.
pub async fn detach(c: &Client, role: &str, arn: &str) -> Result<()> {
    iam::removed(
        "DetachRolePolicy",
        c.detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await,
    )
}

#[async_trait]
impl External<Role> for Iam {
    type Model = diff::RoleModel;
    const IAM_STATEMENTS: &'static str = "IAMRole";

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            iam::client(c.sdk, c.metrics),
            c.client.clone(),
            c.iam.clone(),
            c.cluster_id.to_string(),
        )
    }

    /// The path and boundary under the controller's guard (refused before any IAM call when
    /// the spec asks for more), and the ARNs of the referenced Policies once they are Ready.
    async fn resolve(&self, obj: &Role, _target: &Target) -> Result<Resolved> {
        let spec = &obj.spec;
        let path = self.guard.path("spec.path", spec.path.as_deref())?;
        let boundary = self.guard.boundary(spec.permissions_boundary.as_deref())?;
        let mut policy_arns: std::collections::BTreeSet<String> =
            spec.managed_policy_arns.iter().cloned().collect();
        let ns = obj.namespace().unwrap_or_default();
        for r in &spec.policy_refs {
            let policy: Policy =
                references::ready(&self.kube, &ns, &r.name, "spec.policyRefs").await?;
            policy_arns.insert(references::arn_of(&policy, "spec.policyRefs")?);
        }
        Ok(Resolved {
            path,
            boundary,
            policy_arns,
        })
    }

    async fn observe(
        &self,
        obj: &Role,
        _target: &Target,
        resolved: Option<&Resolved>,
        _reads: Reads,
    ) -> Result<Option<ObservedRole>> {
        let name = obj.spec.role_name.as_str();
        let role = match self.iam.get_role().role_name(name).send().await {
            Ok(out) => match out.role {
                Some(role) => role,
                None => return Ok(None),
            },
            Err(e) if is_no_such_entity(&e) => return Ok(None),
            Err(e) => return Err(classify("GetRole", &e)),
        };
        // Names are unique in the account whatever the path: a role outside the prefix is
        // never written to, not even when adoption is asked for.
        if resolved.is_some() && !self.guard.allows(role.path()) {
            return Err(Error::InvalidSpec(format!(
                "IAM role {name:?} exists with path {:?}, outside the IAM path prefix {:?} kaws may manage (--iam-path-prefix); kaws will not change it",
                role.path(),
                self.guard.path_prefix
            )));
        }
        let (inline_names, attached) = futures::join!(
            self.iam
                .list_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect(),
            self.iam
                .list_attached_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .try_collect(),
        );
        let inline_names = inline_names.map_err(|e| classify("ListRolePolicies", &e))?;
        let attached = attached.map_err(|e| classify("ListAttachedRolePolicies", &e))?;
        let mut inline_policies = BTreeMap::new();
        for policy in inline_names {
            match self
                .iam
                .get_role_policy()
                .role_name(name)
                .policy_name(&policy)
                .send()
                .await
            {
                Ok(out) => {
                    inline_policies.insert(policy, decoded(out.policy_document()));
                }
                // Deleted between the two calls.
                Err(e) if is_no_such_entity(&e) => {}
                Err(e) => return Err(classify("GetRolePolicy", &e)),
            }
        }
        Ok(Some(ObservedRole {
            arn: role.arn().to_string(),
            role_id: role.role_id().to_string(),
            path: role.path().to_string(),
            description: role.description().map(str::to_string),
            assume_role_policy: role
                .assume_role_policy_document()
                .map(decoded)
                .unwrap_or_default(),
            max_session_duration: role
                .max_session_duration()
                .unwrap_or(diff::DEFAULT_MAX_SESSION_DURATION),
            permissions_boundary: role
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string),
            tags: tag_map(role.tags()),
            inline_policies,
            attached: attached
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect(),
        }))
    }

    async fn create(
        &self,
        obj: &Role,
        _target: &Target,
        resolved: &mut Resolved,
        tags: &BTreeMap<String, String>,
        status: &mut RoleStatus,
    ) -> Result<Created> {
        let spec = &obj.spec;
        let created = self
            .iam
            .create_role()
            .role_name(&spec.role_name)
            .path(&resolved.path)
            .assume_role_policy_document(spec.assume_role_policy.text())
            .set_description(spec.description.clone())
            .set_max_session_duration(spec.max_session_duration)
            .set_permissions_boundary(resolved.boundary.clone())
            .set_tags(Some(tag_list(tags)?))
            .customize()
            .config_override(iam::single_attempt())
            .send()
            .await;
        match created {
            Ok(out) => {
                status.role_name = Some(spec.role_name.clone());
                if let Some(role) = out.role() {
                    status.common.arn = Some(role.arn().to_string());
                    status.role_id = Some(role.role_id().to_string());
                    status.path = Some(role.path().to_string());
                }
                Ok(Created::New)
            }
            Err(e) if e.code() == Some("EntityAlreadyExists") => Ok(Created::Existed),
            Err(e) => Err(classify("CreateRole", &e)),
        }
    }

    async fn update(
        &self,
        obj: &Role,
        _target: &Target,
        _observed: &ObservedRole,
        _resolved: &mut Resolved,
        changes: &[RoleChange],
    ) -> Result<()> {
        for change in changes {
            self.apply_change(&obj.spec.role_name, change).await?;
        }
        Ok(())
    }

    /// Instance profiles first (refused while one kaws does not own uses the role), then the
    /// attachments and inline policies IAM requires gone, then the role.
    async fn delete(
        &self,
        obj: &Role,
        _target: &Target,
        observed: &ObservedRole,
    ) -> Result<DeleteProgress> {
        let role = obj.spec.role_name.as_str();
        self.leave_instance_profiles(role).await?;
        for arn in &observed.attached {
            detach(&self.iam, role, arn).await?;
        }
        for name in observed.inline_policies.keys() {
            self.apply_change(role, &RoleChange::DeleteInlinePolicy(name.clone()))
                .await?;
        }
        iam::deleted(
            "DeleteRole",
            self.iam.delete_role().role_name(role).send().await,
        )
    }
}
