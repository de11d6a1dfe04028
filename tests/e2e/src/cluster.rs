//! What the suite does differently on an external cluster (`KAWS_TEST_KUBECONFIG`): install
//! `crds/` once per test process, and clean up after each test so that a run leaves the cluster
//! as it found it. The test API server needs neither: it is private to one test.

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kaws_testserver::workspace_crds_dir;
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::kaws::{Kaws, KawsOptions};

/// The field manager the suite applies CRDs with.
const FIELD_MANAGER: &str = "kaws-e2e";

/// How long kaws gets to release its finalizers once a test's objects are deleted.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(45);
/// ... or how long without one object going away, whichever comes first (an object whose
/// delete is blocked by design, e.g. deletion protection, would otherwise cost the whole bound).
const RELEASE_STALL: Duration = Duration::from_secs(15);
/// How long a deleted test namespace may stay Terminating.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(90);

/// Prints a cleanup notice where it is seen even for a passing test: libtest captures the
/// `print!` family only, not direct writes to stderr. `make test-cluster` counts these lines.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "kaws-e2e cleanup: {message}");
}

/// The CRD documents in `crds/`, as JSON.
pub fn crd_documents() -> anyhow::Result<Vec<Value>> {
    let dir = workspace_crds_dir();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("failed to parse {}", path.display()))?;
        docs.extend(
            parsed
                .into_iter()
                .filter(|d| d["kind"] == "CustomResourceDefinition"),
        );
    }
    if docs.is_empty() {
        bail!("no CustomResourceDefinition in {}", dir.display());
    }
    Ok(docs)
}

/// The kinds `crds/` defines, for listing a test's objects whatever their kind.
pub fn kaws_kinds() -> anyhow::Result<Vec<ApiResource>> {
    crd_documents()?
        .iter()
        .map(|crd| {
            let spec = &crd["spec"];
            let version = spec["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
                .and_then(|v| v["version"].as_str().or(v["name"].as_str()))
                .context("CRD without a storage version")?;
            let gvk = GroupVersionKind::gvk(
                spec["group"].as_str().unwrap_or_default(),
                version,
                spec["names"]["kind"].as_str().unwrap_or_default(),
            );
            Ok(ApiResource::from_gvk_with_plural(
                &gvk,
                spec["names"]["plural"].as_str().unwrap_or_default(),
            ))
        })
        .collect()
}

/// Installs `crds/` on the cluster once per test process, however many tests start at once,
/// and waits until every CRD is Established with its names accepted.
///
/// Server-side apply makes it safe against other test processes doing the same at the same
/// time (create-or-update in one call, no `AlreadyExists`); a 409 from two first applies racing
/// is retried. An error leaves the cell empty, so the next test tries again.
pub async fn install_crds_once(kubeconfig: &Path) -> anyhow::Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| install_crds(kubeconfig))
        .await
        .map(|_| ())
}

async fn install_crds(kubeconfig: &Path) -> anyhow::Result<()> {
    let client = crate::env::client_for(kubeconfig).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let docs = crd_documents()?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for doc in &docs {
        let name = doc["metadata"]["name"]
            .as_str()
            .context("CRD without a name")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match crds.patch(name, &params, &Patch::Apply(doc)).await {
                Ok(_) => break,
                Err(e) if code(&e) == Some(409) && attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("failed to apply CRD {name}")),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (doc, kind) in docs.iter().zip(kaws_kinds()?) {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        loop {
            let crd = crds.get(name).await?;
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let is_true = |t: &str| {
                conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            // Established can come a moment before the resource is served; a list proves it.
            if is_true("Established")
                && is_true("NamesAccepted")
                && Api::<DynamicObject>::all_with(client.clone(), &kind)
                    .list(&ListParams::default().limit(1))
                    .await
                    .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} is not Established and served after 60s: {conditions:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// Everything one test's cleanup touches, borrowed from its `Env` while it is being dropped.
pub struct Cleanup<'a> {
    pub kubeconfig: &'a Path,
    pub namespace: &'a str,
    /// The test's kaws: it releases the finalizers before it is stopped.
    pub kaws: &'a mut Kaws,
    /// How to start a kaws for the cleanup when the test's own is gone (killed by the test).
    pub restart: KawsOptions<'a>,
    pub log_dir: &'a Path,
}

impl Cleanup<'_> {
    /// Runs [`Cleanup::run`] on a runtime of its own; call it from a thread that is not a
    /// runtime worker. Failures are reported, never raised: a test's outcome is its own.
    pub fn run_blocking(self) {
        let namespace = self.namespace.to_string();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return say(&format!("no runtime for cleaning up {namespace}: {e}")),
        };
        if let Err(e) = runtime.block_on(self.run()) {
            say(&format!("namespace {namespace} may be left behind: {e:#}"));
        }
    }

    /// Deletes the test's kaws objects and lets kaws release their finalizers (bounded), stops
    /// kaws, removes the finalizers it left (saying so), then deletes the namespace and waits
    /// until it is gone.
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::env::client_for(self.kubeconfig).await?;
        let kinds = kaws_kinds()?;
        let mut left = objects(&client, self.namespace, &kinds).await?;
        if !left.is_empty() {
            if !self.kaws.is_running() {
                say(&format!(
                    "the test's kaws had exited; starting one to release the finalizers in {}",
                    self.namespace
                ));
                match Kaws::start(self.restart, self.log_dir).await {
                    Ok(kaws) => *self.kaws = kaws,
                    Err(e) => say(&format!(
                        "could not start kaws to release finalizers: {e:#}"
                    )),
                }
            }
            for (kind, name) in &left {
                let api =
                    Api::<DynamicObject>::namespaced_with(client.clone(), self.namespace, kind);
                if let Err(e) = api.delete(name, &DeleteParams::default()).await
                    && code(&e) != Some(404)
                {
                    say(&format!("failed to delete {} {name}: {e}", kind.kind));
                }
            }
            let started = Instant::now();
            let mut progress = Instant::now();
            while !left.is_empty()
                && self.kaws.is_running()
                && started.elapsed() < RELEASE_TIMEOUT
                && progress.elapsed() < RELEASE_STALL
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = objects(&client, self.namespace, &kinds).await?;
                if now.len() < left.len() {
                    progress = Instant::now();
                }
                left = now;
            }
        }
        if self.kaws.is_running()
            && let Err(e) = self.kaws.stop()
        {
            say(&format!("{e:#}"));
        }
        strip_finalizers(&client, self.namespace, &kinds, "kaws did not release it").await?;

        let namespaces: Api<Namespace> = Api::all(client.clone());
        if let Err(e) = namespaces
            .delete(self.namespace, &DeleteParams::default())
            .await
            && code(&e) != Some(404)
        {
            return Err(e).context("failed to delete the namespace");
        }
        let deadline = Instant::now() + NAMESPACE_TIMEOUT;
        let mut sweep = Instant::now();
        while let Some(ns) = namespaces.get_opt(self.namespace).await? {
            if Instant::now() > deadline {
                bail!(
                    "namespace still {} after {NAMESPACE_TIMEOUT:?}: {}",
                    ns.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                    serde_json::to_string(&ns.status).unwrap_or_default()
                );
            }
            // Anything created after the first sweep (a late apply, a kaws that was still
            // writing) must not keep the namespace Terminating either.
            if sweep.elapsed() > Duration::from_secs(10) {
                strip_finalizers(&client, self.namespace, &kinds, "it held up the namespace")
                    .await?;
                sweep = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

/// The kaws objects in `namespace`, as (kind, name).
async fn objects(
    client: &kube::Client,
    namespace: &str,
    kinds: &[ApiResource],
) -> anyhow::Result<Vec<(ApiResource, String)>> {
    let mut all = Vec::new();
    for kind in kinds {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, kind);
        for obj in api.list(&ListParams::default()).await?.items {
            all.push((kind.clone(), obj.name_any()));
        }
    }
    Ok(all)
}

/// Removes every finalizer from the kaws objects left in `namespace` and says so.
async fn strip_finalizers(
    client: &kube::Client,
    namespace: &str,
    kinds: &[ApiResource],
    why: &str,
) -> anyhow::Result<()> {
    for kind in kinds {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, kind);
        for obj in api.list(&ListParams::default()).await?.items {
            let finalizers: BTreeSet<_> = obj.finalizers().iter().cloned().collect();
            if finalizers.is_empty() {
                continue;
            }
            let name = obj.name_any();
            let patch = json!({"metadata": {"finalizers": null}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => say(&format!(
                    "removed finalizers {finalizers:?} from {} {namespace}/{name} ({why})",
                    kind.kind
                )),
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => say(&format!(
                    "failed to remove finalizers from {} {namespace}/{name}: {e}",
                    kind.kind
                )),
            }
        }
    }
    Ok(())
}

/// The HTTP status of an API error.
fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
