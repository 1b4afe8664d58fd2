//! The wire form of a hit: Plausible's Events API (`n`, `u`, `d`, `r`, `p`,
//! `h`, `i` and the long names), plus tamis's `c` (consent), `w` (viewport
//! width), `o` (the beacon's opt-out) and Plausible's engagement fields.
//!
//! Lenient as Plausible's `Plausible.Ingestion.Request` is: it records what
//! it can instead of refusing a whole hit. More than 30 props keep 30;
//! nested, null and blank prop values are left out; props that are not an
//! object are ignored; a numeric name becomes its text; a referrer that is
//! not a string is ignored, a long one cut. It refuses, with Plausible's
//! field and reason, what Plausible refuses: a body that is not a JSON
//! object, a missing or non-text name, a `data:` URL or one over 2,000
//! bytes, prop keys over 300 bytes or values over 2,000, an engagement
//! without `sd` or `e`. What the privacy pipeline does next (prop
//! allow-list, redaction, cuts) is not decided here.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{Field, IngestError};
use crate::privacy::pipeline::Engagement;
use crate::privacy::url::HashMode;

/// Longest body accepted, before parsing.
pub const MAX_BODY: usize = 8 * 1024;
/// Longest page URL, in bytes (Plausible's `@max_url_size`); the referrer
/// is cut to as many characters.
pub const MAX_URL: usize = 2_000;
/// Most props kept of one hit (Plausible's `@max_props`).
pub const MAX_PROPS: usize = 30;
/// Longest prop key and value, in bytes (Plausible's `Plausible.Props`).
pub const MAX_PROP_KEY: usize = 300;
pub const MAX_PROP_VALUE: usize = 2_000;
/// Longest event name, in characters as a reader sees them (grapheme
/// clusters, as Plausible's `validate_length` counts them).
pub const MAX_NAME: usize = 120;

/// A text's length in grapheme clusters: `é` written as `e` and a
/// combining accent is one.
pub fn graphemes(text: &str) -> usize {
    unicode_segmentation::UnicodeSegmentation::graphemes(text, true).count()
}
/// Engagement times from this many milliseconds on (30 days) are ignored,
/// as Plausible ignores the huge values of an old script.
const MAX_ENGAGEMENT_MS: u64 = 30 * 24 * 3_600_000;

#[derive(Debug, Deserialize)]
struct Wire {
    #[serde(alias = "name")]
    n: Option<Value>,
    #[serde(alias = "url")]
    u: Option<Value>,
    #[serde(alias = "domain")]
    d: Option<Value>,
    #[serde(alias = "referrer")]
    r: Option<Value>,
    #[serde(alias = "props", alias = "m", alias = "meta")]
    p: Option<Value>,
    #[serde(alias = "hashMode")]
    h: Option<Value>,
    sd: Option<Value>,
    e: Option<Value>,
    #[serde(alias = "consent")]
    c: Option<Value>,
    #[serde(alias = "opt_out")]
    o: Option<Value>,
    #[serde(alias = "interactive")]
    i: Option<Value>,
}

/// A parsed hit, before privacy.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub name: String,
    pub url: String,
    pub domain: String,
    pub referrer: Option<String>,
    pub props: Vec<(String, String)>,
    pub hash_mode: HashMode,
    pub consent: Option<String>,
    pub opt_out: bool,
    /// An engagement's engaged time and scroll depth (zero otherwise).
    pub engagement: Engagement,
    /// False only when the hit says `i: false`.
    pub interactive: bool,
    /// The browser's language as a tracker's payload names it (Umami's
    /// `language`, GA4's `ul`); `Accept-Language` when `None`.
    pub language: Option<String>,
}

fn invalid(field: Field, problem: &'static str) -> IngestError {
    IngestError::Invalid { field, problem }
}

pub fn parse(body: &[u8]) -> Result<IncomingEvent, IngestError> {
    // serde_json's own messages can quote the input back; only its position
    // is reported, so nothing a client sent is echoed into errors.
    let wire: Wire = match serde_json::from_slice(body) {
        Ok(wire) => wire,
        // A field sent under two of its names (`n` and `name`), or twice.
        Err(e) if e.to_string().starts_with("duplicate field") => {
            first_names_win(body).map_err(|e| malformed(&e))?
        }
        Err(e) => return Err(malformed(&e)),
    };
    let url = page_url(wire.u)?;
    let name = name(wire.n)?;
    let engagement = if name == "engagement" {
        engagement(wire.sd.as_ref(), wire.e.as_ref()).ok_or_else(|| {
            invalid(
                Field::EventName,
                "engagement event requires a valid integer value for at least one of 'sd' or 'e' fields",
            )
        })?
    } else {
        Engagement::default()
    };
    let domain = domain(wire.d, &url)?;
    let referrer = match wire.r {
        Some(Value::String(r)) if !r.is_empty() => Some(r.chars().take(MAX_URL).collect()),
        _ => None,
    };
    Ok(IncomingEvent {
        name,
        url,
        domain,
        referrer,
        props: props(wire.p)?,
        hash_mode: hash_mode(wire.h)?,
        consent: match wire.c {
            Some(Value::String(c)) => Some(c),
            _ => None,
        },
        opt_out: matches!(wire.o, Some(Value::Bool(true)))
            || matches!(wire.o, Some(Value::Number(ref n)) if n.as_u64() == Some(1)),
        engagement,
        interactive: !matches!(wire.i, Some(Value::Bool(false))),
        language: None,
    })
}

fn malformed(e: &serde_json::Error) -> IngestError {
    let what = match e.classify() {
        serde_json::error::Category::Data => "not a JSON object, or a field of the wrong type",
        serde_json::error::Category::Eof => "the body ends too early",
        _ => "syntax error",
    };
    IngestError::Malformed(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// A field's names in the order Plausible reads them (`request.ex`:
/// `request_body["n"] || request_body["name"]`, props `m`, `meta`, `p`,
/// `props`): the first one present is the field.
const NAMES: &[&[&str]] = &[
    &["n", "name"],
    &["u", "url"],
    &["d", "domain"],
    &["r", "referrer"],
    &["m", "meta", "p", "props"],
    &["h", "hashMode"],
    &["c", "consent"],
    &["o", "opt_out"],
    &["i", "interactive"],
];

/// The body read as Plausible reads it when a field comes under several
/// of its names: the first name wins, the others are ignored (and a key
/// sent twice keeps its last value, as JSON objects do). Only this rare
/// body pays for reading the JSON twice.
fn first_names_win(body: &[u8]) -> Result<Wire, serde_json::Error> {
    let mut object: Map<String, Value> = serde_json::from_slice(body)?;
    for names in NAMES {
        if let Some(first) = names.iter().position(|n| object.contains_key(*n)) {
            for later in &names[first + 1..] {
                object.remove(*later);
            }
        }
    }
    serde_json::from_value(Value::Object(object))
}

/// The event name: text, or an integer as its text (Plausible accepts
/// `404` for its 404 tracking), trimmed.
fn name(value: Option<Value>) -> Result<String, IngestError> {
    let name = match value {
        Some(Value::String(n)) => n.trim().to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(invalid(Field::EventName, "is invalid")),
    };
    if name.is_empty() {
        return Err(invalid(Field::EventName, "can't be blank"));
    }
    if graphemes(&name) > MAX_NAME {
        return Err(invalid(
            Field::EventName,
            "should be at most 120 character(s)",
        ));
    }
    Ok(name)
}

/// The page URL as sent. Which URLs are counted (http and https pages of the
/// site's host names) is the privacy pipeline's decision; refused here is
/// only what Plausible refuses.
fn page_url(value: Option<Value>) -> Result<String, IngestError> {
    match value {
        None | Some(Value::Null) => Err(invalid(Field::Url, "is required")),
        Some(Value::String(u)) => {
            check_url(&u)?;
            Ok(u)
        }
        Some(_) => Err(invalid(Field::Url, "must be a valid url")),
    }
}

/// What Plausible refuses of a page URL: over 2,000 bytes, or a `data:`
/// URL (a page's content, not its address).
pub fn check_url(url: &str) -> Result<(), IngestError> {
    if url.len() > MAX_URL {
        return Err(invalid(Field::Url, "must be a valid url"));
    }
    let scheme = url.trim_start().split(':').next().unwrap_or_default();
    if url.contains(':') && scheme.eq_ignore_ascii_case("data") {
        return Err(invalid(Field::Url, "scheme is not allowed"));
    }
    Ok(())
}

/// The sites a hit names: `d` as sent, or, without one, the page's host
/// (without `www.`), as Plausible does; a blank `d` is refused.
fn domain(value: Option<Value>, url: &str) -> Result<String, IngestError> {
    let blank = || invalid(Field::Domain, "can't be blank");
    match value {
        Some(Value::String(d)) if d.trim().is_empty() => Err(blank()),
        Some(Value::String(d)) => Ok(d),
        _ => {
            let host = url::Url::parse(url.trim())
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .filter(|h| !h.is_empty())
                .ok_or_else(blank)?;
            Ok(host.strip_prefix("www.").unwrap_or(&host).to_string())
        }
    }
}

/// Plausible's `h`: `1` (or `"1"`) asks for the fragment; another integer
/// does not; anything that is not an integer is refused.
fn hash_mode(value: Option<Value>) -> Result<HashMode, IngestError> {
    let n = match value {
        None | Some(Value::Null) => return Ok(HashMode::Off),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(1) => Ok(HashMode::On),
        Some(_) => Ok(HashMode::Off),
        None => Err(invalid(Field::HashMode, "is invalid")),
    }
}

/// An engagement's usable scroll depth (`sd`, an integer from 0, capped at
/// 100) and engagement time (`e`, milliseconds from 0, under 30 days),
/// each a number or the text of one; `None` when it carries neither.
fn engagement(sd: Option<&Value>, e: Option<&Value>) -> Option<Engagement> {
    let integer = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        _ => None,
    };
    let scroll_depth = integer(sd).map(|d| d.min(100) as u8);
    let engaged_ms = integer(e).filter(|ms| *ms < MAX_ENGAGEMENT_MS);
    (scroll_depth.is_some() || engaged_ms.is_some()).then(|| Engagement {
        engaged_ms: engaged_ms.map_or(0, |ms| ms as u32),
        scroll_depth,
    })
}

/// Props come as an object, or (older Plausible scripts) as a JSON string of
/// one; anything else is ignored. Values become text; nested, null and
/// blank values, and blank keys, are left out; the first 30 that remain
/// (by key) are kept. A kept key over 300 bytes or value over 2,000 is
/// refused, as Plausible refuses it.
pub(super) fn props(value: Option<Value>) -> Result<Vec<(String, String)>, IngestError> {
    let object: Map<String, Value> = match value {
        Some(Value::Object(o)) => o,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => o,
            _ => return Ok(Vec::new()),
        },
        _ => return Ok(Vec::new()),
    };
    let kept: Vec<(String, String)> = object
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null | Value::Array(_) | Value::Object(_) => return None,
            };
            let blank = |s: &str| s.trim_start().is_empty();
            (!blank(&k) && !blank(&v)).then_some((k, v))
        })
        .take(MAX_PROPS)
        .collect();
    if kept
        .iter()
        .any(|(k, v)| k.len() > MAX_PROP_KEY || v.len() > MAX_PROP_VALUE)
    {
        return Err(invalid(
            Field::Props,
            "keys should have at most 300 bytes and values 2000 bytes",
        ));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a body becomes: `Ok((name, url, domain))`, or `Err((field,
    /// words the reason holds))`.
    fn check(body: &[u8], expected: Result<(&str, &str, &str), (&str, &str)>) {
        let got = parse(body);
        match (got, expected) {
            (Ok(e), Ok((n, u, d))) => assert_eq!(
                (e.name.as_str(), e.url.as_str(), e.domain.as_str()),
                (n, u, d)
            ),
            (Err(e), Err((field, words))) => {
                assert_eq!(e.field().name(), field, "{e}");
                assert!(
                    e.to_string().contains(words),
                    "{e} does not contain {words}"
                )
            }
            (got, want) => panic!(
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    fn props_of(body: &str) -> Vec<(String, String)> {
        parse(body.as_bytes()).expect("parses").props
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
    fn bad_input_is_named_as_plausible_names_it() {
        check(b"", Err(("request", "ends too early")));
        check(b"{", Err(("request", "ends too early")));
        check(b"[]", Err(("request", "not a JSON object")));
        check(br#""<script>""#, Err(("request", "not a JSON object")));
        check(
            b"{\"n\":\"pageview\",\"u\":\"\xff\xfe\",\"d\":\"a.org\"}",
            Err(("request", "line 1")),
        );
        check(
            br#"{"u":"https://a.org/","d":"a.org"}"#,
            Err(("event_name", "can't be blank")),
        );
        check(
            br#"{"n":"  ","u":"https://a.org/","d":"a.org"}"#,
            Err(("event_name", "can't be blank")),
        );
        check(
            br#"{"n":["a"],"u":"https://a.org/","d":"a.org"}"#,
            Err(("event_name", "is invalid")),
        );
        check(
            br#"{"n":4.5,"u":"https://a.org/","d":"a.org"}"#,
            Err(("event_name", "is invalid")),
        );
        check(
            format!(
                r#"{{"n":"{}","u":"https://a.org/","d":"a.org"}}"#,
                "é".repeat(121)
            )
            .as_bytes(),
            Err(("event_name", "at most 120")),
        );
        check(
            br#"{"n":"pageview","d":"a.org"}"#,
            Err(("url", "is required")),
        );
        check(
            br#"{"n":"pageview","u":5,"d":"a.org"}"#,
            Err(("url", "must be a valid url")),
        );
        check(
            br#"{"n":"pageview","u":" DATA:text/html,hi","d":"a.org"}"#,
            Err(("url", "scheme is not allowed")),
        );
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":" "}"#,
            Err(("domain", "can't be blank")),
        );
        check(
            br#"{"n":"pageview","u":"about:config"}"#,
            Err(("domain", "can't be blank")),
        );
        check(
            br#"{"n":"pageview","u":"https://a.org/","d":"a.org","h":"x"}"#,
            Err(("hash_mode", "is invalid")),
        );
        check(
            br#"{"n":"engagement","u":"https://a.org/","d":"a.org"}"#,
            Err(("event_name", "'sd' or 'e'")),
        );
    }

    #[test]
    fn urls_up_to_2000_bytes() {
        let url = |len: usize| format!("https://a.org/{}", "a".repeat(len - 14));
        let body = |u: &str| format!(r#"{{"n":"pageview","u":"{u}","d":"a.org"}}"#);
        assert_eq!(url(MAX_URL).len(), MAX_URL);
        assert!(parse(body(&url(MAX_URL)).as_bytes()).is_ok());
        check(
            body(&url(MAX_URL + 1)).as_bytes(),
            Err(("url", "must be a valid url")),
        );
    }

    #[test]
    fn errors_do_not_echo_input() {
        let err = parse(br#"{"n":"pageview","u":{"x":"198.51.100.77"},"d":"a.org"}"#).unwrap_err();
        assert!(!err.body().to_string().contains("198.51"), "{err}");
        let err =
            parse(br#"{"n":"pageview","u":"https://a.org/","d":"a.org","c":5,"o":[1"#).unwrap_err();
        assert!(!err.body().to_string().contains("[1"), "{err}");
    }

    #[test]
    fn lenient_where_plausible_is() {
        // A numeric name is its text.
        check(
            br#"{"n":404,"u":"https://a.org/","d":"a.org"}"#,
            Ok(("404", "https://a.org/", "a.org")),
        );
        // Without `d`, the page's host without `www.`.
        check(
            br#"{"n":"pageview","u":"https://www.a.org/x"}"#,
            Ok(("pageview", "https://www.a.org/x", "a.org")),
        );
        // Any other scheme, or an empty URL, is for the pipeline to judge.
        check(
            br#"{"n":"pageview","u":"","d":"a.org"}"#,
            Ok(("pageview", "", "a.org")),
        );
        // A referrer that is not text is ignored; a long one is cut.
        let e = parse(br#"{"n":"pageview","u":"https://a.org/","d":"a.org","r":5,"c":7}"#).unwrap();
        assert_eq!((e.referrer, e.consent), (None, None));
        let long = format!(
            r#"{{"n":"pageview","u":"https://a.org/","d":"a.org","r":"https://b.org/{}"}}"#,
            "é".repeat(3000)
        );
        let e = parse(long.as_bytes()).unwrap();
        assert_eq!(e.referrer.unwrap().chars().count(), MAX_URL);
        // An engagement with either field.
        for fields in [r#""sd":0"#, r#""e":"1500""#, r#""sd":"x","e":12"#] {
            let body = format!(r#"{{"n":"engagement","u":"https://a.org/","d":"a.org",{fields}}}"#);
            assert!(parse(body.as_bytes()).is_ok(), "{body}");
        }
    }

    /// Issue 13's note: a body naming a field twice got a 400 where
    /// Plausible reads the first of its names.
    #[test]
    fn a_field_under_two_names_is_read_by_its_first_name() {
        let e = parse(br#"{"name":"long","n":"short","url":"https://b.org/","u":"https://a.org/","domain":"b.org","d":"a.org"}"#)
            .unwrap();
        assert_eq!(
            (e.name.as_str(), e.url.as_str(), e.domain.as_str()),
            ("short", "https://a.org/", "a.org")
        );
        let e = parse(br#"{"n":"signup","u":"https://a.org/","d":"a.org","props":{"x":"4"},"p":{"x":"3"},"meta":{"x":"2"},"m":{"x":"1"}}"#)
            .unwrap();
        assert_eq!(e.props, pairs(&[("x", "1")]));
        let e = parse(br#"{"n":"first","n":"last","u":"https://a.org/","d":"a.org"}"#).unwrap();
        assert_eq!(e.name, "last", "a key sent twice keeps its last value");
        check(
            br#"{"n":"a","name":5,"u":"https://a.org/","d":"a.org"}"#,
            Ok(("a", "https://a.org/", "a.org")),
        );
    }

    #[test]
    fn event_names_are_measured_in_graphemes() {
        let accented = "e\u{301}".repeat(120);
        assert_eq!(accented.chars().count(), 240);
        let body = |n: &str| format!(r#"{{"n":"{n}","u":"https://a.org/","d":"a.org"}}"#);
        assert!(parse(body(&accented).as_bytes()).is_ok());
        check(
            body(&format!("{accented}x")).as_bytes(),
            Err(("event_name", "at most 120")),
        );
    }

    #[test]
    fn engagement_values_and_interactive_flag_are_read() {
        let read = |fields: &str| {
            parse(
                format!(r#"{{"n":"engagement","u":"https://a.org/","d":"a.org",{fields}}}"#)
                    .as_bytes(),
            )
            .unwrap()
            .engagement
        };
        let e = |ms, sd| Engagement {
            engaged_ms: ms,
            scroll_depth: sd,
        };
        assert_eq!(read(r#""sd":45,"e":1500"#), e(1500, Some(45)));
        assert_eq!(
            read(r#""sd":"250""#),
            e(0, Some(100)),
            "depth capped at 100"
        );
        assert_eq!(
            read(r#""e":2592000000,"sd":3"#),
            e(0, Some(3)),
            "30 days of engagement is ignored"
        );
        let interactive = |fields: &str| {
            parse(
                format!(r#"{{"n":"signup","u":"https://a.org/","d":"a.org"{fields}}}"#).as_bytes(),
            )
            .unwrap()
            .interactive
        };
        assert!(interactive(""));
        assert!(interactive(r#","i":true"#));
        assert!(!interactive(r#","i":false"#));
        assert!(!interactive(r#","interactive":false"#));
        assert!(interactive(r#","i":0"#), "only false says not interactive");
    }

    #[test]
    fn hash_mode_is_one() {
        let mode = |h: &str| {
            parse(format!(r#"{{"n":"pageview","u":"https://a.org/","d":"a.org"{h}}}"#).as_bytes())
                .unwrap()
                .hash_mode
        };
        assert_eq!(mode(""), HashMode::Off);
        assert_eq!(mode(r#","h":1"#), HashMode::On);
        assert_eq!(mode(r#","hashMode":"1""#), HashMode::On);
        assert_eq!(mode(r#","h":0"#), HashMode::Off);
        assert_eq!(mode(r#","h":null"#), HashMode::Off);
    }

    #[test]
    fn props_as_object_or_string() {
        let e = r#"{"n":"signup","u":"https://a.org/","d":"a.org","p":{"plan":"basic","seats":3,"ok":true}}"#;
        assert_eq!(
            props_of(e),
            pairs(&[("ok", "true"), ("plan", "basic"), ("seats", "3")])
        );
        let e = r#"{"n":"signup","u":"https://a.org/","d":"a.org","props":"{\"plan\":\"pro\"}"}"#;
        assert_eq!(props_of(e), pairs(&[("plan", "pro")]));
    }

    #[test]
    fn bad_props_are_left_out_not_refused() {
        let body =
            |p: &str| format!(r#"{{"n":"signup","u":"https://a.org/","d":"a.org","p":{p}}}"#);
        assert_eq!(
            props_of(&body(
                r#"{"a":{"b":1},"l":["x"],"n":null,"e":"","s":"   ","   ":"v","good":true}"#
            )),
            pairs(&[("good", "true")])
        );
        for ignored in [
            r#""\"show-more:button\"""#,
            r#""not json""#,
            "[1,2]",
            "5",
            "true",
        ] {
            assert_eq!(props_of(&body(ignored)), vec![], "{ignored}");
        }
    }

    #[test]
    fn thirty_props_are_kept() {
        let many: Vec<String> = (0..50).map(|i| format!(r#""k{i:02}":"v""#)).collect();
        let body = format!(
            r#"{{"n":"signup","u":"https://a.org/","d":"a.org","p":{{{}}}}}"#,
            many.join(",")
        );
        let props = props_of(&body);
        assert_eq!(props.len(), MAX_PROPS);
        assert_eq!(props[0].0, "k00");
        assert_eq!(props[29].0, "k29");
    }

    #[test]
    fn long_prop_keys_and_values_are_refused() {
        let body = |k: &str, v: &str| {
            format!(r#"{{"n":"signup","u":"https://a.org/","d":"a.org","p":{{"{k}":"{v}"}}}}"#)
        };
        let limit = ("props", "at most 300 bytes and values 2000 bytes");
        assert_eq!(
            props_of(&body(&"k".repeat(300), &"v".repeat(2000))).len(),
            1
        );
        check(body(&"k".repeat(301), "v").as_bytes(), Err(limit));
        check(body("k", &"v".repeat(2001)).as_bytes(), Err(limit));
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
