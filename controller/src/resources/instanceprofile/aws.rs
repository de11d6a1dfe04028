//! The InstanceProfile's AWS side: IAM calls that observe, create, update and delete it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_iam::{Client, error::ProvideErrorMetadata};
use kube::ResourceExt;

use super::{
    diff::{self, InstanceProfileChange, ObservedInstanceProfile, Resolved},
    types::{InstanceProfile, InstanceProfileStatus},
};
use crate::{
    aws::classify,
    core::{
        driver::{Connect, Created, DeleteProgress, External, Reads, Target},
        error::{Error, Result},
        ownership::TagChanges,
        references,
    },
    iam::{self, Guard, is_no_such_entity, tag_list, tag_map},
    resources::role::Role,
};

/// IAM client, with what the instance profile kind needs besides it.
pub struct Iam {
    iam: Client,
    kube: kube::Client,
    guard: Guard,
}

impl Iam {
    /// The role the profile should hold, refused when it lies outside the guard's prefix.
    async fn role(&self, obj: &InstanceProfile) -> Result<Option<String>> {
        let spec = &obj.spec;
        let (name, path) = if let Some(r) = &spec.role_ref {
            let ns = obj.namespace().unwrap_or_default();
            let role: Role = references::ready(&self.kube, &ns, &r.name, "spec.roleRef").await?;
            let status = role.status.clone().unwrap_or_default();
            (
                status.role_name.unwrap_or(role.spec.role_name),
                status.path.unwrap_or_default(),
            )
        } else if let Some(name) = &spec.role_name {
            match self.iam.get_role().role_name(name).send().await {
                Ok(out) => (
                    name.clone(),
                    out.role().map(|r| r.path().to_string()).unwrap_or_default(),
                ),
                Err(e) if is_no_such_entity(&e) => {
                    return Err(Error::DependencyNotReady(format!(
                        "IAM role {name:?} named by spec.roleName does not exist"
                    )));
                }
                Err(e) => return Err(classify("GetRole", &e)),
            }
        } else {
            return Ok(None);
        };
        if !self.guard.allows(&path) {
            return Err(Error::InvalidSpec(format!(
                "IAM role {name:?} has path {path:?}, outside the IAM path prefix {:?} kaws may manage (--iam-path-prefix): kaws hands EC2 no role it could not create itself",
                self.guard.path_prefix
            )));
        }
        Ok(Some(name))
    }

    async fn apply_change(&self, profile: &str, change: &InstanceProfileChange) -> Result<()> {
        let c = &self.iam;
        match change {
            InstanceProfileChange::Tags(TagChanges { set, remove }) => {
                if !remove.is_empty() {
                    c.untag_instance_profile()
                        .instance_profile_name(profile)
                        .set_tag_keys(Some(remove.clone()))
                        .send()
                        .await
                        .map_err(|e| classify("UntagInstanceProfile", &e))?;
                }
                if !set.is_empty() {
                    c.tag_instance_profile()
                        .instance_profile_name(profile)
                        .set_tags(Some(tag_list(set)?))
                        .send()
                        .await
                        .map_err(|e| classify("TagInstanceProfile", &e))?;
                }
            }
            InstanceProfileChange::RemoveRole(role) => {
                iam::removed(
                    "RemoveRoleFromInstanceProfile",
                    c.remove_role_from_instance_profile()
                        .instance_profile_name(profile)
                        .role_name(role)
                        .send()
                        .await,
                )?;
            }
            InstanceProfileChange::AddRole(role) => {
                c.add_role_to_instance_profile()
                    .instance_profile_name(profile)
                    .role_name(role)
                    .send()
                    .await
                    .map_err(|e| classify("AddRoleToInstanceProfile", &e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl External<InstanceProfile> for Iam {
    type Model = diff::InstanceProfileModel;
    const IAM_STATEMENTS: &'static str = "IAMInstanceProfile";

    fn connect(c: &Connect<'_>) -> Self {
        Self {
            iam: iam::client(c.sdk, c.metrics),
            kube: c.client.clone(),
            guard: c.iam.clone(),
        }
    }

    async fn resolve(&self, obj: &InstanceProfile, _target: &Target) -> Result<Resolved> {
        Ok(Resolved {
            path: self.guard.path("spec.path", obj.spec.path.as_deref())?,
            role: self.role(obj).await?,
        })
    }

    async fn observe(
        &self,
        obj: &InstanceProfile,
        _target: &Target,
        resolved: Option<&Resolved>,
        _reads: Reads,
    ) -> Result<Option<ObservedInstanceProfile>> {
        let name = obj.spec.instance_profile_name.as_str();
        let profile = match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(out) => match out.instance_profile {
                Some(p) => p,
                None => return Ok(None),
            },
            Err(e) if is_no_such_entity(&e) => return Ok(None),
            Err(e) => return Err(classify("GetInstanceProfile", &e)),
        };
        if resolved.is_some() && !self.guard.allows(profile.path()) {
            return Err(Error::InvalidSpec(format!(
                "IAM instance profile {name:?} exists with path {:?}, outside the IAM path prefix {:?} kaws may manage (--iam-path-prefix); kaws will not change it",
                profile.path(),
                self.guard.path_prefix
            )));
        }
        Ok(Some(ObservedInstanceProfile {
            arn: profile.arn().to_string(),
            id: profile.instance_profile_id().to_string(),
            path: profile.path().to_string(),
            roles: profile
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect(),
            tags: tag_map(profile.tags()),
        }))
    }

    async fn create(
        &self,
        obj: &InstanceProfile,
        _target: &Target,
        resolved: &mut Resolved,
        tags: &BTreeMap<String, String>,
        status: &mut InstanceProfileStatus,
    ) -> Result<Created> {
        let name = &obj.spec.instance_profile_name;
        let created = self
            .iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(&resolved.path)
            .set_tags(Some(tag_list(tags)?))
            .customize()
            .config_override(iam::single_attempt())
            .send()
            .await;
        match created {
            Ok(out) => {
                status.instance_profile_name = Some(name.clone());
                if let Some(p) = out.instance_profile() {
                    status.common.arn = Some(p.arn().to_string());
                    status.instance_profile_id = Some(p.instance_profile_id().to_string());
                    status.path = Some(p.path().to_string());
                }
                Ok(Created::New)
            }
            Err(e) if e.code() == Some("EntityAlreadyExists") => Ok(Created::Existed),
            Err(e) => Err(classify("CreateInstanceProfile", &e)),
        }
    }

    async fn update(
        &self,
        obj: &InstanceProfile,
        _target: &Target,
        _observed: &ObservedInstanceProfile,
        _resolved: &mut Resolved,
        changes: &[InstanceProfileChange],
    ) -> Result<()> {
        for change in changes {
            self.apply_change(&obj.spec.instance_profile_name, change)
                .await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        obj: &InstanceProfile,
        _target: &Target,
        observed: &ObservedInstanceProfile,
    ) -> Result<DeleteProgress> {
        let name = obj.spec.instance_profile_name.as_str();
        for role in &observed.roles {
            self.apply_change(name, &InstanceProfileChange::RemoveRole(role.clone()))
                .await?;
        }
        iam::deleted(
            "DeleteInstanceProfile",
            self.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send()
                .await,
        )
    }
}
