//! Records which API requests each client identity made (verb, group, resource, subresource,
//! namespace), so a test can compare what a controller actually used with its RBAC rules.
//! A client is identified by its bearer token; requests without one are not recorded.

use std::{collections::BTreeMap, sync::Mutex};

use axum::http::{HeaderMap, Method, header};
use serde::Serialize;

/// One kind of request, in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Access {
    pub verb: String,
    /// API group; empty for the core group and for non-resource URLs.
    pub group: String,
    /// Plural resource name, or the non-resource path (e.g. `/version`).
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests and requests across all namespaces.
    pub namespace: String,
}

/// Accesses per bearer token, each with how many requests made it.
#[derive(Default)]
pub struct Audit {
    seen: Mutex<BTreeMap<String, BTreeMap<Access, u64>>>,
}

impl Audit {
    pub fn record(&self, headers: &HeaderMap, method: &Method, path: &str, watch: bool) {
        let Some(token) = bearer(headers) else {
            return;
        };
        let access = classify(method, path, watch);
        if let Ok(mut seen) = self.seen.lock() {
            *seen.entry(token).or_default().entry(access).or_default() += 1;
        }
    }

    /// What the client with `token` did so far, sorted.
    pub fn accesses(&self, token: &str) -> Vec<Access> {
        self.requests(token).into_keys().collect()
    }

    /// How many requests of each kind the client with `token` made so far.
    pub fn requests(&self, token: &str) -> BTreeMap<Access, u64> {
        self.seen
            .lock()
            .map(|s| s.get(token).cloned())
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Maps a request onto the RBAC vocabulary, as the real API server's request-info resolver does.
pub fn classify(method: &Method, path: &str, watch: bool) -> Access {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => Some(("", rest)),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => Some((*g, rest)),
        _ => None,
    };
    let Some((group, rest)) = rest else {
        return Access {
            verb: method.as_str().to_lowercase(),
            group: String::new(),
            resource: path.to_string(),
            subresource: String::new(),
            namespace: String::new(),
        };
    };
    let (namespace, resource, name, sub) = match rest {
        ["namespaces", ns, p, tail @ ..] if !matches!(*p, "status" | "finalize") => {
            (*ns, *p, tail.first().copied(), tail.get(1).copied())
        }
        [p, tail @ ..] => ("", *p, tail.first().copied(), tail.get(1).copied()),
        [] => ("", "", None, None),
    };
    let verb = match (method.as_str(), name) {
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        (other, _) => return_verb(other),
    };
    Access {
        verb: verb.to_string(),
        group: group.to_string(),
        resource: resource.to_string(),
        subresource: sub.unwrap_or("").to_string(),
        namespace: namespace.to_string(),
    }
}

fn return_verb(method: &str) -> &'static str {
    match method {
        "HEAD" => "get",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_onto_rbac_verbs_and_resources() {
        let cases = [
            (
                Method::GET,
                "/apis/s3.kaws.io/v1alpha1/buckets",
                true,
                ("watch", "s3.kaws.io", "buckets", "", ""),
            ),
            (
                Method::GET,
                "/apis/s3.kaws.io/v1alpha1/namespaces/a/buckets",
                false,
                ("list", "s3.kaws.io", "buckets", "", "a"),
            ),
            (
                Method::PATCH,
                "/apis/s3.kaws.io/v1alpha1/namespaces/a/buckets/b/status",
                false,
                ("patch", "s3.kaws.io", "buckets", "status", "a"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/kube-system",
                false,
                ("get", "", "namespaces", "", ""),
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                false,
                ("create", "events.k8s.io", "events", "", "a"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/kaws",
                false,
                ("update", "coordination.k8s.io", "leases", "", "a"),
            ),
            (
                Method::GET,
                "/version",
                false,
                ("get", "", "/version", "", ""),
            ),
        ];
        for (method, path, watch, (verb, group, resource, sub, ns)) in cases {
            let a = classify(&method, path, watch);
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.group.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.namespace.as_str()
                ),
                (verb, group, resource, sub, ns),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn requests_are_counted_per_token_and_kind_of_request() {
        let audit = Audit::default();
        let token = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
            h
        };
        let secret = "/api/v1/namespaces/a/secrets/conn";
        for _ in 0..3 {
            audit.record(&token("kaws"), &Method::GET, secret, false);
        }
        audit.record(&token("kaws"), &Method::PATCH, secret, false);
        audit.record(&token("other"), &Method::GET, secret, false);
        audit.record(&HeaderMap::new(), &Method::GET, secret, false);

        let counts: Vec<(String, u64)> = audit
            .requests("kaws")
            .into_iter()
            .map(|(a, n)| (format!("{} {}", a.verb, a.resource), n))
            .collect();
        assert_eq!(
            counts,
            [
                ("get secrets".to_string(), 3),
                ("patch secrets".to_string(), 1)
            ]
        );
        assert_eq!(audit.accesses("kaws").len(), 2);
        assert_eq!(audit.requests("other").values().sum::<u64>(), 1);
        assert!(audit.requests("nobody").is_empty());
    }
}
