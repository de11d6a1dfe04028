//! The Policy's AWS side: IAM calls that observe, create, update and delete a managed policy.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_iam::{Client, error::ProvideErrorMetadata};

use super::{
    diff::{self, ObservedPolicy, PolicyChange, Resolved, Version},
    types::{Policy, PolicyStatus},
};
use crate::{
    aws::{classify, partition},
    core::{
        driver::{Connect, Created, DeleteProgress, External, Reads, Target},
        error::{Error, Result},
        ownership::TagChanges,
    },
    iam::{self, Account, Guard, decoded, is_no_such_entity, owned_by_cluster, tag_list, tag_map},
    resources::role::aws::detach,
};

/// IAM client, with what the policy kind needs besides it.
pub struct Iam {
    iam: Client,
    account: Account,
    guard: Guard,
    cluster_id: String,
}

impl Iam {
    /// The ARN the policy has (or will have) in IAM.
    async fn arn(&self, obj: &Policy, target: &Target) -> Result<String> {
        let path = obj
            .spec
            .path
            .clone()
            .unwrap_or_else(|| self.guard.path_prefix.clone());
        Ok(format!(
            "arn:{}:iam::{}:policy{path}{}",
            partition(&target.region),
            self.account.id().await?,
            obj.spec.policy_name
        ))
    }

    async fn apply_change(&self, arn: &str, change: &PolicyChange) -> Result<()> {
        let c = &self.iam;
        match change {
            PolicyChange::Tags(TagChanges { set, remove }) => {
                if !remove.is_empty() {
                    c.untag_policy()
                        .policy_arn(arn)
                        .set_tag_keys(Some(remove.clone()))
                        .send()
                        .await
                        .map_err(|e| classify("UntagPolicy", &e))?;
                }
                if !set.is_empty() {
                    c.tag_policy()
                        .policy_arn(arn)
                        .set_tags(Some(tag_list(set)?))
                        .send()
                        .await
                        .map_err(|e| classify("TagPolicy", &e))?;
                }
            }
            PolicyChange::Document {
                document,
                make_room,
            } => {
                if let Some(version) = make_room {
                    delete_version(c, arn, version).await?;
                }
                c.create_policy_version()
                    .policy_arn(arn)
                    .policy_document(document)
                    .set_as_default(true)
                    .send()
                    .await
                    .map_err(|e| classify("CreatePolicyVersion", &e))?;
            }
        }
        Ok(())
    }

    /// Detaches the policy from the roles kaws owns; refuses (before any write) while a role
    /// kaws does not own, a user or a group has it attached.
    async fn detach_everywhere(&self, arn: &str) -> Result<()> {
        let mut roles = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_entities_for_policy()
                .policy_arn(arn)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| classify("ListEntitiesForPolicy", &e))?;
            let foreign = page
                .policy_users()
                .iter()
                .filter_map(|u| u.user_name())
                .map(|u| format!("user {u:?}"))
                .chain(
                    page.policy_groups()
                        .iter()
                        .filter_map(|g| g.group_name())
                        .map(|g| format!("group {g:?}")),
                )
                .next();
            if let Some(entity) = foreign {
                return Err(in_use(arn, &entity));
            }
            roles.extend(
                page.policy_roles()
                    .iter()
                    .filter_map(|r| r.role_name().map(str::to_string)),
            );
            if page.is_truncated() {
                marker = page.marker().map(str::to_string);
            } else {
                break;
            }
        }
        for role in &roles {
            let tags = match self.iam.get_role().role_name(role).send().await {
                Ok(out) => out.role().map(|r| tag_map(r.tags())).unwrap_or_default(),
                Err(e) if is_no_such_entity(&e) => continue,
                Err(e) => return Err(classify("GetRole", &e)),
            };
            if !owned_by_cluster(&tags, &self.cluster_id) {
                return Err(in_use(arn, &format!("role {role:?}")));
            }
        }
        for role in &roles {
            detach(&self.iam, role, arn).await?;
        }
        Ok(())
    }
}

fn in_use(arn: &str, entity: &str) -> Error {
    Error::Blocked {
        reason: "PolicyInUse",
        message: format!(
            "IAM policy {arn:?} is attached to {entity}, which kaws does not own: detach it there and kaws deletes the policy"
        ),
    }
}

async fn delete_version(c: &Client, arn: &str, version: &str) -> Result<()> {
    iam::removed(
        "DeletePolicyVersion",
        c.delete_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await,
    )
}

#[async_trait]
impl External<Policy> for Iam {
    type Model = diff::PolicyModel;
    const IAM_STATEMENTS: &'static str = "IAMPolicy";

    fn connect(c: &Connect<'_>) -> Self {
        Self {
            iam: iam::client(c.sdk, c.metrics),
            account: Account::new(c.sdk, c.metrics),
            guard: c.iam.clone(),
            cluster_id: c.cluster_id.to_string(),
        }
    }

    /// The path under the controller's guard, refused before any IAM call when outside it.
    async fn resolve(&self, obj: &Policy, _target: &Target) -> Result<Resolved> {
        Ok(Resolved {
            path: self.guard.path("spec.path", obj.spec.path.as_deref())?,
        })
    }

    async fn observe(
        &self,
        obj: &Policy,
        target: &Target,
        _resolved: Option<&Resolved>,
        _reads: Reads,
    ) -> Result<Option<ObservedPolicy>> {
        let arn = self.arn(obj, target).await?;
        let policy = match self.iam.get_policy().policy_arn(&arn).send().await {
            Ok(out) => match out.policy {
                Some(policy) => policy,
                None => return Ok(None),
            },
            Err(e) if is_no_such_entity(&e) => return Ok(None),
            Err(e) => return Err(classify("GetPolicy", &e)),
        };
        let default_version_id = policy.default_version_id().unwrap_or_default().to_string();
        let (document, versions) = futures::join!(
            self.iam
                .get_policy_version()
                .policy_arn(&arn)
                .version_id(&default_version_id)
                .send(),
            self.iam
                .list_policy_versions()
                .policy_arn(&arn)
                .into_paginator()
                .items()
                .send()
                .try_collect(),
        );
        let document = document.map_err(|e| classify("GetPolicyVersion", &e))?;
        let versions = versions.map_err(|e| classify("ListPolicyVersions", &e))?;
        Ok(Some(ObservedPolicy {
            arn,
            policy_id: policy.policy_id().unwrap_or_default().to_string(),
            path: policy.path().unwrap_or("/").to_string(),
            description: policy.description().map(str::to_string),
            default_version_id,
            document: document
                .policy_version()
                .and_then(|v| v.document())
                .map(decoded)
                .unwrap_or_default(),
            versions: versions
                .iter()
                .map(|v| Version {
                    id: v.version_id().unwrap_or_default().to_string(),
                    is_default: v.is_default_version(),
                    created: v.create_date().map(|d| d.secs()).unwrap_or_default(),
                })
                .collect(),
            attachment_count: policy.attachment_count().unwrap_or_default(),
            tags: tag_map(policy.tags()),
        }))
    }

    async fn create(
        &self,
        obj: &Policy,
        target: &Target,
        resolved: &mut Resolved,
        tags: &BTreeMap<String, String>,
        status: &mut PolicyStatus,
    ) -> Result<Created> {
        let spec = &obj.spec;
        let created = self
            .iam
            .create_policy()
            .policy_name(&spec.policy_name)
            .path(&resolved.path)
            .policy_document(spec.document.text())
            .set_description(spec.description.clone())
            .set_tags(Some(tag_list(tags)?))
            .customize()
            .config_override(iam::single_attempt())
            .send()
            .await;
        match created {
            Ok(out) => {
                status.policy_name = Some(spec.policy_name.clone());
                if let Some(policy) = out.policy() {
                    status.common.arn = policy.arn().map(str::to_string);
                    status.policy_id = policy.policy_id().map(str::to_string);
                    status.default_version_id = policy.default_version_id().map(str::to_string);
                }
                Ok(Created::New)
            }
            // Policy names are unique in the account whatever the path: one at another path
            // is not the one this object would create, and never will be.
            Err(e) if e.code() == Some("EntityAlreadyExists") => {
                let arn = self.arn(obj, target).await?;
                match self.iam.get_policy().policy_arn(&arn).send().await {
                    Ok(_) => Ok(Created::Existed),
                    Err(g) if is_no_such_entity(&g) => Err(Error::InvalidSpec(format!(
                        "an IAM policy named {:?} exists at another path than {:?}: IAM policy names are unique in the account",
                        spec.policy_name, resolved.path
                    ))),
                    Err(g) => Err(classify("GetPolicy", &g)),
                }
            }
            Err(e) => Err(classify("CreatePolicy", &e)),
        }
    }

    async fn update(
        &self,
        _obj: &Policy,
        _target: &Target,
        observed: &ObservedPolicy,
        _resolved: &mut Resolved,
        changes: &[PolicyChange],
    ) -> Result<()> {
        for change in changes {
            self.apply_change(&observed.arn, change).await?;
        }
        Ok(())
    }

    /// Detached from the roles kaws owns (refused while anything else has it), its other
    /// versions deleted, then the policy.
    async fn delete(
        &self,
        _obj: &Policy,
        _target: &Target,
        observed: &ObservedPolicy,
    ) -> Result<DeleteProgress> {
        let arn = observed.arn.as_str();
        self.detach_everywhere(arn).await?;
        for version in observed.versions.iter().filter(|v| !v.is_default) {
            delete_version(&self.iam, arn, &version.id).await?;
        }
        iam::deleted(
            "DeletePolicy",
            self.iam.delete_policy().policy_arn(arn).send().await,
        )
    }
}
