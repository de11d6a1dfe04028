//! A Kubernetes API server stand-in for kaws tests and the local sandbox:
//! plain HTTP on 127.0.0.1, in-memory objects with real apiserver semantics,
//! spoken to by the unmodified `kube` client and `kubectl`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod faults;
pub mod handlers;
pub mod kubeconfig;
pub mod managed;
pub mod openapi;
pub mod openapi_pb;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod store;
pub mod table;
pub mod watch;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
pub use faults::Faults;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Shared server state handed to every request.
pub struct App {
    pub store: store::Store,
    pub faults: Faults,
    /// Requests per bearer token (see [`TestServer::kubeconfig_with_token`]).
    pub audit: audit::Audit,
    pub bookmark_interval: Duration,
    pub addr: String,
}

/// How to start a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Listen address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Where to write the kubeconfig; a temporary file (removed on drop) when `None`.
    pub kubeconfig_path: Option<PathBuf>,
    /// Directories whose CRDs are installed before `start_with` returns.
    pub crd_dirs: Vec<PathBuf>,
    /// Watch events retained per resource; older resourceVersions get 410 Expired.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig_path: None,
            crd_dirs: Vec::new(),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(2),
        }
    }
}

/// A running server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    app: Arc<App>,
    kubeconfig: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    tasks: Vec<JoinHandle<()>>,
}

/// `<workspace root>/crds`.
pub fn workspace_crds_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    p.canonicalize().unwrap_or(p)
}

impl TestServer {
    pub async fn start() -> anyhow::Result<TestServer> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> anyhow::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("failed to bind {}", opts.addr))?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            store: store::Store::new(opts.watch_history),
            faults: Faults::new(),
            audit: audit::Audit::default(),
            bookmark_interval: opts.bookmark_interval,
            addr: addr.to_string(),
        });
        let router = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(app.clone());
        let faults = app.faults.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(router.clone());
                // Each connection dies with the token current at accept time,
                // which is how `Faults::restart` cuts every connection.
                let token = faults.connection_token();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        let ns_app = app.clone();
        let namespaces = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                ns_app.store.write(|st| st.finalize_namespaces());
            }
        });
        let (kubeconfig, tempdir) = match opts.kubeconfig_path.clone() {
            Some(p) => (p, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("kaws-testserver")
                    .tempdir()?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        let server = TestServer {
            addr,
            app,
            kubeconfig,
            _tempdir: tempdir,
            tasks: vec![accept, namespaces],
        };
        kubeconfig::write(&server.kubeconfig, &server.url()).with_context(|| {
            format!("failed to write kubeconfig {}", server.kubeconfig.display())
        })?;
        for dir in &opts.crd_dirs {
            server.install_crds_from_dir(dir).await?;
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Writes a kubeconfig for this server whose user sends `Bearer <token>`, so that the
    /// requests of the process using it are recorded apart (see [`TestServer::accesses`]).
    pub fn kubeconfig_with_token(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        kubeconfig::write_with_token(path, &self.url(), Some(token))
            .with_context(|| format!("failed to write kubeconfig {}", path.display()))
    }

    /// What the clients with `token` requested so far.
    pub fn accesses(&self, token: &str) -> Vec<audit::Access> {
        self.app.audit.accesses(token)
    }

    /// How many requests of each kind the clients with `token` made so far.
    pub fn requests(&self, token: &str) -> std::collections::BTreeMap<audit::Access, u64> {
        self.app.audit.requests(token)
    }

    pub fn faults(&self) -> Faults {
        self.app.faults.clone()
    }

    /// Direct access to server state (for tests that need to look behind the API).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Applies every CRD found in `dir/*.yaml` (multi-document files allowed)
    /// through the API and waits until each is Established.
    pub async fn install_crds_from_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("failed to read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .with_context(|| format!("failed to parse {}", f.display()))?;
            for doc in docs {
                if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                    continue;
                }
                let crd: CustomResourceDefinition = serde_json::from_value(doc)
                    .with_context(|| format!("invalid CRD in {}", f.display()))?;
                let name = crd
                    .metadata
                    .name
                    .clone()
                    .context("CRD without metadata.name")?;
                api.patch(
                    &name,
                    &PatchParams::apply("kaws-testserver").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("failed to install CRD {name}"))?;
                names.push(name);
            }
        }
        for name in names {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "CRD {name} not Established in time"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.app.faults.restart();
    }
}
