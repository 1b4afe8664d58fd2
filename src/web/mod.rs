//! The HTTP server: accepts connections, routes requests to ingest, the
//! stats API and the operational endpoints, and shuts down gracefully
//! (in-flight requests finish; new connections are refused).

pub mod ops;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::ingest::handler::{json_error, Ingest};
use crate::metrics::Metrics;
use crate::query::Api;

pub struct App {
    pub ingest: Ingest,
    pub api: Api,
    pub metrics: Arc<Metrics>,
    pub clickhouse: clickhouse::Client,
    /// False once shutdown has begun, so load balancers stop sending.
    pub accepting: AtomicBool,
}

impl App {
    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/api/event" => self.ingest.handle(request, peer.ip()).await,
            "/api/v2/query" => self.api.handle(request).await,
            "/api/v2/openapi.json" => crate::query::openapi(),
            "/metrics" => ops::metrics(&self.metrics),
            "/" => ops::index(),
            "/healthz" => ops::healthz(),
            "/readyz" => ops::readyz(self).await,
            _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish (for at most `drain`).
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Usually out of file descriptors: wait instead of spinning.
                        tracing::warn!(error = %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.route(request, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // Client resets are routine; nothing about them is logged.
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    app.accepting.store(false, Ordering::Relaxed);
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            after_ms = drain.as_millis() as u64,
            "connections still open at shutdown deadline"
        );
    }
}
