//! `POST /api/event`: read at most 8 KiB, parse, run the privacy pipeline
//! for each site the hit names, write the result to the durable log.
//! Answers 202 once the hit is on disk (fsync'd), 202 with `X-Tamis-Dropped`
//! when policy drops it (the drop is logged and counted the same way), 4xx
//! for bad input (400 for what Plausible's Events API refuses, with its
//! `{"errors": …}` body) and 503 with Retry-After when the log is full or cannot be
//! written — never 202 for a hit that is not logged.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT_LANGUAGE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;

use super::client_ip::client_ip;
use super::cors::AllowedOrigins;
use super::error::IngestError;
use super::event::{self, IncomingEvent, MAX_BODY};
use crate::aggregate::handoff::Handoff;
use crate::aggregate::Message;
use crate::clock::Clock;
use crate::journal::{record, AppendError, Journal};
use crate::metrics::Metrics;
use crate::privacy::pipeline::{DropReason, Dropped, Privacy, RawHit, SiteTable};

// Header names parsed once: looking up by `&str` parses the name per call.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");
static DNT: HeaderName = HeaderName::from_static("dnt");
static SEC_PURPOSE: HeaderName = HeaderName::from_static("sec-purpose");
static PURPOSE: HeaderName = HeaderName::from_static("purpose");
static X_PURPOSE: HeaderName = HeaderName::from_static("x-purpose");

const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Ingest {
    pub privacy: Privacy,
    pub journal: Journal,
    /// Where each logged hit's messages go once durable, so the feeder
    /// need not read them back.
    pub handoff: Arc<Handoff>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub trusted_proxies: Vec<IpNet>,
}

/// A request's messages and the journal record that holds them, encoded
/// with the site table their positions refer to, loaded once per request
/// (and let go of before the wait for the disk).
pub(super) struct Record {
    messages: Vec<Message>,
    payload: Vec<u8>,
}

impl Record {
    pub(super) fn encode(table: &SiteTable, messages: Vec<Message>) -> Record {
        let mut payload = Vec::with_capacity(512);
        record::encode(&messages, &table.ids, &mut payload);
        Record { messages, payload }
    }
}

/// How the hit ended, for the response.
pub(super) enum Outcome {
    Accepted,
    Dropped(DropReason),
}

impl Ingest {
    /// Answers a hit; `origins` says which browser origins may send one.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        origins: &AllowedOrigins,
    ) -> Response<Full<Bytes>> {
        let origin = AllowedOrigins::origin_of(request.headers());
        let origin = origin.as_ref();
        if request.method() == Method::OPTIONS {
            let mut r = preflight("POST, OPTIONS", "Content-Type");
            origins.answer(origin, r.headers_mut());
            return r;
        }
        self.metrics.hits_received.fetch_add(1, Ordering::Relaxed);
        let result = match request.method() {
            _ if !origins.allows(origin) => Err(IngestError::Origin),
            &Method::POST => self.accept(request, peer).await,
            _ => Err(IngestError::Method),
        };
        let mut response = match result {
            Ok(Outcome::Accepted) => plain(StatusCode::ACCEPTED, "ok"),
            Ok(Outcome::Dropped(reason)) => {
                let mut r = plain(StatusCode::ACCEPTED, "ok");
                r.headers_mut()
                    .insert("x-tamis-dropped", HeaderValue::from_static(reason.as_str()));
                r
            }
            Err(error) => {
                self.count_refused(&error);
                error_response(&error)
            }
        };
        origins.answer(origin, response.headers_mut());
        response
    }

    async fn accept(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Outcome, IngestError> {
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, MAX_BODY).await?;
        let incoming = event::parse(&body)?;
        let record = {
            let table = self.privacy.sites();
            let sites = table.sites_for(&incoming.domain);
            let messages = self.process(&table, &incoming, &sites, &parts.headers, peer);
            Record::encode(&table, messages)
        };
        self.enqueue(record).await
    }

    /// Runs the pipeline for each site the hit names (`sites`, positions in
    /// `table`, from its domain or its tracker's site id); none is an
    /// unknown site.
    pub(super) fn process(
        &self,
        table: &SiteTable,
        incoming: &IncomingEvent,
        sites: &[usize],
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Vec<Message> {
        let at = self.clock.now();
        if sites.is_empty() {
            let dropped = Dropped {
                reason: DropReason::UnknownSite,
                site: None,
            };
            return vec![Message::Dropped(dropped, at)];
        }
        let header = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let forwarded: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let hit = RawHit {
            name: &incoming.name,
            url: &incoming.url,
            domain: &incoming.domain,
            referrer: incoming.referrer.as_deref(),
            props: &incoming.props,
            hash_mode: incoming.hash_mode,
            consent: incoming.consent.as_deref(),
            opt_out: incoming.opt_out,
            client_ip: client_ip(peer, &forwarded, &self.trusted_proxies),
            user_agent: text(&USER_AGENT).unwrap_or_default(),
            sec_gpc: header(&SEC_GPC),
            dnt: header(&DNT),
            sec_purpose: text(&SEC_PURPOSE),
            purpose: text(&PURPOSE).or_else(|| text(&X_PURPOSE)),
            accept_language: incoming
                .language
                .as_deref()
                .or_else(|| text(&ACCEPT_LANGUAGE)),
            engagement: incoming.engagement,
            interactive: incoming.interactive,
            at,
        };
        sites
            .iter()
            .map(|&site| match self.privacy.process_in(table, site, &hit) {
                Ok(event) => Message::Event(event),
                Err(dropped) => Message::Dropped(dropped, at),
            })
            .collect()
    }

    /// Logs all of a hit's messages as one record: a hit is accepted whole,
    /// and only once it is durable.
    pub(super) async fn enqueue(&self, record: Record) -> Result<Outcome, IngestError> {
        let Record { messages, payload } = record;
        let mut outcome = None;
        for message in &messages {
            match message {
                Message::Event(_) => outcome = Some(Outcome::Accepted),
                Message::Dropped(d, _) if outcome.is_none() => {
                    outcome = Some(Outcome::Dropped(d.reason))
                }
                Message::Dropped(..) => {}
            }
        }
        // Counted once durable, even if the client hangs up meanwhile (its
        // hit is logged and will be in ClickHouse).
        let metrics = self.metrics.clone();
        let accepted = matches!(outcome, Some(Outcome::Accepted));
        let reasons: Vec<DropReason> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Dropped(d, _) => Some(d.reason),
                Message::Event(_) => None,
            })
            .collect();
        let handoff = self.handoff.clone();
        let count = Box::new(move |seq| {
            if accepted {
                metrics.hits_accepted.fetch_add(1, Ordering::Relaxed);
            }
            for reason in reasons {
                metrics.dropped(reason);
            }
            handoff.push(seq, messages);
        });
        let durable = self
            .journal
            .append_then(&payload, Some(count))
            .map_err(append_error)?;
        match durable.await {
            Ok(Ok(_seq)) => {}
            Ok(Err(error)) => return Err(append_error(error)),
            Err(_) => return Err(IngestError::LogUnavailable),
        }
        Ok(outcome.unwrap_or(Outcome::Dropped(DropReason::Invalid)))
    }

    /// Counts a refused hit: 503s as overload, anything else as invalid.
    pub(super) fn count_refused(&self, error: &IngestError) {
        match error {
            IngestError::Overloaded | IngestError::LogUnavailable => {
                self.metrics.hits_overloaded.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.count_invalid(),
        }
    }

    /// A refused hit's answer, counted; a wrong method's names the
    /// endpoint's methods (`allow`).
    pub(super) fn refused(
        &self,
        error: &IngestError,
        allow: &'static str,
    ) -> Response<Full<Bytes>> {
        self.count_refused(error);
        let mut r = error_response(error);
        if matches!(error, IngestError::Method) {
            r.headers_mut()
                .insert("allow", HeaderValue::from_static(allow));
        }
        r
    }

    /// Bad input is counted as dropped (`invalid`) in metrics and, when the
    /// log has room, in ClickHouse; it is never worth a 503, nor a wait.
    pub(super) fn count_invalid(&self) {
        self.metrics.dropped(DropReason::Invalid);
        let dropped = Dropped {
            reason: DropReason::Invalid,
            site: None,
        };
        let messages = vec![Message::Dropped(dropped, self.clock.now())];
        let mut payload = Vec::with_capacity(32);
        record::encode(&messages, &self.privacy.sites().ids, &mut payload);
        let handoff = self.handoff.clone();
        let _ = self.journal.append_detached(
            &payload,
            Some(Box::new(move |seq| handoff.push(seq, messages))),
        );
    }
}

/// A request's body, at most `limit` bytes (by its `Content-Length` and
/// as read), read within 10 s: a client that sends its body slowly must
/// not hold a request open.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let body = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| IngestError::Body)?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                IngestError::TooLarge { limit }
            } else {
                IngestError::Body
            }
        })?;
    Ok(body.to_bytes())
}

fn append_error(error: AppendError) -> IngestError {
    match error {
        AppendError::Full { .. } => IngestError::Overloaded,
        AppendError::Io(_) | AppendError::TooLarge(_) | AppendError::Empty => {
            IngestError::LogUnavailable
        }
    }
}

/// A CORS preflight's answer: these `methods` and request `headers`
/// allowed, for a day.
pub(super) fn preflight(methods: &'static str, headers: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static(methods),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(headers),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    r
}

pub fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// A refused hit, in Plausible's shape (`IngestError::body`).
pub(super) fn error_response(error: &IngestError) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(error.body().to_string())));
    *r.status_mut() = error.status();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if matches!(error, IngestError::Overloaded | IngestError::LogUnavailable) {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
    }
    if matches!(error, IngestError::Method) {
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("POST, OPTIONS"));
    }
    r
}
