//! Support for the chaos suite (`tests/chaos.rs`, `make chaos`): manifests for every kind,
//! fault-tolerant waiting on many objects, an inventory of what exists in moto, the leak and
//! duplicate counts derived from it, and the figures table and JSON report.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams},
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    env::{REGION, condition},
    kubectl,
    moto::workspace_root,
    unique_name,
};

/// `KAWS_CHAOS=full` selects the long variant (more objects, kills and longer windows); anything
/// else the bounded one that runs in CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scale {
    Bounded,
    Full,
}

impl Scale {
    pub fn from_env() -> Self {
        match std::env::var("KAWS_CHAOS").as_deref() {
            Ok("full") => Scale::Full,
            _ => Scale::Bounded,
        }
    }

    /// `bounded` or `full`, by scale.
    pub fn pick<T>(self, bounded: T, full: T) -> T {
        match self {
            Scale::Bounded => bounded,
            Scale::Full => full,
        }
    }
}

/// The managed kinds, in the order figures list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Bucket,
    Table,
    DBInstance,
    Instance,
    Function,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Bucket,
        Kind::Table,
        Kind::DBInstance,
        Kind::Instance,
        Kind::Function,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bucket => "Bucket",
            Kind::Table => "Table",
            Kind::DBInstance => "DBInstance",
            Kind::Instance => "Instance",
            Kind::Function => "Function",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Bucket => "s3.kaws.io",
            Kind::Table => "dynamodb.kaws.io",
            Kind::DBInstance => "rds.kaws.io",
            Kind::Instance => "ec2.kaws.io",
            Kind::Function => "lambda.kaws.io",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Bucket => "buckets",
            Kind::Table => "tables",
            Kind::DBInstance => "dbinstances",
            Kind::Instance => "instances",
            Kind::Function => "functions",
        }
    }

    /// `<plural>.<group>`, the unambiguous kubectl resource name.
    pub fn resource(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group(), "v1alpha1", self.name()),
            self.plural(),
        )
    }

    /// The spec field naming the AWS resource (Instance ids are assigned by AWS).
    fn identity_field(self) -> Option<&'static str> {
        match self {
            Kind::Bucket => Some("bucketName"),
            Kind::Table => Some("tableName"),
            Kind::DBInstance => Some("dbInstanceIdentifier"),
            Kind::Instance => None,
            Kind::Function => Some("functionName"),
        }
    }
}

/// AWS resources the objects refer to, created in moto directly before kaws starts work.
#[derive(Clone, Debug)]
pub struct Fixtures {
    /// An AMI moto knows.
    pub ami: String,
    /// An IAM role Lambda can assume.
    pub role: String,
}

impl Fixtures {
    pub async fn create(aws: &aws_config::SdkConfig) -> anyhow::Result<Fixtures> {
        let ami = crate::fixtures::moto_ami(aws).await?;
        let role = crate::fixtures::lambda_role(aws, "chaos-role").await?;
        Ok(Fixtures { ami, role })
    }
}

/// One object of the suite: where it lives and what it asks AWS for.
#[derive(Clone, Debug)]
pub struct Obj {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The AWS name (bucket, table, DB identifier, function); empty for an Instance.
    pub aws_name: String,
    /// Extra `spec` lines (YAML, indented by the caller's two spaces).
    pub extra: Vec<String>,
    pub annotations: Vec<String>,
}

impl Obj {
    /// An object of `kind` with a fresh AWS name derived from `name`.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Obj {
        let aws_name = match kind {
            Kind::Instance => String::new(),
            _ => unique_name(name),
        };
        Obj {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            aws_name,
            extra: Vec::new(),
            annotations: Vec::new(),
        }
    }

    pub fn with(mut self, line: impl Into<String>) -> Obj {
        self.extra.push(line.into());
        self
    }

    /// `namespace/name` of kind, for messages.
    pub fn key(&self) -> String {
        format!("{} {}/{}", self.kind.name(), self.namespace, self.name)
    }

    /// The manifest, with the namespace in it.
    pub fn manifest(&self, fx: &Fixtures) -> String {
        let mut y = format!(
            "apiVersion: {}/v1alpha1\nkind: {}\nmetadata:\n  name: {}\n  namespace: {}\n",
            self.kind.group(),
            self.kind.name(),
            self.name,
            self.namespace
        );
        if !self.annotations.is_empty() {
            y.push_str("  annotations:\n");
            for a in &self.annotations {
                y.push_str(&format!("    {a}\n"));
            }
        }
        y.push_str("spec:\n");
        let base = match self.kind {
            Kind::Bucket => format!("bucketName: {}", self.aws_name),
            Kind::Table => format!(
                "tableName: {}\n  attributeDefinitions: [{{attributeName: id, attributeType: S}}]\n  keySchema: [{{attributeName: id, keyType: HASH}}]",
                self.aws_name
            ),
            Kind::DBInstance => format!(
                "dbInstanceIdentifier: {}\n  engine: postgres\n  dbInstanceClass: db.t4g.micro\n  masterUsername: app\n  skipFinalSnapshot: true",
                self.aws_name
            ),
            Kind::Instance => format!("imageId: {}\n  instanceType: t3.micro", fx.ami),
            Kind::Function => format!(
                "functionName: {}\n  runtime: python3.12\n  handler: app.handler\n  role: {}",
                self.aws_name, fx.role
            ),
        };
        y.push_str(&format!("  {base}\n"));
        let has = |prefix: &str| self.extra.iter().any(|l| l.starts_with(prefix));
        if self.kind == Kind::DBInstance && !has("allocatedStorage") {
            y.push_str("  allocatedStorage: 20\n");
        }
        if self.kind == Kind::DBInstance && !has("writeConnectionSecretTo") {
            y.push_str(&format!(
                "  writeConnectionSecretTo: {{name: {}-conn}}\n",
                self.name
            ));
        }
        if self.kind == Kind::Function && !has("code") {
            let zip = zip_file("app.py", b"def handler(event, context):\n    return 1\n");
            y.push_str(&format!(
                "  code: {{zipFile: {}}}\n",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, zip)
            ));
        }
        for line in &self.extra {
            y.push_str(&format!("  {line}\n"));
        }
        y
    }
}

/// A zip archive holding one stored (uncompressed) file, as Lambda expects `zipFile` to be.
pub fn zip_file(name: &str, content: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let crc = crc32(content);
    let (size, name_len) = (content.len() as u32, name.len() as u16);
    let mut out = Vec::new();
    // Local file header: version 1.0, no flags, stored, no time.
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    out.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(content);
    let central = out.len() as u32;
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&[20, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    // Extra, comment, disk, internal attributes; external attributes (0644 file); offset 0.
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let central_len = out.len() as u32 - central;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// `kubectl apply -f` of the objects' manifests as one file (namespaces are in the manifests).
pub fn apply(kubeconfig: &Path, dir: &Path, objs: &[&Obj], fx: &Fixtures) -> anyhow::Result<()> {
    let yaml: Vec<String> = objs.iter().map(|o| o.manifest(fx)).collect();
    let path = dir.join(format!("{}.yaml", unique_name("chaos")));
    std::fs::write(&path, yaml.join("---\n"))?;
    let out = kubectl::run(kubeconfig, &["apply", "-f", &path.display().to_string()]);
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn api(client: &kube::Client, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

/// The object as JSON, `None` when it does not exist; errors (an API server under fault
/// injection) are retried a few times before they count.
pub async fn get(client: &kube::Client, obj: &Obj) -> anyhow::Result<Option<Value>> {
    let mut last = None;
    for _ in 0..5 {
        // Bounded: a request the server never answers must not hang the scenario (the kube
        // client's own read timeout is 295 s).
        let objects = api(client, obj.kind, &obj.namespace);
        match tokio::time::timeout(Duration::from_secs(10), objects.get_opt(&obj.name)).await {
            Ok(Ok(o)) => return Ok(o.map(|o| serde_json::to_value(o).unwrap_or_default())),
            Ok(Err(e)) => last = Some(anyhow::Error::from(e)),
            Err(_) => {
                eprintln!("chaos: GET {} not answered within 10s", obj.key());
                last = Some(anyhow::anyhow!("GET {} not answered within 10s", obj.key()))
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("get failed")))
}

/// Starts deleting the objects (no waiting); missing objects are fine.
pub async fn delete(client: &kube::Client, objs: &[&Obj]) {
    for o in objs {
        for _ in 0..5 {
            match api(client, o.kind, &o.namespace)
                .delete(&o.name, &DeleteParams::default())
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

/// Ready=True for the current generation.
pub fn is_ready(o: &Value) -> bool {
    condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        && o["status"]["observedGeneration"] == o["metadata"]["generation"]
}

/// Polls the objects until `done` holds for every one (given `None` when the object is
/// gone) or `timeout` passes. Returns the time it took and, for the objects for which it never
/// held, their key with their last conditions.
pub async fn wait_all(
    client: &kube::Client,
    objs: &[&Obj],
    timeout: Duration,
    done: impl Fn(Option<&Value>) -> bool,
) -> (Duration, Vec<String>) {
    let start = Instant::now();
    let mut pending: Vec<(&Obj, Option<Value>)> = objs.iter().map(|o| (*o, None)).collect();
    loop {
        let mut still = Vec::new();
        for (o, last) in pending {
            match get(client, o).await {
                Ok(v) if done(v.as_ref()) => {}
                Ok(v) => still.push((o, v)),
                Err(_) => still.push((o, last)),
            }
        }
        pending = still;
        if pending.is_empty() || start.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let describe = |o: &Obj, v: &Option<Value>| match v {
        None => format!("{} (gone)", o.key()),
        Some(v) => {
            let finalizers = v["metadata"]["finalizers"].as_array().map_or(0, Vec::len);
            let deleting = v["metadata"]["deletionTimestamp"].is_string();
            let [r, s] = ["Ready", "Synced"].map(|t| {
                let (status, reason, message) = cond(v, t);
                format!("{t}={status} {reason}: {}", truncate(&message, 160))
            });
            format!(
                "{}{} ({r}; {s})",
                o.key(),
                if deleting {
                    format!(" deleting with {finalizers} finalizer(s)")
                } else {
                    String::new()
                }
            )
        }
    };
    (
        start.elapsed(),
        pending.iter().map(|(o, v)| describe(o, v)).collect(),
    )
}

pub async fn wait_ready(
    client: &kube::Client,
    objs: &[&Obj],
    timeout: Duration,
) -> (Duration, Vec<String>) {
    wait_all(client, objs, timeout, |o| o.is_some_and(is_ready)).await
}

pub async fn wait_gone(
    client: &kube::Client,
    objs: &[&Obj],
    timeout: Duration,
) -> (Duration, Vec<String>) {
    wait_all(client, objs, timeout, |o| o.is_none()).await
}

/// Condition `type_` of the object, as (status, reason, message).
pub fn cond(o: &Value, type_: &str) -> (String, String, String) {
    let c = condition(o, type_);
    let s = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("status"), s("reason"), s("message"))
}

/// Events (reason, type, note) about object `name` of kind in `namespace`.
pub async fn events(
    client: &kube::Client,
    namespace: &str,
    kind: Kind,
    name: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for e in api.list(&ListParams::default()).await?.items {
        let about = e.regarding.as_ref();
        if about.and_then(|r| r.name.as_deref()) == Some(name)
            && about.and_then(|r| r.kind.as_deref()) == Some(kind.name())
        {
            // A series folds repeats into one Event; count each occurrence.
            let n = e.series.as_ref().map_or(1, |s| s.count.max(1));
            for _ in 0..n {
                out.push((
                    e.reason.clone().unwrap_or_default(),
                    e.type_.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                ));
            }
        }
    }
    Ok(out)
}

/// One AWS resource found in moto.
#[derive(Clone, Debug, Serialize)]
pub struct AwsResource {
    pub kind: Kind,
    pub id: String,
    pub tags: BTreeMap<String, String>,
    /// False for EC2 instances that are terminated or terminating.
    pub live: bool,
}

/// Every bucket, table, DB instance, function and EC2 instance (with terminated ones) in
/// moto, read directly (never through the fault proxy).
pub async fn inventory(aws: &aws_config::SdkConfig) -> anyhow::Result<Vec<AwsResource>> {
    let mut out = Vec::new();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .build(),
    );
    for b in s3.list_buckets().send().await?.buckets() {
        let name = b.name().unwrap_or_default().to_string();
        let tags = match s3.get_bucket_tagging().bucket(&name).send().await {
            Ok(t) => t
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        out.push(AwsResource {
            kind: Kind::Bucket,
            id: name,
            tags,
            live: true,
        });
    }
    let ddb = aws_sdk_dynamodb::Client::new(aws);
    for t in ddb.list_tables().send().await?.table_names() {
        let arn = ddb
            .describe_table()
            .table_name(t)
            .send()
            .await?
            .table()
            .and_then(|d| d.table_arn())
            .unwrap_or_default()
            .to_string();
        let tags = ddb
            .list_tags_of_resource()
            .resource_arn(&arn)
            .send()
            .await?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        out.push(AwsResource {
            kind: Kind::Table,
            id: t.clone(),
            tags,
            live: true,
        });
    }
    let rds = aws_sdk_rds::Client::new(aws);
    for d in rds.describe_db_instances().send().await?.db_instances() {
        let arn = d.db_instance_arn().unwrap_or_default();
        let tags = rds
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await?
            .tag_list()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.push(AwsResource {
            kind: Kind::DBInstance,
            id: d.db_instance_identifier().unwrap_or_default().to_string(),
            tags,
            live: true,
        });
    }
    let lambda = aws_sdk_lambda::Client::new(aws);
    for f in lambda.list_functions().send().await?.functions() {
        let tags = lambda
            .list_tags()
            .resource(f.function_arn().unwrap_or_default())
            .send()
            .await?
            .tags()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.push(AwsResource {
            kind: Kind::Function,
            id: f.function_name().unwrap_or_default().to_string(),
            tags,
            live: true,
        });
    }
    let ec2 = aws_sdk_ec2::Client::new(aws);
    for r in ec2.describe_instances().send().await?.reservations() {
        for i in r.instances() {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            out.push(AwsResource {
                kind: Kind::Instance,
                id: i.instance_id().unwrap_or_default().to_string(),
                tags: i
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
                live: !matches!(state.as_str(), "terminated" | "shutting-down"),
            });
        }
    }
    Ok(out)
}

pub const OWNER_TAG: &str = "kaws.io/owner";
pub const UID_TAG: &str = "kaws.io/uid";

/// Resources still there (EC2: not terminated) — after every object was deleted, each one is
/// a leak, whether tagged (kaws lost track of it) or not (created, then never tagged).
pub fn leaked(inv: &[AwsResource]) -> Vec<String> {
    inv.iter()
        .filter(|r| r.live)
        .map(|r| {
            format!(
                "{} {} (owner {:?})",
                r.kind.name(),
                r.id,
                r.tags.get(OWNER_TAG)
            )
        })
        .collect()
}

/// More than one resource (in any state, terminated ones included) carrying one object's
/// `kaws.io/uid`: each extra is a duplicate. Untagged EC2 instances are duplicates too: kaws
/// launches with its tags, so an untagged one was never meant to exist.
pub fn duplicated(inv: &[AwsResource]) -> Vec<String> {
    let mut by_uid: BTreeMap<(Kind, String), Vec<&AwsResource>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in inv {
        match r.tags.get(UID_TAG) {
            Some(uid) => by_uid.entry((r.kind, uid.clone())).or_default().push(r),
            None if r.kind == Kind::Instance => {
                out.push(format!("untagged EC2 instance {}", r.id));
            }
            None => {}
        }
    }
    for ((kind, uid), rs) in by_uid {
        if rs.len() > 1 {
            let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
            out.push(format!("{} uid {uid}: {}", kind.name(), ids.join(", ")));
        }
    }
    out
}

/// Figures of one scenario: the four counts every scenario must keep at zero, free-form
/// figures, and what failed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub scenario: String,
    pub ok: bool,
    pub wall_s: f64,
    pub leaked: u64,
    pub duplicated: u64,
    pub foreign_modified: u64,
    pub stuck: u64,
    /// Other failing counts of this scenario (must be zero too), e.g. loops.
    pub other_bad: BTreeMap<String, u64>,
    /// Informational figures (times, call counts, ratios).
    pub figures: BTreeMap<String, Value>,
    /// Why it failed, one line each, with details.
    pub failures: Vec<String>,
}

impl Figures {
    pub fn new(scenario: &str) -> Figures {
        Figures {
            scenario: scenario.to_string(),
            ..Default::default()
        }
    }

    pub fn fig(&mut self, key: &str, value: impl Into<Value>) {
        self.figures.insert(key.to_string(), value.into());
    }

    pub fn leaked(&mut self, what: Vec<String>) {
        self.leaked += what.len() as u64;
        self.note("leaked", what);
    }

    pub fn duplicated(&mut self, what: Vec<String>) {
        self.duplicated += what.len() as u64;
        self.note("duplicated", what);
    }

    pub fn foreign(&mut self, what: Vec<String>) {
        self.foreign_modified += what.len() as u64;
        self.note("foreign-modified", what);
    }

    pub fn stuck(&mut self, what: Vec<String>) {
        self.stuck += what.len() as u64;
        self.note("stuck", what);
    }

    /// Another count that must be zero, e.g. `loops` or `mislabelled-throttles`.
    pub fn bad(&mut self, key: &str, what: Vec<String>) {
        if !what.is_empty() {
            *self.other_bad.entry(key.to_string()).or_default() += what.len() as u64;
        }
        self.note(key, what);
    }

    fn note(&mut self, key: &str, what: Vec<String>) {
        for w in what {
            self.failures.push(format!("{key}: {w}"));
        }
    }

    /// Closes the figures: ok when every count is zero and nothing else failed.
    pub fn finish(mut self, started: Instant) -> Figures {
        self.wall_s = round(started.elapsed().as_secs_f64(), 1);
        self.ok = self.failures.is_empty();
        self
    }

    /// A scenario that ended with an error (its own assertion or the harness).
    pub fn errored(scenario: &str, error: String, started: Instant) -> Figures {
        let mut f = Figures::new(scenario);
        f.failures.push(format!("error: {error}"));
        f.finish(started)
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// The figures as a compact table.
pub fn table(all: &[Figures], scale: Scale, wall: Duration) -> String {
    let mut out = format!(
        "\nchaos suite ({scale:?}, {:.0}s wall)\n{:<16} {:<5} {:>6} {:>4} {:>7} {:>5} {:>5}  figures\n",
        wall.as_secs_f64(),
        "scenario",
        "ok",
        "leaked",
        "dup",
        "foreign",
        "stuck",
        "other"
    );
    for f in all {
        let figures: Vec<String> = f
            .figures
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect();
        out.push_str(&format!(
            "{:<16} {:<5} {:>6} {:>4} {:>7} {:>5} {:>5}  {}\n",
            f.scenario,
            if f.ok { "ok" } else { "FAIL" },
            f.leaked,
            f.duplicated,
            f.foreign_modified,
            f.stuck,
            f.other_bad.values().sum::<u64>(),
            figures.join(" ")
        ));
    }
    for f in all.iter().filter(|f| !f.ok) {
        out.push_str(&format!("\n{} failed:\n", f.scenario));
        for line in f.failures.iter().take(25) {
            out.push_str(&format!("  - {}\n", truncate(line, 400)));
        }
        if f.failures.len() > 25 {
            out.push_str(&format!("  … {} more\n", f.failures.len() - 25));
        }
    }
    out
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// `target/chaos/report.json` (or under `CARGO_TARGET_DIR`).
pub fn report_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("chaos/report.json")
}

pub fn write_report(all: &[Figures], scale: Scale, wall: Duration) -> anyhow::Result<PathBuf> {
    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "scale": scale,
        "region": REGION,
        "wall_s": round(wall.as_secs_f64(), 1),
        "ok": all.iter().all(|f| f.ok),
        "scenarios": all,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    Ok(path)
}

/// Sum of a counter's samples (from kaws' /metrics text) whose labels pass `filter`.
pub fn metric(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> u64 {
    crate::kaws::sum_samples(text, name, filter)
}

/// The AWS name of a kind's object, from its spec (Instances: `status.instanceId`).
pub fn aws_name_of(kind: Kind, o: &Value) -> String {
    match kind.identity_field() {
        Some(f) => o["spec"][f].as_str().unwrap_or_default().to_string(),
        None => o["status"]["instanceId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}
