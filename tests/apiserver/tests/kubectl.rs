//! The real kubectl against the test server: apply, get (tables, short
//! names, categories, -o yaml, -w), explain, wait, delete with finalizers
//! and create secret.

mod common;

use std::{path::Path, process::Output, time::Duration};

use common::*;
use k8s_openapi::api::core::v1::Secret;
use kaws_testserver::TestServer;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const KUBECTL: &str = "/usr/bin/kubectl";

fn kubectl_cmd(s: &TestServer, args: &[&str]) -> tokio::process::Command {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: install the Debian package kubernetes-client (apt-get install kubernetes-client)"
    );
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.args(args)
        .env("KUBECONFIG", s.kubeconfig_path())
        .env(
            "HOME",
            s.kubeconfig_path().parent().unwrap_or(Path::new("/tmp")),
        )
        .kill_on_drop(true);
    cmd
}

async fn kubectl(s: &TestServer, args: &[&str]) -> Output {
    kubectl_cmd(s, args).output().await.expect("kubectl runs")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn manifest(dir: &Path, size: i64) -> std::path::PathBuf {
    let p = dir.join("w.yaml");
    std::fs::write(
        &p,
        format!("apiVersion: test.kaws.io/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  bucketName: my-bucket\n  size: {size}\n"),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn kubectl_apply_creates_then_patches() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), 5);
    let out = stdout_ok(&kubectl(&s, &["apply", "-f", f.to_str().unwrap()]).await);
    assert!(out.contains("widget.test.kaws.io/w created"), "{out}");
    let f = manifest(dir.path(), 7);
    let out = stdout_ok(&kubectl(&s, &["apply", "-f", f.to_str().unwrap()]).await);
    assert!(out.contains("widget.test.kaws.io/w configured"), "{out}");
    let c = s.client().await.unwrap();
    let w = dyn_api(&c).get("w").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 7);
    assert_eq!(w.metadata.generation, Some(2));
    // Unknown fields are rejected by server-side validation (kubectl's default --validate=strict).
    std::fs::write(&f, "apiVersion: test.kaws.io/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  bucketName: my-bucket\n  bogus: 1\n").unwrap();
    let out = kubectl(&s, &["apply", "-f", f.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.bogus\""),
        "{out:?}"
    );
}

#[tokio::test]
async fn kubectl_get_prints_columns_short_names_categories_and_yaml() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc", "size": 4})).await;
    dyn_api(&c)
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    let out = stdout_ok(&kubectl(&s, &["get", "widgets"]).await);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "BUCKET", "SIZE", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["w", "abc", "4", "True"]);
    for what in ["wdg", "aws"] {
        let out = stdout_ok(&kubectl(&s, &["get", what]).await);
        assert!(out.lines().any(|l| l.starts_with("w ")), "{what}: {out}");
    }
    let yaml = stdout_ok(&kubectl(&s, &["get", "widget", "w", "-o", "yaml"]).await);
    assert!(
        yaml.contains("bucketName: abc") && yaml.contains("kind: Widget"),
        "{yaml}"
    );
    let ns = stdout_ok(&kubectl(&s, &["get", "ns"]).await);
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");
}

#[tokio::test]
async fn kubectl_explain_reads_the_crd_schema() {
    let s = server().await;
    let out = stdout_ok(&kubectl(&s, &["explain", "widgets.spec"]).await);
    assert!(
        out.contains("bucketName") && out.contains("Name of the bucket; immutable."),
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_wait_sees_ready_condition() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let api = dyn_api(&c);
    let setter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        api.patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    });
    let out = stdout_ok(
        &kubectl(
            &s,
            &["wait", "--for=condition=Ready", "widget/w", "--timeout=30s"],
        )
        .await,
    );
    assert!(out.contains("condition met"), "{out}");
    setter.await.unwrap();
}

#[tokio::test]
async fn kubectl_delete_waits_for_finalizer_removal() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let o = serde_json::from_value(json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget",
        "metadata": {"name": "w", "finalizers": ["test.kaws.io/cleanup"]}, "spec": {"bucketName": "abc"}}))
    .unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
    let mut child = kubectl_cmd(&s, &["delete", "widget", "w", "--timeout=60s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl must wait while the finalizer is present"
    );
    assert!(
        api.get("w")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = stdout_ok(&out);
    assert!(text.contains("widget.test.kaws.io \"w\" deleted"), "{text}");
}

#[tokio::test]
async fn kubectl_get_watch_sees_changes() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc", "size": 4})).await;
    let mut child = kubectl_cmd(&s, &["get", "widgets", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    dyn_api(&c)
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 42}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("change seen")
            .unwrap()
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(2) == Some(&"42") {
            break;
        }
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn kubectl_create_secret_generic() {
    let s = server().await;
    let out = stdout_ok(
        &kubectl(
            &s,
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=user=admin",
            ],
        )
        .await,
    );
    assert!(out.contains("secret/creds created"), "{out}");
    let secrets: Api<Secret> = Api::default_namespaced(s.client().await.unwrap());
    let sec = secrets.get("creds").await.unwrap();
    assert_eq!(sec.data.unwrap()["user"].0, b"admin");
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));
}
