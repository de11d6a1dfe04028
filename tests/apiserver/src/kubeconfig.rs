//! The kubeconfig written for the server, so kubectl and kube clients need
//! no flags (`KUBECONFIG=path kubectl get ns`).

use std::path::Path;

pub const CONTEXT: &str = "kaws-testserver";

pub fn render(url: &str) -> String {
    render_with_token(url, None)
}

/// A kubeconfig whose user sends `Authorization: Bearer <token>` (the server accepts any
/// token; it only records requests per token).
pub fn render_with_token(url: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("{{token: {t}}}"),
        None => "{}".to_string(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: {url}
users:
- name: {CONTEXT}
  user: {user}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
preferences: {{}}
"
    )
}

pub fn write(path: &Path, url: &str) -> std::io::Result<()> {
    write_with_token(path, url, None)
}

pub fn write_with_token(path: &Path, url: &str, token: Option<&str>) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render_with_token(url, token))
}
