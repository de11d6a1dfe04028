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
    holder_of(env, "kaws").await
}

async fn holder_of(env: &Env, lease: &str) -> anyhow::Result<Option<String>> {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    Ok(api
        .get_opt(lease)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
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
    // Released before exiting: free, or already taken by kaws-c, which acts on it at once.
    let after = holder(&env).await?;
    assert!(
        after.as_deref().is_none_or(|h| h.starts_with("kaws-c-")),
        "kaws-b released the lease before exiting (holder now {after:?}); log:\n{}",
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

fn signal(kaws: &Kaws, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &kaws.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

/// Waits until `kaws` has exited; returns how long that took.
async fn wait_exit(kaws: &mut Kaws, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while kaws.is_running() {
        if start.elapsed() > timeout {
            anyhow::bail!(
                "still running after {timeout:?}; log:\n{}",
                tail(&kaws.logs(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// The paused leader: SIGSTOP (a GC pause, a frozen node), the standby takes over,
/// SIGCONT. An object whose reconcile starts with an AWS write (CreateBucket) is waiting for the
/// resumed process, and nobody else serves it (the standby runs only Tables), so without
/// fencing the resumed leader would create the bucket before noticing it lost the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_leader_makes_no_aws_write_and_exits() -> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        leader_election: Some(LEASE),
        extra_env: instance("kaws-a"),
        ..Default::default()
    })
    .await?;
    wait_holder(&env, "kaws-a", Duration::from_secs(20)).await?;
    let mut standby_env = instance("kaws-b");
    standby_env.insert("KAWS_KINDS".to_string(), "table".to_string());
    let _b = env.start_kaws(&standby_env).await?;

    signal(&env.kaws, "STOP")?;
    let paused = Instant::now();
    wait_holder(&env, "kaws-b", LEASE * 2 + SLACK).await?;
    eprintln!(
        "takeover after SIGSTOP: {:?} (lease {LEASE:?})",
        paused.elapsed()
    );
    let bucket = apply_bucket(&env, "while-paused");
    // Let the API server deliver the new object to the paused process's watch.
    tokio::time::sleep(Duration::from_secs(1)).await;

    signal(&env.kaws, "CONT")?;
    let exited = wait_exit(&mut env.kaws, Duration::from_secs(15)).await?;
    eprintln!("resumed leader exited {exited:?} after SIGCONT");
    let log = env.kaws.logs();
    // Give a write that slipped through time to land before looking.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !env.bucket_exists(&bucket).await,
        "the resumed leader created {bucket}; log:\n{}",
        tail(&log, 40)
    );
    assert!(
        log.contains("stopped leading"),
        "it says why it stops; log:\n{}",
        tail(&log, 40)
    );
    // `kaws` returns the error from main: exit status 1, printed last.
    assert!(
        log.contains("Error: the lease") || log.contains("Error: lost the lease"),
        "it exits non-zero; log:\n{}",
        tail(&log, 40)
    );
    assert_eq!(
        holder(&env).await?.map(|h| h.starts_with("kaws-b-")),
        Some(true)
    );
    Ok(())
}

/// SIGTERM: the leader finishes, clears the holder, and the standby, which follows the Lease
/// with a watch, takes it at once rather than at the expiry it last saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_within_a_second() -> anyhow::Result<()> {
    // A long lease: a takeover by expiry could not pass for a prompt one.
    let lease = Duration::from_secs(15);
    let mut env = Env::start_with(EnvOptions {
        leader_election: Some(lease),
        extra_env: instance("kaws-a"),
        ..Default::default()
    })
    .await?;
    wait_holder(&env, "kaws-a", Duration::from_secs(20)).await?;
    let b = env.start_kaws(&instance("kaws-b")).await?;
    // Let a renewal or two pass: the standby has seen the Lease change.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Poll the Lease while kaws-a stops: when the holder was cleared, when kaws-b held it.
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let watch = tokio::spawn(async move {
        let (mut released, mut taken) = (None, None);
        let start = Instant::now();
        while taken.is_none() && start.elapsed() < Duration::from_secs(30) {
            let h = api
                .get_opt("kaws")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
            match h {
                None if released.is_none() => released = Some(Instant::now()),
                Some(h) if h.starts_with("kaws-b-") => taken = Some(Instant::now()),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (released, taken)
    });
    let sigterm = Instant::now();
    let status = env.kaws.stop()?;
    let exited = sigterm.elapsed();
    assert!(
        status.success(),
        "kaws-a exits cleanly on SIGTERM: {status}"
    );
    let (released, taken) = watch.await?;
    let taken = taken.ok_or_else(|| {
        anyhow::anyhow!(
            "kaws-b never took the lease; its log:\n{}",
            tail(&b.logs(), 30)
        )
    })?;
    let handover = released.map_or(Duration::ZERO, |r| taken.saturating_duration_since(r));
    eprintln!(
        "SIGTERM hand-over: release → new holder {handover:?}; SIGTERM → exit {exited:?}, \
         SIGTERM → new holder {:?} (lease {lease:?})",
        taken.duration_since(sigterm)
    );
    assert!(
        handover < Duration::from_secs(1),
        "the standby acted on the release in {handover:?}"
    );
    assert!(
        taken.duration_since(sigterm) < Duration::from_secs(3),
        "idle leader: SIGTERM to new leader in {:?}",
        taken.duration_since(sigterm)
    );
    Ok(())
}

/// Replicas started at the same instant race for a new Lease: optimistic concurrency lets
/// exactly one win, and the other stays a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_elect_exactly_one_leader() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        leader_election: Some(LEASE),
        extra_env: instance("kaws-a"),
        ..Default::default()
    })
    .await?;
    for round in 0..3 {
        let lease = format!("race-{round}");
        let env_for = |who: &str| {
            let mut e = instance(who);
            e.insert("KAWS_LEADER_ELECTION_LEASE_NAME".to_string(), lease.clone());
            e
        };
        let (x, y) = (env_for("racer-x"), env_for("racer-y"));
        let (x, y) = tokio::join!(env.start_kaws(&x), env.start_kaws(&y));
        let racers = [x?, y?];
        let start = Instant::now();
        let winner = loop {
            if let Some(h) = holder_of(&env, &lease).await? {
                break h;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "nobody took {lease}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // A few renewals later, still exactly one.
        tokio::time::sleep(LEASE).await;
        let mut leading = Vec::new();
        for k in &racers {
            let m = k.metrics().await?;
            leading.push(kaws_e2e::kaws::sum_samples(&m, "kaws_leading", |_| true));
        }
        let acquired: Vec<usize> = racers
            .iter()
            .map(|k| k.logs().matches("acquired the lease").count())
            .collect();
        eprintln!(
            "round {round}: holder {winner}, leading gauges {leading:?}, acquisitions {acquired:?}"
        );
        assert_eq!(
            leading.iter().sum::<u64>(),
            1,
            "exactly one leads: {leading:?}"
        );
        assert_eq!(
            acquired.iter().sum::<usize>(),
            1,
            "exactly one acquisition: {acquired:?}"
        );
        assert_eq!(holder_of(&env, &lease).await?, Some(winner), "no hand-over");
    }
    Ok(())
}
