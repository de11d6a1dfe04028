//! End to end for Table: the real kaws binary, the test API server, moto and real kubectl.
//!
//! moto makes every DynamoDB transition instant (tables and indexes are ACTIVE at once), so the
//! waiting paths are unit-tested in `controller/src/resources/table/aws.rs`; here the sequence
//! of single-step updates is checked through the calls kaws makes and the Events it records.

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_dynamodb::{Client, types as ddb};
use kaws::resources::table::Table;
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    kaws::sum_samples,
    moto::workspace_root,
    unique_name,
};
use serde_json::Value;

fn ddb_client(env: &Env) -> Client {
    Client::new(&env.aws)
}

fn table_yaml(name: &str, table: &str, extra_spec: &str, annotations: &str) -> String {
    let mut yaml =
        format!("apiVersion: dynamodb.kaws.io/v1alpha1\nkind: Table\nmetadata:\n  name: {name}\n");
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for line in annotations.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!(
        "spec:\n  tableName: {table}\n  keySchema: [{{attributeName: id, keyType: HASH}}]\n"
    ));
    for line in extra_spec.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

/// The attribute definitions for `id` plus `extra` (all strings), as a spec line.
fn defs(extra: &[&str]) -> String {
    let mut all = vec!["{attributeName: id, attributeType: S}".to_string()];
    all.extend(
        extra
            .iter()
            .map(|a| format!("{{attributeName: {a}, attributeType: S}}")),
    );
    format!("attributeDefinitions: [{}]", all.join(", "))
}

async fn describe(env: &Env, table: &str) -> ddb::TableDescription {
    ddb_client(env)
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("DescribeTable")
        .table()
        .cloned()
        .expect("table description")
}

async fn table_exists(env: &Env, table: &str) -> bool {
    ddb_client(env)
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok()
}

async fn tags(env: &Env, arn: &str) -> BTreeMap<String, String> {
    ddb_client(env)
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("ListTagsOfResource")
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

async fn ttl_status(env: &Env, table: &str) -> Option<String> {
    ddb_client(env)
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .expect("DescribeTimeToLive")
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status())
        .map(|s| s.as_str().to_string())
}

async fn pitr_status(env: &Env, table: &str) -> Option<String> {
    ddb_client(env)
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .expect("DescribeContinuousBackups")
        .continuous_backups_description()
        .and_then(|c| c.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_string())
}

fn gsi_names(t: &ddb::TableDescription) -> Vec<String> {
    t.global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name().map(str::to_string))
        .collect()
}

/// DynamoDB calls kaws made whose operation name starts with one of `prefixes` (all when empty).
async fn ddb_calls(env: &Env, prefixes: &[&str]) -> anyhow::Result<u64> {
    env.kaws
        .aws_calls(|labels| {
            labels.contains("service=\"dynamodb\"")
                && (prefixes.is_empty()
                    || prefixes
                        .iter()
                        .any(|p| labels.contains(&format!("operation=\"{p}"))))
        })
        .await
}

/// DynamoDB calls that change something (anything but Describe/List).
async fn ddb_writes(env: &Env) -> anyhow::Result<u64> {
    Ok(ddb_calls(env, &[]).await? - ddb_calls(env, &["Describe", "List"]).await?)
}

async fn wait_generation_ready(env: &Env, name: &str, generation: i64) -> anyhow::Result<Value> {
    env.wait_for::<Table>(
        name,
        Duration::from_secs(30),
        &format!("generation {generation} Ready"),
        |t| {
            t["status"]["observedGeneration"] == generation
                && condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        },
    )
    .await
}

/// How many times Events with `reason` were recorded for object `name`, and their notes.
/// kube-runtime's recorder folds repeats of a reason within minutes into one Event's `series`
/// (keeping the first note), so the count is read from there.
async fn event_count(env: &Env, name: &str, reason: &str) -> anyhow::Result<(i32, Vec<String>)> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    let mut count = 0;
    let mut notes = Vec::new();
    for e in api.list(&Default::default()).await?.items {
        if e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            && e.reason.as_deref() == Some(reason)
        {
            count += e.series.as_ref().map_or(1, |s| s.count);
            notes.extend(e.note);
        }
    }
    Ok((count, notes))
}

fn message(obj: &Value, type_: &str) -> String {
    condition(obj, type_)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_table_becomes_ready_and_swaps_indexes_one_step_at_a_time() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let example = workspace_root().join("examples/table.yaml");
    env.kubectl_ok(&["apply", "-f", &example.display().to_string()]);
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "ddbt/orders",
        "--timeout=30s",
    ]);

    let name = "kaws-example-orders";
    let t = describe(&env, name).await;
    assert_eq!(gsi_names(&t), vec!["by-customerId"]);
    assert_eq!(
        t.local_secondary_indexes()
            .iter()
            .filter_map(|l| l.index_name())
            .collect::<Vec<_>>(),
        vec!["by-created"]
    );
    assert_eq!(
        t.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&ddb::BillingMode::PayPerRequest)
    );
    assert!(t.stream_specification().is_some_and(|s| s.stream_enabled()));
    assert_eq!(ttl_status(&env, name).await.as_deref(), Some("ENABLED"));
    assert_eq!(pitr_status(&env, name).await.as_deref(), Some("ENABLED"));
    let arn = t.table_arn().expect("arn").to_string();
    let aws_tags = tags(&env, &arn).await;
    assert_eq!(aws_tags.get("team").map(String::as_str), Some("shop"));
    assert_eq!(
        aws_tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/orders", env.cluster_id, env.namespace))
    );

    // Status carries identity and what users need; printer columns show it.
    let obj = serde_json::to_value(env.api::<Table>().get("orders").await?)?;
    let s = &obj["status"];
    assert_eq!(s["arn"], arn.as_str());
    assert_eq!(s["tableName"], name);
    assert_eq!(s["tableStatus"], "ACTIVE");
    assert_eq!(s["billingMode"], "PAY_PER_REQUEST");
    assert_eq!(s["region"], "eu-west-1");
    assert!(s["tableId"].is_string(), "{s}");
    assert!(
        s["latestStreamArn"]
            .as_str()
            .is_some_and(|a| a.starts_with(&arn)),
        "{s}"
    );
    assert!(s["latestStreamLabel"].is_string(), "{s}");
    assert_eq!(s["itemCount"], 0);
    assert_eq!(s["tableSizeBytes"], 0);
    assert_eq!(s["globalSecondaryIndexes"][0]["indexName"], "by-customerId");
    assert_eq!(s["globalSecondaryIndexes"][0]["indexStatus"], "ACTIVE");
    assert_eq!(s["timeToLiveStatus"], "ENABLED");
    assert_eq!(s["pointInTimeRecoveryStatus"], "ENABLED");
    let table = env.kubectl_ok(&["get", "ddbt"]);
    for column in ["TABLE", "BILLING", "STATUS", "READY", "SYNCED", "AGE"] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        table.contains(name) && table.contains("PAY_PER_REQUEST") && table.contains("ACTIVE"),
        "{table}"
    );
    assert!(env.kubectl_ok(&["get", "aws"]).contains("orders"));

    // Replace the GSI with another in one manifest change: DynamoDB takes one index per call,
    // so kaws deletes the old one, then creates the new one, in two UpdateTable calls.
    let updates_before = ddb_calls(&env, &["UpdateTable"]).await?;
    let events_before = event_count(&env, "orders", "Updated").await?.0;
    let changed = std::fs::read_to_string(&example)?.replace("customerId", "status");
    env.apply_ok(&changed);
    wait_generation_ready(&env, "orders", 2).await?;
    let t = describe(&env, name).await;
    assert_eq!(gsi_names(&t), vec!["by-status"]);
    let mut attrs: Vec<&str> = t
        .attribute_definitions()
        .iter()
        .map(|d| d.attribute_name())
        .collect();
    attrs.sort();
    assert_eq!(
        attrs,
        vec!["createdAt", "pk", "sk", "status"],
        "the removed index's attribute is gone"
    );
    assert_eq!(
        ddb_calls(&env, &["UpdateTable"]).await? - updates_before,
        2,
        "one UpdateTable per index"
    );
    let (updates, notes) = event_count(&env, "orders", "Updated").await?;
    // moto shows each step at once, so kaws takes the second in the same reconcile and tells
    // both in one Event (against DynamoDB the table is UPDATING in between: two reconciles).
    assert_eq!(
        updates - events_before,
        1,
        "one Updated event per reconcile: {notes:?}"
    );
    assert_eq!(
        event_count(&env, "orders", "DriftCorrected").await?.0,
        0,
        "planned steps are not drift"
    );

    env.kubectl_ok(&["delete", "ddbt", "orders", "--timeout=30s"]);
    assert!(!table_exists(&env, name).await, "table deleted in DynamoDB");
    env.wait_gone_of::<Table>("orders", Duration::from_secs(10))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_table_changes_throughput_in_one_call_and_enables_streams_ttl_pitr()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let table = unique_name("prov");
    let spec = |rcu: u32, extra: &str| {
        format!(
            "{}\nkeySchema: [{{attributeName: id, keyType: HASH}}, {{attributeName: at, keyType: RANGE}}]\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: {rcu}, writeCapacityUnits: 2}}\nglobalSecondaryIndexes:\n- indexName: by-owner\n  keySchema: [{{attributeName: owner, keyType: HASH}}]\n  provisionedThroughput: {{readCapacityUnits: 1, writeCapacityUnits: 1}}\nlocalSecondaryIndexes:\n- indexName: by-kind\n  keySchema: [{{attributeName: id, keyType: HASH}}, {{attributeName: kind, keyType: RANGE}}]\n{extra}",
            defs(&["at", "owner", "kind"])
        )
    };
    // table_yaml writes a HASH-only keySchema first; this spec overrides it (last key wins).
    let yaml = |rcu: u32, extra: &str| {
        table_yaml("prov", &table, &spec(rcu, extra), "")
            .replace("  keySchema: [{attributeName: id, keyType: HASH}]\n", "")
    };
    env.apply_ok(&yaml(2, ""));
    let obj = env
        .wait_condition_of::<Table>("prov", "Ready", "True", None)
        .await?;
    assert_eq!(obj["status"]["billingMode"], "PROVISIONED");
    let t = describe(&env, &table).await;
    assert_eq!(
        t.provisioned_throughput()
            .and_then(|p| p.read_capacity_units()),
        Some(2)
    );
    assert_eq!(t.local_secondary_indexes().len(), 1);
    assert_eq!(ttl_status(&env, &table).await.as_deref(), Some("DISABLED"));

    // Throughput change: exactly one write.
    let writes = ddb_writes(&env).await?;
    env.apply_ok(&yaml(5, ""));
    wait_generation_ready(&env, "prov", 2).await?;
    assert_eq!(ddb_writes(&env).await? - writes, 1, "one UpdateTable call");
    let t = describe(&env, &table).await;
    assert_eq!(
        t.provisioned_throughput()
            .and_then(|p| p.read_capacity_units()),
        Some(5)
    );

    // Streams, TTL and point-in-time recovery: each through its own API.
    env.apply_ok(&yaml(
        5,
        "streamSpecification: {streamEnabled: true, streamViewType: KEYS_ONLY}\ntimeToLive: {attributeName: expiresAt}\npointInTimeRecovery: {enabled: true}\n",
    ));
    let obj = wait_generation_ready(&env, "prov", 3).await?;
    let t = describe(&env, &table).await;
    assert_eq!(
        t.stream_specification().and_then(|s| s.stream_view_type()),
        Some(&ddb::StreamViewType::KeysOnly)
    );
    assert_eq!(ttl_status(&env, &table).await.as_deref(), Some("ENABLED"));
    assert_eq!(pitr_status(&env, &table).await.as_deref(), Some("ENABLED"));
    let s = &obj["status"];
    assert_eq!(s["timeToLiveStatus"], "ENABLED");
    assert_eq!(s["pointInTimeRecoveryStatus"], "ENABLED");
    assert_eq!(s["latestStreamArn"].as_str(), t.latest_stream_arn(), "{s}");
    for op in ["UpdateTimeToLive", "UpdateContinuousBackups"] {
        assert_eq!(ddb_calls(&env, &[op]).await?, 1, "{op}");
    }

    // Key schema and LSIs are refused by the API server, not discovered at AWS.
    let out = env.apply(&yaml(5, "").replace(
        "{attributeName: at, keyType: RANGE}",
        "{attributeName: kind, keyType: RANGE}",
    ));
    assert!(!out.status.success(), "changing the key must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("keySchema is immutable"));
    let out = env.apply(&yaml(5, "").replace("indexName: by-kind", "indexName: by-kind2"));
    assert!(!out.status.success(), "changing an LSI must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("localSecondaryIndexes are immutable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Finalizer, create, the settings DynamoDB takes only after the create (TTL, then PITR, one
/// step at a time) and the confirming read all happen in the reconcile that first sees the
/// object: no fixed wait, no round trip through the watch (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_converges_in_one_reconcile() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let table = unique_name("once");
    env.apply_ok(&table_yaml(
        "once",
        &table,
        &format!(
            "{}\ntimeToLive: {{attributeName: expiresAt}}\npointInTimeRecovery: {{enabled: true}}\ntags: {{team: data}}",
            defs(&[])
        ),
        "",
    ));
    env.wait_condition_of::<Table>("once", "Ready", "True", None)
        .await?;
    // The reconcile counts itself just after its last status write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.kaws.reconciles("Table").await?,
        1,
        "{}",
        env.kaws.logs()
    );
    assert_eq!(event_count(&env, "once", "Created").await?.0, 1);
    let (updated, notes) = event_count(&env, "once", "Updated").await?;
    assert_eq!(updated, 1, "{notes:?}");
    assert!(
        notes[0].ends_with(": timeToLive, pointInTimeRecovery"),
        "one Event names both steps: {notes:?}"
    );
    for (op, n) in [
        ("CreateTable", 1),
        ("UpdateTimeToLive", 1),
        ("UpdateContinuousBackups", 1),
    ] {
        assert_eq!(ddb_calls(&env, &[op]).await?, n, "{op}");
    }
    assert_eq!(ttl_status(&env, &table).await.as_deref(), Some("ENABLED"));
    assert_eq!(pitr_status(&env, &table).await.as_deref(), Some("ENABLED"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_only_reads_and_drift_is_corrected_with_an_event() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "1s".into(),
        ..Default::default()
    })
    .await?;
    let table = unique_name("steady");
    env.apply_ok(&table_yaml(
        "steady",
        &table,
        &format!(
            "{}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 3, writeCapacityUnits: 3}}\ntimeToLive: {{attributeName: expiresAt}}\npointInTimeRecovery: {{enabled: true}}\ntags: {{team: data}}",
            defs(&[])
        ),
        "",
    ));
    env.wait_condition_of::<Table>("steady", "Ready", "True", None)
        .await?;
    // Counted between reconciles: a reconcile in flight at an edge would count in part.
    let count = |text: &str, writes_only: bool| {
        sum_samples(text, "kaws_aws_api_calls_total", |l| {
            l.contains("service=\"dynamodb\"")
                && (!writes_only
                    || !["operation=\"Describe", "operation=\"List"]
                        .iter()
                        .any(|p| l.contains(p)))
        })
    };
    let reconciles = |text: &str| {
        sum_samples(text, "kaws_reconciles_total", |l| {
            l.contains("kind=\"Table\"")
        })
    };
    let before = env.kaws.metrics_between_reconciles("Table").await?;
    // Over twice the interval of full reads (DETAILS_EVERY periods less half a period).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let after = env.kaws.metrics_between_reconciles("Table").await?;
    let resyncs = reconciles(&after) - reconciles(&before);
    let calls = count(&after, false) - count(&before, false);
    assert!(resyncs >= 3, "resync ran ({resyncs} reconciles)");
    assert_eq!(
        count(&after, true) - count(&before, true),
        0,
        "no write in steady state"
    );
    println!(
        "steady state: {resyncs} resyncs made {calls} DynamoDB calls ({} per resync), 0 writes",
        calls / resyncs.max(1)
    );
    // A steady resync: DescribeTable alone, the tags, TTL and backups taken from the last full
    // read as it shows the same table (by its creation time; moto reports no table id). About
    // every DETAILS_EVERY resyncs a full read: the four at once (the table was found before,
    // so none of the three is read again after DescribeTable: that would be 7).
    let full_reads = calls.saturating_sub(resyncs) / 3;
    assert_eq!(
        calls,
        resyncs + 3 * full_reads,
        "1 read per resync, 4 for a full read"
    );
    assert!(
        (1..=3).contains(&full_reads),
        "{full_reads} full reads in {resyncs} resyncs"
    );

    // Someone disables TTL and lowers the throughput behind kaws' back.
    let c = ddb_client(&env);
    c.update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            ddb::TimeToLiveSpecification::builder()
                .attribute_name("expiresAt")
                .enabled(false)
                .build()?,
        )
        .send()
        .await?;
    c.update_table()
        .table_name(&table)
        .provisioned_throughput(
            ddb::ProvisionedThroughput::builder()
                .read_capacity_units(1)
                .write_capacity_units(1)
                .build()?,
        )
        .send()
        .await?;
    // Two steps (TTL, then throughput), both reported as drift: in one reconcile when it sees
    // both changes, else in two, the second folding into the first Event's series.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (mut count, mut notes) = (0, Vec::new());
    let both = |notes: &[String]| {
        ["timeToLive", "provisionedThroughput"]
            .iter()
            .all(|f| notes.iter().any(|n| n.contains(f)))
    };
    while std::time::Instant::now() < deadline && !both(&notes) {
        (count, notes) = event_count(&env, "steady", "DriftCorrected").await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        both(&notes) && (1..=2).contains(&count),
        "{count}: {notes:?}"
    );
    assert_eq!(
        event_count(&env, "steady", "Updated").await?.0,
        1,
        "create-time TTL and PITR only, applied in the create's reconcile"
    );
    env.wait_condition_of::<Table>("steady", "Ready", "True", None)
        .await?;
    assert_eq!(ttl_status(&env, &table).await.as_deref(), Some("ENABLED"));
    assert_eq!(
        describe(&env, &table)
            .await
            .provisioned_throughput()
            .and_then(|p| p.read_capacity_units()),
        Some(3)
    );

    // A tag removed from the spec is removed from the table; kaws' own tags stay.
    env.apply_ok(&table_yaml(
        "steady",
        &table,
        &format!(
            "{}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 3, writeCapacityUnits: 3}}\ntimeToLive: {{attributeName: expiresAt}}\npointInTimeRecovery: {{enabled: true}}",
            defs(&[])
        ),
        "",
    ));
    let obj = wait_generation_ready(&env, "steady", 2).await?;
    let arn = obj["status"]["arn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let now = tags(&env, &arn).await;
    assert!(!now.contains_key("team"), "{now:?}");
    assert!(now.contains_key("kaws.io/owner"), "{now:?}");
    assert_eq!(ddb_calls(&env, &["UntagResource"]).await?, 1);

    // Drift of what DescribeTable does not show alone (point-in-time recovery switched off):
    // corrected at the next full read, within DETAILS_EVERY resyncs (here of 1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (drifts, _) = event_count(&env, "steady", "DriftCorrected").await?;
    c.update_continuous_backups()
        .table_name(&table)
        .point_in_time_recovery_specification(
            ddb::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(false)
                .build()?,
        )
        .send()
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pitr_status(&env, &table).await.as_deref() != Some("ENABLED") {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "point-in-time recovery was not turned on again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (count, notes) = event_count(&env, "steady", "DriftCorrected").await?;
        if count > drifts && notes.iter().any(|n| n.contains("pointInTimeRecovery")) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no DriftCorrected for pointInTimeRecovery: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_outside_kubernetes_is_created_again_at_the_next_resync()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "2s".into(),
        ..Default::default()
    })
    .await?;
    let table = unique_name("gone");
    env.apply_ok(&table_yaml(
        "gone",
        &table,
        &format!(
            "{}
timeToLive: {{attributeName: expiresAt}}",
            defs(&[])
        ),
        "",
    ));
    env.wait_condition_of::<Table>("gone", "Ready", "True", None)
        .await?;

    // Someone deletes the table in DynamoDB. The resync's DescribeTable answers
    // ResourceNotFound, and kaws creates it again as the spec says.
    ddb_client(&env)
        .delete_table()
        .table_name(&table)
        .send()
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ddb_calls(&env, &["CreateTable"]).await? < 2
        || ttl_status(&env, &table).await.as_deref() != Some("ENABLED")
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the table was not created again with its TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arn = describe(&env, &table)
        .await
        .table_arn()
        .unwrap_or_default()
        .to_string();
    assert!(
        tags(&env, &arn).await.contains_key("kaws.io/owner"),
        "created again as kaws' own"
    );
    env.wait_condition_of::<Table>("gone", "Ready", "True", None)
        .await?;
    assert_eq!(event_count(&env, "gone", "Created").await?.0, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_protection_blocks_delete_until_turned_off() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let table = unique_name("guarded");
    let yaml = |protected: bool| {
        table_yaml(
            "guarded",
            &table,
            &format!("{}\ndeletionProtectionEnabled: {protected}", defs(&[])),
            "",
        )
    };
    env.apply_ok(&yaml(true));
    env.wait_condition_of::<Table>("guarded", "Ready", "True", None)
        .await?;
    assert_eq!(
        describe(&env, &table).await.deletion_protection_enabled(),
        Some(true)
    );

    env.kubectl_ok(&["delete", "ddbt", "guarded", "--wait=false"]);
    let obj = env
        .wait_condition_of::<Table>("guarded", "Synced", "False", Some("DeletionProtected"))
        .await?;
    let msg = message(&obj, "Synced");
    assert!(msg.contains("deletionProtectionEnabled: false"), "{msg}");
    assert!(table_exists(&env, &table).await, "protected table kept");
    env.wait_event("guarded", "DeletionProtected").await?;
    assert_eq!(ddb_calls(&env, &["DeleteTable"]).await?, 0);

    // Turning protection off in the spec lets the pending delete go through.
    env.apply_ok(&yaml(false));
    env.wait_gone_of::<Table>("guarded", Duration::from_secs(20))
        .await?;
    assert!(!table_exists(&env, &table).await, "table deleted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tables_need_adopt_are_never_shared_and_retain_leaves_them() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    let table = unique_name("legacy");
    let c = ddb_client(&env);
    c.create_table()
        .table_name(&table)
        .attribute_definitions(
            ddb::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ddb::ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            ddb::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(ddb::KeyType::Hash)
                .build()?,
        )
        .billing_mode(ddb::BillingMode::PayPerRequest)
        .send()
        .await?;

    let spec = format!(
        "{}\npointInTimeRecovery: {{enabled: true}}\ntags: {{team: legacy}}",
        defs(&[])
    );
    env.apply_ok(&table_yaml("legacy", &table, &spec, ""));
    let obj = env
        .wait_condition_of::<Table>("legacy", "Ready", "False", Some("AlreadyExists"))
        .await?;
    assert!(message(&obj, "Synced").contains("kaws.io/adopt"));
    assert_eq!(
        ddb_writes(&env).await?,
        0,
        "nothing written to an unowned table"
    );
    let reconciles = env.kaws.reconciles("Table").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.kaws.reconciles("Table").await? - reconciles <= 1,
        "no hot loop on AlreadyExists"
    );

    env.kubectl_ok(&["annotate", "ddbt", "legacy", "kaws.io/adopt=true"]);
    env.wait_condition_of::<Table>("legacy", "Ready", "True", None)
        .await?;
    env.wait_event("legacy", "Adopted").await?;
    let arn = describe(&env, &table)
        .await
        .table_arn()
        .expect("arn")
        .to_string();
    let owned = tags(&env, &arn).await;
    assert_eq!(
        owned.get("kaws.io/owner"),
        Some(&format!("{}/{}/legacy", env.cluster_id, env.namespace))
    );
    assert_eq!(pitr_status(&env, &table).await.as_deref(), Some("ENABLED"));

    // A second object claiming the same table, even with adopt, is refused and never writes.
    let writes = ddb_writes(&env).await?;
    env.apply_ok(&table_yaml(
        "intruder",
        &table,
        &format!("{}\ntags: {{team: intruder}}", defs(&[])),
        "kaws.io/adopt: \"true\"",
    ));
    let obj = env
        .wait_condition_of::<Table>("intruder", "Ready", "False", Some("OwnedByOther"))
        .await?;
    assert!(
        message(&obj, "Synced").contains(&format!("{}/{}/legacy", env.cluster_id, env.namespace))
    );
    env.kubectl_ok(&["delete", "ddbt", "intruder", "--timeout=30s"]);
    assert_eq!(ddb_writes(&env).await?, writes, "no write for the intruder");
    assert_eq!(tags(&env, &arn).await, owned, "tags untouched");

    // Retain: the object goes, the table stays.
    env.kubectl_ok(&[
        "patch",
        "ddbt",
        "legacy",
        "--type=merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Retain"}}"#,
    ]);
    wait_generation_ready(&env, "legacy", 2).await?;
    env.kubectl_ok(&["delete", "ddbt", "legacy", "--timeout=30s"]);
    env.wait_gone_of::<Table>("legacy", Duration::from_secs(10))
        .await?;
    assert!(
        table_exists(&env, &table).await,
        "retained table still in DynamoDB"
    );
    assert_eq!(ddb_calls(&env, &["DeleteTable"]).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_get_terminal_conditions_without_aws_calls() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let cases = [
        (
            "undefined",
            "attributeDefinitions: [{attributeName: other, attributeType: S}]".to_string(),
            "\"id\" is not in attributeDefinitions",
        ),
        (
            "dupindex",
            format!(
                "{}\nglobalSecondaryIndexes:\n- indexName: idx\n  keySchema: [{{attributeName: a, keyType: HASH}}]\n- indexName: idx\n  keySchema: [{{attributeName: b, keyType: HASH}}]",
                defs(&["a", "b"])
            ),
            "duplicate index name \"idx\"",
        ),
        (
            "nothroughput",
            format!("{}\nbillingMode: PROVISIONED", defs(&[])),
            "provisionedThroughput is required",
        ),
        ("unused", defs(&["orphan"]), "\"orphan\" is used by no key"),
    ];
    let table_names: BTreeMap<&str, String> =
        cases.iter().map(|(n, _, _)| (*n, unique_name(n))).collect();
    for (name, spec, _) in &cases {
        env.apply_ok(&table_yaml(name, &table_names[name], spec, ""));
    }
    for (name, _, want) in &cases {
        let obj = env
            .wait_condition_of::<Table>(name, "Synced", "False", Some("InvalidSpec"))
            .await?;
        let msg = message(&obj, "Synced");
        assert!(msg.contains(want), "{name}: {msg}");
        assert_eq!(
            condition(&obj, "Ready").map(|c| c["reason"].clone()),
            Some(Value::from("InvalidSpec"))
        );
    }
    env.wait_event("dupindex", "InvalidSpec").await?;
    let reconciles = env.kaws.reconciles("Table").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.kaws.reconciles("Table").await? - reconciles,
        0,
        "terminal errors are not retried until the object changes"
    );
    assert_eq!(
        ddb_calls(&env, &[]).await?,
        0,
        "validation fails before any AWS call"
    );

    // Fixing a spec recovers it.
    env.apply_ok(&table_yaml(
        "nothroughput",
        &table_names["nothroughput"],
        &defs(&[]),
        "",
    ));
    env.wait_condition_of::<Table>("nothroughput", "Ready", "True", None)
        .await?;
    assert!(table_exists(&env, &table_names["nothroughput"]).await);
    Ok(())
}

/// A steady resync reads `DescribeTable` alone and takes the tags from the last full read; it
/// may only ever conclude "nothing to do". Once a table's owner tag names someone else, a drift
/// `DescribeTable` shows is never corrected from the remembered (stale) owner tag: kaws reads
/// everything again first, finds the table is no longer its own and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_given_to_another_owner_is_never_written_from_a_remembered_owner_tag()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "1s".into(),
        ..Default::default()
    })
    .await?;
    let table = unique_name("given");
    env.apply_ok(&table_yaml(
        "given",
        &table,
        &format!(
            "{}\nbillingMode: PROVISIONED\nprovisionedThroughput: {{readCapacityUnits: 3, writeCapacityUnits: 3}}",
            defs(&[])
        ),
        "",
    ));
    env.wait_condition_of::<Table>("given", "Ready", "True", None)
        .await?;
    // Steady resyncs now, served by the full read of the create's reconcile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = ["Update", "Tag", "Untag", "Delete", "Create"];
    let before = ddb_calls(&env, &writes).await?;

    // The table is handed to another owner, who changes its throughput.
    let c = ddb_client(&env);
    let arn = describe(&env, &table)
        .await
        .table_arn()
        .unwrap_or_default()
        .to_string();
    c.tag_resource()
        .resource_arn(&arn)
        .tags(
            ddb::Tag::builder()
                .key("kaws.io/owner")
                .value("another-cluster/team/orders")
                .build()?,
        )
        .send()
        .await?;
    c.update_table()
        .table_name(&table)
        .provisioned_throughput(
            ddb::ProvisionedThroughput::builder()
                .read_capacity_units(1)
                .write_capacity_units(1)
                .build()?,
        )
        .send()
        .await?;

    env.wait_condition_of::<Table>("given", "Synced", "False", Some("OwnedByOther"))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ddb_calls(&env, &writes).await?,
        before,
        "no write to a table another owner holds"
    );
    assert_eq!(
        describe(&env, &table)
            .await
            .provisioned_throughput()
            .and_then(|t| t.read_capacity_units()),
        Some(1),
        "the new owner's throughput stays"
    );
    Ok(())
}
