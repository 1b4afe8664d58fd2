//! `GET /e.gif?d=…&u=…`: the no-JavaScript pixel for `<noscript>` pages.
//! The query string becomes the same wire event as `POST /api/event` and
//! goes through the same path (privacy pipeline, the durable log, 503 when
//! the log is full). The answer is a 1×1 GIF that is never cached
//! and sets no cookie.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};

use super::cors::AllowedOrigins;
use super::error::{Field, IngestError};
use super::event::{check_url, IncomingEvent, MAX_BODY, MAX_NAME};
use super::handler::{Ingest, Outcome, Record};
use crate::privacy::url::HashMode;

/// The smallest transparent 1×1 GIF.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

impl Ingest {
    pub async fn pixel(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        origins: &AllowedOrigins,
    ) -> Response<Full<Bytes>> {
        self.metrics.hits_received.fetch_add(1, Ordering::Relaxed);
        let origin = AllowedOrigins::origin_of(request.headers());
        let result = if !origins.allows(origin.as_ref()) {
            Err(IngestError::Origin)
        } else if request.method() == Method::GET || request.method() == Method::HEAD {
            parse(request.uri().query().unwrap_or_default(), referer(&request))
        } else {
            Err(IngestError::Method)
        };
        let outcome = match result {
            Ok(incoming) => {
                let record = {
                    let table = self.privacy.sites();
                    let sites = table.sites_for(&incoming.domain);
                    let messages = self.process(&table, &incoming, &sites, request.headers(), peer);
                    Record::encode(&table, messages)
                };
                self.enqueue(record).await
            }
            Err(error) => Err(error),
        };
        let mut response = match outcome {
            Ok(Outcome::Accepted) => gif(None),
            Ok(Outcome::Dropped(reason)) => gif(Some(reason.as_str())),
            Err(error) => self.refused(&error, "GET, HEAD"),
        };
        origins.answer(origin.as_ref(), response.headers_mut());
        response
    }
}

/// The page's address when the pixel names none: the `Referer` a browser
/// sends for an image is the page itself (its origin only, cross-origin,
/// under the default referrer policy).
fn referer(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(hyper::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `d` (required), `u` (or the Referer), `n` (default `pageview`), `r`,
/// `h` (`1`: hash mode) and tamis's `c` (consent). Other parameters are
/// ignored. The URL is refused as `POST /api/event` refuses it.
pub fn parse(query: &str, referer: Option<String>) -> Result<IncomingEvent, IngestError> {
    if query.len() > MAX_BODY {
        return Err(IngestError::TooLarge { limit: MAX_BODY });
    }
    let (mut name, mut url, mut domain, mut referrer, mut consent) = (None, None, None, None, None);
    let mut hash = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().to_string();
        let slot = match key.as_ref() {
            "n" | "name" => &mut name,
            "u" | "url" => &mut url,
            "d" | "domain" => &mut domain,
            "r" | "referrer" => &mut referrer,
            "c" | "consent" => &mut consent,
            "h" | "hashMode" => &mut hash,
            _ => continue,
        };
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    let name = name.unwrap_or_else(|| "pageview".to_string());
    if super::event::graphemes(&name) > MAX_NAME {
        return Err(IngestError::Invalid {
            field: Field::EventName,
            problem: "should be at most 120 character(s)",
        });
    }
    let url = url.or(referer).ok_or(IngestError::Invalid {
        field: Field::Url,
        problem: "is required",
    })?;
    check_url(&url)?;
    Ok(IncomingEvent {
        name,
        url,
        domain: domain.ok_or(IngestError::Invalid {
            field: Field::Domain,
            problem: "can't be blank",
        })?,
        referrer,
        props: Vec::new(),
        hash_mode: if hash.as_deref() == Some("1") {
            HashMode::On
        } else {
            HashMode::Off
        },
        consent,
        opt_out: false,
        engagement: Default::default(),
        interactive: true,
        language: None,
    })
}

fn gif(dropped: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("image/gif"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-store, max-age=0"),
    );
    if let Some(reason) = dropped {
        h.insert("x-tamis-dropped", HeaderValue::from_static(reason));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, referer: Option<&str>, expected: Result<(&str, &str, &str), &str>) {
        match (parse(query, referer.map(str::to_string)), expected) {
            (Ok(e), Ok((n, u, d))) => assert_eq!(
                (e.name.as_str(), e.url.as_str(), e.domain.as_str()),
                (n, u, d)
            ),
            (Err(e), Err(want)) => {
                assert!(e.to_string().contains(want), "{e} does not contain {want}")
            }
            (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn query_string_to_wire_event() {
        check(
            "d=example.org&u=https%3A%2F%2Fexample.org%2Fa%3Fx%3D1",
            None,
            Ok(("pageview", "https://example.org/a?x=1", "example.org")),
        );
        check(
            "d=example.org",
            Some("https://example.org/page"),
            Ok(("pageview", "https://example.org/page", "example.org")),
        );
        check(
            "n=signup&d=example.org&u=https://example.org/",
            None,
            Ok(("signup", "https://example.org/", "example.org")),
        );
        check("u=https://example.org/", None, Err("can't be blank"));
        check("d=example.org&u=", None, Err("is required"));
        check(
            "d=example.org&u=data%3Atext%2Fhtml%2Chi",
            None,
            Err("scheme is not allowed"),
        );
        check(
            &format!("d=example.org&u=https://example.org/{}", "a".repeat(2000)),
            None,
            Err("must be a valid url"),
        );
        assert_eq!(
            parse("d=example.org&u=https://example.org/&h=1", None)
                .unwrap()
                .hash_mode,
            HashMode::On
        );
        check(
            &format!("d=a&u={}", "x".repeat(9000)),
            None,
            Err("larger than"),
        );
    }
}
