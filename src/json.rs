//! Small JSON helpers: a strict parser (duplicate members are an error, as
//! RFC 7515 §5.2 and RFC 7517 §4 expect of a careful JOSE implementation) and
//! a writer that builds a compact object without an intermediate `Value`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest JSON text popkey accepts from outside (JWKs, claims, client claims).
pub(crate) const MAX_JSON_LEN: usize = 64 * 1024;

/// Parses `text` as a JSON object, rejecting duplicate member names at any depth.
pub(crate) fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_JSON_LEN {
        return Err(format!(
            "JSON text is {} bytes; the limit is {MAX_JSON_LEN}",
            text.len()
        ));
    }
    let strict: Strict = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match strict.0 {
        Value::Object(map) => Ok(map),
        other => Err(format!("expected a JSON object, found {}", kind(&other))),
    }
}

/// A name for the JSON type of `v`, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            // One search per member: the vacant entry takes the value.
            match map.entry(key) {
                serde_json::map::Entry::Occupied(taken) => {
                    return Err(de::Error::custom(format_args!(
                        "duplicate member `{}`",
                        taken.key().chars().take(64).collect::<String>()
                    )));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    let Strict(v) = access.next_value()?;
                    slot.insert(v);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// Builds a compact JSON object member by member, in the order given.
pub(crate) struct ObjectWriter {
    buf: Vec<u8>,
    first: bool,
}

impl ObjectWriter {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let mut buf = Vec::with_capacity(n);
        buf.push(b'{');
        ObjectWriter { buf, first: true }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        push_str(&mut self.buf, name);
        self.buf.push(b':');
    }

    /// Adds a string member.
    pub(crate) fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        push_str(&mut self.buf, value);
        self
    }

    /// Adds an unsigned integer member.
    pub(crate) fn uint(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[i..]);
        self
    }

    /// Adds a member whose value is already valid compact JSON.
    pub(crate) fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.name(name);
        self.buf.extend_from_slice(json.as_bytes());
        self
    }

    /// Adds a member holding any serializable value.
    pub(crate) fn value(&mut self, name: &str, value: &Value) -> &mut Self {
        self.name(name);
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, value);
        self
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// Appends `s` as a JSON string literal.
fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    // Most values (tokens, base64url, URLs) need no escape: check that
    // first, in one branch-free pass the compiler vectorizes.
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates_and_non_objects() {
        assert!(parse_object(r#"{"a":1,"a":2}"#)
            .unwrap_err()
            .contains("duplicate"));
        assert!(parse_object(r#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_object("[1]").unwrap_err().contains("array"));
        assert!(parse_object("{").is_err());
        assert_eq!(parse_object(r#"{"a":[1,{"b":null}]}"#).unwrap().len(), 1);
    }

    #[test]
    fn writer_escapes_like_serde_json() {
        let tricky = "q\"uo\\te\n\u{1}é\u{7f}";
        let mut w = ObjectWriter::with_capacity(16);
        w.str("s", tricky).uint("n", 42).raw("r", "[1]");
        let out = String::from_utf8(w.finish()).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["s"], tricky);
        assert_eq!(v["n"], 42);
        assert_eq!(v["r"][0], 1);
    }
}
