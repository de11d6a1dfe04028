//! Pure DBInstance logic: spec validation, AWS-normalised comparison (desired × observed →
//! changes), RDS status → availability, and the connection Secret's content. No IO.

use crate::core::ownership::{TagChanges, tag_changes};
use std::collections::BTreeMap;

use super::types::{DBInstance, DBInstanceSpec, DBInstanceStatus, Endpoint};
use crate::core::{
    api::ManagementPolicy,
    driver::{Availability, Change, Model, Target},
};

pub use crate::core::secrets::Redacted;

/// The master password as the spec wants it and as kaws last applied it. Its `Debug` shows the
/// connection Secret's keys, never their values (the password and the URI that carries it).
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    /// The password the instance must have: the referenced Secret's value, or the generated one
    /// kept in the connection Secret. `None`: the referenced Secret or key is missing.
    pub desired: Option<Redacted>,
    /// The password kaws knows RDS has (the connection Secret's, when not marked pending).
    /// `None`: unknown, so it is set again.
    pub applied: Option<Redacted>,
    /// The connection Secret's current data, to write it only when it differs.
    pub connection_secret: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("desired", &self.desired)
            .field("applied", &self.applied)
            .field(
                "connection_secret",
                &self.connection_secret.as_ref().map(BTreeMap::keys),
            )
            .finish()
    }
}

/// The DB instance as RDS reports it, in the spec's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedDb {
    pub identifier: String,
    pub arn: Option<String>,
    pub status: String,
    pub engine: String,
    pub engine_version: Option<String>,
    pub db_instance_class: String,
    pub allocated_storage: i32,
    pub max_allocated_storage: Option<i32>,
    pub storage_type: Option<String>,
    pub iops: Option<i32>,
    pub db_name: Option<String>,
    pub master_username: Option<String>,
    pub db_subnet_group_name: Option<String>,
    pub vpc_security_group_ids: Vec<String>,
    pub db_parameter_group_names: Vec<String>,
    pub multi_az: bool,
    pub publicly_accessible: bool,
    pub backup_retention_period: Option<i32>,
    pub preferred_backup_window: Option<String>,
    pub preferred_maintenance_window: Option<String>,
    pub deletion_protection: bool,
    pub port: Option<i32>,
    pub endpoint: Option<Endpoint>,
    pub dbi_resource_id: Option<String>,
    pub pending_modified_values: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// One difference between the spec and RDS. Everything but tags goes into a single
/// `ModifyDBInstance` call with `ApplyImmediately`.
#[derive(Clone, Debug, PartialEq)]
pub enum DbChange {
    EngineVersion {
        version: String,
        major_upgrade: bool,
    },
    DbInstanceClass(String),
    AllocatedStorage(i32),
    MaxAllocatedStorage(i32),
    StorageType(String),
    Iops(i32),
    DbSubnetGroupName(String),
    VpcSecurityGroupIds(Vec<String>),
    DbParameterGroupName(String),
    MultiAz(bool),
    PubliclyAccessible(bool),
    BackupRetentionPeriod(i32),
    PreferredBackupWindow(String),
    PreferredMaintenanceWindow(String),
    DeletionProtection(bool),
    Port(i32),
    MasterUserPassword(Redacted),
    Tags {
        add: BTreeMap<String, String>,
        remove: Vec<String>,
    },
}

impl Change for DbChange {
    fn field(&self) -> &'static str {
        match self {
            DbChange::EngineVersion { .. } => "engineVersion",
            DbChange::DbInstanceClass(_) => "dbInstanceClass",
            DbChange::AllocatedStorage(_) => "allocatedStorage",
            DbChange::MaxAllocatedStorage(_) => "maxAllocatedStorage",
            DbChange::StorageType(_) => "storageType",
            DbChange::Iops(_) => "iops",
            DbChange::DbSubnetGroupName(_) => "dbSubnetGroupName",
            DbChange::VpcSecurityGroupIds(_) => "vpcSecurityGroupIds",
            DbChange::DbParameterGroupName(_) => "dbParameterGroupName",
            DbChange::MultiAz(_) => "multiAZ",
            DbChange::PubliclyAccessible(_) => "publiclyAccessible",
            DbChange::BackupRetentionPeriod(_) => "backupRetentionPeriod",
            DbChange::PreferredBackupWindow(_) => "preferredBackupWindow",
            DbChange::PreferredMaintenanceWindow(_) => "preferredMaintenanceWindow",
            DbChange::DeletionProtection(_) => "deletionProtection",
            DbChange::Port(_) => "port",
            DbChange::MasterUserPassword(_) => "masterUserPassword",
            DbChange::Tags { .. } => "tags",
        }
    }
}

pub const ENGINES: &[&str] = &["postgres", "mysql", "mariadb"];

/// Smallest storage RDS accepts for a storage type (the same for the three engines kaws serves).
pub fn min_storage(storage_type: Option<&str>) -> i32 {
    match storage_type.map(str::to_ascii_lowercase).as_deref() {
        Some("io1") | Some("io2") => 100,
        Some("standard") => 5,
        _ => 20,
    }
}

pub fn default_port(engine: &str) -> i32 {
    if engine == "postgres" { 5432 } else { 3306 }
}

/// Checks what RDS would reject, so the user gets a clear terminal condition instead of a
/// failed create.
pub fn validate(spec: &DBInstanceSpec) -> Result<(), String> {
    validate_identifier("dbInstanceIdentifier", &spec.db_instance_identifier)?;
    if !ENGINES.contains(&spec.engine.as_str()) {
        return Err(format!(
            "engine {:?} is not supported: use one of {}",
            spec.engine,
            ENGINES.join(", ")
        ));
    }
    if !spec.db_instance_class.starts_with("db.") {
        return Err(format!(
            "dbInstanceClass {:?} is not an RDS instance class (e.g. db.t4g.micro)",
            spec.db_instance_class
        ));
    }
    if let Some(t) = &spec.storage_type
        && !["gp2", "gp3", "io1", "io2", "standard"].contains(&t.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "storageType {t:?} is not one of gp2, gp3, io1, io2, standard"
        ));
    }
    let min = min_storage(spec.storage_type.as_deref());
    if spec.allocated_storage < min || spec.allocated_storage > 65536 {
        return Err(format!(
            "allocatedStorage {} GiB is outside what RDS accepts for {} storage ({min} to 65536 GiB)",
            spec.allocated_storage,
            spec.storage_type.as_deref().unwrap_or("the default")
        ));
    }
    if let Some(max) = spec.max_allocated_storage
        && max < spec.allocated_storage
    {
        return Err(format!(
            "maxAllocatedStorage {max} must be at least allocatedStorage {}",
            spec.allocated_storage
        ));
    }
    validate_master_username(&spec.engine, &spec.master_username)?;
    if let Some(name) = &spec.db_name {
        validate_db_name(&spec.engine, name)?;
    }
    if let Some(days) = spec.backup_retention_period
        && !(0..=35).contains(&days)
    {
        return Err(format!(
            "spec.backupRetentionPeriod {days} is outside 0 to 35 days"
        ));
    }
    if let Some(port) = spec.port
        && !(1150..=65535).contains(&port)
    {
        return Err(format!("port {port} is outside 1150 to 65535"));
    }
    if spec.write_connection_secret_to.is_none()
        && spec.common.management_policy() == ManagementPolicy::Manage
    {
        return Err(
            "writeConnectionSecretTo is required: kaws keeps the master password and connection details there"
                .to_string(),
        );
    }
    if let Some(id) = &spec.final_snapshot_identifier {
        validate_identifier("finalSnapshotIdentifier", id)?;
    }
    spec.common.validate()?;
    Ok(())
}

/// RDS identifiers: 1-63 letters, digits and hyphens, starting with a letter, no trailing or
/// double hyphen.
fn validate_identifier(field: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {id:?} is not valid: 1 to 63 letters, digits and hyphens, starting with a letter, without a trailing or double hyphen"
        ))
    }
}

/// Names RDS or the engine keep for themselves (RDS refuses them as `MasterUsername` with
/// "reserved word"): RDS's own users, and the engines' reserved words that are likely names.
/// Not the engines' full keyword lists: RDS rejects the rest at create, terminally.
const RESERVED_USERNAMES: &[&str] = &["rdsadmin", "rdsrepladmin", "rdstopmgr", "rdsproxyadmin"];
const POSTGRES_RESERVED: &[&str] = &[
    "current_user",
    "session_user",
    "current_role",
    "system_user",
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_time",
    "current_timestamp",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];
const MYSQL_RESERVED: &[&str] = &[
    "all",
    "alter",
    "and",
    "as",
    "asc",
    "between",
    "by",
    "case",
    "check",
    "column",
    "create",
    "database",
    "databases",
    "default",
    "delete",
    "desc",
    "distinct",
    "drop",
    "else",
    "exists",
    "false",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "insert",
    "into",
    "is",
    "key",
    "keys",
    "like",
    "limit",
    "lock",
    "not",
    "null",
    "on",
    "or",
    "order",
    "primary",
    "read",
    "references",
    "rename",
    "revoke",
    "schema",
    "select",
    "show",
    "table",
    "then",
    "to",
    "true",
    "union",
    "unique",
    "update",
    "usage",
    "use",
    "using",
    "values",
    "when",
    "where",
    "with",
    "write",
];

fn reserved_for(engine: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let words = if engine == "postgres" {
        POSTGRES_RESERVED
    } else {
        MYSQL_RESERVED
    };
    RESERVED_USERNAMES.contains(&name.as_str())
        || words.contains(&name.as_str())
        // PostgreSQL reserves the role names public and none and those starting with pg_; RDS
        // those starting with rds_.
        || (engine == "postgres"
            && (["public", "none"].contains(&name.as_str())
                || name.starts_with("pg_")
                || name.starts_with("rds_")))
}

/// Longest master user name: 16 for MySQL and MariaDB, 63 for PostgreSQL.
pub fn max_username(engine: &str) -> usize {
    if engine == "postgres" { 63 } else { 16 }
}

/// RDS's `MasterUsername` rules: a letter, then letters, digits or underscores, 1-16 characters
/// (MySQL, MariaDB) or 1-63 (PostgreSQL), and not a reserved word of the engine.
pub fn validate_master_username(engine: &str, name: &str) -> Result<(), String> {
    let max = max_username(engine);
    let shape = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= max;
    if !shape {
        return Err(format!(
            "spec.masterUsername {name:?} is not valid for {engine}: 1 to {max} letters, digits and underscores, starting with a letter"
        ));
    }
    if reserved_for(engine, name) {
        return Err(format!(
            "spec.masterUsername {name:?} is reserved by RDS or {engine}; choose another name"
        ));
    }
    Ok(())
}

/// RDS's `DBName` rules: a letter, then letters, digits or underscores; 1-63 characters for
/// PostgreSQL, 1-64 for MySQL and MariaDB; not a reserved word.
pub fn validate_db_name(engine: &str, name: &str) -> Result<(), String> {
    let max = if engine == "postgres" { 63 } else { 64 };
    let shape = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= max;
    if !shape {
        return Err(format!(
            "spec.dbName {name:?} is not valid for {engine}: 1 to {max} letters, digits and underscores, starting with a letter"
        ));
    }
    let lower = name.to_ascii_lowercase();
    let words = if engine == "postgres" {
        POSTGRES_RESERVED
    } else {
        MYSQL_RESERVED
    };
    // `postgres` and `mysql` are fine as database names; only SQL reserved words are not.
    if words.contains(&lower.as_str()) {
        return Err(format!(
            "spec.dbName {name:?} is a reserved word of {engine}; choose another name"
        ));
    }
    Ok(())
}

/// RDS's password rules, checked without ever putting the password into the message.
pub fn validate_password(engine: &str, password: &str) -> Result<(), String> {
    let max = if engine == "postgres" { 128 } else { 41 };
    let ok = (8..=max).contains(&password.len())
        && password
            .chars()
            .all(|c| c.is_ascii_graphic() && !['/', '"', '@'].contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the master password must be 8 to {max} printable ASCII characters other than /, \", @ and space"
        ))
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `16` is satisfied by `16.4`; `16.4` only by `16.4` (RDS never reports less detail than given).
pub fn engine_version_matches(desired: &str, observed: &str) -> bool {
    eq_ci(desired, observed)
        || observed
            .to_ascii_lowercase()
            .starts_with(&format!("{}.", desired.to_ascii_lowercase()))
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// The changes that make `observed` match `spec`; empty when RDS already matches.
pub fn diff(
    spec: &DBInstanceSpec,
    observed: &ObservedDb,
    credentials: &Credentials,
    desired_tags: &BTreeMap<String, String>,
) -> Vec<DbChange> {
    let mut changes = Vec::new();

    if let Some(v) = &spec.engine_version {
        let current = observed.engine_version.as_deref().unwrap_or_default();
        if !engine_version_matches(v, current) {
            changes.push(DbChange::EngineVersion {
                version: v.clone(),
                major_upgrade: major(v) != major(current),
            });
        }
    }
    if !eq_ci(&spec.db_instance_class, &observed.db_instance_class) {
        changes.push(DbChange::DbInstanceClass(spec.db_instance_class.clone()));
    }
    // Storage only grows; autoscaling may have grown it past the spec.
    if spec.allocated_storage > observed.allocated_storage {
        changes.push(DbChange::AllocatedStorage(spec.allocated_storage));
    }
    if let Some(max) = spec.max_allocated_storage
        && observed.max_allocated_storage != Some(max)
    {
        changes.push(DbChange::MaxAllocatedStorage(max));
    }
    if let Some(t) = &spec.storage_type
        && !observed
            .storage_type
            .as_deref()
            .is_some_and(|o| eq_ci(o, t))
    {
        changes.push(DbChange::StorageType(t.to_ascii_lowercase()));
    }
    if let Some(iops) = spec.iops
        && observed.iops != Some(iops)
    {
        changes.push(DbChange::Iops(iops));
    }
    if let Some(g) = &spec.db_subnet_group_name
        && !observed
            .db_subnet_group_name
            .as_deref()
            .is_some_and(|o| eq_ci(o, g))
    {
        changes.push(DbChange::DbSubnetGroupName(g.clone()));
    }
    if !spec.vpc_security_group_ids.is_empty() {
        let mut want = spec.vpc_security_group_ids.clone();
        want.sort();
        want.dedup();
        let mut have = observed.vpc_security_group_ids.clone();
        have.sort();
        have.dedup();
        if want != have {
            changes.push(DbChange::VpcSecurityGroupIds(want));
        }
    }
    if let Some(g) = &spec.db_parameter_group_name
        && !observed
            .db_parameter_group_names
            .iter()
            .any(|o| eq_ci(o, g))
    {
        changes.push(DbChange::DbParameterGroupName(g.clone()));
    }
    if let Some(m) = spec.multi_az
        && m != observed.multi_az
    {
        changes.push(DbChange::MultiAz(m));
    }
    let public = spec.publicly_accessible.unwrap_or(false);
    if public != observed.publicly_accessible {
        changes.push(DbChange::PubliclyAccessible(public));
    }
    if let Some(days) = spec.backup_retention_period
        && observed.backup_retention_period != Some(days)
    {
        changes.push(DbChange::BackupRetentionPeriod(days));
    }
    if let Some(w) = &spec.preferred_backup_window
        && !observed
            .preferred_backup_window
            .as_deref()
            .is_some_and(|o| eq_ci(o, w))
    {
        changes.push(DbChange::PreferredBackupWindow(w.clone()));
    }
    if let Some(w) = &spec.preferred_maintenance_window
        && !observed
            .preferred_maintenance_window
            .as_deref()
            .is_some_and(|o| eq_ci(o, w))
    {
        changes.push(DbChange::PreferredMaintenanceWindow(w.clone()));
    }
    let protect = spec.deletion_protection.unwrap_or(false);
    if protect != observed.deletion_protection {
        changes.push(DbChange::DeletionProtection(protect));
    }
    if let Some(port) = spec.port
        && observed.port != Some(port)
    {
        changes.push(DbChange::Port(port));
    }
    if let Some(desired) = &credentials.desired
        && credentials.applied.as_ref() != Some(desired)
    {
        changes.push(DbChange::MasterUserPassword(desired.clone()));
    }

    if let Some(TagChanges { set, remove }) = tag_changes(desired_tags, &observed.tags) {
        changes.push(DbChange::Tags { add: set, remove });
    }
    changes
}

/// Statuses in which RDS is working on the instance and accepts no modification.
pub fn availability(status: &str) -> Availability {
    match status {
        "available" | "storage-optimization" => Availability::Available,
        "creating"
        | "backing-up"
        | "configuring-enhanced-monitoring"
        | "configuring-iam-database-auth"
        | "configuring-log-exports"
        | "converting-to-vpc"
        | "maintenance"
        | "modifying"
        | "moving-to-vpc"
        | "rebooting"
        | "resetting-master-credentials"
        | "renaming"
        | "starting"
        | "stopping"
        | "upgrading" => {
            let reason = if status == "creating" {
                crate::core::names::reasons::CREATING
            } else {
                crate::core::names::reasons::UPDATING
            };
            Availability::Busy {
                reason: reason.to_string(),
                message: format!("the RDS instance is {status}"),
            }
        }
        "deleting" => Availability::Busy {
            reason: crate::core::names::reasons::DELETING.to_string(),
            message: "the RDS instance is being deleted".to_string(),
        },
        other => Availability::Busy {
            reason: crate::core::names::reasons::UNAVAILABLE.to_string(),
            message: format!("the RDS instance is {other}"),
        },
    }
}

/// The database applications use when the spec names none.
pub fn database_name(spec: &DBInstanceSpec) -> String {
    match &spec.db_name {
        Some(db) => db.clone(),
        None if spec.engine == "postgres" => "postgres".to_string(),
        None => String::new(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for URI user info).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The connection Secret's data. `host` and `uri` appear once RDS reports an endpoint.
pub fn connection_data(
    spec: &DBInstanceSpec,
    password: &Redacted,
    endpoint: Option<&Endpoint>,
) -> BTreeMap<String, String> {
    let port = endpoint
        .and_then(|e| e.port)
        .or(spec.port)
        .unwrap_or_else(|| default_port(&spec.engine));
    let database = database_name(spec);
    let mut data = BTreeMap::from([
        ("engine".to_string(), spec.engine.clone()),
        ("port".to_string(), port.to_string()),
        ("username".to_string(), spec.master_username.clone()),
        ("password".to_string(), password.0.clone()),
        ("database".to_string(), database.clone()),
    ]);
    if let Some(host) = endpoint.and_then(|e| e.address.as_deref()) {
        let scheme = match spec.engine.as_str() {
            "postgres" => "postgresql",
            other => other,
        };
        data.insert("host".to_string(), host.to_string());
        data.insert(
            "uri".to_string(),
            format!(
                "{scheme}://{}:{}@{host}:{port}/{}",
                encode(&spec.master_username),
                encode(&password.0),
                encode(&database)
            ),
        );
    }
    data
}

/// RDS stores identifiers lower-cased; kaws always sends them that way.
pub fn identifier(obj: &DBInstance) -> String {
    obj.spec.db_instance_identifier.to_ascii_lowercase()
}

/// The pure model of a DBInstance: everything the driver decides without I/O.
pub struct DbInstanceModel;

impl Model<DBInstance> for DbInstanceModel {
    type Observed = ObservedDb;
    type Change = DbChange;
    type Resolved = Credentials;

    fn describe(obj: &DBInstance) -> String {
        format!("RDS DB instance {:?}", identifier(obj))
    }

    fn validate(obj: &DBInstance) -> std::result::Result<(), String> {
        validate(&obj.spec)
    }

    fn observed_tags(observed: &ObservedDb) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(observed: &ObservedDb) -> Availability {
        availability(&observed.status)
    }

    fn plan(
        obj: &DBInstance,
        observed: &ObservedDb,
        resolved: &Credentials,
        tags: &BTreeMap<String, String>,
    ) -> Vec<DbChange> {
        diff(&obj.spec, observed, resolved, tags)
    }

    fn tags_change(observed: &ObservedDb, tags: &BTreeMap<String, String>) -> Option<DbChange> {
        tag_changes(tags, &observed.tags)
            .map(|TagChanges { set, remove }| DbChange::Tags { add: set, remove })
    }

    fn fill_status(
        _obj: &DBInstance,
        _target: &Target,
        observed: &ObservedDb,
        status: &mut DBInstanceStatus,
    ) {
        status.db_instance_identifier = Some(observed.identifier.clone());
        status.common.arn = observed.arn.clone();
        status.db_instance_status = Some(observed.status.clone());
        status.endpoint = observed.endpoint.clone();
        status.dbi_resource_id = observed.dbi_resource_id.clone();
        status.engine_version = observed.engine_version.clone();
        status.db_instance_class = Some(observed.db_instance_class.clone());
        status.allocated_storage = Some(observed.allocated_storage);
        status.pending_modified_values = observed.pending_modified_values.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DBInstanceSpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    const BASE: &str = "dbInstanceIdentifier: orders\nengine: postgres\ndbInstanceClass: db.t4g.micro\nallocatedStorage: 20\nmasterUsername: app\nwriteConnectionSecretTo: {name: orders-db}\n";

    fn tags() -> BTreeMap<String, String> {
        BTreeMap::from([("kaws.io/owner".to_string(), "c/ns/orders".to_string())])
    }

    fn pw(s: &str) -> Option<Redacted> {
        Some(Redacted(s.to_string()))
    }

    /// An instance exactly as BASE wants it, as RDS reports it.
    fn converged() -> ObservedDb {
        ObservedDb {
            identifier: "orders".into(),
            status: "available".into(),
            engine: "postgres".into(),
            engine_version: Some("16.4".into()),
            db_instance_class: "db.t4g.micro".into(),
            allocated_storage: 20,
            max_allocated_storage: Some(20),
            storage_type: Some("gp2".into()),
            tags: tags(),
            ..Default::default()
        }
    }

    /// The password resolved from its Secret, RDS known to have it.
    fn settled() -> Credentials {
        Credentials {
            desired: pw("secret-1"),
            applied: pw("secret-1"),
            connection_secret: None,
        }
    }

    fn fields(changes: &[DbChange]) -> Vec<&'static str> {
        changes.iter().map(Change::field).collect()
    }

    #[test]
    fn diff_cases() {
        let cases: Vec<(&str, String, ObservedDb, Vec<&str>)> = vec![
            (
                "converged instance needs nothing",
                BASE.into(),
                converged(),
                vec![],
            ),
            (
                "major version 16 is satisfied by 16.4",
                format!("{BASE}engineVersion: \"16\""),
                converged(),
                vec![],
            ),
            (
                "16.4 is not satisfied by 16.3",
                format!("{BASE}engineVersion: \"16.4\""),
                ObservedDb {
                    engine_version: Some("16.3".into()),
                    ..converged()
                },
                vec!["engineVersion"],
            ),
            (
                "16 is not satisfied by 160.1",
                format!("{BASE}engineVersion: \"16\""),
                ObservedDb {
                    engine_version: Some("160.1".into()),
                    ..converged()
                },
                vec!["engineVersion"],
            ),
            (
                "class and storage scale-up is one change each",
                BASE.replace("db.t4g.micro", "db.t4g.small")
                    .replace("allocatedStorage: 20", "allocatedStorage: 50"),
                converged(),
                vec!["dbInstanceClass", "allocatedStorage"],
            ),
            (
                "class compares case-insensitively",
                BASE.replace("db.t4g.micro", "DB.T4G.MICRO"),
                converged(),
                vec![],
            ),
            (
                "storage grown by autoscaling is not shrunk",
                BASE.into(),
                ObservedDb {
                    allocated_storage: 40,
                    ..converged()
                },
                vec![],
            ),
            (
                "absent storageType accepts the AWS default",
                BASE.into(),
                ObservedDb {
                    storage_type: Some("gp3".into()),
                    ..converged()
                },
                vec![],
            ),
            (
                "storageType compares case-insensitively",
                format!("{BASE}storageType: GP2"),
                converged(),
                vec![],
            ),
            (
                "storageType change is applied",
                format!("{BASE}storageType: gp3"),
                converged(),
                vec!["storageType"],
            ),
            (
                "absent maxAllocatedStorage ignores the AWS value",
                BASE.into(),
                ObservedDb {
                    max_allocated_storage: Some(100),
                    ..converged()
                },
                vec![],
            ),
            (
                "lower-cased maintenance window and parameter group are not drift",
                format!(
                    "{BASE}preferredMaintenanceWindow: Sun:05:00-Sun:05:30\ndbParameterGroupName: My-Params"
                ),
                ObservedDb {
                    preferred_maintenance_window: Some("sun:05:00-sun:05:30".into()),
                    db_parameter_group_names: vec!["my-params".into()],
                    ..converged()
                },
                vec![],
            ),
            (
                "security groups compare as a set",
                format!("{BASE}vpcSecurityGroupIds: [sg-2, sg-1]"),
                ObservedDb {
                    vpc_security_group_ids: vec!["sg-1".into(), "sg-2".into()],
                    ..converged()
                },
                vec![],
            ),
            (
                "made public outside kaws is reverted",
                BASE.into(),
                ObservedDb {
                    publicly_accessible: true,
                    ..converged()
                },
                vec!["publiclyAccessible"],
            ),
            (
                "deletion protection follows the spec",
                format!("{BASE}deletionProtection: true"),
                converged(),
                vec!["deletionProtection"],
            ),
            (
                "AWS-reserved tags are not drift; a foreign tag is removed",
                BASE.into(),
                ObservedDb {
                    tags: {
                        let mut t = tags();
                        t.insert("aws:cloudformation:stack".into(), "x".into());
                        t.insert("rogue".into(), "x".into());
                        t
                    },
                    ..converged()
                },
                vec!["tags"],
            ),
        ];
        for (why, yaml, observed, want) in cases {
            let got = diff(&spec(&yaml), &observed, &settled(), &tags());
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn the_password_follows_what_the_resolve_step_read() {
        let cases: Vec<(&str, Credentials, Vec<&str>)> = vec![
            ("settled: nothing to do", settled(), vec![]),
            (
                "a rotated password is set",
                Credentials {
                    desired: pw("secret-2"),
                    ..settled()
                },
                vec!["masterUserPassword"],
            ),
            (
                "an unknown applied password is set again",
                Credentials {
                    applied: None,
                    ..settled()
                },
                vec!["masterUserPassword"],
            ),
            (
                "no password read changes nothing",
                Credentials::default(),
                vec![],
            ),
        ];
        for (why, credentials, want) in cases {
            let got = diff(&spec(BASE), &converged(), &credentials, &tags());
            assert_eq!(fields(&got), want, "{why}");
        }
    }

    #[test]
    fn validation_cases() {
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("base spec", BASE.into(), None),
            (
                "unknown engine",
                BASE.replace("engine: postgres", "engine: oracle-ee"),
                Some("engine \"oracle-ee\" is not supported"),
            ),
            (
                "storage below the minimum",
                BASE.replace("allocatedStorage: 20", "allocatedStorage: 10"),
                Some("allocatedStorage 10 GiB"),
            ),
            (
                "io1 needs 100 GiB",
                format!("{BASE}storageType: io1\niops: 1000"),
                Some("io1"),
            ),
            (
                "standard storage may be 5 GiB",
                BASE.replace("allocatedStorage: 20", "allocatedStorage: 5")
                    + "storageType: standard",
                None,
            ),
            (
                "identifier with underscore",
                BASE.replace("orders", "orders_db"),
                Some("dbInstanceIdentifier"),
            ),
            (
                "identifier starting with a digit",
                BASE.replace(
                    "dbInstanceIdentifier: orders",
                    "dbInstanceIdentifier: 1orders",
                ),
                Some("starting with a letter"),
            ),
            (
                "no connection Secret",
                BASE.replace("writeConnectionSecretTo: {name: orders-db}\n", ""),
                Some("writeConnectionSecretTo is required"),
            ),
            (
                "ObserveOnly needs no connection Secret",
                BASE.replace("writeConnectionSecretTo: {name: orders-db}\n", "")
                    + "managementPolicy: ObserveOnly",
                None,
            ),
            (
                "max below allocated",
                format!("{BASE}maxAllocatedStorage: 10"),
                Some("maxAllocatedStorage"),
            ),
            (
                "not an instance class",
                BASE.replace("db.t4g.micro", "t4g.micro"),
                Some("dbInstanceClass"),
            ),
        ];
        for (why, yaml, want) in cases {
            let got = validate(&spec(&yaml));
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(fragment) => {
                    let msg = got.expect_err(why);
                    assert!(msg.contains(fragment), "{why}: {msg}");
                }
            }
        }
    }

    #[test]
    fn master_user_and_database_names_follow_the_engine_rules() {
        let mysql = BASE.replace("engine: postgres", "engine: mysql");
        let user = |base: &str, name: &str| {
            base.replace("masterUsername: app", &format!("masterUsername: {name}"))
        };
        let long20 = "u".repeat(20);
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            (
                "postgres as the postgres master user is fine",
                user(BASE, "postgres"),
                None,
            ),
            (
                "admin as the MySQL master user is fine",
                user(&mysql, "admin"),
                None,
            ),
            ("an underscore is fine", user(BASE, "app_admin"), None),
            ("20 characters fit PostgreSQL", user(BASE, &long20), None),
            (
                "20 characters do not fit MySQL",
                user(&mysql, &long20),
                Some("1 to 16 letters"),
            ),
            (
                "64 characters do not fit PostgreSQL",
                user(BASE, &"u".repeat(64)),
                Some("1 to 63 letters"),
            ),
            (
                "a hyphen is not allowed",
                user(BASE, "app-admin"),
                Some("spec.masterUsername \"app-admin\" is not valid"),
            ),
            (
                "a digit first is not allowed",
                user(BASE, "1app"),
                Some("starting with a letter"),
            ),
            (
                "RDS's own user",
                user(&mysql, "rdsadmin"),
                Some("reserved by RDS or mysql"),
            ),
            (
                "RDS's own user in capitals",
                user(BASE, "RDSADMIN"),
                Some("reserved"),
            ),
            (
                "an SQL reserved word on PostgreSQL",
                user(BASE, "user"),
                Some("reserved by RDS or postgres"),
            ),
            (
                "an SQL reserved word on MySQL",
                user(&mysql, "select"),
                Some("reserved"),
            ),
            (
                "a pg_ role name",
                user(BASE, "pg_monitor"),
                Some("reserved"),
            ),
            (
                "an rds_ role name",
                user(BASE, "rds_superuser"),
                Some("reserved"),
            ),
            (
                "PostgreSQL's public role",
                user(BASE, "public"),
                Some("reserved"),
            ),
            ("a database name", format!("{BASE}dbName: orders_v2"), None),
            (
                "a database name with a hyphen",
                format!("{BASE}dbName: orders-v2"),
                Some("spec.dbName"),
            ),
            (
                "a reserved word as database name",
                format!("{BASE}dbName: table"),
                Some("reserved word of postgres"),
            ),
            (
                "backups kept 35 days",
                format!("{BASE}backupRetentionPeriod: 35"),
                None,
            ),
            (
                "backups kept 36 days",
                format!("{BASE}backupRetentionPeriod: 36"),
                Some("spec.backupRetentionPeriod 36"),
            ),
            (
                "a made-up region",
                format!("{BASE}region: mars-1"),
                Some("spec.region"),
            ),
        ];
        for (why, yaml, want) in cases {
            let got = validate(&spec(&yaml));
            match want {
                None => assert_eq!(got, Ok(()), "{why}"),
                Some(fragment) => {
                    let msg = got.expect_err(why);
                    assert!(msg.contains(fragment), "{why}: {msg}");
                }
            }
        }
    }

    #[test]
    fn password_rules_never_echo_the_password() {
        assert!(validate_password("postgres", "abcdefgh").is_ok());
        for bad in [
            "short",
            "has space1",
            "has/slash",
            "has@at123",
            "has\"quote",
        ] {
            let msg = validate_password("postgres", bad).expect_err(bad);
            assert!(!msg.contains(bad), "{msg}");
        }
        assert!(validate_password("mysql", &"a".repeat(42)).is_err());
        assert!(validate_password("postgres", &"a".repeat(42)).is_ok());
    }

    #[test]
    fn redacted_debug_hides_the_value() {
        let change = DbChange::MasterUserPassword(Redacted("hunter2hunter2".into()));
        assert!(!format!("{change:?}").contains("hunter2"));
    }

    #[test]
    fn connection_uri_encodes_user_and_password() {
        let s = spec(BASE);
        let endpoint = Endpoint {
            address: Some("orders.abc.eu-west-1.rds.amazonaws.com".into()),
            port: Some(5432),
            hosted_zone_id: None,
        };
        let data = connection_data(&s, &Redacted("p:ss#w%rd".into()), Some(&endpoint));
        assert_eq!(
            data.get("uri").map(String::as_str),
            Some(
                "postgresql://app:p%3Ass%23w%25rd@orders.abc.eu-west-1.rds.amazonaws.com:5432/postgres"
            )
        );
        assert_eq!(data.get("database").map(String::as_str), Some("postgres"));
        let without = connection_data(&s, &Redacted("x".into()), None);
        assert!(!without.contains_key("host") && !without.contains_key("uri"));
        assert_eq!(without.get("port").map(String::as_str), Some("5432"));
    }

    #[test]
    fn busy_statuses_block_modifications() {
        assert_eq!(availability("available"), Availability::Available);
        for s in [
            "creating",
            "modifying",
            "backing-up",
            "resetting-master-credentials",
        ] {
            assert!(
                matches!(availability(s), Availability::Busy { .. }),
                "{s} is busy"
            );
        }
        assert!(matches!(
            availability("creating"),
            Availability::Busy { reason, .. } if reason == "Creating"
        ));
    }
}
