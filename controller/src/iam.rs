//! IAM plumbing shared by the IAM kinds (Role, Policy, InstanceProfile): the one client (IAM is
//! global), the guard that keeps kaws from escalating its own privileges, and IAM's answers.
//!
//! The guard is the code half of a promise the shipped IAM policy (`deploy/iam/policy.json`)
//! also enforces: kaws creates and changes roles, policies and instance profiles only under one
//! path prefix (`--iam-path-prefix`, default `/kaws/`), and sets the permissions boundary
//! `--iam-permissions-boundary` on every role it creates. A spec that asks for anything else is
//! refused with `InvalidSpec` before any IAM call, so the refusal is clear instead of an
//! `AccessDenied` from AWS.

use std::collections::BTreeMap;

use aws_config::{Region, SdkConfig};
use aws_sdk_iam::{Client, error::ProvideErrorMetadata};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};

use crate::{
    aws::{CallMetrics, classify, describe},
    core::{driver::DeleteProgress, error::Error, names::tags},
    metrics::SharedMetrics,
};

/// Where kaws keeps the IAM resources it manages unless told otherwise.
pub const DEFAULT_PATH_PREFIX: &str = "/kaws/";

/// What kaws may do in IAM (`--iam-path-prefix`, `--iam-permissions-boundary`).
#[derive(Clone, Debug)]
pub struct Guard {
    /// Every role, policy and instance profile kaws creates or changes has a path under this.
    pub path_prefix: String,
    /// Set on every role kaws creates or manages; a spec naming another boundary is refused.
    pub permissions_boundary: Option<String>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            path_prefix: DEFAULT_PATH_PREFIX.to_string(),
            permissions_boundary: None,
        }
    }
}

impl Guard {
    /// Checks the settings at start-up: the prefix must be a valid IAM path.
    pub fn validate(&self) -> Result<(), String> {
        check_path_syntax(&self.path_prefix).map_err(|e| format!("--iam-path-prefix: {e}"))
    }

    /// The path of a resource whose spec names `spec` (default: the prefix); refused when it is
    /// not a valid IAM path or lies outside the prefix.
    pub fn path(&self, field: &str, spec: Option<&str>) -> Result<String, Error> {
        let path = spec.unwrap_or(&self.path_prefix);
        check_path_syntax(path).map_err(|e| Error::InvalidSpec(format!("{field}: {e}")))?;
        if !self.allows(path) {
            return Err(Error::InvalidSpec(format!(
                "{field} {path:?} is outside the IAM path prefix {:?} kaws may manage (--iam-path-prefix)",
                self.path_prefix
            )));
        }
        Ok(path.to_string())
    }

    /// Whether kaws may change a resource at `path`.
    pub fn allows(&self, path: &str) -> bool {
        path.starts_with(&self.path_prefix)
    }

    /// The permissions boundary of a role whose spec names `spec`: the controller's boundary
    /// when one is configured (a spec naming another is refused), else the spec's.
    pub fn boundary(&self, spec: Option<&str>) -> Result<Option<String>, Error> {
        match (&self.permissions_boundary, spec) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(Error::InvalidSpec(format!(
                "spec.permissionsBoundary {theirs:?} is not the boundary kaws sets on every role ({ours:?}, --iam-permissions-boundary): leave it out or name that one"
            ))),
            (Some(ours), _) => Ok(Some(ours.clone())),
            (None, theirs) => Ok(theirs.map(str::to_string)),
        }
    }
}

/// IAM's rules for a path: `/`, or `/` + segments + `/`, at most 512 printable ASCII characters.
fn check_path_syntax(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 512 {
        return Err(format!("path {path:?} must be 1 to 512 characters long"));
    }
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err(format!("path {path:?} must begin and end with /"));
    }
    if path.contains("//") || !path.chars().all(|c| ('!'..='~').contains(&c)) {
        return Err(format!(
            "path {path:?} may hold printable ASCII characters only, without empty segments"
        ));
    }
    Ok(())
}

/// IAM's name rule for roles, policies and instance profiles: letters, digits and `+=,.@_-`.
pub fn check_name(field: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "{field} {name:?} must be 1 to {max} characters long"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(format!(
            "{field} {name:?} may hold letters, digits and + = , . @ _ - only"
        ));
    }
    Ok(())
}

/// The IAM client: IAM has one global endpoint, reached through the controller's region.
pub fn client(sdk: &SdkConfig, metrics: &SharedMetrics) -> Client {
    let region = sdk
        .region()
        .cloned()
        .unwrap_or_else(|| Region::new("us-east-1"));
    let conf = aws_sdk_iam::config::Builder::from(sdk)
        .region(region)
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

/// The account kaws runs in, asked of STS once (`GetCallerIdentity` needs no permission): a
/// managed policy's ARN is `arn:<partition>:iam::<account>:policy<path><name>`, so kaws reads
/// a policy by its ARN instead of listing the account's policies.
pub struct Account {
    sts: aws_sdk_sts::Client,
    id: tokio::sync::OnceCell<String>,
}

impl Account {
    pub fn new(sdk: &SdkConfig, metrics: &SharedMetrics) -> Self {
        let conf = aws_sdk_sts::config::Builder::from(sdk)
            .interceptor(CallMetrics(metrics.clone()))
            .build();
        Self {
            sts: aws_sdk_sts::Client::from_conf(conf),
            id: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn id(&self) -> Result<String, Error> {
        self.id
            .get_or_try_init(|| async {
                let out = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| crate::aws::classify("GetCallerIdentity", &e))?;
                out.account()
                    .map(str::to_string)
                    .ok_or_else(|| Error::AwsTransient {
                        operation: "GetCallerIdentity".to_string(),
                        message: "STS named no account".to_string(),
                    })
            })
            .await
            .cloned()
    }
}

/// A create call is never retried inside the SDK: a retry after a lost answer would be told the
/// resource exists and could not tell that it created it itself.
pub fn single_attempt() -> aws_sdk_iam::config::Builder {
    aws_sdk_iam::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

/// Whether an IAM error says the entity does not exist.
pub fn is_no_such_entity<E: ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("NoSuchEntity")
}

/// The answer of a removal (detach, delete an inline policy or a version, remove a role from a
/// profile): done, also when IAM says the entity is gone already.
pub fn removed<T, E>(
    operation: &str,
    res: Result<T, SdkError<E, HttpResponse>>,
) -> Result<(), Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_no_such_entity(&e) => Ok(()),
        Err(e) => Err(classify(operation, &e)),
    }
}

/// The answer of the final delete call of a role, policy or instance profile: gone (also when
/// it was gone already); `DeleteConflict` means something was attached between the observation
/// and now, so it is looked at again soon.
pub fn deleted<T, E>(
    operation: &str,
    res: Result<T, SdkError<E, HttpResponse>>,
) -> Result<DeleteProgress, Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match res {
        Ok(_) => Ok(DeleteProgress::Gone),
        Err(e) if is_no_such_entity(&e) => Ok(DeleteProgress::Gone),
        Err(e) if e.code() == Some("DeleteConflict") => Err(Error::AwsTransient {
            operation: operation.to_string(),
            message: describe(&e),
        }),
        Err(e) => Err(classify(operation, &e)),
    }
}

/// Whether tags say a resource belongs to a kaws object of cluster `cluster_id`.
pub fn owned_by_cluster(tags: &BTreeMap<String, String>, cluster_id: &str) -> bool {
    tags.get(tags::OWNER)
        .is_some_and(|owner| owner.starts_with(&format!("{cluster_id}/")))
}

/// IAM's tag list as a map.
pub fn tag_map(list: &[aws_sdk_iam::types::Tag]) -> BTreeMap<String, String> {
    list.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// A map as IAM's tag list.
pub fn tag_list(map: &BTreeMap<String, String>) -> Result<Vec<aws_sdk_iam::types::Tag>, Error> {
    map.iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::InvalidSpec(e.to_string()))
        })
        .collect()
}

/// IAM hands documents back URL-encoded; this is the text as JSON.
pub fn decoded(document: &str) -> String {
    urlencoding::decode(document)
        .map(|d| d.into_owned())
        .unwrap_or_else(|_| document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(boundary: Option<&str>) -> Guard {
        Guard {
            permissions_boundary: boundary.map(str::to_string),
            ..Guard::default()
        }
    }

    #[test]
    fn paths_outside_the_prefix_are_refused() {
        let g = guard(None);
        assert_eq!(g.path("spec.path", None).unwrap(), "/kaws/");
        assert_eq!(
            g.path("spec.path", Some("/kaws/team-a/")).unwrap(),
            "/kaws/team-a/"
        );
        for (path, why) in [
            ("/", "outside the IAM path prefix"),
            ("/admin/", "outside the IAM path prefix"),
            ("/kawsx/", "outside the IAM path prefix"),
            ("/kaws", "must begin and end with /"),
            ("kaws/", "must begin and end with /"),
            ("/kaws//x/", "without empty segments"),
        ] {
            let err = g.path("spec.path", Some(path)).unwrap_err().to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
    }

    #[test]
    fn the_controllers_boundary_is_set_and_no_other_accepted() {
        let b = "arn:aws:iam::123456789012:policy/kaws-permissions-boundary";
        assert_eq!(guard(Some(b)).boundary(None).unwrap().as_deref(), Some(b));
        assert_eq!(
            guard(Some(b)).boundary(Some(b)).unwrap().as_deref(),
            Some(b)
        );
        let err = guard(Some(b))
            .boundary(Some("arn:aws:iam::aws:policy/AdministratorAccess"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the boundary kaws sets"), "{err}");
        assert_eq!(guard(None).boundary(None).unwrap(), None);
        assert_eq!(
            guard(None).boundary(Some("arn:x")).unwrap().as_deref(),
            Some("arn:x")
        );
    }

    #[test]
    fn names_follow_iams_rules() {
        assert!(check_name("roleName", "app-role_1+=,.@", 64).is_ok());
        assert!(check_name("roleName", "", 64).is_err());
        assert!(check_name("roleName", &"a".repeat(65), 64).is_err());
        assert!(check_name("roleName", "no spaces", 64).is_err());
        assert!(check_name("roleName", "no/slash", 64).is_err());
    }

    #[test]
    fn ownership_is_by_cluster() {
        let t = |o: &str| BTreeMap::from([(tags::OWNER.to_string(), o.to_string())]);
        assert!(owned_by_cluster(&t("c1/ns/r"), "c1"));
        assert!(!owned_by_cluster(&t("c10/ns/r"), "c1"));
        assert!(!owned_by_cluster(&BTreeMap::new(), "c1"));
    }
}
