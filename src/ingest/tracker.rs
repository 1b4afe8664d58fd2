//! What the adapters of other products' trackers share (`umami`, `ga4`,
//! `matomo`): each turns its tracker's wire format into tamis's wire event
//! ([`IncomingEvent`]), as the pixel does, and hands the request's hits to
//! [`Ingest::accept_tracked`]: the same privacy pipeline, the same durable
//! log, the same 503 when the log is full. Only the answer differs, shaped
//! as each tracker expects it.
//!
//! A tracker names its site by its own id (`umami_website_id`,
//! `ga4_measurement_id`, `matomo_site_id` in the site's config); a hit
//! naming an id no site has is dropped as an unknown site. The trackers'
//! visitor and user ids (`cid`, `client_id`, `_id`, `uid`, …) are never
//! read: tamis keeps its own daily key.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderValue, VARY};

use super::cors::AllowedOrigins;
use super::error::{Field, IngestError};
use super::event::{check_url, IncomingEvent, MAX_NAME};
use super::handler::{Ingest, Outcome, Record};
use crate::config::TrackerId;
use crate::privacy::url::HashMode;

/// Largest request a tracker may send: batches (GA4's several events per
/// body, Matomo's bulk requests) are larger than one Plausible event.
pub const MAX_TRACKER_BODY: usize = 64 * 1024;
/// Most hits one request may carry.
pub const MAX_HITS: usize = 100;

/// One hit of a tracker's request, before privacy.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerHit {
    /// The site as the tracker names it; `None` when the id is not one
    /// of that tracker's ids at all (dropped as an unknown site).
    pub site: Option<TrackerId>,
    pub event: IncomingEvent,
}

/// What the adapters fill in of a wire event: the rest is a pageview's.
pub fn event(name: &str, url: String) -> IncomingEvent {
    IncomingEvent {
        name: name.to_string(),
        url,
        domain: String::new(),
        referrer: None,
        props: Vec::new(),
        hash_mode: HashMode::Off,
        consent: None,
        opt_out: false,
        engagement: Default::default(),
        interactive: true,
        language: None,
    }
}

/// A tracker's event name, refused as Plausible's Events API refuses one.
pub fn event_name(name: &str) -> Result<String, IngestError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(IngestError::Invalid {
            field: Field::EventName,
            problem: "can't be blank",
        });
    }
    if super::event::graphemes(name) > MAX_NAME {
        return Err(IngestError::Invalid {
            field: Field::EventName,
            problem: "should be at most 120 character(s)",
        });
    }
    Ok(name.to_string())
}

/// A page address as a tracker sends it: absolute, or a path (Umami's
/// `url`) that [`Ingest::accept_tracked`] puts on the site's first host
/// name when the tracker sent none. Refused as `POST /api/event` refuses
/// a URL.
pub fn page(url: &str) -> Result<String, IngestError> {
    let url = url.trim();
    check_url(url)?;
    Ok(url.to_string())
}

/// A referrer as sent, blank as none, cut as `POST /api/event` cuts it.
pub fn referrer(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.chars().take(super::event::MAX_URL).collect())
}

impl Ingest {
    /// Runs each hit of a tracker's request through the privacy pipeline
    /// for the site its tracker id names, and logs them all as one record:
    /// the request is accepted whole, and only once it is durable.
    pub(super) async fn accept_tracked(
        &self,
        hits: Vec<TrackerHit>,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Outcome, IngestError> {
        if hits.is_empty() {
            return Err(IngestError::Invalid {
                field: Field::Request,
                problem: "the request carries no hit",
            });
        }
        let record = {
            let table = self.privacy.sites();
            let mut messages = Vec::with_capacity(hits.len());
            for mut hit in hits {
                let site = hit.site.as_ref().and_then(|id| table.site_for_tracker(id));
                if let Some(site) = site {
                    if hit.event.url.starts_with('/') {
                        let host = &table[site].hostnames[0];
                        hit.event.url = format!("https://{host}{}", hit.event.url);
                    }
                }
                let sites = site.as_slice();
                messages.extend(self.process(&table, &hit.event, sites, headers, peer));
            }
            Record::encode(&table, messages)
        };
        self.enqueue(record).await
    }
}

/// An empty answer, never cached, with `X-Tamis-Dropped` when policy
/// dropped the hit.
pub fn answer(
    status: hyper::StatusCode,
    dropped: Option<&'static str>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-store, max-age=0"),
    );
    if let Some(reason) = dropped {
        h.insert("x-tamis-dropped", HeaderValue::from_static(reason));
    }
    r
}

/// CORS as Matomo and Google's collectors answer it: the allowed `Origin`
/// echoed with `Access-Control-Allow-Credentials: true`, since their
/// trackers send with credentials (XHR `withCredentials`, `sendBeacon`),
/// and a credentialed request is refused a `*`.
pub fn answer_with_credentials(
    origins: &AllowedOrigins,
    origin: Option<&HeaderValue>,
    answer: &mut HeaderMap,
) {
    answer.insert(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin.filter(|o| origins.allows(Some(o))) {
        answer.insert("access-control-allow-origin", origin.clone());
        answer.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
}
