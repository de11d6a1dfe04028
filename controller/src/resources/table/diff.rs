//! Pure Table logic: spec validation, and the update planner that turns desired × observed into
//! an ordered list of single DynamoDB steps. No IO.
//!
//! DynamoDB accepts one index creation or deletion per `UpdateTable` call and none while the
//! table or an index is changing, so kaws never sends "the whole diff": it plans the steps,
//! applies the first, and plans again from a fresh observation once DynamoDB is done with it.

use crate::core::ownership::{TagChanges, tag_changes};
use std::collections::{BTreeMap, BTreeSet};

use super::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ProvisionedThroughput, SseSpecification,
    StreamViewType, TableClass, TableSpec,
};
use super::types::{IndexStatus, Table, TableStatus};
use crate::core::driver::{Availability, Change, Model, Target};

/// One global secondary index as DynamoDB reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedIndex {
    /// Throughput is `None` when DynamoDB reports none or zero (on-demand).
    pub index: GlobalSecondaryIndex,
    pub status: Option<String>,
    pub backfilling: Option<bool>,
}

/// The table as DynamoDB reports it, in the spec's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedTable {
    pub arn: String,
    pub table_id: Option<String>,
    /// `CreationDateTime`, in whole seconds since the epoch.
    pub created: Option<i64>,
    /// `TableStatus`, e.g. `ACTIVE`.
    pub status: String,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeySchemaElement>,
    pub billing_mode: BillingMode,
    /// `None` when DynamoDB reports none or zero (on-demand).
    pub throughput: Option<ProvisionedThroughput>,
    pub global_secondary_indexes: Vec<ObservedIndex>,
    pub local_secondary_indexes: Vec<LocalSecondaryIndex>,
    /// `Some` only while a stream is enabled.
    pub stream_view_type: Option<StreamViewType>,
    pub latest_stream_arn: Option<String>,
    pub latest_stream_label: Option<String>,
    /// `Some(key ARN)` while KMS encryption is on (`None` inside: no key reported).
    pub sse_kms: Option<Option<String>>,
    pub table_class: Option<TableClass>,
    pub deletion_protection_enabled: bool,
    /// `ENABLED`, `ENABLING`, `DISABLED` or `DISABLING`.
    pub ttl_status: Option<String>,
    pub ttl_attribute: Option<String>,
    /// `ENABLED` or `DISABLED`.
    pub pitr_status: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub item_count: Option<i64>,
    pub table_size_bytes: Option<i64>,
}

/// One DynamoDB call that brings the table closer to the spec. The planner orders them: cheap
/// calls that never make the table busy first, then `UpdateTable` calls, index deletions before
/// billing changes (switching to `PROVISIONED` needs throughput for every remaining index) and
/// index creations last.
#[derive(Clone, Debug, PartialEq)]
pub enum TableChange {
    /// The spec asks for something DynamoDB cannot do to an existing table (e.g. an adopted
    /// table with another key schema); applying it fails with this message.
    Impossible {
        field: &'static str,
        message: String,
    },
    /// `TagResource` with `set`, then `UntagResource` with `remove`.
    Tags {
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    /// `UpdateTimeToLive`. Changing the attribute of enabled TTL disables it first.
    TimeToLive {
        attribute_name: String,
        enabled: bool,
    },
    /// `UpdateContinuousBackups`.
    PointInTimeRecovery(bool),
    /// `UpdateTable DeletionProtectionEnabled`.
    DeletionProtection(bool),
    /// `UpdateTable GlobalSecondaryIndexUpdates: [Delete]`.
    DeleteIndex(String),
    /// `UpdateTable BillingMode` with the throughput the new mode needs, for the table and for
    /// every index (DynamoDB wants them in the same call).
    Billing {
        mode: BillingMode,
        throughput: Option<ProvisionedThroughput>,
        index_throughput: Vec<(String, ProvisionedThroughput)>,
    },
    /// `UpdateTable ProvisionedThroughput`.
    Throughput(ProvisionedThroughput),
    /// `UpdateTable GlobalSecondaryIndexUpdates: [Update]`.
    IndexThroughput {
        index_name: String,
        throughput: ProvisionedThroughput,
    },
    /// `UpdateTable GlobalSecondaryIndexUpdates: [Create]` with the attribute definitions of every
    /// key that exists after the call.
    CreateIndex {
        index: GlobalSecondaryIndex,
        attribute_definitions: Vec<AttributeDefinition>,
    },
    /// `UpdateTable StreamSpecification`; `None` disables the stream.
    Stream(Option<StreamViewType>),
    /// `UpdateTable SSESpecification`; `None`: back to an AWS-owned key.
    Sse(Option<SseSpecification>),
    /// `UpdateTable TableClass`.
    TableClass(TableClass),
}

impl Change for TableChange {
    fn field(&self) -> &'static str {
        match self {
            TableChange::Impossible { field, .. } => field,
            TableChange::Tags { .. } => "tags",
            TableChange::TimeToLive { .. } => "timeToLive",
            TableChange::PointInTimeRecovery(_) => "pointInTimeRecovery",
            TableChange::DeletionProtection(_) => "deletionProtectionEnabled",
            TableChange::DeleteIndex(_) | TableChange::CreateIndex { .. } => {
                "globalSecondaryIndexes"
            }
            TableChange::Billing { .. } => "billingMode",
            TableChange::Throughput(_) => "provisionedThroughput",
            TableChange::IndexThroughput { .. } => "globalSecondaryIndexes.provisionedThroughput",
            TableChange::Stream(_) => "streamSpecification",
            TableChange::Sse(_) => "sseSpecification",
            TableChange::TableClass(_) => "tableClass",
        }
    }
}

/// DynamoDB's limits on indexes per table.
const MAX_GSIS: usize = 20;
const MAX_LSIS: usize = 5;

/// Checks the parts of the spec DynamoDB would reject, so the user gets a clear message instead
/// of an AWS error code.
pub fn validate(spec: &TableSpec) -> Result<(), String> {
    validate_name("tableName", &spec.table_name)?;
    let defined: BTreeMap<&str, _> = {
        let mut m = BTreeMap::new();
        for d in &spec.attribute_definitions {
            if m.insert(d.attribute_name.as_str(), d.attribute_type)
                .is_some()
            {
                return Err(format!(
                    "attributeDefinitions: {:?} is defined twice",
                    d.attribute_name
                ));
            }
        }
        m
    };
    let mut used = BTreeSet::new();
    let mut check_key = |what: &str, key: &[KeySchemaElement]| -> Result<(), String> {
        let shape_ok = match key {
            [h] => h.key_type == KeyType::Hash,
            [h, r] => {
                h.key_type == KeyType::Hash
                    && r.key_type == KeyType::Range
                    && h.attribute_name != r.attribute_name
            }
            _ => false,
        };
        if !shape_ok {
            return Err(format!(
                "{what}: a key is one HASH element, optionally followed by one RANGE element on another attribute"
            ));
        }
        for k in key {
            if !defined.contains_key(k.attribute_name.as_str()) {
                return Err(format!(
                    "{what}: key attribute {:?} is not in attributeDefinitions",
                    k.attribute_name
                ));
            }
            used.insert(k.attribute_name.clone());
        }
        Ok(())
    };
    check_key("keySchema", &spec.key_schema)?;

    let mut index_names = BTreeSet::new();
    if spec.global_secondary_indexes.len() > MAX_GSIS {
        return Err(format!(
            "globalSecondaryIndexes: DynamoDB allows at most {MAX_GSIS}"
        ));
    }
    if spec.local_secondary_indexes.len() > MAX_LSIS {
        return Err(format!(
            "localSecondaryIndexes: DynamoDB allows at most {MAX_LSIS}"
        ));
    }
    for gsi in &spec.global_secondary_indexes {
        let what = format!("globalSecondaryIndexes[{}]", gsi.index_name);
        validate_name(&what, &gsi.index_name)?;
        if !index_names.insert(gsi.index_name.as_str()) {
            return Err(format!("duplicate index name {:?}", gsi.index_name));
        }
        check_key(&format!("{what}.keySchema"), &gsi.key_schema)?;
        validate_projection(&what, &gsi.projection)?;
        match (spec.billing_mode, &gsi.provisioned_throughput) {
            (BillingMode::Provisioned, None) => {
                return Err(format!(
                    "{what}: provisionedThroughput is required when billingMode is PROVISIONED"
                ));
            }
            (BillingMode::PayPerRequest, Some(_)) => {
                return Err(format!(
                    "{what}: provisionedThroughput is not allowed when billingMode is PAY_PER_REQUEST"
                ));
            }
            _ => {}
        }
    }
    let table_hash = spec.key_schema.first().map(|k| k.attribute_name.as_str());
    if !spec.local_secondary_indexes.is_empty() && spec.key_schema.len() != 2 {
        return Err(
            "localSecondaryIndexes need a table whose keySchema has a RANGE element".to_string(),
        );
    }
    for lsi in &spec.local_secondary_indexes {
        let what = format!("localSecondaryIndexes[{}]", lsi.index_name);
        validate_name(&what, &lsi.index_name)?;
        if !index_names.insert(lsi.index_name.as_str()) {
            return Err(format!("duplicate index name {:?}", lsi.index_name));
        }
        check_key(&format!("{what}.keySchema"), &lsi.key_schema)?;
        if lsi.key_schema.len() != 2
            || lsi.key_schema.first().map(|k| k.attribute_name.as_str()) != table_hash
        {
            return Err(format!(
                "{what}.keySchema: the table's HASH attribute followed by a RANGE element"
            ));
        }
        validate_projection(&what, &lsi.projection)?;
    }
    for d in &spec.attribute_definitions {
        if !used.contains(&d.attribute_name) {
            return Err(format!(
                "attributeDefinitions: {:?} is used by no key of the table or its indexes; DynamoDB accepts only key attributes here",
                d.attribute_name
            ));
        }
    }

    match (spec.billing_mode, &spec.provisioned_throughput) {
        (BillingMode::Provisioned, None) => {
            return Err(
                "provisionedThroughput is required when billingMode is PROVISIONED".to_string(),
            );
        }
        (BillingMode::PayPerRequest, Some(_)) => {
            return Err(
                "provisionedThroughput is not allowed when billingMode is PAY_PER_REQUEST"
                    .to_string(),
            );
        }
        _ => {}
    }
    if let Some(ttl) = &spec.time_to_live
        && ttl.attribute_name.is_empty()
    {
        return Err("timeToLive.attributeName must not be empty".to_string());
    }
    if let Some(sse) = &spec.sse_specification
        && !sse.enabled
        && (sse.kms_master_key_id.is_some() || sse.sse_type.is_some())
    {
        return Err("sseSpecification: sseType and kmsMasterKeyID need enabled: true".to_string());
    }
    spec.common.validate()?;
    Ok(())
}

fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if !(3..=255).contains(&name.len()) {
        return Err(format!("{what}: {name:?} must be 3 to 255 characters long"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "{what}: {name:?} may contain only letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

fn validate_projection(what: &str, p: &Projection) -> Result<(), String> {
    match (p.projection_type, p.non_key_attributes.is_empty()) {
        (ProjectionType::Include, true) => {
            Err(format!("{what}.projection: INCLUDE needs nonKeyAttributes"))
        }
        (ProjectionType::All | ProjectionType::KeysOnly, false) => Err(format!(
            "{what}.projection: nonKeyAttributes are allowed only with INCLUDE"
        )),
        _ => Ok(()),
    }
}

/// Projection as compared: DynamoDB may list non-key attributes in any order.
fn normalized(p: &Projection) -> Projection {
    let mut p = p.clone();
    p.non_key_attributes.sort();
    p
}

fn sorted_key(key: &[KeySchemaElement]) -> Vec<KeySchemaElement> {
    let mut key = key.to_vec();
    key.sort_by_key(|k| k.key_type);
    key
}

fn attribute_types(defs: &[AttributeDefinition]) -> BTreeMap<&str, AttributeDefinition> {
    defs.iter()
        .map(|d| (d.attribute_name.as_str(), d.clone()))
        .collect()
}

/// An index's identity: what cannot change without deleting and recreating it.
fn same_definition(
    desired: &GlobalSecondaryIndex,
    desired_types: &BTreeMap<&str, AttributeDefinition>,
    observed: &GlobalSecondaryIndex,
    observed_types: &BTreeMap<&str, AttributeDefinition>,
) -> bool {
    let types_match = desired.key_schema.iter().all(|k| {
        let name = k.attribute_name.as_str();
        desired_types.get(name) == observed_types.get(name)
    });
    sorted_key(&desired.key_schema) == sorted_key(&observed.key_schema)
        && normalized(&desired.projection) == normalized(&observed.projection)
        && types_match
}

/// The ordered DynamoDB steps that make `observed` match `spec`; empty when DynamoDB already
/// matches. Only the first is meant to be applied before observing again.
pub fn plan(
    spec: &TableSpec,
    observed: &ObservedTable,
    desired_tags: &BTreeMap<String, String>,
) -> Vec<TableChange> {
    let mut steps = Vec::new();
    let desired_types = attribute_types(&spec.attribute_definitions);
    let observed_types = attribute_types(&observed.attribute_definitions);

    // Identity first: if it differs, nothing else may be applied.
    if sorted_key(&spec.key_schema) != sorted_key(&observed.key_schema) {
        steps.push(TableChange::Impossible {
            field: "keySchema",
            message: format!(
                "the table's key schema is {}, the spec asks for {}; DynamoDB cannot change a table's key",
                describe_key(&observed.key_schema),
                describe_key(&spec.key_schema)
            ),
        });
    } else if let Some(k) = spec.key_schema.iter().find(|k| {
        let name = k.attribute_name.as_str();
        observed_types.contains_key(name) && desired_types.get(name) != observed_types.get(name)
    }) {
        steps.push(TableChange::Impossible {
            field: "attributeDefinitions",
            message: format!(
                "the type of key attribute {:?} differs from the table's; DynamoDB cannot change it",
                k.attribute_name
            ),
        });
    }
    let lsis = |l: &[LocalSecondaryIndex]| {
        let mut v: Vec<_> = l
            .iter()
            .map(|i| {
                (
                    i.index_name.clone(),
                    sorted_key(&i.key_schema),
                    normalized(&i.projection),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if lsis(&spec.local_secondary_indexes) != lsis(&observed.local_secondary_indexes) {
        steps.push(TableChange::Impossible {
            field: "localSecondaryIndexes",
            message: "the table's local secondary indexes differ from the spec; DynamoDB defines them only when a table is created".to_string(),
        });
    }
    if !steps.is_empty() {
        return steps;
    }

    // Tags first: the owner tag must be on before anything else changes.
    if let Some(TagChanges { set, remove }) = tag_changes(desired_tags, &observed.tags) {
        steps.push(TableChange::Tags { set, remove });
    }

    // TTL: transitional states count as their destination.
    let observed_ttl = match observed.ttl_status.as_deref() {
        Some("ENABLED" | "ENABLING") => observed.ttl_attribute.clone(),
        _ => None,
    };
    let desired_ttl = spec
        .time_to_live
        .as_ref()
        .filter(|t| t.enabled)
        .map(|t| t.attribute_name.clone());
    match (&observed_ttl, &desired_ttl) {
        (Some(o), d) if Some(o) != d.as_ref() => steps.push(TableChange::TimeToLive {
            attribute_name: o.clone(),
            enabled: false,
        }),
        (None, Some(d)) => steps.push(TableChange::TimeToLive {
            attribute_name: d.clone(),
            enabled: true,
        }),
        _ => {}
    }

    let desired_pitr = spec.point_in_time_recovery.is_some_and(|p| p.enabled);
    let observed_pitr = observed.pitr_status.as_deref() == Some("ENABLED");
    if desired_pitr != observed_pitr {
        steps.push(TableChange::PointInTimeRecovery(desired_pitr));
    }

    if spec.deletion_protection_enabled != observed.deletion_protection_enabled {
        steps.push(TableChange::DeletionProtection(
            spec.deletion_protection_enabled,
        ));
    }

    // Indexes: which observed ones stay, which go (removed or redefined), which are new.
    let desired_by_name: BTreeMap<&str, &GlobalSecondaryIndex> = spec
        .global_secondary_indexes
        .iter()
        .map(|i| (i.index_name.as_str(), i))
        .collect();
    let mut kept = Vec::new();
    for o in &observed.global_secondary_indexes {
        match desired_by_name.get(o.index.index_name.as_str()) {
            Some(d) if same_definition(d, &desired_types, &o.index, &observed_types) => {
                kept.push((*d, o))
            }
            _ => steps.push(TableChange::DeleteIndex(o.index.index_name.clone())),
        }
    }

    if spec.billing_mode != observed.billing_mode {
        let provisioned = spec.billing_mode == BillingMode::Provisioned;
        steps.push(TableChange::Billing {
            mode: spec.billing_mode,
            throughput: spec.provisioned_throughput.filter(|_| provisioned),
            index_throughput: kept
                .iter()
                .filter_map(|(d, _)| {
                    d.provisioned_throughput
                        .filter(|_| provisioned)
                        .map(|t| (d.index_name.clone(), t))
                })
                .collect(),
        });
    } else if spec.billing_mode == BillingMode::Provisioned {
        if let Some(t) = spec.provisioned_throughput
            && observed.throughput != Some(t)
        {
            steps.push(TableChange::Throughput(t));
        }
        for (d, o) in &kept {
            if let Some(t) = d.provisioned_throughput
                && o.index.provisioned_throughput != Some(t)
            {
                steps.push(TableChange::IndexThroughput {
                    index_name: d.index_name.clone(),
                    throughput: t,
                });
            }
        }
    }

    let existing: BTreeSet<&str> = kept.iter().map(|(d, _)| d.index_name.as_str()).collect();
    for d in &spec.global_secondary_indexes {
        if existing.contains(d.index_name.as_str()) {
            continue;
        }
        // The definitions DynamoDB needs: every key attribute of the table, its LSIs, the
        // indexes that stay, and the new one.
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let keys = spec
            .key_schema
            .iter()
            .chain(
                spec.local_secondary_indexes
                    .iter()
                    .flat_map(|l| &l.key_schema),
            )
            .chain(kept.iter().flat_map(|(k, _)| &k.key_schema))
            .chain(&d.key_schema);
        for k in keys {
            names.insert(k.attribute_name.as_str());
        }
        let attribute_definitions = names
            .into_iter()
            .filter_map(|n| {
                desired_types
                    .get(n)
                    .or_else(|| observed_types.get(n))
                    .cloned()
            })
            .collect();
        steps.push(TableChange::CreateIndex {
            index: d.clone(),
            attribute_definitions,
        });
    }

    let desired_stream = spec
        .stream_specification
        .filter(|s| s.stream_enabled)
        .map(|s| s.stream_view_type);
    match (observed.stream_view_type, desired_stream) {
        (o, d) if o == d => {}
        // DynamoDB changes the view type only by disabling the stream and enabling a new one.
        (Some(_), Some(_)) => steps.push(TableChange::Stream(None)),
        (_, d) => steps.push(TableChange::Stream(d)),
    }

    let desired_sse = spec.sse_specification.as_ref().filter(|s| s.enabled);
    let sse_ok = match (desired_sse, &observed.sse_kms) {
        (None, None) => true,
        (Some(d), Some(observed_key)) => match (&d.kms_master_key_id, observed_key) {
            (None, _) => true,
            // An alias cannot be compared with a key ARN without asking KMS.
            (Some(k), _) if k.starts_with("alias/") => true,
            (Some(k), Some(arn)) => arn == k || arn.ends_with(&format!("/{k}")),
            (Some(_), None) => false,
        },
        _ => false,
    };
    if !sse_ok {
        steps.push(TableChange::Sse(desired_sse.cloned()));
    }

    if let Some(class) = spec.table_class
        && observed.table_class.unwrap_or(TableClass::Standard) != class
    {
        steps.push(TableChange::TableClass(class));
    }
    steps
}

fn describe_key(key: &[KeySchemaElement]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|k| {
            let t = match k.key_type {
                KeyType::Hash => "HASH",
                KeyType::Range => "RANGE",
            };
            format!("{} {t}", k.attribute_name)
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Whether DynamoDB takes another change now: the table and every index must be `ACTIVE`.
pub fn availability_of(observed: &ObservedTable) -> Availability {
    let busy = |reason: &str, message: String| Availability::Busy {
        reason: reason.to_string(),
        message,
    };
    match observed.status.as_str() {
        "ACTIVE" => {}
        "CREATING" => return busy("Creating", "the table is being created".to_string()),
        "UPDATING" => return busy("Updating", "the table is being updated".to_string()),
        "DELETING" => return busy("Deleting", "the table is being deleted".to_string()),
        other => return busy("Unavailable", format!("the table is {other}")),
    }
    for gsi in &observed.global_secondary_indexes {
        match gsi.status.as_deref() {
            None | Some("ACTIVE") => {}
            Some(status) => {
                let backfill = if gsi.backfilling == Some(true) {
                    " (backfilling)"
                } else {
                    ""
                };
                return busy(
                    "Updating",
                    format!(
                        "index {:?} is {status}{backfill}; DynamoDB takes no other change until it is ACTIVE",
                        gsi.index.index_name
                    ),
                );
            }
        }
    }
    Availability::Available
}

/// The pure model of a Table: everything the driver decides without I/O.
pub struct TableModel;

impl Model<Table> for TableModel {
    type Observed = ObservedTable;
    type Change = TableChange;
    type Resolved = ();

    fn describe(obj: &Table) -> String {
        format!("DynamoDB table {:?}", obj.spec.table_name)
    }

    fn validate(obj: &Table) -> std::result::Result<(), String> {
        validate(&obj.spec)
    }

    fn observed_tags(observed: &ObservedTable) -> &BTreeMap<String, String> {
        &observed.tags
    }

    fn availability(observed: &ObservedTable) -> Availability {
        availability_of(observed)
    }

    fn plan(
        obj: &Table,
        observed: &ObservedTable,
        _resolved: &(),
        tags: &BTreeMap<String, String>,
    ) -> Vec<TableChange> {
        plan(&obj.spec, observed, tags)
    }

    /// Only the first planned step: the rest depends on what DynamoDB looks like after it, so
    /// it is planned again on the next reconcile.
    fn next_batch(plan: Vec<TableChange>) -> Vec<TableChange> {
        plan.into_iter().take(1).collect()
    }

    fn tags_change(
        observed: &ObservedTable,
        tags: &BTreeMap<String, String>,
    ) -> Option<TableChange> {
        tag_changes(tags, &observed.tags)
            .map(|TagChanges { set, remove }| TableChange::Tags { set, remove })
    }

    fn fill_status(
        obj: &Table,
        _target: &Target,
        observed: &ObservedTable,
        status: &mut TableStatus,
    ) {
        status.table_name = Some(obj.spec.table_name.clone());
        status.common.arn = Some(observed.arn.clone());
        status.table_id = observed.table_id.clone();
        status.creation_date_time = observed
            .created
            .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        status.table_status = Some(observed.status.clone());
        status.billing_mode = Some(
            match observed.billing_mode {
                BillingMode::PayPerRequest => "PAY_PER_REQUEST",
                BillingMode::Provisioned => "PROVISIONED",
            }
            .to_string(),
        );
        status.latest_stream_arn = observed.latest_stream_arn.clone();
        status.latest_stream_label = observed.latest_stream_label.clone();
        status.item_count = observed.item_count;
        status.table_size_bytes = observed.table_size_bytes;
        status.global_secondary_indexes = observed
            .global_secondary_indexes
            .iter()
            .map(|g| IndexStatus {
                index_name: g.index.index_name.clone(),
                index_status: g.status.clone(),
                backfilling: g.backfilling,
            })
            .collect();
        status.time_to_live_status = observed.ttl_status.clone();
        status.point_in_time_recovery_status = observed.pitr_status.clone();
        status.deletion_protection_enabled = Some(observed.deletion_protection_enabled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::table::types::ScalarAttributeType;

    fn spec(yaml: &str) -> TableSpec {
        serde_saphyr::from_str(yaml).expect("fixture spec parses")
    }

    fn tags() -> BTreeMap<String, String> {
        BTreeMap::from([("kaws.io/owner".to_string(), "c/ns/t".to_string())])
    }

    /// Ends with `attributeDefinitions`, so a case can append definitions to it.
    const BASE: &str = "tableName: orders
keySchema:
- {attributeName: pk, keyType: HASH}
- {attributeName: sk, keyType: RANGE}
attributeDefinitions:
- {attributeName: pk, attributeType: S}
- {attributeName: sk, attributeType: S}
";

    fn def(name: &str) -> AttributeDefinition {
        AttributeDefinition {
            attribute_name: name.to_string(),
            attribute_type: ScalarAttributeType::S,
        }
    }

    fn key(hash: &str, range: Option<&str>) -> Vec<KeySchemaElement> {
        let mut k = vec![KeySchemaElement {
            attribute_name: hash.to_string(),
            key_type: KeyType::Hash,
        }];
        if let Some(r) = range {
            k.push(KeySchemaElement {
                attribute_name: r.to_string(),
                key_type: KeyType::Range,
            });
        }
        k
    }

    fn gsi(name: &str, hash: &str, throughput: Option<(i64, i64)>) -> ObservedIndex {
        ObservedIndex {
            index: GlobalSecondaryIndex {
                index_name: name.to_string(),
                key_schema: key(hash, None),
                projection: Projection::default(),
                provisioned_throughput: throughput.map(|(r, w)| ProvisionedThroughput {
                    read_capacity_units: r,
                    write_capacity_units: w,
                }),
            },
            status: Some("ACTIVE".to_string()),
            backfilling: None,
        }
    }

    /// A table exactly as `BASE` wants it.
    fn converged() -> ObservedTable {
        ObservedTable {
            arn: "arn:aws:dynamodb:eu-west-1:1:table/orders".to_string(),
            status: "ACTIVE".to_string(),
            attribute_definitions: vec![def("pk"), def("sk")],
            key_schema: key("pk", Some("sk")),
            ttl_status: Some("DISABLED".to_string()),
            pitr_status: Some("DISABLED".to_string()),
            tags: tags(),
            ..Default::default()
        }
    }

    fn with_gsis(gsis: Vec<ObservedIndex>, extra_defs: &[&str]) -> ObservedTable {
        let mut t = converged();
        t.global_secondary_indexes = gsis;
        t.attribute_definitions
            .extend(extra_defs.iter().map(|d| def(d)));
        t
    }

    fn names(steps: &[TableChange]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                TableChange::DeleteIndex(n) => format!("delete {n}"),
                TableChange::CreateIndex {
                    index,
                    attribute_definitions,
                } => {
                    let defs: Vec<&str> = attribute_definitions
                        .iter()
                        .map(|d| d.attribute_name.as_str())
                        .collect();
                    format!("create {} {defs:?}", index.index_name)
                }
                TableChange::TimeToLive {
                    attribute_name,
                    enabled,
                } => format!("ttl {attribute_name} {enabled}"),
                TableChange::Stream(v) => format!("stream {v:?}"),
                TableChange::Tags { set, remove } => {
                    format!(
                        "tags set {:?} remove {remove:?}",
                        set.keys().collect::<Vec<_>>()
                    )
                }
                TableChange::Billing {
                    mode,
                    throughput,
                    index_throughput,
                } => format!(
                    "billing {mode:?} {:?} {:?}",
                    throughput.map(|t| t.read_capacity_units),
                    index_throughput
                        .iter()
                        .map(|(n, t)| format!("{n}={}", t.read_capacity_units))
                        .collect::<Vec<_>>()
                ),
                TableChange::Throughput(t) => format!("throughput {}", t.read_capacity_units),
                TableChange::IndexThroughput {
                    index_name,
                    throughput,
                } => format!(
                    "index throughput {index_name} {}",
                    throughput.read_capacity_units
                ),
                other => other.field().to_string(),
            })
            .collect()
    }

    const ON_DEMAND_GSI_A: &str = "globalSecondaryIndexes:
- indexName: by-a
  keySchema: [{attributeName: a, keyType: HASH}]
";

    #[test]
    fn planner_cases() {
        // (why, spec yaml, observed, expected steps in order)
        let cases: Vec<(&str, String, ObservedTable, Vec<&str>)> = vec![
            (
                "a converged table needs nothing",
                BASE.to_string(),
                converged(),
                vec![],
            ),
            (
                "a rogue tag is removed but kaws' own and AWS' tags stay",
                BASE.to_string(),
                ObservedTable {
                    tags: {
                        let mut t = tags();
                        t.insert("rogue".into(), "x".into());
                        t.insert("kaws.io/uid".into(), "u".into());
                        t.insert("aws:cloudformation:stack-name".into(), "s".into());
                        t
                    },
                    ..converged()
                },
                vec!["tags set [] remove [\"rogue\"]"],
            ),
            (
                "adding one GSI and removing another: delete first, then create, one per step",
                format!(
                    "{BASE}- {{attributeName: b, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-b\n  keySchema: [{{attributeName: b, keyType: HASH}}]\n"
                ),
                with_gsis(vec![gsi("by-a", "a", None)], &["a"]),
                vec!["delete by-a", "create by-b [\"b\", \"pk\", \"sk\"]"],
            ),
            (
                "two new GSIs are two create steps, each with only the attributes it needs",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\n- {{attributeName: b, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n- indexName: by-b\n  keySchema: [{{attributeName: b, keyType: HASH}}]\n"
                ),
                converged(),
                vec![
                    "create by-a [\"a\", \"pk\", \"sk\"]",
                    "create by-b [\"b\", \"pk\", \"sk\"]",
                ],
            ),
            (
                "after the first create, the second create also defines the first index's key",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\n- {{attributeName: b, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n- indexName: by-b\n  keySchema: [{{attributeName: b, keyType: HASH}}]\n"
                ),
                with_gsis(vec![gsi("by-a", "a", None)], &["a"]),
                vec!["create by-b [\"a\", \"b\", \"pk\", \"sk\"]"],
            ),
            (
                "changing an index's key replaces it: delete, then create",
                format!(
                    "{BASE}- {{attributeName: b, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: b, keyType: HASH}}]\n"
                ),
                with_gsis(vec![gsi("by-a", "a", None)], &["a"]),
                vec!["delete by-a", "create by-a [\"b\", \"pk\", \"sk\"]"],
            ),
            (
                "changing a projection replaces the index",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n  projection: {{projectionType: KEYS_ONLY}}\n"
                ),
                with_gsis(vec![gsi("by-a", "a", None)], &["a"]),
                vec!["delete by-a", "create by-a [\"a\", \"pk\", \"sk\"]"],
            ),
            (
                "non-key attributes in another order are not a change",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n  projection: {{projectionType: INCLUDE, nonKeyAttributes: [x, y]}}\n"
                ),
                with_gsis(
                    vec![ObservedIndex {
                        index: GlobalSecondaryIndex {
                            projection: Projection {
                                projection_type: ProjectionType::Include,
                                non_key_attributes: vec!["y".into(), "x".into()],
                            },
                            ..gsi("by-a", "a", None).index
                        },
                        ..gsi("by-a", "a", None)
                    }],
                    &["a"],
                ),
                vec![],
            ),
            (
                "provisioned throughput that differs is one step; equal throughput is none",
                format!(
                    "{BASE}billingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 10, writeCapacityUnits: 5}}\n"
                ),
                ObservedTable {
                    billing_mode: BillingMode::Provisioned,
                    throughput: Some(ProvisionedThroughput {
                        read_capacity_units: 5,
                        write_capacity_units: 5,
                    }),
                    ..converged()
                },
                vec!["throughput 10"],
            ),
            (
                "GSI throughput is updated in place, one index per step",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 5, writeCapacityUnits: 5}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n  provisionedThroughput: {{readCapacityUnits: 7, writeCapacityUnits: 5}}\n"
                ),
                ObservedTable {
                    billing_mode: BillingMode::Provisioned,
                    throughput: Some(ProvisionedThroughput {
                        read_capacity_units: 5,
                        write_capacity_units: 5,
                    }),
                    ..with_gsis(vec![gsi("by-a", "a", Some((5, 5)))], &["a"])
                },
                vec!["index throughput by-a 7"],
            ),
            (
                "switching to PROVISIONED carries the table's and every kept index's throughput, after deleting the removed index",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 3, writeCapacityUnits: 3}}\nglobalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n  provisionedThroughput: {{readCapacityUnits: 4, writeCapacityUnits: 4}}\n"
                ),
                with_gsis(
                    vec![gsi("by-a", "a", None), gsi("by-b", "b", None)],
                    &["a", "b"],
                ),
                vec!["delete by-b", "billing Provisioned Some(3) [\"by-a=4\"]"],
            ),
            (
                "switching to on-demand sends no throughput, and stale provisioned numbers are ignored",
                BASE.to_string(),
                ObservedTable {
                    billing_mode: BillingMode::Provisioned,
                    throughput: Some(ProvisionedThroughput {
                        read_capacity_units: 5,
                        write_capacity_units: 5,
                    }),
                    ..converged()
                },
                vec!["billing PayPerRequest None []"],
            ),
            (
                "on-demand ignores throughput DynamoDB still reports",
                BASE.to_string(),
                ObservedTable {
                    throughput: Some(ProvisionedThroughput {
                        read_capacity_units: 5,
                        write_capacity_units: 5,
                    }),
                    ..converged()
                },
                vec![],
            ),
            (
                "TTL, PITR and streams are enabled, cheap calls first",
                format!(
                    "{BASE}timeToLive: {{attributeName: expires}}\npointInTimeRecovery: {{enabled: true}}\nstreamSpecification: {{streamEnabled: true, streamViewType: NEW_IMAGE}}\n"
                ),
                converged(),
                vec![
                    "ttl expires true",
                    "pointInTimeRecovery",
                    "stream Some(NewImage)",
                ],
            ),
            (
                "TTL being enabled (ENABLING) counts as enabled",
                format!("{BASE}timeToLive: {{attributeName: expires}}\n"),
                ObservedTable {
                    ttl_status: Some("ENABLING".into()),
                    ttl_attribute: Some("expires".into()),
                    ..converged()
                },
                vec![],
            ),
            (
                "moving TTL to another attribute disables it first",
                format!("{BASE}timeToLive: {{attributeName: expires}}\n"),
                ObservedTable {
                    ttl_status: Some("ENABLED".into()),
                    ttl_attribute: Some("old".into()),
                    ..converged()
                },
                vec!["ttl old false"],
            ),
            (
                "removing timeToLive from the spec disables it",
                BASE.to_string(),
                ObservedTable {
                    ttl_status: Some("ENABLED".into()),
                    ttl_attribute: Some("expires".into()),
                    ..converged()
                },
                vec!["ttl expires false"],
            ),
            (
                "a new stream view type needs the stream disabled first",
                format!("{BASE}streamSpecification: {{streamEnabled: true, streamViewType: KEYS_ONLY}}\n"),
                ObservedTable {
                    stream_view_type: Some(StreamViewType::NewImage),
                    ..converged()
                },
                vec!["stream None"],
            ),
            (
                "streamEnabled false equals no stream",
                format!("{BASE}streamSpecification: {{streamEnabled: false}}\n"),
                converged(),
                vec![],
            ),
            (
                "deletion protection follows the spec",
                format!("{BASE}deletionProtectionEnabled: true\n"),
                converged(),
                vec!["deletionProtectionEnabled"],
            ),
            (
                "a table reported without a class is STANDARD",
                format!("{BASE}tableClass: STANDARD\n"),
                converged(),
                vec![],
            ),
            (
                "KMS encryption reported as a key ARN matches a bare key id",
                format!("{BASE}sseSpecification: {{enabled: true, kmsMasterKeyID: k-1}}\n"),
                ObservedTable {
                    sse_kms: Some(Some("arn:aws:kms:eu-west-1:1:key/k-1".into())),
                    ..converged()
                },
                vec![],
            ),
            (
                "KMS encryption turned on outside is turned back off",
                BASE.to_string(),
                ObservedTable {
                    sse_kms: Some(None),
                    ..converged()
                },
                vec!["sseSpecification"],
            ),
            (
                "an adopted table with another key schema is refused before anything is written",
                "tableName: orders\nattributeDefinitions: [{attributeName: id, attributeType: S}]\nkeySchema: [{attributeName: id, keyType: HASH}]\ntags: {team: x}\n".to_string(),
                converged(),
                vec!["keySchema"],
            ),
            (
                "LSIs that differ from the table's cannot be applied",
                format!(
                    "{BASE}- {{attributeName: c, attributeType: S}}\nlocalSecondaryIndexes:\n- indexName: by-c\n  keySchema: [{{attributeName: pk, keyType: HASH}}, {{attributeName: c, keyType: RANGE}}]\n"
                ),
                converged(),
                vec!["localSecondaryIndexes"],
            ),
        ];
        for (why, yaml, observed, want) in cases {
            let got = plan(&spec(&yaml), &observed, &tags());
            assert_eq!(names(&got), want, "{why}");
        }
    }

    #[test]
    fn removed_index_attribute_is_dropped_from_the_definitions_sent() {
        // by-a goes away and a is no longer defined; by-b is created with only the attributes
        // that exist after the call, so DynamoDB never sees the orphan `a`.
        let s = spec(&format!(
            "{BASE}- {{attributeName: b, attributeType: N}}\nglobalSecondaryIndexes:\n- indexName: by-b\n  keySchema: [{{attributeName: b, keyType: HASH}}]\n"
        ));
        let mut observed = with_gsis(vec![], &[]);
        // What DynamoDB reports once by-a is deleted: its attribute is gone too.
        observed.attribute_definitions = vec![def("pk"), def("sk")];
        let steps = plan(&s, &observed, &tags());
        let TableChange::CreateIndex {
            attribute_definitions,
            ..
        } = &steps[0]
        else {
            panic!("expected a create, got {steps:?}");
        };
        assert_eq!(
            attribute_definitions
                .iter()
                .map(|d| (d.attribute_name.as_str(), d.attribute_type))
                .collect::<Vec<_>>(),
            vec![
                ("b", ScalarAttributeType::N),
                ("pk", ScalarAttributeType::S),
                ("sk", ScalarAttributeType::S)
            ]
        );
    }

    #[test]
    fn validation_cases() {
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("plain table", BASE.to_string(), None),
            (
                "kaws' own tag prefix is refused",
                format!("{BASE}tags: {{'kaws.io/uid': x}}\n"),
                Some("spec.tags[\"kaws.io/uid\"]"),
            ),
            (
                "a made-up region",
                format!("{BASE}region: mars-1\n"),
                Some("spec.region"),
            ),
            (
                "key attribute not defined",
                "tableName: t01\nattributeDefinitions: [{attributeName: pk, attributeType: S}]\nkeySchema: [{attributeName: id, keyType: HASH}]\n".to_string(),
                Some("\"id\" is not in attributeDefinitions"),
            ),
            (
                "attribute used by no key",
                format!("{BASE}- {{attributeName: extra, attributeType: S}}\n"),
                Some("\"extra\" is used by no key"),
            ),
            (
                "attribute defined twice",
                format!("{BASE}- {{attributeName: pk, attributeType: N}}\n"),
                Some("defined twice"),
            ),
            (
                "RANGE first",
                "tableName: t01\nattributeDefinitions: [{attributeName: pk, attributeType: S}]\nkeySchema: [{attributeName: pk, keyType: RANGE}]\n".to_string(),
                Some("one HASH element"),
            ),
            (
                "duplicate index names across GSIs and LSIs",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nglobalSecondaryIndexes:\n- indexName: idx\n  keySchema: [{{attributeName: a, keyType: HASH}}]\nlocalSecondaryIndexes:\n- indexName: idx\n  keySchema: [{{attributeName: pk, keyType: HASH}}, {{attributeName: a, keyType: RANGE}}]\n"
                ),
                Some("duplicate index name \"idx\""),
            ),
            (
                "provisioned without throughput",
                format!("{BASE}billingMode: PROVISIONED\n"),
                Some("provisionedThroughput is required"),
            ),
            (
                "on-demand with throughput",
                format!("{BASE}provisionedThroughput: {{readCapacityUnits: 1, writeCapacityUnits: 1}}\n"),
                Some("not allowed when billingMode is PAY_PER_REQUEST"),
            ),
            (
                "provisioned GSI without throughput",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 1, writeCapacityUnits: 1}}\n{ON_DEMAND_GSI_A}"
                ),
                Some("globalSecondaryIndexes[by-a]: provisionedThroughput is required"),
            ),
            (
                "LSI on a table without a sort key",
                "tableName: t01\nattributeDefinitions: [{attributeName: pk, attributeType: S}, {attributeName: a, attributeType: S}]\nkeySchema: [{attributeName: pk, keyType: HASH}]\nlocalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{attributeName: pk, keyType: HASH}, {attributeName: a, keyType: RANGE}]\n".to_string(),
                Some("RANGE element"),
            ),
            (
                "LSI with another partition key",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\nlocalSecondaryIndexes:\n- indexName: by-a\n  keySchema: [{{attributeName: a, keyType: HASH}}, {{attributeName: sk, keyType: RANGE}}]\n"
                ),
                Some("the table's HASH attribute"),
            ),
            (
                "INCLUDE without attributes",
                format!(
                    "{BASE}- {{attributeName: a, attributeType: S}}\n{ON_DEMAND_GSI_A}  projection: {{projectionType: INCLUDE}}\n"
                ),
                Some("INCLUDE needs nonKeyAttributes"),
            ),
            (
                "bad table name",
                BASE.replace("orders", "a b"),
                Some("may contain only letters"),
            ),
            (
                "too short a table name",
                BASE.replace("orders", "ab"),
                Some("3 to 255"),
            ),
            (
                "KMS key without enabled",
                format!("{BASE}sseSpecification: {{enabled: false, kmsMasterKeyID: k}}\n"),
                Some("need enabled: true"),
            ),
            (
                "reserved tag prefix",
                format!("{BASE}tags: {{'aws:x': v}}\n"),
                Some("reserved by AWS"),
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
}
