//! `POST /api/send`: Umami's tracker (`src/tracker/index.js` of npm
//! `umami`) and `@umami/node`, unchanged. The body is
//! `{"type": "event", "payload": {"website", "hostname", "language",
//! "referrer", "screen", "title", "url", "name"?, "data"?}}`: `website`
//! names the site (`umami_website_id`), `url` is the page's path and query
//! on `hostname` (`encodeURI`'d), `name` and `data` a custom event and its
//! props. `title` and `screen` are not read. `@umami/node`'s
//! `track(name, data)` sends no page: Umami counts it on `/`, and so does
//! tamis, on the site's first host name.
//!
//! The tracker keeps the answer's body and sends it back as
//! `x-umami-cache` on its next hits (Umami's session token): tamis answers
//! one constant word, the same for everyone, and ignores the header.
//! `identify` (user data Umami attaches to a session) is refused: tamis
//! keeps no identity.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use serde::Deserialize;
use serde_json::Value;

use super::cors::AllowedOrigins;
use super::error::{Field, IngestError};
use super::handler::{preflight, read_body, Ingest, Outcome};
use super::tracker::{self, TrackerHit, MAX_TRACKER_BODY};
use crate::config::TrackerId;

/// What the tracker reads as its cache token: identifies nobody.
const TOKEN: &str = "tamis";

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Payload {
    website: Option<Value>,
    hostname: Option<Value>,
    language: Option<Value>,
    referrer: Option<Value>,
    url: Option<Value>,
    name: Option<Value>,
    data: Option<Value>,
}

impl Ingest {
    pub async fn umami(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        origins: &AllowedOrigins,
    ) -> Response<Full<Bytes>> {
        let origin = AllowedOrigins::origin_of(request.headers());
        if request.method() == Method::OPTIONS {
            // The tracker posts JSON cross-origin, so a preflight comes
            // first; its later hits carry `x-umami-cache`.
            let mut r = preflight("POST, OPTIONS", "Content-Type, x-umami-cache");
            origins.answer(origin.as_ref(), r.headers_mut());
            return r;
        }
        self.metrics
            .hits_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = if !origins.allows(origin.as_ref()) {
            Err(IngestError::Origin)
        } else if request.method() != Method::POST {
            Err(IngestError::Method)
        } else {
            let (parts, body) = request.into_parts();
            match read_body(&parts.headers, body, MAX_TRACKER_BODY)
                .await
                .and_then(|body| parse(&body))
            {
                Ok(hit) => self.accept_tracked(vec![hit], &parts.headers, peer).await,
                Err(error) => Err(error),
            }
        };
        let mut response = match result {
            Ok(outcome) => {
                let mut r = Response::new(Full::new(Bytes::from_static(TOKEN.as_bytes())));
                r.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if let Outcome::Dropped(reason) = outcome {
                    r.headers_mut()
                        .insert("x-tamis-dropped", HeaderValue::from_static(reason.as_str()));
                }
                r
            }
            Err(error) => self.refused(&error, "POST, OPTIONS"),
        };
        origins.answer(origin.as_ref(), response.headers_mut());
        response
    }
}

fn text(value: Option<&Value>) -> Option<&str> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
        _ => None,
    }
}

fn invalid(key: &'static str, problem: &'static str) -> IngestError {
    IngestError::Invalid {
        field: Field::Wire(key),
        problem,
    }
}

/// Umami's body as a tamis hit.
pub fn parse(body: &[u8]) -> Result<TrackerHit, IngestError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| IngestError::Malformed(format!("line {} column {}", e.line(), e.column())))?;
    match body.kind.as_deref() {
        Some("event") => {}
        Some("identify") => {
            return Err(invalid(
                "type",
                "identify is not collected: tamis keeps no visitor identity",
            ))
        }
        _ => return Err(invalid("type", "must be event")),
    }
    let payload = body
        .payload
        .ok_or_else(|| invalid("payload", "is required"))?;
    let website =
        text(payload.website.as_ref()).ok_or_else(|| invalid("website", "is required"))?;
    // The page: `url` on `hostname`; an absolute `url` as it is; no
    // `url`, `/` as Umami counts it.
    let path = tracker::page(text(payload.url.as_ref()).unwrap_or("/"))?;
    let url = match text(payload.hostname.as_ref()) {
        Some(host) if path.starts_with('/') => format!("https://{}{path}", host.trim()),
        _ if path.starts_with('/') || path.contains("://") => path,
        _ => format!("/{path}"),
    };
    let name = match text(payload.name.as_ref()) {
        Some(name) => tracker::event_name(name)?,
        None => "pageview".to_string(),
    };
    let mut event = tracker::event(&name, tracker::page(&url)?);
    event.referrer = text(payload.referrer.as_ref()).and_then(tracker::referrer);
    event.language = text(payload.language.as_ref()).map(str::to_string);
    if name != "pageview" {
        event.props = super::event::props(payload.data)?;
    }
    Ok(TrackerHit {
        site: TrackerId::umami(website),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(body: &str) -> TrackerHit {
        parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    const SITE: &str = "2a4bd9e3-4c1f-4e5b-9e0a-9f3f4a1c2b3d";

    #[test]
    fn the_trackers_pageview_is_a_pageview_of_path_on_hostname() {
        // What Umami's tracker sends (src/tracker/index.js, getPayload):
        // the path and query in `url`, encodeURI'd, the host apart, the
        // title encodeURIComponent'd (not read).
        let h = hit(&format!(
            r#"{{"type":"event","payload":{{"website":"{SITE}","hostname":"www.example.org","screen":"1280x720","language":"fr-CA","title":"Accueil%20%C3%A9t%C3%A9","url":"/%C3%A9t%C3%A9?x=1","referrer":"https://search.example/?q=a%20b"}}}}"#
        ));
        assert_eq!(h.site, TrackerId::umami(SITE));
        assert_eq!(h.event.name, "pageview");
        assert_eq!(h.event.url, "https://www.example.org/%C3%A9t%C3%A9?x=1");
        assert_eq!(
            h.event.referrer.as_deref(),
            Some("https://search.example/?q=a%20b")
        );
        assert_eq!(h.event.language.as_deref(), Some("fr-CA"));
        assert!(h.event.props.is_empty());
    }

    #[test]
    fn a_named_event_carries_its_data_as_props() {
        let h = hit(&format!(
            r#"{{"type":"event","payload":{{"website":"{SITE}","hostname":"example.org","url":"/","name":"signup","data":{{"plan":"pro","seats":3,"nested":{{"a":1}}}}}}}}"#
        ));
        assert_eq!(h.event.name, "signup");
        assert_eq!(
            h.event.props,
            vec![
                ("plan".to_string(), "pro".to_string()),
                ("seats".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn umami_nodes_track_without_a_page_counts_on_the_root() {
        // @umami/node 0.4: track('x', data) sends {website, name, data}.
        let h = hit(&format!(
            r#"{{"type":"event","payload":{{"website":"{}","name":"export","data":{{"format":"csv"}}}}}}"#,
            SITE.to_uppercase()
        ));
        assert_eq!(h.site, TrackerId::umami(SITE));
        assert_eq!(h.event.url, "/");
        assert_eq!(h.event.name, "export");
    }

    #[test]
    fn bad_bodies_are_refused_with_the_field() {
        for (body, field) in [
            ("not json".to_string(), "request"),
            (r#"{"type":"identify","payload":{}}"#.to_string(), "type"),
            (r#"{"type":"event"}"#.to_string(), "payload"),
            (
                r#"{"type":"event","payload":{"url":"/"}}"#.to_string(),
                "website",
            ),
            (
                r#"{"type":"event","payload":{"website":"x","url":"data:text/html,hi"}}"#
                    .to_string(),
                "url",
            ),
            (
                format!(
                    r#"{{"type":"event","payload":{{"website":"x","name":"{}"}}}}"#,
                    "é".repeat(121)
                ),
                "event_name",
            ),
        ] {
            let error = parse(body.as_bytes()).expect_err(&body);
            assert_eq!(error.field().name(), field, "{body}: {error}");
        }
        // An id that is not a UUID names no site: dropped as unknown.
        assert_eq!(
            hit(r#"{"type":"event","payload":{"website":"nope","url":"/"}}"#).site,
            None
        );
    }
}
