//! Benchmark (not a test): N Buckets through the real kaws binary, test API server and moto.
//! Prints time to Ready, kaws' RSS idle and under load, and S3 calls per steady-state resync.
//! Run: `cargo build -p kaws && cargo run -p kaws-e2e --example bucket_bench` (BUCKETS=200 to
//! change N). Figures are for the debug build of kaws.

use std::time::{Duration, Instant};

use kaws_e2e::{
    Env,
    env::{EnvOptions, condition},
    unique_name,
};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BUCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let env = Env::start_with(EnvOptions {
        resync_period: "30s".into(),
        ..Default::default()
    })
    .await?;
    let pid = env.kaws.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);

    let start = Instant::now();
    let mut manifest = String::new();
    for i in 0..n {
        manifest.push_str(&format!(
            "---\napiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: b{i}\nspec:\n  bucketName: {}\n  versioning: Enabled\n",
            unique_name("bench")
        ));
    }
    env.apply_ok(&manifest);
    loop {
        let list = env.buckets().list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|b| {
                serde_json::to_value(b)
                    .ok()
                    .is_some_and(|v| condition(&v, "Ready").is_some_and(|c| c["status"] == "True"))
            })
            .count();
        if ready == n {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {ready}/{n} Ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let to_ready = start.elapsed();
    let loaded = rss_kib(pid);

    // Steady state: count S3 calls over a window of whole resync periods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls0 = env.s3_calls().await?;
    let writes0 = env.s3_write_calls().await?;
    let rec0 = env.kaws.reconciles("Bucket").await?;
    tokio::time::sleep(Duration::from_secs(33)).await;
    let calls = env.s3_calls().await? - calls0;
    let writes = env.s3_write_calls().await? - writes0;
    let resyncs = env.kaws.reconciles("Bucket").await? - rec0;
    let steady = rss_kib(pid);

    println!("| measure | value |");
    println!("|---|---|");
    println!("| buckets | {n} |");
    println!(
        "| apply → all Ready | {:.1} s ({:.1} ms per bucket) |",
        to_ready.as_secs_f64(),
        to_ready.as_secs_f64() * 1000.0 / n as f64
    );
    println!("| kaws RSS idle (0 objects) | {} KiB |", idle);
    println!("| kaws RSS after create | {} KiB |", loaded);
    println!("| kaws RSS steady state | {} KiB |", steady);
    println!("| resyncs in 33 s window | {resyncs} |");
    println!(
        "| S3 calls per resync | {:.2} |",
        calls as f64 / resyncs.max(1) as f64
    );
    println!("| S3 writes in steady state | {writes} |");
    Ok(())
}
