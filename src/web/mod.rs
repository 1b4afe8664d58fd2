//! The HTTP server: accepts connections, routes requests to ingest, the
//! stats API and the operational endpoints, and shuts down gracefully
//! (in-flight requests finish; new connections are refused).
//!
//! It serves two faces ([`Face`]): the public listener (`server.listen`)
//! takes hits and serves the beacon, the dashboard, the stats API, the
//! privacy facts, a bare liveness and readiness and Plausible's
//! `/api/health` (ClickHouse and ingestion, "ok" or "error"); the operators'
//! listener (`server.admin_listen`, loopback by default) alone serves
//! `/metrics` (exact live counts), `/readyz` with its details and
//! `/api/v2/audit`. A path of one face is 404 on the other.
//!
//! It also holds the edge's limits (`Edge`): at most
//! `server.max_connections` connections are served at once (beyond it a
//! new one is answered 503 with Retry-After and closed, so a crowd of idle
//! sockets cannot use up the file descriptors that `/healthz` and hits
//! need), a connection with no complete request head for
//! `server.idle_timeout_ms` is closed, request heads are at most
//! [`MAX_HEAD`] bytes, and clients whose tokens keep being refused wait
//! (`query::auth::Throttle`). Every answer carries
//! `X-Content-Type-Options: nosniff`; API answers also `Cache-Control:
//! no-store`.

pub mod assets;
pub mod ops;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{ServerSettings, MAX_V4_PREFIX, MAX_V6_PREFIX};
use crate::ingest::client_ip::client_ip;
use crate::ingest::cors::AllowedOrigins;
use crate::ingest::ga4::Protocol;
use crate::ingest::handler::{json_error, Ingest};
use crate::metrics::Metrics;
use crate::query::auth::{self, Attempt, Throttle};
use crate::query::Api;

/// Longest request head (request line and headers), nginx's order of
/// size; longer ones are answered 431 by hyper.
pub const MAX_HEAD: usize = 8 * 1024;

/// Connections the operators' listener serves at once (scrapers and
/// probes; its own cap, so a crowd on the public listener never shuts
/// monitoring out).
const ADMIN_CONNECTIONS: usize = 64;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// `server.listen`: hits, beacon, dashboard, stats API.
    Public,
    /// `server.admin_listen`: metrics, readiness details, audit log.
    Admin,
}

/// What a connection beyond `server.max_connections` is told before it is
/// closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntoo many connections\r\n";

/// The limits and memory of the edge, shared by every connection.
pub struct Edge {
    connections: Arc<Semaphore>,
    admin_connections: Arc<Semaphore>,
    idle_timeout: Duration,
    /// Browser origins that may send hits.
    pub origins: AllowedOrigins,
    logins: Throttle,
    /// True once the server stops accepting: connections still waiting
    /// for their first byte close at once.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Edge {
    pub fn new(server: &ServerSettings) -> Edge {
        Edge {
            connections: Arc::new(Semaphore::new(server.max_connections)),
            admin_connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            idle_timeout: server.idle_timeout,
            origins: server.cors_allow_origin.clone(),
            logins: Throttle::new(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

pub struct App {
    pub ingest: Ingest,
    pub api: Api,
    /// `/privacy.json` bodies by site (a reload replaces them).
    pub privacy: crate::config::Live<crate::notice::Published>,
    pub metrics: Arc<Metrics>,
    /// The ClickHouse servers, for `/api/health` and `/readyz`.
    pub nodes: Arc<crate::sink::nodes::Nodes>,
    pub journal: crate::journal::Journal,
    /// False once shutdown has begun, so load balancers stop sending.
    pub accepting: AtomicBool,
    pub edge: Edge,
    /// ClickHouse's last answer to `/api/health`'s ping, and when.
    pub health: ops::HealthCache,
}

impl App {
    async fn route(
        &self,
        face: Face,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let mut response = match face {
            Face::Public => self.route_public(request, peer).await,
            Face::Admin => self.route_admin(request, peer).await,
        };
        response.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        response
    }

    async fn route_public(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/api/event" => {
                self.ingest
                    .handle(request, peer.ip(), &self.edge.origins)
                    .await
            }
            "/e.gif" => {
                self.ingest
                    .pixel(request, peer.ip(), &self.edge.origins)
                    .await
            }
            "/api/send" => {
                self.ingest
                    .umami(request, peer.ip(), &self.edge.origins)
                    .await
            }
            "/g/collect" | "/mp/collect" => {
                let protocol = if request.uri().path() == "/g/collect" {
                    Protocol::Gtag
                } else {
                    Protocol::Measurement
                };
                self.ingest
                    .ga4(protocol, request, peer.ip(), &self.edge.origins)
                    .await
            }
            "/matomo.php" | "/piwik.php" => {
                self.ingest
                    .matomo(request, peer.ip(), &self.edge.origins)
                    .await
            }
            "/api/v2/query" => self.api_call(Endpoint::Query, request, peer).await,
            "/api/v2/funnel" => self.api_call(Endpoint::Funnel, request, peer).await,
            "/api/v2/sites" => self.api_call(Endpoint::Sites, request, peer).await,
            "/api/share/session" => self.api_call(Endpoint::ShareSession, request, peer).await,
            "/api/v2/openapi.json" => no_store(crate::query::openapi()),
            path if assets::serves(path) => assets::serve(&request),
            "/privacy.json" | "/about" | "/healthz" | "/readyz" | "/api/health"
                if !matches!(*request.method(), Method::GET | Method::HEAD) =>
            {
                ops::method_not_allowed()
            }
            "/privacy.json" => ops::privacy_json(&self.privacy.load(), &request),
            "/about" => ops::index(),
            "/healthz" => ops::healthz(),
            "/api/health" => ops::health(self).await,
            "/readyz" => ops::ready(self),
            _ => no_store(json_error(StatusCode::NOT_FOUND, "no such endpoint")),
        }
    }

    async fn route_admin(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/api/v2/audit" => self.api_call(Endpoint::Audit, request, peer).await,
            "/metrics" | "/about" | "/healthz" | "/readyz"
                if !matches!(*request.method(), Method::GET | Method::HEAD) =>
            {
                ops::method_not_allowed()
            }
            "/metrics" => no_store(ops::metrics(&self.metrics)),
            "/about" => ops::admin_index(),
            "/healthz" => ops::healthz(),
            "/readyz" => no_store(ops::readyz(self).await),
            _ => no_store(json_error(StatusCode::NOT_FOUND, "no such endpoint")),
        }
    }

    /// A stats, sites or audit request, held back while its client's
    /// network waits after refused tokens; refused tokens are counted,
    /// logged (the endpoint only: never the token or the address) and
    /// lengthen the wait.
    async fn api_call(
        &self,
        endpoint: Endpoint,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let network = self.network(&request, peer);
        let now = Instant::now();
        if let Err(wait) = self.edge.logins.check(network, now) {
            self.metrics
                .api_auth_throttled
                .fetch_add(1, Ordering::Relaxed);
            return no_store(too_many_attempts(wait));
        }
        // A header that is not text is a refused token too.
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let mut attempt = auth::attempt(authorization, &self.api.tokens.load());
        // A shared link's secret or session is a credential too: its
        // refusals are throttled like a token's. The audit log is read
        // with a token only, whatever else the request carries.
        let shared = matches!(endpoint, Endpoint::ShareSession)
            || (!matches!(endpoint, Endpoint::Audit)
                && request
                    .headers()
                    .contains_key(crate::query::share::SHARE_HEADER));
        let mut request = request;
        if shared {
            // For the link's running-query slots per viewer, in memory only.
            request
                .extensions_mut()
                .insert(crate::query::share::Viewer(network));
        }
        let response = match endpoint {
            Endpoint::Query => self.api.handle(request).await,
            Endpoint::Funnel => self.api.funnel(request).await,
            Endpoint::Sites => self.api.sites(request).await,
            Endpoint::ShareSession => self.api.share_session(request).await,
            Endpoint::Audit => self.api.audit(request).await,
        };
        // A refusal counts unless it guessed nothing; only a password
        // given right forgets earlier refusals. A malformed request (400),
        // a busy server (429, 503) or a public link opened in between
        // would otherwise buy a new round of guesses at a password or a
        // token.
        if shared {
            use crate::query::share::Guess;
            attempt = match response.extensions().get::<Guess>() {
                Some(Guess::Proven) => Attempt::Accepted,
                Some(Guess::None) => Attempt::NoToken,
                None if response.status() == StatusCode::UNAUTHORIZED => Attempt::Refused,
                None => Attempt::NoToken,
            };
        }
        match attempt {
            Attempt::Refused => {
                self.metrics
                    .api_auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                let wait = self.edge.logins.failed(network, now);
                tracing::warn!(
                    endpoint = endpoint.name(),
                    wait_s = wait.map_or(0, |w| w.as_secs()),
                    "API token refused"
                );
            }
            Attempt::Accepted => self.edge.logins.succeeded(network),
            Attempt::NoToken => {}
        }
        no_store(response)
    }

    /// The client's network, as the throttle keys it: the address ingest
    /// would read (trusted proxies believed), truncated at once.
    fn network(
        &self,
        request: &Request<Incoming>,
        peer: SocketAddr,
    ) -> crate::privacy::ip::TruncatedIp {
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = client_ip(peer.ip(), &forwarded, &self.ingest.trusted_proxies);
        crate::privacy::ip::truncate(ip, MAX_V4_PREFIX, MAX_V6_PREFIX)
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Query,
    Funnel,
    ShareSession,
    Sites,
    Audit,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Query => "query",
            Endpoint::Funnel => "funnel",
            Endpoint::ShareSession => "share_session",
            Endpoint::Sites => "sites",
            Endpoint::Audit => "audit",
        }
    }
}

/// API answers hold statistics or tokens' names: never cached.
fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

fn too_many_attempts(wait: Duration) -> Response<Full<Bytes>> {
    let mut r = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many refused tokens from your network; retry later",
    );
    // Whole seconds, rounded up: a client that waits as told gets in.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(secs.max(1)));
    r
}

/// Serves one connection. hyper's header read timeout runs from the moment
/// it waits for a request head, so it closes keep-alive connections left
/// idle between requests; a socket that never sends its first byte is
/// closed here after the same time, or as soon as the server closes.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    idle_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>> + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    tokio::select! {
        first = tokio::time::timeout(idle_timeout, stream.readable()) => {
            if !matches!(first, Ok(Ok(()))) {
                return;
            }
        }
        _ = closing.wait_for(|closing| *closing) => return,
    }
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    // Client resets are routine; nothing about them is logged.
    let _ = watcher.watch(conn).await;
}

/// Tells a connection beyond the cap to come back, then closes it. The
/// request it may have sent is read (briefly) first: closing a socket with
/// unread data resets it, and the client would not see the answer.
async fn refuse(mut stream: TcpStream) {
    let answer = async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut read = 0;
        while read < MAX_HEAD {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish (for at most `drain`).
pub async fn run(
    app: Arc<App>,
    face: Face,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    // After the signal, `/readyz` answers 503 for `grace` while everything
    // else is still served, so load balancers stop sending before new
    // connections are refused.
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
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
                let cap = match face {
                    Face::Public => &app.edge.connections,
                    Face::Admin => &app.edge.admin_connections,
                };
                let Ok(permit) = cap.clone().try_acquire_owned() else {
                    app.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(refuse(stream));
                    continue;
                };
                let (idle_timeout, metrics) = (app.edge.idle_timeout, app.metrics.clone());
                let closing = app.edge.closing.subscribe();
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.route(face, request, peer).await) }
                });
                let watcher = graceful.watcher();
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    serve_connection(stream, service, idle_timeout, watcher, closing).await;
                    metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            _ = &mut shutdown, if closing.is_none() => {
                app.accepting.store(false, Ordering::Relaxed);
                closing = Some(Box::pin(tokio::time::sleep(grace)));
            }
            _ = async { if let Some(sleep) = closing.as_mut() { sleep.await } }, if closing.is_some() => break,
        }
    }
    app.accepting.store(false, Ordering::Relaxed);
    app.edge.closing.send_replace(true);
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
