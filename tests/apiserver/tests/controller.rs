//! An unmodified kube-runtime `Controller` with the `finalizer` helper runs
//! its full lifecycle against the test server.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        finalizer::{Event, finalizer},
        watcher,
    },
};
use serde_json::json;

const FINALIZER: &str = "test.kaws.io/cleanup";

struct Ctx {
    client: Client,
    cleanups: AtomicUsize,
}

async fn reconcile(
    w: Arc<Widget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &w.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, w, |ev| async {
        match ev {
            Event::Apply(w) => {
                let status = json!({
                    "apiVersion": "test.kaws.io/v1", "kind": "Widget", "metadata": {"name": w.name_any()},
                    "status": {"observedGeneration": w.metadata.generation, "arn": format!("arn:aws:s3:::{}", w.spec.bucket_name),
                               "conditions": [{"type": "Ready", "status": "True", "reason": "Available",
                                               "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
                });
                api.patch_status(&w.name_any(), &PatchParams::apply("widget-controller").force(), &Patch::Apply(status))
                    .await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _: Arc<Widget>,
    _: &kube::runtime::finalizer::Error<kube::Error>,
    _: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_with_finalizer_runs_full_lifecycle() {
    let s = server().await;
    let client = s.client().await.unwrap();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let all: Api<Widget> = Api::all(client.clone());
    let controller = tokio::spawn(
        Controller::new(all, watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(())),
    );
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let w = Widget::new(
        "w",
        WidgetSpec {
            bucket_name: "abc".into(),
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &w).await.unwrap();
    eventually(
        "finalizer added and status Ready",
        Duration::from_secs(15),
        || {
            let api = api.clone();
            async move {
                let w = api.get("w").await.unwrap();
                let ready = w.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        && s.observed_generation == Some(1)
                        && s.arn.as_deref() == Some("arn:aws:s3:::abc")
                });
                w.finalizers() == [FINALIZER] && ready
            }
        },
    )
    .await;
    api.delete("w", &DeleteParams::default()).await.unwrap();
    eventually("object gone after cleanup", Duration::from_secs(15), || {
        let api = api.clone();
        async move { api.get_opt("w").await.unwrap().is_none() }
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    controller.abort();
}
