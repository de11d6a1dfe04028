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

/// Publishes one Event about widget `w` the way kaws does: kube-runtime's
/// `Recorder`, which writes `events.k8s.io/v1`.
async fn publish_widget_event(s: &TestServer, reason: &str, note: &str) {
    use kube::{
        Resource,
        runtime::events::{Event, EventType, Recorder, Reporter},
    };
    let c = s.client().await.unwrap();
    let w = dyn_api(&c).get("w").await.unwrap();
    let rec = Recorder::new(
        c.clone(),
        Reporter {
            controller: "kaws".into(),
            instance: Some("kaws-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    rec.publish(&ev, &w.object_ref(&widget_resource()))
        .await
        .unwrap();
}

#[tokio::test]
async fn kubectl_describe_get_events_and_events_for_show_events_v1_events() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), 5);
    stdout_ok(&kubectl(&s, &["apply", "-f", f.to_str().unwrap()]).await);
    publish_widget_event(&s, "AccessDenied", "s3:CreateBucket refused").await;
    // An Event about another object must not show up for w.
    let c = s.client().await.unwrap();
    create_widget(&c, "other", json!({"bucketName": "other-bucket"})).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(c.clone());
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "about-other"}, "eventTime": "2024-01-01T00:00:00.000000Z",
                "reportingController": "kaws", "reportingInstance": "kaws-0", "action": "Reconcile",
                "reason": "OtherReason", "type": "Normal", "note": "not about w",
                "regarding": {"kind": "Widget", "name": "other", "namespace": "default",
                              "apiVersion": "test.kaws.io/v1"}}))
            .unwrap(),
        )
        .await
        .unwrap();

    let out = stdout_ok(&kubectl(&s, &["describe", "widget", "w"]).await);
    let events_section = out.split("Events:").nth(1).unwrap_or("");
    assert!(
        events_section.contains("AccessDenied")
            && events_section.contains("s3:CreateBucket refused")
            && events_section.contains("kaws"),
        "{out}"
    );
    assert!(!events_section.contains("OtherReason"), "{out}");

    let out = stdout_ok(&kubectl(&s, &["get", "events"]).await);
    assert!(out.starts_with("LAST SEEN"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("Warning")
            && l.contains("AccessDenied")
            && l.contains("widget/w")
            && l.contains("s3:CreateBucket refused")),
        "{out}"
    );

    let out = stdout_ok(&kubectl(&s, &["events", "--for", "widget/w"]).await);
    assert!(
        out.contains("AccessDenied") && out.contains("s3:CreateBucket refused"),
        "{out}"
    );
    assert!(!out.contains("OtherReason"), "{out}");
}

fn applied_manifest(dir: &Path, size: i64) -> std::path::PathBuf {
    let p = dir.join(format!("w-{size}.yaml"));
    std::fs::write(
        &p,
        format!("apiVersion: test.kaws.io/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  bucketName: my-bucket\n  size: {size}\n"),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn kubectl_server_side_apply_conflicts_until_forced() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let first = applied_manifest(dir.path(), 5);
    let second = applied_manifest(dir.path(), 7);
    let apply = |f: &std::path::PathBuf, manager: &str, force: bool| {
        let mut args = vec![
            "apply".to_string(),
            "--server-side".into(),
            format!("--field-manager={manager}"),
            "-f".into(),
            f.to_str().unwrap().to_string(),
        ];
        if force {
            args.push("--force-conflicts".into());
        }
        args
    };
    let run = |args: Vec<String>| {
        let s = &s;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(s, &a).await
        }
    };
    let out = stdout_ok(&run(apply(&first, "team-a", false)).await);
    assert!(
        out.contains("widget.test.kaws.io/w serverside-applied"),
        "{out}"
    );
    // The same values from another manager: shared ownership, no conflict.
    stdout_ok(&run(apply(&first, "team-b", false)).await);

    let out = run(apply(&second, "team-c", false)).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Apply failed with 2 conflicts: conflicts with \"team-a\"\n- .spec.size\nconflicts with \"team-b\"\n- .spec.size"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    let c = s.client().await.unwrap();
    assert_eq!(dyn_api(&c).get("w").await.unwrap().data["spec"]["size"], 5);

    stdout_ok(&run(apply(&second, "team-c", true)).await);
    let w = dyn_api(&c).get("w").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 7);
    let owners_of_size: Vec<String> = w
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:size").is_some())
        })
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(owners_of_size, ["team-c"]);
    // kubectl hides managedFields unless asked.
    let yaml = stdout_ok(&kubectl(&s, &["get", "widget", "w", "-o", "yaml"]).await);
    assert!(!yaml.contains("managedFields"), "{yaml}");
    let yaml = stdout_ok(
        &kubectl(
            &s,
            &["get", "widget", "w", "-o", "yaml", "--show-managed-fields"],
        )
        .await,
    );
    assert!(
        yaml.contains("manager: team-c") && yaml.contains("operation: Apply"),
        "{yaml}"
    );
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn kubectl_delete_crd_waits_while_an_instance_has_a_finalizer() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let held = write_file(
        dir.path(),
        "held.yaml",
        "apiVersion: test.kaws.io/v1\nkind: Widget\nmetadata:\n  name: held\n  finalizers: [test.kaws.io/cleanup]\nspec:\n  bucketName: abc\n",
    );
    stdout_ok(&kubectl(&s, &["apply", "-f", &held]).await);
    let mut child = kubectl_cmd(
        &s,
        &["delete", "crd", "widgets.test.kaws.io", "--timeout=60s"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl must wait while the CRD is terminating"
    );
    let terminating = stdout_ok(
        &kubectl(
            &s,
            &[
                "get",
                "crd",
                "widgets.test.kaws.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Terminating\")].status} {.metadata.finalizers}",
            ],
        )
        .await,
    );
    assert_eq!(
        terminating,
        "True [\"customresourcecleanup.apiextensions.k8s.io\"]"
    );
    let stamp = stdout_ok(
        &kubectl(
            &s,
            &[
                "get",
                "widget",
                "held",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        )
        .await,
    );
    assert!(!stamp.is_empty());
    let late = write_file(
        dir.path(),
        "late.yaml",
        "apiVersion: test.kaws.io/v1\nkind: Widget\nmetadata:\n  name: late\nspec:\n  bucketName: abc\n",
    );
    let out = kubectl(&s, &["create", "-f", &late]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("create not allowed while custom resource definition is terminating"),
        "{out:?}"
    );
    // What a controller does once its cleanup is done.
    let text = release_and_wait(&s, "widget", "held", child).await;
    assert!(
        text.contains(
            "customresourcedefinition.apiextensions.k8s.io \"widgets.test.kaws.io\" deleted"
        ),
        "{text}"
    );
    // Served no more: NotFound (through kubectl's cached discovery) or an
    // unknown resource type (after it refreshed).
    let out = kubectl(&s, &["get", "widgets"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server could not find the requested resource")
            || err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
}

/// Widget `owner` and ConfigMap `dep` it owns (blockOwnerDeletion), the
/// ConfigMap held by a finalizer when `held`.
/// Removes the finalizers of `kind/name` with kubectl, as a controller does once its cleanup is
/// done, and returns what the waiting `kubectl delete` (`child`) printed.
async fn release_and_wait(
    s: &TestServer,
    kind: &str,
    name: &str,
    child: tokio::process::Child,
) -> String {
    let patch = "{\"metadata\":{\"finalizers\":null}}";
    stdout_ok(&kubectl(s, &["patch", kind, name, "--type=merge", "-p", patch]).await);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    stdout_ok(&out)
}

async fn owner_and_dependent(s: &TestServer, owner: &str, dep: &str, held: bool) {
    let c = s.client().await.unwrap();
    let w = create_widget(&c, owner, json!({"bucketName": "abc"})).await;
    let finalizers: Vec<&str> = if held {
        vec!["test.kaws.io/hold"]
    } else {
        vec![]
    };
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(c);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": dep, "finalizers": finalizers,
            "ownerReferences": [{"apiVersion": "test.kaws.io/v1", "kind": "Widget", "name": owner,
                "uid": w.metadata.uid, "blockOwnerDeletion": true, "controller": true}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn kubectl_delete_cascade_foreground_waits_for_the_dependent() {
    let s = server().await;
    owner_and_dependent(&s, "owner", "dep", true).await;
    let mut child = kubectl_cmd(
        &s,
        &[
            "delete",
            "widget",
            "owner",
            "--cascade=foreground",
            "--timeout=60s",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kubectl must wait for the blocking dependent"
    );
    let fins = stdout_ok(
        &kubectl(
            &s,
            &[
                "get",
                "widget",
                "owner",
                "-o",
                "jsonpath={.metadata.finalizers}",
            ],
        )
        .await,
    );
    assert_eq!(fins, "[\"foregroundDeletion\"]");
    let stamp = stdout_ok(
        &kubectl(
            &s,
            &[
                "get",
                "configmap",
                "dep",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        )
        .await,
    );
    assert!(!stamp.is_empty());
    let text = release_and_wait(&s, "configmap", "dep", child).await;
    assert!(
        text.contains("widget.test.kaws.io \"owner\" deleted"),
        "{text}"
    );
    let out = kubectl(&s, &["get", "configmap", "dep"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn kubectl_delete_cascade_orphan_keeps_the_dependent() {
    let s = server().await;
    owner_and_dependent(&s, "owner", "dep", false).await;
    let text = stdout_ok(
        &kubectl(
            &s,
            &[
                "delete",
                "widget",
                "owner",
                "--cascade=orphan",
                "--timeout=30s",
            ],
        )
        .await,
    );
    assert!(
        text.contains("widget.test.kaws.io \"owner\" deleted"),
        "{text}"
    );
    let refs = stdout_ok(
        &kubectl(
            &s,
            &[
                "get",
                "configmap",
                "dep",
                "-o",
                "jsonpath={.metadata.name}:{.metadata.ownerReferences}",
            ],
        )
        .await,
    );
    assert_eq!(refs, "dep:");
    // And the default cascade (background) takes the dependent along.
    owner_and_dependent(&s, "owner2", "dep2", false).await;
    stdout_ok(&kubectl(&s, &["delete", "widget", "owner2"]).await);
    let out = kubectl(&s, &["get", "configmap", "dep2"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn kubectl_explain_reads_the_protobuf_openapi_v2_document() {
    let s = server().await;
    let out = stdout_ok(
        &kubectl(
            &s,
            &["explain", "widgets.spec", "--output=plaintext-openapiv2"],
        )
        .await,
    );
    assert!(
        out.contains("bucketName") && out.contains("Name of the bucket; immutable."),
        "{out}"
    );
    let out = stdout_ok(
        &kubectl(
            &s,
            &[
                "explain",
                "widgets.metadata",
                "--output=plaintext-openapiv2",
            ],
        )
        .await,
    );
    assert!(out.contains("finalizers"), "{out}");
}
