//! A restarted kaws spreads the objects it finds settled over their resync period instead of
//! reconciling them all at once, and still acts at once on what changed while it was down.

use std::time::{Duration, Instant};

use futures::StreamExt;

use kaws::resources::bucket::Bucket;
use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    unique_name,
};

const OBJECTS: usize = 12;
const RESYNC: Duration = Duration::from_secs(9);

fn bucket(name: &str, bucket: &str, versioning: &str) -> String {
    format!(
        "apiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: {name}\nspec:\n  bucketName: {bucket}\n  versioning: {versioning}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_spreads_settled_objects_and_acts_at_once_on_changed_ones() -> anyhow::Result<()>
{
    let mut env = Env::start_with(EnvOptions {
        resync_period: format!("{}s", RESYNC.as_secs()),
        ..Default::default()
    })
    .await?;
    let names: Vec<(String, String)> = (0..OBJECTS)
        .map(|i| (format!("b{i}"), unique_name("restart")))
        .collect();
    for (name, b) in &names {
        env.apply_ok(&bucket(name, b, "Suspended"));
    }
    for (name, _) in &names {
        env.wait_condition(name, "Ready", "True", None).await?;
    }

    // Down: one object's spec changes meanwhile.
    env.kaws.kill()?;
    let (changed, changed_bucket) = &names[0];
    env.apply_ok(&bucket(changed, changed_bucket, "Enabled"));
    let generation = env.buckets().get(changed).await?.metadata.generation;

    let started = Instant::now();
    env.kaws = env.start_kaws(&Default::default()).await?;
    // The changed object does not wait for the others.
    env.wait_for::<Bucket>(
        changed,
        Duration::from_secs(10),
        "the new generation applied",
        |o| {
            o["status"]["observedGeneration"].as_i64() == generation
                && condition(o, "Synced").is_some_and(|c| c["status"] == "True")
        },
    )
    .await?;
    let changed_after = started.elapsed();
    // Two seconds in: about 2/9 of the settled ones are due (a restart that reconciled them all
    // at once would have done the 12 Bucket observations in ~1 s here).
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let early = env.kaws.reconciles("Bucket").await?;
    assert!(
        early <= (OBJECTS as u64) * 2 / 3,
        "{early} of {OBJECTS} objects reconciled within 2 s of the restart: not spread"
    );
    // Every settled object is still looked at within its resync period.
    let deadline = started + RESYNC + Duration::from_secs(6);
    while env.kaws.reconciles("Bucket").await? < OBJECTS as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every object reconciled within a resync period of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "changed object applied {changed_after:?} after the restart; {early} of {OBJECTS} reconciled in the first 2 s; all within {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Objects found unsettled at start-up (here: never reconciled, and paused, so no AWS call) all
/// need a reconcile at once. They wait in kaws' admission queue — visible as
/// `kaws_queued_reconciles` — and are handed on a few at a time, instead of being started
/// together; every one is reconciled and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_burst_waits_in_the_admission_queue() -> anyhow::Result<()> {
    const BURST: usize = 150;
    let mut env = Env::start().await?;
    env.kaws.kill()?;
    let api = env.buckets();
    let created: Vec<kube::Result<Bucket>> = futures::stream::iter(0..BURST)
        .map(|i| {
            let api = api.clone();
            async move {
                let bucket: Bucket = serde_json::from_value(serde_json::json!({
                    "apiVersion": "s3.kaws.io/v1alpha1",
                    "kind": "Bucket",
                    "metadata": {"name": format!("q{i}"), "annotations": {"kaws.io/paused": "true"}},
                    "spec": {"bucketName": unique_name("queue")},
                }))
                .expect("a valid Bucket");
                api.create(&Default::default(), &bucket).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for c in created {
        c?;
    }

    // One permit: at most 2 reconciles handed on at once, the rest queued.
    let extra = [("KAWS_CONCURRENCY".to_string(), "1".to_string())].into();
    env.kaws = env.start_kaws(&extra).await?;
    let queued = |text: &str| {
        kaws_e2e::kaws::sum_samples(text, "kaws_queued_reconciles", |l| {
            l.contains("kind=\"Bucket\"")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let text = env.kaws.metrics().await?;
        most = most.max(queued(&text));
        let done = kaws_e2e::kaws::sum_samples(&text, "kaws_reconciles_total", |l| {
            l.contains("kind=\"Bucket\"")
        });
        if done >= BURST as u64 && queued(&text) == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{done} of {BURST} reconciled, {} still queued, within 60 s",
            queued(&text)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Seen within a few hundred milliseconds of ready, while ~5 ms reconciles drain it one by one.
    assert!(
        most >= 20,
        "at most {most} of {BURST} unsettled objects were seen waiting in the queue"
    );
    let text = env.kaws.metrics().await?;
    let waits = kaws_e2e::kaws::sum_samples(&text, "kaws_queue_wait_seconds_count", |l| {
        l.contains("kind=\"Bucket\"")
    });
    assert!(
        waits >= BURST as u64,
        "{waits} queue waits recorded for {BURST} objects"
    );
    for i in [0, BURST / 2, BURST - 1] {
        let paused = env.buckets().get(&format!("q{i}")).await?;
        let status = serde_json::to_value(&paused)?;
        assert_eq!(
            condition(&status, "Synced").map(|c| c["reason"].clone()),
            Some(serde_json::json!("Paused")),
            "q{i}"
        );
    }
    eprintln!("{BURST} unsettled objects at start-up: up to {most} queued at once, all reconciled");
    Ok(())
}
