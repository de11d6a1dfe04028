//! The DBInstance's Kubernetes side: reading the master password Secret and reading and writing
//! the connection Secret. Secret values only ever travel as [`Redacted`] or inside Secret data.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use rand::{Rng, distr::Alphanumeric};

use super::types::DBInstance;
pub use crate::core::secrets::{Redacted, decode, missing, read_key};
use crate::core::{
    error::{Error, Result},
    names::FIELD_MANAGER,
};

/// On the connection Secret: its password was written before RDS confirmed it (a create or a
/// password change in flight), so RDS may still have the previous one.
pub const PASSWORD_PENDING: &str = "kaws.io/password-pending";

/// Length of generated passwords: 32 alphanumerics ≈ 190 bits, valid for every engine.
const GENERATED_LENGTH: usize = 32;

/// A fresh password from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn generate_password() -> Redacted {
    Redacted(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(GENERATED_LENGTH)
            .map(char::from)
            .collect(),
    )
}

/// The connection Secret as kaws last wrote it. Its `Debug` shows keys, never values.
#[derive(Clone, Default)]
pub struct ConnectionSecret {
    pub data: BTreeMap<String, String>,
    pub pending: bool,
}

impl std::fmt::Debug for ConnectionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSecret")
            .field("keys", &self.data.keys())
            .field("pending", &self.pending)
            .finish()
    }
}

impl ConnectionSecret {
    pub fn password(&self) -> Option<Redacted> {
        self.data
            .get("password")
            .filter(|p| !p.is_empty())
            .map(|p| Redacted(p.clone()))
    }

    /// The password kaws knows RDS has: the Secret's, unless it is marked pending.
    pub fn applied(&self) -> Option<Redacted> {
        if self.pending { None } else { self.password() }
    }
}

/// Reads the connection Secret of `obj`. A Secret of that name that `obj` does not own (another
/// object's, or one kaws never wrote) is refused: kaws neither reads its password nor writes it.
pub async fn read_connection(
    client: &Client,
    obj: &DBInstance,
    name: &str,
) -> Result<Option<ConnectionSecret>> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let Some(s) = api.get_opt(name).await? else {
        return Ok(None);
    };
    if let Some(owner) = foreign_owner(&s, obj) {
        return Err(Error::SecretOwnedByOther {
            secret: name.to_string(),
            owner,
        });
    }
    Ok(Some(ConnectionSecret::from(s)))
}

impl From<Secret> for ConnectionSecret {
    fn from(s: Secret) -> Self {
        Self {
            pending: s
                .annotations()
                .get(PASSWORD_PENDING)
                .is_some_and(|v| v == "true"),
            data: decode(s.data),
        }
    }
}

/// Who holds `secret` when it is not `obj`: its controller owner, or a note that kaws never wrote
/// it. `None` when `obj` owns it.
fn foreign_owner(secret: &Secret, obj: &DBInstance) -> Option<String> {
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    let refs = secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    if refs.iter().any(|r| r.uid == uid) {
        return None;
    }
    Some(
        match refs
            .iter()
            .find(|r| r.controller == Some(true))
            .or(refs.first())
        {
            Some(r) => format!("{} {:?}", r.kind, r.name),
            None => "nobody kaws knows (kaws did not create it)".to_string(),
        },
    )
}

/// Writes the connection Secret by server-side apply, owned by `obj` (garbage-collected with
/// it). Keys and annotations kaws no longer sends are removed by the apply. Returns the Secret
/// as written.
pub async fn apply_connection(
    client: &Client,
    obj: &DBInstance,
    name: &str,
    data: &BTreeMap<String, String>,
    pending: bool,
) -> Result<Secret> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.clone()),
            owner_references: obj.controller_owner_ref(&()).map(|o| vec![o]),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "kaws".to_string(),
            )])),
            annotations: pending
                .then(|| BTreeMap::from([(PASSWORD_PENDING.to_string(), "true".to_string())])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    Ok(api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use kube::{
        core::PartialObjectMeta,
        runtime::{
            reflector::{self, ObjectRef},
            watcher,
        },
    };

    use super::*;
    use crate::{
        core::{own_writes::OwnWrites, runner::objects_referencing},
        resources::dbinstance::types::DBInstanceSpec,
    };

    fn database(ns: &str, name: &str, conn: &str, password: Option<&str>) -> DBInstance {
        let mut spec: DBInstanceSpec = serde_json::from_value(serde_json::json!({
            "dbInstanceIdentifier": name,
            "engine": "postgres",
            "dbInstanceClass": "db.t4g.micro",
            "allocatedStorage": 20,
            "masterUsername": "app",
            "writeConnectionSecretTo": {"name": conn},
        }))
        .expect("spec");
        spec.master_user_password_secret_ref = password.map(|p| {
            serde_json::from_value(serde_json::json!({"name": p, "key": "password"})).expect("ref")
        });
        let mut db = DBInstance::new(name, spec);
        db.metadata.namespace = Some(ns.into());
        db
    }

    fn secret(ns: &str, name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s.metadata.resource_version = Some(version.into());
        s
    }

    fn names(refs: Vec<ObjectRef<DBInstance>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn debug_output_never_shows_a_secret_value() {
        let data = BTreeMap::from([
            ("password".to_string(), "hunter2-s3cr3t".to_string()),
            (
                "uri".to_string(),
                "postgresql://app:hunter2-s3cr3t@db:5432/app".to_string(),
            ),
        ]);
        let conn = ConnectionSecret {
            data: data.clone(),
            pending: true,
        };
        let credentials = crate::resources::dbinstance::diff::Credentials {
            desired: conn.password(),
            applied: conn.password(),
            connection_secret: Some(data),
        };
        for shown in [format!("{conn:?}"), format!("{credentials:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("password") && shown.contains("uri"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn kaws_own_secret_write_reconciles_every_referencing_object_but_its_writer() {
        let (reader, mut writer) = reflector::store::<DBInstance>();
        for db in [
            database("a", "writer", "conn", None),
            // Reads its password from the Secret the other writes: must hear of every change.
            database("a", "reader", "own", Some("conn")),
            database("b", "elsewhere", "conn", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(db));
        }
        let own_writes = OwnWrites::default();
        let written = secret("a", "conn", "7");
        own_writes
            .begin::<Secret>("a", "conn", "DBInstance/a/writer".into())
            .wrote(&written);

        let echo = own_writes.writer_of(&written).await;
        assert_eq!(echo.as_deref(), Some("DBInstance/a/writer"));
        assert_eq!(
            names(objects_referencing(&reader, &written, echo.as_deref())),
            ["reader"]
        );
        // Changed by someone else since: everyone referencing it, the writer too.
        let edited = secret("a", "conn", "8");
        let echo = own_writes.writer_of(&edited).await;
        assert_eq!(
            names(objects_referencing(&reader, &edited, echo.as_deref())),
            ["reader", "writer"]
        );
    }
}
