//! End to end for Bucket: the real kaws binary, the test API server, moto and real kubectl.

use std::time::Duration;

use aws_sdk_s3::{primitives::ByteStream, types as s3};
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    kaws::sum_samples,
    moto::workspace_root,
    unique_name,
};

fn bucket_yaml(name: &str, bucket: &str, extra_spec: &str, annotations: &str) -> String {
    let mut yaml =
        format!("apiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: {name}\n");
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for line in annotations.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!("spec:\n  bucketName: {bucket}\n"));
    for line in extra_spec.lines() {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

async fn versioning(env: &Env, bucket: &str) -> Option<s3::BucketVersioningStatus> {
    env.s3
        .get_bucket_versioning()
        .bucket(bucket)
        .send()
        .await
        .expect("GetBucketVersioning")
        .status()
        .cloned()
}

async fn put_object(env: &Env, bucket: &str, key: &str) {
    env.s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("PutObject");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_bucket_becomes_ready_and_follows_manifest_changes() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let example = workspace_root().join("examples/bucket.yaml");
    env.kubectl_ok(&["apply", "-f", &example.display().to_string()]);
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "bucket/app-logs",
        "--timeout=60s",
    ]);

    let bucket = "kaws-example-app-logs";
    assert!(env.bucket_exists(bucket).await, "bucket exists in S3");
    assert_eq!(
        versioning(&env, bucket).await,
        Some(s3::BucketVersioningStatus::Enabled)
    );
    let tags = env.bucket_tags(bucket).await?;
    assert_eq!(tags.get("team").map(String::as_str), Some("data"));
    assert_eq!(
        tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/app-logs", env.cluster_id, env.namespace))
    );
    let obj = env.buckets().get("app-logs").await?;
    assert_eq!(tags.get("kaws.io/uid"), obj.metadata.uid.as_ref());
    let pab = env
        .s3
        .get_public_access_block()
        .bucket(bucket)
        .send()
        .await?;
    let pab = pab.public_access_block_configuration().expect("PAB set");
    assert_eq!(
        (
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true)),
        "public access fully blocked by default"
    );
    let enc = env.s3.get_bucket_encryption().bucket(bucket).send().await?;
    let algo = enc
        .server_side_encryption_configuration()
        .and_then(|c| c.rules().first())
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .map(|d| d.sse_algorithm().clone());
    assert_eq!(algo, Some(s3::ServerSideEncryption::Aes256));
    let lifecycle = env
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await?;
    assert_eq!(lifecycle.rules().len(), 1);

    // Status carries identity and observed configuration; printer columns show it.
    let status = obj.status.expect("status written");
    assert_eq!(
        status.common.arn.as_deref(),
        Some("arn:aws:s3:::kaws-example-app-logs")
    );
    assert_eq!(status.common.placement.region.as_deref(), Some("eu-west-1"));
    assert_eq!(status.versioning.as_deref(), Some("Enabled"));
    assert_eq!(status.common.observed_generation, obj.metadata.generation);
    let table = env.kubectl_ok(&["get", "bkt"]);
    assert!(
        table.contains("BUCKET") && table.contains("READY") && table.contains("SYNCED"),
        "{table}"
    );
    assert!(
        table.contains("kaws-example-app-logs") && table.contains("True"),
        "{table}"
    );
    let aws = env.kubectl_ok(&["get", "aws"]);
    assert!(
        aws.contains("app-logs"),
        "kubectl get aws lists buckets: {aws}"
    );

    // Change versioning, tags and lifecycle in the manifest and re-apply: S3 follows.
    let changed = std::fs::read_to_string(&example)?
        .replace("versioning: Enabled", "versioning: Suspended")
        .replace("env: sandbox", "env: staging")
        .replace(
            "noncurrentVersionExpirationDays: 30",
            "noncurrentVersionExpirationDays: 60",
        );
    env.apply_ok(&changed);
    env.wait_bucket(
        "app-logs",
        Duration::from_secs(60),
        "generation 2 Ready",
        |b| {
            b["status"]["observedGeneration"] == 2
                && condition(b, "Ready").is_some_and(|c| c["status"] == "True")
        },
    )
    .await?;
    assert_eq!(
        versioning(&env, bucket).await,
        Some(s3::BucketVersioningStatus::Suspended)
    );
    assert_eq!(
        env.bucket_tags(bucket)
            .await?
            .get("env")
            .map(String::as_str),
        Some("staging")
    );
    let lifecycle = env
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await?;
    assert_eq!(
        lifecycle.rules()[0]
            .noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days()),
        Some(60)
    );
    let events = env.event_reasons("app-logs").await?;
    assert!(events.iter().any(|(r, _)| r == "Created"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Updated" && n.contains("versioning") && n.contains("tags")),
        "{events:?}"
    );

    // Delete: bucket gone in S3, then the object gone.
    env.kubectl_ok(&["delete", "bucket", "app-logs", "--timeout=60s"]);
    assert!(!env.bucket_exists(bucket).await, "bucket deleted in S3");
    env.wait_gone("app-logs", Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_in_s3_is_corrected_on_resync_with_an_event() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "2s".into(),
        ..Default::default()
    })
    .await?;
    let bucket = unique_name("drift");
    env.apply_ok(&bucket_yaml(
        "drift",
        &bucket,
        "versioning: Enabled\ntags:\n  team: data",
        "",
    ));
    env.wait_condition("drift", "Ready", "True", None).await?;

    // Someone changes S3 behind kaws' back.
    env.s3
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            s3::VersioningConfiguration::builder()
                .status(s3::BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await?;
    env.s3
        .delete_public_access_block()
        .bucket(&bucket)
        .send()
        .await?;

    let note = env.wait_event("drift", "DriftCorrected").await?;
    assert!(
        note.contains("versioning") && note.contains("publicAccessBlock"),
        "{note}"
    );
    assert_eq!(
        versioning(&env, &bucket).await,
        Some(s3::BucketVersioningStatus::Enabled)
    );
    let pab = env
        .s3
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await?;
    assert_eq!(
        pab.public_access_block_configuration()
            .and_then(|p| p.block_public_policy()),
        Some(true)
    );

    // A different drift gets its own Event, not a repeat of the first one's note.
    // (Removing the owner tags would make it an unowned bucket: AlreadyExists, by design.)
    let mut tags = env.bucket_tags(&bucket).await?;
    tags.insert("team".into(), "rogue".into());
    let tag_set = tags
        .iter()
        .map(|(k, v)| s3::Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?;
    env.s3
        .put_bucket_tagging()
        .bucket(&bucket)
        .tagging(s3::Tagging::builder().set_tag_set(Some(tag_set)).build()?)
        .send()
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = env.event_reasons("drift").await?;
        let separate = events
            .iter()
            .any(|(r, n)| r == "DriftCorrected" && n.contains("tags") && !n.contains("versioning"));
        if separate {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no separate DriftCorrected event for tags: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        env.bucket_tags(&bucket)
            .await?
            .get("team")
            .map(String::as_str),
        Some("data")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_resync_makes_no_s3_writes() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "1s".into(),
        ..Default::default()
    })
    .await?;
    let bucket = unique_name("steady");
    env.apply_ok(&bucket_yaml(
        "steady",
        &bucket,
        "versioning: Enabled\nlifecycleRules:\n- id: a\n  expirationDays: 3\ncorsRules:\n- allowedMethods: [GET]\n  allowedOrigins: ['*']\npolicy: '{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:DeleteBucket\",\"Resource\":\"arn:aws:s3:::BUCKET\"}]}'".replace("BUCKET", &bucket).as_str(),
        "",
    ));
    env.wait_condition("steady", "Ready", "True", None).await?;
    // Let the last status write of the create settle into the watch cache; count between
    // reconciles, so that none is counted in part.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s3 = |text: &str, writes_only: bool| {
        sum_samples(text, "kaws_aws_api_calls_total", |l| {
            l.contains("service=\"s3\"")
                && (!writes_only
                    || !["operation=\"Get", "operation=\"Head", "operation=\"List"]
                        .iter()
                        .any(|p| l.contains(p)))
        })
    };
    let of_buckets = |text: &str, metric: &str, outcome: Option<&str>| {
        let outcome = outcome.map(|o| format!("outcome=\"{o}\""));
        sum_samples(text, metric, |l| {
            l.contains("kind=\"Bucket\"") && outcome.as_ref().is_none_or(|o| l.contains(o))
        })
    };
    let before = env.kaws.metrics_between_reconciles("Bucket").await?;
    let version_before = env.buckets().get("steady").await?.metadata.resource_version;
    // Resyncs at 1s (±10%), over twice the interval of full reads (DETAILS_EVERY periods less
    // half a period).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let after = env.kaws.metrics_between_reconciles("Bucket").await?;
    let since = |metric: &str, outcome: Option<&str>| {
        of_buckets(&after, metric, outcome) - of_buckets(&before, metric, outcome)
    };
    let resyncs = since("kaws_reconciles_total", None);
    let writes = s3(&after, true) - s3(&before, true);
    let calls = s3(&after, false) - s3(&before, false);
    assert!(resyncs >= 3, "resync ran ({resyncs} reconciles)");
    assert_eq!(writes, 0, "no S3 write in steady state");
    // Nor a status write: every resync ends with the status the object already has.
    let status_writes = since("kaws_status_writes_total", Some("written"));
    let skipped = since("kaws_status_writes_total", Some("skipped"));
    assert_eq!(status_writes, 0, "no status write in steady state");
    assert!(
        skipped >= resyncs,
        "{skipped} skipped for {resyncs} resyncs"
    );
    assert_eq!(
        env.buckets().get("steady").await?.metadata.resource_version,
        version_before,
        "the object was not written"
    );
    println!(
        "steady state: {resyncs} resyncs made {calls} S3 calls ({} per resync), 0 writes",
        calls / resyncs.max(1)
    );
    // A steady resync reads the tags alone (GetBucketTagging), and about every DETAILS_EVERY
    // resyncs the 6 settings with them (a full read; no HeadBucket for a bucket found before).
    let full_reads = calls.saturating_sub(resyncs) / 6;
    assert_eq!(
        calls,
        resyncs + 6 * full_reads,
        "1 read per resync, 7 for a full read"
    );
    assert!(
        (1..=3).contains(&full_reads),
        "{full_reads} full reads in {resyncs} resyncs (every {} or so)",
        kaws::core::batch::DETAILS_EVERY
    );

    // The policy removed from the spec is deleted from the bucket.
    env.apply_ok(&bucket_yaml(
        "steady",
        &bucket,
        "versioning: Enabled\nlifecycleRules:\n- id: a\n  expirationDays: 3\ncorsRules:\n- allowedMethods: [GET]\n  allowedOrigins: ['*']",
        "",
    ));
    env.wait_bucket("steady", Duration::from_secs(30), "policy removed", |o| {
        o["status"]["observedGeneration"] == 2
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert!(
        env.s3
            .get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .is_err(),
        "no bucket policy left"
    );
    let deletes = env
        .kaws
        .aws_calls(|l| l.contains("operation=\"DeleteBucketPolicy\""))
        .await?;
    assert_eq!(deletes, 1);
    // Neither the resyncs nor the change (its observe and the one confirming it) made a
    // HeadBucket: the bucket was found (Ready) before.
    let heads = |text: &str| {
        sum_samples(text, "kaws_aws_api_calls_total", |l| {
            l.contains("operation=\"HeadBucket\"")
        })
    };
    assert_eq!(heads(&env.kaws.metrics().await?), heads(&before));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_deleted_outside_kubernetes_is_created_again_at_the_next_resync()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "2s".into(),
        ..Default::default()
    })
    .await?;
    let bucket = unique_name("gone");
    env.apply_ok(&bucket_yaml("gone", &bucket, "versioning: Enabled", ""));
    env.wait_condition("gone", "Ready", "True", None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heads = |l: &str| l.contains("operation=\"HeadBucket\"");
    let heads_before = env.kaws.aws_calls(heads).await?;

    // Someone deletes the bucket in S3. The resync's configuration reads answer NoSuchBucket;
    // HeadBucket confirms it is gone, and kaws creates it again as the spec says.
    env.s3.delete_bucket().bucket(&bucket).send().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let creates = env
            .kaws
            .aws_calls(|l| l.contains("operation=\"CreateBucket\"") && l.contains("success"))
            .await?;
        if creates >= 2 && env.bucket_exists(&bucket).await {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the bucket was not created again ({creates} CreateBucket)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The object stayed Ready (the status only changes when the reconcile that creates the bucket
    // again finishes), so wait for the configuration itself: the same reconcile puts it back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while versioning(&env, &bucket).await != Some(s3::BucketVersioningStatus::Enabled) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the bucket came back without its versioning"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_bucket("gone", Duration::from_secs(30), "Ready again", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await?;
    assert!(
        env.kaws.aws_calls(heads).await? > heads_before,
        "HeadBucket told the vanished bucket apart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_retained_bucket_leaves_aws_untouched() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("keep");
    env.apply_ok(&bucket_yaml("keep", &bucket, "deletionPolicy: Retain", ""));
    env.wait_condition("keep", "Ready", "True", None).await?;
    env.kubectl_ok(&["delete", "bucket", "keep", "--timeout=60s"]);
    env.wait_gone("keep", Duration::from_secs(10)).await?;
    assert!(
        env.bucket_exists(&bucket).await,
        "retained bucket still in S3"
    );
    let note = env.wait_event("keep", "Retained").await?;
    assert!(note.contains("Retain"), "{note}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_bucket_needs_the_adopt_annotation() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("legacy");
    env.s3
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            s3::CreateBucketConfiguration::builder()
                .location_constraint(s3::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await?;

    env.apply_ok(&bucket_yaml("legacy", &bucket, "versioning: Enabled", ""));
    let obj = env
        .wait_condition("legacy", "Ready", "False", Some("AlreadyExists"))
        .await?;
    let synced = condition(&obj, "Synced").expect("Synced condition");
    assert_eq!(synced["reason"], "AlreadyExists");
    assert!(
        synced["message"]
            .as_str()
            .unwrap_or_default()
            .contains("kaws.io/adopt"),
        "{synced}"
    );
    // Terminal: no retries until the object changes.
    let reconciles = env.kaws.reconciles("Bucket").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.kaws.reconciles("Bucket").await? - reconciles <= 1,
        "no hot loop on AlreadyExists"
    );
    assert_eq!(
        env.s3_write_calls().await?,
        0,
        "nothing written to a bucket kaws does not own"
    );
    assert_eq!(versioning(&env, &bucket).await, None);

    // With the annotation, kaws adopts it, tags it and converges it.
    env.kubectl_ok(&["annotate", "bucket", "legacy", "kaws.io/adopt=true"]);
    env.wait_condition("legacy", "Ready", "True", None).await?;
    assert_eq!(
        versioning(&env, &bucket).await,
        Some(s3::BucketVersioningStatus::Enabled)
    );
    let tags = env.bucket_tags(&bucket).await?;
    assert_eq!(
        tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/legacy", env.cluster_id, env.namespace))
    );
    env.wait_event("legacy", "Adopted").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_owned_by_another_object_is_never_touched() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("shared");
    env.apply_ok(&bucket_yaml("first", &bucket, "tags:\n  owner: first", ""));
    env.wait_condition("first", "Ready", "True", None).await?;
    let tags_before = env.bucket_tags(&bucket).await?;
    let writes_before = env.s3_write_calls().await?;

    // A second object claims the same bucket, even with the adopt annotation.
    env.apply_ok(&bucket_yaml(
        "second",
        &bucket,
        "versioning: Enabled\ntags:\n  owner: second",
        "kaws.io/adopt: \"true\"",
    ));
    let obj = env
        .wait_condition("second", "Ready", "False", Some("OwnedByOther"))
        .await?;
    let msg = condition(&obj, "Synced").expect("Synced")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!("{}/{}/first", env.cluster_id, env.namespace)),
        "{msg}"
    );
    assert_eq!(
        env.s3_write_calls().await?,
        writes_before,
        "no write for the second object"
    );

    // Deleting the second object releases it without deleting the bucket.
    env.kubectl_ok(&["delete", "bucket", "second", "--timeout=60s"]);
    env.wait_gone("second", Duration::from_secs(10)).await?;
    assert!(
        env.bucket_exists(&bucket).await,
        "the other object's bucket survives"
    );
    assert_eq!(env.bucket_tags(&bucket).await?, tags_before);
    assert_eq!(versioning(&env, &bucket).await, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_and_observe_only_objects_make_no_writes() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // Paused from the start: no AWS call at all.
    let paused_bucket = unique_name("paused");
    env.apply_ok(&bucket_yaml(
        "paused",
        &paused_bucket,
        "",
        "kaws.io/paused: \"true\"",
    ));
    env.wait_condition("paused", "Synced", "False", Some("Paused"))
        .await?;
    assert_eq!(
        env.s3_calls().await?,
        0,
        "a paused object makes no AWS calls"
    );
    assert!(!env.bucket_exists(&paused_bucket).await);

    // ObserveOnly: reads an existing bucket into status, never writes.
    let observed = unique_name("observed");
    env.s3
        .create_bucket()
        .bucket(&observed)
        .create_bucket_configuration(
            s3::CreateBucketConfiguration::builder()
                .location_constraint(s3::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await?;
    put_object(&env, &observed, "data.csv").await;
    env.apply_ok(&bucket_yaml(
        "observed",
        &observed,
        "managementPolicy: ObserveOnly\nversioning: Enabled",
        "",
    ));
    let obj = env
        .wait_condition("observed", "Synced", "True", Some("Observed"))
        .await?;
    assert_eq!(obj["status"]["arn"], format!("arn:aws:s3:::{observed}"));
    assert_eq!(obj["status"]["bucketName"], observed.as_str());
    assert_eq!(
        env.s3_write_calls().await?,
        0,
        "ObserveOnly makes no writes"
    );
    assert_eq!(
        versioning(&env, &observed).await,
        None,
        "spec is not applied"
    );

    // Deleting an ObserveOnly object leaves the bucket.
    env.kubectl_ok(&["delete", "bucket", "observed", "--timeout=60s"]);
    env.wait_gone("observed", Duration::from_secs(10)).await?;
    assert!(env.bucket_exists(&observed).await);

    // Unpausing lets the paused object create its bucket.
    env.kubectl_ok(&["annotate", "bucket", "paused", "kaws.io/paused-"]);
    env.wait_condition("paused", "Ready", "True", None).await?;
    assert!(env.bucket_exists(&paused_bucket).await);
    assert!(env.s3_write_calls().await? > 0, "unpaused object writes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_gets_a_terminal_condition_without_a_hot_loop() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // Passes the CRD's pattern (an upper-case name is refused at apply); S3 reserves xn--.
    env.apply_ok(&bucket_yaml("badname", "xn--kaws-bad", "", ""));
    let bad_policy = unique_name("policy");
    env.apply_ok(&bucket_yaml(
        "badpolicy",
        &bad_policy,
        "policy: '{not json'",
        "",
    ));
    let obj = env
        .wait_condition("badname", "Synced", "False", Some("InvalidSpec"))
        .await?;
    let msg = condition(&obj, "Synced").expect("Synced")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("not a valid S3 bucket name"), "{msg}");
    let obj = env
        .wait_condition("badpolicy", "Synced", "False", Some("InvalidSpec"))
        .await?;
    let msg = condition(&obj, "Synced").expect("Synced")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("policy is not valid JSON"), "{msg}");
    env.wait_event("badname", "InvalidSpec").await?;

    // The reconcile that wrote the status is counted just after the write: let it land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconciles = env.kaws.reconciles("Bucket").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let more = env.kaws.reconciles("Bucket").await? - reconciles;
    assert_eq!(
        more, 0,
        "terminal errors are not retried until the object changes"
    );
    assert_eq!(
        env.s3_calls().await?,
        0,
        "validation fails before any AWS call"
    );
    assert!(!env.bucket_exists(&bad_policy).await);

    // Fixing the spec recovers.
    env.apply_ok(&bucket_yaml("badpolicy", &bad_policy, "", ""));
    env.wait_condition("badpolicy", "Ready", "True", None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_empty_bucket_blocks_delete_unless_force_delete() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("full");
    env.apply_ok(&bucket_yaml("full", &bucket, "versioning: Enabled", ""));
    env.wait_condition("full", "Ready", "True", None).await?;
    put_object(&env, &bucket, "a.txt").await;
    put_object(&env, &bucket, "a.txt").await; // a second version
    put_object(&env, &bucket, "b/c.txt").await;
    env.s3
        .delete_object()
        .bucket(&bucket)
        .key("b/c.txt")
        .send()
        .await?; // a delete marker

    env.kubectl_ok(&["delete", "bucket", "full", "--wait=false"]);
    let obj = env
        .wait_condition("full", "Synced", "False", Some("BucketNotEmpty"))
        .await?;
    let msg = condition(&obj, "Synced").expect("Synced")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("forceDelete"), "{msg}");
    assert!(env.bucket_exists(&bucket).await, "non-empty bucket kept");

    // forceDelete: every version and delete marker goes, then the bucket.
    env.kubectl_ok(&[
        "patch",
        "bucket",
        "full",
        "--type=merge",
        "-p",
        r#"{"spec":{"forceDelete":true}}"#,
    ]);
    env.wait_gone("full", Duration::from_secs(60)).await?;
    assert!(
        !env.bucket_exists(&bucket).await,
        "bucket emptied and deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_an_immutable_field_is_refused_by_the_api_server() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("fixed");
    env.apply_ok(&bucket_yaml("fixed", &bucket, "", ""));
    env.wait_condition("fixed", "Ready", "True", None).await?;
    let out = env.apply(&bucket_yaml("fixed", &unique_name("other"), "", ""));
    assert!(!out.status.success(), "renaming the bucket must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bucketName is immutable"), "{stderr}");
    let out = env.apply(&bucket_yaml("fixed", &bucket, "region: us-west-2", ""));
    assert!(!out.status.success(), "moving the bucket must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("region is immutable"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_reconcile_is_echoed_and_secrets_stay_out_of_logs() -> anyhow::Result<()> {
    let secret = "kaws-e2e-Secret-Value-7f3a9c";
    let env = Env::start_with(EnvOptions {
        extra_env: [("AWS_SECRET_ACCESS_KEY".to_string(), secret.to_string())].into(),
        ..Default::default()
    })
    .await?;
    let bucket = unique_name("poke");
    env.apply_ok(&bucket_yaml("poke", &bucket, "", ""));
    env.wait_condition("poke", "Ready", "True", None).await?;
    let reads = env.s3_calls().await?;
    env.kubectl_ok(&[
        "annotate",
        "bucket",
        "poke",
        "kaws.io/reconcile-requested-at=now-1",
    ]);
    env.wait_bucket(
        "poke",
        Duration::from_secs(30),
        "lastHandledReconcileAt",
        |b| b["status"]["lastHandledReconcileAt"] == "now-1",
    )
    .await?;
    assert!(
        env.s3_calls().await? > reads,
        "the forced reconcile read S3"
    );

    let mut env = env;
    let status = env.kaws.stop()?;
    assert!(status.success(), "graceful shutdown on SIGTERM: {status}");
    let logs = env.kaws.logs();
    assert!(logs.contains("stopped"), "{logs}");
    assert!(
        !logs.contains(secret),
        "the AWS secret key leaked into the logs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_objects_racing_for_one_name_leave_exactly_one_owner_and_no_foreign_write()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("race");
    // Applied together, with settings that differ, so a write by the loser would show.
    let manifests = format!(
        "{}---\n{}",
        bucket_yaml(
            "one",
            &bucket,
            "versioning: Enabled\ntags:\n  team: one",
            ""
        ),
        bucket_yaml("two", &bucket, "tags:\n  team: two", "")
    );
    env.apply_ok(&manifests);
    let settled = |o: &serde_json::Value| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
            || condition(o, "Synced").is_some_and(|c| c["status"] == "False")
    };
    let one = env
        .wait_bucket("one", Duration::from_secs(60), "settled", settled)
        .await?;
    let two = env
        .wait_bucket("two", Duration::from_secs(60), "settled", settled)
        .await?;
    let ready =
        |o: &serde_json::Value| condition(o, "Ready").is_some_and(|c| c["status"] == "True");
    let (winner, loser, loser_obj) = match (ready(&one), ready(&two)) {
        (true, false) => ("one", "two", two),
        (false, true) => ("two", "one", one),
        other => anyhow::bail!("exactly one object must win the name: {other:?}"),
    };
    let synced = condition(&loser_obj, "Synced").expect("Synced");
    assert!(
        ["OwnedByOther", "AlreadyExists"].contains(&synced["reason"].as_str().unwrap_or_default()),
        "{synced}"
    );
    let tags = env.bucket_tags(&bucket).await?;
    assert_eq!(
        tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/{winner}", env.cluster_id, env.namespace))
    );
    assert_eq!(tags.get("team").map(String::as_str), Some(winner));
    let want_versioning = (winner == "one").then_some(s3::BucketVersioningStatus::Enabled);
    assert_eq!(
        versioning(&env, &bucket).await,
        want_versioning,
        "only the winner's spec reaches the bucket"
    );
    let created = |name: &str| {
        let env = &env;
        let name = name.to_string();
        async move {
            Ok::<_, anyhow::Error>(
                env.event_reasons(&name)
                    .await?
                    .iter()
                    .filter(|(r, _)| r == "Created")
                    .count(),
            )
        }
    };
    assert_eq!(created(winner).await?, 1, "the winner announces its create");
    assert_eq!(
        created(loser).await?,
        0,
        "the loser never claims it created the bucket"
    );

    // Deleting the loser leaves the winner's bucket as it is.
    env.kubectl_ok(&["delete", "bucket", loser, "--timeout=60s"]);
    env.wait_gone(loser, Duration::from_secs(10)).await?;
    assert!(env.bucket_exists(&bucket).await);
    assert_eq!(env.bucket_tags(&bucket).await?, tags);
    Ok(())
}

/// A crash between `CreateBucket` and tagging (or an endpoint that drops create-time tags)
/// leaves an untagged bucket; the intent kaws recorded before the create makes it recognise the
/// bucket as its own, tag it, converge it and delete it with the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_created_before_a_crash_is_recognised_tagged_and_deleted_with_its_object()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let bucket = unique_name("crash");
    // The state a crash right after CreateBucket leaves: the object with its create intent
    // recorded (paused, so kaws does not act before the scene is set) and an untagged bucket.
    env.apply_ok(&bucket_yaml(
        "crashed",
        &bucket,
        "versioning: Enabled",
        "kaws.io/paused: \"true\"",
    ));
    env.wait_condition("crashed", "Synced", "False", Some("Paused"))
        .await?;
    env.kubectl_ok(&[
        "patch",
        "bucket",
        "crashed",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"createPendingSince":"2026-01-01T00:00:00Z"}}"#,
    ]);
    env.s3
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            s3::CreateBucketConfiguration::builder()
                .location_constraint(s3::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await?;
    env.kubectl_ok(&["annotate", "bucket", "crashed", "kaws.io/paused-"]);
    let obj = env.wait_condition("crashed", "Ready", "True", None).await?;
    assert!(
        obj["status"]
            .get("createPendingSince")
            .is_none_or(|v| v.is_null()),
        "the intent is cleared once the bucket carries our tags: {obj}"
    );
    let tags = env.bucket_tags(&bucket).await?;
    assert_eq!(
        tags.get("kaws.io/owner"),
        Some(&format!("{}/{}/crashed", env.cluster_id, env.namespace))
    );
    assert_eq!(
        versioning(&env, &bucket).await,
        Some(s3::BucketVersioningStatus::Enabled)
    );
    env.kubectl_ok(&["delete", "bucket", "crashed", "--timeout=60s"]);
    env.wait_gone("crashed", Duration::from_secs(10)).await?;
    assert!(!env.bucket_exists(&bucket).await, "no leaked bucket");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_never_created_anything_is_deleted_without_aws_calls() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    // A policy that is not JSON: the schema accepts it, validation refuses it before any AWS call.
    let bucket = unique_name("never");
    env.apply_ok(&bucket_yaml("bad", &bucket, "policy: \"not json\"", ""));
    env.wait_condition("bad", "Synced", "False", Some("InvalidSpec"))
        .await?;
    let calls = env.s3_calls().await?;
    env.kubectl_ok(&["delete", "bucket", "bad", "--timeout=30s"]);
    env.wait_gone("bad", Duration::from_secs(10)).await?;
    assert_eq!(env.s3_calls().await?, calls, "no AWS call for the delete");
    env.wait_event("bad", "NothingToDelete").await?;
    assert!(!env.bucket_exists(&bucket).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_aws_accepts_but_never_reflects_is_repeated_three_times_then_held()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        // Long enough that no resync falls inside the test's windows.
        resync_period: "5m".into(),
        aws_faults: Some(kaws_e2e::fault_proxy::Faults::none()),
        ..Default::default()
    })
    .await?;
    let proxy = env.proxy.as_ref().expect("proxy");
    let bucket = unique_name("loop");
    env.apply_ok(&bucket_yaml("loop", &bucket, "", ""));
    env.wait_condition("loop", "Ready", "True", None).await?;

    // From now on S3 answers PutBucketVersioning with 200 and never applies it.
    proxy.ignore(&["s3:PutBucketVersioning"]).await?;
    proxy.reset_counts().await?;
    env.apply_ok(&bucket_yaml("loop", &bucket, "versioning: Enabled", ""));
    let held = env
        .wait_condition("loop", "Synced", "False", Some("NotConverging"))
        .await?;
    let synced = condition(&held, "Synced").expect("Synced");
    let message = synced["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("versioning") && message.contains("3 times"),
        "{message}"
    );
    assert_eq!(
        condition(&held, "Ready").map(|c| c["reason"].clone()),
        Some("NotConverging".into())
    );
    let ignored = |stats: &kaws_e2e::fault_proxy::Stats| {
        stats
            .sum(|s, op| s == "s3" && op == "PutBucketVersioning")
            .attempts()
    };
    assert_eq!(ignored(&proxy.stats().await?), 3, "three writes, then held");
    // Held: no more writes, one Warning, however long it lasts before the resync.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(ignored(&proxy.stats().await?), 3, "no write while held");
    let warnings = env
        .event_reasons("loop")
        .await?
        .into_iter()
        .filter(|(r, _)| r == "NotConverging")
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].1.contains("versioning"), "{warnings:?}");
    assert_eq!(
        versioning(&env, &bucket).await,
        None,
        "S3 never saw a write"
    );

    // AWS heals; a requested reconcile writes again at once and converges.
    proxy.ignore(&[]).await?;
    env.kubectl_ok(&[
        "annotate",
        "bucket",
        "loop",
        "kaws.io/reconcile-requested-at=after-fix",
    ]);
    env.wait_condition("loop", "Ready", "True", None).await?;
    assert_eq!(
        versioning(&env, &bucket).await,
        Some(s3::BucketVersioningStatus::Enabled)
    );
    let stats = proxy.stats().await?;
    let put = stats.sum(|s, op| s == "s3" && op == "PutBucketVersioning");
    assert_eq!((put.ignored, put.forwarded), (3, 1), "{put:?}");
    Ok(())
}
