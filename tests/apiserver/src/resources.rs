//! The catalogue of served resources: the built-in kinds this server knows
//! and the ones registered from CustomResourceDefinitions.

use std::sync::Arc;

use serde_json::Value;

/// One served version of a resource.
#[derive(Clone, Debug)]
pub struct VersionDef {
    pub name: String,
    pub storage: bool,
    /// `openAPIV3Schema` for custom resources; `None` for built-ins (no schema checks).
    pub schema: Option<Value>,
    /// Compiled CEL rules, built once per CRD write.
    pub cel: Option<Arc<kube_cel::CompiledSchema>>,
    pub printer_columns: Vec<Value>,
    pub status_subresource: bool,
    /// Field selector labels from the CRD's `selectableFields` (`spec.color`).
    pub selectable_fields: Vec<String>,
}

/// A resource (group + plural) with everything discovery and storage need.
#[derive(Clone, Debug)]
pub struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    pub custom: bool,
    /// Storage shared with another resource (`events.k8s.io` Events are
    /// core/v1 Events); `None`: its own, `group/plural`.
    pub shared_storage: Option<String>,
    /// The CRD's `Terminating` condition is True: creates are refused and
    /// discovery lists only delete, deletecollection, get, list, watch.
    pub terminating: bool,
}

impl ResourceDef {
    /// Storage key shared by every version of the resource.
    pub fn key(&self) -> String {
        match &self.shared_storage {
            Some(k) => k.clone(),
            None => format!("{}/{}", self.group, self.plural),
        }
    }

    /// `group/plural`: how the catalogue names the resource.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Whether this is the `events.k8s.io` view of the core Event storage.
    pub fn is_events_v1(&self) -> bool {
        self.group == crate::events::EVENTS_GROUP && self.plural == "events"
    }

    /// The field selector labels the real server supports for this resource.
    pub fn field_labels(&self, version: &str) -> Vec<String> {
        let mut out = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        if self.custom {
            out.extend(
                self.version(version)
                    .map(|v| v.selectable_fields.clone())
                    .unwrap_or_default(),
            );
            return out;
        }
        let extra: &[&str] = match (self.group.as_str(), self.plural.as_str()) {
            ("", "events") => crate::events::CORE_FIELD_LABELS,
            ("", "namespaces") => &["status.phase"],
            ("", "secrets") => &["type"],
            ("", "services") => &["spec.clusterIP", "spec.type"],
            _ => &[],
        };
        out.extend(
            extra
                .iter()
                .map(|s| s.to_string())
                .filter(|s| !out.contains(s))
                .collect::<Vec<_>>(),
        );
        out
    }

    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v)
    }

    pub fn storage_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.storage)
            .or(self.versions.first())
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn has_status(&self, version: &str) -> bool {
        self.version(version).is_some_and(|v| v.status_subresource)
    }

    /// Whether metadata.generation is maintained (CRs; built-ins here have no spec).
    pub fn tracks_generation(&self) -> bool {
        self.custom
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.terminating {
            // apiextensions-apiserver's discovery controller for a CRD
            // being deleted.
            return vec!["delete", "deletecollection", "get", "list", "watch"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

fn builtin(
    group: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    categories: &[&str],
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        plural: plural.into(),
        singular: singular.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        versions: vec![VersionDef {
            name: "v1".into(),
            storage: true,
            schema: None,
            cel: None,
            printer_columns: Vec::new(),
            status_subresource: matches!(plural, "namespaces" | "deployments"),
            selectable_fields: Vec::new(),
        }],
        custom: false,
        shared_storage: (group == crate::events::EVENTS_GROUP && plural == "events")
            .then(|| crate::events::STORAGE_KEY.to_string()),
        terminating: false,
    }
}

/// Kinds served from the start.
pub fn builtins() -> Vec<ResourceDef> {
    vec![
        builtin(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            &[],
        ),
        builtin("", "secrets", "secret", "Secret", true, &[], &[]),
        builtin(
            "",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
            &[],
        ),
        builtin("", "events", "event", "Event", true, &["ev"], &[]),
        builtin(
            "",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
        ),
        builtin("events.k8s.io", "events", "event", "Event", true, &[], &[]),
        builtin(
            "coordination.k8s.io",
            "leases",
            "lease",
            "Lease",
            true,
            &[],
            &[],
        ),
        // What the Helm chart renders, so `helm install` works against this server (objects
        // are stored, nothing acts on them: a Deployment runs no pods).
        builtin("", "services", "service", "Service", true, &["svc"], &[]),
        builtin(
            "apps",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            &["all"],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            &[],
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "roles",
            "role",
            "Role",
            true,
            &[],
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            &[],
            &[],
        ),
        builtin(
            "policy",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            &[],
        ),
        builtin(
            "networking.k8s.io",
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
        ),
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
        ),
    ]
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings_at(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the resource a CRD declares, or the list of problems that make the
/// CRD invalid (reported as 422 by the caller).
pub fn from_crd(crd: &Value) -> Result<ResourceDef, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let group = str_at(crd, "/spec/group").to_string();
    let plural = str_at(crd, "/spec/names/plural").to_string();
    let kind = str_at(crd, "/spec/names/kind").to_string();
    let name = str_at(crd, "/metadata/name");
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = str_at(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push((
            "spec.scope".into(),
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let cel = schema
            .as_ref()
            .map(|s| Arc::new(kube_cel::compile_schema(s)));
        versions.push(VersionDef {
            name: str_at(&v, "/name").to_string(),
            storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
            schema,
            cel,
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            status_subresource: v.pointer("/subresources/status").is_some(),
            selectable_fields: v
                .get("selectableFields")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                        .map(|p| p.trim_start_matches('.').to_string())
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    if versions.is_empty() {
        errs.push((
            "spec.versions".into(),
            "Invalid value: must have at least one served version".into(),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let singular = match str_at(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let list_kind = match str_at(crd, "/spec/names/listKind") {
        "" => format!("{kind}List"),
        s => s.to_string(),
    };
    Ok(ResourceDef {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strings_at(crd, "/spec/names/shortNames"),
        categories: strings_at(crd, "/spec/names/categories"),
        versions,
        custom: true,
        shared_storage: None,
        terminating: crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Terminating" && c["status"] == "True")
            }),
    })
}
