//! The CPU a plain AWS SDK loop spends on one read, for `make bench` to set beside the CPU kaws
//! spends per no-op reconcile. Its own binary so that it is built with the profile of the kaws
//! binary it is compared with (`make bench`: release), which the bench itself is not.
//!
//! `kaws-sdk-loop ENDPOINT REGION BUCKET...` makes every bucket's resync reads as kaws makes
//! them (its 7 configuration reads at once, as for a bucket that is Ready), 4 buckets
//! at a time, one round to open connections and then 3 measured rounds, on one thread, and
//! prints `reads=<n> cpu_ns_per_read=<ns>`.
//!
//! `kaws-sdk-loop --one-at-a-time PACE_MS READS ENDPOINT REGION BUCKET...` makes a steady
//! Bucket resync's one read (`GetBucketTagging`) instead, one read in flight at a time, a read
//! starting every `PACE_MS` milliseconds (or as soon as the one before it is answered), the
//! buckets in turn, `READS` reads after one per bucket to open connections: what a read costs
//! a process that makes one now and then, as kaws' resyncs at a low rate do.

use std::time::Duration;

use futures::StreamExt;

/// kaws' default `--concurrency`.
const CONCURRENCY: usize = 4;
const ROUNDS: u32 = 3;
/// A Bucket's 7 configuration reads.
const READS_PER_BUCKET: u32 = 7;

/// User + system CPU time of this process.
fn cpu() -> anyhow::Result<Duration> {
    Ok(kaws_sdk_loop::cpu_time(&std::fs::read_to_string(
        "/proc/self/stat",
    )?))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let usage = "usage: kaws-sdk-loop [--one-at-a-time PACE_MS READS] ENDPOINT REGION BUCKET...";
    let one_at_a_time = if args.peek().map(String::as_str) == Some("--one-at-a-time") {
        args.next();
        let mut number = || -> anyhow::Result<u64> {
            Ok(args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?)
        };
        Some((
            Duration::from_millis(number()?),
            u32::try_from(number()?)?.max(1),
        ))
    } else {
        None
    };
    let endpoint = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let region = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let buckets: Vec<String> = args.collect();
    anyhow::ensure!(!buckets.is_empty(), usage);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let creds = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "bench");
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(creds))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        let resync = |b: &String| {
            let (s3, b) = (s3.clone(), b.clone());
            async move {
                let b = b.as_str();
                // Answers are not checked: a 404 "not configured" costs what kaws pays for it.
                let _ = futures::join!(
                    s3.get_bucket_tagging().bucket(b).send(),
                    s3.get_bucket_versioning().bucket(b).send(),
                    s3.get_bucket_encryption().bucket(b).send(),
                    s3.get_public_access_block().bucket(b).send(),
                    s3.get_bucket_lifecycle_configuration().bucket(b).send(),
                    s3.get_bucket_cors().bucket(b).send(),
                    s3.get_bucket_policy().bucket(b).send(),
                );
            }
        };
        if let Some((pace, reads)) = one_at_a_time {
            let read = |b: &String| {
                let (s3, b) = (s3.clone(), b.clone());
                async move {
                    let _ = s3.get_bucket_tagging().bucket(b).send().await;
                }
            };
            for b in &buckets {
                read(b).await;
            }
            let start = cpu()?;
            let mut next = tokio::time::Instant::now();
            for b in buckets.iter().cycle().take(reads as usize) {
                tokio::time::sleep_until(next).await;
                read(b).await;
                // Never a burst to catch up after a slow answer.
                next = (next + pace).max(tokio::time::Instant::now());
            }
            let per_read = (cpu()? - start) / reads;
            println!("reads={reads} cpu_ns_per_read={}", per_read.as_nanos());
            return Ok(());
        }
        let round = || futures::stream::iter(&buckets).for_each_concurrent(CONCURRENCY, resync);
        round().await;
        let start = cpu()?;
        for _ in 0..ROUNDS {
            round().await;
        }
        let reads = ROUNDS * READS_PER_BUCKET * buckets.len() as u32;
        let per_read = (cpu()? - start) / reads;
        println!("reads={reads} cpu_ns_per_read={}", per_read.as_nanos());
        Ok(())
    })
}
