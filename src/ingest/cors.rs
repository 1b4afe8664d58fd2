//! Which browser origins may send hits (`server.cors_allow_origin`): `*`
//! for any, or a list of origins such as `https://example.org`. Owns the
//! parsing of that setting and the CORS answer of ingest; the stats API
//! stays same-origin and sends no CORS header at all.
//!
//! With a list, a hit whose `Origin` is not listed is refused (403): a
//! beacon posting as `text/plain` needs no preflight, so leaving out the
//! `Access-Control-Allow-Origin` header alone would not stop it. A hit
//! without `Origin` (a server-side tracker, the pixel) is not a browser's
//! cross-origin request and is accepted.

use hyper::header::{HeaderMap, HeaderValue, ORIGIN, VARY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    /// Lower-cased `scheme://host[:port]`, as browsers send them.
    Only(Vec<String>),
}

impl AllowedOrigins {
    /// `*`, or origins separated by commas or spaces.
    pub fn parse(text: &str) -> Result<AllowedOrigins, String> {
        let items: Vec<&str> = text
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items == ["*"] {
            return Ok(AllowedOrigins::Any);
        }
        if items.is_empty() {
            return Err("must be `*` or origins such as https://example.org".into());
        }
        items
            .iter()
            .map(|item| origin(item))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowedOrigins::Only)
    }

    /// The request's `Origin`, what the other methods take.
    pub fn origin_of(headers: &HeaderMap) -> Option<HeaderValue> {
        headers.get(ORIGIN).cloned()
    }

    /// Whether a request with this `Origin` header may send a hit.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match (self, origin) {
            (AllowedOrigins::Any, _) | (_, None) => true,
            (AllowedOrigins::Only(list), Some(origin)) => origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|l| l.eq_ignore_ascii_case(o))),
        }
    }

    /// Adds the CORS headers of an ingest answer to a request from
    /// `origin`.
    pub fn answer(&self, origin: Option<&HeaderValue>, answer: &mut HeaderMap) {
        match self {
            AllowedOrigins::Any => {
                answer.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            }
            AllowedOrigins::Only(_) => {
                answer.insert(VARY, HeaderValue::from_static("Origin"));
                if let Some(origin) = origin.filter(|o| self.allows(Some(o))) {
                    answer.insert("access-control-allow-origin", origin.clone());
                }
            }
        }
    }
}

impl std::fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedOrigins::Any => f.write_str("*"),
            AllowedOrigins::Only(list) => f.write_str(&list.join(", ")),
        }
    }
}

/// `https://example.org` or `http://localhost:8080`: a scheme, a host and
/// maybe a port, nothing else (browsers send no path in `Origin`).
fn origin(item: &str) -> Result<String, String> {
    let refuse = || format!("`{item}` is not an origin such as https://example.org");
    let url = url::Url::parse(item).map_err(|_| refuse())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(refuse());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&[&str], ()>) {
        let got = AllowedOrigins::parse(text).map_err(|_| ());
        let want = expected.map(|list| match list {
            ["*"] => AllowedOrigins::Any,
            list => AllowedOrigins::Only(list.iter().map(|s| s.to_string()).collect()),
        });
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn origins_are_parsed() {
        check("*", Ok(&["*"]));
        check(" * ", Ok(&["*"]));
        check("https://example.org", Ok(&["https://example.org"]));
        check(
            "https://Example.org/, http://localhost:8080",
            Ok(&["https://example.org", "http://localhost:8080"]),
        );
        check("https://example.org:443", Ok(&["https://example.org"]));
        check("", Err(()));
        check("example.org", Err(()));
        check("https://example.org/path", Err(()));
        check("https://user@example.org", Err(()));
        check("ftp://example.org", Err(()));
        check("*, https://example.org", Err(()));
    }

    fn headers(origin: Option<&str>) -> Option<HeaderValue> {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        AllowedOrigins::origin_of(&h)
    }

    /// Issue 12, point 14: ingest sent `*` whatever the setting said.
    #[test]
    fn cors_allow_origin_is_applied_to_ingest() {
        let only = AllowedOrigins::parse("https://example.org").unwrap();
        let mut answer = HeaderMap::new();
        only.answer(headers(Some("https://example.org")).as_ref(), &mut answer);
        assert_eq!(
            answer.get("access-control-allow-origin").unwrap(),
            "https://example.org"
        );
        assert!(only.allows(headers(Some("https://example.org")).as_ref()));
        assert!(only.allows(headers(None).as_ref()));

        let mut answer = HeaderMap::new();
        only.answer(headers(Some("https://evil.example")).as_ref(), &mut answer);
        assert!(answer.get("access-control-allow-origin").is_none());
        assert!(!only.allows(headers(Some("https://evil.example")).as_ref()));
        assert!(!only.allows(headers(Some("null")).as_ref()));

        let mut answer = HeaderMap::new();
        AllowedOrigins::Any.answer(headers(Some("https://evil.example")).as_ref(), &mut answer);
        assert_eq!(answer.get("access-control-allow-origin").unwrap(), "*");
    }
}
