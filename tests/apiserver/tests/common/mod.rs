//! Shared helpers for the test server's integration tests.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use kaws_testserver::{Options, TestServer};
use kube::{
    Api, Client, CustomResource,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Typed view of the fixture CRD (schema comes from the YAML fixture).
#[derive(CustomResource, Clone, Debug, Default, Serialize, Deserialize)]
#[kube(
    group = "test.kaws.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    pub bucket_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Value>,
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub async fn server() -> TestServer {
    server_with(Options::default()).await
}

pub async fn server_with(mut opts: Options) -> TestServer {
    opts.crd_dirs.push(fixtures_dir());
    TestServer::start_with(opts)
        .await
        .expect("test server starts")
}

pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("test.kaws.io", "v1", "Widget"))
}

pub fn dyn_api(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &widget_resource())
}

pub fn widget_json(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "test.kaws.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

pub async fn create_widget(client: &Client, name: &str, spec: Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(widget_json(name, spec)).expect("valid object");
    dyn_api(client)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create widget")
}

/// The `metav1.Status` of a failed call.
pub fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns true or the timeout passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One raw HTTP/1.1 exchange, to see status lines and headers exactly.
pub async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}
