//! Scale benchmark (not a timed test): 10,000 custom objects created, listed
//! in full and in pages, and watched from "0". Prints a table of wall times
//! and the process RSS (server and client share the process).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kaws_testserver::{Options, TestServer};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;

const N: usize = 10_000;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = TestServer::start_with(Options {
        crd_dirs: vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")],
        ..Default::default()
    })
    .await?;
    let client = server.client().await?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("test.kaws.io", "v1", "Widget"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let mut rows: Vec<(String, Duration, f64)> = Vec::new();
    rows.push(("start (CRDs installed)".into(), Duration::ZERO, rss_mib()));

    let t = Instant::now();
    stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            async move {
                let o: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "test.kaws.io/v1", "kind": "Widget",
                    "metadata": {"name": format!("w{i:05}"), "labels": {"shard": (i % 10).to_string()}},
                    "spec": {"bucketName": format!("bucket-{i}"), "size": 1 + (i % 100) as i64}
                }))?;
                api.create(&PostParams::default(), &o).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    rows.push((
        format!("create {N} (16 concurrent)"),
        t.elapsed(),
        rss_mib(),
    ));

    let t = Instant::now();
    let all = api.list(&ListParams::default()).await?;
    anyhow::ensure!(
        all.items.len() == N,
        "full list returned {}",
        all.items.len()
    );
    rows.push(("list all (one request)".into(), t.elapsed(), rss_mib()));

    let t = Instant::now();
    let mut count = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(tok) = &token {
            lp = lp.continue_token(tok);
        }
        let page = api.list(&lp).await?;
        count += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    anyhow::ensure!(count == N, "paged list returned {count}");
    rows.push(("list paged (limit=500)".into(), t.elapsed(), rss_mib()));

    let t = Instant::now();
    let sel = api.list(&ListParams::default().labels("shard=3")).await?;
    anyhow::ensure!(sel.items.len() == N / 10);
    rows.push(("list with label selector".into(), t.elapsed(), rss_mib()));

    let t = Instant::now();
    let mut watch = api.watch(&WatchParams::default(), "0").await?.boxed();
    let mut added = 0;
    while added < N {
        match watch.try_next().await? {
            Some(WatchEvent::Added(_)) => added += 1,
            Some(_) => {}
            None => anyhow::bail!("watch ended after {added} events"),
        }
    }
    rows.push((
        "watch from 0 (initial ADDED)".into(),
        t.elapsed(),
        rss_mib(),
    ));

    println!("{:<32} {:>12} {:>10}", "step", "time", "RSS MiB");
    println!("{}", "-".repeat(56));
    for (name, d, rss) in rows {
        println!(
            "{name:<32} {:>10.1}ms {rss:>10.1}",
            d.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
