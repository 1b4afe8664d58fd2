//! The wire form of a hit: Plausible's Events API (`n`, `u`, `d`, `r`, `p`,
//! `h`, `i` and the long names), plus tamis's `c` (consent), `w` (viewport
//! width), `o` (the beacon's opt-out) and Plausible's engagement fields.
//! Lenient about what it ignores, strict about what it needs.

use serde::Deserialize;
use serde_json::Value;

use super::error::IngestError;

/// Longest body accepted, before parsing.
pub const MAX_BODY: usize = 8 * 1024;
const MAX_PROPS: usize = 30;
const MAX_NAME: usize = 120;

#[derive(Debug, Deserialize)]
struct Wire {
    #[serde(alias = "name")]
    n: Option<String>,
    #[serde(alias = "url")]
    u: Option<String>,
    #[serde(alias = "domain")]
    d: Option<String>,
    #[serde(alias = "referrer")]
    r: Option<Value>,
    #[serde(alias = "props", alias = "m", alias = "meta")]
    p: Option<Value>,
    #[serde(alias = "consent")]
    c: Option<String>,
    #[serde(alias = "opt_out")]
    o: Option<Value>,
}

/// A parsed hit, before privacy.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub name: String,
    pub url: String,
    pub domain: String,
    pub referrer: Option<String>,
    pub props: Vec<(String, String)>,
    pub consent: Option<String>,
    pub opt_out: bool,
}

pub fn parse(body: &[u8]) -> Result<IncomingEvent, IngestError> {
    // serde_json's own messages can quote the input back; only its position
    // is reported, so nothing a client sent is echoed into errors.
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field has the wrong type",
            serde_json::error::Category::Eof => "the body ends too early",
            _ => "syntax error",
        };
        IngestError::Malformed(format!("{what} at line {} column {}", e.line(), e.column()))
    })?;
    let name = wire
        .n
        .filter(|n| !n.trim().is_empty())
        .ok_or(IngestError::Missing("n"))?;
    if name.len() > MAX_NAME {
        return Err(IngestError::Invalid {
            field: "n",
            problem: "event names are at most 120 bytes",
        });
    }
    let url = wire
        .u
        .filter(|u| !u.trim().is_empty())
        .ok_or(IngestError::Missing("u"))?;
    let domain = wire
        .d
        .filter(|d| !d.trim().is_empty())
        .ok_or(IngestError::Missing("d"))?;
    let referrer = match wire.r {
        Some(Value::String(r)) if !r.is_empty() => Some(r),
        Some(Value::String(_)) | Some(Value::Null) | None => None,
        Some(_) => {
            return Err(IngestError::Invalid {
                field: "r",
                problem: "must be a string or null",
            })
        }
    };
    Ok(IncomingEvent {
        name: name.trim().to_string(),
        url,
        domain,
        referrer,
        props: props(wire.p)?,
        consent: wire.c,
        opt_out: matches!(wire.o, Some(Value::Bool(true)))
            || matches!(wire.o, Some(Value::Number(ref n)) if n.as_u64() == Some(1)),
    })
}

/// Props come as an object, or (older Plausible scripts) as a JSON string of
/// one. Values become strings; nested values are refused.
fn props(value: Option<Value>) -> Result<Vec<(String, String)>, IngestError> {
    let bad = |problem| IngestError::Invalid {
        field: "p",
        problem,
    };
    let object = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => o,
            _ => return Err(bad("must be an object")),
        },
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("must be an object")),
    };
    if object.len() > MAX_PROPS {
        return Err(bad("at most 30 properties"));
    }
    object
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("property values must be strings, numbers or booleans")),
            };
            Ok((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &[u8], expected: Result<(&str, &str, &str), &str>) {
        let got = parse(body);
        match (got, expected) {
            (Ok(e), Ok((n, u, d))) => assert_eq!(
                (e.name.as_str(), e.url.as_str(), e.domain.as_str()),
                (n, u, d)
            ),
            (Err(e), Err(want)) => {
                assert!(e.to_string().contains(want), "{e} does not contain {want}")
            }
            (got, want) => panic!(
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    #[test]
    fn short_and_long_field_names() {
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org"}"#,
            Ok(("pageview", "https://a.org/", "a.org")),
        );
        check(
            br#"{"name":"pageview","url":"https://a.org/","domain":"a.org","referrer":null}"#,
            Ok(("pageview", "https://a.org/", "a.org")),
        );
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org","extra":[1,2],"h":1,"i":true}"#,
            Ok(("pageview", "https://a.org/", "a.org")),
        );
    }

    #[test]
    fn bad_input_is_named() {
        check(b"", Err("ends too early"));
        check(b"{", Err("ends too early"));
        check(b"[]", Err("wrong type"));
        check(
            b"{\"n\":\"pageview\",\"u\":\"\xff\xfe\",\"d\":\"a.org\"}",
            Err("line 1"),
        );
        check(br#"{"u":"https://a.org/","d":"a.org"}"#, Err("`n`"));
        check(br#"{"n":"pageview","d":"a.org"}"#, Err("`u`"));
        check(br#"{"n":"pageview","u":"https://a.org/"}"#, Err("`d`"));
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org","r":5}"#,
            Err("`r`"),
        );
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org","p":{"a":{"b":1}}}"#,
            Err("`p`"),
        );
    }

    #[test]
    fn errors_do_not_echo_input() {
        let err = parse(br#"{"n":"pageview","u":{"x":"198.51.100.77"},"d":"a.org"}"#).unwrap_err();
        assert!(!err.to_string().contains("198.51"), "{err}");
    }

    #[test]
    fn props_as_object_or_string() {
        let e = parse(
            br#"{"n":"signup","u":"https://a.org/","d":"a.org","p":{"plan":"basic","seats":3}}"#,
        )
        .unwrap();
        assert_eq!(
            e.props,
            vec![
                ("plan".into(), "basic".into()),
                ("seats".into(), "3".into())
            ]
        );
        let e = parse(
            br#"{"n":"signup","u":"https://a.org/","d":"a.org","props":"{\"plan\":\"pro\"}"}"#,
        )
        .unwrap();
        assert_eq!(e.props, vec![("plan".into(), "pro".into())]);
    }

    #[test]
    fn tamis_extensions() {
        let e = parse(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org","c":"denied","o":true,"w":1280}"#,
        )
        .unwrap();
        assert_eq!(e.consent.as_deref(), Some("denied"));
        assert!(e.opt_out);
    }
}
