//! Strict JSON for everything that comes in: HTTP bodies ([`crate::http::handlers::parse`]) and consumed
//! events ([`crate::events::handler`]) are decoded here and nowhere else.
//!
//! - **One document.** The value must be followed by nothing but whitespace:
//!   `{"amount":"1","type":"CREDIT"}{"amount":"5","type":"CREDIT"}` is refused, not read as its first half.
//! - **No NUL character** (`\u0000`) in any string or object key, at any depth. PostgreSQL cannot store it
//!   in `text` or `jsonb` and refuses the whole statement; let in, it would fail its commit (and the
//!   commands grouped with it) on every retry. It is refused here with the field that holds it.
//! - The target types refuse unknown fields (`deny_unknown_fields`) and read amounts exactly; the error
//!   names the field that failed.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a document was refused: the field (a path like `metadata.tags[0]`, or `body`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What a string holding NUL is told.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";
/// What a key holding NUL is told (the key itself is not echoed).
pub const NUL_KEY_MESSAGE: &str = "object keys must not contain the NUL character (\\u0000)";

/// Decodes one JSON document into `T` (see the module docs).
pub fn strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    if may_hold_nul(bytes)
        && let Ok(v) = serde_json::from_slice::<Value>(bytes)
        && let Some(refused) = nul_in(&v)
    {
        return Err(refused);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let field = match (path.as_str(), msg.split('`').nth(1)) {
            (".", Some(f)) if msg.starts_with("unknown field") || msg.starts_with("missing field") => f.to_string(),
            (".", _) => "body".to_string(),
            (p, _) => p.to_string(),
        };
        let message = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        Refused { field, message }
    })?;
    de.end().map_err(|_| Refused {
        field: "body".into(),
        message: "must be one JSON document; found more after it".into(),
    })?;
    Ok(value)
}

/// The first string or key holding NUL in a value, as a refusal naming its path.
pub fn nul_in(v: &Value) -> Option<Refused> {
    let mut path = String::new();
    walk(v, &mut path)
}

fn walk(v: &Value, path: &mut String) -> Option<Refused> {
    let here = |path: &str, message: &str| Refused {
        field: if path.is_empty() { "body".into() } else { path.into() },
        message: message.into(),
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(here(path, NUL_MESSAGE)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = walk(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                return Some(here(path, NUL_KEY_MESSAGE));
            }
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            let found = walk(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// Whether the text has a `\u0000` escape, the only way JSON can carry NUL (a raw NUL byte is not valid
/// JSON). An escaped backslash (`\\u0000`, the text `\u0000`) is not one. Cheap: most bodies have no
/// backslash at all, and only a body that may hold NUL is walked as a value.
fn may_hold_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character (for `\uXXXX`, the hex digits are no backslash).
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: String,
        #[serde(default)]
        m: Option<Value>,
    }

    #[test]
    fn one_document_only() {
        assert!(strict::<Doc>(br#"{"a":"x"}"#).is_ok());
        assert!(strict::<Doc>(b" {\"a\":\"x\"} \n\t").is_ok());
        let e = strict::<Doc>(br#"{"a":"x"}{"a":"y"}"#).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(strict::<Doc>(br#"{"a":"x"} x"#).is_err());
        assert!(strict::<Doc>(br#"{"a":"x"},"#).is_err());
    }

    #[test]
    fn nul_is_refused_with_its_path_at_any_depth() {
        let e = strict::<Doc>(br#"{"a":"x\u0000y"}"#).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("a", NUL_MESSAGE));
        let e = strict::<Doc>(br#"{"a":"x","m":{"k":[1,{"deep":"\u0000"}]}}"#).unwrap_err();
        assert_eq!(e.field, "m.k[1].deep");
        let e = strict::<Doc>(br#"{"a":"x","m":{"k\u0000":1}}"#).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("m", NUL_KEY_MESSAGE));
        let e = strict::<Value>(br#""\u0000""#).unwrap_err();
        assert_eq!(e.field, "body");
        // Not NUL: an escaped backslash followed by the letters, and other escapes.
        assert!(strict::<Doc>(br#"{"a":"\\u0000"}"#).is_ok());
        assert!(strict::<Doc>(br#"{"a":"\u0001\n\\"}"#).is_ok());
        // A raw NUL byte is not JSON at all.
        assert!(strict::<Doc>(b"{\"a\":\"x\0\"}").is_err());
    }

    #[test]
    fn the_failing_field_is_named() {
        assert_eq!(strict::<Doc>(br#"{"a":"x","z":1}"#).unwrap_err().field, "z");
        assert_eq!(strict::<Doc>(br#"{}"#).unwrap_err().field, "a");
        assert_eq!(strict::<Doc>(br#"{"a":1}"#).unwrap_err().field, "a");
        assert_eq!(strict::<Doc>(b"nope").unwrap_err().field, "body");
    }
}
