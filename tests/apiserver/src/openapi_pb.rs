//! The OpenAPI v2 document as protobuf (gnostic's `openapi.v2.Document`,
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), the only
//! form client-go's `OpenAPISchema()` reads. Encoded from the JSON document
//! field by field; values that are free JSON (`default`, `enum`, `example`,
//! vendor extensions) travel as YAML text in `Any.yaml`, as gnostic writes
//! them (JSON is YAML).

use serde_json::{Map, Value};

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, num: u64, b: &[u8]) {
        self.varint((num << 3) | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn msg(&mut self, num: u64, m: Msg) {
        self.bytes(num, &m.0);
    }

    fn string(&mut self, num: u64, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(num, s.as_bytes());
        }
    }

    fn strings(&mut self, num: u64, v: Option<&Value>) {
        match v {
            Some(Value::Array(a)) => {
                for s in a.iter().filter_map(Value::as_str) {
                    self.bytes(num, s.as_bytes());
                }
            }
            Some(Value::String(s)) => self.bytes(num, s.as_bytes()),
            _ => {}
        }
    }

    fn boolean(&mut self, num: u64, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.varint(num << 3);
            self.varint(1);
        }
    }

    fn int(&mut self, num: u64, v: Option<&Value>) {
        if let Some(i) = v.and_then(Value::as_i64) {
            self.varint(num << 3);
            self.varint(i as u64);
        }
    }

    fn double(&mut self, num: u64, v: Option<&Value>) {
        if let Some(f) = v.and_then(Value::as_f64) {
            self.varint((num << 3) | 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// gnostic `Any` holding `v` as YAML.
    fn any(&mut self, num: u64, v: &Value) {
        let mut a = Msg::default();
        a.bytes(2, v.to_string().as_bytes());
        self.msg(num, a);
    }

    /// `repeated NamedAny vendor_extension` from the `x-` keys.
    fn extensions(&mut self, num: u64, m: &Map<String, Value>) {
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Msg::default();
            named.bytes(1, k.as_bytes());
            named.any(2, v);
            self.msg(num, named);
        }
    }
}

fn named(name: &str, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.bytes(1, name.as_bytes());
    m.msg(2, value);
    m
}

fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else {
        return m;
    };
    m.string(1, o.get("$ref"));
    m.string(2, o.get("format"));
    m.string(3, o.get("title"));
    m.string(4, o.get("description"));
    if let Some(d) = o.get("default") {
        m.any(5, d);
    }
    m.double(6, o.get("multipleOf"));
    m.double(7, o.get("maximum"));
    m.boolean(8, o.get("exclusiveMaximum"));
    m.double(9, o.get("minimum"));
    m.boolean(10, o.get("exclusiveMinimum"));
    m.int(11, o.get("maxLength"));
    m.int(12, o.get("minLength"));
    m.string(13, o.get("pattern"));
    m.int(14, o.get("maxItems"));
    m.int(15, o.get("minItems"));
    m.boolean(16, o.get("uniqueItems"));
    m.int(17, o.get("maxProperties"));
    m.int(18, o.get("minProperties"));
    m.strings(19, o.get("required"));
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.any(20, e);
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut ap = Msg::default();
            ap.varint(2 << 3);
            ap.varint(u64::from(*b));
            m.msg(21, ap);
        }
        Some(s @ Value::Object(_)) => {
            let mut ap = Msg::default();
            ap.msg(1, schema(s));
            m.msg(21, ap);
        }
        _ => {}
    }
    if o.contains_key("type") {
        let mut t = Msg::default();
        t.strings(1, o.get("type"));
        m.msg(22, t);
    }
    match o.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Msg::default();
            for i in items {
                it.msg(1, schema(i));
            }
            m.msg(23, it);
        }
        Some(i @ Value::Object(_)) => {
            let mut it = Msg::default();
            it.msg(1, schema(i));
            m.msg(23, it);
        }
        _ => {}
    }
    for s in o
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(24, schema(s));
    }
    if let Some(Value::Object(props)) = o.get("properties") {
        let mut p = Msg::default();
        for (k, v) in props {
            p.msg(1, named(k, schema(v)));
        }
        m.msg(25, p);
    }
    m.boolean(27, o.get("readOnly"));
    if let Some(e) = o.get("example") {
        m.any(30, e);
    }
    m.extensions(31, o);
    m
}

/// `ParametersItem` → `Parameter` → body or non-body (query/path) parameter.
fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    if p["in"] == "body" {
        let mut b = Msg::default();
        b.string(1, p.get("description"));
        b.string(2, p.get("name"));
        b.string(3, p.get("in"));
        b.boolean(4, p.get("required"));
        if let Some(s) = p.get("schema") {
            b.msg(5, schema(s));
        }
        param.msg(1, b);
    } else {
        let mut q = Msg::default();
        q.boolean(1, p.get("required"));
        q.string(2, p.get("in"));
        q.string(3, p.get("description"));
        q.string(4, p.get("name"));
        let path = p["in"] == "path";
        // PathParameterSubSchema has no allow_empty_value, so its later
        // fields sit one number lower than QueryParameterSubSchema's.
        let shift = u64::from(path);
        q.string(6 - shift, p.get("type"));
        q.boolean(20 - shift, p.get("uniqueItems"));
        let mut nb = Msg::default();
        nb.msg(if path { 4 } else { 3 }, q);
        param.msg(2, nb);
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

fn operation(o: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings(1, o.get("tags"));
    m.string(3, o.get("description"));
    m.string(5, o.get("operationId"));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    for p in o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(8, parameter(p));
    }
    if let Some(Value::Object(rs)) = o.get("responses") {
        let mut responses = Msg::default();
        for (code, r) in rs {
            let mut resp = Msg::default();
            resp.string(1, r.get("description"));
            if let Some(s) = r.get("schema") {
                let mut si = Msg::default();
                si.msg(1, schema(s));
                resp.msg(2, si);
            }
            let mut rv = Msg::default();
            rv.msg(1, resp);
            responses.msg(1, named(code, rv));
        }
        m.msg(9, responses);
    }
    m.strings(10, o.get("schemes"));
    if let Some(ext) = o.as_object() {
        m.extensions(13, ext);
    }
    m
}

/// The Swagger 2.0 JSON document as a gnostic `Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut d = Msg::default();
    d.string(1, doc.get("swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, info.get("title"));
        i.string(2, info.get("version"));
        d.msg(2, i);
    }
    if let Some(Value::Object(paths)) = doc.get("paths") {
        let mut ps = Msg::default();
        for (path, item) in paths {
            let mut pi = Msg::default();
            for (verb, num) in [
                ("get", 2),
                ("put", 3),
                ("post", 4),
                ("delete", 5),
                ("patch", 8),
            ] {
                if let Some(op) = item.get(verb) {
                    pi.msg(num, operation(op));
                }
            }
            ps.msg(2, named(path, pi));
        }
        d.msg(8, ps);
    }
    if let Some(Value::Object(defs)) = doc.get("definitions") {
        let mut ds = Msg::default();
        for (name, s) in defs {
            ds.msg(1, named(name, schema(s)));
        }
        d.msg(9, ds);
    }
    d.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encodes_a_definition_with_its_extension() {
        let doc = json!({"swagger": "2.0", "definitions": {"a.B": {"type": "object",
            "x-kubernetes-group-version-kind": [{"group": "a", "version": "v1", "kind": "B"}]}}});
        let b = encode(&doc);
        // swagger = "2.0"
        assert_eq!(&b[..5], b"\x0a\x032.0");
        // definitions (9) → NamedSchema (1) → name "a.B"
        let defs = &b[5..];
        assert_eq!(defs[0], (9 << 3) | 2);
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains("a.B") && text.contains("object"));
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains(r#""kind":"B""#));
    }
}
