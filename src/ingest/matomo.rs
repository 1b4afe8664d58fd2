//! `/matomo.php` and `/piwik.php`: Matomo's Tracking HTTP API as its
//! JavaScript tracker (`matomo.js`, `piwik.js`) and image tags send it,
//! unchanged. Parameters come in the query string, in a form-encoded POST
//! body, or as a bulk request (`{"requests": ["?idsite=…&rec=1&…", …],
//! "send_image": 0}`, posted with the form content type).
//!
//! Read: `idsite` (the site's `matomo_site_id`), `rec=1` (required, as
//! Matomo records nothing without it), `url` (or the `Referer` of an image
//! request), `urlref`, events `e_c`/`e_a`/`e_n`/`e_v`, outlinks `link`,
//! downloads `download`, `ping`, `send_image`. A request is a pageview
//! unless it is one of these:
//! - an event: tamis event name `e_c` (the category), props `action`
//!   (`e_a`), `name` (`e_n`) and `value` (`e_v`);
//! - `link=URL`: Plausible's `Outbound Link: Click` with prop `url`;
//! - `download=URL`: `File Download` with prop `url`;
//! - `idgoal=N`: `Goal N` (`idgoal=0`, an ecommerce order: `Ecommerce
//!   Order`); content tracking (`c_n`): `Content Impression`, or with
//!   `c_i` `Content Interaction`, props `name` and `piece`; another custom
//!   action (`ca=1`): `Custom Action`. None of these is a pageview; each
//!   is counted when the site's `event_names` lists it, else dropped as an
//!   event not allowed;
//! - `ping=1` (the heartbeat): it carries no page, event or time tamis can
//!   count, so it is answered and not recorded.
//!
//! Never read: `_id`, `uid`, `cid`, `cdt`, `_idts`, `_viewts`, `cip`,
//! `token_auth`, `ua`, `lang`, `action_name` (the page title), `res` and the
//! other device parameters: the client address is the connection's (or a
//! trusted proxy's), the language `Accept-Language`'s, the identity
//! tamis's own daily key. Matomo's opt-out cookie (`piwik_ignore`, set by
//! its opt-out page on the tracker's host) is honoured as an opt-out.
//!
//! Answered as Matomo answers: `send_image=0` (what the tracker's
//! `sendBeacon` and XHR requests ask) 204, otherwise a 1×1 GIF; CORS with
//! the `Origin` echoed and credentials allowed, since the tracker's XHR
//! sends `withCredentials` and falls back to an image request (counting
//! the hit twice) when the answer is refused.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, COOKIE, REFERER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::cors::AllowedOrigins;
use super::error::{Field, IngestError};
use super::handler::{preflight, read_body, Ingest, Outcome};
use super::tracker::{
    self, answer, answer_with_credentials, TrackerHit, MAX_HITS, MAX_TRACKER_BODY,
};
use crate::config::TrackerId;

/// The smallest transparent 1×1 GIF, as the pixel answers.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

fn invalid(key: &'static str, problem: &'static str) -> IngestError {
    IngestError::Invalid {
        field: Field::Wire(key),
        problem,
    }
}

/// A request's hits and how it asks to be answered.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub hits: Vec<TrackerHit>,
    /// `send_image=0`: an empty 204 rather than the GIF.
    pub no_image: bool,
    /// A bulk request, answered with its counts when it wants no 204.
    pub bulk: bool,
}

impl Ingest {
    pub async fn matomo(
        &self,
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
        let query = request.uri().query().unwrap_or_default().to_string();
        let referer = text_header(request.headers(), REFERER);
        let opted_out = opt_out_cookie(request.headers());
        let parsed = if !origins.allows(origin.as_ref()) {
            Err(IngestError::Origin)
        } else {
            match *request.method() {
                Method::GET | Method::HEAD => parse(&query, b"", referer.as_deref()),
                Method::POST => {
                    let (parts, body) = request.into_parts();
                    let body = read_body(&parts.headers, body, MAX_TRACKER_BODY).await;
                    let parsed = body.and_then(|b| parse(&query, &b, referer.as_deref()));
                    return self
                        .answer_matomo(parsed, opted_out, &parts.headers, peer, origins, origin)
                        .await;
                }
                _ => Err(IngestError::Method),
            }
        };
        let headers = request.headers().clone();
        self.answer_matomo(parsed, opted_out, &headers, peer, origins, origin)
            .await
    }

    async fn answer_matomo(
        &self,
        parsed: Result<Parsed, IngestError>,
        opted_out: bool,
        headers: &HeaderMap,
        peer: IpAddr,
        origins: &AllowedOrigins,
        origin: Option<HeaderValue>,
    ) -> Response<Full<Bytes>> {
        // A request of pings only is answered and not recorded; anything
        // else is a hit, counted as received.
        let pings_only = matches!(&parsed, Ok(p) if p.hits.is_empty());
        if !pings_only {
            self.metrics
                .hits_received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (no_image, bulk) = match &parsed {
            Ok(p) => (p.no_image, p.bulk),
            Err(_) => (false, false),
        };
        let result = match parsed {
            Ok(p) if p.hits.is_empty() => Ok((None, 0)),
            Ok(mut p) => {
                for hit in &mut p.hits {
                    hit.event.opt_out |= opted_out;
                }
                let n = p.hits.len();
                self.accept_tracked(p.hits, headers, peer)
                    .await
                    .map(|o| (Some(o), n))
            }
            Err(error) => Err(error),
        };
        let mut response = match result {
            Ok((outcome, tracked)) => {
                let dropped = match outcome {
                    Some(Outcome::Dropped(reason)) => Some(reason.as_str()),
                    _ => None,
                };
                if no_image {
                    answer(StatusCode::NO_CONTENT, dropped)
                } else if bulk {
                    let body = serde_json::json!({
                        "status": "success",
                        "tracked": tracked,
                        "invalid": 0,
                    });
                    let mut r = answer(StatusCode::OK, dropped);
                    *r.body_mut() = Full::new(Bytes::from(body.to_string()));
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    r
                } else {
                    let mut r = answer(StatusCode::OK, dropped);
                    *r.body_mut() = Full::new(Bytes::from_static(GIF));
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("image/gif"));
                    r
                }
            }
            Err(error) => self.refused(&error, "GET, POST, OPTIONS"),
        };
        answer_with_credentials(origins, origin.as_ref(), response.headers_mut());
        response
    }
}

fn text_header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Matomo's opt-out cookie: `piwik_ignore`, whatever its value.
fn opt_out_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim().split('=').next() == Some("piwik_ignore"))
}

fn form(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A request's hits: the query string's and a form body's parameters as
/// one hit, or a bulk body's requests each as one.
pub fn parse(query: &str, body: &[u8], referer: Option<&str>) -> Result<Parsed, IngestError> {
    let params = form(query.as_bytes());
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'{') {
        let bulk: Value = serde_json::from_slice(trimmed).map_err(|e| {
            IngestError::Malformed(format!("line {} column {}", e.line(), e.column()))
        })?;
        let requests = match bulk.get("requests") {
            Some(Value::Array(list)) => list,
            _ => return Err(invalid("requests", "is required")),
        };
        if requests.is_empty() {
            return Err(invalid("requests", "is required"));
        }
        if requests.len() > MAX_HITS {
            return Err(invalid("requests", "must hold at most 100 requests"));
        }
        let mut hits = Vec::with_capacity(requests.len());
        for request in requests {
            let Value::String(request) = request else {
                return Err(invalid("requests", "must be query strings"));
            };
            let query = request.split_once('?').map_or(request.as_str(), |(_, q)| q);
            let mut all = params.clone();
            all.extend(form(query.as_bytes()));
            if let Some(hit) = hit(&all, referer)? {
                hits.push(hit);
            }
        }
        let no_image = match bulk.get("send_image") {
            Some(Value::Number(n)) => n.as_u64() == Some(0),
            Some(Value::String(s)) => s == "0",
            _ => false,
        };
        return Ok(Parsed {
            hits,
            no_image,
            bulk: true,
        });
    }
    let mut all = params;
    all.extend(form(body));
    let no_image = get(&all, "send_image") == Some("0");
    Ok(Parsed {
        hits: hit(&all, referer)?.into_iter().collect(),
        no_image,
        bulk: false,
    })
}

/// A parameter's last non-blank value.
fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// One tracking request as a hit; `None` for a ping.
fn hit(
    params: &[(String, String)],
    referer: Option<&str>,
) -> Result<Option<TrackerHit>, IngestError> {
    let idsite = get(params, "idsite").ok_or_else(|| invalid("idsite", "is required"))?;
    let site =
        TrackerId::matomo(idsite).ok_or_else(|| invalid("idsite", "must be a site number"))?;
    if get(params, "rec") != Some("1") {
        return Err(invalid(
            "rec",
            "must be 1 (Matomo records nothing without it)",
        ));
    }
    if get(params, "ping") == Some("1") {
        return Ok(None);
    }
    let url = get(params, "url")
        .or(referer)
        .ok_or_else(|| invalid("url", "is required"))?;
    let prop = |key: &str, from: &str| get(params, from).map(|v| (key.to_string(), v.to_string()));
    let (name, props) = if let (Some(category), Some(_)) = (get(params, "e_c"), get(params, "e_a"))
    {
        let props = [
            prop("action", "e_a"),
            prop("name", "e_n"),
            prop("value", "e_v"),
        ];
        (category.to_string(), props.into_iter().flatten().collect())
    } else if get(params, "e_c").is_some() || get(params, "e_a").is_some() {
        return Err(invalid("e_c", "an event needs both e_c and e_a"));
    } else if let Some(link) = prop("url", "link") {
        ("Outbound Link: Click".to_string(), vec![link])
    } else if let Some(download) = prop("url", "download") {
        ("File Download".to_string(), vec![download])
    } else if let Some(goal) = get(params, "idgoal") {
        // A goal conversion or (`idgoal=0`) an ecommerce order: not a
        // pageview of its page.
        let name = if goal == "0" {
            "Ecommerce Order".to_string()
        } else {
            format!("Goal {goal}")
        };
        (name, Vec::new())
    } else if get(params, "c_n").is_some() {
        let name = if get(params, "c_i").is_some() {
            "Content Interaction"
        } else {
            "Content Impression"
        };
        let props = [prop("name", "c_n"), prop("piece", "c_p")];
        (name.to_string(), props.into_iter().flatten().collect())
    } else if get(params, "ca") == Some("1") {
        ("Custom Action".to_string(), Vec::new())
    } else {
        ("pageview".to_string(), Vec::new())
    };
    let mut event = tracker::event(&tracker::event_name(&name)?, tracker::page(url)?);
    event.props = props;
    event.referrer = get(params, "urlref").and_then(tracker::referrer);
    Ok(Some(TrackerHit {
        site: Some(site),
        event,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(query: &str) -> TrackerHit {
        let mut parsed = parse(query, b"", None).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(parsed.hits.len(), 1, "{query}");
        parsed.hits.remove(0)
    }

    #[test]
    fn the_trackers_pageview() {
        // What matomo.js's trackPageView sends (Tracking HTTP API,
        // developer.matomo.org/api-reference/tracking-api).
        let h = one("action_name=Accueil&idsite=3&rec=1&r=123456&h=10&m=2&s=3&url=https%3A%2F%2Fexample.org%2Faide%3Fq%3D1&urlref=https%3A%2F%2Fsearch.example%2F&_id=0123456789abcdef&_idn=0&send_image=0&_refts=0&pdf=1&cookie=1&res=1280x720&pv_id=abc123&uadata=%7B%7D&cip=203.0.113.9&uid=jean&cid=0123456789abcdef&cdt=2020-01-01");
        assert_eq!(h.site, Some(TrackerId::Matomo(3)));
        assert_eq!(h.event.name, "pageview");
        assert_eq!(h.event.url, "https://example.org/aide?q=1");
        assert_eq!(h.event.referrer.as_deref(), Some("https://search.example/"));
        assert!(h.event.props.is_empty());
        assert_eq!(h.event.language, None);
    }

    #[test]
    fn events_outlinks_and_downloads() {
        let h = one(
            "idsite=1&rec=1&url=https://example.org/&e_c=Formulaires&e_a=Envoi&e_n=Permis&e_v=2",
        );
        assert_eq!(h.event.name, "Formulaires");
        assert_eq!(
            h.event.props,
            vec![
                ("action".into(), "Envoi".into()),
                ("name".into(), "Permis".into()),
                ("value".into(), "2".into())
            ]
        );
        let h = one("idsite=1&rec=1&url=https://example.org/&link=https%3A%2F%2Fother.example%2F");
        assert_eq!(h.event.name, "Outbound Link: Click");
        assert_eq!(
            h.event.props,
            vec![("url".into(), "https://other.example/".into())]
        );
        let h = one(
            "idsite=1&rec=1&url=https://example.org/&download=https%3A%2F%2Fexample.org%2Fa.pdf",
        );
        assert_eq!(h.event.name, "File Download");
    }

    #[test]
    fn goals_content_and_custom_actions_are_not_pageviews() {
        let base = "idsite=1&rec=1&url=https://example.org/a";
        assert_eq!(
            one(&format!("{base}&idgoal=3&revenue=2")).event.name,
            "Goal 3"
        );
        assert_eq!(
            one(&format!("{base}&idgoal=0&ec_id=A1")).event.name,
            "Ecommerce Order"
        );
        let h = one(&format!("{base}&ca=1&c_n=Banner&c_p=Promo"));
        assert_eq!(h.event.name, "Content Impression");
        assert_eq!(
            h.event.props,
            vec![
                ("name".into(), "Banner".into()),
                ("piece".into(), "Promo".into())
            ]
        );
        assert_eq!(
            one(&format!("{base}&ca=1&c_n=Banner&c_i=click")).event.name,
            "Content Interaction"
        );
        assert_eq!(one(&format!("{base}&ca=1")).event.name, "Custom Action");
    }

    #[test]
    fn a_ping_is_answered_and_carries_no_hit() {
        let parsed = parse(
            "idsite=1&rec=1&url=https://example.org/&ping=1&send_image=0",
            b"",
            None,
        )
        .unwrap();
        assert!(parsed.hits.is_empty());
        assert!(parsed.no_image);
    }

    #[test]
    fn a_form_body_and_a_bulk_body() {
        let parsed = parse(
            "",
            b"idsite=2&rec=1&url=https%3A%2F%2Fexample.org%2Fa",
            None,
        )
        .unwrap();
        assert_eq!(parsed.hits[0].event.url, "https://example.org/a");
        assert!(!parsed.no_image && !parsed.bulk);
        let parsed = parse(
            "",
            br#"{"requests":["?idsite=2&rec=1&url=https%3A%2F%2Fexample.org%2Fa","?idsite=2&rec=1&url=https%3A%2F%2Fexample.org%2Fb&ping=1","idsite=9&rec=1&url=https%3A%2F%2Fexample.org%2Fc&e_c=C&e_a=A"],"send_image":0}"#,
            None,
        )
        .unwrap();
        assert!(parsed.bulk && parsed.no_image);
        let urls: Vec<(&str, Option<TrackerId>)> = parsed
            .hits
            .iter()
            .map(|h| (h.event.url.as_str(), h.site.clone()))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://example.org/a", Some(TrackerId::Matomo(2))),
                ("https://example.org/c", Some(TrackerId::Matomo(9)))
            ]
        );
    }

    #[test]
    fn an_image_tag_without_url_counts_its_referer() {
        let parsed = parse("idsite=1&rec=1", b"", Some("https://example.org/page")).unwrap();
        assert_eq!(parsed.hits[0].event.url, "https://example.org/page");
    }

    #[test]
    fn bad_requests_are_refused_with_the_field() {
        for (query, body, field) in [
            ("rec=1&url=https://e.org/", "", "idsite"),
            ("idsite=abc&rec=1&url=https://e.org/", "", "idsite"),
            ("idsite=1&url=https://e.org/", "", "rec"),
            ("idsite=1&rec=1", "", "url"),
            ("idsite=1&rec=1&url=https://e.org/&e_c=A", "", "e_c"),
            ("", "{\"requests\":[]}", "requests"),
            ("", "{\"requests\":[1]}", "requests"),
            ("", "{\"requests\":", "request"),
            ("idsite=1&rec=1&url=data:text/html,x", "", "url"),
        ] {
            let error = parse(query, body.as_bytes(), None).expect_err(query);
            assert_eq!(error.field().name(), field, "{query} {body}: {error}");
        }
    }

    #[test]
    fn the_opt_out_cookie_is_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; piwik_ignore=*; b=2"));
        assert!(opt_out_cookie(&headers));
        headers.insert(COOKIE, HeaderValue::from_static("piwik_ignored=1"));
        assert!(!opt_out_cookie(&headers));
    }
}
