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
