//! IAM policy documents compared by meaning, for every policy field in kaws (today the Bucket
//! policy; the IAM kinds' trust and permission policies next).
//!
//! AWS hands documents back rewritten: IAM URL-encodes them, S3 and IAM collapse one-element
//! arrays to strings, key order and whitespace change, `Version` may be dropped. Compared as
//! written, each of those is "drift" that kaws would correct forever (ACK's
//! `UpdateAssumeRolePolicy` every second per role). So both sides are put in one canonical form
//! first:
//! - URL-decoded when the text is URL-encoded;
//! - `Version` defaulted to `2008-10-17` (what IAM assumes when it is absent);
//! - `Statement` as an array (a single object is a one-element array), its order ignored;
//! - `Action`, `NotAction`, `Resource`, `NotResource`, each `Principal`/`NotPrincipal` value
//!   and each `Condition` value as a sorted, de-duplicated array (a string is a one-element
//!   array); `Principal: "*"` as `{"AWS": ["*"]}`, which IAM treats the same;
//! - whitespace and key order ignored (the comparison is on parsed JSON).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A policy document as a spec field: written as YAML/JSON structure or as a JSON string (also
/// URL-encoded, as IAM hands documents back). Both forms mean the same document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Document(pub Value);

impl Document {
    /// The document as the JSON text AWS takes: a string as written, a structure serialized.
    pub fn text(&self) -> String {
        match &self.0 {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The canonical form (see [`canonical`]); an error names what is wrong and where.
    pub fn canonical(&self) -> Result<Value, String> {
        canonical(&self.text())
    }

    /// A document that parses, or `field` and the JSON path of what is wrong with it.
    pub fn check(&self, field: &str) -> Result<(), String> {
        self.canonical()
            .map(|_| ())
            .map_err(|e| format!("{field}: {e}"))
    }

    /// Whether `observed` (AWS's text) means this document.
    pub fn same_as(&self, observed: &str) -> bool {
        same(&self.text(), observed)
    }
}

impl JsonSchema for Document {
    fn schema_name() -> Cow<'static, str> {
        "PolicyDocument".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Structure or string: the API server keeps either as written.
        json_schema!({
            "description": "An IAM policy document: YAML/JSON structure or a JSON string.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// What IAM assumes when a document names no `Version`.
const DEFAULT_VERSION: &str = "2008-10-17";

/// The statement keys whose value is a set of strings.
const SET_KEYS: [&str; 4] = ["Action", "NotAction", "Resource", "NotResource"];

/// Parses a policy document (JSON, URL-encoded or not) into its canonical form, or says what is
/// wrong with it and where (a JSON path such as `Statement[1].Action`).
pub fn canonical(text: &str) -> Result<Value, String> {
    let decoded;
    let text = if text.trim_start().starts_with('%') {
        decoded = urlencoding::decode(text).map_err(|e| format!("not URL-encoded UTF-8: {e}"))?;
        decoded.as_ref()
    } else {
        text
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the document is not JSON: {e}"))?;
    let Value::Object(mut doc) = value else {
        return Err("the document must be a JSON object".to_string());
    };
    doc.entry("Version")
        .or_insert_with(|| Value::String(DEFAULT_VERSION.to_string()));
    let statements = match doc.remove("Statement") {
        None => return Err("Statement is missing".to_string()),
        Some(Value::Array(items)) => items,
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("Statement must be an object or a list of objects".to_string()),
    };
    let mut canonical = Vec::with_capacity(statements.len());
    for (i, statement) in statements.into_iter().enumerate() {
        let Value::Object(statement) = statement else {
            return Err(format!("Statement[{i}] must be an object"));
        };
        canonical.push(canonical_statement(statement).map_err(|e| format!("Statement[{i}].{e}"))?);
    }
    canonical.sort_by_cached_key(|s| s.to_string());
    doc.insert("Statement".to_string(), Value::Array(canonical));
    Ok(Value::Object(doc))
}

/// Whether two documents mean the same. A side that does not parse is compared as text.
pub fn same(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn canonical_statement(mut statement: Map<String, Value>) -> Result<Value, String> {
    for key in SET_KEYS {
        if let Some(value) = statement.remove(key) {
            statement.insert(
                key.to_string(),
                string_set(value).map_err(|e| format!("{key}{e}"))?,
            );
        }
    }
    for key in ["Principal", "NotPrincipal"] {
        if let Some(value) = statement.remove(key) {
            let value = match value {
                Value::String(s) if s == "*" => {
                    Value::Object(Map::from_iter([("AWS".to_string(), Value::String(s))]))
                }
                other => other,
            };
            statement.insert(
                key.to_string(),
                set_map(value).map_err(|e| format!("{key}{e}"))?,
            );
        }
    }
    if let Some(condition) = statement.remove("Condition") {
        let Value::Object(operators) = condition else {
            return Err("Condition: must be an object of operators".to_string());
        };
        let mut out = Map::new();
        for (operator, keys) in operators {
            let keys = set_map(keys).map_err(|e| format!("Condition.{operator}{e}"))?;
            out.insert(operator, keys);
        }
        statement.insert("Condition".to_string(), Value::Object(out));
    }
    Ok(Value::Object(statement))
}

/// `{"k": "v" | ["v", …]}` with every value a sorted set.
fn set_map(value: Value) -> Result<Value, String> {
    let Value::Object(map) = value else {
        return Err(": must be an object".to_string());
    };
    let mut out = Map::new();
    for (key, value) in map {
        let value = string_set(value).map_err(|e| format!(".{key}{e}"))?;
        out.insert(key, value);
    }
    Ok(Value::Object(out))
}

/// A string or a list of strings (or of numbers and booleans, which conditions allow) as a
/// sorted, de-duplicated list of strings.
fn string_set(value: Value) -> Result<Value, String> {
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) => out.push(s),
            Value::Number(n) => out.push(n.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            _ => return Err(format!("[{i}]: must be a string")),
        }
    }
    out.sort();
    out.dedup();
    Ok(Value::Array(out.into_iter().map(Value::String).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forms AWS really hands back, each against the document as written.
    #[test]
    fn what_aws_hands_back_rewritten_means_the_same() {
        let written = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:root"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::b/*","arn:aws:s3:::b"]}]}"#;
        let cases: Vec<(&str, String, bool)> = vec![
            (
                "S3 and IAM collapse one-element arrays to strings",
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":["arn:aws:s3:::b/*","arn:aws:s3:::b"]}]}"#.into(),
                true,
            ),
            (
                "key order and whitespace",
                "{\n  \"Statement\": [ {\"Resource\": [\"arn:aws:s3:::b/*\", \"arn:aws:s3:::b\"], \"Action\": \"s3:GetObject\", \"Principal\": {\"AWS\": \"arn:aws:iam::123456789012:root\"}, \"Effect\": \"Allow\", \"Sid\": \"Read\"} ],\n  \"Version\": \"2012-10-17\"\n}".into(),
                true,
            ),
            (
                "a Statement object instead of a one-element array",
                r#"{"Version":"2012-10-17","Statement":{"Sid":"Read","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":["arn:aws:s3:::b/*","arn:aws:s3:::b"]}}"#.into(),
                true,
            ),
            (
                "set-like arrays reordered",
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]}]}"#.into(),
                true,
            ),
            (
                "IAM's URL-encoded form (GetRolePolicy, GetPolicyVersion, the role's trust policy)",
                urlencoding::encode(written).into_owned(),
                true,
            ),
            (
                "another action",
                written.replace("s3:GetObject", "s3:PutObject"),
                false,
            ),
            (
                "Deny instead of Allow",
                written.replace("Allow", "Deny"),
                false,
            ),
            (
                "one resource less",
                written.replace(r#","arn:aws:s3:::b""#, ""),
                false,
            ),
        ];
        for (why, returned, same_meaning) in cases {
            assert_eq!(same(written, &returned), same_meaning, "{why}: {returned}");
        }
    }

    #[test]
    fn defaults_and_equivalent_spellings_are_one_form() {
        let cases: Vec<(&str, &str, &str, bool)> = vec![
            (
                "Version absent means 2008-10-17",
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
                r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
                true,
            ),
            (
                "… and not 2012-10-17",
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
                false,
            ),
            (
                "Principal * is every AWS principal",
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:DeleteBucket","Resource":"*"}]}"#,
                r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"s3:DeleteBucket","Resource":"*"}]}"#,
                true,
            ),
            (
                "a condition value as a string or a one-element list",
                r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
                r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":["false"]}}}]}"#,
                true,
            ),
            (
                "a condition value as a boolean or a string",
                r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#,
                r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
                true,
            ),
            (
                "statements in another order",
                r#"{"Statement":[{"Sid":"A","Effect":"Allow","Action":"s3:Get*","Resource":"*"},{"Sid":"B","Effect":"Deny","Action":"s3:Delete*","Resource":"*"}]}"#,
                r#"{"Statement":[{"Sid":"B","Effect":"Deny","Action":"s3:Delete*","Resource":"*"},{"Sid":"A","Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#,
                true,
            ),
            (
                "a duplicated action",
                r#"{"Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:Get*"],"Resource":"*"}]}"#,
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#,
                true,
            ),
            (
                "NotAction is not Action",
                r#"{"Statement":[{"Effect":"Allow","NotAction":"s3:Get*","Resource":"*"}]}"#,
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#,
                false,
            ),
        ];
        for (why, a, b, same_meaning) in cases {
            assert_eq!(same(a, b), same_meaning, "{why}");
        }
    }

    #[test]
    fn an_invalid_document_is_refused_with_the_path_of_the_problem() {
        let cases = [
            ("{not json", "not JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"Version":"2012-10-17"}"#, "Statement is missing"),
            (
                r#"{"Statement":"x"}"#,
                "Statement must be an object or a list",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow"},"x"]}"#,
                "Statement[1] must be an object",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":["s3:Get*",{"x":1}]}]}"#,
                "Statement[0].Action[1]: must be a string",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":["arn"]}]}"#,
                "Statement[0].Principal: must be an object",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Condition":{"Bool":{"k":[{}]}}}]}"#,
                "Statement[0].Condition.Bool.k[0]: must be a string",
            ),
        ];
        for (doc, want) in cases {
            let err = canonical(doc).expect_err(doc);
            assert!(err.contains(want), "{doc}: {err}");
        }
    }
}
