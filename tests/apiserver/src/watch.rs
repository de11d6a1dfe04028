//! Watch streams: newline-delimited JSON events read from the per-resource
//! event log, so every watcher sees events in resourceVersion order with no
//! gaps or duplicates, and learns about compaction through a 410 ERROR event.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::Response,
};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    App,
    selectors::Selectors,
    store::{EventType, Target, namespace_of},
};

/// Parsed watch query parameters.
#[derive(Clone, Debug, Default)]
pub struct WatchParams {
    /// None for "" or "0": start with the current state.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
    pub selectors: Selectors,
}

/// Turns a stored object into what goes on the wire (versioned object or Table).
pub type Render = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

fn line(kind: &str, obj: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn in_scope(t: &Target, obj: &Value) -> bool {
    t.namespace
        .as_deref()
        .is_none_or(|ns| namespace_of(obj) == ns)
}

pub fn serve(app: Arc<App>, t: Target, p: WatchParams, render: Render) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let bookmark_interval = app.bookmark_interval;
    tokio::spawn(async move {
        let mut rv_rx = app.store.notify.subscribe();
        let mut drops = app.faults.watch_drops();
        drops.mark_unchanged();
        let key = t.def.key();
        let bookmark = |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                json!({"kind": t.def.kind, "apiVersion": t.def.api_version(&t.version), "metadata": meta}),
            )
        };
        let (initial, mut last) = {
            let st = app.store.lock();
            match p.resource_version {
                Some(rv) if !p.send_initial_events => (Vec::new(), rv),
                _ => (st.snapshot(&t, &p.selectors), st.rv),
            }
        };
        for o in initial {
            if tx.send(line("ADDED", render(&o))).await.is_err() {
                return;
            }
        }
        if p.send_initial_events && tx.send(bookmark(last, true)).await.is_err() {
            return;
        }
        let deadline = p.timeout.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(bookmark_interval);
        tick.tick().await;
        loop {
            let (batch, served) = {
                let st = app.store.lock();
                // A custom resource whose CRD is gone: its storage is torn
                // down and the watch ends, as in apiextensions-apiserver.
                let served =
                    !t.def.custom || st.find(&t.def.group, &t.version, &t.def.plural).is_some();
                (st.events_since(&key, last).map(|evs| (evs, st.rv)), served)
            };
            let (events, upto) = match batch {
                Ok(b) => b,
                Err(oldest) => {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {last} ({oldest})"),
                        "reason": "Expired", "code": 410
                    });
                    let _ = tx.send(line("ERROR", status)).await;
                    return;
                }
            };
            for ev in events {
                if !in_scope(&t, &ev.obj) {
                    continue;
                }
                let now = p.selectors.matches(&ev.obj);
                let before = ev.old.as_ref().is_some_and(|o| p.selectors.matches(o));
                let kind = match (ev.kind, before, now) {
                    (EventType::Added, _, true) => "ADDED",
                    (EventType::Modified, true, true) => "MODIFIED",
                    (EventType::Modified, false, true) => "ADDED",
                    (EventType::Modified, true, false) => "DELETED",
                    (EventType::Deleted, b, n) if b || n => "DELETED",
                    _ => continue,
                };
                if tx.send(line(kind, render(&ev.obj))).await.is_err() {
                    return;
                }
            }
            last = last.max(upto);
            if !served {
                return;
            }
            tokio::select! {
                r = rv_rx.changed() => if r.is_err() { return },
                _ = tick.tick(), if p.bookmarks => {
                    if tx.send(bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                _ = drops.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(futures::StreamExt::map(
        stream,
        Ok::<_, std::convert::Infallible>,
    ));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}
