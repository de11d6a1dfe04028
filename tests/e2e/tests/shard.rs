//! Scale-out: two kaws, each with its own label selector and leader-election Lease, split the
//! objects of one cluster; neither reconciles, nor calls AWS for, the other's objects.

use std::{collections::BTreeMap, time::Duration};

use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    kaws::sum_samples,
    unique_name,
};

fn shard_env(shard: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "KAWS_LABEL_SELECTOR".to_string(),
            format!("kaws.io/shard={shard}"),
        ),
        (
            "KAWS_LEADER_ELECTION_LEASE_NAME".to_string(),
            format!("kaws-{shard}"),
        ),
    ])
}

/// The objects a kaws log says it reconciled.
fn reconciled(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "reconciled")
        .filter_map(|v| v["fields"]["object"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shards_reconcile_disjoint_halves_and_never_call_for_the_other() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        resync_period: "2s".into(),
        leader_election: Some(Duration::from_secs(15)),
        extra_env: shard_env("a"),
        ..Default::default()
    })
    .await?;
    let b = env.start_kaws(&shard_env("b")).await?;
    let mut names = BTreeMap::new();
    for shard in ["a", "b"] {
        for i in 0..3 {
            let name = format!("{shard}-{i}");
            let bucket = unique_name(&format!("shard-{shard}"));
            env.apply_ok(&format!(
                "apiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: {name}\n  labels: {{kaws.io/shard: {shard}}}\nspec:\n  bucketName: {bucket}\n"
            ));
            names.insert(name, shard);
        }
    }
    for name in names.keys() {
        env.wait_for::<kaws::resources::bucket::Bucket>(
            name,
            Duration::from_secs(60),
            "Ready",
            |o| condition(o, "Ready").is_some_and(|c| c["status"] == "True"),
        )
        .await?;
    }
    // A few resyncs of every object.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ns = &env.namespace;
    let own = |shard: &str| -> std::collections::BTreeSet<String> {
        names
            .iter()
            .filter(|(_, s)| **s == shard)
            .map(|(n, _)| format!("Bucket/{ns}/{n}"))
            .collect()
    };
    for (shard, log, metrics) in [
        ("a", env.kaws.logs(), env.kaws.metrics().await?),
        ("b", b.logs(), b.metrics().await?),
    ] {
        assert_eq!(
            reconciled(&log),
            own(shard),
            "shard {shard} reconciled its own objects only"
        );
        let creates = sum_samples(&metrics, "kaws_aws_api_calls_total", |l| {
            l.contains("operation=\"CreateBucket\"")
        });
        assert_eq!(
            creates, 3,
            "shard {shard} created its 3 buckets and no other"
        );
        let heads = sum_samples(&metrics, "kaws_aws_api_calls_total", |l| {
            l.contains("operation=\"HeadBucket\"")
        });
        let reconciles = sum_samples(&metrics, "kaws_reconciles_total", |l| {
            l.contains("kind=\"Bucket\"")
        });
        let writes = sum_samples(&metrics, "kaws_aws_api_calls_total", |l| {
            l.contains("service=\"s3\"")
                && ["Create", "Put", "Delete"]
                    .iter()
                    .any(|w| l.contains(&format!("operation=\"{w}")))
        });
        // One HeadBucket per reconcile of an own object, and one more to confirm each write it
        // made: none spent on the other shard's.
        assert!(
            heads <= reconciles + writes,
            "shard {shard}: {heads} HeadBucket for {reconciles} reconciles and {writes} writes"
        );
        println!("shard {shard}: {reconciles} reconciles, {heads} HeadBucket, 3 CreateBucket");
    }
    // Moving an object to the other shard hands it over: b reconciles it from now on.
    env.kubectl_ok(&["label", "bucket", "a-0", "kaws.io/shard=b", "--overwrite"]);
    let moved = format!("Bucket/{ns}/a-0");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reconciled(&b.logs()).contains(&moved) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "shard b never reconciled the object moved to it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
    Ok(())
}
