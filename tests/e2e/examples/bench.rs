//! `make bench` / `make bench-quick`: performance figures read off one command
//! (docs/performance.md).
//!
//! Starts moto, the test API server and the kaws binary (`KAWS_BINARY`, else the debug build),
//! then for each measured kind:
//! - converges N objects and times it against a plain Rust loop with the same AWS SDK issuing
//!   the same calls (the per-object operation counts kaws made, read from its metrics) at the
//!   same concurrency (kaws' default `--concurrency 4`): the ratio is the figure;
//! - counts AWS calls per created object, and Kubernetes calls (the test API server counts
//!   them);
//!
//! then, in steady state, reads, writes and status writes per object per resync and the CPU
//! per no-op reconcile (`/proc/<pid>/stat`); RSS idle with every kind; RSS with M paused objects
//! carrying `managedFields` and a `last-applied-configuration` annotation; and the time a fresh
//! kaws takes to be ready with them; last, the time and AWS calls it takes to carry a tag change
//! to every object of each kind, then to delete them. Prints tables and writes
//! `target/bench/bench.json`.
//!
//! `BENCH=full` (make bench): 200 Buckets, 100 Tables, 1,000 and 10,000 objects. Otherwise the
//! quick variant: 10 Buckets, 5 Tables, 200 objects.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use futures::StreamExt;
use kaws::resources::{
    bucket::Bucket, dbinstance::DBInstance, function::Function, instance::Instance, table::Table,
};
use kaws_e2e::{
    Env,
    env::{EnvOptions, REGION, condition},
    kaws::sum_samples,
    unique_name,
};
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// Reconciles at once per kind: kaws' default `--concurrency`.
const CONCURRENCY: usize = 4;
struct Sizes {
    buckets: usize,
    tables: usize,
    dbinstances: usize,
    instances: usize,
    functions: usize,
    populations: Vec<usize>,
    /// Resync period: long enough that kaws is not saturated by resyncs of all N objects
    /// (moto answers a Bucket observation in ~170 ms).
    resync: Duration,
    /// How long each churn phase (updates, deletes) of a kind may take: a path that stopped
    /// working fails the bench in minutes, not in the quarter hour the others wait.
    churn_deadline: Duration,
    /// Reads the plain SDK loop makes one at a time (CPU time is counted in 10 ms ticks).
    lone_reads: u32,
}

fn sizes() -> Sizes {
    let mut sizes = preset();
    // `BENCH_POPULATIONS=1000,5000` overrides the object counts of the memory runs.
    if let Ok(list) = std::env::var("BENCH_POPULATIONS") {
        sizes.populations = list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
    }
    sizes
}

fn preset() -> Sizes {
    if std::env::var("BENCH").as_deref() == Ok("full") {
        Sizes {
            buckets: 200,
            tables: 100,
            dbinstances: 20,
            instances: 50,
            functions: 50,
            populations: vec![1_000, 10_000],
            resync: Duration::from_secs(30),
            churn_deadline: Duration::from_secs(300),
            lone_reads: 300,
        }
    } else {
        Sizes {
            buckets: 10,
            tables: 5,
            dbinstances: 3,
            instances: 5,
            functions: 5,
            populations: vec![200],
            resync: Duration::from_secs(5),
            churn_deadline: Duration::from_secs(60),
            lone_reads: 100,
        }
    }
}

/// `kaws_aws_api_calls_total` by operation for one service.
fn operations(metrics: &str, service: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("kaws_aws_api_calls_total{") else {
            continue;
        };
        if !rest.contains(&format!("service=\"{service}\"")) {
            continue;
        }
        let Some(op) = rest
            .split("operation=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(op.to_string()).or_default() += value as u64;
    }
    out
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn is_read(op: &str) -> bool {
    ["Get", "Describe", "List", "Head"]
        .iter()
        .any(|p| op.starts_with(p))
}

/// User + system CPU time of a process.
fn cpu(pid: u32) -> Duration {
    kaws_sdk_loop::cpu_time(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
    )
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` memory field in MiB: `VmRSS:` is `RssAnon:` (what kaws allocated)
/// plus `RssFile:` (mostly the binary's code pages the kernel mapped, shared and evictable).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

type Call<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One S3 call as kaws makes it (answers ignored: the baseline pays for the round trip only).
fn s3_call<'a>(s3: &'a aws_sdk_s3::Client, bucket: &'a str, op: &str) -> Option<Call<'a>> {
    use aws_sdk_s3::types as t;
    Some(match op {
        "CreateBucket" => Box::pin(async move {
            let _ = s3
                .create_bucket()
                .bucket(bucket)
                .create_bucket_configuration(
                    t::CreateBucketConfiguration::builder()
                        .location_constraint(t::BucketLocationConstraint::from(REGION))
                        .build(),
                )
                .send()
                .await;
        }),
        "HeadBucket" => Box::pin(async move {
            let _ = s3.head_bucket().bucket(bucket).send().await;
        }),
        "GetBucketTagging" => Box::pin(async move {
            let _ = s3.get_bucket_tagging().bucket(bucket).send().await;
        }),
        "GetBucketVersioning" => Box::pin(async move {
            let _ = s3.get_bucket_versioning().bucket(bucket).send().await;
        }),
        "GetBucketEncryption" => Box::pin(async move {
            let _ = s3.get_bucket_encryption().bucket(bucket).send().await;
        }),
        "GetPublicAccessBlock" => Box::pin(async move {
            let _ = s3.get_public_access_block().bucket(bucket).send().await;
        }),
        "GetBucketLifecycleConfiguration" => Box::pin(async move {
            let _ = s3
                .get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await;
        }),
        "GetBucketCors" => Box::pin(async move {
            let _ = s3.get_bucket_cors().bucket(bucket).send().await;
        }),
        "GetBucketPolicy" => Box::pin(async move {
            let _ = s3.get_bucket_policy().bucket(bucket).send().await;
        }),
        "PutBucketTagging" => Box::pin(async move {
            let Ok(tag) = t::Tag::builder().key("k").value("v").build() else {
                return;
            };
            let Ok(tagging) = t::Tagging::builder().tag_set(tag).build() else {
                return;
            };
            let _ = s3
                .put_bucket_tagging()
                .bucket(bucket)
                .tagging(tagging)
                .send()
                .await;
        }),
        "PutPublicAccessBlock" => Box::pin(async move {
            let _ = s3
                .put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(
                    t::PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await;
        }),
        "PutBucketEncryption" => Box::pin(async move {
            let Ok(default) = t::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(t::ServerSideEncryption::Aes256)
                .build()
            else {
                return;
            };
            let rule = t::ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(default)
                .build();
            let Ok(config) = t::ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
            else {
                return;
            };
            let _ = s3
                .put_bucket_encryption()
                .bucket(bucket)
                .server_side_encryption_configuration(config)
                .send()
                .await;
        }),
        "PutBucketVersioning" => Box::pin(async move {
            let _ = s3
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    t::VersioningConfiguration::builder()
                        .status(t::BucketVersioningStatus::Suspended)
                        .build(),
                )
                .send()
                .await;
        }),
        _ => return None,
    })
}

/// One DynamoDB call as kaws makes it.
fn ddb_call<'a>(ddb: &'a aws_sdk_dynamodb::Client, table: &'a str, op: &str) -> Option<Call<'a>> {
    use aws_sdk_dynamodb::types as t;
    let arn = format!("arn:aws:dynamodb:{REGION}:123456789012:table/{table}");
    Some(match op {
        "CreateTable" => Box::pin(async move {
            let (Ok(attribute), Ok(key)) = (
                t::AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(t::ScalarAttributeType::S)
                    .build(),
                t::KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(t::KeyType::Hash)
                    .build(),
            ) else {
                return;
            };
            let _ = ddb
                .create_table()
                .table_name(table)
                .billing_mode(t::BillingMode::PayPerRequest)
                .attribute_definitions(attribute)
                .key_schema(key)
                .send()
                .await;
        }),
        "DescribeTable" => Box::pin(async move {
            let _ = ddb.describe_table().table_name(table).send().await;
        }),
        "DescribeContinuousBackups" => Box::pin(async move {
            let _ = ddb
                .describe_continuous_backups()
                .table_name(table)
                .send()
                .await;
        }),
        "DescribeTimeToLive" => Box::pin(async move {
            let _ = ddb.describe_time_to_live().table_name(table).send().await;
        }),
        "ListTagsOfResource" => Box::pin(async move {
            let _ = ddb.list_tags_of_resource().resource_arn(arn).send().await;
        }),
        "TagResource" => Box::pin(async move {
            let Ok(tag) = t::Tag::builder().key("k").value("v").build() else {
                return;
            };
            let _ = ddb.tag_resource().resource_arn(arn).tags(tag).send().await;
        }),
        _ => return None,
    })
}

/// The call plan, per object: every operation kaws made, as often as it made it — `count / n`
/// times for every object and once more for the first `count % n` (an operation kaws made for a
/// few objects, such as the lookups whose answers it caches, is replayed that often, by the
/// first objects, as kaws made it in its first ones) — creates first, then writes, then reads.
fn plan(ops: &BTreeMap<String, u64>, n: usize) -> Vec<Vec<String>> {
    let mut ordered: Vec<(&String, &u64)> = ops.iter().collect();
    ordered.sort_by_key(|(op, _)| (!op.starts_with("Create"), is_read(op)));
    (0..n)
        .map(|i| {
            let mut steps = Vec::new();
            for &(op, &count) in &ordered {
                let count = count as usize;
                let times = count / n + usize::from(i < count % n);
                steps.extend(std::iter::repeat_n(op.clone(), times));
            }
            steps
        })
        .collect()
}

struct KindFigures {
    kind: &'static str,
    n: usize,
    kaws: Duration,
    baseline: Duration,
    calls_per_create: f64,
    /// Requests kaws made to the API server per object while they converged: to the kind's
    /// objects and their status, Events, and what the kind writes beside them (a DBInstance's
    /// Secrets); watches and lists left out.
    kube_calls_per_create: f64,
    not_replayed: Vec<String>,
}

/// What the bench needs of a kind's type: a namespaced resource it can apply, watch and read.
trait BenchKind:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + 'static
{
}

impl<K> BenchKind for K where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static
{
}

/// Applies `manifest` (N objects of kind `K`, server-side) and times it until all are Ready, as
/// a watch sees them; returns the time, the calls kaws made to `service` meanwhile and its
/// requests to the API server per object (see [`KindFigures::kube_calls_per_create`]; `beside`:
/// the other resources counted).
async fn converge<K>(
    env: &Env,
    n: usize,
    service: &str,
    manifest: String,
    beside: &[&str],
) -> anyhow::Result<(Duration, BTreeMap<String, u64>, f64)>
where
    K: BenchKind,
{
    let objects: Vec<Value> = manifest
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(serde_saphyr::from_str)
        .collect::<Result<_, _>>()?;
    let api = env.api::<K>();
    let before = operations(&env.kaws.metrics().await?, service);
    let kube_before = kube_requests::<K>(env, beside);
    let start = Instant::now();
    // Server-side apply straight from the client, 8 at a time: the time is kaws', not that of
    // kubectl's start-up and schema download.
    let applied: Vec<kube::Result<K>> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(o),
                )
                .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for a in applied {
        a?;
    }
    all_ready(api, n, start + Duration::from_secs(900)).await?;
    let took = start.elapsed();
    let kube_calls = kube_requests::<K>(env, beside).saturating_sub(kube_before);
    Ok((
        took,
        delta(&operations(&env.kaws.metrics().await?, service), &before),
        kube_calls as f64 / n as f64,
    ))
}

/// Waits until `n` objects of `api` are `Ready`, as a watch shows them: the clock stops when
/// the last one becomes Ready, not at the next poll.
async fn all_ready<K>(api: kube::Api<K>, n: usize, deadline: Instant) -> anyhow::Result<()>
where
    K: BenchKind,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let is_ready = |o: &K| {
        serde_json::to_value(o)
            .ok()
            .is_some_and(|v| condition(&v, "Ready").is_some_and(|c| c["status"] == "True"))
    };
    let mut ready = std::collections::HashSet::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while ready.len() < n {
        let event = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .map_err(|_| anyhow::anyhow!("{n} objects not Ready in 15 minutes"))?
            .context("the watch ended")?;
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                if is_ready(&o) {
                    ready.insert(o.name_any());
                } else {
                    ready.remove(&o.name_any());
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                ready.remove(&o.name_any());
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => eprintln!("watch: {e} (retrying)"),
        }
    }
    Ok(())
}

/// The label the kind runs' objects carry (key and value), so the churn phase watches them
/// alone, not the populations' paused Buckets.
const KIND_LABEL: &str = "kaws-bench";
const KIND_LABEL_VALUE: &str = "kinds";

struct Churn {
    kind: &'static str,
    n: usize,
    update: Duration,
    update_calls: f64,
    delete: Duration,
    delete_calls: f64,
}

/// How long kaws takes to carry a change to every object of a kind run to AWS (a tag added:
/// `Ready` again at the new generation), then to delete them all (gone from the API server),
/// and the AWS calls per object each took. Run last, so the figures before are unchanged by
/// it; it is also what makes the profile behind the release link's function order (`make
/// symbol-order`) see kaws' update and delete paths run.
async fn churn<K>(
    env: &Env,
    sizes: &Sizes,
    kind: &'static str,
    service: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Churn>
where
    K: BenchKind,
{
    let api = env.api::<K>();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();

    let before = operations(&env.kaws.metrics().await?, service);
    let start = Instant::now();
    let patched: Vec<kube::Result<K>> = futures::stream::iter(&names)
        .map(|name| {
            let api = api.clone();
            let tags = json!({"spec": {"tags": {"bench": "updated"}}});
            async move {
                api.patch(name, &PatchParams::default(), &Patch::Merge(tags))
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut generations = BTreeMap::new();
    for p in patched {
        let o = p?;
        generations.insert(o.name_any(), o.meta().generation.unwrap_or_default());
    }
    watch_until(
        api.clone(),
        &names,
        start + sizes.churn_deadline,
        |name, o| {
            o.is_some_and(|v| {
                let generation = generations.get(name).copied().unwrap_or(i64::MAX);
                condition(v, "Ready").is_some_and(|c| c["status"] == "True")
                    && v["status"]["observedGeneration"]
                        .as_i64()
                        .is_some_and(|observed| observed >= generation)
            })
        },
    )
    .await
    .with_context(|| format!("{kind}: updates not carried out"))?;
    let update = start.elapsed();
    let middle = operations(&env.kaws.metrics().await?, service);

    let start = Instant::now();
    let deleted: Vec<kube::Result<_>> = futures::stream::iter(&names)
        .map(|name| {
            let api = api.clone();
            async move { api.delete(name, &Default::default()).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for d in deleted {
        d?;
    }
    watch_until(api, &names, start + sizes.churn_deadline, |_, o| {
        o.is_none()
    })
    .await
    .with_context(|| format!("{kind}: objects not deleted"))?;
    let delete = start.elapsed();
    let after = operations(&env.kaws.metrics().await?, service);
    let per_object = |ops: BTreeMap<String, u64>| ops.values().sum::<u64>() as f64 / n as f64;
    Ok(Churn {
        kind,
        n,
        update,
        update_calls: per_object(delta(&middle, &before)),
        delete,
        delete_calls: per_object(delta(&after, &middle)),
    })
}

/// Watches the kind runs' objects of `api` until `done` holds for every one of `names`: with
/// the object as the watch shows it, or `None` once it is gone (deleted, or absent from the
/// watch's initial list).
async fn watch_until<K>(
    api: kube::Api<K>,
    names: &[String],
    deadline: Instant,
    done: impl Fn(&str, Option<&Value>) -> bool,
) -> anyhow::Result<()>
where
    K: BenchKind,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let mut pending: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut listed = std::collections::HashSet::new();
    let config = watcher::Config::default().labels(&format!("{KIND_LABEL}={KIND_LABEL_VALUE}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} objects still pending at the deadline", pending.len())
            })?
            .context("the watch ended")?;
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let name = o.name_any();
                listed.insert(name.clone());
                let value = serde_json::to_value(&o)?;
                if done(&name, Some(&value)) {
                    pending.remove(name.as_str());
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                let name = o.name_any();
                if done(&name, None) {
                    pending.remove(name.as_str());
                }
            }
            Ok(watcher::Event::InitDone) => {
                pending.retain(|name| listed.contains(*name) || !done(name, None));
            }
            Err(e) => eprintln!("watch: {e} (retrying)"),
        }
    }
    Ok(())
}

/// kaws' requests to the API server so far (the test server counts them) about objects of kind
/// `K`, their status, Events and the resources in `beside`; watches and lists left out.
fn kube_requests<K: kube::Resource<DynamicType = ()>>(env: &Env, beside: &[&str]) -> u64 {
    let Some(server) = &env.server else {
        return 0;
    };
    let plural = K::plural(&());
    server
        .requests(kaws_e2e::kaws::KAWS_TOKEN)
        .into_iter()
        .filter(|(a, _)| a.verb != "list" && a.verb != "watch")
        .filter(|(a, _)| {
            a.resource == plural || a.resource == "events" || beside.contains(&a.resource.as_str())
        })
        .map(|(_, n)| n)
        .sum()
}

async fn bucket(env: &Env, n: usize) -> anyhow::Result<KindFigures> {
    let manifest: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: s3.kaws.io/v1alpha1\nkind: Bucket\nmetadata:\n  name: b{i}\n  labels: {{{KIND_LABEL}: {KIND_LABEL_VALUE}}}\nspec:\n  bucketName: {}\n",
                unique_name("bench")
            )
        })
        .collect();
    let (kaws, ops, kube) = converge::<Bucket>(env, n, "s3", manifest, &[]).await?;
    let plans = plan(&ops, n);
    let names: Vec<String> = (0..n).map(|_| unique_name("base")).collect();
    let start = Instant::now();
    futures::stream::iter(names.iter().zip(&plans))
        .for_each_concurrent(CONCURRENCY, |(bucket, steps)| async move {
            for op in steps {
                if let Some(call) = s3_call(&env.s3, bucket, op) {
                    call.await;
                }
            }
        })
        .await;
    Ok(KindFigures {
        kind: "Bucket",
        n,
        kaws,
        baseline: start.elapsed(),
        calls_per_create: ops.values().sum::<u64>() as f64 / n as f64,
        kube_calls_per_create: kube,
        not_replayed: ops
            .keys()
            .filter(|op| s3_call(&env.s3, "x", op).is_none())
            .cloned()
            .collect(),
    })
}

async fn table(env: &Env, n: usize) -> anyhow::Result<KindFigures> {
    let ddb = aws_sdk_dynamodb::Client::new(&env.aws);
    let manifest: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: dynamodb.kaws.io/v1alpha1\nkind: Table\nmetadata:\n  name: t{i}\n  labels: {{{KIND_LABEL}: {KIND_LABEL_VALUE}}}\nspec:\n  tableName: {}\n  keySchema: [{{attributeName: id, keyType: HASH}}]\n  attributeDefinitions: [{{attributeName: id, attributeType: S}}]\n",
                unique_name("bench")
            )
        })
        .collect();
    let (kaws, ops, kube) = converge::<Table>(env, n, "dynamodb", manifest, &[]).await?;
    let plans = plan(&ops, n);
    let names: Vec<String> = (0..n).map(|_| unique_name("base")).collect();
    let start = Instant::now();
    let ddb = &ddb;
    futures::stream::iter(names.iter().zip(&plans))
        .for_each_concurrent(CONCURRENCY, |(table, steps)| async move {
            for op in steps {
                if let Some(call) = ddb_call(ddb, table, op) {
                    call.await;
                }
            }
        })
        .await;
    Ok(KindFigures {
        kind: "Table",
        n,
        kaws,
        baseline: start.elapsed(),
        calls_per_create: ops.values().sum::<u64>() as f64 / n as f64,
        kube_calls_per_create: kube,
        not_replayed: ops
            .keys()
            .filter(|op| ddb_call(ddb, "x", op).is_none())
            .cloned()
            .collect(),
    })
}

/// Reads per service before anything is timed: moto loads a service's backend on its first
/// request (about a second for Lambda), and builds its first "not found" answer slowly too (a
/// first `DescribeDBInstances` of a missing identifier, 4 at once: 160–240 ms each, then ~50 ms).
/// kaws' first calls are exactly those (it observes before it creates), so without this moto's
/// one-off costs would be charged to kaws, the first to call, and never to the baseline.
async fn warm_up(env: &Env) -> anyhow::Result<()> {
    let missing = unique_name("warm-up-missing");
    let dynamodb = aws_sdk_dynamodb::Client::new(&env.aws);
    let rds = aws_sdk_rds::Client::new(&env.aws);
    let ec2 = aws_sdk_ec2::Client::new(&env.aws);
    let lambda = aws_sdk_lambda::Client::new(&env.aws);
    env.s3.list_buckets().send().await?;
    dynamodb.list_tables().send().await?;
    rds.describe_db_instances().send().await?;
    ec2.describe_instances().send().await?;
    lambda.list_functions().send().await?;
    // Each answers "not found"; what matters is that moto has answered so once.
    let _ = env.s3.head_bucket().bucket(&missing).send().await;
    let _ = dynamodb.describe_table().table_name(&missing).send().await;
    let _ = rds
        .describe_db_instances()
        .db_instance_identifier(&missing)
        .send()
        .await;
    let _ = lambda.get_function().function_name(&missing).send().await;
    Ok(())
}

/// Runs `replay` for N fresh names (with their index in the plan), `CONCURRENCY` at a time, in
/// order: the baseline's time.
async fn baseline<F, Fut>(prefix: &str, n: usize, replay: F) -> Duration
where
    F: Fn(usize, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let names: Vec<String> = (0..n).map(|_| unique_name(prefix)).collect();
    let start = Instant::now();
    futures::stream::iter(names.into_iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(i, name)| replay(i, name))
        .await;
    start.elapsed()
}

fn figures(
    kind: &'static str,
    n: usize,
    kaws: Duration,
    baseline: Duration,
    ops: &BTreeMap<String, u64>,
    kube_calls_per_create: f64,
    replayed: &[&str],
) -> KindFigures {
    KindFigures {
        kind,
        n,
        kaws,
        baseline,
        calls_per_create: ops.values().sum::<u64>() as f64 / n as f64,
        kube_calls_per_create,
        not_replayed: ops
            .keys()
            .filter(|op| !replayed.contains(&op.as_str()))
            .cloned()
            .collect(),
    }
}

/// The RDS operations [`rds_replay`] makes.
const RDS_REPLAYED: &[&str] = &[
    "CreateDBInstance",
    "DescribeDBInstances",
    "AddTagsToResource",
    "ListTagsForResource",
];

/// One DB instance's calls as kaws makes them, in `steps` order.
async fn rds_replay(rds: &aws_sdk_rds::Client, id: &str, steps: &[String]) {
    let arn = format!("arn:aws:rds:{REGION}:123456789012:db:{id}");
    let tag = aws_sdk_rds::types::Tag::builder()
        .key("kaws.io/owner")
        .value("bench")
        .build();
    for op in steps {
        match op.as_str() {
            "CreateDBInstance" => {
                let _ = rds
                    .create_db_instance()
                    .db_instance_identifier(id)
                    .engine("postgres")
                    .db_instance_class("db.t4g.micro")
                    .allocated_storage(20)
                    .master_username("app")
                    .master_user_password("bench-password-1")
                    .tags(tag.clone())
                    .send()
                    .await;
            }
            "DescribeDBInstances" => {
                let _ = rds
                    .describe_db_instances()
                    .db_instance_identifier(id)
                    .send()
                    .await;
            }
            "AddTagsToResource" => {
                let _ = rds
                    .add_tags_to_resource()
                    .resource_name(&arn)
                    .tags(tag.clone())
                    .send()
                    .await;
            }
            "ListTagsForResource" => {
                let _ = rds
                    .list_tags_for_resource()
                    .resource_name(&arn)
                    .send()
                    .await;
            }
            _ => {}
        }
    }
}

async fn dbinstance(env: &Env, n: usize) -> anyhow::Result<KindFigures> {
    let rds = aws_sdk_rds::Client::new(&env.aws);
    let manifest: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: rds.kaws.io/v1alpha1\nkind: DBInstance\nmetadata:\n  name: d{i}\n  labels: {{{KIND_LABEL}: {KIND_LABEL_VALUE}}}\nspec:\n  dbInstanceIdentifier: {}\n  engine: postgres\n  dbInstanceClass: db.t4g.micro\n  allocatedStorage: 20\n  masterUsername: app\n  skipFinalSnapshot: true\n  writeConnectionSecretTo: {{name: d{i}-conn}}\n",
                unique_name("bench")
            )
        })
        .collect();
    // Its connection Secrets are part of each create.
    let (kaws, ops, kube) = converge::<DBInstance>(env, n, "rds", manifest, &["secrets"]).await?;
    let plans = plan(&ops, n);
    let (rds, plans) = (&rds, &plans);
    let base = baseline("base", n, |i, id| async move {
        rds_replay(rds, &id, &plans[i]).await
    })
    .await;
    Ok(figures(
        "DBInstance",
        n,
        kaws,
        base,
        &ops,
        kube,
        RDS_REPLAYED,
    ))
}

/// The EC2 operations [`ec2_replay`] makes.
const EC2_REPLAYED: &[&str] = &[
    "RunInstances",
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeImages",
    "DescribeInstanceAttribute",
    "CreateTags",
];

/// One instance's calls as kaws makes them, in `steps` order (the launch first).
async fn ec2_replay(ec2: &aws_sdk_ec2::Client, ami: &str, name: &str, steps: &[String]) {
    use aws_sdk_ec2::types as t;
    let tag = t::Tag::builder().key("Name").value(name).build();
    let mut id = String::new();
    for op in steps {
        match op.as_str() {
            "RunInstances" => {
                let out = ec2
                    .run_instances()
                    .image_id(ami)
                    .instance_type(t::InstanceType::T3Micro)
                    .min_count(1)
                    .max_count(1)
                    .tag_specifications(
                        t::TagSpecification::builder()
                            .resource_type(t::ResourceType::Instance)
                            .tags(tag.clone())
                            .build(),
                    )
                    .send()
                    .await;
                if let Ok(out) = out {
                    id = out
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .unwrap_or_default()
                        .to_string();
                }
            }
            "DescribeInstances" => {
                let _ = ec2.describe_instances().instance_ids(&id).send().await;
            }
            "DescribeInstanceTypes" => {
                let _ = ec2
                    .describe_instance_types()
                    .instance_types(t::InstanceType::T3Micro)
                    .send()
                    .await;
            }
            "DescribeImages" => {
                let _ = ec2.describe_images().image_ids(ami).send().await;
            }
            "DescribeInstanceAttribute" => {
                let _ = ec2
                    .describe_instance_attribute()
                    .instance_id(&id)
                    .attribute(t::InstanceAttributeName::UserData)
                    .send()
                    .await;
            }
            "CreateTags" => {
                let _ = ec2
                    .create_tags()
                    .resources(&id)
                    .tags(tag.clone())
                    .send()
                    .await;
            }
            _ => {}
        }
    }
}

async fn instance(env: &Env, n: usize) -> anyhow::Result<KindFigures> {
    let ec2 = aws_sdk_ec2::Client::new(&env.aws);
    let ami = kaws_e2e::fixtures::moto_ami(&env.aws).await?;
    let manifest: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: ec2.kaws.io/v1alpha1\nkind: Instance\nmetadata:\n  name: i{i}\n  labels: {{{KIND_LABEL}: {KIND_LABEL_VALUE}}}\nspec:\n  imageId: {ami}\n  instanceType: t3.micro\n"
            )
        })
        .collect();
    let (kaws, ops, kube) = converge::<Instance>(env, n, "ec2", manifest, &[]).await?;
    let plans = plan(&ops, n);
    let (ec2, ami, plans) = (&ec2, &ami, &plans);
    let base = baseline("base", n, |i, name| async move {
        ec2_replay(ec2, ami, &name, &plans[i]).await
    })
    .await;
    Ok(figures("Instance", n, kaws, base, &ops, kube, EC2_REPLAYED))
}

/// The Lambda operations [`lambda_replay`] makes.
const LAMBDA_REPLAYED: &[&str] = &[
    "CreateFunction",
    "GetFunction",
    "ListFunctions",
    "GetFunctionConcurrency",
    "TagResource",
];

/// One function's calls as kaws makes them, in `steps` order.
async fn lambda_replay(
    lambda: &aws_sdk_lambda::Client,
    role: &str,
    code: &[u8],
    name: &str,
    steps: &[String],
) {
    use aws_sdk_lambda::{primitives::Blob, types as t};
    let arn = format!("arn:aws:lambda:{REGION}:123456789012:function:{name}");
    for op in steps {
        match op.as_str() {
            "CreateFunction" => {
                let _ = lambda
                    .create_function()
                    .function_name(name)
                    .runtime(t::Runtime::Python312)
                    .handler("app.handler")
                    .role(role)
                    .code(t::FunctionCode::builder().zip_file(Blob::new(code)).build())
                    .tags("kaws.io/owner", "bench")
                    .send()
                    .await;
            }
            "GetFunction" => {
                let _ = lambda.get_function().function_name(name).send().await;
            }
            "ListFunctions" => {
                let _ = lambda.list_functions().send().await;
            }
            "GetFunctionConcurrency" => {
                let _ = lambda
                    .get_function_concurrency()
                    .function_name(name)
                    .send()
                    .await;
            }
            "TagResource" => {
                let _ = lambda
                    .tag_resource()
                    .resource(&arn)
                    .tags("k", "v")
                    .send()
                    .await;
            }
            _ => {}
        }
    }
}

async fn function(env: &Env, n: usize) -> anyhow::Result<KindFigures> {
    let lambda = aws_sdk_lambda::Client::new(&env.aws);
    let role = kaws_e2e::fixtures::lambda_role(&env.aws, "bench-fn").await?;
    let code = kaws_e2e::fixtures::zip(b"def handler(event, context):\n    return 1\n");
    let manifest: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: lambda.kaws.io/v1alpha1\nkind: Function\nmetadata:\n  name: f{i}\n  labels: {{{KIND_LABEL}: {KIND_LABEL_VALUE}}}\nspec:\n  functionName: {}\n  runtime: python3.12\n  handler: app.handler\n  role: {role}\n  code: {{zipFile: {}}}\n",
                unique_name("bench"),
                STANDARD.encode(&code)
            )
        })
        .collect();
    let (kaws, ops, kube) = converge::<Function>(env, n, "lambda", manifest, &[]).await?;
    let plans = plan(&ops, n);
    let (lambda, role, code, plans) = (&lambda, &role, &code, &plans);
    let base = baseline("base", n, |i, name| async move {
        lambda_replay(lambda, role, code, &name, &plans[i]).await
    })
    .await;
    Ok(figures(
        "Function",
        n,
        kaws,
        base,
        &ops,
        kube,
        LAMBDA_REPLAYED,
    ))
}

struct Steady {
    reconciles: u64,
    reads: u64,
    writes: u64,
    status_writes: u64,
    cpu_per_reconcile: Duration,
    /// What a plain SDK loop spends per read ([`sdk_cpu_per_read`]), a Bucket's 7 reads at
    /// once, 4 buckets at a time.
    sdk_cpu_per_read: Duration,
    /// The same, one read in flight at a time, at the steady state's pace.
    sdk_cpu_per_lone_read: Duration,
}

impl Steady {
    fn reads_per_reconcile(&self) -> f64 {
        self.reads as f64 / self.reconciles.max(1) as f64
    }

    /// CPU per no-op reconcile less its reads at what the plain SDK loop pays for one among
    /// others in flight. Reads at the lone price would leave less: kaws' reads fall between
    /// the two (those due on the same resync tick go out together).
    fn own_cpu_ms(&self) -> f64 {
        (self.cpu_per_reconcile.as_secs_f64()
            - self.reads_per_reconcile() * self.sdk_cpu_per_read.as_secs_f64())
            * 1000.0
    }
}

/// Three whole resync periods with nothing to change.
async fn steady(env: &Env, resync: Duration, lone_reads: u32) -> anyhow::Result<Steady> {
    tokio::time::sleep(resync).await;
    let pid = env.kaws.pid();
    let m0 = env.kaws.metrics().await?;
    let c0 = cpu(pid);
    let window = resync * 3;
    tokio::time::sleep(window).await;
    let m1 = env.kaws.metrics().await?;
    let c1 = cpu(pid);
    let calls = |m: &str, writes_only: bool| {
        sum_samples(m, "kaws_aws_api_calls_total", |l| {
            !writes_only
                || ![
                    "operation=\"Get",
                    "operation=\"Head",
                    "operation=\"List",
                    "operation=\"Describe",
                ]
                .iter()
                .any(|p| l.contains(p))
        })
    };
    let reconciles = |m: &str| sum_samples(m, "kaws_reconciles_total", |_| true);
    let status = |m: &str| {
        sum_samples(m, "kaws_status_writes_total", |l| {
            l.contains("outcome=\"written\"")
        })
    };
    let n = reconciles(&m1) - reconciles(&m0);
    let writes = calls(&m1, true) - calls(&m0, true);
    let buckets: Vec<String> = env
        .api::<Bucket>()
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|b| b.spec.bucket_name)
        .collect();
    let binary = kaws_e2e::kaws::binary()?;
    let batched = sdk_cpu_per_read(&binary, &env.moto.endpoint, &buckets, None)?;
    // A read started as often as kaws started a reconcile in the window.
    let pace = window / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let lone = sdk_cpu_per_read(
        &binary,
        &env.moto.endpoint,
        &buckets,
        Some((pace, lone_reads)),
    )?;
    Ok(Steady {
        reconciles: n,
        reads: calls(&m1, false) - calls(&m0, false) - writes,
        writes,
        status_writes: status(&m1) - status(&m0),
        cpu_per_reconcile: (c1 - c0) / n.max(1) as u32,
        sdk_cpu_per_read: batched,
        sdk_cpu_per_lone_read: lone,
    })
}

/// The CPU a plain SDK loop spends on one read: `kaws-sdk-loop` (tests/sdk-loop), the binary
/// beside the measured kaws binary (so built with its profile), making every bench Bucket's
/// full resync reads (7 at once), 4 buckets at a time, 3 rounds; or, with `one_at_a_time`
/// (a pace and a number of reads), a steady Bucket resync's one read, one in flight at a time,
/// one started per pace.
fn sdk_cpu_per_read(
    kaws: &std::path::Path,
    endpoint: &str,
    buckets: &[String],
    one_at_a_time: Option<(Duration, u32)>,
) -> anyhow::Result<Duration> {
    let program = kaws.with_file_name("kaws-sdk-loop");
    let mut command = std::process::Command::new(&program);
    if let Some((pace, reads)) = one_at_a_time {
        command
            .arg("--one-at-a-time")
            .arg(pace.as_millis().to_string())
            .arg(reads.to_string());
    }
    let out = command
        .arg(endpoint)
        .arg(REGION)
        .args(buckets)
        .output()
        .with_context(|| format!("{} (cargo build -p kaws-sdk-loop)", program.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ns = stdout
        .split_whitespace()
        .find_map(|f| f.strip_prefix("cpu_ns_per_read="))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("kaws-sdk-loop printed {stdout:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// The Bucket statuses the running kaws has written.
async fn bucket_status_writes(env: &Env) -> anyhow::Result<u64> {
    Ok(sum_samples(
        &env.kaws.metrics().await?,
        "kaws_status_writes_total",
        |l| l.contains("kind=\"Bucket\"") && l.contains("outcome=\"written\""),
    ))
}

/// How many of the populated Buckets (`p<i>`) the running kaws has reconciled at least once,
/// from its log (a debug line per reconcile, written once the reconcile is done): a count of
/// reconciles would take in the other kinds' resyncs, which go on all the while.
fn populated_reconciled(env: &Env) -> usize {
    let log = env.kaws.logs();
    let names: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains("\"message\":\"reconciled\""))
        .filter_map(|l| l.split("\"object\":\"Bucket/").nth(1))
        .filter_map(|rest| rest.split('"').next()?.rsplit('/').next())
        .filter(|name| {
            name.strip_prefix('p')
                .is_some_and(|i| i.parse::<usize>().is_ok())
        })
        .collect();
    names.len()
}

/// Paused Buckets `from..to`, applied server-side (so they carry `managedFields`) with the
/// `last-applied-configuration` annotation `kubectl apply` leaves.
async fn populate(env: &Env, from: usize, to: usize) -> anyhow::Result<()> {
    let api = env.api::<Bucket>();
    let results: Vec<kube::Result<Bucket>> = futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("p{i}");
                let app = format!("app-{}", i % 50);
                let spec = json!({
                    "bucketName": format!("kaws-population-{i}"),
                    "versioning": "Enabled",
                    "tags": {"team": "platform", "cost-center": "1234", "app": app},
                    "lifecycleRules": [{"id": "expire", "expirationDays": 30}],
                });
                let applied = json!({
                    "apiVersion": "s3.kaws.io/v1alpha1",
                    "kind": "Bucket",
                    "metadata": {"name": name, "annotations": {"kaws.io/paused": "true"}},
                    "spec": spec,
                });
                let object = json!({
                    "apiVersion": "s3.kaws.io/v1alpha1",
                    "kind": "Bucket",
                    "metadata": {
                        "name": name,
                        "labels": {"app": app},
                        "annotations": {
                            "kaws.io/paused": "true",
                            "kubectl.kubernetes.io/last-applied-configuration": applied.to_string(),
                        },
                    },
                    "spec": spec,
                });
                api.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(object),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

struct Population {
    objects: usize,
    rss: f64,
    fresh_rss: f64,
    startup: Duration,
    /// From the fresh start until it had reconciled every object once.
    reconciled: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sizes = sizes();
    let full = std::env::var("BENCH").as_deref() == Ok("full");
    let mut env = Env::start_with(EnvOptions {
        resync_period: format!("{}s", sizes.resync.as_secs()),
        // Connections kept open, as AWS keeps them (moto closes each after one answer).
        moto_keep_alive: true,
        // The log filter kaws runs with: the chart's default (`info`) unless `BENCH_LOG` says
        // otherwise; a debug line per reconcile is a cost of its own (docs/performance.md).
        extra_env: BTreeMap::from([(
            "RUST_LOG".to_string(),
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "info".to_string()),
        )]),
        ..Default::default()
    })
    .await?;
    let binary = kaws_e2e::kaws::binary()?;
    let size_mib = std::fs::metadata(&binary)?.len() as f64 / 1024.0 / 1024.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_mib(env.kaws.pid());
    let idle_anon = status_mib(env.kaws.pid(), "RssAnon:");

    warm_up(&env).await?;
    let kinds = vec![
        bucket(&env, sizes.buckets).await?,
        table(&env, sizes.tables).await?,
        dbinstance(&env, sizes.dbinstances).await?,
        instance(&env, sizes.instances).await?,
        function(&env, sizes.functions).await?,
    ];
    let objects: usize = kinds.iter().map(|k| k.n).sum();
    let steady = steady(&env, sizes.resync, sizes.lone_reads).await?;
    let dir = kaws_e2e::moto::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    // The log of the kaws that converged the kinds and ran the steady state (the memory runs
    // restart it).
    std::fs::write(dir.join("kaws-kinds.log"), env.kaws.logs())?;

    let mut populations = Vec::new();
    let mut have = 0;
    for &m in &sizes.populations {
        let written = bucket_status_writes(&env).await?;
        populate(&env, have, m).await?;
        // Every new object reconciled once (paused: no AWS call), which writes its status
        // (`Synced=False`, `Paused`); the settled objects of the kinds write none.
        let deadline = Instant::now() + Duration::from_secs(900);
        while bucket_status_writes(&env).await? - written < (m - have) as u64 {
            anyhow::ensure!(Instant::now() < deadline, "{m} objects not reconciled");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        have = m;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = rss_mib(env.kaws.pid());
        env.kaws.kill()?;
        let start = Instant::now();
        // Its debug line per reconcile tells which objects it reconciled.
        env.kaws = env
            .start_kaws(&BTreeMap::from([(
                "RUST_LOG".to_string(),
                kaws_e2e::kaws::DEBUG_LOG.to_string(),
            )]))
            .await?;
        let startup = start.elapsed();
        // Measured once the fresh kaws has reconciled every object (those it found settled are
        // spread over a resync period), so its memory includes that work.
        while populated_reconciled(&env) < m {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{m} objects not reconciled after a restart"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let reconciled = start.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let fresh_rss = rss_mib(env.kaws.pid());
        println!(
            "{m} objects: RSS {rss:.1} MiB, fresh start {fresh_rss:.1} MiB, ready in {:.2} s, \
             every object reconciled in {:.2} s",
            startup.as_secs_f64(),
            reconciled.as_secs_f64()
        );
        populations.push(Population {
            objects: m,
            rss,
            fresh_rss,
            startup,
            reconciled,
        });
    }

    // `BENCH_HOLD=600`: keep the last kaws running that many seconds, to attach a profiler.
    if let Some(secs) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("holding kaws (pid {}) for {secs} s", env.kaws.pid());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    // Last, so that nothing above is measured after it: the kind runs' objects changed, then
    // deleted, by the kaws running now. A kind that fails here fails the bench, after the
    // figures are printed and written.
    let mut churns = Vec::new();
    let mut churn_errors = Vec::new();
    for result in [
        churn::<Bucket>(&env, &sizes, "Bucket", "s3", "b", sizes.buckets).await,
        churn::<Table>(&env, &sizes, "Table", "dynamodb", "t", sizes.tables).await,
        churn::<DBInstance>(&env, &sizes, "DBInstance", "rds", "d", sizes.dbinstances).await,
        churn::<Instance>(&env, &sizes, "Instance", "ec2", "i", sizes.instances).await,
        churn::<Function>(&env, &sizes, "Function", "lambda", "f", sizes.functions).await,
    ] {
        match result {
            Ok(c) => churns.push(c),
            Err(e) => churn_errors.push(format!("{e:#}")),
        }
    }
    println!();
    println!(
        "kaws bench ({}): {} ({size_mib:.1} MiB)",
        if full { "full" } else { "quick" },
        binary.display()
    );
    println!();
    println!(
        "| kind | N | kaws: apply to all Ready | plain SDK loop, same calls | ratio | AWS calls per create | Kubernetes calls per create |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut json_kinds = Vec::new();
    for k in &kinds {
        let ratio = k.kaws.as_secs_f64() / k.baseline.as_secs_f64().max(0.001);
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {ratio:.2}× | {:.1} | {:.1} |",
            k.kind,
            k.n,
            k.kaws.as_secs_f64(),
            k.baseline.as_secs_f64(),
            k.calls_per_create,
            k.kube_calls_per_create
        );
        json_kinds.push(json!({
            "kind": k.kind, "n": k.n, "kaws_seconds": k.kaws.as_secs_f64(),
            "baseline_seconds": k.baseline.as_secs_f64(), "ratio": ratio,
            "calls_per_create": k.calls_per_create,
            "kube_calls_per_create": k.kube_calls_per_create, "not_replayed": k.not_replayed,
        }));
    }
    for k in kinds.iter().filter(|k| !k.not_replayed.is_empty()) {
        println!(
            "({}: not replayed by the baseline: {:?})",
            k.kind, k.not_replayed
        );
    }
    println!();
    println!(
        "| steady state: {objects} objects, resync {}s, 3 periods | value |",
        sizes.resync.as_secs()
    );
    println!("|---|---|");
    println!("| reconciles | {} |", steady.reconciles);
    println!(
        "| AWS reads per object per resync | {:.2} |",
        steady.reads_per_reconcile()
    );
    println!("| AWS writes | {} |", steady.writes);
    println!("| status writes | {} |", steady.status_writes);
    println!(
        "| CPU per no-op reconcile (its AWS reads included) | {:.2} ms |",
        steady.cpu_per_reconcile.as_secs_f64() * 1000.0
    );
    println!(
        "| CPU per AWS read, plain SDK loop: a Bucket's 7 reads at once, 4 buckets at a time | {:.3} ms |",
        steady.sdk_cpu_per_read.as_secs_f64() * 1000.0
    );
    println!(
        "| CPU per AWS read, plain SDK loop: one read at a time, at the steady state's pace | {:.3} ms |",
        steady.sdk_cpu_per_lone_read.as_secs_f64() * 1000.0
    );
    println!(
        "| kaws' own CPU per no-op reconcile (less its reads at the loop's cost, 7 at once) | at most {:.2} ms |",
        steady.own_cpu_ms()
    );
    println!();
    println!("| memory and start-up | value |");
    println!("|---|---|");
    println!(
        "| RSS idle, every kind, no object | {idle:.1} MiB: {idle_anon:.1} MiB allocated (RssAnon), {:.1} MiB code pages mapped from the binary (RssFile) |",
        idle - idle_anon
    );
    for p in &populations {
        println!(
            "| RSS with {} more objects (managedFields, last-applied) | {:.1} MiB; a fresh start with them, once it reconciled each: {:.1} MiB |",
            p.objects, p.rss, p.fresh_rss
        );
        println!(
            "| start-up to ready with {} objects | {:.2} s |",
            p.objects,
            p.startup.as_secs_f64()
        );
        println!(
            "| start-up to every object reconciled once (settled ones spread over the resync period) | {:.2} s |",
            p.reconciled.as_secs_f64()
        );
    }
    println!();
    println!(
        "| kind | N | update (a tag added): all Ready again | AWS calls per update | delete: all gone | AWS calls per delete |"
    );
    println!("|---|---|---|---|---|---|");
    for c in &churns {
        println!(
            "| {} | {} | {:.2} s | {:.1} | {:.2} s | {:.1} |",
            c.kind,
            c.n,
            c.update.as_secs_f64(),
            c.update_calls,
            c.delete.as_secs_f64(),
            c.delete_calls
        );
    }
    for e in &churn_errors {
        println!("(churn failed: {e})");
    }
    let report = json!({
        "variant": if full { "full" } else { "quick" },
        "binary": binary.display().to_string(),
        "binary_mib": size_mib,
        "kinds": json_kinds,
        "steady": {
            "objects": objects, "reconciles": steady.reconciles, "reads": steady.reads,
            "writes": steady.writes, "status_writes": steady.status_writes,
            "cpu_ms_per_reconcile": steady.cpu_per_reconcile.as_secs_f64() * 1000.0,
            "sdk_cpu_ms_per_read": steady.sdk_cpu_per_read.as_secs_f64() * 1000.0,
            "sdk_cpu_ms_per_lone_read": steady.sdk_cpu_per_lone_read.as_secs_f64() * 1000.0,
            "own_cpu_ms_per_reconcile": steady.own_cpu_ms(),
        },
        "rss_idle_mib": idle,
        "rss_idle_anon_mib": idle_anon,
        "populations": populations.iter().map(|p| json!({
            "objects": p.objects, "rss_mib": p.rss, "fresh_rss_mib": p.fresh_rss,
            "startup_seconds": p.startup.as_secs_f64(),
            "reconciled_seconds": p.reconciled.as_secs_f64(),
        })).collect::<Vec<Value>>(),
        "churn_errors": &churn_errors,
        "churn": churns.iter().map(|c| json!({
            "kind": c.kind, "n": c.n,
            "update_seconds": c.update.as_secs_f64(), "update_calls": c.update_calls,
            "delete_seconds": c.delete.as_secs_f64(), "delete_calls": c.delete_calls,
        })).collect::<Vec<Value>>(),
    });
    // The last kaws' log (a debug line per reconcile, with its duration).
    std::fs::write(dir.join("kaws.log"), env.kaws.logs())?;
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!();
    println!("JSON: {}", dir.join("bench.json").display());
    // The targets that hold on any machine: nothing written when nothing changed.
    anyhow::ensure!(steady.writes == 0, "AWS writes in steady state");
    anyhow::ensure!(steady.status_writes == 0, "status writes in steady state");
    anyhow::ensure!(churn_errors.is_empty(), "churn: {churn_errors:?}");
    Ok(())
}
