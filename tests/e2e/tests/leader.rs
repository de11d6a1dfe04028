//! End to end for leader election: several real kaws processes on one test API server and one
//! moto, coordinating through a coordination.k8s.io/v1 Lease.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kaws_e2e::{
    Env,
    env::{EnvOptions, tail},
    kaws::Kaws,
    unique_name,
};
use kube::Api;

/// Short, so that takeovers are quick; renewed every 2s (a third before expiry).
const LEASE: Duration = Duration::from_secs(3);
/// Scheduling slack on a busy test machine, on top of what the lease duration allows.
const SLACK: Duration = Duration::from_secs(3);

fn instance(name: &str) -> BTreeMap<String, String> {
    [("KAWS_INSTANCE".to_string(), name.to_string())].into()
}

async fn holder(env: &Env) -> anyhow::Result<Option<String>> {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    Ok(api
        .get_opt("kaws")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

/// Waits until the Lease is held by the process started with instance name `who`; returns how
/// long that took.
async fn wait_holder(env: &Env, who: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let prefix = format!("{who}-");
    while start.elapsed() < timeout {
        if holder(env).await?.is_some_and(|h| h.starts_with(&prefix)) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "{who} did not take the lease within {timeout:?}; holder: {:?}",
        holder(env).await?
    )
}

fn bucket_yaml(name: &str, bucket: &str) -> String {
    format!(
        "apiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: {name}\nspec:\n  bucketName: {bucket}\n"
    )
}

async fn all_calls(kaws: &Kaws) -> anyhow::Result<u64> {
    kaws.aws_calls(|_| true).await
}

async fn creates(kaws: &Kaws) -> anyhow::Result<u64> {
    kaws.aws_calls(|l| l.contains("operation=\"CreateBucket\""))
        .await
}

/// Applies a Bucket and returns its S3 name.
fn apply_bucket(env: &Env, name: &str) -> String {
    let bucket = unique_name("leader");
    env.apply_ok(&bucket_yaml(name, &bucket));
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() -> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        leader_election: Some(LEASE),
        extra_env: instance("kaws-a"),
        ..Default::default()
    })
    .await?;
    wait_holder(&env, "kaws-a", Duration::from_secs(20)).await?;
    let mut b = env.start_kaws(&instance("kaws-b")).await?;

    // Exactly one process talks to AWS.
    let first = [apply_bucket(&env, "one"), apply_bucket(&env, "two")];
    for name in ["one", "two"] {
        env.wait_condition(name, "Ready", "True", None).await?;
    }
    for bucket in &first {
        assert!(env.bucket_exists(bucket).await, "{bucket} exists");
    }
    assert_eq!(
        creates(&env.kaws).await?,
        2,
        "the leader created both buckets"
    );
    // Let a few renewals and resync-free idle time pass: the standby must stay idle.
    tokio::time::sleep(LEASE).await;
    assert_eq!(
        all_calls(&b).await?,
        0,
        "the standby made AWS calls; its log:\n{}",
        tail(&b.logs(), 30)
    );

    // The leader dies without releasing the Lease; objects created meanwhile wait for the
    // standby, which takes over once the Lease has expired.
    env.kaws.kill()?;
    let killed = Instant::now();
    let pending = [apply_bucket(&env, "three"), apply_bucket(&env, "four")];
    wait_holder(&env, "kaws-b", LEASE * 2 + SLACK).await?;
    eprintln!(
        "takeover after SIGKILL: {:?} (lease {LEASE:?})",
        killed.elapsed()
    );
    for name in ["three", "four"] {
        env.wait_condition(name, "Ready", "True", None).await?;
    }
    for bucket in &pending {
        assert!(env.bucket_exists(bucket).await, "{bucket} exists");
    }
    // The new leader observed the two existing buckets and created only the pending ones.
    assert_eq!(
        creates(&b).await?,
        2,
        "no bucket created twice; log:\n{}",
        tail(&b.logs(), 30)
    );

    // SIGTERM: the leader finishes, releases the Lease, and the next standby does not have to
    // wait for it to expire.
    let c = env.start_kaws(&instance("kaws-c")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(all_calls(&c).await?, 0, "the new standby is idle");
    let status = b.stop()?;
    assert!(
        status.success(),
        "kaws-b exits cleanly on SIGTERM: {status}"
    );
    let released = Instant::now();
    assert_eq!(
        holder(&env).await?,
        None,
        "kaws-b released the lease before exiting; log:\n{}",
        tail(&b.logs(), 20)
    );
    wait_holder(&env, "kaws-c", LEASE + SLACK).await?;
    eprintln!("takeover after SIGTERM: {:?}", released.elapsed());
    let last = apply_bucket(&env, "five");
    env.wait_condition("five", "Ready", "True", None).await?;
    assert!(env.bucket_exists(&last).await);
    assert_eq!(creates(&c).await?, 1, "kaws-c created only the new bucket");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_healthy_and_ready_but_idle() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        leader_election: Some(LEASE),
        extra_env: instance("kaws-a"),
        ..Default::default()
    })
    .await?;
    wait_holder(&env, "kaws-a", Duration::from_secs(20)).await?;
    let standby = env.start_kaws(&instance("kaws-b")).await?;
    for path in ["/healthz", "/readyz"] {
        let (status, _) =
            kaws_e2e::kaws::http_get(&format!("{}{path}", standby.metrics_url)).await?;
        assert_eq!(status, 200, "{path} of the standby");
    }
    assert!(
        standby.logs().contains("waiting for the lease"),
        "the standby says what it waits for"
    );
    assert_eq!(standby.reconciles("Bucket").await?, 0);
    Ok(())
}
