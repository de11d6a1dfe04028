//! Just enough Kubernetes protobuf decoding for the built-in kinds kubectl
//! creates with typed clients (`kubectl create secret|configmap|namespace`
//! send `application/vnd.kubernetes.protobuf`). Responses are always JSON,
//! which clients accept because they also list JSON in Accept.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::errors::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\x00";

/// One decoded field: number and either a varint or a byte payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(buf, &mut pos)?))),
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((num, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn map_entry(b: &[u8]) -> Option<(String, &[u8])> {
    let mut k = String::new();
    let mut v: &[u8] = &[];
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = text(x),
            (2, Field::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), json!(text(x)));
            }
            (2 | 3 | 6, Field::Bytes(x)) if !x.is_empty() => {
                let key = match n {
                    2 => "generateName",
                    3 => "namespace",
                    _ => "resourceVersion",
                };
                m.insert(key.into(), json!(text(x)));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(text(v)));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(text(v)));
            }
            (14, Field::Bytes(x)) => finalizers.push(json!(text(x))),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(m))
}

fn decode_kind(kind: &str, raw: &[u8]) -> Option<Value> {
    let mut obj = json!({"kind": kind});
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = json!(text(x)),
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                if !k.is_empty() {
                    string_data.insert(k, json!(text(v)));
                }
            }
            ("Secret", 5, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                data.insert(k, json!(text(v)));
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                binary.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
            ("ConfigMap", 4, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    Some(obj)
}

/// metav1.DeleteOptions: preconditions (2: uid 1, resourceVersion 2),
/// orphanDependents (3), propagationPolicy (4), dryRun (5).
fn delete_options(raw: &[u8]) -> Option<Value> {
    let mut v = json!({"kind": "DeleteOptions"});
    let mut dry_run = Vec::new();
    for (n, f) in fields(raw)? {
        match (n, f) {
            (2, Field::Bytes(p)) => {
                for (m, g) in fields(p)? {
                    match (m, g) {
                        (1, Field::Bytes(x)) => v["preconditions"]["uid"] = json!(text(x)),
                        (2, Field::Bytes(x)) => {
                            v["preconditions"]["resourceVersion"] = json!(text(x))
                        }
                        _ => {}
                    }
                }
            }
            (3, Field::Varint(b)) => v["orphanDependents"] = json!(b != 0),
            (4, Field::Bytes(x)) => v["propagationPolicy"] = json!(text(x)),
            (5, Field::Bytes(x)) => dry_run.push(json!(text(x))),
            _ => {}
        }
    }
    if !dry_run.is_empty() {
        v["dryRun"] = Value::Array(dry_run);
    }
    Some(v)
}

/// A DELETE body: the envelope's object read as DeleteOptions whatever
/// TypeMeta it carries (nothing else can come with a DELETE).
pub fn decode_delete_options(body: &[u8]) -> ApiResult<Value> {
    let malformed = || ApiError::bad_request("malformed protobuf DeleteOptions");
    let rest = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let raw = fields(rest)
        .ok_or_else(malformed)?
        .into_iter()
        .find_map(|(n, f)| match (n, f) {
            (2, Field::Bytes(x)) => Some(x),
            _ => None,
        })
        .unwrap_or(&[]);
    delete_options(raw).ok_or_else(malformed)
}

/// Decodes a protobuf request body (runtime.Unknown envelope) of a kind we
/// understand into its JSON form.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let unsupported = || {
        ApiError::unsupported_media_type(
            "application/vnd.kubernetes.protobuf",
            &["application/json", "application/yaml"],
        )
    };
    let rest = body.strip_prefix(MAGIC).ok_or_else(unsupported)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest).ok_or_else(unsupported)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in fields(tm).ok_or_else(unsupported)? {
                    match (m, g) {
                        (1, Field::Bytes(x)) => api_version = text(x),
                        (2, Field::Bytes(x)) => kind = text(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if kind == "DeleteOptions" {
        // Registered in every group version, so any apiVersion.
        return delete_options(raw).ok_or_else(|| ApiError::bad_request("malformed protobuf body"));
    }
    if api_version != "v1" || !matches!(kind.as_str(), "Secret" | "ConfigMap" | "Namespace") {
        return Err(unsupported());
    }
    let mut obj =
        decode_kind(&kind, raw).ok_or_else(|| ApiError::bad_request("malformed protobuf body"))?;
    obj["apiVersion"] = json!("v1");
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let meta = [ld(1, b"s"), ld(3, b"default")].concat();
        let entry = [ld(1, b"k"), ld(2, b"v")].concat();
        let secret = [ld(1, &meta), ld(2, &entry), ld(3, b"Opaque")].concat();
        let tm = [ld(1, b"v1"), ld(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &secret)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "s");
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        let body = b"\x6b\x38\x73\x00\x0a\x0c\x0a\x02\x76\x31\x12\x06\x53\x65\x63\x72\x65\x74\x12\x1d\x0a\x11\x0a\x01\x78\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01\x61\x12\x01\x62\x1a\x00\x1a\x00\x22\x00";
        let v = decode(body).unwrap();
        assert_eq!(v["metadata"]["name"], "x");
        assert_eq!(v["data"], json!({"a": "Yg=="}));
    }

    #[test]
    fn decodes_delete_options() {
        let pre = [ld(1, b"u-1"), ld(2, b"7")].concat();
        let opts = [
            ld(2, &pre),
            vec![3 << 3, 1],
            ld(4, b"Foreground"),
            ld(5, b"All"),
        ]
        .concat();
        let tm = [ld(1, b"v1"), ld(2, b"DeleteOptions")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &opts)].concat();
        let v = decode(&body).unwrap();
        // Whatever the TypeMeta says, a DELETE body is DeleteOptions.
        let untyped = [MAGIC.to_vec(), ld(2, &opts)].concat();
        assert_eq!(decode_delete_options(&untyped).unwrap(), v);
        assert_eq!(
            v["preconditions"],
            json!({"uid": "u-1", "resourceVersion": "7"})
        );
        assert_eq!(v["orphanDependents"], true);
        assert_eq!(v["propagationPolicy"], "Foreground");
        assert_eq!(v["dryRun"], json!(["All"]));
    }

    #[test]
    fn other_kinds_are_unsupported() {
        let tm = [ld(1, b"apps/v1"), ld(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm)].concat();
        assert_eq!(decode(&body).unwrap_err().code, 415);
    }
}
