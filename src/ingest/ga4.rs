//! Google Analytics 4's collection protocols, unchanged: `/g/collect`
//! (what gtag.js sends to a `server_container_url` or `transport_url`, and
//! `@analytics-debugger/ga4mp` to a custom `endpoint`) and `/mp/collect`
//! (the Measurement Protocol's JSON).
//!
//! `/g/collect`, GET or POST: parameters in the query string (`v=2`,
//! `tid`, `en`, `dl`, `dr`, `ul`, `gcs`, `ep.*`, `epn.*`, …); a POST body
//! holds one event per line (`\n` or `\r\n`), each line's parameters added
//! to the query string's, which the events share (gtag's batches). An
//! empty body is one event, the query string's (ga4mp's `sendBeacon`).
//! `/mp/collect?measurement_id=…&api_secret=…`: `{"client_id", "events":
//! [{"name", "params": {"page_location", "page_referrer", "language",
//! …}}]}`, at most 25 events. `api_secret` is not a tamis secret and is
//! neither checked nor kept.
//!
//! Events become tamis's: `page_view` a pageview; `user_engagement`
//! (`_et`, or `engagement_time_msec`) and `scroll` (`percent_scrolled`)
//! an engagement of the page; enhanced measurement's outbound `click`,
//! `file_download` and `form_submit` Plausible's `Outbound Link: Click`,
//! `File Download` (prop `url` from `link_url`) and `Form: Submission`;
//! any other name a custom event with its `ep.*`/`epn.*` (or `params`)
//! as props, kept when the site allows them. Consent mode's `gcs`
//! (`G1` + ad storage + analytics storage): analytics storage denied
//! (`G1x0`) counts the hit anonymously as `c: denied` does, granted
//! (`G1x1`) as `c: granted`. `cid`, `client_id`, `_ga`, `uid`, `user_id`
//! and the session ids are never read: tamis keeps its own daily key.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cors::AllowedOrigins;
use super::error::{Field, IngestError};
use super::handler::{preflight, read_body, Ingest};
use super::tracker::{
    self, answer, answer_with_credentials, TrackerHit, MAX_HITS, MAX_TRACKER_BODY,
};
use crate::config::TrackerId;
use crate::privacy::pipeline::Engagement;

/// The Measurement Protocol's limit of events per request.
const MAX_MP_EVENTS: usize = 25;

/// Identity parameters: never read, never props.
const IDENTITY: &[&str] = &[
    "cid",
    "client_id",
    "_ga",
    "uid",
    "user_id",
    "sid",
    "session_id",
];

/// Which of the two protocols a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/g/collect`.
    Gtag,
    /// `/mp/collect`.
    Measurement,
}

fn invalid(key: &'static str, problem: &'static str) -> IngestError {
    IngestError::Invalid {
        field: Field::Wire(key),
        problem,
    }
}

impl Ingest {
    pub async fn ga4(
        &self,
        protocol: Protocol,
        request: Request<Incoming>,
        peer: IpAddr,
        origins: &AllowedOrigins,
    ) -> Response<Full<Bytes>> {
        let origin = AllowedOrigins::origin_of(request.headers());
        if request.method() == Method::OPTIONS {
            let mut r = preflight("GET, POST, OPTIONS", "Content-Type");
            answer_with_credentials(origins, origin.as_ref(), r.headers_mut());
            return r;
        }
        self.metrics
            .hits_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let query = request.uri().query().unwrap_or_default().to_string();
        let method = request.method().clone();
        let result = if !origins.allows(origin.as_ref()) {
            Err(IngestError::Origin)
        } else {
            let (parts, body) = request.into_parts();
            let hits = match (protocol, method) {
                (Protocol::Gtag, Method::GET | Method::HEAD) => gtag(&query, b""),
                (Protocol::Gtag, Method::POST) => read_body(&parts.headers, body, MAX_TRACKER_BODY)
                    .await
                    .and_then(|body| gtag(&query, &body)),
                (Protocol::Measurement, Method::POST) => {
                    read_body(&parts.headers, body, MAX_TRACKER_BODY)
                        .await
                        .and_then(|body| measurement(&query, &body))
                }
                _ => Err(IngestError::Method),
            };
            match hits {
                Ok(hits) => self.accept_tracked(hits, &parts.headers, peer).await,
                Err(error) => Err(error),
            }
        };
        let mut response = match result {
            // Google's collectors answer 204 whatever the hit became.
            Ok(outcome) => answer(
                StatusCode::NO_CONTENT,
                match outcome {
                    super::handler::Outcome::Dropped(reason) => Some(reason.as_str()),
                    super::handler::Outcome::Accepted => None,
                },
            ),
            Err(error) => self.refused(
                &error,
                match protocol {
                    Protocol::Gtag => "GET, POST, OPTIONS",
                    Protocol::Measurement => "POST, OPTIONS",
                },
            ),
        };
        answer_with_credentials(origins, origin.as_ref(), response.headers_mut());
        response
    }
}

/// One event's parameters: the query string's, then its body line's
/// (a later value of a key replaces an earlier one).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// `ep.*` and `epn.*`, each key once (its last value).
    fn props(&self) -> Vec<(String, String)> {
        let mut props: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.0 {
            let Some(key) = k.strip_prefix("ep.").or_else(|| k.strip_prefix("epn.")) else {
                continue;
            };
            props.retain(|(k, _)| k != key);
            props.push((key.to_string(), v.clone()));
        }
        props
    }
}

fn form(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `/g/collect`'s hits: the query string's parameters, with each body
/// line's.
pub fn gtag(query: &str, body: &[u8]) -> Result<Vec<TrackerHit>, IngestError> {
    let shared = form(query.as_bytes());
    let body = std::str::from_utf8(body).map_err(|_| invalid("body", "must be UTF-8 text"))?;
    let lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.len() > MAX_HITS {
        return Err(invalid("body", "carries more than 100 events"));
    }
    let events: Vec<Params> = if lines.is_empty() {
        vec![Params(shared)]
    } else {
        lines
            .iter()
            .map(|line| {
                let mut params = shared.clone();
                params.extend(form(line.as_bytes()));
                Params(params)
            })
            .collect()
    };
    let mut hits = Vec::with_capacity(events.len());
    for params in &events {
        if let Some(hit) = gtag_hit(params)? {
            hits.push(hit);
        }
    }
    Ok(hits)
}

fn gtag_hit(params: &Params) -> Result<Option<TrackerHit>, IngestError> {
    if params.get("v").is_some_and(|v| v != "2") {
        return Err(invalid("v", "must be 2 (Google Analytics 4)"));
    }
    let tid = params
        .get("tid")
        .ok_or_else(|| invalid("tid", "is required"))?;
    let name = params
        .get("en")
        .ok_or_else(|| invalid("en", "is required"))?;
    let url = params
        .get("dl")
        .ok_or_else(|| invalid("dl", "is required"))?;
    let number = |key: &str| params.get(key).and_then(|v| v.trim().parse::<f64>().ok());
    let Some(mut event) = ga4_event(
        name,
        url,
        params.props(),
        number("_et").or_else(|| number("epn.engagement_time_msec")),
    )?
    else {
        return Ok(None);
    };
    event.referrer = params.get("dr").and_then(tracker::referrer);
    event.language = params.get("ul").map(str::to_string);
    event.consent = params.get("gcs").and_then(consent).map(str::to_string);
    Ok(Some(TrackerHit {
        site: TrackerId::ga4(tid),
        event,
    }))
}

/// Consent mode's `gcs`: `G1`, then ad storage, then analytics storage,
/// each `1` granted or `0` denied. Only analytics storage matters here.
fn consent(gcs: &str) -> Option<&'static str> {
    let gcs = gcs.as_bytes();
    match (gcs.get(..2), gcs.get(3)) {
        (Some(b"G1"), Some(b'0')) => Some("denied"),
        (Some(b"G1"), Some(b'1')) => Some("granted"),
        _ => None,
    }
}

/// A GA4 event as tamis's, or `None` for one that carries nothing tamis
/// counts (an engagement without a time).
fn ga4_event(
    name: &str,
    url: &str,
    mut props: Vec<(String, String)>,
    engaged_ms: Option<f64>,
) -> Result<Option<super::event::IncomingEvent>, IngestError> {
    let name = tracker::event_name(name)?;
    let url = tracker::page(url)?;
    props.retain(|(k, _)| !IDENTITY.contains(&k.as_str()));
    let prop = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let link = prop("link_url");
    let (name, props) = match name.as_str() {
        "page_view" => ("pageview".to_string(), Vec::new()),
        "user_engagement" | "scroll" => {
            let scroll = (name == "scroll")
                .then(|| prop("percent_scrolled").and_then(|p| p.parse::<f64>().ok()))
                .flatten();
            let engagement = Engagement {
                engaged_ms: engaged_ms
                    .filter(|ms| *ms >= 0.0 && *ms < 30.0 * 86_400_000.0)
                    .map_or(0, |ms| ms as u32),
                scroll_depth: scroll.map(|p| p.clamp(0.0, 100.0) as u8),
            };
            if engagement.engaged_ms == 0 && engagement.scroll_depth.is_none() {
                return Ok(None);
            }
            let mut event = tracker::event("engagement", url);
            event.engagement = engagement;
            return Ok(Some(event));
        }
        "click" if prop("outbound").as_deref() == Some("true") && link.is_some() => (
            "Outbound Link: Click".to_string(),
            vec![("url".to_string(), link.unwrap_or_default())],
        ),
        "file_download" if link.is_some() => (
            "File Download".to_string(),
            vec![("url".to_string(), link.unwrap_or_default())],
        ),
        "form_submit" => ("Form: Submission".to_string(), Vec::new()),
        _ => (name, props),
    };
    let mut event = tracker::event(&name, url);
    event.props = props;
    Ok(Some(event))
}

#[derive(Deserialize)]
struct MpBody {
    events: Option<Vec<MpEvent>>,
}

#[derive(Deserialize)]
struct MpEvent {
    name: Option<Value>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
}

/// `/mp/collect`'s hits: `measurement_id` from the query string, events
/// from the JSON body.
pub fn measurement(query: &str, body: &[u8]) -> Result<Vec<TrackerHit>, IngestError> {
    let query = form(query.as_bytes());
    let id = query
        .iter()
        .find(|(k, _)| k == "measurement_id")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid("measurement_id", "is required"))?;
    let body: MpBody = serde_json::from_slice(body)
        .map_err(|e| IngestError::Malformed(format!("line {} column {}", e.line(), e.column())))?;
    let events = body.events.unwrap_or_default();
    if events.is_empty() {
        return Err(invalid("events", "is required"));
    }
    if events.len() > MAX_MP_EVENTS {
        return Err(invalid("events", "must hold at most 25 events"));
    }
    let mut hits = Vec::with_capacity(events.len());
    for e in events {
        let name = match &e.name {
            Some(Value::String(n)) => n.as_str(),
            _ => return Err(invalid("name", "is required")),
        };
        let params = e.params.unwrap_or_default();
        let text = |key: &str| match params.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        };
        let url = match text("page_location") {
            Some(url) => url,
            None if name == "page_view" => {
                return Err(invalid("page_location", "is required for page_view"))
            }
            // A server-side event without a page counts on the site's
            // root, as Umami counts `@umami/node`'s.
            None => "/".to_string(),
        };
        let engaged = params.get("engagement_time_msec").and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        let props = params
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "page_location" | "page_referrer" | "language" | "engagement_time_msec"
                )
            })
            .filter_map(|(k, v)| match v {
                Value::String(s) if !s.trim().is_empty() => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                Value::Bool(b) => Some((k.clone(), b.to_string())),
                _ => None,
            })
            .collect();
        let Some(mut event) = ga4_event(name, &url, props, engaged)? else {
            continue;
        };
        event.referrer = text("page_referrer").and_then(|r| tracker::referrer(&r));
        event.language = text("language");
        hits.push(TrackerHit {
            site: TrackerId::ga4(id),
            event,
        });
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(query: &str, body: &str) -> TrackerHit {
        let mut hits = gtag(query, body.as_bytes()).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(hits.len(), 1, "{query}");
        hits.remove(0)
    }

    #[test]
    fn ga4mps_beacon_is_one_event_in_the_query_string() {
        // What @analytics-debugger/ga4mp 0.0.8 sends with sendBeacon: an
        // empty body, everything in the query string.
        let h = one(
            "v=2&tid=G-TEST123&cid=1234.5678&dl=https%3A%2F%2Fexample.org%2Faide%3Fq%3D1&dr=&dt=Aide&ul=fr-ca&sr=1280x720&en=signup&ep.plan=pro&epn.seats=3",
            "",
        );
        assert_eq!(h.site, Some(TrackerId::Ga4("G-TEST123".into())));
        assert_eq!(h.event.name, "signup");
        assert_eq!(h.event.url, "https://example.org/aide?q=1");
        assert_eq!(h.event.referrer, None);
        assert_eq!(h.event.language.as_deref(), Some("fr-ca"));
        assert_eq!(
            h.event.props,
            vec![
                ("plan".to_string(), "pro".to_string()),
                ("seats".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn gtags_batch_shares_the_query_string_and_sends_a_line_an_event() {
        let hits = gtag(
            "v=2&tid=G-TEST123&gcs=G111&cid=1.2&dl=https%3A%2F%2Fexample.org%2F&dr=https%3A%2F%2Fsearch.example%2F",
            b"en=page_view&_et=4\r\nen=signup&ep.plan=team\nen=user_engagement&_et=12000\n",
        )
        .unwrap();
        let names: Vec<&str> = hits.iter().map(|h| h.event.name.as_str()).collect();
        assert_eq!(names, ["pageview", "signup", "engagement"]);
        assert!(hits
            .iter()
            .all(|h| h.event.consent.as_deref() == Some("granted")));
        assert_eq!(
            hits[0].event.referrer.as_deref(),
            Some("https://search.example/")
        );
        assert_eq!(hits[2].event.engagement.engaged_ms, 12_000);
        assert!(hits[0].event.props.is_empty());
    }

    #[test]
    fn consent_mode_denied_analytics_storage_is_denied_consent() {
        for (gcs, consent) in [
            ("G100", Some("denied")),
            ("G110", Some("denied")),
            ("G101", Some("granted")),
            ("G111", Some("granted")),
            ("G1--", None),
            ("x", None),
        ] {
            let h = one(
                &format!("v=2&tid=G-A1&en=page_view&dl=https://example.org/&gcs={gcs}"),
                "",
            );
            assert_eq!(h.event.consent.as_deref(), consent, "{gcs}");
        }
    }

    #[test]
    fn enhanced_measurement_becomes_plausibles_events() {
        let base = "v=2&tid=G-A1&dl=https://example.org/";
        let h = one(
            &format!("{base}&en=click&ep.outbound=true&ep.link_url=https%3A%2F%2Fother.example%2Fx%3Fid%3D9&ep.link_domain=other.example"),
            "",
        );
        assert_eq!(h.event.name, "Outbound Link: Click");
        assert_eq!(
            h.event.props,
            vec![("url".into(), "https://other.example/x?id=9".into())]
        );
        let h = one(
            &format!("{base}&en=file_download&ep.link_url=https%3A%2F%2Fexample.org%2Fform.pdf"),
            "",
        );
        assert_eq!(h.event.name, "File Download");
        let h = one(&format!("{base}&en=scroll&epn.percent_scrolled=90"), "");
        assert_eq!(h.event.name, "engagement");
        assert_eq!(h.event.engagement.scroll_depth, Some(90));
        // An engagement without a time carries nothing to count.
        assert!(gtag(&format!("{base}&en=user_engagement"), b"")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn identity_parameters_never_become_props() {
        let h = one(
            "v=2&tid=G-A1&en=signup&dl=https://example.org/&uid=u1&cid=c1&ep.user_id=u2&ep.client_id=c2&ep.plan=x",
            "",
        );
        assert_eq!(h.event.props, vec![("plan".into(), "x".into())]);
    }

    #[test]
    fn bad_gtag_requests_are_refused_with_the_field() {
        for (query, body, field) in [
            ("v=2&en=page_view&dl=https://e.org/", "", "tid"),
            ("v=2&tid=G-A1&dl=https://e.org/", "", "en"),
            ("v=2&tid=G-A1&en=page_view", "", "dl"),
            ("v=1&tid=G-A1&en=page_view&dl=https://e.org/", "", "v"),
            ("v=2&tid=G-A1&en=page_view&dl=data:text/html,x", "", "url"),
            ("v=2&tid=G-A1&dl=https://e.org/", "en=a\nen=\n", "en"),
        ] {
            let error = gtag(query, body.as_bytes()).expect_err(query);
            assert_eq!(error.field().name(), field, "{query}: {error}");
        }
        let many = "en=a\n".repeat(101);
        let error = gtag("v=2&tid=G-A1&dl=https://e.org/", many.as_bytes()).unwrap_err();
        assert_eq!(error.field().name(), "body");
        // Not a measurement id: names no site.
        assert_eq!(
            one("v=2&tid=UA-1-1&en=page_view&dl=https://e.org/", "").site,
            None
        );
    }

    #[test]
    fn measurement_protocol_events_and_their_params() {
        // The Measurement Protocol's documented body (developers.google.com
        // /analytics/devguides/collection/protocol/ga4/sending-events).
        let hits = measurement(
            "measurement_id=G-A1&api_secret=s3cret",
            br#"{"client_id":"123.456","user_id":"u-9","events":[
                {"name":"page_view","params":{"page_location":"https://example.org/a","page_referrer":"https://search.example/","language":"en-ca","session_id":"77"}},
                {"name":"signup","params":{"plan":"pro","seats":2,"engagement_time_msec":"100","user_id":"x"}},
                {"name":"user_engagement","params":{"page_location":"https://example.org/a","engagement_time_msec":5000}}
            ]}"#,
        )
        .unwrap();
        let names: Vec<&str> = hits.iter().map(|h| h.event.name.as_str()).collect();
        assert_eq!(names, ["pageview", "signup", "engagement"]);
        assert_eq!(hits[0].event.url, "https://example.org/a");
        assert_eq!(hits[0].event.language.as_deref(), Some("en-ca"));
        assert_eq!(hits[1].event.url, "/");
        assert_eq!(
            hits[1].event.props,
            vec![
                ("plan".to_string(), "pro".to_string()),
                ("seats".to_string(), "2".to_string())
            ]
        );
        assert_eq!(hits[2].event.engagement.engaged_ms, 5_000);
        for (query, body, field) in [
            (
                "api_secret=x",
                r#"{"events":[{"name":"a"}]}"#,
                "measurement_id",
            ),
            ("measurement_id=G-A1", r#"{"events":[]}"#, "events"),
            (
                "measurement_id=G-A1",
                r#"{"events":[{"params":{}}]}"#,
                "name",
            ),
            (
                "measurement_id=G-A1",
                r#"{"events":[{"name":"page_view","params":{}}]}"#,
                "page_location",
            ),
            ("measurement_id=G-A1", "[1,", "request"),
        ] {
            let error = measurement(query, body.as_bytes()).expect_err(body);
            assert_eq!(error.field().name(), field, "{body}: {error}");
        }
        let many = format!(
            r#"{{"events":[{}]}}"#,
            vec![r#"{"name":"a"}"#; 26].join(",")
        );
        assert_eq!(
            measurement("measurement_id=G-A1", many.as_bytes())
                .unwrap_err()
                .field()
                .name(),
            "events"
        );
    }
}
