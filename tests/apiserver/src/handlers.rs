//! HTTP routing: maps kube-apiserver URL shapes and verbs onto the store,
//! discovery, OpenAPI, tables and watches; also the admin fault endpoints.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::to_bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    App, discovery,
    errors::{ApiError, ApiResult, Cause},
    openapi,
    selectors::{FieldSelector, LabelSelector, Selectors},
    store::{DeleteOpts, FieldValidation, Propagation, Target, WriteOpts, Written},
    table, watch,
};

type Query = HashMap<String, String>;

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

fn ok(v: &Value) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, v, &[]))
}

/// Entry point for every request.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query: Query = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    if let Some(admin) = path.strip_prefix("/testserver/") {
        return match admin_request(&app, admin, &query) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    app.audit
        .record(req.headers(), req.method(), &path, truthy(&query, "watch"));
    let latency = app.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let full = if raw_query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{raw_query}")
    };
    if let Some(err) = app.faults.take_failure(&full) {
        return err.into_response();
    }
    if let Some(delay) = app.faults.take_delay(req.method().as_str(), &full) {
        tokio::time::sleep(delay).await;
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match to_bytes(req.into_body(), 256 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("failed to read request body: {e}"))
                .into_response();
        }
    };
    match route(&app, &method, &path, &query, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A fault rule's `path` regex (default: every path) and `count` (default 1).
fn rule(q: &Query) -> (String, usize) {
    let re = q.get("path").cloned().unwrap_or_else(|| ".*".into());
    let count = q.get("count").and_then(|v| v.parse().ok()).unwrap_or(1);
    (re, count)
}

/// A number the admin request must carry.
fn required<T: std::str::FromStr>(q: &Query, name: &str) -> ApiResult<T> {
    q.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
}

fn admin_request(app: &App, path: &str, q: &Query) -> ApiResult<Response> {
    let f = &app.faults;
    match path {
        "faults/drop-watches" => f.drop_watches(),
        "faults/restart" => f.restart(),
        "faults/latency" => {
            let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            f.set_latency(Duration::from_millis(ms));
        }
        "faults/fail-next" => {
            let (re, count) = rule(q);
            let retry = q.get("retryAfter").and_then(|v| v.parse().ok());
            f.fail_next(&re, count, required(q, "status")?, retry);
        }
        "faults/delay-next" => {
            let (re, count) = rule(q);
            let delay = Duration::from_millis(required(q, "ms")?);
            f.delay_next(q.get("method").map(String::as_str), &re, count, delay);
        }
        "requests" => {
            let token = q
                .get("token")
                .ok_or_else(|| ApiError::bad_request("token is required"))?;
            return ok(&json!(app.audit.accesses(token)));
        }
        _ => return Err(ApiError::no_route()),
    }
    ok(&json!({"ok": true}))
}

fn route(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = || {
        if method == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        ["version"] => {
            get_only()?;
            ok(&discovery::version())
        }
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            get_only()?;
            ok(&discovery::api_versions(&app.addr))
        }
        ["apis"] => {
            get_only()?;
            ok(&discovery::api_group_list(&app.store.lock()))
        }
        ["api", "v1"] => {
            get_only()?;
            ok(&discovery::resource_list(&app.store.lock(), "", "v1")
                .ok_or_else(ApiError::no_route)?)
        }
        ["apis", g] => {
            get_only()?;
            ok(&discovery::api_group(&app.store.lock(), g).ok_or_else(ApiError::no_route)?)
        }
        ["apis", g, v] => {
            get_only()?;
            ok(
                &discovery::resource_list(&app.store.lock(), g, v)
                    .ok_or_else(ApiError::no_route)?,
            )
        }
        ["openapi", "v2"] => {
            get_only()?;
            openapi_v2(app, headers)
        }
        ["openapi", "v3"] => ok(&openapi::root(&app.store.lock())),
        ["openapi", "v3", "api", "v1"] => {
            ok(&openapi::group_version(&app.store.lock(), "", "v1")
                .ok_or_else(ApiError::no_route)?)
        }
        ["openapi", "v3", "apis", g, v] => {
            ok(&openapi::group_version(&app.store.lock(), g, v).ok_or_else(ApiError::no_route)?)
        }
        ["api", "v1", rest @ ..] => resource(app, method, "", "v1", rest, q, headers, body),
        ["apis", g, v, rest @ ..] => resource(app, method, g, v, rest, q, headers, body),
        _ => Err(ApiError::no_route()),
    }
}

/// `/openapi/v2` negotiated as kube-openapi's handler does: the first Accept
/// clause matching JSON or the gnostic protobuf wins (`*/*` and no Accept
/// mean JSON); nothing matching → 406 with an empty body.
fn openapi_v2(app: &App, headers: &HeaderMap) -> ApiResult<Response> {
    const PB: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("*/*");
    let mut clauses: Vec<(f32, String)> = accept
        .split(',')
        .map(|c| {
            let mut parts = c.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse().ok())
                .unwrap_or(1.0);
            (q, media)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0));
    let protobuf = |m: &str| {
        matches!(
            m,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
                | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        )
    };
    for (_, media) in clauses {
        let (body, content_type) = match media.as_str() {
            "application/json" | "application/*" | "*/*" => (
                openapi::v2(&app.store.lock()).to_string().into_bytes(),
                "application/json",
            ),
            m if protobuf(m) => (
                crate::openapi_pb::encode(&openapi::v2(&app.store.lock())),
                PB,
            ),
            _ => continue,
        };
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        return Ok(resp);
    }
    Ok((StatusCode::NOT_ACCEPTABLE, "").into_response())
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    if ct.contains("protobuf") {
        return crate::protobuf::decode(body);
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn selectors(q: &Query, t: &Target) -> ApiResult<Selectors> {
    let labels = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let raw = q.get("fieldSelector").map(String::as_str).unwrap_or("");
    let mut fields = FieldSelector::parse(raw)?;
    fields.resolve(&t.def, &t.version)?;
    Ok(Selectors {
        labels: LabelSelector::parse(labels)?,
        fields,
    })
}

fn truthy(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn write_opts(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOpts> {
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation invalid value: {other}. Valid values are Ignore, Warn, Strict"
            )));
        }
    };
    Ok(WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        field_validation,
        field_manager: q.get("fieldManager").cloned(),
        force: truthy(q, "force"),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    })
}

#[allow(clippy::too_many_arguments)]
fn resource(
    app: &Arc<App>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    // /namespaces/{ns}/{plural}/... vs /namespaces/{name}[/status|/finalize]
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, p, tail @ ..] if !matches!(*p, "status" | "finalize") => {
            (Some(*ns), *p, tail.first().copied(), tail.get(1).copied())
        }
        [p, tail @ ..] => (None, *p, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::no_route()),
    };
    if rest.len() > 5 {
        return Err(ApiError::no_route());
    }
    let def = app
        .store
        .lock()
        .find(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if ns.is_some() && !def.namespaced {
        return Err(ApiError::no_route());
    }
    if let Some(s) = sub
        && !(s == "status" && def.has_status(version))
        && !(s == "finalize" && plural == "namespaces")
    {
        return Err(ApiError::no_route());
    }
    let sub = sub.filter(|s| *s == "status");
    let t = Target {
        def: def.clone(),
        version: version.to_string(),
        namespace: ns.map(String::from),
    };
    let table = wants_table(headers);
    let include = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    let written = |w: Written, code: StatusCode| Ok(json_response(code, &w.obj, &w.warnings));
    match (method.as_str(), name) {
        ("GET", None) if truthy(q, "watch") => {
            let rv = q
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0);
            let params = watch::WatchParams {
                resource_version: rv,
                bookmarks: truthy(q, "allowWatchBookmarks"),
                timeout: q
                    .get("timeoutSeconds")
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs),
                send_initial_events: truthy(q, "sendInitialEvents"),
                selectors: selectors(q, &t)?,
            };
            if let Some(bad) = q
                .get("resourceVersion")
                .filter(|v| !v.is_empty() && v.parse::<u64>().is_err())
            {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {bad}"
                )));
            }
            let render: watch::Render = {
                let t = t.clone();
                Arc::new(move |o: &Value| {
                    let presented = crate::store::present(&t, o);
                    if table {
                        let rv = presented
                            .pointer("/metadata/resourceVersion")
                            .cloned()
                            .unwrap_or(json!(""));
                        table::table(
                            &t.def,
                            &t.version,
                            &[presented],
                            &include,
                            json!({"resourceVersion": rv}),
                        )
                    } else {
                        presented
                    }
                })
            };
            Ok(watch::serve(app.clone(), t, params, render))
        }
        ("GET", None) => {
            let sel = selectors(q, &t)?;
            let limit = q.get("limit").and_then(|v| v.parse().ok());
            let list =
                app.store
                    .lock()
                    .list(&t, &sel, limit, q.get("continue").map(String::as_str))?;
            if table {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return ok(&table::table(
                    &def,
                    version,
                    &items,
                    &include,
                    list["metadata"].clone(),
                ));
            }
            ok(&list)
        }
        ("GET", Some(n)) => {
            let obj = app.store.lock().get(&t, n)?;
            if table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                return ok(&table::table(
                    &def,
                    version,
                    &[obj],
                    &include,
                    json!({"resourceVersion": rv}),
                ));
            }
            ok(&obj)
        }
        ("POST", None) => {
            let opts = write_opts(q, headers)?;
            let obj = parse_body(headers, body)?;
            let w = app.store.write(|st| st.create(&t, obj, &opts))?;
            written(w, StatusCode::CREATED)
        }
        ("PUT", Some(n)) => {
            let opts = write_opts(q, headers)?;
            let obj = parse_body(headers, body)?;
            let w = app.store.write(|st| st.update(&t, n, obj, sub, &opts))?;
            written(w, StatusCode::OK)
        }
        ("PATCH", Some(n)) => {
            let opts = write_opts(q, headers)?;
            let ct = content_type(headers);
            let existed = app.store.lock().get_raw(&t, n).is_some();
            let w = app
                .store
                .write(|st| st.patch(&t, n, sub, &ct, body, &opts))?;
            written(
                w,
                if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
            )
        }
        ("DELETE", Some(n)) => {
            let opts = delete_opts(q, headers, body)?;
            let v = app.store.write(|st| st.delete(&t, n, &opts))?;
            ok(&v)
        }
        ("DELETE", None) => {
            let opts = delete_opts(q, headers, body)?;
            let sel = selectors(q, &t)?;
            let v = app
                .store
                .write(|st| st.delete_collection(&t, &sel, &opts))?;
            ok(&v)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// DeleteOptions from the body or, when there is none, from the query (as
/// kube-apiserver's `DeleteResource`), validated like `ValidateDeleteOptions`.
fn delete_opts(q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<DeleteOpts> {
    let v: Value = if body.iter().any(|b| !b.is_ascii_whitespace()) {
        // client-go (e.g. Helm's release storage) sends DeleteOptions as protobuf.
        if content_type(headers).contains("protobuf") || body.starts_with(b"k8s\0") {
            crate::protobuf::decode_delete_options(body)?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        }
    } else {
        let mut v = json!({});
        if let Some(d) = q.get("dryRun") {
            v["dryRun"] = json!([d]);
        }
        if let Some(p) = q.get("propagationPolicy") {
            v["propagationPolicy"] = json!(p);
        }
        if let Some(o) = q.get("orphanDependents") {
            let b: bool = o.parse().map_err(|_| {
                ApiError::bad_request(format!("strconv.ParseBool: parsing {o:?}: invalid syntax"))
            })?;
            v["orphanDependents"] = json!(b);
        }
        v
    };
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let policy = text("/propagationPolicy");
    let orphan_dependents = v.get("orphanDependents").and_then(Value::as_bool);
    let mut causes = Vec::new();
    if let (Some(p), Some(_)) = (&policy, orphan_dependents) {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {p:?}: orphanDependents and deletionPropagation cannot be both set"
            ),
            field: "propagationPolicy".into(),
        });
    }
    let propagation = match policy.as_deref() {
        None => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
                field: "propagationPolicy".into(),
            });
            None
        }
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            causes,
        ));
    }
    Ok(DeleteOpts {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        dry_run: v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All")),
        propagation,
        orphan_dependents,
    })
}
