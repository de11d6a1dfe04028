//! The DBInstance's AWS side: RDS calls that observe, create, modify and delete an instance, and
//! the connection Secret kept next to it. Never waits for RDS: busy states are polled by the
//! driver.
//!
//! Observation is batched: at a steady-state resync the DB instances of a region are served from
//! one paged `DescribeDBInstances` (tags included, in `TagList`), taken at most once per listing
//! lifetime (see `core::batch`), instead of one call per object.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_rds::{Client, error::ProvideErrorMetadata, types as rds};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{
    diff::{self, Credentials, DbChange, ObservedDb, Redacted, identifier},
    secrets::{self, ConnectionSecret},
    types::{DBInstance, DBInstanceStatus, Endpoint},
};
use crate::{
    aws::{CallMetrics, RegionalClients, classify},
    core::{
        batch::{self, BatchedView},
        driver::{Connect, Created, DeleteProgress, External, Reads, Target, object_key},
        error::{Error, Result},
        own_writes::OwnWrites,
    },
    metrics::SharedMetrics,
};

/// RDS clients, one per region, and the Kubernetes client for the password and connection
/// Secrets.
pub struct Rds {
    clients: RegionalClients<Client>,
    kube: kube::Client,
    /// The region's DB instances from one `DescribeDBInstances`, by identifier.
    index: BatchedView<ObservedDb>,
    /// The controller's resync period, for objects without `kaws.io/resync-period`.
    resync_period: Duration,
    /// Where the connection Secret writes are recorded, so that their watch events do not
    /// reconcile the writer again.
    own_writes: Arc<OwnWrites>,
}

impl Rds {
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        kube: kube::Client,
        resync_period: Duration,
        own_writes: Arc<OwnWrites>,
    ) -> Self {
        Self {
            clients: RegionalClients::new(sdk, metrics, build_client),
            kube,
            index: BatchedView::default(),
            resync_period,
            own_writes,
        }
    }
}

fn build_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> Client {
    let conf = aws_sdk_rds::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

const NOT_FOUND: &[&str] = &["DBInstanceNotFound", "DBInstanceNotFoundFault"];

/// Reads the instance from RDS; `Ok(None)` when it does not exist.
pub async fn describe(rds: &Client, id: &str) -> Result<Option<ObservedDb>> {
    let out = match rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if e.code().is_some_and(|c| NOT_FOUND.contains(&c)) => return Ok(None),
        Err(e) => return Err(classify("DescribeDBInstances", &e)),
    };
    Ok(out.db_instances().first().map(to_observed))
}

/// Every DB instance in the client's region, by identifier, all pages.
async fn list(rds: &Client) -> Result<HashMap<String, ObservedDb>> {
    let mut pages = rds
        .describe_db_instances()
        .max_records(100)
        .into_paginator()
        .send();
    let mut out = HashMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("DescribeDBInstances", &e))?;
        for db in page.db_instances() {
            let o = to_observed(db);
            out.insert(o.identifier.clone(), o);
        }
    }
    Ok(out)
}

fn to_observed(db: &rds::DbInstance) -> ObservedDb {
    let endpoint = db.endpoint().map(|e| Endpoint {
        address: e.address().map(str::to_string),
        port: e.port(),
        hosted_zone_id: e.hosted_zone_id().map(str::to_string),
    });
    let port = endpoint
        .as_ref()
        .and_then(|e| e.port)
        .or(db.db_instance_port().filter(|p| *p != 0));
    ObservedDb {
        identifier: db.db_instance_identifier().unwrap_or_default().to_string(),
        arn: db.db_instance_arn().map(str::to_string),
        status: db.db_instance_status().unwrap_or_default().to_string(),
        engine: db.engine().unwrap_or_default().to_string(),
        engine_version: db.engine_version().map(str::to_string),
        db_instance_class: db.db_instance_class().unwrap_or_default().to_string(),
        allocated_storage: db.allocated_storage().unwrap_or_default(),
        max_allocated_storage: db.max_allocated_storage(),
        storage_type: db.storage_type().map(str::to_string),
        iops: db.iops(),
        db_name: db.db_name().map(str::to_string),
        master_username: db.master_username().map(str::to_string),
        db_subnet_group_name: db
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name())
            .map(str::to_string),
        vpc_security_group_ids: db
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
            .collect(),
        db_parameter_group_names: db
            .db_parameter_groups()
            .iter()
            .filter_map(|g| g.db_parameter_group_name().map(str::to_string))
            .collect(),
        multi_az: db.multi_az().unwrap_or(false),
        publicly_accessible: db.publicly_accessible().unwrap_or(false),
        backup_retention_period: db.backup_retention_period(),
        preferred_backup_window: db.preferred_backup_window().map(str::to_string),
        preferred_maintenance_window: db.preferred_maintenance_window().map(str::to_string),
        deletion_protection: db.deletion_protection().unwrap_or(false),
        port,
        endpoint,
        dbi_resource_id: db.dbi_resource_id().map(str::to_string),
        pending_modified_values: db
            .pending_modified_values()
            .map(pending_values)
            .unwrap_or_default(),
        tags: db
            .tag_list()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
    }
}

fn pending_values(p: &rds::PendingModifiedValues) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.insert(k.to_string(), v);
        }
    };
    put("dbInstanceClass", p.db_instance_class().map(str::to_string));
    put(
        "allocatedStorage",
        p.allocated_storage().map(|v| v.to_string()),
    );
    put("engineVersion", p.engine_version().map(str::to_string));
    put("storageType", p.storage_type().map(str::to_string));
    put("iops", p.iops().map(|v| v.to_string()));
    put("multiAZ", p.multi_az().map(|v| v.to_string()));
    put("port", p.port().map(|v| v.to_string()));
    put(
        "backupRetentionPeriod",
        p.backup_retention_period().map(|v| v.to_string()),
    );
    put(
        "dbSubnetGroupName",
        p.db_subnet_group_name().map(str::to_string),
    );
    // RDS masks it anyway; status only says that a change is on its way.
    put(
        "masterUserPassword",
        p.master_user_password().map(|_| "pending".to_string()),
    );
    out
}

impl Rds {
    /// The password the spec wants and the one kaws knows RDS has (see [`Credentials`]).
    async fn credentials(&self, obj: &DBInstance) -> Result<Credentials> {
        let ns = obj.namespace().unwrap_or_default();
        let conn = match &obj.spec.write_connection_secret_to {
            Some(r) => secrets::read_connection(&self.kube, obj, &r.name).await?,
            None => None,
        };
        let applied = conn.as_ref().and_then(ConnectionSecret::applied);
        let desired = match &obj.spec.master_user_password_secret_ref {
            Some(r) => secrets::read_key(&self.kube, &ns, &r.name, &r.key).await?,
            // Generated: the connection Secret is where it lives; lost with it, a new one is made.
            None => Some(
                conn.as_ref()
                    .and_then(|c| c.password())
                    .unwrap_or_else(secrets::generate_password),
            ),
        };
        Ok(Credentials {
            desired,
            applied,
            connection_secret: conn.map(|c| c.data),
        })
    }

    /// The desired password, or `SecretNotFound` / `InvalidSpec` for a missing or unusable one.
    async fn require_password(
        &self,
        obj: &DBInstance,
        desired: Option<&Redacted>,
    ) -> Result<Redacted> {
        let Some(password) = desired else {
            let ns = obj.namespace().unwrap_or_default();
            let (name, key) = obj
                .spec
                .master_user_password_secret_ref
                .as_ref()
                .map(|r| (r.name.as_str(), r.key.as_str()))
                .unwrap_or_default();
            return Err(secrets::missing(&self.kube, &ns, name, key).await);
        };
        diff::validate_password(&obj.spec.engine, &password.0).map_err(Error::InvalidSpec)?;
        Ok(password.clone())
    }

    /// Writes the connection Secret and records what it now says in `resolved`, as the resolve
    /// step would read it: the observe that confirms this reconcile's write needs no second read.
    async fn write_connection(
        &self,
        obj: &DBInstance,
        resolved: &mut Credentials,
        password: &Redacted,
        endpoint: Option<&Endpoint>,
        pending: bool,
    ) -> Result<()> {
        let Some(r) = &obj.spec.write_connection_secret_to else {
            return Ok(());
        };
        let data = diff::connection_data(&obj.spec, password, endpoint);
        let writing = self.own_writes.begin::<Secret>(
            &obj.namespace().unwrap_or_default(),
            &r.name,
            object_key(obj),
        );
        let written = secrets::apply_connection(&self.kube, obj, &r.name, &data, pending).await?;
        writing.wrote(&written);
        let conn = ConnectionSecret::from(written);
        resolved.applied = conn.applied();
        resolved.connection_secret = Some(conn.data);
        Ok(())
    }
}

/// The password the resolve step checked (it refuses to go on without one).
fn resolved_password(resolved: &Credentials) -> Result<Redacted> {
    resolved
        .desired
        .clone()
        .ok_or_else(|| Error::InvalidSpec("no master password was resolved".to_string()))
}

fn final_snapshot_identifier(obj: &DBInstance) -> String {
    obj.spec
        .final_snapshot_identifier
        .clone()
        .unwrap_or_else(|| {
            let uid = obj.metadata.uid.as_deref().unwrap_or_default();
            format!(
                "{}-final-{}",
                identifier(obj),
                uid.chars().take(8).collect::<String>()
            )
        })
}

#[async_trait]
impl External<DBInstance> for Rds {
    type Model = diff::DbInstanceModel;
    const IAM_STATEMENTS: &'static str = "RDS";
    const READS_FROM_MEMORY: bool = true;
    // The Secrets it resolves and the DB instance it observes are independent reads.
    const OBSERVE_READS_RESOLVED: bool = false;

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            c.sdk.clone(),
            c.metrics.clone(),
            c.client.clone(),
            c.resync_period,
            c.own_writes.clone(),
        )
    }

    /// The master password — the referenced Secret's, or the generated one the connection
    /// Secret keeps — and what the connection Secret says RDS has. A missing Secret or key is
    /// `SecretNotFound`, a password RDS would refuse `InvalidSpec`, both from here.
    async fn resolve(&self, obj: &DBInstance, _target: &Target) -> Result<Credentials> {
        let credentials = self.credentials(obj).await?;
        self.require_password(obj, credentials.desired.as_ref())
            .await?;
        Ok(credentials)
    }

    async fn observe(
        &self,
        obj: &DBInstance,
        target: &Target,
        _resolved: Option<&Credentials>,
        reads: Reads,
    ) -> Result<Option<ObservedDb>> {
        let rds = self.clients.get(&target.region);
        let id = identifier(obj);
        if reads == Reads::Steady {
            let max_age = batch::max_age(obj, self.resync_period);
            let batched = self
                .index
                .get(&target.region, &id, max_age, || list(&rds))
                .await?;
            if batched.is_some() {
                return Ok(batched);
            }
        }
        describe(&rds, &id).await
    }

    /// Keeps the connection Secret current (endpoint, recreated when deleted) once RDS has the
    /// password it holds; a password change in flight is written by `update` instead.
    async fn after_observe(
        &self,
        obj: &DBInstance,
        _target: &Target,
        observed: &ObservedDb,
        resolved: &mut Credentials,
    ) -> Result<()> {
        let password = resolved_password(resolved)?;
        if resolved.applied.as_ref() != Some(&password) {
            return Ok(());
        }
        let data = diff::connection_data(&obj.spec, &password, observed.endpoint.as_ref());
        if resolved.connection_secret.as_ref() == Some(&data) {
            return Ok(());
        }
        self.write_connection(obj, resolved, &password, observed.endpoint.as_ref(), false)
            .await
    }

    /// The password is stored before RDS sees it, so a crash after CreateDBInstance can never
    /// lose a generated password; `pending` says RDS may not have it yet. Unless the Secret
    /// already records it as RDS' (a create retried while a describe lags behind the first):
    /// marking it pending again would have it set once more for nothing.
    async fn before_create(
        &self,
        obj: &DBInstance,
        _target: &Target,
        resolved: &mut Credentials,
    ) -> Result<()> {
        let password = resolved_password(resolved)?;
        if resolved.applied.as_ref() == Some(&password) {
            return Ok(());
        }
        self.write_connection(obj, resolved, &password, None, true)
            .await
    }

    async fn create(
        &self,
        obj: &DBInstance,
        target: &Target,
        resolved: &mut Credentials,
        tags: &BTreeMap<String, String>,
        status: &mut DBInstanceStatus,
    ) -> Result<Created> {
        let rds = self.clients.get(&target.region);
        let spec = &obj.spec;
        let id = identifier(obj);
        self.index.written(&id);
        let password = resolved_password(resolved)?;
        let tag_list = tags
            .iter()
            .map(|(k, v)| rds::Tag::builder().key(k).value(v).build())
            .collect();
        let created = rds
            .create_db_instance()
            .db_instance_identifier(&id)
            .engine(&spec.engine)
            .set_engine_version(spec.engine_version.clone())
            .db_instance_class(&spec.db_instance_class)
            .allocated_storage(spec.allocated_storage)
            .set_max_allocated_storage(spec.max_allocated_storage)
            .set_storage_type(spec.storage_type.as_ref().map(|s| s.to_ascii_lowercase()))
            .set_iops(spec.iops)
            .storage_encrypted(spec.storage_encrypted.unwrap_or(true))
            .set_kms_key_id(spec.kms_key_id.clone())
            .set_db_name(spec.db_name.clone())
            .master_username(&spec.master_username)
            .master_user_password(&password.0)
            .set_db_subnet_group_name(spec.db_subnet_group_name.clone())
            .set_vpc_security_group_ids(
                (!spec.vpc_security_group_ids.is_empty())
                    .then(|| spec.vpc_security_group_ids.clone()),
            )
            .set_db_parameter_group_name(spec.db_parameter_group_name.clone())
            .set_multi_az(spec.multi_az)
            .set_availability_zone(spec.availability_zone.clone())
            .publicly_accessible(spec.publicly_accessible.unwrap_or(false))
            .set_backup_retention_period(spec.backup_retention_period)
            .set_preferred_backup_window(spec.preferred_backup_window.clone())
            .set_preferred_maintenance_window(spec.preferred_maintenance_window.clone())
            .deletion_protection(spec.deletion_protection.unwrap_or(false))
            .set_port(spec.port)
            .set_tags(Some(tag_list))
            .customize()
            .config_override(
                // Never retried inside the SDK: a retry after a lost answer would be told the
                // instance exists and could not tell that it created it itself.
                aws_sdk_rds::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        match created {
            Ok(out) => {
                let db = out.db_instance();
                if let Some(db) = db {
                    status.common.arn = db.db_instance_arn().map(str::to_string);
                    status.dbi_resource_id = db.dbi_resource_id().map(str::to_string);
                    status.db_instance_status = db.db_instance_status().map(str::to_string);
                }
                status.db_instance_identifier = Some(id);
                // With the endpoint when the answer has one already (RDS gives it once the
                // instance is available, minutes later; then `after_observe` adds it).
                let endpoint = db.and_then(|db| to_observed(db).endpoint);
                self.write_connection(obj, resolved, &password, endpoint.as_ref(), false)
                    .await?;
                Ok(Created::New)
            }
            // A race with another object (or a create of ours whose answer was lost): the
            // ownership check on the next observe decides; the password stays pending and is set
            // again if it is ours.
            Err(e)
                if e.code()
                    .is_some_and(|c| c.starts_with("DBInstanceAlreadyExists")) =>
            {
                Ok(Created::Existed)
            }
            Err(e) => Err(classify("CreateDBInstance", &e)),
        }
    }

    async fn update(
        &self,
        obj: &DBInstance,
        target: &Target,
        observed: &ObservedDb,
        resolved: &mut Credentials,
        changes: &[DbChange],
    ) -> Result<()> {
        let rds = self.clients.get(&target.region);
        self.index.written(&identifier(obj));
        let mut modify = rds
            .modify_db_instance()
            .db_instance_identifier(identifier(obj))
            .apply_immediately(true);
        let mut modified = false;
        let mut password = None;
        for change in changes {
            modified |= !matches!(change, DbChange::Tags { .. });
            modify = match change {
                DbChange::EngineVersion {
                    version,
                    major_upgrade,
                } => modify
                    .engine_version(version)
                    .allow_major_version_upgrade(*major_upgrade),
                DbChange::DbInstanceClass(c) => modify.db_instance_class(c),
                DbChange::AllocatedStorage(s) => modify.allocated_storage(*s),
                DbChange::MaxAllocatedStorage(s) => modify.max_allocated_storage(*s),
                DbChange::StorageType(t) => modify.storage_type(t),
                DbChange::Iops(i) => modify.iops(*i),
                DbChange::DbSubnetGroupName(g) => modify.db_subnet_group_name(g),
                DbChange::VpcSecurityGroupIds(ids) => {
                    modify.set_vpc_security_group_ids(Some(ids.clone()))
                }
                DbChange::DbParameterGroupName(g) => modify.db_parameter_group_name(g),
                DbChange::MultiAz(m) => modify.multi_az(*m),
                DbChange::PubliclyAccessible(p) => modify.publicly_accessible(*p),
                DbChange::BackupRetentionPeriod(d) => modify.backup_retention_period(*d),
                DbChange::PreferredBackupWindow(w) => modify.preferred_backup_window(w),
                DbChange::PreferredMaintenanceWindow(w) => modify.preferred_maintenance_window(w),
                DbChange::DeletionProtection(p) => modify.deletion_protection(*p),
                DbChange::Port(p) => modify.db_port_number(*p),
                DbChange::MasterUserPassword(p) => {
                    password = Some(p.clone());
                    modify.master_user_password(&p.0)
                }
                DbChange::Tags { .. } => modify,
            };
        }
        if let Some(p) = &password {
            let p = p.clone();
            // Stored first: whatever happens next, the password that may be in RDS is on record.
            self.write_connection(obj, resolved, &p, observed.endpoint.as_ref(), true)
                .await?;
        }
        if modified {
            modify
                .send()
                .await
                .map_err(|e| classify("ModifyDBInstance", &e))?;
        }
        if let Some(p) = &password {
            self.write_connection(obj, resolved, p, observed.endpoint.as_ref(), false)
                .await?;
        }
        for change in changes {
            let DbChange::Tags { add, remove } = change else {
                continue;
            };
            let arn = observed.arn.clone().unwrap_or_default();
            if !add.is_empty() {
                rds.add_tags_to_resource()
                    .resource_name(&arn)
                    .set_tags(Some(
                        add.iter()
                            .map(|(k, v)| rds::Tag::builder().key(k).value(v).build())
                            .collect(),
                    ))
                    .send()
                    .await
                    .map_err(|e| classify("AddTagsToResource", &e))?;
            }
            if !remove.is_empty() {
                rds.remove_tags_from_resource()
                    .resource_name(&arn)
                    .set_tag_keys(Some(remove.clone()))
                    .send()
                    .await
                    .map_err(|e| classify("RemoveTagsFromResource", &e))?;
            }
        }
        Ok(())
    }

    async fn delete(
        &self,
        obj: &DBInstance,
        target: &Target,
        observed: &ObservedDb,
    ) -> Result<DeleteProgress> {
        let rds = self.clients.get(&target.region);
        let id = identifier(obj);
        if observed.status == "deleting" {
            return Ok(DeleteProgress::InProgress);
        }
        if observed.deletion_protection {
            if obj.spec.deletion_protection.unwrap_or(false) {
                return Err(Error::Blocked {
                    reason: "DeletionProtection",
                    message: format!(
                        "RDS DB instance {id:?} has deletion protection; set spec.deletionProtection: false to let the delete proceed"
                    ),
                });
            }
            // The user turned it off in the spec after asking for the delete.
            rds.modify_db_instance()
                .db_instance_identifier(&id)
                .deletion_protection(false)
                .apply_immediately(true)
                .send()
                .await
                .map_err(|e| classify("ModifyDBInstance", &e))?;
        }
        let skip = obj.spec.skip_final_snapshot;
        let deleted = rds
            .delete_db_instance()
            .db_instance_identifier(&id)
            .skip_final_snapshot(skip)
            .set_final_db_snapshot_identifier((!skip).then(|| final_snapshot_identifier(obj)))
            .send()
            .await;
        match deleted {
            Ok(_) => {}
            Err(e) if e.code().is_some_and(|c| NOT_FOUND.contains(&c)) => {
                return Ok(DeleteProgress::Gone);
            }
            // Already deleting, or busy with another operation: look again later.
            Err(e)
                if e.code()
                    .is_some_and(|c| c.starts_with("InvalidDBInstanceState")) =>
            {
                return Ok(DeleteProgress::InProgress);
            }
            Err(e) => return Err(classify("DeleteDBInstance", &e)),
        }
        // RDS takes minutes; an endpoint that deletes at once (moto) needs no second round.
        Ok(match describe(&rds, &id).await? {
            None => DeleteProgress::Gone,
            Some(_) => DeleteProgress::InProgress,
        })
    }
}

#[cfg(test)]
mod tests {
    //! RDS states moto cannot produce (it reports every instance `available` at once and has no
    //! state manager for RDS), driven through the real SDK client with canned responses.

    use aws_sdk_rds::operation::{
        describe_db_instances::DescribeDbInstancesOutput,
        modify_db_instance::ModifyDbInstanceOutput,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::{core::driver::Availability, resources::dbinstance::types::DBInstanceSpec};

    fn instance(status: &str, class: &str) -> rds::DbInstance {
        rds::DbInstance::builder()
            .db_instance_identifier("orders")
            .db_instance_status(status)
            .engine("postgres")
            .engine_version("16.4")
            .db_instance_class(class)
            .allocated_storage(20)
            .build()
    }

    fn spec(class: &str) -> DBInstanceSpec {
        serde_saphyr::from_str(&format!(
            "dbInstanceIdentifier: orders\nengine: postgres\ndbInstanceClass: {class}\nallocatedStorage: 20\nmasterUsername: app\nwriteConnectionSecretTo: {{name: c}}\n"
        ))
        .expect("spec parses")
    }

    /// The driver's decision for one reconcile: the changes it would send, or `None` while RDS
    /// is busy (the driver then requeues without any write call).
    async fn plan(client: &Client, spec: &DBInstanceSpec) -> Option<Vec<DbChange>> {
        let observed = describe(client, "orders")
            .await
            .expect("describe")
            .expect("instance exists");
        match diff::availability(&observed.status) {
            Availability::Busy { .. } | Availability::Failed { .. } => None,
            Availability::Available => Some(diff::diff(
                spec,
                &observed,
                &Credentials::default(),
                &observed.tags,
            )),
        }
    }

    #[tokio::test]
    async fn creating_then_available_waits_without_writes_then_becomes_ready() {
        let describe_rule = mock!(Client::describe_db_instances)
            .sequence()
            .output(|| {
                DescribeDbInstancesOutput::builder()
                    .db_instances(instance("creating", "db.t4g.micro"))
                    .build()
            })
            .times(2)
            .output(|| {
                DescribeDbInstancesOutput::builder()
                    .db_instances(instance("available", "db.t4g.micro"))
                    .build()
            })
            .build();
        let modify_rule = mock!(Client::modify_db_instance)
            .then_output(|| ModifyDbInstanceOutput::builder().build());
        let client = mock_client!(
            aws_sdk_rds,
            RuleMode::MatchAny,
            [&describe_rule, &modify_rule]
        );
        let want = spec("db.t4g.micro");
        assert_eq!(plan(&client, &want).await, None, "creating is busy");
        assert_eq!(plan(&client, &want).await, None, "still creating");
        assert_eq!(
            plan(&client, &want).await,
            Some(vec![]),
            "available and converged"
        );
        assert_eq!(describe_rule.num_calls(), 3);
        assert_eq!(modify_rule.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_spec_change_while_modifying_waits_for_available() {
        let describe_rule = mock!(Client::describe_db_instances)
            .sequence()
            .output(|| {
                DescribeDbInstancesOutput::builder()
                    .db_instances(instance("modifying", "db.t4g.micro"))
                    .build()
            })
            .output(|| {
                DescribeDbInstancesOutput::builder()
                    .db_instances(instance("available", "db.t4g.micro"))
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_rds, [&describe_rule]);
        let want = spec("db.t4g.large");
        assert_eq!(
            plan(&client, &want).await,
            None,
            "no change while modifying"
        );
        let changes = plan(&client, &want).await.expect("available");
        assert_eq!(
            changes,
            vec![DbChange::DbInstanceClass("db.t4g.large".into())]
        );
    }

    #[tokio::test]
    async fn missing_instance_is_absent_and_throttling_is_transient() {
        use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;
        use aws_smithy_types::error::ErrorMetadata;
        let rule = mock!(Client::describe_db_instances)
            .sequence()
            .error(|| {
                DescribeDBInstancesError::DbInstanceNotFoundFault(
                    rds::error::DbInstanceNotFoundFault::builder()
                        .meta(ErrorMetadata::builder().code("DBInstanceNotFound").build())
                        .build(),
                )
            })
            .error(|| {
                DescribeDBInstancesError::generic(
                    ErrorMetadata::builder().code("Throttling").build(),
                )
            })
            // Enough for the SDK's own retries of a throttled call.
            .times(5)
            .build();
        let client = mock_client!(aws_sdk_rds, [&rule]);
        assert!(describe(&client, "orders").await.expect("ok").is_none());
        let err = describe(&client, "orders").await.expect_err("throttled");
        assert!(!err.is_terminal() && err.category() == "Throttled", "{err}");
    }
}
