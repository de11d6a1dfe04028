//! The `Table` API (`dynamodb.kaws.io/v1alpha1`): what users write and what kaws reports. No
//! AWS here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::api::{CommonSpec, CommonStatus, Regional};

/// DynamoDB's table and index names: letters, digits, `_`, `-` and `.`.
pub const NAME_PATTERN: &str = r"^[a-zA-Z0-9_.-]+$";

/// CEL rule that makes the optional `localSecondaryIndexes` immutable: LSIs can only be
/// defined when a table is created, so they may be neither added, removed nor changed.
pub const LSI_IMMUTABLE_RULE: &str = "(has(self.localSecondaryIndexes) ? self.localSecondaryIndexes : []) == (has(oldSelf.localSecondaryIndexes) ? oldSelf.localSecondaryIndexes : [])";

/// A DynamoDB table managed by kaws. Updates follow DynamoDB's rules: kaws plans the sequence of
/// single-step calls (one index created or deleted at a time) and applies one per reconcile.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dynamodb.kaws.io",
    version = "v1alpha1",
    kind = "Table",
    namespaced,
    status = "TableStatus",
    shortname = "ddbt",
    category = "aws",
    doc = "A DynamoDB table managed by kaws",
    printcolumn = r#"{"name":"Table","type":"string","jsonPath":".spec.tableName"}"#,
    printcolumn = r#"{"name":"Billing","type":"string","jsonPath":".status.billingMode"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.tableStatus"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::core::api::REGION_IMMUTABLE_RULE).message("region is immutable"),
    validation = Rule::new(LSI_IMMUTABLE_RULE).message("localSecondaryIndexes are immutable: DynamoDB defines them only when the table is created")
)]
pub struct TableSpec {
    /// Name of the DynamoDB table: 3-255 letters, digits, `_`, `-` and `.`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("tableName is immutable"))]
    #[schemars(length(min = 3, max = 255), regex(pattern = NAME_PATTERN))]
    pub table_name: String,

    #[serde(flatten)]
    pub common: CommonSpec,

    /// Every attribute used in a key of the table or of an index, with its type. DynamoDB rejects
    /// attributes that no key uses, and so does kaws' validation.
    pub attribute_definitions: Vec<AttributeDefinition>,

    /// Primary key: one `HASH` element, optionally followed by one `RANGE` element. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("keySchema is immutable"))]
    pub key_schema: Vec<KeySchemaElement>,

    /// `PAY_PER_REQUEST` (on-demand, default) or `PROVISIONED` (needs `provisionedThroughput`).
    #[serde(default)]
    pub billing_mode: BillingMode,

    /// Read and write capacity of the table; required with `PROVISIONED`, not allowed with
    /// `PAY_PER_REQUEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_throughput: Option<ProvisionedThroughput>,

    /// Global secondary indexes, at most 20. Adding, removing or redefining an index is applied
    /// one index at a time, as DynamoDB requires; throughput changes are applied in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,

    /// Local secondary indexes (same partition key as the table, another sort key), at most 5.
    /// Immutable: DynamoDB creates them only with the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub local_secondary_indexes: Vec<LocalSecondaryIndex>,

    /// DynamoDB Streams. Absent: no stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_specification: Option<StreamSpecification>,

    /// Time to live: items expire when the named attribute (epoch seconds) is in the past.
    /// Absent: TTL disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<TimeToLive>,

    /// Point-in-time recovery (continuous backups). Absent: disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time_recovery: Option<PointInTimeRecovery>,

    /// Server-side encryption at rest. Absent or `enabled: false`: an AWS-owned key (DynamoDB's
    /// default, always encrypted); `enabled: true`: a KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_specification: Option<SseSpecification>,

    /// `STANDARD` or `STANDARD_INFREQUENT_ACCESS`. Absent: not managed (new tables are
    /// `STANDARD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_class: Option<TableClass>,

    /// While true, the table cannot be deleted: deleting the object is blocked (reason
    /// `DeletionProtected`) until this is set back to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_protection_enabled: bool,
}

/// Type of a key attribute.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum ScalarAttributeType {
    /// String.
    S,
    /// Number.
    N,
    /// Binary.
    B,
}

/// One attribute used in a key.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct AttributeDefinition {
    /// Name of the attribute, 1-255 bytes.
    #[schemars(length(min = 1, max = 255))]
    pub attribute_name: String,
    /// `S` (string), `N` (number) or `B` (binary).
    pub attribute_type: ScalarAttributeType,
}

/// Role of an attribute in a key.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum KeyType {
    /// Partition key.
    #[serde(rename = "HASH")]
    Hash,
    /// Sort key.
    #[serde(rename = "RANGE")]
    Range,
}

/// One element of a key schema.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct KeySchemaElement {
    /// Attribute name; must appear in `attributeDefinitions`.
    pub attribute_name: String,
    /// `HASH` (partition key) or `RANGE` (sort key).
    pub key_type: KeyType,
}

/// How the table is billed.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum BillingMode {
    /// On-demand capacity.
    #[default]
    #[serde(rename = "PAY_PER_REQUEST")]
    PayPerRequest,
    /// Provisioned capacity (`provisionedThroughput` required).
    #[serde(rename = "PROVISIONED")]
    Provisioned,
}

/// Provisioned read and write capacity units.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionedThroughput {
    /// Read capacity units (at least 1).
    #[schemars(range(min = 1))]
    pub read_capacity_units: i64,
    /// Write capacity units (at least 1).
    #[schemars(range(min = 1))]
    pub write_capacity_units: i64,
}

/// Which attributes an index copies from the table.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ProjectionType {
    /// Every attribute.
    #[default]
    #[serde(rename = "ALL")]
    All,
    /// Only the table and index keys.
    #[serde(rename = "KEYS_ONLY")]
    KeysOnly,
    /// The keys and the attributes in `nonKeyAttributes`.
    #[serde(rename = "INCLUDE")]
    Include,
}

/// Attributes projected into an index.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Projection {
    /// `ALL` (default), `KEYS_ONLY` or `INCLUDE`.
    #[serde(default)]
    pub projection_type: ProjectionType,
    /// Extra attributes to project, with `INCLUDE` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_key_attributes: Vec<String>,
}

/// A global secondary index.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GlobalSecondaryIndex {
    /// Name of the index (3-255 letters, digits, `_`, `-` and `.`), unique among the table's
    /// indexes. Changing it replaces the index.
    #[schemars(length(min = 3, max = 255), regex(pattern = NAME_PATTERN))]
    pub index_name: String,
    /// Key of the index: one `HASH` element, optionally one `RANGE` element. Changing it
    /// replaces the index (delete, then create).
    pub key_schema: Vec<KeySchemaElement>,
    /// Projected attributes. Default: `ALL`. Changing it replaces the index.
    #[serde(default)]
    pub projection: Projection,
    /// Capacity of the index; required when the table is `PROVISIONED`, not allowed otherwise.
    /// Changed in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_throughput: Option<ProvisionedThroughput>,
}

/// A local secondary index.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecondaryIndex {
    /// Name of the index (3-255 letters, digits, `_`, `-` and `.`), unique among the table's
    /// indexes.
    #[schemars(length(min = 3, max = 255), regex(pattern = NAME_PATTERN))]
    pub index_name: String,
    /// The table's `HASH` element followed by a different `RANGE` element.
    pub key_schema: Vec<KeySchemaElement>,
    /// Projected attributes. Default: `ALL`.
    #[serde(default)]
    pub projection: Projection,
}

/// What a stream record carries.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum StreamViewType {
    /// The item after the change and before it.
    #[default]
    #[serde(rename = "NEW_AND_OLD_IMAGES")]
    NewAndOldImages,
    /// The item after the change.
    #[serde(rename = "NEW_IMAGE")]
    NewImage,
    /// The item before the change.
    #[serde(rename = "OLD_IMAGE")]
    OldImage,
    /// Only the key attributes.
    #[serde(rename = "KEYS_ONLY")]
    KeysOnly,
}

/// DynamoDB Streams settings.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpecification {
    /// Whether the table has a stream.
    pub stream_enabled: bool,
    /// What each record carries; default `NEW_AND_OLD_IMAGES`. Changing it on an enabled stream
    /// disables the stream and enables a new one (a new stream ARN).
    #[serde(default)]
    pub stream_view_type: StreamViewType,
}

/// Time-to-live settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TimeToLive {
    /// Attribute holding the expiry time in epoch seconds.
    pub attribute_name: String,
    /// Whether expired items are deleted. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Point-in-time recovery settings.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimeRecovery {
    /// Whether continuous backups with point-in-time restore are on.
    pub enabled: bool,
}

/// Server-side encryption settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SseSpecification {
    /// `true`: encrypt with a KMS key (`kmsMasterKeyID`, or the AWS-managed `aws/dynamodb` key);
    /// `false`: an AWS-owned key.
    pub enabled: bool,
    /// Only `KMS` is supported by DynamoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_type: Option<SseType>,
    /// KMS key id, ARN or alias. Absent: the AWS-managed key `alias/aws/dynamodb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "kmsMasterKeyID")]
    pub kms_master_key_id: Option<String>,
}

/// Encryption type.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SseType {
    /// AWS KMS.
    #[serde(rename = "KMS")]
    Kms,
}

/// Storage class of the table.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TableClass {
    /// Standard.
    #[serde(rename = "STANDARD")]
    Standard,
    /// Cheaper storage, dearer reads and writes.
    #[serde(rename = "STANDARD_INFREQUENT_ACCESS")]
    StandardInfrequentAccess,
}

/// Observed state of one global secondary index.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    /// Name of the index.
    pub index_name: String,
    /// `CREATING`, `UPDATING`, `DELETING` or `ACTIVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_status: Option<String>,
    /// True while DynamoDB fills a new index from the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfilling: Option<bool>,
}

/// What kaws last saw in DynamoDB.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the table in DynamoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// Unique id DynamoDB gave the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    /// When DynamoDB created the table: with `tableId`, tells this table from one created
    /// later under the same name (where no id is reported, as by moto, it does so alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date_time: Option<Time>,
    /// `CREATING`, `UPDATING`, `DELETING`, `ACTIVE`, `ARCHIVING`, `ARCHIVED` or
    /// `INACCESSIBLE_ENCRYPTION_CREDENTIALS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_status: Option<String>,
    /// Observed billing mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_mode: Option<String>,
    /// ARN of the current stream, for event source mappings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_stream_arn: Option<String>,
    /// Label of the current stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_stream_label: Option<String>,
    /// Approximate number of items (DynamoDB updates it about every six hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_count: Option<i64>,
    /// Approximate size in bytes (DynamoDB updates it about every six hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size_bytes: Option<i64>,
    /// State of each global secondary index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub global_secondary_indexes: Vec<IndexStatus>,
    /// Observed time-to-live status: `ENABLED`, `ENABLING`, `DISABLED` or `DISABLING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live_status: Option<String>,
    /// Observed point-in-time recovery status: `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time_recovery_status: Option<String>,
    /// Observed deletion protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection_enabled: Option<bool>,
}

impl crate::core::driver::ManagedObject for Table {
    type Status = TableStatus;
    const KIND: &'static str = "Table";
    type Placement = Regional;

    fn common_spec(&self) -> &CommonSpec {
        &self.spec.common
    }
    fn status(&self) -> Option<&TableStatus> {
        self.status.as_ref()
    }
    fn common_status(status: &TableStatus) -> &CommonStatus {
        &status.common
    }
    fn common_status_mut(status: &mut TableStatus) -> &mut CommonStatus {
        &mut status.common
    }
}
