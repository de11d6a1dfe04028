//! A restarted kaws spreads the objects it finds settled over their resync period instead of
//! reconciling them all at once, and still acts at once on what changed while it was down.

use std::time::{Duration, Instant};

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
