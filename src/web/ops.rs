//! Operational endpoints: `/healthz` (the process answers), `/api/health`
//! (Plausible's health check: ClickHouse answers and hits are accepted,
//! as "ok" or "error", never ClickHouse's message; on a cluster, a fixed
//! reason when a shard cannot be read), `/readyz`
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
use crate::query::limits::Failure;
use crate::sink::nodes::Nodes;

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

/// How long `/api/health` reuses ClickHouse's answer: the endpoint is on
/// the public listener, and however often it is called, ClickHouse is
/// pinged at most once a second (callers meanwhile wait for the ping in
/// flight rather than sending their own).
const HEALTH_REUSE: Duration = Duration::from_secs(1);

/// ClickHouse as `/api/health` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClickHouseHealth {
    Ok,
    /// No answer (no node answered, or not within 2 s), or a refusal.
    Error,
    /// On a cluster: a node answered, but one of the shards has no
    /// replica that does, so statistics cannot be read whole.
    ShardUnreachable,
}

impl ClickHouseHealth {
    /// Why ClickHouse is not healthy, when tamis can say it without
    /// ClickHouse's message (which names servers).
    fn reason(self) -> Option<&'static str> {
        match self {
            ClickHouseHealth::ShardUnreachable => Some(
                "a shard of the ClickHouse cluster has no replica that answers: statistics cannot be read whole",
            ),
            ClickHouseHealth::Ok | ClickHouseHealth::Error => None,
        }
    }
}

#[derive(Default)]
pub struct HealthCache(tokio::sync::Mutex<Option<(std::time::Instant, ClickHouseHealth)>>);

impl HealthCache {
    async fn clickhouse(&self, nodes: &Nodes) -> ClickHouseHealth {
        let mut last = self.0.lock().await;
        if let Some((at, health)) = *last {
            if at.elapsed() < HEALTH_REUSE {
                return health;
            }
        }
        let health = match tokio::time::timeout(Duration::from_secs(2), readable(nodes)).await {
            Ok(Ok(_)) => ClickHouseHealth::Ok,
            Ok(Err(error)) if Failure::of(&error).0 == Failure::ShardUnreachable => {
                ClickHouseHealth::ShardUnreachable
            }
            _ => ClickHouseHealth::Error,
        };
        *last = Some((std::time::Instant::now(), health));
        health
    }
}

/// Whether the statistics can be read: a single server answers `SELECT
/// 1`; on a cluster, a node reads through a `Distributed` table, which
/// needs one replica of every shard (`WHERE 0` reads no row, but ClickHouse
/// still asks each shard).
async fn readable(nodes: &Nodes) -> Result<u8, clickhouse::error::Error> {
    let sql = if nodes.is_cluster() {
        format!(
            "SELECT toUInt8(count() = 0) FROM {} WHERE 0",
            nodes.table("traffic_hourly")
        )
    } else {
        "SELECT 1".to_string()
    };
    nodes
        .on_any(|client| client.query(&sql).fetch_one::<u8>())
        .await
}

/// Plausible's `GET /api/health`, for monitors written against it: 200
/// when ClickHouse answers (`SELECT 1`; on a cluster, a read through a
/// `Distributed` table, so one replica of every shard) and tamis accepts
/// hits, 500 otherwise, each part as "ok" or "error". It says no more than
/// that (no ClickHouse message, no backlog): it is on the public listener.
/// The one reason it gives, `clickhouse_reason`, is a fixed sentence for
/// a cluster one of whose shards cannot be read.
pub async fn health(app: &App) -> Response<Full<Bytes>> {
    let clickhouse = app.health.clickhouse(&app.nodes).await;
    let ingest = app.accepting.load(Ordering::Relaxed) && !app.journal.is_full();
    let word = |ok: bool| if ok { "ok" } else { "error" };
    let healthy = clickhouse == ClickHouseHealth::Ok;
    let mut body = serde_json::json!({ "clickhouse": word(healthy), "ingest": word(ingest) });
    if let Some(reason) = clickhouse.reason() {
        body["clickhouse_reason"] = serde_json::json!(reason);
    }
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    if !(healthy && ingest) {
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
    let ping = app
        .nodes
        .on_any(|client| client.query("SELECT 1").fetch_one::<u8>());
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
