//! Reading referenced Secrets for any kind, without ever exposing their values: values travel
//! as [`Redacted`], and errors name the Secret and key, never the content.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client};

use super::error::{Error, Result};

/// A secret value. Its `Debug` never shows the content, so it cannot leak through a log line,
/// an error or an Event that formats a change.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secret data as UTF-8 strings; keys whose value is not UTF-8 are left out.
pub fn decode(data: Option<BTreeMap<String, ByteString>>) -> BTreeMap<String, String> {
    data.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect()
}

/// Reads one key of a Secret; `Ok(None)` when the Secret or the key is missing.
pub async fn read_key(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<Redacted>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    Ok(decode(secret.data).remove(key).map(Redacted))
}

/// The error for a missing Secret or key: names both, shows nothing of the content.
pub async fn missing(client: &Client, ns: &str, name: &str, key: &str) -> Error {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(_)) => Error::SecretNotFound {
            name: name.to_string(),
            key: Some(key.to_string()),
        },
        Ok(None) => Error::SecretNotFound {
            name: name.to_string(),
            key: None,
        },
        Err(e) => Error::Kube(e),
    }
}
