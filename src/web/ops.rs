//! Operational endpoints: `/healthz` (the process answers), `/readyz`
//! (ClickHouse answers and tamis is not shutting down), `/metrics`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::App;
use crate::ingest::handler::plain;
use crate::metrics::Metrics;

/// What this server offers, for a person who opens it in a browser. The
/// dashboard will live here.
pub fn index() -> Response<Full<Bytes>> {
    plain(
        StatusCode::OK,
        concat!(
            "tamis ", env!("CARGO_PKG_VERSION"), ": web analytics with privacy built in\n\n",
            "POST /api/event     hits, in Plausible's Events API format (answered 202)\n",
            "POST /api/v2/query  statistics, in Plausible's Stats API v2 format (Authorization: Bearer <token>)\n",
            "GET  /privacy.json  the privacy facts of a site (?site=ID)\n",
            "GET  /metrics       Prometheus metrics\n",
            "GET  /healthz       liveness\n",
            "GET  /readyz        readiness (ClickHouse reachable)\n\n",
            "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0, when the DB-IP City Lite database is configured.\n",
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

pub fn healthz() -> Response<Full<Bytes>> {
    plain(StatusCode::OK, "ok\n")
}

pub async fn readyz(app: &App) -> Response<Full<Bytes>> {
    if !app.accepting.load(Ordering::Relaxed) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let ping = app.clickhouse.query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => {
            app.metrics.clickhouse_up.store(1, Ordering::Relaxed);
            plain(StatusCode::OK, "ready\n")
        }
        _ => {
            app.metrics.clickhouse_up.store(0, Ordering::Relaxed);
            plain(StatusCode::SERVICE_UNAVAILABLE, "clickhouse unreachable\n")
        }
    }
}

pub fn metrics(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
