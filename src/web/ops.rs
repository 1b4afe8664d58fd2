//! Operational endpoints: `/healthz` (the process answers), `/api/health`
//! (Plausible's health check: ClickHouse answers and hits are accepted,
//! as "ok" or "error", never why), `/readyz`
//! (tamis accepts hits: not shutting down, durable log not full) — bare on
//! the public listener, with ClickHouse's state, the backlog and delivery
//! on the operators' — and `/metrics`, on the operators' listener only.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::App;
use crate::ingest::handler::plain;
use crate::metrics::Metrics;

/// What this server offers, as plain text (`/about`; the dashboard is at
/// `/`).
pub fn index() -> Response<Full<Bytes>> {
    plain(
        StatusCode::OK,
        concat!(
            "tamis ", env!("CARGO_PKG_VERSION"), ": web analytics with privacy built in\n\n",
            "GET  /              the dashboard\n",
            "GET  /js/tamis.js   the beacon\n",
            "POST /api/event     hits, in Plausible's Events API format (answered 202)\n",
            "GET  /e.gif         the no-JavaScript pixel (?d=site&u=page URL)\n",
            "POST /api/send      Umami's tracker (umami_website_id)\n",
            "     /g/collect      Google Analytics 4's gtag.js protocol (ga4_measurement_id)\n",
            "POST /mp/collect     GA4's Measurement Protocol (ga4_measurement_id)\n",
            "     /matomo.php     Matomo's tracker, also /piwik.php (matomo_site_id)\n",
            "GET  /api/v2/sites  the sites a token may read\n",
            "POST /api/v2/query  statistics, in Plausible's Stats API v2 format (Authorization: Bearer <token>)\n",
            "GET  /privacy.json  the privacy facts of a site (?site=ID)\n",
            "GET  /healthz       liveness\n",
            "GET  /readyz        readiness (accepting hits)\n",
            "GET  /api/health    Plausible's health check (ClickHouse answers, hits accepted)\n\n",
            "Metrics, readiness details and the audit log are served on the operators' listener (server.admin_listen).\n",
            "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0, when the DB-IP City Lite database is configured.\n",
        ),
    )
}

/// What the operators' listener offers (`/about` there).
pub fn admin_index() -> Response<Full<Bytes>> {
    plain(
        StatusCode::OK,
        concat!(
            "tamis ",
            env!("CARGO_PKG_VERSION"),
            ": operators' listener (server.admin_listen)\n\n",
            "GET  /metrics       Prometheus metrics\n",
            "GET  /healthz       liveness\n",
            "GET  /readyz        readiness with ClickHouse's state, the log backlog and delivery\n",
            "GET  /api/v2/audit  the audit log (?since=&site=&limit=; admin tokens)\n",
        ),
    )
}

/// `GET /privacy.json?site=ID` (or, without `site`, the site whose host
/// name the request's `Host` names): the facts of the site's privacy
/// notice, public, readable from any origin.
pub fn privacy_json(
    published: &crate::notice::Published,
    request: &hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let site = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "site")
            .map(|(_, v)| v.into_owned())
    });
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    let mut response = match published.find(site.as_deref(), host) {
        Some(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body.as_bytes().to_vec())));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        None => crate::ingest::handler::json_error(
            StatusCode::NOT_FOUND,
            "unknown site: use /privacy.json?site=ID",
        ),
    };
    response
        .headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

/// The operational endpoints only read: any method but GET and HEAD is
/// answered 405 with `Allow`.
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    let mut r = crate::ingest::handler::json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET and HEAD are accepted here",
    );
    r.headers_mut()
        .insert("allow", HeaderValue::from_static("GET, HEAD"));
    r
}

pub fn healthz() -> Response<Full<Bytes>> {
    plain(StatusCode::OK, "ok\n")
}

/// Plausible's `GET /api/health`, for monitors written against it: 200
/// when ClickHouse answers `SELECT 1` and tamis accepts hits, 500
/// otherwise, each part as "ok" or "error". It says no more than that (no
/// ClickHouse message, no backlog): it is on the public listener.
/// How long `/api/health` reuses ClickHouse's answer: the endpoint is on
/// the public listener, and however often it is called, ClickHouse is
/// pinged at most once a second (callers meanwhile wait for the ping in
/// flight rather than sending their own).
const HEALTH_REUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct HealthCache(tokio::sync::Mutex<Option<(std::time::Instant, bool)>>);

impl HealthCache {
    async fn clickhouse(&self, client: &clickhouse::Client) -> bool {
        let mut last = self.0.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < HEALTH_REUSE {
                return ok;
            }
        }
        let ping = client.query("SELECT 1").fetch_one::<u8>();
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        );
        *last = Some((std::time::Instant::now(), ok));
        ok
    }
}

pub async fn health(app: &App) -> Response<Full<Bytes>> {
    let clickhouse = app.health.clickhouse(&app.clickhouse).await;
    let ingest = app.accepting.load(Ordering::Relaxed) && !app.journal.is_full();
    let word = |ok: bool| if ok { "ok" } else { "error" };
    let body = serde_json::json!({ "clickhouse": word(clickhouse), "ingest": word(ingest) });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    if !(clickhouse && ingest) {
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// The public listener's readiness, for load balancers: the status and
/// whether hits are accepted, nothing else (the details, with the backlog
/// that moves with each hit, are the operators').
pub fn ready(app: &App) -> Response<Full<Bytes>> {
    let ready = app.accepting.load(Ordering::Relaxed) && !app.journal.is_full();
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::json!({ "ready": ready }).to_string(),
    )));
    if !ready {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Ready while hits can be accepted: not shutting down and the durable
/// log has room. ClickHouse being down does not make tamis unready — hits
/// wait in the log — but the answer says so.
pub async fn readyz(app: &App) -> Response<Full<Bytes>> {
    let accepting = app.accepting.load(Ordering::Relaxed);
    let ping = app.clickhouse.query("SELECT 1").fetch_one::<u8>();
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(2), ping).await,
        Ok(Ok(_))
    );
    app.metrics
        .clickhouse_up
        .store(u64::from(up), Ordering::Relaxed);
    let log_full = app.journal.is_full();
    let body = serde_json::json!({
        "accepting": accepting && !log_full,
        "shutting_down": !accepting,
        "clickhouse": if up { "up" } else { "down" },
        "log_bytes": app.metrics.log_bytes.load(Ordering::Relaxed),
        "backlog_hits": app.journal.unconfirmed(),
        "log_full": log_full,
        "delivery": delivery(&app.metrics),
    });
    let status = if accepting && !log_full {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Whether delivery is held up by ClickHouse refusing tamis's own rows,
/// and by which code (`/readyz` detail: tamis stays ready, hits wait in
/// the log).
fn delivery(metrics: &Metrics) -> serde_json::Value {
    let blocked = metrics.delivery_blocked.load(Ordering::Relaxed) == 1;
    let code = metrics.delivery_blocked_code.load(Ordering::Relaxed);
    serde_json::json!({
        "blocked": blocked,
        "clickhouse_code": if blocked { serde_json::Value::from(code) } else { serde_json::Value::Null },
    })
}

pub fn metrics(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
