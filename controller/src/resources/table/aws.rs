//! The Table's AWS side: DynamoDB calls that observe, create, update (one planned step at a
//! time) and delete a table.
//!
//! A full read is 4: `DescribeTable`, `ListTagsOfResource`, `DescribeTimeToLive` and
//! `DescribeContinuousBackups`. A steady resync makes the first alone and takes the tags, TTL
//! and backups from the table's last full read ([`Remembered`]) if `DescribeTable` shows the
//! same table; they are read again about every [`DETAILS_EVERY`](crate::core::batch::DETAILS_EVERY) resync periods and after any
//! write by kaws. Drift of what `DescribeTable` returns is corrected at the next resync, of the
//! other three within that longer period (about an hour at the default 10 minutes).

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        describe_continuous_backups::{
            DescribeContinuousBackupsError, DescribeContinuousBackupsOutput,
        },
        describe_time_to_live::{DescribeTimeToLiveError, DescribeTimeToLiveOutput},
    },
    types as ddb,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::operation::BuildError;

use super::{
    diff::{self, ObservedIndex, ObservedTable, TableChange, availability_of},
    types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        LocalSecondaryIndex, Projection, ProjectionType, ProvisionedThroughput,
        ScalarAttributeType, SseSpecification, StreamViewType, Table, TableClass, TableSpec,
        TableStatus,
    },
};
use crate::{
    aws::{CallMetrics, RegionalClients, classify, describe},
    core::{
        batch::Remembered,
        driver::{
            Availability, Connect, Created, DeleteProgress, External, Reads, Target,
            found_last_time,
        },
        error::{Error, Result},
    },
    metrics::SharedMetrics,
};

/// Why deleting a protected table is blocked (condition and Event reason).
pub const DELETION_PROTECTED: &str = "DeletionProtected";

/// DynamoDB clients, one per region.
pub struct DynamoDb {
    clients: RegionalClients<Client>,
    /// Per (region, table name), what the last full read found beside `DescribeTable`.
    details: Remembered<(String, String), TableDetails>,
    /// The controller's resync period, for objects without `kaws.io/resync-period`.
    resync_period: Duration,
}

impl DynamoDb {
    /// `resync_period`: the controller's; `full_read_every`: in resyncs (see [`Remembered`]).
    pub fn new(
        sdk: SdkConfig,
        metrics: SharedMetrics,
        resync_period: Duration,
        full_read_every: u32,
    ) -> Self {
        Self {
            clients: RegionalClients::new(sdk, metrics, build_client),
            details: Remembered::new(full_read_every),
            resync_period,
        }
    }

    /// Before any write to table `name`: its next read is a full one.
    fn writing(&self, region: &str, name: &str) {
        self.details.forget(&(region.to_string(), name.to_string()));
    }
}

/// What a full read found of a table beside `DescribeTable`, and which table that was.
#[derive(Clone, Debug)]
pub struct TableDetails {
    arn: String,
    table_id: Option<String>,
    created: Option<i64>,
    tags: BTreeMap<String, String>,
    ttl_status: Option<String>,
    ttl_attribute: Option<String>,
    pitr_status: Option<String>,
}

impl TableDetails {
    fn of(o: &ObservedTable) -> Self {
        Self {
            arn: o.arn.clone(),
            table_id: o.table_id.clone(),
            created: o.created,
            tags: o.tags.clone(),
            ttl_status: o.ttl_status.clone(),
            ttl_attribute: o.ttl_attribute.clone(),
            pitr_status: o.pitr_status.clone(),
        }
    }

    /// Whether these details were read of the very table `observed` shows.
    fn are_of(&self, observed: &ObservedTable) -> bool {
        KnownTable {
            arn: &self.arn,
            table_id: self.table_id.as_deref(),
            created: self.created,
        }
        .is(observed)
    }

    /// `observed` (from `DescribeTable`) completed with these details, if it is the very table
    /// they were read of.
    fn complete(&self, observed: &mut ObservedTable) -> bool {
        let same = self.are_of(observed);
        if same {
            observed.tags = self.tags.clone();
            observed.ttl_status = self.ttl_status.clone();
            observed.ttl_attribute = self.ttl_attribute.clone();
            observed.pitr_status = self.pitr_status.clone();
        }
        same
    }
}

fn build_client(sdk: &SdkConfig, region: &str, metrics: &SharedMetrics) -> Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallMetrics(metrics.clone()))
        .build();
    Client::from_conf(conf)
}

/// A create call is never retried inside the SDK: a retry after a lost answer would be told the
/// table exists and could not tell that it created it itself.
fn single_attempt() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_config::retry::RetryConfig::disabled())
}

fn built<T>(r: std::result::Result<T, BuildError>) -> Result<T> {
    r.map_err(|e| Error::InvalidSpec(e.to_string()))
}

/// DynamoDB's "busy" answers are 400s that heal by themselves: another update or index build is
/// still running, or too many control-plane operations run at once. Retry them with backoff
/// instead of treating them as a rejected spec.
fn ddb_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some("ResourceInUseException" | "LimitExceededException") => Error::AwsTransient {
            operation: operation.to_string(),
            message: describe(err),
        },
        _ => classify(operation, err),
    }
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        err.code(),
        Some("ResourceNotFoundException" | "TableNotFoundException")
    )
}

// ---- SDK → spec terms ----

fn from_key(key: &[ddb::KeySchemaElement]) -> Vec<KeySchemaElement> {
    key.iter()
        .map(|k| KeySchemaElement {
            attribute_name: k.attribute_name().to_string(),
            key_type: match k.key_type() {
                ddb::KeyType::Range => KeyType::Range,
                _ => KeyType::Hash,
            },
        })
        .collect()
}

fn from_projection(p: Option<&ddb::Projection>) -> Projection {
    let Some(p) = p else {
        return Projection::default();
    };
    Projection {
        projection_type: match p.projection_type() {
            Some(ddb::ProjectionType::KeysOnly) => ProjectionType::KeysOnly,
            Some(ddb::ProjectionType::Include) => ProjectionType::Include,
            _ => ProjectionType::All,
        },
        non_key_attributes: p.non_key_attributes().to_vec(),
    }
}

/// On-demand tables and indexes report zero (or no) throughput: that is "none".
fn from_throughput(
    t: Option<&ddb::ProvisionedThroughputDescription>,
) -> Option<ProvisionedThroughput> {
    let t = t?;
    match (t.read_capacity_units(), t.write_capacity_units()) {
        (Some(r), Some(w)) if r > 0 && w > 0 => Some(ProvisionedThroughput {
            read_capacity_units: r,
            write_capacity_units: w,
        }),
        _ => None,
    }
}

fn from_table(t: &ddb::TableDescription) -> ObservedTable {
    ObservedTable {
        arn: t.table_arn().unwrap_or_default().to_string(),
        table_id: t.table_id().map(str::to_string),
        created: t.creation_date_time().map(|d| d.secs()),
        status: t
            .table_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        attribute_definitions: t
            .attribute_definitions()
            .iter()
            .map(|d| AttributeDefinition {
                attribute_name: d.attribute_name().to_string(),
                attribute_type: match d.attribute_type() {
                    ddb::ScalarAttributeType::N => ScalarAttributeType::N,
                    ddb::ScalarAttributeType::B => ScalarAttributeType::B,
                    _ => ScalarAttributeType::S,
                },
            })
            .collect(),
        key_schema: from_key(t.key_schema()),
        // Tables created before on-demand existed report no billing summary: provisioned.
        billing_mode: match t.billing_mode_summary().and_then(|b| b.billing_mode()) {
            Some(ddb::BillingMode::PayPerRequest) => BillingMode::PayPerRequest,
            _ => BillingMode::Provisioned,
        },
        throughput: from_throughput(t.provisioned_throughput()),
        global_secondary_indexes: t
            .global_secondary_indexes()
            .iter()
            .map(|g| ObservedIndex {
                index: GlobalSecondaryIndex {
                    index_name: g.index_name().unwrap_or_default().to_string(),
                    key_schema: from_key(g.key_schema()),
                    projection: from_projection(g.projection()),
                    provisioned_throughput: from_throughput(g.provisioned_throughput()),
                },
                status: g.index_status().map(|s| s.as_str().to_string()),
                backfilling: g.backfilling(),
            })
            .collect(),
        local_secondary_indexes: t
            .local_secondary_indexes()
            .iter()
            .map(|l| LocalSecondaryIndex {
                index_name: l.index_name().unwrap_or_default().to_string(),
                key_schema: from_key(l.key_schema()),
                projection: from_projection(l.projection()),
            })
            .collect(),
        stream_view_type: t
            .stream_specification()
            .filter(|s| s.stream_enabled())
            .map(|s| match s.stream_view_type() {
                Some(ddb::StreamViewType::NewImage) => StreamViewType::NewImage,
                Some(ddb::StreamViewType::OldImage) => StreamViewType::OldImage,
                Some(ddb::StreamViewType::KeysOnly) => StreamViewType::KeysOnly,
                _ => StreamViewType::NewAndOldImages,
            }),
        latest_stream_arn: t.latest_stream_arn().map(str::to_string),
        latest_stream_label: t.latest_stream_label().map(str::to_string),
        sse_kms: t
            .sse_description()
            .filter(|s| {
                matches!(
                    s.status(),
                    Some(
                        ddb::SseStatus::Enabled
                            | ddb::SseStatus::Enabling
                            | ddb::SseStatus::Updating
                    )
                )
            })
            .map(|s| s.kms_master_key_arn().map(str::to_string)),
        table_class: t
            .table_class_summary()
            .and_then(|c| c.table_class())
            .map(|c| match c {
                ddb::TableClass::StandardInfrequentAccess => TableClass::StandardInfrequentAccess,
                _ => TableClass::Standard,
            }),
        deletion_protection_enabled: t.deletion_protection_enabled().unwrap_or(false),
        item_count: t.item_count(),
        table_size_bytes: t.table_size_bytes(),
        ..Default::default()
    }
}

/// What the object's last reconcile found of its table: the ARN its tags are read by, and what
/// tells that table from another created later under the same name (same ARN: DynamoDB's ARNs
/// name the table, not the incarnation): its id, else its creation time (moto reports no id).
#[derive(Clone, Copy, Debug)]
pub struct KnownTable<'a> {
    pub arn: &'a str,
    pub table_id: Option<&'a str>,
    pub created: Option<i64>,
}

impl KnownTable<'_> {
    /// Whether `observed` is the very table found last time. Then it existed from that
    /// reconcile until `DescribeTable` answered, so tags read in between are its own.
    fn is(&self, observed: &ObservedTable) -> bool {
        self.arn == observed.arn
            && match (self.table_id, observed.table_id.as_deref()) {
                (Some(known), Some(now)) => known == now,
                _ => self.created.is_some() && self.created == observed.created,
            }
    }
}

/// Reads the table, its tags, TTL and point-in-time recovery: four reads. `Ok(None)` when the
/// table does not exist. With `remembered` details of the same table, `DescribeTable` alone.
///
/// A table the object's last reconcile found (`known`) is read with the four at once. What the
/// other three answered is kept only if `DescribeTable` shows that same table
/// ([`KnownTable::is`]): a table deleted and created again by someone else under the name in
/// between would otherwise be judged by its predecessor's owner tag. Otherwise (or for a table
/// not found before) `DescribeTable` comes first, so that a table not there yet costs one call,
/// and the other three follow it.
pub async fn observe_table(
    c: &Client,
    name: &str,
    known: Option<KnownTable<'_>>,
    remembered: Option<&TableDetails>,
) -> Result<Option<ObservedTable>> {
    let describe = c.describe_table().table_name(name).send();
    let (out, early) = match known {
        Some(k) if remembered.is_none() => {
            let (out, details) = futures::join!(describe, table_details(c, name, k.arn));
            (out, Some((k, details)))
        }
        _ => (describe.await, None),
    };
    let out = match out {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(ddb_error("DescribeTable", &e)),
    };
    let Some(t) = out.table() else {
        return Ok(None);
    };
    let mut observed = from_table(t);
    if observed.arn.is_empty() {
        return Err(Error::AwsTransient {
            operation: "DescribeTable".to_string(),
            message: "DynamoDB reported no table ARN".to_string(),
        });
    }
    if remembered.is_some_and(|d| d.complete(&mut observed)) {
        return Ok(Some(observed));
    }
    let (tags, ttl, pitr) = match early {
        Some((k, details)) if k.is(&observed) => details,
        _ => table_details(c, name, &observed.arn).await,
    };
    let Some(tags) = tags? else {
        // Described, yet its tags "not found": deleted or created again while being read. Taken
        // for untagged, a table of ours would look like someone else's (a terminal
        // AlreadyExists); look again instead.
        return Err(Error::AwsTransient {
            operation: "ListTagsOfResource".to_string(),
            message: format!("table {name:?} changed while being read"),
        });
    };
    observed.tags = tags;
    if observed.status == "CREATING" && observed.tags.is_empty() {
        // Tags given to CreateTable may not be readable for the first moments of a table's
        // life; an empty answer now would read as "not ours" and stop the object with a terminal
        // AlreadyExists. Look again shortly instead.
        return Err(Error::AwsTransient {
            operation: "ListTagsOfResource".to_string(),
            message: format!("table {name:?} is being created and its tags are not readable yet"),
        });
    }
    match ttl {
        Ok(out) => {
            let d = out.time_to_live_description();
            observed.ttl_status = d
                .and_then(|d| d.time_to_live_status())
                .map(|s| s.as_str().to_string());
            observed.ttl_attribute = d.and_then(|d| d.attribute_name()).map(str::to_string);
        }
        // The table went away between two reads; the next observe says so.
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(ddb_error("DescribeTimeToLive", &e)),
    }
    match pitr {
        Ok(out) => {
            observed.pitr_status = out
                .continuous_backups_description()
                .and_then(|c| c.point_in_time_recovery_description())
                .and_then(|p| p.point_in_time_recovery_status())
                .map(|s| s.as_str().to_string());
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(ddb_error("DescribeContinuousBackups", &e)),
    }
    Ok(Some(observed))
}

type Details = (
    Result<Option<BTreeMap<String, String>>>,
    std::result::Result<DescribeTimeToLiveOutput, SdkError<DescribeTimeToLiveError, HttpResponse>>,
    std::result::Result<
        DescribeContinuousBackupsOutput,
        SdkError<DescribeContinuousBackupsError, HttpResponse>,
    >,
);

/// A table's tags (by its ARN), TTL and point-in-time recovery, read at once.
async fn table_details(c: &Client, name: &str, arn: &str) -> Details {
    futures::join!(
        list_tags(c, arn),
        c.describe_time_to_live().table_name(name).send(),
        c.describe_continuous_backups().table_name(name).send(),
    )
}

/// The tags of the table `arn`; `None` if DynamoDB says there is no such table.
async fn list_tags(c: &Client, arn: &str) -> Result<Option<BTreeMap<String, String>>> {
    let mut tags = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = match c
            .list_tags_of_resource()
            .resource_arn(arn)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(ddb_error("ListTagsOfResource", &e)),
        };
        for t in page.tags() {
            tags.insert(t.key().to_string(), t.value().to_string());
        }
        match page.next_token() {
            Some(next) if Some(next) != token.as_deref() => token = Some(next.to_string()),
            _ => return Ok(Some(tags)),
        }
    }
}

// ---- spec → SDK ----

fn to_key(key: &[KeySchemaElement]) -> Result<Vec<ddb::KeySchemaElement>> {
    key.iter()
        .map(|k| {
            built(
                ddb::KeySchemaElement::builder()
                    .attribute_name(&k.attribute_name)
                    .key_type(match k.key_type {
                        KeyType::Hash => ddb::KeyType::Hash,
                        KeyType::Range => ddb::KeyType::Range,
                    })
                    .build(),
            )
        })
        .collect()
}

fn to_definitions(defs: &[AttributeDefinition]) -> Result<Vec<ddb::AttributeDefinition>> {
    defs.iter()
        .map(|d| {
            built(
                ddb::AttributeDefinition::builder()
                    .attribute_name(&d.attribute_name)
                    .attribute_type(match d.attribute_type {
                        ScalarAttributeType::S => ddb::ScalarAttributeType::S,
                        ScalarAttributeType::N => ddb::ScalarAttributeType::N,
                        ScalarAttributeType::B => ddb::ScalarAttributeType::B,
                    })
                    .build(),
            )
        })
        .collect()
}

fn to_projection(p: &Projection) -> ddb::Projection {
    ddb::Projection::builder()
        .projection_type(match p.projection_type {
            ProjectionType::All => ddb::ProjectionType::All,
            ProjectionType::KeysOnly => ddb::ProjectionType::KeysOnly,
            ProjectionType::Include => ddb::ProjectionType::Include,
        })
        .set_non_key_attributes(
            (!p.non_key_attributes.is_empty()).then(|| p.non_key_attributes.clone()),
        )
        .build()
}

fn to_throughput(t: &ProvisionedThroughput) -> Result<ddb::ProvisionedThroughput> {
    built(
        ddb::ProvisionedThroughput::builder()
            .read_capacity_units(t.read_capacity_units)
            .write_capacity_units(t.write_capacity_units)
            .build(),
    )
}

fn to_billing(m: BillingMode) -> ddb::BillingMode {
    match m {
        BillingMode::PayPerRequest => ddb::BillingMode::PayPerRequest,
        BillingMode::Provisioned => ddb::BillingMode::Provisioned,
    }
}

fn to_stream(view: Option<StreamViewType>) -> Result<ddb::StreamSpecification> {
    let b = ddb::StreamSpecification::builder().stream_enabled(view.is_some());
    let b = match view {
        None => b,
        Some(v) => b.stream_view_type(match v {
            StreamViewType::NewAndOldImages => ddb::StreamViewType::NewAndOldImages,
            StreamViewType::NewImage => ddb::StreamViewType::NewImage,
            StreamViewType::OldImage => ddb::StreamViewType::OldImage,
            StreamViewType::KeysOnly => ddb::StreamViewType::KeysOnly,
        }),
    };
    built(b.build())
}

fn to_sse(sse: Option<&SseSpecification>) -> ddb::SseSpecification {
    match sse {
        Some(s) => ddb::SseSpecification::builder()
            .enabled(true)
            .sse_type(ddb::SseType::Kms)
            .set_kms_master_key_id(s.kms_master_key_id.clone())
            .build(),
        None => ddb::SseSpecification::builder().enabled(false).build(),
    }
}

fn to_table_class(c: TableClass) -> ddb::TableClass {
    match c {
        TableClass::Standard => ddb::TableClass::Standard,
        TableClass::StandardInfrequentAccess => ddb::TableClass::StandardInfrequentAccess,
    }
}

fn index_update(
    index_name: &str,
    throughput: &ProvisionedThroughput,
) -> Result<ddb::GlobalSecondaryIndexUpdate> {
    Ok(ddb::GlobalSecondaryIndexUpdate::builder()
        .update(built(
            ddb::UpdateGlobalSecondaryIndexAction::builder()
                .index_name(index_name)
                .provisioned_throughput(to_throughput(throughput)?)
                .build(),
        )?)
        .build())
}

/// Applies one planned step. Each is one DynamoDB call, except tags (tag, then untag).
pub async fn apply_step(c: &Client, name: &str, arn: &str, step: &TableChange) -> Result<()> {
    let update = || c.update_table().table_name(name);
    match step {
        TableChange::Impossible { message, .. } => return Err(Error::InvalidSpec(message.clone())),
        TableChange::Tags { set, remove } => {
            if !set.is_empty() {
                let tags = set
                    .iter()
                    .map(|(k, v)| built(ddb::Tag::builder().key(k).value(v).build()))
                    .collect::<Result<Vec<_>>>()?;
                c.tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(|e| ddb_error("TagResource", &e))?;
            }
            if !remove.is_empty() {
                c.untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(Some(remove.clone()))
                    .send()
                    .await
                    .map_err(|e| ddb_error("UntagResource", &e))?;
            }
        }
        TableChange::TimeToLive {
            attribute_name,
            enabled,
        } => {
            c.update_time_to_live()
                .table_name(name)
                .time_to_live_specification(built(
                    ddb::TimeToLiveSpecification::builder()
                        .attribute_name(attribute_name)
                        .enabled(*enabled)
                        .build(),
                )?)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTimeToLive", &e))?;
        }
        TableChange::PointInTimeRecovery(enabled) => {
            c.update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(built(
                    ddb::PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(*enabled)
                        .build(),
                )?)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateContinuousBackups", &e))?;
        }
        TableChange::DeletionProtection(enabled) => {
            update()
                .deletion_protection_enabled(*enabled)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::DeleteIndex(index) => {
            update()
                .global_secondary_index_updates(
                    ddb::GlobalSecondaryIndexUpdate::builder()
                        .delete(built(
                            ddb::DeleteGlobalSecondaryIndexAction::builder()
                                .index_name(index)
                                .build(),
                        )?)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::Billing {
            mode,
            throughput,
            index_throughput,
        } => {
            let updates = index_throughput
                .iter()
                .map(|(n, t)| index_update(n, t))
                .collect::<Result<Vec<_>>>()?;
            update()
                .billing_mode(to_billing(*mode))
                .set_provisioned_throughput(throughput.as_ref().map(to_throughput).transpose()?)
                .set_global_secondary_index_updates((!updates.is_empty()).then_some(updates))
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::Throughput(t) => {
            update()
                .provisioned_throughput(to_throughput(t)?)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::IndexThroughput {
            index_name,
            throughput,
        } => {
            update()
                .global_secondary_index_updates(index_update(index_name, throughput)?)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::CreateIndex {
            index,
            attribute_definitions,
        } => {
            let action = ddb::CreateGlobalSecondaryIndexAction::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(to_key(&index.key_schema)?))
                .projection(to_projection(&index.projection))
                .set_provisioned_throughput(
                    index
                        .provisioned_throughput
                        .as_ref()
                        .map(to_throughput)
                        .transpose()?,
                );
            update()
                .set_attribute_definitions(Some(to_definitions(attribute_definitions)?))
                .global_secondary_index_updates(
                    ddb::GlobalSecondaryIndexUpdate::builder()
                        .create(built(action.build())?)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::Stream(view) => {
            update()
                .stream_specification(to_stream(*view)?)
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::Sse(sse) => {
            update()
                .sse_specification(to_sse(sse.as_ref()))
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
        TableChange::TableClass(class) => {
            update()
                .table_class(to_table_class(*class))
                .send()
                .await
                .map_err(|e| ddb_error("UpdateTable", &e))?;
        }
    }
    Ok(())
}

/// Everything `CreateTable` accepts from the spec. TTL and point-in-time recovery have their own
/// APIs and follow as planned steps once the table is `ACTIVE`.
/// `None` when the table already existed; else the new table's ARN, if DynamoDB returned it.
async fn create_table(
    c: &Client,
    spec: &TableSpec,
    tags: &BTreeMap<String, String>,
) -> Result<Option<Option<String>>> {
    let provisioned = spec.billing_mode == BillingMode::Provisioned;
    let gsis = spec
        .global_secondary_indexes
        .iter()
        .map(|g| {
            built(
                ddb::GlobalSecondaryIndex::builder()
                    .index_name(&g.index_name)
                    .set_key_schema(Some(to_key(&g.key_schema)?))
                    .projection(to_projection(&g.projection))
                    .set_provisioned_throughput(
                        g.provisioned_throughput
                            .as_ref()
                            .filter(|_| provisioned)
                            .map(to_throughput)
                            .transpose()?,
                    )
                    .build(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let lsis = spec
        .local_secondary_indexes
        .iter()
        .map(|l| {
            built(
                ddb::LocalSecondaryIndex::builder()
                    .index_name(&l.index_name)
                    .set_key_schema(Some(to_key(&l.key_schema)?))
                    .projection(to_projection(&l.projection))
                    .build(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let tags = tags
        .iter()
        .map(|(k, v)| built(ddb::Tag::builder().key(k).value(v).build()))
        .collect::<Result<Vec<_>>>()?;
    let stream = spec
        .stream_specification
        .filter(|s| s.stream_enabled)
        .map(|s| to_stream(Some(s.stream_view_type)))
        .transpose()?;
    let created = c
        .create_table()
        .table_name(&spec.table_name)
        .set_attribute_definitions(Some(to_definitions(&spec.attribute_definitions)?))
        .set_key_schema(Some(to_key(&spec.key_schema)?))
        .billing_mode(to_billing(spec.billing_mode))
        .set_provisioned_throughput(
            spec.provisioned_throughput
                .as_ref()
                .filter(|_| provisioned)
                .map(to_throughput)
                .transpose()?,
        )
        .set_global_secondary_indexes((!gsis.is_empty()).then_some(gsis))
        .set_local_secondary_indexes((!lsis.is_empty()).then_some(lsis))
        .set_stream_specification(stream)
        .set_sse_specification(
            spec.sse_specification
                .as_ref()
                .filter(|s| s.enabled)
                .map(|s| to_sse(Some(s))),
        )
        .set_table_class(spec.table_class.map(to_table_class))
        .deletion_protection_enabled(spec.deletion_protection_enabled)
        .set_tags(Some(tags))
        .customize()
        .config_override(single_attempt())
        .send()
        .await;
    match created {
        Ok(out) => Ok(Some(
            out.table_description()
                .and_then(|t| t.table_arn())
                .map(str::to_string),
        )),
        // The table exists: someone else's, or ours from an attempt whose answer was lost (the
        // driver keeps the intent for that case). The ownership check on the next observe decides.
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(None),
        Err(e) => Err(classify("CreateTable", &e)),
    }
}

#[async_trait]
impl External<Table> for DynamoDb {
    type Model = diff::TableModel;
    const IAM_STATEMENTS: &'static str = "DynamoDB";
    const READS_FROM_MEMORY: bool = true;

    fn connect(c: &Connect<'_>) -> Self {
        Self::new(
            c.sdk.clone(),
            c.metrics.clone(),
            c.resync_period,
            c.full_read_every,
        )
    }

    /// References nothing outside AWS.
    async fn resolve(&self, _obj: &Table, _target: &Target) -> Result<()> {
        Ok(())
    }

    async fn observe(
        &self,
        obj: &Table,
        target: &Target,
        _resolved: Option<&()>,
        reads: Reads,
    ) -> Result<Option<ObservedTable>> {
        let known = obj
            .status
            .as_ref()
            .filter(|_| found_last_time(obj))
            .and_then(|s| {
                Some(KnownTable {
                    arn: s.common.arn.as_deref()?,
                    table_id: s.table_id.as_deref(),
                    created: s.creation_date_time.as_ref().map(|t| t.0.as_second()),
                })
            });
        let name = &obj.spec.table_name;
        let key = (target.region.clone(), name.clone());
        let remembered = (reads == Reads::Steady)
            .then(|| self.details.get(obj, self.resync_period, &key))
            .flatten();
        let observed = observe_table(
            &self.clients.get(&target.region),
            name,
            known,
            remembered.as_ref(),
        )
        .await?;
        // Served from them: not a full read.
        let served = observed
            .as_ref()
            .is_some_and(|o| remembered.is_some_and(|d| d.are_of(o)));
        if !served {
            let found = observed.as_ref().map(TableDetails::of);
            self.details.full_read(obj, self.resync_period, key, found);
        }
        Ok(observed)
    }

    async fn create(
        &self,
        obj: &Table,
        target: &Target,
        _resolved: &mut (),
        tags: &BTreeMap<String, String>,
        status: &mut TableStatus,
    ) -> Result<Created> {
        let c = self.clients.get(&target.region);
        self.writing(&target.region, &obj.spec.table_name);
        let Some(arn) = create_table(&c, &obj.spec, tags).await? else {
            return Ok(Created::Existed);
        };
        status.table_name = Some(obj.spec.table_name.clone());
        status.common.arn = arn;
        status.table_status = Some("CREATING".to_string());
        Ok(Created::New)
    }

    async fn update(
        &self,
        obj: &Table,
        target: &Target,
        observed: &ObservedTable,
        _resolved: &mut (),
        changes: &[TableChange],
    ) -> Result<()> {
        let c = self.clients.get(&target.region);
        self.writing(&target.region, &obj.spec.table_name);
        if let Some(step) = changes.first() {
            apply_step(&c, &obj.spec.table_name, &observed.arn, step).await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        obj: &Table,
        target: &Target,
        observed: &ObservedTable,
    ) -> Result<DeleteProgress> {
        let c = self.clients.get(&target.region);
        let name = obj.spec.table_name.as_str();
        self.writing(&target.region, name);
        if observed.status == "DELETING" {
            return Ok(DeleteProgress::InProgress);
        }
        if observed.deletion_protection_enabled {
            if obj.spec.deletion_protection_enabled {
                return Err(Error::Blocked {
                    reason: DELETION_PROTECTED,
                    message: format!(
                        "DynamoDB table {name:?} has deletion protection enabled; set spec.deletionProtectionEnabled: false to let kaws delete it"
                    ),
                });
            }
            // Protection was turned off in the spec after the delete was requested: apply that
            // first, then delete on the next pass.
            apply_step(
                &c,
                name,
                &observed.arn,
                &TableChange::DeletionProtection(false),
            )
            .await?;
            return Ok(DeleteProgress::InProgress);
        }
        if availability_of(observed) != Availability::Available {
            // DeleteTable fails while the table or an index is changing.
            return Ok(DeleteProgress::InProgress);
        }
        match c.delete_table().table_name(name).send().await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(DeleteProgress::Gone),
            Err(e) if e.code() == Some("ResourceInUseException") => {
                return Ok(DeleteProgress::InProgress);
            }
            Err(e) => return Err(ddb_error("DeleteTable", &e)),
        }
        // Small tables are often gone at once; look before waiting a full poll interval.
        match c.describe_table().table_name(name).send().await {
            Err(e) if is_not_found(&e) => Ok(DeleteProgress::Gone),
            _ => Ok(DeleteProgress::InProgress),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The waiting paths moto cannot produce (its tables and indexes are ACTIVE at once), driven
    //! through the real SDK client with canned DynamoDB responses.

    use aws_sdk_dynamodb::{
        operation::{
            describe_continuous_backups::DescribeContinuousBackupsOutput,
            describe_table::{DescribeTableError, DescribeTableOutput},
            describe_time_to_live::DescribeTimeToLiveOutput,
            list_tags_of_resource::{ListTagsOfResourceError, ListTagsOfResourceOutput},
            update_table::UpdateTableError,
        },
        types::error::{ResourceInUseException, ResourceNotFoundException},
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    const ARN: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders";

    fn key(name: &str, t: ddb::KeyType) -> ddb::KeySchemaElement {
        ddb::KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .expect("key")
    }

    fn table(status: ddb::TableStatus, index_status: ddb::IndexStatus) -> ddb::TableDescription {
        ddb::TableDescription::builder()
            .table_name("orders")
            .table_arn(ARN)
            .table_status(status)
            .key_schema(key("pk", ddb::KeyType::Hash))
            .attribute_definitions(
                ddb::AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ddb::ScalarAttributeType::S)
                    .build()
                    .expect("def"),
            )
            .billing_mode_summary(
                ddb::BillingModeSummary::builder()
                    .billing_mode(ddb::BillingMode::PayPerRequest)
                    .build(),
            )
            .global_secondary_indexes(
                ddb::GlobalSecondaryIndexDescription::builder()
                    .index_name("by-a")
                    .key_schema(key("a", ddb::KeyType::Hash))
                    .index_status(index_status)
                    .backfilling(true)
                    .build(),
            )
            .build()
    }

    /// A client whose DescribeTable reports `t`, with the owner tag and disabled TTL and PITR.
    fn client_describing(t: ddb::TableDescription) -> Client {
        client_with_tags(t, true)
    }

    fn client_with_tags(t: ddb::TableDescription, tagged: bool) -> Client {
        let describe = mock!(Client::describe_table)
            .then_output(move || DescribeTableOutput::builder().table(t.clone()).build());
        let tags = mock!(Client::list_tags_of_resource)
            .match_requests(|r| r.resource_arn() == Some(ARN))
            .then_output(move || {
                let owner = ddb::Tag::builder()
                    .key("kaws.io/owner")
                    .value("c/ns/orders")
                    .build()
                    .expect("tag");
                ListTagsOfResourceOutput::builder()
                    .set_tags(Some(if tagged { vec![owner] } else { vec![] }))
                    .build()
            });
        let ttl = mock!(Client::describe_time_to_live).then_output(|| {
            DescribeTimeToLiveOutput::builder()
                .time_to_live_description(
                    ddb::TimeToLiveDescription::builder()
                        .time_to_live_status(ddb::TimeToLiveStatus::Disabled)
                        .build(),
                )
                .build()
        });
        let pitr = mock!(Client::describe_continuous_backups)
            .then_output(|| DescribeContinuousBackupsOutput::builder().build());
        mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            &[&describe, &tags, &ttl, &pitr]
        )
    }

    #[tokio::test]
    async fn an_index_still_building_makes_the_table_busy() {
        let c = client_describing(table(ddb::TableStatus::Active, ddb::IndexStatus::Creating));
        let observed = observe_table(&c, "orders", None, None)
            .await
            .expect("observe")
            .expect("table exists");
        assert_eq!(
            observed.tags.get("kaws.io/owner").map(String::as_str),
            Some("c/ns/orders")
        );
        match availability_of(&observed) {
            Availability::Busy { reason, message } => {
                assert_eq!(reason, "Updating");
                assert!(
                    message.contains("\"by-a\" is CREATING (backfilling)"),
                    "{message}"
                );
            }
            other => panic!("a CREATING index must block the next step, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_updating_table_is_busy_and_an_active_one_is_not() {
        let cases = [
            (
                ddb::TableStatus::Updating,
                ddb::IndexStatus::Active,
                Some("Updating"),
            ),
            (
                ddb::TableStatus::Creating,
                ddb::IndexStatus::Active,
                Some("Creating"),
            ),
            (
                ddb::TableStatus::Active,
                ddb::IndexStatus::Deleting,
                Some("Updating"),
            ),
            (ddb::TableStatus::Active, ddb::IndexStatus::Active, None),
        ];
        for (table_status, index_status, want) in cases {
            let why = format!("{table_status:?} / {index_status:?}");
            let c = client_describing(table(table_status, index_status));
            let observed = observe_table(&c, "orders", None, None)
                .await
                .expect("observe")
                .expect("table exists");
            let got = match availability_of(&observed) {
                Availability::Busy { reason, .. } | Availability::Failed { reason, .. } => {
                    Some(reason)
                }
                Availability::Available => None,
            };
            assert_eq!(got.as_deref(), want, "{why}");
        }
    }

    #[tokio::test]
    async fn untagged_table_still_creating_is_retried_not_taken_for_someone_elses() {
        let c = client_with_tags(
            table(ddb::TableStatus::Creating, ddb::IndexStatus::Creating),
            false,
        );
        let err = observe_table(&c, "orders", None, None)
            .await
            .expect_err("tags not readable yet");
        assert!(!err.is_terminal(), "{err}");
        // Once ACTIVE, an untagged table is simply untagged (the ownership check decides).
        let c = client_with_tags(
            table(ddb::TableStatus::Active, ddb::IndexStatus::Active),
            false,
        );
        let observed = observe_table(&c, "orders", None, None)
            .await
            .expect("observe");
        assert!(observed.is_some_and(|t| t.tags.is_empty()));
    }

    /// DynamoDB's answer for a table (or ARN) it does not have.
    fn not_found() -> ResourceNotFoundException {
        ResourceNotFoundException::builder()
            .message("Requested resource not found")
            .meta(
                ErrorMetadata::builder()
                    .code("ResourceNotFoundException")
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn a_table_found_last_time_is_read_with_its_four_reads_at_once() {
        // `described`: the table DynamoDB describes (`None`: no such table); `tagged`: whether
        // ListTagsOfResource finds it.
        let reads = |described: Option<ddb::TableDescription>, tagged: bool| {
            let describe = match described {
                Some(t) => mock!(Client::describe_table)
                    .then_output(move || DescribeTableOutput::builder().table(t.clone()).build()),
                None => mock!(Client::describe_table)
                    .then_error(move || DescribeTableError::ResourceNotFoundException(not_found())),
            };
            let ours = if tagged {
                mock!(Client::list_tags_of_resource)
                    .match_requests(|r| r.resource_arn() == Some(ARN))
                    .then_output(|| {
                        ListTagsOfResourceOutput::builder()
                            .tags(
                                ddb::Tag::builder()
                                    .key("kaws.io/owner")
                                    .value("c/ns/orders")
                                    .build()
                                    .expect("tag"),
                            )
                            .build()
                    })
            } else {
                mock!(Client::list_tags_of_resource)
                    .match_requests(|r| r.resource_arn() == Some(ARN))
                    .then_error(move || {
                        ListTagsOfResourceError::ResourceNotFoundException(not_found())
                    })
            };
            let others = mock!(Client::list_tags_of_resource)
                .match_requests(|r| r.resource_arn() != Some(ARN))
                .then_output(|| ListTagsOfResourceOutput::builder().build());
            let ttl = mock!(Client::describe_time_to_live)
                .then_output(|| DescribeTimeToLiveOutput::builder().build());
            let pitr = mock!(Client::describe_continuous_backups)
                .then_output(|| DescribeContinuousBackupsOutput::builder().build());
            [describe, ours, others, ttl, pitr]
        };
        let calls = |rules: &[Rule]| rules.iter().map(Rule::num_calls).collect::<Vec<_>>();
        let active = |id: Option<&str>| {
            let mut t = table(ddb::TableStatus::Active, ddb::IndexStatus::Active);
            t.table_id = id.map(str::to_string);
            t.creation_date_time = Some(aws_smithy_types::DateTime::from_secs(1_700_000_000));
            Some(t)
        };
        let known = |table_id, created| KnownTable {
            arn: ARN,
            table_id,
            created,
        };
        let observe = |described, tagged, k: Option<KnownTable<'static>>| {
            let rules = reads(described, tagged);
            async move {
                let c = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules);
                let observed = observe_table(&c, "orders", k, None).await;
                (observed, calls(&rules))
            }
        };
        let owner = |o: &Option<ObservedTable>| {
            o.as_ref()
                .and_then(|t| t.tags.get("kaws.io/owner").cloned())
        };

        // Known, and the same table (its id): the four at once, one each.
        let (observed, n) =
            observe(active(Some("id-1")), true, Some(known(Some("id-1"), None))).await;
        assert_eq!(
            owner(&observed.expect("observe")).as_deref(),
            Some("c/ns/orders")
        );
        assert_eq!(n, [1, 1, 0, 1, 1]);
        // Where DynamoDB reports no id (moto), its creation time tells the same table.
        let (observed, n) =
            observe(active(None), true, Some(known(None, Some(1_700_000_000)))).await;
        assert!(owner(&observed.expect("observe")).is_some());
        assert_eq!(n, [1, 1, 0, 1, 1]);

        // Gone since: the four were sent together (DescribeTable did not come first).
        let (observed, n) = observe(None, false, Some(known(Some("id-1"), None))).await;
        assert_eq!(observed.expect("observe"), None);
        assert_eq!(n, [1, 1, 0, 1, 1]);

        // Not known: DescribeTable first, and nothing else for a table not there.
        let (observed, n) = observe(None, false, None).await;
        assert_eq!(observed.expect("observe"), None);
        assert_eq!(n, [1, 0, 0, 0, 0]);

        // Another table under the same name and ARN (a new id, or no id and another creation
        // time, or nothing to tell): what was read beside DescribeTable may be its
        // predecessor's, so the three are read again after it.
        for k in [
            known(Some("id-0"), None),
            known(None, Some(1_600_000_000)),
            known(None, None),
        ] {
            let id = if k.table_id.is_some() {
                Some("id-1")
            } else {
                None
            };
            let (observed, n) = observe(active(id), true, Some(k)).await;
            assert!(owner(&observed.expect("observe")).is_some(), "{k:?}");
            assert_eq!(n, [1, 2, 0, 2, 2], "{k:?}");
        }
        // Known by another ARN than DynamoDB reports: read again for the one reported.
        let (observed, n) = observe(
            active(Some("id-1")),
            true,
            Some(KnownTable {
                arn: "arn:aws:dynamodb:eu-west-1:1:table/x",
                table_id: Some("id-1"),
                created: None,
            }),
        )
        .await;
        assert!(owner(&observed.expect("observe")).is_some());
        assert_eq!(n, [1, 1, 1, 2, 2]);

        // Described, but its tags "not found": it changed while being read. Never taken for an
        // untagged table (someone else's, a terminal AlreadyExists): looked at again.
        let (observed, n) =
            observe(active(Some("id-1")), false, Some(known(Some("id-1"), None))).await;
        let err = observed.expect_err("tags not found");
        assert!(!err.is_terminal(), "{err}");
        assert_eq!(n, [1, 1, 0, 1, 1]);

        // A steady resync with the details of the last full read: DescribeTable alone when it
        // shows the table they were read of, and all four again otherwise.
        let full = |id: Option<&str>| {
            let rules = reads(active(id), true);
            async move {
                let c = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules);
                let observed = observe_table(&c, "orders", None, None).await;
                TableDetails::of(&observed.expect("observe").expect("there"))
            }
        };
        let remembered = |described, details: TableDetails| {
            let rules = reads(described, true);
            async move {
                let c = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules);
                let k = Some(KnownTable {
                    arn: ARN,
                    table_id: details.table_id.as_deref(),
                    created: details.created,
                });
                let observed = observe_table(&c, "orders", k, Some(&details)).await;
                (observed, calls(&rules))
            }
        };
        let (observed, n) = remembered(active(Some("id-1")), full(Some("id-1")).await).await;
        let observed = observed.expect("observe");
        assert_eq!(owner(&observed).as_deref(), Some("c/ns/orders"));
        assert_eq!(n, [1, 0, 0, 0, 0], "DescribeTable alone");
        let (observed, n) = remembered(active(None), full(None).await).await;
        assert!(
            owner(&observed.expect("observe")).is_some(),
            "by creation time"
        );
        assert_eq!(n, [1, 0, 0, 0, 0]);
        let (observed, n) = remembered(active(Some("id-2")), full(Some("id-1")).await).await;
        assert!(owner(&observed.expect("observe")).is_some());
        assert_eq!(
            n,
            [1, 1, 0, 1, 1],
            "another table under the name: read in full"
        );
        let (observed, n) = remembered(None, full(Some("id-1")).await).await;
        assert_eq!(observed.expect("observe"), None);
        assert_eq!(n, [1, 0, 0, 0, 0], "gone: nothing else read");
    }

    #[tokio::test]
    async fn a_missing_table_is_observed_as_absent() {
        let describe = mock!(Client::describe_table)
            .then_error(|| DescribeTableError::ResourceNotFoundException(not_found()));
        let c = mock_client!(aws_sdk_dynamodb, &[&describe]);
        assert_eq!(
            observe_table(&c, "orders", None, None)
                .await
                .expect("observe"),
            None
        );
    }

    #[tokio::test]
    async fn dynamodb_busy_answers_are_retried_not_terminal() {
        let update = mock!(Client::update_table).then_error(|| {
            UpdateTableError::ResourceInUseException(
                ResourceInUseException::builder()
                    .message("Attempt to change a resource which is still in use")
                    .meta(
                        ErrorMetadata::builder()
                            .code("ResourceInUseException")
                            .build(),
                    )
                    .build(),
            )
        });
        let c = mock_client!(aws_sdk_dynamodb, &[&update]);
        let err = apply_step(&c, "orders", ARN, &TableChange::DeleteIndex("by-a".into()))
            .await
            .expect_err("DynamoDB refused");
        assert!(!err.is_terminal(), "{err}");
        assert_eq!(err.category(), "AwsError");
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_impossible_step_is_an_invalid_spec_without_any_call() {
        let update = mock!(Client::update_table).then_error(|| {
            UpdateTableError::ResourceInUseException(ResourceInUseException::builder().build())
        });
        let c = mock_client!(aws_sdk_dynamodb, &[&update]);
        let err = apply_step(
            &c,
            "orders",
            ARN,
            &TableChange::Impossible {
                field: "keySchema",
                message: "DynamoDB cannot change a table's key".into(),
            },
        )
        .await
        .expect_err("refused");
        assert!(err.is_terminal());
        assert_eq!(err.category(), "InvalidSpec");
        assert_eq!(update.num_calls(), 0);
    }
}
