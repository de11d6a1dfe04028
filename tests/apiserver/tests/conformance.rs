//! Conformance-style checks through the real `kube` client: each test pins
//! one piece of kube-apiserver behaviour that kaws (or kube-runtime) relies on.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kaws_testserver::Options;
use kube::{
    Api, Resource, ResourceExt,
    api::{
        DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    },
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

#[tokio::test]
async fn stale_resource_version_put_is_409_conflict() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let first = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let mut a = first.clone();
    a.data["spec"]["size"] = json!(2);
    api.replace("w", &PostParams::default(), &a).await.unwrap();
    let mut b = first;
    b.data["spec"]["size"] = json!(3);
    let st = api_err(
        api.replace("w", &PostParams::default(), &b)
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        st.message,
        "Operation cannot be fulfilled on widgets.test.kaws.io \"w\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn resource_versions_are_global_and_increasing() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let cm: Api<ConfigMap> = Api::default_namespaced(c.clone());
    let m = cm
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap(),
        )
        .await
        .unwrap();
    let a: u64 = w.resource_version().unwrap().parse().unwrap();
    let b: u64 = m.resource_version().unwrap().parse().unwrap();
    assert!(b > a, "{b} > {a}");
    assert!(!w.uid().unwrap().is_empty());
    assert!(w.creation_timestamp().is_some());
}

#[tokio::test]
async fn generation_tracks_spec_changes_only() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    assert_eq!(w.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let w = api
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    let w = api
        .patch_status("w", &pp, &Patch::Merge(json!({"status": {"arn": "x"}})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    let w = api
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"size": 4}})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    // A no-op write does not even bump the resourceVersion.
    let again = api
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"size": 4}})))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), w.resource_version());
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status_writes() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let pp = PatchParams::default();
    // /status ignores spec
    let w = api
        .patch_status(
            "w",
            &pp,
            &Patch::Merge(json!({"spec": {"size": 50}, "status": {"arn": "a1"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["arn"], "a1");
    assert_eq!(w.data["spec"]["size"], 10);
    // main resource ignores status
    let w = api
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"spec": {"size": 20}, "status": {"arn": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["arn"], "a1");
    assert_eq!(w.data["spec"]["size"], 20);
    // GET /status returns the whole object
    let full = api.get_status("w").await.unwrap();
    assert_eq!(full.data["spec"]["size"], 20);
    // status on create is dropped
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.kaws.io/v1", "kind": "Widget", "metadata": {"name": "w2"},
        "spec": {"bucketName": "abc"}, "status": {"arn": "nope"}}))
    .unwrap();
    let w2 = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(w2.data.get("status").is_none());
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.kaws.io/v1", "kind": "Widget",
        "metadata": {"name": "w", "finalizers": ["test.kaws.io/cleanup"]},
        "spec": {"bucketName": "abc"}}))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let mut events = api
        .watch(&WatchParams::default().fields("metadata.name=w"), "0")
        .await
        .unwrap()
        .boxed();
    let deleted = api.delete("w", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    assert!(api.get("w").await.is_ok());
    let st = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test.kaws.io/cleanup", "new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert!(st.message.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"), "{}", st.message);
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("w").await.unwrap_err()).code, 404);
    let mut kinds = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
    {
        match ev.unwrap() {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(_) => {
                kinds.push("DELETED");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn delete_preconditions_mismatch_is_409() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let st = api_err(api.delete("w", &dp).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(api.delete("w", &DeleteParams::default()).await.is_ok());
    assert_eq!(api_err(api.get("w").await.unwrap_err()).reason, "NotFound");
}

#[tokio::test]
async fn json_patch_test_failure_is_422_and_success_applies() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let pp = PatchParams::default();
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f1"]}]))
    .unwrap();
    let w = api.patch("w", &pp, &Patch::<()>::Json(add)).await.unwrap();
    assert_eq!(w.finalizers(), ["f1"]);
    let bad: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["other"]},
        {"op": "remove", "path": "/metadata/finalizers/0"}]))
    .unwrap();
    let st = api_err(
        api.patch("w", &pp, &Patch::<()>::Json(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(api.get("w").await.unwrap().finalizers(), ["f1"]);
}

#[tokio::test]
async fn strategic_merge_patch_is_415_for_custom_resources_but_works_for_configmaps() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let st = api_err(
        dyn_api(&c)
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 3}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (415, "UnsupportedMediaType"));
    let cm: Api<ConfigMap> = Api::default_namespaced(c.clone());
    cm.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "m"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();
    let m = cm
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        m.data.unwrap(),
        BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string())
        ])
    );
}

#[tokio::test]
async fn server_side_apply_merges_status_conditions_by_type() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let status = |conds: Value| json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"conditions": conds}});
    let ctrl = PatchParams::apply("controller").force();
    let other = PatchParams::apply("other").force();
    api.patch_status(
        "w",
        &ctrl,
        &Patch::Apply(status(json!([
        {"type": "Ready", "status": "False", "reason": "Creating"},
        {"type": "Synced", "status": "True"}]))),
    )
    .await
    .unwrap();
    api.patch_status(
        "w",
        &other,
        &Patch::Apply(status(json!([{"type": "Extra", "status": "True"}]))),
    )
    .await
    .unwrap();
    let w = api
        .patch_status(
            "w",
            &ctrl,
            &Patch::Apply(status(
                json!([{"type": "Ready", "status": "True", "reason": "Available"}]),
            )),
        )
        .await
        .unwrap();
    let conds: Vec<(String, String)> = w.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Ready updated in place, Synced dropped (controller no longer applies it),
    // Extra kept (owned by another manager).
    assert_eq!(
        conds,
        [
            ("Ready".to_string(), "True".to_string()),
            ("Extra".to_string(), "True".to_string())
        ]
    );
    assert_eq!(w.data["spec"]["bucketName"], "abc");
}

#[tokio::test]
async fn server_side_apply_creates_and_removes_fields_it_stopped_applying() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let pp = PatchParams::apply("me");
    let w = api
        .patch(
            "w",
            &pp,
            &Patch::Apply(widget_json(
                "w",
                json!({"bucketName": "abc", "size": 3, "tags": {"a": "1"}}),
            )),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 3);
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tags": {"b": "2"}}})),
    )
    .await
    .unwrap();
    let w = api
        .patch(
            "w",
            &pp,
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc"}))),
        )
        .await
        .unwrap();
    // size falls back to its default once nobody sets it; tags.b (set by another writer) survives.
    assert_eq!(w.data["spec"]["size"], 10);
    assert_eq!(w.data["spec"]["tags"], json!({"b": "2"}));
    let st = api_err(
        c.request::<Value>(
            http::Request::patch("/apis/test.kaws.io/v1/namespaces/default/widgets/w")
                .header("content-type", "application/apply-patch+yaml")
                .body(b"spec: {}".to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        )
    );
}

#[tokio::test]
async fn watch_delivers_every_event_in_order() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                create_widget(&c, &format!("w{i}"), json!({"bucketName": "abc"})).await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut rvs = Vec::new();
    while rvs.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => rvs.push(o.resource_version().unwrap().parse::<u64>().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

#[tokio::test]
async fn bookmarks_arrive_and_streaming_lists_end_with_initial_events_end() {
    let s = server_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut saw = (false, false);
    while !(saw.0 && saw.1) {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => saw.0 = true,
            WatchEvent::Bookmark(b) => saw.1 = !b.metadata.resource_version.is_empty(),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut streaming = api
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), streaming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 1);
}

#[tokio::test]
async fn watch_from_compacted_resource_version_gets_410_expired() {
    let s = server_with(Options {
        watch_history: 5,
        ..Default::default()
    })
    .await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let first = create_widget(&c, "w0", json!({"bucketName": "abc"})).await;
    for i in 1..20 {
        create_widget(&c, &format!("w{i}"), json!({"bucketName": "abc"})).await;
    }
    let mut stream = api
        .watch(
            &WatchParams::default(),
            first.resource_version().as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version:"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // A continue token from before the compaction is expired too.
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = page.metadata.continue_.clone().unwrap();
    for i in 20..30 {
        create_widget(&c, &format!("w{i}"), json!({"bucketName": "abc"})).await;
    }
    let st = api_err(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_watches() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut o: DynamicObject =
            serde_json::from_value(widget_json(name, json!({"bucketName": "abc"}))).unwrap();
        o.labels_mut().insert("tier".into(), tier.into());
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<DynamicObject>| {
        l.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier=web"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier!=web"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier in (db),!missing"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    let all: Api<DynamicObject> = Api::all_with(c.clone(), &widget_resource());
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=default"))
                .await
                .unwrap()
        )
        .len(),
        3
    );
    let st = api_err(
        api.list(&ListParams::default().labels("tier in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 400);

    let mut stream = api
        .watch(&WatchParams::default().labels("tier=web"), "0")
        .await
        .unwrap()
        .boxed();
    for _ in 0..2 {
        assert!(matches!(
            stream.next().await.unwrap().unwrap(),
            WatchEvent::Added(_)
        ));
    }
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected DELETED for an object leaving the selector, got {other:?}"),
    }
}

#[tokio::test]
async fn paging_returns_every_object_once() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    for i in 0..25 {
        create_widget(&c, &format!("w{i:02}"), json!({"bucketName": "abc"})).await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        if pages == 1 {
            assert_eq!(page.metadata.remaining_item_count, Some(15));
        }
        seen.extend(page.items.iter().map(|o| o.name_any()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("w{i:02}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn schema_violations_are_422_with_field_causes() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let cases = [
        (json!({}), "spec.bucketName", "Required value"),
        (
            json!({"bucketName": "ABC"}),
            "spec.bucketName",
            "should match",
        ),
        (
            json!({"bucketName": "ab"}),
            "spec.bucketName",
            "at least 3 chars long",
        ),
        (
            json!({"bucketName": "a".repeat(64)}),
            "spec.bucketName",
            "Too long",
        ),
        (
            json!({"bucketName": "abc", "region": "mars"}),
            "spec.region",
            "Unsupported value: \"mars\"",
        ),
        (
            json!({"bucketName": "abc", "size": 0}),
            "spec.size",
            "greater than or equal to 1",
        ),
        (
            json!({"bucketName": "abc", "size": 101}),
            "spec.size",
            "less than or equal to 100",
        ),
        (
            json!({"bucketName": "abc", "size": "big"}),
            "spec.size",
            "must be of type integer",
        ),
        (
            json!({"bucketName": "abc", "ratio": 0}),
            "spec.ratio",
            "should be greater than 0",
        ),
        (
            json!({"bucketName": "abc", "items": []}),
            "spec.items",
            "at least 1 items",
        ),
        (
            json!({"bucketName": "abc", "items": ["a", "b", "c", "d"]}),
            "spec.items",
            "Too many",
        ),
        (
            json!({"bucketName": "abc", "tags": {"k": 1}}),
            "spec.tags.k",
            "must be of type string",
        ),
        (
            json!({"bucketName": "abc", "port": true}),
            "spec.port",
            "integer,string",
        ),
    ];
    for (i, (spec, field, text)) in cases.into_iter().enumerate() {
        let o: DynamicObject =
            serde_json::from_value(widget_json(&format!("w{i}"), spec.clone())).unwrap();
        let st = api_err(api.create(&PostParams::default(), &o).await.unwrap_err());
        assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"), "{spec}");
        assert!(
            st.message.starts_with(&format!(
                "Widget.test.kaws.io \"w{i}\" is invalid: {field}: "
            )),
            "{}",
            st.message
        );
        assert!(st.message.contains(text), "{spec}: {}", st.message);
        let causes = st.details.unwrap().causes;
        assert_eq!(causes[0].field, field);
    }
    let ok = create_widget(
        &c,
        "fine",
        json!({"bucketName": "abc", "port": "http", "note": null, "extra": {"x": {"y": 1}}}),
    )
    .await;
    assert_eq!(ok.data["spec"]["extra"]["x"]["y"], 1);
    let st = api_err(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(widget_json("Bad_Name", json!({"bucketName": "abc"}))).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        st.message
            .contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{}",
        st.message
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let w = create_widget(&c, "w", json!({"bucketName": "abc", "bogus": 1})).await;
    assert!(w.data["spec"].get("bogus").is_none());
    assert_eq!(w.data["spec"]["region"], "us-east-1");
    assert_eq!(w.data["spec"]["size"], 10);
    let (code, _, body) = raw(
        &s.url(),
        "POST",
        "/apis/test.kaws.io/v1/namespaces/default/widgets?fieldValidation=Strict",
        &[("Content-Type", "application/json")],
        &widget_json("strict", json!({"bucketName": "abc", "bogus": 1})).to_string(),
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("unknown field \\\"spec.bogus\\\""), "{body}");
    let (code, head, _) = raw(
        &s.url(),
        "POST",
        "/apis/test.kaws.io/v1/namespaces/default/widgets?fieldValidation=Warn",
        &[("Content-Type", "application/json")],
        &widget_json("warn", json!({"bucketName": "abc", "bogus": 1})).to_string(),
    )
    .await;
    assert_eq!(code, 201);
    assert!(
        head.to_lowercase()
            .contains("warning: 299 - \"unknown field \\\"spec.bogus\\\"\""),
        "{head}"
    );
}

#[tokio::test]
async fn cel_transition_rule_makes_bucket_name_immutable() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let st = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"bucketName": "other"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert_eq!(
        st.message,
        "Widget.test.kaws.io \"w\" is invalid: spec.bucketName: Invalid value: \"string\": bucketName is immutable"
    );
    assert_eq!(st.details.unwrap().causes[0].field, "spec.bucketName");
    assert!(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}}))
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn removing_an_owner_garbage_collects_its_secret() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    let sec: Secret = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "test.kaws.io/v1", "kind": "Widget", "name": "w", "uid": w.uid().unwrap()}]},
        "stringData": {"password": "hunter2"}})).unwrap();
    let created = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
    assert!(created.string_data.is_none());
    dyn_api(&c)
        .delete("w", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(secrets.get("owned").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn create_errors_match_the_apiserver() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let api = dyn_api(&c);
    let o: DynamicObject =
        serde_json::from_value(widget_json("w", json!({"bucketName": "abc"}))).unwrap();
    let st = api_err(api.create(&PostParams::default(), &o).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(st.message, "widgets.test.kaws.io \"w\" already exists");
    let missing: Api<DynamicObject> = Api::namespaced_with(c.clone(), "nope", &widget_resource());
    let st = api_err(
        missing
            .create(&PostParams::default(), &o)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    let generated: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget",
        "metadata": {"generateName": "w-"}, "spec": {"bucketName": "abc"}}))
        .unwrap();
    let made = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(
        made.name_any().starts_with("w-") && made.name_any().len() == 7,
        "{}",
        made.name_any()
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let o2: DynamicObject =
        serde_json::from_value(widget_json("dry", json!({"bucketName": "abc"}))).unwrap();
    api.create(&dry, &o2).await.unwrap();
    assert_eq!(api_err(api.get("dry").await.unwrap_err()).code, 404);
    let (code, _, body) = raw(&s.url(), "GET", "/apis/nothing.example/v1/things", &[], "").await;
    assert_eq!(code, 404);
    assert!(body.contains("\"reason\":\"NotFound\""), "{body}");
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "tmp");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap(),
    )
    .await
    .unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("tmp").await;
    if let Ok(ns) = ns {
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    }
    eventually("namespace gone", Duration::from_secs(5), || {
        let nss = nss.clone();
        async move { nss.get_opt("tmp").await.unwrap().is_none() }
    })
    .await;
    assert!(cms.get_opt("m").await.unwrap().is_none());
    assert_eq!(
        api_err(
            nss.delete("default", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .code,
        403
    );
}

#[tokio::test]
async fn deleting_a_crd_removes_its_objects_and_stops_serving_it() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(c.clone());
    crds.delete("widgets.test.kaws.io", &DeleteParams::default())
        .await
        .unwrap();
    let st = api_err(dyn_api(&c).list(&ListParams::default()).await.unwrap_err());
    assert_eq!(st.code, 404);
    s.install_crds_from_dir(&fixtures_dir()).await.unwrap();
    assert!(
        dyn_api(&c)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn event_recorder_creates_and_updates_series() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let s = server().await;
    let c = s.client().await.unwrap();
    let w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let rec = Recorder::new(
        c.clone(),
        Reporter {
            controller: "kaws".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Created".into(),
        note: Some("made it".into()),
        action: "Create".into(),
        secondary: None,
    };
    let reference = w.object_ref(&widget_resource());
    rec.publish(&ev, &reference).await.unwrap();
    rec.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(c.clone());
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn injected_failures_return_statuses_and_retry_after() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    s.faults().fail_next("/widgets", 1, 500, None);
    let st = api_err(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (500, "InternalError"));
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "only the next request fails"
    );
    s.faults().fail_next("/widgets", 1, 429, Some(7));
    let (code, head, body) = raw(
        &s.url(),
        "GET",
        "/apis/test.kaws.io/v1/namespaces/default/widgets",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 429);
    assert!(head.to_lowercase().contains("retry-after: 7"), "{head}");
    assert!(body.contains("\"reason\":\"TooManyRequests\""), "{body}");
    s.faults().set_latency(Duration::from_millis(300));
    let t = std::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    s.faults().set_latency(Duration::ZERO);
    let (code, _, _) = raw(
        &s.url(),
        "POST",
        "/testserver/faults/fail-next?path=widgets&status=502",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        api_err(api.list(&ListParams::default()).await.unwrap_err()).code,
        502
    );
}

#[tokio::test]
async fn delay_next_holds_the_matching_request_while_others_go_on() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "held", json!({"bucketName": "abc"})).await;
    let hold = Duration::from_millis(1500);
    // A PATCH rule holds no GET.
    s.faults()
        .delay_next(Some("PATCH"), "/widgets/held$", 1, hold);
    let other_method = std::time::Instant::now();
    api.get("held").await.unwrap();
    assert!(
        other_method.elapsed() < hold,
        "{:?}",
        other_method.elapsed()
    );
    s.faults()
        .delay_next(Some("GET"), "/widgets/held$", 1, hold);
    let start = std::time::Instant::now();
    let held = tokio::spawn({
        let api = api.clone();
        async move { api.get("held").await.map(|_| std::time::Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.list(&ListParams::default()).await.unwrap();
    let listed = std::time::Instant::now();
    let answered = held.await.unwrap().unwrap();
    assert!(
        listed < answered,
        "the list was answered while the GET was held"
    );
    assert!(answered - start >= hold, "the GET was held");
    // The rule was for one request: the next GET is not held.
    let again = std::time::Instant::now();
    api.get("held").await.unwrap();
    assert!(again.elapsed() < hold, "{:?}", again.elapsed());
}

async fn watcher_recovers_after(fault: impl Fn(&kaws_testserver::Faults)) {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    create_widget(&c, "before", json!({"bucketName": "abc"})).await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "before");
    fault(&s.faults());
    create_widget(&c, "after", json!({"bucketName": "abc"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("watcher saw the new object");
        if let Some(Ok(o)) = next
            && o.name_any() == "after"
        {
            break;
        }
    }
}

#[tokio::test]
async fn watcher_recovers_after_drop_watches() {
    watcher_recovers_after(|f| f.drop_watches()).await;
}

#[tokio::test]
async fn watcher_recovers_after_restart() {
    watcher_recovers_after(|f| f.restart()).await;
}

#[tokio::test]
async fn put_without_resource_version_is_rejected_for_custom_resources_only() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let mut w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    w.metadata.resource_version = None;
    let st = api_err(
        api.replace("w", &PostParams::default(), &w)
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    let cm: Api<ConfigMap> = Api::default_namespaced(c.clone());
    cm.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap(),
    )
    .await
    .unwrap();
    let m: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "m"}, "data": {"k": "v"}})).unwrap();
    assert!(cm.replace("m", &PostParams::default(), &m).await.is_ok());
}

#[tokio::test]
async fn leases_and_core_events_round_trip_with_field_selectors() {
    use k8s_openapi::api::{coordination::v1::Lease, core::v1::Event as CoreEvent};
    let s = server().await;
    let c = s.client().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(c.clone());
    let l = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut l2 = l.clone();
    l2.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &l2)
        .await
        .unwrap();
    let st = api_err(
        leases
            .replace("leader", &PostParams::default(), &l)
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 409);
    let events: Api<CoreEvent> = Api::default_namespaced(c.clone());
    for (name, target) in [("e1", "x"), ("e2", "y")] {
        events
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                "metadata": {"name": name}, "reason": "Test",
                "involvedObject": {"kind": "Widget", "name": target, "namespace": "default"}}))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let found = events
        .list(&ListParams::default().fields("involvedObject.name=y,involvedObject.kind=Widget"))
        .await
        .unwrap();
    assert_eq!(
        found.items.iter().map(|e| e.name_any()).collect::<Vec<_>>(),
        ["e2"]
    );
}

#[tokio::test]
async fn streaming_list_watcher_sees_initial_and_live_objects() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "a", json!({"bucketName": "abc"})).await;
    let mut stream = watcher(dyn_api(&c), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "a");
    create_widget(&c, "b", json!({"bucketName": "abc"})).await;
    let second = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.name_any(), "b");
}

#[tokio::test]
async fn delete_collection_honours_selectors_and_namespaces() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    for (n, l) in [("a", "x"), ("b", "y"), ("c", "x")] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n, "labels": {"g": l}}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let sys: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    sys.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"g": "x"}}})).unwrap(),
    )
    .await
    .unwrap();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("g=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(left, ["b"]);
    assert!(
        sys.get_opt("a").await.unwrap().is_some(),
        "other namespaces untouched"
    );
}

#[tokio::test]
async fn table_requests_get_printer_columns_and_partial_metadata() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc", "size": 3})).await;
    dyn_api(&c)
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        )
        .await
        .unwrap();
    let (code, _, body) = raw(
        &s.url(),
        "GET",
        "/apis/test.kaws.io/v1/namespaces/default/widgets",
        &[(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Bucket", "Size", "Ready", "Age"]);
    let row = &t["rows"][0];
    assert_eq!(
        row["cells"].as_array().unwrap()[..4],
        [json!("w"), json!("abc"), json!(3), json!("False")]
    );
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], "w");
}

#[tokio::test]
async fn unsupported_methods_and_paths_get_statuses() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let (code, _, body) = raw(
        &s.url(),
        "POST",
        "/apis/test.kaws.io/v1/namespaces/default/widgets/w",
        &[("Content-Type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(code, 405);
    assert!(body.contains("\"reason\":\"MethodNotAllowed\""), "{body}");
    let (code, _, body) = raw(
        &s.url(),
        "GET",
        "/apis/test.kaws.io/v1/namespaces/default/widgets/w/scale",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 404);
    assert!(body.contains("\"kind\":\"Status\""), "{body}");
}

#[tokio::test]
async fn reinstalling_unchanged_crds_is_a_no_op() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let s = server().await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client().await.unwrap());
    let before = crds.get("widgets.test.kaws.io").await.unwrap();
    s.install_crds_from_dir(&fixtures_dir()).await.unwrap();
    let after = crds.get("widgets.test.kaws.io").await.unwrap();
    assert_eq!(before.resource_version(), after.resource_version());
    let conds = after.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );
}

// ---- Events: one store, two views ------------------------------------------------

#[tokio::test]
async fn events_written_through_either_api_are_read_through_the_other() {
    use k8s_openapi::api::{core::v1::Event as CoreEvent, events::v1::Event as V1Event};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let s = server().await;
    let c = s.client().await.unwrap();
    let w = create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let core: Api<CoreEvent> = Api::default_namespaced(c.clone());
    let v1: Api<V1Event> = Api::default_namespaced(c.clone());
    // A core watch started before the write sees the events.k8s.io write.
    let mut core_watch = core
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let rec = Recorder::new(
        c.clone(),
        Reporter {
            controller: "kaws".into(),
            instance: Some("kaws-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "AccessDenied".into(),
        note: Some("refused".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    rec.publish(&ev, &w.object_ref(&widget_resource()))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(WatchEvent::Added(e))) = core_watch.next().await {
                break e;
            }
        }
    })
    .await
    .expect("core watch sees the events.k8s.io write");
    assert_eq!(seen.reason.as_deref(), Some("AccessDenied"));

    // What kubectl describe asks for: involvedObject name/namespace/kind/uid.
    let uid = w.metadata.uid.clone().unwrap();
    let found = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name=w,involvedObject.namespace=default,involvedObject.kind=Widget,involvedObject.uid={uid}"
        )))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    let e = &found.items[0];
    assert_eq!(e.message.as_deref(), Some("refused"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reporting_component.as_deref(), Some("kaws"));
    assert_eq!(e.reporting_instance.as_deref(), Some("kaws-0"));
    assert_eq!(e.involved_object.name.as_deref(), Some("w"));
    assert_eq!(
        e.involved_object.api_version.as_deref(),
        Some("test.kaws.io/v1")
    );
    assert!(e.event_time.is_some());
    for sel in [
        "source=kaws",
        "reportingComponent=kaws",
        "reason=AccessDenied",
        "type=Warning",
        "involvedObject.apiVersion=test.kaws.io/v1",
    ] {
        let n = core
            .list(&ListParams::default().fields(sel))
            .await
            .unwrap()
            .items
            .len();
        assert_eq!(n, 1, "{sel}");
    }
    assert!(
        core.list(&ListParams::default().fields("involvedObject.uid=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A core Event (as kubectl or client-go's old recorder writes it) through events.k8s.io.
    core.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "old-style"}, "reason": "Scaled", "message": "to 3",
            "type": "Normal", "count": 4, "source": {"component": "legacy", "host": "node-1"},
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:05:00Z",
            "involvedObject": {"kind": "Widget", "name": "w", "namespace": "default"}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let e = v1.get("old-style").await.unwrap();
    assert_eq!(e.note.as_deref(), Some("to 3"));
    assert_eq!(e.deprecated_count, Some(4));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("w")
    );
    assert_eq!(
        e.deprecated_source
            .as_ref()
            .and_then(|s| s.component.as_deref()),
        Some("legacy")
    );
    assert!(e.deprecated_first_timestamp.is_some() && e.deprecated_last_timestamp.is_some());
    // events.k8s.io field labels are converted; the core spellings are not accepted there.
    let names = |l: Vec<V1Event>| l.into_iter().map(|e| e.name_any()).collect::<Vec<_>>();
    assert_eq!(
        names(
            v1.list(&ListParams::default().fields("regarding.name=w,reportingController=kaws"))
                .await
                .unwrap()
                .items
        )
        .len(),
        1
    );
    assert_eq!(
        names(
            v1.list(&ListParams::default().fields("source=legacy"))
                .await
                .unwrap()
                .items
        ),
        ["old-style"]
    );
    let st = api_err(
        v1.list(&ListParams::default().fields("involvedObject.name=w"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (400, "field label not supported: involvedObject.name")
    );
    // A merge patch through one view (kaws' series update) is seen through the other.
    v1.patch(
        "old-style",
        &PatchParams::default(),
        &Patch::Merge(json!({"note": "to 4"})),
    )
    .await
    .unwrap();
    assert_eq!(
        core.get("old-style").await.unwrap().message.as_deref(),
        Some("to 4")
    );
}

#[tokio::test]
async fn field_selectors_outside_the_supported_labels_are_rejected() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let st = api_err(
        dyn_api(&c)
            .list(&ListParams::default().fields("spec.bucketName=abc"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            400,
            "\"spec.bucketName\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        )
    );
    let secrets: Api<Secret> = Api::default_namespaced(c.clone());
    assert!(
        secrets
            .list(&ListParams::default().fields("type=Opaque"))
            .await
            .is_ok()
    );
    assert_eq!(
        api_err(
            secrets
                .list(&ListParams::default().fields("data.x=y"))
                .await
                .unwrap_err()
        )
        .code,
        400
    );
}

// ---- server-side apply and managedFields ------------------------------------------

fn managers_of(obj: &DynamicObject, pointer: &str) -> Vec<String> {
    obj.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer(pointer).is_some())
        })
        .map(|e| {
            format!(
                "{}/{}{}",
                e.manager.unwrap_or_default(),
                e.operation.unwrap_or_default(),
                e.subresource.map(|s| format!("/{s}")).unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn every_write_path_records_its_manager() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let obj: DynamicObject =
        serde_json::from_value(widget_json("w", json!({"bucketName": "abc"}))).unwrap();
    let w = api
        .create(
            &PostParams {
                field_manager: Some("creator".into()),
                ..Default::default()
            },
            &obj,
        )
        .await
        .unwrap();
    assert_eq!(managers_of(&w, "/f:spec/f:bucketName"), ["creator/Update"]);
    let entry = &w.metadata.managed_fields.as_ref().unwrap()[0];
    assert_eq!(entry.api_version.as_deref(), Some("test.kaws.io/v1"));
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    assert!(entry.time.is_some());

    let mut put = w.clone();
    put.data["spec"]["size"] = json!(4);
    let w = api
        .replace(
            "w",
            &PostParams {
                field_manager: Some("putter".into()),
                ..Default::default()
            },
            &put,
        )
        .await
        .unwrap();
    assert_eq!(managers_of(&w, "/f:spec/f:size"), ["putter/Update"]);

    let pp = |m: &str| PatchParams {
        field_manager: Some(m.into()),
        ..Default::default()
    };
    let w = api
        .patch(
            "w",
            &pp("merger"),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        managers_of(&w, "/f:metadata/f:labels/f:a"),
        ["merger/Update"]
    );
    let w = api
        .patch(
            "w",
            &pp("jsonpatcher"),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/spec/tags", "value": {"t": "v"}}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        managers_of(&w, "/f:spec/f:tags/f:t"),
        ["jsonpatcher/Update"]
    );
    let status = json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "status": {"arn": "arn:x",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    let w = api
        .patch_status(
            "w",
            &PatchParams::apply("kaws").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(managers_of(&w, "/f:status/f:arn"), ["kaws/Apply/status"]);
    assert_eq!(
        managers_of(&w, "/f:status/f:conditions/k:{\"type\":\"Ready\"}/f:status"),
        ["kaws/Apply/status"]
    );
    // Re-applying the same status is a no-op: no new resourceVersion.
    let again = api
        .patch_status(
            "w",
            &PatchParams::apply("kaws").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), w.resource_version());
    // Everything the earlier writers set is still theirs.
    assert_eq!(managers_of(&again, "/f:spec/f:size"), ["putter/Update"]);
    assert_eq!(
        managers_of(&again, "/f:spec/f:bucketName"),
        ["creator/Update"]
    );
    // A force flag on a non-apply patch is refused, as by the real server.
    let st = api_err(
        c.request::<Value>(
            http::Request::patch("/apis/test.kaws.io/v1/namespaces/default/widgets/w?force=true")
                .header("content-type", "application/merge-patch+json")
                .body(b"{}".to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert!(st.message.contains("force: Forbidden"), "{}", st.message);
}

#[tokio::test]
async fn non_forced_apply_conflicts_with_another_managers_field() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let apply = |m: &str, force: bool| {
        let p = PatchParams::apply(m);
        if force { p.force() } else { p }
    };
    api.patch(
        "w",
        &apply("team-a", false),
        &Patch::Apply(widget_json("w", json!({"bucketName": "abc", "size": 3}))),
    )
    .await
    .unwrap();
    let st = api_err(
        api.patch(
            "w",
            &apply("team-b", false),
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc", "size": 5}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        st.message,
        "Apply failed with 1 conflict: conflict with \"team-a\": .spec.size"
    );
    let causes = st.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(
        (
            causes[0].reason.as_str(),
            causes[0].message.as_str(),
            causes[0].field.as_str()
        ),
        (
            "FieldManagerConflict",
            "conflict with \"team-a\"",
            ".spec.size"
        )
    );
    assert_eq!(api.get("w").await.unwrap().data["spec"]["size"], 3);

    // Forced: team-b takes .spec.size; bucketName (same value) is shared.
    let w = api
        .patch(
            "w",
            &apply("team-b", true),
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc", "size": 5}))),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 5);
    assert_eq!(managers_of(&w, "/f:spec/f:size"), ["team-b/Apply"]);
    let mut shared = managers_of(&w, "/f:spec/f:bucketName");
    shared.sort();
    assert_eq!(shared, ["team-a/Apply", "team-b/Apply"]);

    // An Update takes what it changes; the applier then conflicts with it.
    let w = api
        .patch(
            "w",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"size": 8}})),
        )
        .await
        .unwrap();
    assert_eq!(managers_of(&w, "/f:spec/f:size"), ["editor/Update"]);
    let st = api_err(
        api.patch(
            "w",
            &apply("team-b", false),
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc", "size": 5}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Apply failed with 1 conflict: conflict with \"editor\" using test.kaws.io/v1: .spec.size"
    );
}

#[tokio::test]
async fn a_field_an_applier_drops_stays_while_another_manager_owns_it() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    let both = widget_json(
        "w",
        json!({"bucketName": "abc", "size": 3, "tags": {"a": "1"}}),
    );
    for m in ["one", "two"] {
        api.patch("w", &PatchParams::apply(m), &Patch::Apply(&both))
            .await
            .unwrap();
    }
    let w = api
        .patch(
            "w",
            &PatchParams::apply("one"),
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc"}))),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 3, "still owned by two");
    assert_eq!(w.data["spec"]["tags"], json!({"a": "1"}));
    assert_eq!(managers_of(&w, "/f:spec/f:size"), ["two/Apply"]);
    let w = api
        .patch(
            "w",
            &PatchParams::apply("two"),
            &Patch::Apply(widget_json("w", json!({"bucketName": "abc"}))),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 10, "removed, then defaulted");
    assert!(w.data["spec"].get("tags").is_none(), "{:?}", w.data);
}

#[tokio::test]
async fn apply_conflicts_name_keyed_list_items_and_status_managers() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let api = dyn_api(&c);
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let status = |conds: Value| json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "status": {"conditions": conds}});
    api.patch_status(
        "w",
        &PatchParams::apply("kaws"),
        &Patch::Apply(status(json!([{"type": "Ready", "status": "True"}]))),
    )
    .await
    .unwrap();
    // Another manager's own condition does not conflict (list-map keyed by type) ...
    api.patch_status(
        "w",
        &PatchParams::apply("other"),
        &Patch::Apply(status(json!([{"type": "Extra", "status": "True"}]))),
    )
    .await
    .unwrap();
    // ... but changing kaws' Ready condition does.
    let st = api_err(
        api.patch_status(
            "w",
            &PatchParams::apply("other"),
            &Patch::Apply(status(json!([{"type": "Ready", "status": "False"}]))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Apply failed with 1 conflict: conflict with \"kaws\" with subresource \"status\": .status.conditions[type=\"Ready\"].status"
    );
}

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn crd_condition(crd: &Crd, kind: &str) -> Option<(String, String)> {
    crd.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn create_held_widget(c: &kube::Client, name: &str) {
    let o = serde_json::from_value(json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget",
        "metadata": {"name": name, "finalizers": ["test.kaws.io/cleanup"]}, "spec": {"bucketName": "abc"}}))
    .unwrap();
    dyn_api(c).create(&PostParams::default(), &o).await.unwrap();
}

#[tokio::test]
async fn deleting_a_crd_keeps_it_terminating_until_instance_finalizers_are_removed() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_held_widget(&c, "held").await;
    create_widget(&c, "plain", json!({"bucketName": "abc"})).await;
    let crds: Api<Crd> = Api::all(c.clone());
    let name = "widgets.test.kaws.io";
    let answered = crds
        .delete(name, &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the CRD is returned, not a Status");
    assert!(answered.metadata.deletion_timestamp.is_some());
    assert!(
        answered
            .finalizers()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".to_string())
    );

    let crd = crds.get(name).await.unwrap();
    assert_eq!(
        crd_condition(&crd, "Terminating"),
        Some(("True".into(), "InstanceDeletionInProgress".into()))
    );
    assert_eq!(crd_condition(&crd, "Established").unwrap().0, "True");
    // Instances are deleted: the one without finalizers is gone, the held
    // one is marked and can still be read, listed and patched.
    let api = dyn_api(&c);
    assert_eq!(api_err(api.get("plain").await.unwrap_err()).code, 404);
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // Creates are refused, as the custom resource handler does.
    let o: DynamicObject =
        serde_json::from_value(widget_json("late", json!({"bucketName": "abc"}))).unwrap();
    let st = api_err(api.create(&PostParams::default(), &o).await.unwrap_err());
    assert_eq!(
        (st.code, st.reason.as_str(), st.message.as_str()),
        (
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating"
        )
    );
    let (code, _, body) = raw(&s.url(), "GET", "/apis/test.kaws.io/v1", &[], "").await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list["resources"][0]["verbs"],
        json!(["delete", "deletecollection", "get", "list", "watch"])
    );
    // A second DELETE changes nothing.
    crds.delete(name, &DeleteParams::default()).await.unwrap();
    assert!(crds.get_opt(name).await.unwrap().is_some());

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(crds.get_opt(name).await.unwrap().is_none());
    assert_eq!(
        api_err(api.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    let (code, _, _) = raw(&s.url(), "GET", "/apis/test.kaws.io/v1", &[], "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_crd_with_its_own_finalizer_outlives_its_instances() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let crds: Api<Crd> = Api::all(c.clone());
    let name = "widgets.test.kaws.io";
    crds.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/keep"]}})),
    )
    .await
    .unwrap();
    crds.delete(name, &DeleteParams::default()).await.unwrap();
    let crd = crds.get(name).await.unwrap();
    assert_eq!(crd.finalizers(), ["example.com/keep"]);
    assert_eq!(
        crd_condition(&crd, "Terminating"),
        Some(("False".into(), "InstanceDeletionCompleted".into()))
    );
    assert_eq!(api_err(dyn_api(&c).get("w").await.unwrap_err()).code, 404);
    crds.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(crds.get_opt(name).await.unwrap().is_none());
}

/// A ConfigMap owned by `owners` (uid, blockOwnerDeletion), with `finalizers`.
async fn dependent(
    c: &kube::Client,
    name: &str,
    owners: &[(&DynamicObject, bool)],
    finalizers: &[&str],
) {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(o, block)| {
            json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "name": o.name_any(),
            "uid": o.uid().unwrap(), "blockOwnerDeletion": block})
        })
        .collect();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": name, "ownerReferences": refs, "finalizers": finalizers}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
}

fn owner_names(cm: &ConfigMap) -> Vec<String> {
    cm.owner_references()
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[tokio::test]
async fn foreground_deletion_deletes_dependents_first_and_waits_for_blocking_ones() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let owner = create_widget(&c, "owner", json!({"bucketName": "abc"})).await;
    let other = create_widget(&c, "other", json!({"bucketName": "abc"})).await;
    dependent(&c, "blocker", &[(&owner, true)], &["test.kaws.io/hold"]).await;
    dependent(&c, "loose", &[(&owner, false)], &["test.kaws.io/hold"]).await;
    dependent(&c, "plain", &[(&owner, true)], &[]).await;
    dependent(&c, "shared", &[(&owner, true), (&other, false)], &[]).await;
    let api = dyn_api(&c);
    let answered = api
        .delete("owner", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(answered.metadata.deletion_timestamp.is_some());
    assert_eq!(answered.finalizers(), ["foregroundDeletion"]);

    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    assert!(cms.get_opt("plain").await.unwrap().is_none());
    for held in ["blocker", "loose"] {
        let cm = cms.get(held).await.unwrap();
        assert!(cm.metadata.deletion_timestamp.is_some(), "{held}");
    }
    // A dependent with another live owner only loses its reference.
    let shared = cms.get("shared").await.unwrap();
    assert!(shared.metadata.deletion_timestamp.is_none());
    assert_eq!(owner_names(&shared), ["other"]);
    // The owner waits for the blocking dependent, not for the loose one.
    let waiting = api.get("owner").await.unwrap();
    assert_eq!(waiting.finalizers(), ["foregroundDeletion"]);
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    cms.patch("blocker", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert!(cms.get_opt("blocker").await.unwrap().is_none());
    assert!(api.get_opt("owner").await.unwrap().is_none());
    assert!(
        cms.get("loose")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch("loose", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert!(cms.get_opt("loose").await.unwrap().is_none());
}

#[tokio::test]
async fn orphan_deletion_removes_owner_references_and_keeps_dependents() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let owner = create_widget(&c, "owner", json!({"bucketName": "abc"})).await;
    let other = create_widget(&c, "other", json!({"bucketName": "abc"})).await;
    dependent(&c, "only", &[(&owner, true)], &[]).await;
    dependent(&c, "shared", &[(&owner, false), (&other, false)], &[]).await;
    let api = dyn_api(&c);
    let answered = api
        .delete("owner", &DeleteParams::orphan())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(answered.finalizers(), ["orphan"]);
    assert!(api.get_opt("owner").await.unwrap().is_none());
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    let only = cms.get("only").await.unwrap();
    assert!(only.metadata.deletion_timestamp.is_none());
    assert!(owner_names(&only).is_empty());
    assert_eq!(owner_names(&cms.get("shared").await.unwrap()), ["other"]);

    // The orphan finalizer waits behind the owner's own finalizers; the
    // deprecated orphanDependents=true means the same.
    create_held_widget(&c, "held").await;
    let held = api.get("held").await.unwrap();
    dependent(&c, "kept", &[(&held, false)], &[]).await;
    let path = "/apis/test.kaws.io/v1/namespaces/default/widgets/held";
    let (code, _, body) = raw(
        &s.url(),
        "DELETE",
        path,
        &[("Content-Type", "application/json")],
        r#"{"orphanDependents": true}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let held = api.get("held").await.unwrap();
    assert_eq!(held.finalizers(), ["test.kaws.io/cleanup"]);
    assert!(owner_names(&cms.get("kept").await.unwrap()).is_empty());
}

#[tokio::test]
async fn propagation_policy_comes_from_the_query_without_a_body() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let owner = create_widget(&c, "owner", json!({"bucketName": "abc"})).await;
    dependent(&c, "dep", &[(&owner, true)], &[]).await;
    let path = "/apis/test.kaws.io/v1/namespaces/default/widgets/owner?propagationPolicy=Orphan";
    let (code, _, body) = raw(&s.url(), "DELETE", path, &[], "").await;
    assert_eq!(code, 200, "{body}");
    let answered: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answered["metadata"]["finalizers"], json!(["orphan"]));
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    assert!(owner_names(&cms.get("dep").await.unwrap()).is_empty());
    // Background (the default) deletes the dependents after the owner.
    let owner = create_widget(&c, "owner2", json!({"bucketName": "abc"})).await;
    dependent(&c, "dep2", &[(&owner, true)], &[]).await;
    let answered = dyn_api(&c)
        .delete("owner2", &DeleteParams::background())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(answered.finalizers().is_empty());
    assert!(cms.get_opt("dep2").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_delete_options_are_422() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_widget(&c, "w", json!({"bucketName": "abc"})).await;
    let path = "/apis/test.kaws.io/v1/namespaces/default/widgets/w";
    let json_ct = [("Content-Type", "application/json")];
    let (code, _, body) = raw(
        &s.url(),
        "DELETE",
        path,
        &json_ct,
        r#"{"propagationPolicy": "Sideways"}"#,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        st["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sideways\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );
    let (code, _, body) = raw(
        &s.url(),
        "DELETE",
        path,
        &json_ct,
        r#"{"propagationPolicy": "Foreground", "orphanDependents": true}"#,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        st["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"Foreground\": orphanDependents and deletionPropagation cannot be both set"
    );
    assert!(dyn_api(&c).get_opt("w").await.unwrap().is_some());
}

/// Every `$ref` in `v` names a key of `defs` (after `prefix`).
fn refs_resolve(v: &Value, prefix: &str, defs: &serde_json::Map<String, Value>) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, x)| {
            if k == "$ref" {
                x.as_str()
                    .and_then(|r| r.strip_prefix(prefix))
                    .is_some_and(|n| defs.contains_key(n))
            } else {
                refs_resolve(x, prefix, defs)
            }
        }),
        Value::Array(a) => a.iter().all(|x| refs_resolve(x, prefix, defs)),
        _ => true,
    }
}

fn gvks(defs: &serde_json::Map<String, Value>) -> std::collections::BTreeSet<String> {
    defs.values()
        .filter_map(|d| d.pointer("/x-kubernetes-group-version-kind/0"))
        .map(|g| {
            format!(
                "{}/{}/{}",
                g["group"].as_str().unwrap(),
                g["version"].as_str().unwrap(),
                g["kind"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn openapi_v2_has_the_v3_definitions_as_json_and_protobuf() {
    let s = server().await;
    let get = |accept: &'static str| {
        let url = s.url();
        async move { raw(&url, "GET", "/openapi/v2", &[("Accept", accept)], "").await }
    };
    let (code, head, body) = get("application/json").await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let defs = doc["definitions"].as_object().unwrap();
    let widget = &defs["io.kaws.test.v1.Widget"];
    assert_eq!(
        widget["x-kubernetes-group-version-kind"],
        json!([{"group": "test.kaws.io", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(
        widget.pointer("/properties/spec/properties/bucketName/description"),
        Some(&json!("Name of the bucket; immutable."))
    );
    assert_eq!(
        widget["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(refs_resolve(&doc, "#/definitions/", defs));
    assert!(!body.contains("nullable") && !body.contains("#/components/"));
    let patch =
        &doc["paths"]["/apis/test.kaws.io/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"),
        "{patch}"
    );

    // The same kinds as the v3 documents.
    let (_, _, root) = raw(&s.url(), "GET", "/openapi/v3", &[], "").await;
    let root: Value = serde_json::from_str(&root).unwrap();
    let mut v3 = std::collections::BTreeSet::new();
    for entry in root["paths"].as_object().unwrap().values() {
        let url = entry["serverRelativeURL"].as_str().unwrap();
        let (_, _, gv) = raw(&s.url(), "GET", url, &[], "").await;
        let gv: Value = serde_json::from_str(&gv).unwrap();
        v3.extend(gvks(gv["components"]["schemas"].as_object().unwrap()));
    }
    assert_eq!(gvks(defs), v3);
    assert!(v3.contains("/v1/Secret") && v3.contains("test.kaws.io/v1/Widget"));

    // What client-go's OpenAPISchema() asks for.
    let (code, head, body) =
        get("application/com.github.proto-openapi.spec.v2@v1.0+protobuf").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
        "{head}"
    );
    assert!(body.starts_with("\n\u{3}2.0"), "{:?}", &body[..10]);
    assert!(body.contains("io.kaws.test.v1.Widget"));
    let (code, _, _) = get("text/plain").await;
    assert_eq!(code, 406);

    // A CRD that is gone leaves the document.
    let crds: Api<Crd> = Api::all(s.client().await.unwrap());
    crds.delete("widgets.test.kaws.io", &DeleteParams::default())
        .await
        .unwrap();
    let (_, _, body) = get("application/json").await;
    assert!(!body.contains("io.kaws.test.v1.Widget"));
}

#[tokio::test]
async fn a_dependent_whose_owners_do_not_exist_is_collected() {
    let s = server().await;
    let c = s.client().await.unwrap();
    let live = create_widget(&c, "live", json!({"bucketName": "abc"})).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    let gone = json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000"});
    let mine = json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "name": "live",
        "uid": live.uid().unwrap()});
    for (name, refs) in [("orphaned", json!([gone])), ("mixed", json!([gone, mine]))] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": refs}}))
                .unwrap(),
        )
        .await
        .unwrap();
    }
    // As the real garbage collector: no live owner → deleted; a live one
    // left → only the dangling reference goes.
    assert!(cms.get_opt("orphaned").await.unwrap().is_none());
    assert_eq!(owner_names(&cms.get("mixed").await.unwrap()), ["live"]);
    let plain: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap();
    cms.create(&PostParams::default(), &plain).await.unwrap();
    assert!(cms.get_opt("plain").await.unwrap().is_some());
}

#[tokio::test]
async fn protobuf_delete_options_carry_the_propagation_policy() {
    // What client-go's typed clients (Helm) send: a runtime.Unknown envelope
    // around metav1.DeleteOptions{propagationPolicy: "Orphan"}.
    let ld = |num: u8, payload: &[u8]| {
        let mut v = vec![(num << 3) | 2, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    };
    let type_meta = [ld(1, b"v1"), ld(2, b"DeleteOptions")].concat();
    let body = [
        b"k8s\0".to_vec(),
        ld(1, &type_meta),
        ld(2, &ld(4, b"Orphan")),
    ]
    .concat();
    let body = String::from_utf8(body).unwrap();
    let s = server().await;
    let c = s.client().await.unwrap();
    let owner = create_widget(&c, "owner", json!({"bucketName": "abc"})).await;
    dependent(&c, "dep", &[(&owner, true)], &[]).await;
    let (code, _, answer) = raw(
        &s.url(),
        "DELETE",
        "/apis/test.kaws.io/v1/namespaces/default/widgets/owner",
        &[("Content-Type", "application/vnd.kubernetes.protobuf")],
        &body,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["metadata"]["finalizers"], json!(["orphan"]));
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    assert!(owner_names(&cms.get("dep").await.unwrap()).is_empty());
}

#[tokio::test]
async fn watches_of_a_deleted_crd_end_after_the_last_deletion() {
    let s = server().await;
    let c = s.client().await.unwrap();
    create_held_widget(&c, "held").await;
    let api = dyn_api(&c);
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = stream.try_next().await.unwrap();
    assert!(matches!(first, Some(WatchEvent::Added(_))), "{first:?}");
    let crds: Api<Crd> = Api::all(c.clone());
    crds.delete("widgets.test.kaws.io", &DeleteParams::default())
        .await
        .unwrap();
    // Terminating: the watch goes on and shows the instance being deleted.
    let marked = stream.try_next().await.unwrap();
    assert!(
        matches!(&marked, Some(WatchEvent::Modified(o)) if o.metadata.deletion_timestamp.is_some()),
        "{marked:?}"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends once the CRD is gone");
    assert!(
        matches!(events.as_slice(), [Ok(WatchEvent::Deleted(_))]),
        "{events:?}"
    );
}
