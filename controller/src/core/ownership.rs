//! Ownership tags and the adoption rules: who may touch an existing AWS resource.

use std::collections::BTreeMap;

use super::{
    api::Tags,
    error::Error,
    names::{annotations, tags},
};

/// Identity of one Kubernetes object, as written into the `kaws.io/*` tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `<cluster-id>/<namespace>/<name>`.
    pub owner: String,
    pub uid: String,
}

impl Owner {
    pub fn new(cluster_id: &str, namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            owner: format!("{cluster_id}/{namespace}/{name}"),
            uid: uid.to_string(),
        }
    }

    /// The system tags kaws puts on every resource it creates or adopts.
    pub fn system_tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (tags::OWNER.to_string(), self.owner.clone()),
            (tags::UID.to_string(), self.uid.clone()),
        ])
    }

    /// User tags merged with the system tags; system tags always win.
    pub fn desired_tags(&self, user: &Tags) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = user
            .iter()
            .filter(|(k, _)| !tags::is_system(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.extend(self.system_tags());
        all
    }
}

/// The tag writes that make a resource's tags equal `desired`, for services with separate
/// tag and untag calls. AWS-reserved (`aws:*`) and kaws' own (`kaws.io/*`) tags are never
/// removed: removing an owner tag would give the resource away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagChanges {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// `None` when the observed tags already match.
pub fn tag_changes(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> Option<TagChanges> {
    let set: BTreeMap<String, String> = desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: Vec<String> = observed
        .keys()
        .filter(|k| {
            !desired.contains_key(*k)
                && !k.starts_with(tags::AWS_RESERVED_PREFIX)
                && !k.starts_with(tags::KAWS_PREFIX)
        })
        .cloned()
        .collect();
    (!set.is_empty() || !remove.is_empty()).then_some(TagChanges { set, remove })
}

/// How an existing AWS resource relates to the object reconciling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Tagged as ours.
    Ours,
    /// No owner tag, and the object carries `kaws.io/adopt: "true"`: take it over.
    Adopt,
    /// No owner tag, and this object has a create call whose outcome kaws never saw (see
    /// `status.createPendingSince`): the resource is the one kaws created before a crash, a lost
    /// answer or an endpoint that dropped the create-time tags. It gets its owner tags before
    /// any other write.
    Recover,
}

/// Applies SPEC §2.3 to the tags of an existing AWS resource. `create_pending`: this object
/// made a create call whose outcome kaws has not confirmed yet.
pub fn check(
    resource: &str,
    me: &Owner,
    observed_tags: &BTreeMap<String, String>,
    object_annotations: &BTreeMap<String, String>,
    create_pending: bool,
) -> Result<Ownership, Error> {
    match observed_tags.get(tags::OWNER) {
        Some(owner) if *owner == me.owner => Ok(Ownership::Ours),
        Some(owner) => Err(Error::OwnedByOther {
            resource: resource.to_string(),
            owner: owner.clone(),
        }),
        None if create_pending => Ok(Ownership::Recover),
        None if adopt_requested(object_annotations) => Ok(Ownership::Adopt),
        None => Err(Error::AlreadyExists(resource.to_string())),
    }
}

/// Whether `kaws.io/adopt: "true"` is set.
pub fn adopt_requested(object_annotations: &BTreeMap<String, String>) -> bool {
    object_annotations
        .get(annotations::ADOPT)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner::new("c1", "team-a", "logs", "uid-1")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ownership_cases() {
        let adopt = map(&[(annotations::ADOPT, "true")]);
        type Tags = BTreeMap<String, String>;
        // (why, observed tags, object annotations, create pending, expected)
        /// Why, observed tags, object annotations, create pending, expected.
        type Case = (
            &'static str,
            Tags,
            Tags,
            bool,
            Result<Ownership, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "our owner tag",
                map(&[(tags::OWNER, "c1/team-a/logs")]),
                map(&[]),
                false,
                Ok(Ownership::Ours),
            ),
            (
                "untagged after our own unconfirmed create: recovered, not AlreadyExists",
                map(&[]),
                map(&[]),
                true,
                Ok(Ownership::Recover),
            ),
            (
                "a pending create never claims a resource another object owns",
                map(&[(tags::OWNER, "c1/team-b/logs")]),
                map(&[]),
                true,
                Err("OwnedByOther"),
            ),
            (
                "other object in our cluster",
                map(&[(tags::OWNER, "c1/team-b/logs")]),
                adopt.clone(),
                false,
                Err("OwnedByOther"),
            ),
            (
                "same object name in another cluster",
                map(&[(tags::OWNER, "c2/team-a/logs")]),
                map(&[]),
                false,
                Err("OwnedByOther"),
            ),
            (
                "untagged without adopt",
                map(&[("team", "x")]),
                map(&[]),
                false,
                Err("AlreadyExists"),
            ),
            (
                "untagged with adopt",
                map(&[]),
                adopt.clone(),
                false,
                Ok(Ownership::Adopt),
            ),
            (
                "adopt must be exactly true",
                map(&[]),
                map(&[(annotations::ADOPT, "yes")]),
                false,
                Err("AlreadyExists"),
            ),
        ];
        for (why, observed, annots, pending, want) in cases {
            let got =
                check("bucket x", &me(), &observed, &annots, pending).map_err(|e| e.category());
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn tag_changes_never_remove_reserved_or_kaws_tags() {
        let desired = map(&[(tags::OWNER, "c1/team-a/logs"), ("team", "data")]);
        let observed = map(&[
            (tags::OWNER, "c1/team-a/logs"),
            ("team", "old"),
            ("stale", "x"),
            ("aws:cloudformation:stack-name", "s"),
            ("kaws.io/other", "y"),
        ]);
        let changes = tag_changes(&desired, &observed).expect("changes");
        assert_eq!(changes.set, map(&[("team", "data")]));
        assert_eq!(changes.remove, vec!["stale".to_string()]);
        assert_eq!(
            tag_changes(&desired, &desired),
            None,
            "converged tags need nothing"
        );
    }

    #[test]
    fn user_tags_never_clobber_system_tags() {
        let user = map(&[(tags::OWNER, "evil"), ("team", "data")]);
        let merged = me().desired_tags(&user.into_iter().collect());
        assert_eq!(
            merged.get(tags::OWNER).map(String::as_str),
            Some("c1/team-a/logs")
        );
        assert_eq!(merged.get(tags::UID).map(String::as_str), Some("uid-1"));
        assert_eq!(merged.get("team").map(String::as_str), Some("data"));
    }
}
