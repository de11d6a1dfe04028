//! One isolated end-to-end environment per test: API server (the repository's test server, or
//! the cluster in `KAWS_TEST_KUBECONFIG`), moto, and the real `kaws` binary, with a fresh
//! namespace and cluster id so that tests never see each other's objects.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::NamespaceResourceScope;
use kaws::resources::bucket::Bucket;
use kaws_testserver::{TestServer, workspace_crds_dir};
use kube::{Api, Resource, ResourceExt, api::ListParams};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    cluster,
    fault_proxy::{FaultProxy, Faults},
    kaws::{KAWS_TOKEN, Kaws, KawsOptions, RECORD_DIR_ENV},
    kubectl,
    moto::Moto,
};

pub const REGION: &str = "eu-west-1";

/// Points the suite at an external cluster (its kubeconfig) instead of the test API server.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "KAWS_TEST_KUBECONFIG";

/// A name no other test uses, valid as a namespace, object and bucket name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Options for [`Env::start_with`].
#[derive(Clone, Debug)]
pub struct EnvOptions {
    pub resync_period: String,
    pub extra_env: BTreeMap<String, String>,
    /// Run kaws with `--leader-election`, this lease duration and the Lease `kaws` in the
    /// test's namespace (see [`Env::start_kaws`] for more replicas).
    pub leader_election: Option<Duration>,
    /// Route kaws' AWS calls through a fault proxy (`tests/e2e/fault_proxy.py`) in front of
    /// moto, starting with these rates ([`Env::proxy`] changes them). The test's own SDK
    /// clients ([`Env::aws`]) always talk to moto directly.
    pub aws_faults: Option<Faults>,
    /// Let moto keep connections open (`make bench`: see `tests/e2e/moto_server.py`).
    pub moto_keep_alive: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            resync_period: "10m".to_string(),
            extra_env: BTreeMap::new(),
            leader_election: None,
            aws_faults: None,
            moto_keep_alive: false,
        }
    }
}

pub struct Env {
    // Field order is drop order: kaws stops before the servers it talks to.
    pub kaws: Kaws,
    /// The fault proxy between kaws and moto, when [`EnvOptions::aws_faults`] is set.
    pub proxy: Option<FaultProxy>,
    pub moto: Moto,
    pub server: Option<TestServer>,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub s3: aws_sdk_s3::Client,
    /// SDK configuration pointing at this test's moto, for building any service's client.
    pub aws: aws_config::SdkConfig,
    pub namespace: String,
    pub cluster_id: String,
    /// The kubeconfig kaws uses: against the test server it carries [`KAWS_TOKEN`], so that
    /// kaws' requests are recorded apart from the test's.
    pub kaws_kubeconfig: PathBuf,
    pub opts: EnvOptions,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> anyhow::Result<Env> {
        Self::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(opts: EnvOptions) -> anyhow::Result<Env> {
        let dir = tempfile::Builder::new().prefix("kaws-e2e-").tempdir()?;
        let (server, kubeconfig) = match std::env::var_os(EXTERNAL_KUBECONFIG_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                cluster::install_crds_once(&path).await?;
                (None, path)
            }
            None => {
                let server = TestServer::start().await?;
                server.install_crds_from_dir(&workspace_crds_dir()).await?;
                let path = server.kubeconfig_path().to_path_buf();
                (Some(server), path)
            }
        };
        let client = client_for(&kubeconfig).await?;
        let namespace = unique_name("e2e");
        kubectl::ok(&kubeconfig, &["create", "namespace", &namespace]);
        let cluster_id = unique_name("cluster");

        let moto = Moto::start_with(dir.path(), opts.moto_keep_alive).await?;
        let proxy = match &opts.aws_faults {
            Some(faults) => Some(
                FaultProxy::start(&moto.endpoint, dir.path(), faults, rand_seed(), false).await?,
            ),
            None => None,
        };
        let kaws_endpoint = proxy
            .as_ref()
            .map_or(moto.endpoint.clone(), |p| p.endpoint.clone());
        let kaws_kubeconfig = match &server {
            Some(server) => {
                let path = dir.path().join("kaws-kubeconfig");
                server.kubeconfig_with_token(&path, KAWS_TOKEN)?;
                path
            }
            None => kubeconfig.clone(),
        };
        let kaws = Kaws::start(
            kaws_options(
                &kaws_kubeconfig,
                &kaws_endpoint,
                &cluster_id,
                &namespace,
                &opts,
                &BTreeMap::new(),
            ),
            dir.path(),
        )
        .await?;
        let aws = aws_config_for(&moto.endpoint);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        Ok(Env {
            kaws,
            proxy,
            moto,
            server,
            kubeconfig,
            client,
            s3,
            aws,
            namespace,
            cluster_id,
            kaws_kubeconfig,
            opts,
            dir,
        })
    }

    /// Starts one more kaws with this environment's settings plus `extra_env` (e.g. a second
    /// replica when leader election is on). The caller owns and stops it.
    pub async fn start_kaws(&self, extra_env: &BTreeMap<String, String>) -> anyhow::Result<Kaws> {
        self.start_kaws_via(self.kaws_aws_endpoint(), extra_env)
            .await
    }

    /// The AWS endpoint kaws uses: the fault proxy when there is one, else moto.
    pub fn kaws_aws_endpoint(&self) -> &str {
        self.proxy
            .as_ref()
            .map_or(self.moto.endpoint.as_str(), |p| p.endpoint.as_str())
    }

    /// [`Env::start_kaws`] with another AWS endpoint, e.g. a fault proxy of its own.
    pub async fn start_kaws_via(
        &self,
        aws_endpoint: &str,
        extra_env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Kaws> {
        Kaws::start(
            kaws_options(
                &self.kaws_kubeconfig,
                aws_endpoint,
                &self.cluster_id,
                &self.namespace,
                &self.opts,
                extra_env,
            ),
            self.dir.path(),
        )
        .await
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        kubectl::run(&self.kubeconfig, args)
    }

    /// kubectl in the test's namespace; panics on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        kubectl::ok(&self.kubeconfig, &all)
    }

    /// `kubectl apply -f` of a manifest in the test's namespace.
    pub fn apply(&self, yaml: &str) -> std::process::Output {
        let path = self
            .dir
            .path()
            .join(format!("{}.yaml", unique_name("manifest")));
        std::fs::write(&path, yaml).expect("write manifest");
        let path = path.display().to_string();
        kubectl::run(
            &self.kubeconfig,
            &["-n", &self.namespace, "apply", "-f", &path],
        )
    }

    pub fn apply_ok(&self, yaml: &str) {
        let out = self.apply(yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn buckets(&self) -> Api<Bucket> {
        self.api()
    }

    /// The typed API of kind `K` in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Waits until `check` holds for object `name` of kind `K` (as JSON), or fails with its
    /// last state and the tail of the kaws log.
    pub async fn wait_for<K>(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(obj) = self.api::<K>().get_opt(name).await? {
                last = serde_json::to_value(&obj)?;
                if check(&last) {
                    return Ok(last);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "timed out after {timeout:?} waiting for {what} on {} {name}; last state:\n{}\nkaws log tail:\n{}",
            K::kind(&()),
            serde_json::to_string_pretty(&last)?,
            tail(&self.kaws.logs(), 40)
        )
    }

    /// Waits until condition `type_` of object `name` has `status` (and `reason`, if given).
    pub async fn wait_condition_of<K>(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<Value>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        self.wait_for::<K>(
            name,
            Duration::from_secs(60),
            &format!("{type_}={status} {reason:?}"),
            |o| {
                condition(o, type_).is_some_and(|c| {
                    c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
                })
            },
        )
        .await
    }

    /// Waits until object `name` of kind `K` is gone from the API server.
    pub async fn wait_gone_of<K>(&self, name: &str, timeout: Duration) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.api::<K>().get_opt(name).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "{} {name} still exists after {timeout:?}; kaws log:\n{}",
            K::kind(&()),
            tail(&self.kaws.logs(), 40)
        )
    }

    pub async fn wait_bucket(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        self.wait_for::<Bucket>(name, timeout, what, check).await
    }

    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<Value> {
        self.wait_condition_of::<Bucket>(name, type_, status, reason)
            .await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_gone_of::<Bucket>(name, timeout).await
    }

    /// Event reasons recorded for object `name`, oldest first (events.k8s.io/v1).
    pub async fn event_reasons(&self, name: &str) -> anyhow::Result<Vec<(String, String)>> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut events = api.list(&ListParams::default()).await?.items;
        events.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        events.sort_by_key(|e| e.resource_version().and_then(|v| v.parse::<u64>().ok()));
        Ok(events
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    pub async fn wait_event(&self, name: &str, reason: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some((_, note)) = self
                .event_reasons(name)
                .await?
                .into_iter()
                .find(|(r, _)| r == reason)
            {
                return Ok(note);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!(
            "no {reason} event for {name}; events: {:?}",
            self.event_reasons(name).await?
        )
    }

    pub async fn bucket_exists(&self, bucket: &str) -> bool {
        self.s3.head_bucket().bucket(bucket).send().await.is_ok()
    }

    pub async fn bucket_tags(&self, bucket: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let out = self.s3.get_bucket_tagging().bucket(bucket).send().await?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// S3 write calls (anything but Get/Head/List) kaws has made so far.
    pub async fn s3_write_calls(&self) -> anyhow::Result<u64> {
        self.kaws
            .aws_calls(|labels| {
                labels.contains("service=\"s3\"")
                    && !["operation=\"Get", "operation=\"Head", "operation=\"List"]
                        .iter()
                        .any(|p| labels.contains(p))
            })
            .await
    }

    pub async fn s3_calls(&self) -> anyhow::Result<u64> {
        self.kaws
            .aws_calls(|labels| labels.contains("service=\"s3\""))
            .await
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// How many requests kaws made to the API server so far with `verb` on `resource` (plural,
    /// e.g. `secrets`), in this environment's namespace; the test API server counts them. `None`
    /// against an external cluster, which does not.
    pub fn kaws_requests(&self, verb: &str, resource: &str) -> Option<u64> {
        let server = self.server.as_ref()?;
        Some(
            server
                .requests(KAWS_TOKEN)
                .into_iter()
                .filter(|(a, _)| {
                    a.verb == verb && a.resource == resource && a.namespace == self.namespace
                })
                .map(|(_, n)| n)
                .sum(),
        )
    }

    /// The test API server's fault injection. An external cluster has none: a test that needs
    /// it lives in a module named `needs_fault_injection`, which `make test-cluster` skips and
    /// counts as skipped; run there anyway, it fails here rather than pass without testing.
    pub fn api_faults(&self) -> anyhow::Result<kaws_testserver::Faults> {
        match &self.server {
            Some(server) => Ok(server.faults()),
            None => bail!(
                "this test needs the test API server's fault injection, which {EXTERNAL_KUBECONFIG_ENV} \
                 (an external cluster) does not have; `make test-cluster` skips it"
            ),
        }
    }
}

fn kaws_options<'a>(
    kubeconfig: &'a Path,
    aws_endpoint: &'a str,
    cluster_id: &'a str,
    namespace: &str,
    opts: &'a EnvOptions,
    extra_env: &BTreeMap<String, String>,
) -> KawsOptions<'a> {
    let mut env = opts.extra_env.clone();
    if let Some(duration) = opts.leader_election {
        env.insert("KAWS_LEADER_ELECTION".into(), "true".into());
        env.insert("KAWS_LEADER_ELECTION_NAMESPACE".into(), namespace.into());
        env.insert(
            "KAWS_LEADER_ELECTION_LEASE_DURATION".into(),
            format!("{}s", duration.as_secs()),
        );
    }
    env.extend(extra_env.clone());
    KawsOptions {
        kubeconfig,
        aws_endpoint,
        region: REGION,
        cluster_id,
        resync_period: &opts.resync_period,
        namespaces: vec![namespace.to_string()],
        extra_env: env,
    }
}

/// A seed for the fault proxy's draws: different per run, printed in its log.
fn rand_seed() -> u64 {
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    )
}

/// The condition `type_` of an object in JSON form.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    kube::Client::try_from(config).context("kube client")
}

/// SDK configuration for checking AWS from the test's side, independent of kaws.
pub fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "e2e");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(creds))
        .build()
}

impl Drop for Env {
    fn drop(&mut self) {
        // What kaws asked the API server for, for the RBAC least-privilege check.
        if let (Some(server), Some(dir)) = (&self.server, std::env::var_os(RECORD_DIR_ENV)) {
            let dir = PathBuf::from(dir).join("kube-requests");
            let _ = std::fs::create_dir_all(&dir);
            if let Ok(json) = serde_json::to_string_pretty(&server.accesses(KAWS_TOKEN)) {
                let _ = std::fs::write(dir.join(format!("{}.json", unique_name("env"))), json);
            }
        }
        // Against an external cluster, leave nothing behind. Drop cannot await, and the test's
        // runtime is blocked in it, so the cleanup runs on a thread with a runtime of its own;
        // it covers every way a test ends (pass, error, panic), and a panic in it stays there.
        if self.server.is_none() {
            let restart = self.opts.leader_election.is_some().then(|| EnvOptions {
                leader_election: None,
                ..self.opts.clone()
            });
            let cleanup = cluster::Cleanup {
                kubeconfig: &self.kubeconfig,
                namespace: &self.namespace,
                kaws: &mut self.kaws,
                restart: kaws_options(
                    &self.kaws_kubeconfig,
                    self.proxy
                        .as_ref()
                        .map_or(self.moto.endpoint.as_str(), |p| p.endpoint.as_str()),
                    &self.cluster_id,
                    &self.namespace,
                    restart.as_ref().unwrap_or(&self.opts),
                    &BTreeMap::new(),
                ),
                log_dir: self.dir.path(),
            };
            let outcome = std::thread::scope(|s| s.spawn(move || cleanup.run_blocking()).join());
            if outcome.is_err() {
                cluster::say(&format!(
                    "cleanup of namespace {} panicked; the cluster may keep leftovers",
                    self.namespace
                ));
            }
        }
    }
}
