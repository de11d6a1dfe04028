//! The shared half of the kind registry: what one registered kind is ([`Kind`], built from its
//! [`ManagedObject`] and [`External`] types by [`Kind::of`]), and the data derived from the list
//! of them (`resources::KINDS`): the CLI's kind names, the CRDs, the controllers `kaws run`
//! starts, and the per-kind RBAC and IAM data the chart reads (`charts/kaws/files/kinds.yaml`).

use std::{collections::BTreeMap, sync::Arc};

use futures::future::BoxFuture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    api::Scope,
    driver::{Connect, External, ManagedObject, Shared},
    runner::{self, Readiness, RunOptions},
};

/// One kind kaws serves.
pub struct Kind {
    kind: &'static str,
    scope: Scope,
    secrets: bool,
    iam: &'static str,
    crd: fn() -> CustomResourceDefinition,
    reads: fn() -> Vec<ApiRef>,
    start: fn(Launch<'_>) -> BoxFuture<'static, ()>,
}

/// What `kaws run` gives each kind's controller when it starts it.
pub struct Launch<'a> {
    pub shared: Arc<Shared>,
    pub connect: &'a Connect<'a>,
    pub options: RunOptions,
    pub readiness: Readiness,
    /// The controller's future ends after this fires.
    pub shutdown: CancellationToken,
}

/// A kaws API another kind's objects reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ApiRef {
    pub group: String,
    pub plural: String,
}

impl Kind {
    /// The registry entry of kind `K`, whose AWS side is `E`.
    pub const fn of<K, E>() -> Kind
    where
        K: ManagedObject + CustomResourceExt,
        E: External<K>,
    {
        Kind {
            kind: K::KIND,
            scope: K::SCOPE,
            secrets: K::WATCHES_SECRETS,
            iam: E::IAM_STATEMENTS,
            crd: K::crd,
            reads: reads::<K>,
            start: start::<K, E>,
        }
    }

    /// The kind as Kubernetes, metrics and Events name it, e.g. `DBInstance`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The name `--kinds` and the chart's `kinds` use, e.g. `dbinstance`.
    pub fn name(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The kind's CustomResourceDefinition, as the derive generates it.
    pub fn crd(&self) -> CustomResourceDefinition {
        (self.crd)()
    }

    /// The prefix of the `Sid`s of this kind's statements in `deploy/iam/policy.json`.
    pub fn iam_statements(&self) -> &'static str {
        self.iam
    }

    /// Starts the kind's controller.
    pub fn start(&self, launch: Launch<'_>) -> BoxFuture<'static, ()> {
        (self.start)(launch)
    }

    /// What the chart needs to know about the kind (see [`chart_data`]).
    fn chart_entry(&self) -> ChartKind {
        let crd = self.crd();
        ChartKind {
            group: crd.spec.group,
            plural: crd.spec.names.plural,
            scope: self.scope,
            secrets: self.secrets,
            reads: (self.reads)(),
            iam: self.iam,
        }
    }
}

fn reads<K: ManagedObject>() -> Vec<ApiRef> {
    let mut apis: Vec<ApiRef> = K::dependencies()
        .iter()
        .map(|d| ApiRef {
            group: d.api.group.clone(),
            plural: d.api.plural.clone(),
        })
        .collect();
    apis.sort();
    apis.dedup();
    apis
}

fn start<K: ManagedObject, E: External<K>>(launch: Launch<'_>) -> BoxFuture<'static, ()> {
    let external = E::connect(launch.connect);
    Box::pin(runner::run_kind::<K, E>(
        launch.shared,
        external,
        launch.options,
        launch.readiness,
        launch.shutdown,
    ))
}

/// One kind in `charts/kaws/files/kinds.yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChartKind {
    group: String,
    plural: String,
    scope: Scope,
    /// Reads the Secrets its objects reference and writes connection Secrets: RBAC on Secrets.
    secrets: bool,
    /// Other kaws APIs its objects reference: get/list/watch on them.
    reads: Vec<ApiRef>,
    /// Its statements in the IAM policy start with this `Sid` prefix.
    iam: &'static str,
}

/// The chart's per-kind data, `charts/kaws/files/kinds.yaml`, derived from `kinds` (`kaws
/// kinds` prints it; a test in `resources` fails when the chart's copy differs).
pub fn chart_data(kinds: &[Kind]) -> String {
    let map: BTreeMap<String, ChartKind> =
        kinds.iter().map(|k| (k.name(), k.chart_entry())).collect();
    let yaml = serde_saphyr::to_string(&map).expect("plain strings and lists serialize");
    format!(
        "# Generated from the kind registry (controller/src/resources/mod.rs) by `kaws kinds`;\n\
         # `make crds` rewrites it and cargo test fails when it differs. Read by templates/_helpers.tpl.\n{yaml}"
    )
}

/// The kinds named `names` (all of `kinds` when empty), in registry order.
pub fn select<'a>(kinds: &'a [Kind], names: &[String]) -> Vec<&'a Kind> {
    kinds
        .iter()
        .filter(|k| names.is_empty() || names.contains(&k.name()))
        .collect()
}
