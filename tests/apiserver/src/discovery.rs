//! Legacy (non-aggregated) discovery documents. kubectl 1.32 asks for the
//! aggregated form first; answering plain `application/json` makes it fall
//! back to these, exactly as it does with an older server.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::store::State;

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kaws-testserver",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]
    })
}

/// group → served versions, preferred (storage) version first.
fn groups(st: &State) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for d in st.defs.values().filter(|d| !d.group.is_empty()) {
        let e = out
            .entry(d.group.clone())
            .or_insert_with(|| (d.storage_version().to_string(), BTreeSet::new()));
        for v in &d.versions {
            e.1.insert(v.name.clone());
        }
    }
    out.into_iter()
        .map(|(g, (pref, set))| {
            let mut vs = vec![pref.clone()];
            vs.extend(set.into_iter().filter(|v| *v != pref));
            (g, vs)
        })
        .collect()
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(json!({}))})
}

/// Built-in groups before CustomResourceDefinition groups, as kube-apiserver orders them (CRD
/// groups get the lowest priority): a CRD whose kind or plural a built-in also has (kaws'
/// `Role`, RBAC's `Role`) never shadows the built-in for `kubectl get role`.
pub fn api_group_list(st: &State) -> Value {
    let custom: BTreeSet<&str> = st
        .defs
        .values()
        .filter(|d| d.custom)
        .map(|d| d.group.as_str())
        .collect();
    let mut all: Vec<(String, Vec<String>)> = groups(st).into_iter().collect();
    all.sort_by_key(|(g, _)| (custom.contains(g.as_str()), g.clone()));
    let groups: Vec<Value> = all.iter().map(|(g, vs)| group_json(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(st: &State, group: &str) -> Option<Value> {
    let all = groups(st);
    let vs = all.get(group)?;
    let mut g = group_json(group, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// Every group/version pair served, core first ("" group → "v1").
pub fn group_versions(st: &State) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), "v1".to_string())];
    for (g, vs) in groups(st) {
        for v in vs {
            out.push((g.clone(), v));
        }
    }
    out
}

pub fn resource_list(st: &State, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for d in st.defs.values().filter(|d| d.group == group) {
        let Some(v) = d.version(version) else {
            continue;
        };
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs(),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        if v.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
