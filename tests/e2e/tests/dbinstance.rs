//! End to end for DBInstance: the real kaws binary, the test API server, moto and real kubectl.
//!
//! moto reports every RDS instance `available` at once and has no state manager for RDS, so the
//! creating/modifying waiting path is covered by the SDK-level unit tests in
//! `controller/src/resources/dbinstance/aws.rs` instead.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaws::resources::dbinstance::DBInstance;
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    kaws::{http_get, sum_samples},
    moto::workspace_root,
    unique_name,
};
use kube::{
    ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

fn db_yaml(name: &str, id: &str, extra_spec: &str, annotations: &str) -> String {
    let mut yaml =
        format!("apiVersion: rds.kaws.io/v1alpha1\nkind: DBInstance\nmetadata:\n  name: {name}\n");
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for line in annotations.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!(
        "spec:\n  dbInstanceIdentifier: {id}\n  engine: postgres\n  dbInstanceClass: db.t4g.micro\n  allocatedStorage: 20\n  masterUsername: app\n  writeConnectionSecretTo:\n    name: {name}-conn\n"
    ));
    for line in extra_spec.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

fn rds(env: &Env) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(&env.aws)
}

/// The master password moto stored (RDS itself never returns it).
async fn moto_password(env: &Env, id: &str) -> anyhow::Result<String> {
    let (status, body) = http_get(&format!(
        "{}/_kaws/rds-password?region={}&id={id}",
        env.moto.endpoint,
        kaws_e2e::env::REGION
    ))
    .await?;
    anyhow::ensure!(status == 200, "no RDS instance {id} in moto ({status})");
    Ok(body)
}

async fn instance(env: &Env, id: &str) -> Option<aws_sdk_rds::types::DbInstance> {
    rds(env)
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .ok()
        .and_then(|o| o.db_instances().first().cloned())
}

/// Waits until the Secret `name` exists, holds a password RDS has (kaws writes a new password
/// with the `kaws.io/password-pending` annotation before it calls RDS, and drops the annotation
/// once RDS took it) and `check` holds for its data.
async fn wait_secret(
    env: &Env,
    name: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(secret) = env.api::<Secret>().get_opt(name).await?
            && !secret
                .annotations()
                .contains_key("kaws.io/password-pending")
        {
            let data: BTreeMap<String, String> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).to_string()))
                .collect();
            if check(&data) {
                return Ok(data);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "Secret {name}: timed out waiting for {what}; kaws log:\n{}",
        kaws_e2e::env::tail(&env.kaws.logs(), 30)
    )
}

async fn put_password_secret(env: &Env, name: &str, password: &str) -> anyhow::Result<()> {
    let api = env.api::<Secret>();
    let data = BTreeMap::from([(
        "password".to_string(),
        ByteString(password.as_bytes().to_vec()),
    )]);
    if api.get_opt(name).await?.is_some() {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": data })),
        )
        .await?;
    } else {
        let mut secret = Secret {
            data: Some(data),
            ..Default::default()
        };
        secret.metadata.name = Some(name.to_string());
        api.create(&PostParams::default(), &secret).await?;
    }
    Ok(())
}

async fn modify_calls(env: &Env) -> anyhow::Result<u64> {
    env.kaws
        .aws_calls(|l| l.contains("operation=\"ModifyDBInstance\""))
        .await
}

/// No secret value in kaws' logs, the object's Events or its status.
async fn assert_not_leaked(env: &Env, name: &str, secret: &str) -> anyhow::Result<()> {
    assert!(!env.kaws.logs().contains(secret), "password in kaws logs");
    let events = env.event_reasons(name).await?;
    assert!(
        events.iter().all(|(_, note)| !note.contains(secret)),
        "password in Events: {events:?}"
    );
    let obj = env.api::<DBInstance>().get(name).await?;
    assert!(
        !serde_json::to_string(&obj)?.contains(secret),
        "password in the object"
    );
    Ok(())
}

fn ready(o: &Value) -> bool {
    condition(o, "Ready").is_some_and(|c| c["status"] == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_database_gets_generated_password_and_complete_connection_secret()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let example = std::fs::read_to_string(workspace_root().join("examples/database.yaml"))?;
    let (db_doc, deployment) = example
        .split_once("\n---\n")
        .expect("example has a DBInstance and a Deployment");
    // The test API server serves no Deployments; check the wiring and apply the DBInstance.
    assert!(deployment.contains("envFrom") && deployment.contains("name: orders-db"));
    env.apply_ok(db_doc);
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "dbinstance/orders-db",
        "--timeout=60s",
    ]);

    // The create is one reconcile that reads the connection Secret once (what it writes it
    // records, so the observe that confirms the create reads nothing again) and writes it twice:
    // the password marked pending before RDS hears of it, then accepted, with the endpoint
    // moto's answer already has.
    // (A reconcile counts once it ended, its GET comes first: wait for one still running.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let (Some(gets), Some(patches)) = (
        env.kaws_requests("get", "secrets"),
        env.kaws_requests("patch", "secrets"),
    ) {
        let metrics = env.kaws.metrics().await?;
        let reconciles = sum_samples(&metrics, "kaws_reconciles_total", |l| {
            l.contains("kind=\"DBInstance\"")
        });
        if (gets, patches) == (reconciles, 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connection Secret GETs and PATCHes {:?} over {reconciles} reconciles; kaws log:\n{}",
            (gets, patches),
            kaws_e2e::env::tail(&env.kaws.logs(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let id = "kaws-example-orders";
    let obj = env.api::<DBInstance>().get("orders-db").await?;
    let status = obj.status.clone().expect("status");
    assert_eq!(status.db_instance_status.as_deref(), Some("available"));
    assert!(
        status
            .common
            .arn
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!(":db:{id}")))
    );
    assert!(status.dbi_resource_id.is_some());
    assert_eq!(status.engine_version.as_deref(), Some("16"));
    let host = status
        .endpoint
        .as_ref()
        .and_then(|e| e.address.clone())
        .expect("endpoint in status");

    let data = wait_secret(&env, "orders-db", "all keys", |d| d.contains_key("uri")).await?;
    let password = data["password"].clone();
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        moto_password(&env, id).await?,
        password,
        "RDS has the password"
    );
    assert_eq!(data["host"], host);
    assert_eq!(data["port"], "5432");
    assert_eq!(data["username"], "orders");
    assert_eq!(data["database"], "orders");
    assert_eq!(data["engine"], "postgres");
    let uri = &data["uri"];
    let rest = uri
        .strip_prefix("postgresql://")
        .expect("postgresql scheme");
    let (userinfo, hostpart) = rest.split_once('@').expect("user info");
    assert_eq!(userinfo, format!("orders:{password}"));
    assert_eq!(hostpart, format!("{host}:5432/orders"));
    let secret = env.api::<Secret>().get("orders-db").await?;
    let owner = &secret.metadata.owner_references.expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid), owner.controller),
        ("DBInstance", obj.metadata.uid.as_ref(), Some(true))
    );

    let db = instance(&env, id).await.expect("instance in RDS");
    assert_eq!(db.storage_encrypted(), Some(true), "encrypted by default");
    assert_ne!(db.publicly_accessible(), Some(true), "private by default");
    let tags: BTreeMap<_, _> = db
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect();
    assert_eq!(tags.get("team"), Some(&"orders"));
    assert_eq!(
        tags.get("kaws.io/owner").map(|s| s.to_string()),
        Some(format!("{}/{}/orders-db", env.cluster_id, env.namespace))
    );
    let table = env.kubectl_ok(&["get", "rdsdb"]);
    for column in ["IDENTIFIER", "ENGINE", "CLASS", "STATUS", "READY", "SYNCED"] {
        assert!(table.contains(column), "{table}");
    }
    assert!(table.contains(id) && table.contains("available"), "{table}");
    assert_not_leaked(&env, "orders-db", &password).await?;

    // Someone edits the connection Secret: the edit reconciles its writer at once (the resync
    // is 10 minutes away), although kaws' own writes of it do not (core/own_writes.rs).
    env.kubectl_ok(&[
        "patch",
        "secret",
        "orders-db",
        "--type=merge",
        "-p",
        r#"{"data":{"host":"ZWxzZXdoZXJl"}}"#,
    ]);
    let restored = wait_secret(&env, "orders-db", "host restored", |d| d["host"] == host).await?;
    assert_eq!(restored["password"], password);

    // Someone deletes the connection Secret: kaws recreates it. The generated password went
    // with it, so a new one is generated and set in RDS first.
    env.kubectl_ok(&["delete", "secret", "orders-db"]);
    let again = wait_secret(&env, "orders-db", "recreated", |d| d.contains_key("uri")).await?;
    assert_ne!(again["password"], password);
    assert_eq!(moto_password(&env, id).await?, again["password"]);
    assert_not_leaked(&env, "orders-db", &again["password"]).await?;

    // Default delete takes a final snapshot named after the identifier and the object's uid.
    env.kubectl_ok(&["delete", "dbinstance", "orders-db", "--timeout=60s"]);
    assert!(
        instance(&env, id).await.is_none(),
        "instance deleted in RDS"
    );
    let uid = obj.metadata.uid.unwrap_or_default();
    let snapshots = rds(&env)
        .describe_db_snapshots()
        .db_snapshot_identifier(format!("{id}-final-{}", &uid[..8]))
        .send()
        .await?;
    assert_eq!(snapshots.db_snapshots().len(), 1, "final snapshot taken");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_password_secret_updates_rds_and_the_connection_secret() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    let id = unique_name("rot");
    put_password_secret(&env, "app-pw", "FirstPassw0rd").await?;
    env.apply_ok(&db_yaml(
        "rot",
        &id,
        "skipFinalSnapshot: true\nmasterUserPasswordSecretRef:\n  name: app-pw",
        "",
    ));
    env.wait_condition_of::<DBInstance>("rot", "Ready", "True", None)
        .await?;
    let data = wait_secret(&env, "rot-conn", "endpoint", |d| d.contains_key("uri")).await?;
    assert_eq!(data["password"], "FirstPassw0rd");
    assert_eq!(moto_password(&env, &id).await?, "FirstPassw0rd");

    // The resync period is 10 minutes: only the Secret watch can pick this up in time.
    put_password_secret(&env, "app-pw", "SecondPassw0rd").await?;
    let data = wait_secret(&env, "rot-conn", "rotated password", |d| {
        d.get("password").map(String::as_str) == Some("SecondPassw0rd")
    })
    .await?;
    assert!(data["uri"].contains(":SecondPassw0rd@"));
    assert_eq!(moto_password(&env, &id).await?, "SecondPassw0rd");
    for secret in ["FirstPassw0rd", "SecondPassw0rd"] {
        assert_not_leaked(&env, "rot", secret).await?;
    }

    // skipFinalSnapshot: deleted without a snapshot.
    env.kubectl_ok(&["delete", "dbinstance", "rot", "--timeout=60s"]);
    assert!(instance(&env, &id).await.is_none());
    let snapshots = rds(&env)
        .describe_db_snapshots()
        .db_instance_identifier(&id)
        .snapshot_type("manual")
        .send()
        .await?;
    assert!(snapshots.db_snapshots().is_empty(), "no final snapshot");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_secret_is_reported_and_recovers_when_it_appears() -> anyhow::Result<()> {
    // Through the fault proxy (no faults): it counts every request that reaches RDS, also one
    // whose answer kaws no longer waited for.
    let env = Env::start_with(EnvOptions {
        aws_faults: Some(kaws_e2e::fault_proxy::Faults::none()),
        ..Default::default()
    })
    .await?;
    let id = unique_name("late");
    env.apply_ok(&db_yaml(
        "late",
        &id,
        "skipFinalSnapshot: true\nmasterUserPasswordSecretRef:\n  name: late-pw",
        "",
    ));
    let obj = env
        .wait_condition_of::<DBInstance>("late", "Synced", "False", Some("SecretNotFound"))
        .await?;
    let message = condition(&obj, "Synced").expect("Synced")["message"].to_string();
    assert!(message.contains("late-pw"), "{message}");
    assert!(instance(&env, &id).await.is_none(), "nothing created yet");
    // While it waits for the Secret its retries read nothing from RDS (only its first
    // reconcile, which did not know yet, read RDS beside the Secret).
    let reads = || async {
        let proxy = env.proxy.as_ref().expect("started with the fault proxy");
        anyhow::Ok(
            proxy
                .stats()
                .await?
                .sum(|service, _| service == "rds")
                .attempts(),
        )
    };
    let reconciles = |metrics: &str| {
        sum_samples(metrics, "kaws_reconciles_total", |l| {
            l.contains("kind=\"DBInstance\"")
        })
    };
    let (rds_before, reconciles_before) = (reads().await?, reconciles(&env.kaws.metrics().await?));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reconciles(&env.kaws.metrics().await?) < reconciles_before + 2 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the DBInstance is not being retried"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        reads().await?,
        rds_before,
        "no RDS call while waiting for the Secret"
    );

    put_password_secret(&env, "late-pw", "LatePassw0rd").await?;
    env.wait_condition_of::<DBInstance>("late", "Ready", "True", None)
        .await?;
    assert_eq!(moto_password(&env, &id).await?, "LatePassw0rd");
    assert_not_leaked(&env, "late", "LatePassw0rd").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_makes_one_modify_call_and_aws_normalised_values_make_none() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "1s".into(),
        ..Default::default()
    })
    .await?;
    // Upper case identifier and maintenance window: RDS (and moto) store both lower-cased;
    // storageType is left to the AWS default.
    let id = unique_name("norm");
    let upper = id.replacen("norm", "Norm", 1);
    env.apply_ok(&db_yaml(
        "norm",
        &upper,
        "skipFinalSnapshot: true\npreferredMaintenanceWindow: Sun:05:00-Sun:05:30\ndbParameterGroupName: default.postgres9.3",
        "",
    ));
    env.wait_condition_of::<DBInstance>("norm", "Ready", "True", None)
        .await?;
    let modifies = modify_calls(&env).await?;
    let reconciles = env.kaws.reconciles("DBInstance").await?;
    let calls = env
        .kaws
        .aws_calls(|l| l.contains("service=\"rds\""))
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let resyncs = env.kaws.reconciles("DBInstance").await? - reconciles;
    let steady_calls = env
        .kaws
        .aws_calls(|l| l.contains("service=\"rds\""))
        .await?
        - calls;
    assert!(resyncs >= 2, "resyncs happened: {resyncs}");
    assert_eq!(modify_calls(&env).await?, modifies, "no update loop");
    assert!(
        steady_calls <= resyncs,
        "one DescribeDBInstances per resync: {steady_calls} calls for {resyncs} resyncs"
    );
    println!("steady state: {steady_calls} RDS calls over {resyncs} resyncs");

    env.kubectl_ok(&[
        "patch",
        "dbinstance",
        "norm",
        "--type=merge",
        "-p",
        r#"{"spec":{"dbInstanceClass":"db.t4g.small","allocatedStorage":30}}"#,
    ]);
    env.wait_for::<DBInstance>("norm", Duration::from_secs(30), "generation 2 Ready", |o| {
        o["status"]["observedGeneration"] == 2 && ready(o)
    })
    .await?;
    assert_eq!(modify_calls(&env).await?, modifies + 1, "one modify call");
    let db = instance(&env, &id).await.expect("instance");
    assert_eq!(
        (db.db_instance_class(), db.allocated_storage()),
        (Some("db.t4g.small"), Some(30))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(modify_calls(&env).await?, modifies + 1, "still one");
    let note = env.wait_event("norm", "Updated").await?;
    assert!(
        note.contains("dbInstanceClass") && note.contains("allocatedStorage"),
        "{note}"
    );

    // A tag added, then removed from the spec: RDS follows; kaws' own tags stay.
    env.kubectl_ok(&[
        "patch",
        "dbinstance",
        "norm",
        "--type=merge",
        "-p",
        r#"{"spec":{"tags":{"team":"data"}}}"#,
    ]);
    env.wait_for::<DBInstance>("norm", Duration::from_secs(30), "generation 3 Ready", |o| {
        o["status"]["observedGeneration"] == 3 && ready(o)
    })
    .await?;
    env.kubectl_ok(&[
        "patch",
        "dbinstance",
        "norm",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/tags"}]"#,
    ]);
    env.wait_for::<DBInstance>("norm", Duration::from_secs(30), "generation 4 Ready", |o| {
        o["status"]["observedGeneration"] == 4 && ready(o)
    })
    .await?;
    let db = instance(&env, &id).await.expect("instance");
    let keys: Vec<&str> = db.tag_list().iter().filter_map(|t| t.key()).collect();
    assert!(!keys.contains(&"team"), "{keys:?}");
    assert!(keys.contains(&"kaws.io/owner"), "{keys:?}");
    let removes = env
        .kaws
        .aws_calls(|l| l.contains("operation=\"RemoveTagsFromResource\""))
        .await?;
    assert_eq!(removes, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_protection_blocks_the_delete_until_turned_off() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = unique_name("prot");
    env.apply_ok(&db_yaml(
        "prot",
        &id,
        "skipFinalSnapshot: true\ndeletionProtection: true",
        "",
    ));
    env.wait_condition_of::<DBInstance>("prot", "Ready", "True", None)
        .await?;
    assert_eq!(
        instance(&env, &id)
            .await
            .and_then(|d| d.deletion_protection()),
        Some(true)
    );
    env.kubectl_ok(&["delete", "dbinstance", "prot", "--wait=false"]);
    let obj = env
        .wait_condition_of::<DBInstance>("prot", "Synced", "False", Some("DeletionProtection"))
        .await?;
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    assert!(instance(&env, &id).await.is_some(), "nothing deleted");

    env.kubectl_ok(&[
        "patch",
        "dbinstance",
        "prot",
        "--type=merge",
        "-p",
        r#"{"spec":{"deletionProtection":false}}"#,
    ]);
    env.wait_gone_of::<DBInstance>("prot", Duration::from_secs(30))
        .await?;
    assert!(instance(&env, &id).await.is_none(), "deleted in RDS");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_adoption_and_foreign_ownership() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // Retain: the object goes, the instance stays.
    let id = unique_name("keep");
    env.apply_ok(&db_yaml("keep", &id, "deletionPolicy: Retain", ""));
    env.wait_condition_of::<DBInstance>("keep", "Ready", "True", None)
        .await?;
    env.kubectl_ok(&["delete", "dbinstance", "keep", "--timeout=30s"]);
    assert!(instance(&env, &id).await.is_some(), "retained in RDS");

    // Another object for the same instance: owned by "keep", never touched.
    env.apply_ok(&db_yaml("thief", &id, "", "kaws.io/adopt: \"true\""));
    env.wait_condition_of::<DBInstance>("thief", "Synced", "False", Some("OwnedByOther"))
        .await?;

    // An instance nobody owns: AlreadyExists until the adopt annotation is set.
    let orphan = unique_name("orphan");
    rds(&env)
        .create_db_instance()
        .db_instance_identifier(&orphan)
        .engine("postgres")
        .db_instance_class("db.t4g.micro")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password("OrphanPassw0rd")
        .send()
        .await?;
    env.apply_ok(&db_yaml("orphan", &orphan, "skipFinalSnapshot: true", ""));
    env.wait_condition_of::<DBInstance>("orphan", "Synced", "False", Some("AlreadyExists"))
        .await?;
    assert_eq!(moto_password(&env, &orphan).await?, "OrphanPassw0rd");
    env.kubectl_ok(&["annotate", "dbinstance", "orphan", "kaws.io/adopt=true"]);
    env.wait_condition_of::<DBInstance>("orphan", "Ready", "True", None)
        .await?;
    // kaws cannot know the old password: it generates one, sets it, and hands it out.
    let data = wait_secret(&env, "orphan-conn", "password", |d| d.contains_key("uri")).await?;
    assert_eq!(moto_password(&env, &orphan).await?, data["password"]);
    let tags = instance(&env, &orphan)
        .await
        .expect("instance")
        .tag_list()
        .to_vec();
    assert!(
        tags.iter().any(|t| t.key() == Some("kaws.io/owner")
            && t.value() == Some(&format!("{}/{}/orphan", env.cluster_id, env.namespace))),
        "{tags:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_is_terminal_without_a_hot_loop() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = unique_name("bad");
    env.apply_ok(
        &db_yaml("bad-engine", &id, "", "").replace("engine: postgres", "engine: oracle-ee"),
    );
    env.apply_ok(
        &db_yaml("bad-storage", &id, "", "")
            .replace("allocatedStorage: 20", "allocatedStorage: 10"),
    );
    let obj = env
        .wait_condition_of::<DBInstance>("bad-engine", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        condition(&obj, "Synced").expect("Synced")["message"]
            .to_string()
            .contains("oracle-ee")
    );
    let obj = env
        .wait_condition_of::<DBInstance>("bad-storage", "Synced", "False", Some("InvalidSpec"))
        .await?;
    assert!(
        condition(&obj, "Synced").expect("Synced")["message"]
            .to_string()
            .contains("allocatedStorage")
    );
    assert_eq!(condition(&obj, "Ready").expect("Ready")["status"], "False");
    // A reconcile counts itself after its status write: wait until both first reconciles have.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut reconciles = env.kaws.reconciles("DBInstance").await?;
    while reconciles < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reconciles = env.kaws.reconciles("DBInstance").await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.kaws.reconciles("DBInstance").await?,
        reconciles,
        "no retries"
    );
    let creates = env
        .kaws
        .aws_calls(|l| l.contains("operation=\"CreateDBInstance\""))
        .await?;
    assert_eq!(creates, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_secret_owned_by_another_object_is_refused_without_a_loop()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let first = unique_name("first");
    let second = unique_name("second");
    env.apply_ok(&db_yaml("first", &first, "", ""));
    env.wait_for::<DBInstance>("first", Duration::from_secs(60), "Ready", ready)
        .await?;
    let before = wait_secret(&env, "first-conn", "first's connection", |_| true).await?;

    // The second object names the first one's Secret.
    env.apply_ok(
        &db_yaml("second", &second, "", "").replace("name: second-conn", "name: first-conn"),
    );
    let obj = env
        .wait_condition_of::<DBInstance>("second", "Synced", "False", Some("SecretOwnedByOther"))
        .await?;
    let message = condition(&obj, "Synced").expect("Synced")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("first-conn") && message.contains("\"first\""),
        "the message names the Secret and its owner: {message}"
    );
    assert!(
        instance(&env, &second).await.is_none(),
        "no database created for it"
    );

    // Terminal: no loop, the Secret is untouched and keeps its owner.
    let reconciles = env.kaws.reconciles("DBInstance").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.kaws.reconciles("DBInstance").await? - reconciles <= 1,
        "no reconcile loop between the two objects"
    );
    let secret = env.api::<Secret>().get("first-conn").await?;
    let owners: Vec<String> = secret
        .owner_references()
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(owners, vec!["first".to_string()]);
    let after = wait_secret(&env, "first-conn", "first's connection", |_| true).await?;
    assert_eq!(after, before, "the first object's Secret is unchanged");
    let first_obj = serde_json::to_value(env.api::<DBInstance>().get("first").await?)?;
    assert!(ready(&first_obj), "the Secret's owner stays Ready");

    // Deleting the refused object is not blocked by the Secret.
    env.kubectl_ok(&["delete", "dbinstance", "second", "--timeout=30s"]);
    env.wait_gone_of::<DBInstance>("second", Duration::from_secs(10))
        .await?;
    Ok(())
}

/// `--concurrency` is per kind, across every watched namespace: with two namespaces and
/// `--concurrency 1`, AWS never sees two DBInstance reconciles at once. RDS calls of one
/// reconcile are sequential, so the proxy's peak of outstanding RDS requests is the number of
/// reconciles in flight (each call held 300 ms, so overlapping reconciles cannot miss each other).
#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limits_a_kind_across_all_watched_namespaces() -> anyhow::Result<()> {
    let other = unique_name("e2e-other");
    let mut env = Env::start_with(EnvOptions {
        aws_faults: Some(kaws_e2e::fault_proxy::Faults {
            latency_ms: 300.0,
            ..Default::default()
        }),
        extra_env: [
            ("KAWS_CONCURRENCY".to_string(), "1".to_string()),
            ("KAWS_KINDS".to_string(), "dbinstance".to_string()),
        ]
        .into(),
        ..Default::default()
    })
    .await?;
    env.kubectl_ok(&["create", "namespace", &other]);
    // kaws as started watches only the test's namespace: one on both instead.
    env.kaws.stop()?;
    let mut kaws = env
        .start_kaws(
            &[(
                "KAWS_WATCH_NAMESPACES".to_string(),
                format!("{},{other}", env.namespace),
            )]
            .into(),
        )
        .await?;
    let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
    for ns in [env.namespace.clone(), other.clone()] {
        let manifest: Vec<String> = names
            .iter()
            .map(|n| db_yaml(n, &unique_name("conc"), "", ""))
            .collect();
        let path = env.dir.path().join(format!("{ns}.yaml"));
        std::fs::write(&path, manifest.join("---\n"))?;
        env.kubectl_ok(&["-n", &ns, "apply", "-f", &path.display().to_string()]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for ns in [&env.namespace, &other] {
        let api: kube::Api<DBInstance> = kube::Api::namespaced(env.client.clone(), ns);
        for name in &names {
            loop {
                let obj = serde_json::to_value(api.get(name).await?)?;
                if ready(&obj) {
                    break;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "{ns}/{name} not Ready: {obj}\n{}",
                    kaws.logs()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    let stats = env.proxy.as_ref().expect("proxy").stats().await?;
    assert_eq!(
        stats.peak_in_flight.get("rds"),
        Some(&1),
        "one DBInstance reconcile at a time across both namespaces: {:?}",
        stats.peak_in_flight
    );
    kaws.stop()?;
    Ok(())
}

/// Batched observation: at a steady state one `DescribeDBInstances` (tags included) serves every
/// DBInstance of a region, so its calls follow the clock, not the number of objects; drift is
/// still corrected at the next resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_instances_share_one_listing_and_drift_is_still_corrected() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "8s".into(),
        ..Default::default()
    })
    .await?;
    let count = 12;
    let ids: Vec<String> = (0..count).map(|_| unique_name("fleet")).collect();
    let manifest: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "---\n{}",
                db_yaml(
                    &format!("d{i}"),
                    id,
                    "skipFinalSnapshot: true\ntags: {team: data}",
                    ""
                )
            )
        })
        .collect();
    env.apply_ok(&manifest);
    for i in 0..count {
        env.wait_condition_of::<DBInstance>(&format!("d{i}"), "Ready", "True", None)
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rds_calls = |op: &'static str| {
        let op = format!("operation=\"{op}\"");
        let env = &env;
        async move {
            env.kaws
                .aws_calls(|l| l.contains("service=\"rds\"") && l.contains(&op))
                .await
        }
    };
    let writes = || async {
        env.kaws
            .aws_calls(|l| l.contains("service=\"rds\"") && !l.contains("operation=\"Describe"))
            .await
    };
    let window = Duration::from_secs(24);
    let (reconciles, describes, written) = (
        env.kaws.reconciles("DBInstance").await?,
        rds_calls("DescribeDBInstances").await?,
        writes().await?,
    );
    tokio::time::sleep(window).await;
    let reconciles = env.kaws.reconciles("DBInstance").await? - reconciles;
    let describes = rds_calls("DescribeDBInstances").await? - describes;
    let written = writes().await? - written;
    println!(
        "{count} DB instances, resync 8s, {window:?}: {reconciles} reconciles, {describes} DescribeDBInstances, {written} writes"
    );
    assert!(
        reconciles >= 2 * count as u64,
        "every object resynced at least twice: {reconciles}"
    );
    // A listing lives a quarter of the resync period (2 s): at most one per 2 s.
    let bound = window.as_secs() / 2 + 2;
    assert!(
        describes <= bound,
        "{describes} DescribeDBInstances for {reconciles} reconciles (bound {bound})"
    );
    assert_eq!(written, 0, "steady state writes nothing");

    // Drift (a tag removed, the backup retention changed) is corrected from the listing.
    let db = instance(&env, &ids[0]).await.expect("instance");
    let arn = db.db_instance_arn().unwrap_or_default().to_string();
    rds(&env)
        .remove_tags_from_resource()
        .resource_name(&arn)
        .tag_keys("team")
        .send()
        .await?;
    let note = env.wait_event("d0", "DriftCorrected").await?;
    assert!(note.contains("tags"), "{note}");
    let tags = rds(&env)
        .list_tags_for_resource()
        .resource_name(&arn)
        .send()
        .await?;
    assert!(
        tags.tag_list()
            .iter()
            .any(|t| t.key() == Some("team") && t.value() == Some("data")),
        "{tags:?}"
    );
    Ok(())
}

/// Tests that need the test API server's fault injection: `make test-cluster` skips this module
/// on an external cluster and counts its tests as skipped.
mod needs_fault_injection {
    use super::*;

    /// The generated password is stored (marked pending) while kaws records its create intent,
    /// and RDS hears of the create only once both are written: when storing it fails, no create
    /// is sent, and the retry creates the instance once, with the password the Secret keeps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_password_that_could_not_be_stored_sends_no_create() -> anyhow::Result<()> {
        let env = Env::start().await?;
        let faults = env.api_faults()?;
        let id = unique_name("kaws-store");
        // The connection Secret's server-side apply (its query names the field manager), not
        // the resolve step's GET of it.
        faults.fail_next(
            &format!(
                r"/namespaces/{}/secrets/store-conn\?.*fieldManager",
                env.namespace
            ),
            1,
            500,
            None,
        );
        env.apply_ok(&db_yaml("store", &id, "skipFinalSnapshot: true", ""));
        env.wait_condition_of::<DBInstance>("store", "Ready", "True", None)
            .await?;

        let object = format!("DBInstance/{}/store", env.namespace);
        assert!(
            env.kaws
                .logs()
                .lines()
                .any(|l| l.contains("reconcile failed")
                    && l.contains(&object)
                    && l.contains("injected fault")),
            "the injected failure ended the first reconcile"
        );
        let creates = env
            .kaws
            .aws_calls(|l| l.contains("operation=\"CreateDBInstance\""))
            .await?;
        assert_eq!(creates, 1, "one create, after the password was stored");
        assert_eq!(
            modify_calls(&env).await?,
            0,
            "the password was never set again"
        );
        let data = wait_secret(&env, "store-conn", "the password", |d| {
            d.contains_key("password")
        })
        .await?;
        assert_eq!(moto_password(&env, &id).await?, data["password"]);
        let obj = env.api::<DBInstance>().get("store").await?;
        let status = obj.status.expect("status");
        assert!(
            status.common.create_pending_since.is_none(),
            "the create intent is settled"
        );
        Ok(())
    }

    /// The resolve step's read of the connection Secret and the observe's read of RDS are made
    /// at once (a reconcile waits for the slower, not for both): with the Secret's GET held for
    /// 10 s, RDS is asked about the instance long before the hold ends; the instance is created
    /// once afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rds_is_read_while_the_secret_read_is_held() -> anyhow::Result<()> {
        let env = Env::start().await?;
        let faults = env.api_faults()?;
        let id = unique_name("kaws-held");
        let hold = Duration::from_secs(10);
        // The resolve step's GET (no query), not the Secret's server-side apply.
        faults.delay_next(
            Some("GET"),
            &format!("/namespaces/{}/secrets/held-conn$", env.namespace),
            1,
            hold,
        );
        let applied = std::time::Instant::now();
        env.apply_ok(&db_yaml("held", &id, "skipFinalSnapshot: true", ""));
        let describes = || {
            env.kaws
                .aws_calls(|l| l.contains("operation=\"DescribeDBInstances\""))
        };
        while describes().await? == 0 {
            anyhow::ensure!(
                applied.elapsed() < hold - Duration::from_secs(3),
                "RDS was not read while the Secret read was held"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        env.wait_condition_of::<DBInstance>("held", "Ready", "True", None)
            .await?;
        let creates = env
            .kaws
            .aws_calls(|l| l.contains("operation=\"CreateDBInstance\""))
            .await?;
        assert_eq!(creates, 1);
        Ok(())
    }

    /// A new object's finalizer is added while kaws makes its first reads (the Secret, RDS),
    /// and the create waits for both: with the finalizer's PATCH held 10 s, RDS is read long
    /// before the hold ends, nothing is created while the finalizer is not on, and the instance
    /// is created once afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rds_is_read_while_the_finalizer_is_added_and_created_only_after_it()
    -> anyhow::Result<()> {
        let env = Env::start().await?;
        let faults = env.api_faults()?;
        let id = unique_name("kaws-fin");
        let hold = Duration::from_secs(10);
        // kaws' finalizer patch: a PATCH of the object's own path without a query (its status
        // and server-side apply PATCHes have one).
        faults.delay_next(
            Some("PATCH"),
            &format!("/namespaces/{}/dbinstances/fin$", env.namespace),
            1,
            hold,
        );
        let obj: DBInstance =
            serde_saphyr::from_str(&db_yaml("fin", &id, "skipFinalSnapshot: true", ""))?;
        let api = env.api::<DBInstance>();
        let created = std::time::Instant::now();
        api.create(&PostParams::default(), &obj).await?;
        let rds_calls = |operation: &'static str| {
            env.kaws
                .aws_calls(move |l| l.contains(&format!("operation=\"{operation}\"")))
        };
        while rds_calls("DescribeDBInstances").await? == 0 {
            anyhow::ensure!(
                created.elapsed() < hold - Duration::from_secs(5),
                "RDS was not read while the finalizer was being added"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Time for a create that would not wait for the finalizer (an intent, a Secret write,
        // moto's CreateDBInstance) to be made and counted, still within the hold.
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::ensure!(created.elapsed() < hold - Duration::from_secs(1));
        let listed = api.list(&Default::default()).await?;
        let now = listed
            .items
            .iter()
            .find(|o| o.name_any() == "fin")
            .expect("the object is listed");
        assert!(
            now.finalizers().is_empty(),
            "the finalizer PATCH is still held"
        );
        assert_eq!(
            rds_calls("CreateDBInstance").await?,
            0,
            "nothing is created before the finalizer is on"
        );
        env.wait_condition_of::<DBInstance>("fin", "Ready", "True", None)
            .await?;
        assert_eq!(rds_calls("CreateDBInstance").await?, 1);
        assert!(
            api.get("fin")
                .await?
                .finalizers()
                .iter()
                .any(|f| f == "kaws.io/finalizer")
        );
        Ok(())
    }
}
