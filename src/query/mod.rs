//! The stats API, `POST /api/v2/query`, in Plausible's Stats API v2 shape.
//! It only reads aggregates. Before anything is answered, the token's
//! disclosure rules apply ([`report`]): breakdown rows backed by fewer than
//! the site's k visitors are merged into one `(other)` row (see
//! [`suppress`]), small cells are withheld, and — in the default protected
//! mode — every published count is consistently randomly rounded
//! ([`disclosure`]). Every query runs within bounds ([`limits`]): ClickHouse
//! settings on each statement, a timeout, a count of running queries per
//! token; a paginated breakdown reads only the rows its page needs where
//! that gives the same answer ([`pushdown`]).

pub mod audit;
pub mod auth;
pub mod channel;
pub mod csv;
pub mod disclosure;
pub mod error;
pub mod funnel;
pub mod imported;
pub mod labels;
pub mod limits;
pub mod pattern;
pub mod pushdown;
pub mod request;
pub mod share;
pub mod sites;
pub mod sql;
pub mod suppress;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use clickhouse::Row;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{Disclosure, LiveSites, LiveTokens, SiteSettings};
use crate::import::ga4::Report as ImportReport;
use crate::metrics::Metrics;
use crate::privacy::ip::TruncatedIp;
use crate::sink::audit::{AuditEntry, AuditLog};
use crate::sink::nodes::{Nodes, Tables};
use auth::Access;
use error::ApiError;
use limits::{Failure, Limits};
use request::{Dimension, Metric, Query, SiteView};
use sql::Scope;
pub use suppress::{report, suppress, Answer, Base, Conversions, Counted, Report};

const MAX_QUERY_BODY: usize = 64 * 1024;

/// The OpenAPI 3.1 description of the API; a test checks real answers
/// against it.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn openapi() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}
pub const OTHER: &str = "(other)";

/// Sent by the dashboard (`X-Tamis-Client: dashboard`) so the audit log
/// tells its reads from scripts'.
pub const CLIENT_HEADER: &str = "x-tamis-client";

/// The audit log's client: an allow-listed word, never the header's text.
fn client_kind(header: Option<&str>) -> &'static str {
    match header.map(str::trim) {
        Some(h) if h.eq_ignore_ascii_case("dashboard") => "dashboard",
        _ => "api",
    }
}

pub struct Api {
    /// The ClickHouse servers. Every read goes to any node that answers,
    /// on a cluster through the `Distributed` tables (see
    /// [`Api::fetch_with`]).
    pub nodes: Arc<Nodes>,
    /// Sites and tokens as configured now (a reload replaces them).
    pub sites: LiveSites,
    pub tokens: LiveTokens,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Every answered read is recorded here (see `sink::audit`).
    pub audit: AuditLog,
    /// Whether finished days are read from the daily rollups where a
    /// query's shape allows (see [`Api::rolled_statement`]).
    pub rollups: bool,
    /// Bounds on every stats query, and the running ones per token.
    pub limits: Limits,
}

/// The sum of a breakdown's small rows (see [`sql::small_rows`]).
#[derive(Debug, Row, Deserialize)]
struct SmallRows {
    base: Vec<f64>,
    n: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ResultRow {
    dims: Vec<String>,
    base: Vec<f64>,
}

/// A stats request as [`Api::asked`] admits it.
pub(crate) struct Asked {
    pub token: String,
    pub disclosure: Disclosure,
    pub client: &'static str,
    /// `Accept: text/csv`.
    pub wants_csv: bool,
    pub body: Bytes,
    pub site: Arc<SiteSettings>,
    /// A shared link's viewer, whose running queries are counted apart
    /// (see [`limits::Limits::admit`]).
    pub viewer: Option<TruncatedIp>,
}

impl Api {
    /// What every stats endpoint reads before its own fields, refusing as
    /// they all refuse: POST only, the token (401), the body within 64 KiB
    /// (413) and 10 s (408), the site id (400), and a site the token may
    /// read (404, like a missing one).
    pub(crate) async fn asked(&self, request: Request<Incoming>) -> Result<Asked, ApiError> {
        if request.method() != Method::POST {
            return Err(ApiError::Method { takes: "POST" });
        }
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let authorization = header(hyper::header::AUTHORIZATION);
        let wants_csv = header(hyper::header::ACCEPT).is_some_and(|a| a.contains("text/csv"));
        let client = client_kind(
            request
                .headers()
                .get(CLIENT_HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        // A shared link's session: its one site, in the protected mode
        // whatever the site's tokens may do (README "Privacy guarantees").
        let mut viewer = None;
        let (token, allowed, disclosure, client) =
            match self.share_access(request.headers()).await? {
                Some(share) => {
                    viewer = request.extensions().get::<share::Viewer>().map(|v| v.0);
                    (
                        share.actor,
                        vec![share.site_id],
                        Disclosure::Protected,
                        "share",
                    )
                }
                None => match auth::authorize(authorization.as_deref(), &self.tokens.load()) {
                    Access::Unauthorized => return Err(ApiError::Unauthorized),
                    Access::Granted {
                        token,
                        sites,
                        disclosure,
                        ..
                    } => (token.to_string(), sites.to_vec(), disclosure, client),
                },
            };
        // A client that sends its body slowly must not hold a request
        // open: as for hits, the body has a time limit.
        let body = match tokio::time::timeout(
            limits::BODY_TIMEOUT,
            Limited::new(request.into_body(), MAX_QUERY_BODY).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return Err(ApiError::TooLarge),
            Err(_) => return Err(ApiError::BodyTimeout),
        };
        let site_id = request::site_id(&body)?;
        // A site the token may not read looks exactly like a missing one.
        let site = match self.sites.load().iter().find(|s| s.id == site_id) {
            Some(site) if allowed.contains(&site.id) => site.clone(),
            _ => return Err(ApiError::SiteNotFound),
        };
        // Every answer, exact ones included, waits for the key: one rule,
        // and no protected answer ever rounded with a stand-in.
        if site.rounding_key.is_none() {
            return Err(ApiError::RoundingSecretUnread);
        }
        Ok(Asked {
            token,
            disclosure,
            client,
            wants_csv,
            body,
            site,
            viewer,
        })
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Asked {
            token,
            disclosure,
            client,
            wants_csv,
            body,
            site,
            viewer,
        } = match self.asked(request).await {
            Ok(asked) => asked,
            Err(refused) => return refused.response(),
        };
        let view = SiteView::of(&site);
        let mut query = match request::parse(&body, &view, self.clock.now()) {
            Ok(q) => q,
            Err(e) => return ApiError::Invalid(e).response(),
        };
        query.csv |= wants_csv;
        // Counted until this function returns or its future is dropped.
        let _permit = match self.limits.admit(&token, viewer) {
            Ok(permit) => permit,
            Err(busy) => {
                tracing::info!(token = %token, site = %site.id, limit = ?busy.running_limit(), "stats query refused: too many running");
                return busy.response();
            }
        };
        let ran = tokio::time::timeout(
            self.limits.settings.timeout,
            self.run(&query, &site, disclosure),
        )
        .await;
        let Ok(ran) = ran else {
            tracing::warn!(token = %token, site = %site.id, category = "tamis_timeout", "stats query stopped");
            return self.limits.timed_out();
        };
        match ran {
            Ok(report) => {
                self.metrics.api_queries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(token = %token, site = %site.id, rows = report.rows.len(), csv = query.csv, disclosure = disclosure.name(), "stats query");
                self.audit.record(AuditEntry {
                    at: self.clock.now(),
                    kind: "stats_read",
                    actor: token.clone(),
                    client,
                    site_id: site.id.clone(),
                    // The disclosure is part of the summary, which the audit
                    // log keeps and `GET /api/v2/audit` shows: an exact read
                    // stands out from protected ones.
                    summary: format!(
                        "{} disclosure={}",
                        audit::summarize(&query, site.timezone),
                        disclosure.name()
                    ),
                    rows: report.rows.len() as u64,
                    format: if query.csv { "csv" } else { "json" },
                    detail: format!("disclosure={}", disclosure.name()),
                });
                if query.csv {
                    let mut r = Response::new(Full::new(Bytes::from(csv::render(&query, &report))));
                    r.headers_mut().insert(
                        "content-type",
                        HeaderValue::from_static("text/csv; charset=utf-8"),
                    );
                    r.headers_mut().insert(
                        "content-disposition",
                        HeaderValue::from_static("attachment; filename=\"tamis.csv\""),
                    );
                    return r;
                }
                let body = respond(&query, &site, disclosure, report);
                let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                r
            }
            Err(error) => self.read_failed(&error, &token, &site.id, "stats query"),
        }
    }

    /// `GET /api/v2/audit?since=…&site=…&limit=…`, for admin tokens only.
    /// Anything else — no token, a wrong one, a token without `admin` — is
    /// answered like a path that does not exist, so the endpoint is not
    /// revealed to whoever may not use it.
    pub async fn audit(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let not_found = || ApiError::NoSuchEndpoint.response();
        let authorization = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match auth::authorize(authorization, &self.tokens.load()) {
            Access::Granted {
                token, admin: true, ..
            } => token.to_string(),
            _ => return not_found(),
        };
        if request.method() != Method::GET {
            return ApiError::Method { takes: "GET" }.response();
        }
        let now = self.clock.now();
        let (mut since, mut site, mut limit) = (now - Duration::days(7), None, 1000usize);
        for (key, value) in
            url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        {
            match key.as_ref() {
                "since" => match audit::parse_since(&value, now) {
                    Ok(t) => since = t,
                    Err(e) => return ApiError::Parameter(format!("since: {e}")).response(),
                },
                "site" => match self.sites.load().iter().find(|s| s.id == value) {
                    Some(s) => site = Some(s.id.clone()),
                    None => {
                        return ApiError::Parameter("site: not a configured site id".into())
                            .response()
                    }
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=audit::MAX_ROWS).contains(&n) => limit = n,
                    _ => {
                        return ApiError::Parameter(format!(
                            "limit: must be 1 to {}",
                            audit::MAX_ROWS
                        ))
                        .response()
                    }
                },
                _ => {
                    return ApiError::Parameter(
                        "unknown parameter: use since, site and limit".into(),
                    )
                    .response()
                }
            }
        }
        let table = self.nodes.table("audit_log");
        let read = self
            .on_any(|client| {
                let (table, site) = (table.clone(), site.clone());
                async move { audit::read(&client, &table, since, site.as_deref(), limit).await }
            })
            .await;
        match read {
            Ok(rows) => {
                self.audit.record(AuditEntry {
                    at: now,
                    kind: "audit_read",
                    actor: token,
                    client: client_kind(
                        request
                            .headers()
                            .get(CLIENT_HEADER)
                            .and_then(|v| v.to_str().ok()),
                    ),
                    site_id: site.clone().unwrap_or_default(),
                    summary: format!(
                        "since={} site={} limit={limit}",
                        since.to_rfc3339(),
                        site.as_deref().unwrap_or("*")
                    ),
                    rows: rows.len() as u64,
                    format: "json",
                    detail: String::new(),
                });
                let body =
                    json!({ "results": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>() });
                let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                r
            }
            Err(error) => {
                let (failure, code) = Failure::of(&error);
                if failure == Failure::Busy {
                    tracing::warn!(category = failure.name(), code, "audit log read failed");
                } else {
                    tracing::error!(category = failure.name(), code, "audit log read failed");
                }
                if failure == Failure::ShardUnreachable {
                    self.metrics
                        .api_shard_unreachable
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.limits.failed(failure, "the audit log is")
            }
        }
    }

    /// How this API's statements name the tables they read.
    fn tables(&self) -> Tables {
        self.nodes.tables()
    }

    /// Runs a read on any node that answers, through a client with the
    /// per-query limits (see [`Limits::client`]). On a cluster reads name
    /// the `Distributed` tables ([`Api::tables`]), which ask one live
    /// replica of every shard; a node that cannot be reached is skipped,
    /// the next one asked. A shard none of whose replicas answers fails
    /// the read (ClickHouse's code 279, [`Failure::ShardUnreachable`]):
    /// never `skip_unavailable_shards`, which would answer smaller numbers
    /// as if they were whole.
    pub(crate) async fn on_any<T, F, Fut>(&self, mut read: F) -> Result<T, clickhouse::error::Error>
    where
        F: FnMut(clickhouse::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        self.nodes
            .on_any(|client| read(self.limits.client(&client)))
            .await
    }

    /// Runs `statement`, its values bound, as [`Api::on_any`] does, and
    /// reads its answer with `fetch`.
    async fn fetch_with<T, F, Fut>(
        &self,
        statement: &sql::Statement,
        fetch: F,
    ) -> Result<T, clickhouse::error::Error>
    where
        F: Fn(clickhouse::query::Query) -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        self.on_any(|client| {
            let mut q = client.query(&statement.sql);
            for p in &statement.params {
                q = q.bind(p.as_str());
            }
            fetch(q)
        })
        .await
    }

    /// The answer to a stats read that failed (`query`: which kind, for
    /// the log line), counting those refused because a shard of the
    /// cluster could not be read.
    pub(crate) fn read_failed(
        &self,
        error: &clickhouse::error::Error,
        token: &str,
        site: &str,
        query: &str,
    ) -> Response<Full<Bytes>> {
        if Failure::of(error).0 == Failure::ShardUnreachable {
            self.metrics
                .api_shard_unreachable
                .fetch_add(1, Ordering::Relaxed);
        }
        self.limits.read_failed(error, token, site, query)
    }

    /// Every row of the query's aggregates by `dimensions`.
    async fn fetch(
        &self,
        query: &Query,
        dimensions: &[Dimension],
        tz: Tz,
        scope: Scope,
    ) -> Result<Vec<(Vec<String>, Base)>, clickhouse::error::Error> {
        let statement = self.statement(query, dimensions, tz, scope).await?;
        self.read(&statement).await
    }

    /// The statement of the query's aggregates by `dimensions`: from the
    /// rollups where they answer, else from the hourly aggregates.
    async fn statement(
        &self,
        query: &Query,
        dimensions: &[Dimension],
        tz: Tz,
        scope: Scope,
    ) -> Result<sql::Statement, clickhouse::error::Error> {
        Ok(match self.rolled_statement(query, dimensions, tz).await? {
            Some(statement) => statement,
            None => sql::build(self.tables(), query, dimensions, tz.name(), scope),
        })
    }

    /// [`Api::fetch`] when `needed`, else no rows.
    async fn fetch_if(
        &self,
        needed: bool,
        query: &Query,
        dimensions: &[Dimension],
        tz: Tz,
        scope: Scope,
    ) -> Result<Vec<(Vec<String>, Base)>, clickhouse::error::Error> {
        if !needed {
            return Ok(Vec::new());
        }
        self.fetch(query, dimensions, tz, scope).await
    }

    /// The rows (`dims`, `base`) of one statement.
    async fn read(
        &self,
        statement: &sql::Statement,
    ) -> Result<Vec<(Vec<String>, Base)>, clickhouse::error::Error> {
        Ok(self
            .fetch_with(statement, |q| q.fetch_all::<ResultRow>())
            .await?
            .into_iter()
            .filter_map(|r| Base::from_slice(&r.base).map(|b| (r.dims, b)))
            .collect())
    }

    /// The query's breakdown rows, as `report` needs them: every row, or,
    /// where [`pushdown::plan`] allows, the rows that are not small and
    /// that the page needs (with the small ones merged in ClickHouse when
    /// the page reaches them). `report` gives the same answer from either;
    /// see [`pushdown`] for why.
    async fn breakdown(
        &self,
        query: &Query,
        site: &SiteSettings,
        disclosure: Disclosure,
    ) -> Result<Vec<(Vec<String>, Base)>, clickhouse::error::Error> {
        let tz = site.timezone;
        let order = match pushdown::plan(query, disclosure) {
            Some(order) if self.limits.settings.pushdown => order,
            _ => {
                return self
                    .fetch(query, &query.dimensions, tz, Scope::Selected)
                    .await
            }
        };
        let inner = self
            .statement(query, &query.dimensions, tz, Scope::Selected)
            .await?;
        let k = site.k_threshold;
        let need = query.offset.saturating_add(query.limit);
        let named_other = |rows: &[(Vec<String>, Base)]| {
            rows.iter().any(|(dims, _)| dims.iter().any(|d| d == OTHER))
        };
        // A few rows past the page: the last one read is then usually far
        // enough below it that no second read is needed.
        let fetch = need.saturating_add((need / 8).max(8));
        let first = self
            .read(&sql::kept(&inner, k, order, None, Some(fetch)))
            .await?;
        if first.len() < fetch {
            // Every row that is not small is here: the page may reach the
            // `(other)` row, summed by ClickHouse.
            let mut rows = first;
            rows.extend(self.small_rows(&inner, k, query.dimensions.len()).await?);
            return Ok(rows);
        }
        if named_other(&first) {
            return self.read(&inner).await;
        }
        let Some(bound) = pushdown::second_read(order, query, site, disclosure, &first, need)
        else {
            return Ok(first);
        };
        let second = self
            .read(&sql::kept(&inner, k, order, Some(bound), None))
            .await?;
        if named_other(&second) {
            return self.read(&inner).await;
        }
        Ok(second)
    }

    /// The small rows of `inner` merged into one `(other)` row, if any.
    async fn small_rows(
        &self,
        inner: &sql::Statement,
        k: u32,
        dimensions: usize,
    ) -> Result<Option<(Vec<String>, Base)>, clickhouse::error::Error> {
        let statement = sql::small_rows(inner, k);
        let small = self
            .fetch_with(&statement, |q| q.fetch_optional::<SmallRows>())
            .await?;
        Ok(small
            .filter(|s| s.n > 0)
            .and_then(|s| Base::from_slice(&s.base))
            .map(|b| (vec![OTHER.to_string(); dimensions], b)))
    }

    /// The statement reading the query's rolled-up days from the daily
    /// rollups and the rest of its range (today, partial days, days not
    /// rolled yet) from the hourly aggregates, or `None` when the hourly
    /// aggregates alone answer (shape not rolled up, no whole closed day in
    /// the range, or none rolled yet). Both give the same numbers.
    async fn rolled_statement(
        &self,
        query: &Query,
        dimensions: &[Dimension],
        tz: Tz,
    ) -> Result<Option<sql::Statement>, clickhouse::error::Error> {
        if !self.rollups || sql::rollup_dimension(query, dimensions).is_none() {
            return Ok(None);
        }
        let Some((first, last)) = whole_closed_days(query.from, query.to, self.clock.now(), tz)
        else {
            return Ok(None);
        };
        let statement = sql::rolled_days(
            self.tables(),
            query,
            dimensions,
            &first.to_string(),
            &last.to_string(),
        );
        let days: Vec<String> = self
            .fetch_with(&statement, |q| q.fetch_all::<String>())
            .await?;
        let days: Vec<NaiveDate> = days
            .iter()
            .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .collect();
        if days.is_empty() {
            return Ok(None);
        }
        let (runs, hours) = rollup_plan(query.from, query.to, days, tz);
        Ok(Some(sql::rolled(
            self.tables(),
            query,
            dimensions,
            tz.name(),
            &runs,
            &hours,
        )))
    }

    /// Hits by consent state per value of the time dimension ("" without
    /// one): counted hits by their `consent` column, plus hits dropped for
    /// an opt-out signal or a denied consent.
    async fn consent_counts(
        &self,
        query: &Query,
        tz: Tz,
    ) -> Result<Vec<(String, [f64; 4])>, clickhouse::error::Error> {
        let time: Vec<Dimension> = query
            .dimensions
            .iter()
            .copied()
            .filter(|d| d.is_time())
            .collect();
        let mut dims = time.clone();
        dims.push(Dimension::Consent);
        let mut out: Vec<(String, [f64; 4])> = Vec::new();
        let mut add = |time: String, state: &str, n: f64| {
            let i = match state {
                "granted" => 0,
                "denied" | "consent_denied" => 1,
                "none" => 2,
                "opt_out" => 3,
                _ => return,
            };
            match out.iter_mut().find(|(t, _)| *t == time) {
                Some((_, c)) => c[i] += n,
                None => {
                    let mut c = [0.0; 4];
                    c[i] = n;
                    out.push((time, c));
                }
            }
        };
        for (d, base) in self.fetch(query, &dims, tz, Scope::Selected).await? {
            let time = if time.is_empty() {
                String::new()
            } else {
                d[0].clone()
            };
            add(
                time,
                d.last().map(String::as_str).unwrap_or_default(),
                base.pageviews + base.events,
            );
        }
        let statement = sql::dropped(self.tables(), query, &time, tz.name());
        let dropped = self
            .fetch_with(&statement, |q| q.fetch_all::<ResultRow>())
            .await?;
        for row in dropped {
            let time = if time.is_empty() {
                String::new()
            } else {
                row.dims[0].clone()
            };
            add(
                time,
                row.dims.last().map(String::as_str).unwrap_or_default(),
                row.base.first().copied().unwrap_or(0.0),
            );
        }
        Ok(out)
    }

    pub async fn run(
        &self,
        query: &Query,
        site: &SiteSettings,
        disclosure: Disclosure,
    ) -> Result<Report, clickhouse::error::Error> {
        let tz = site.timezone;
        // Filtered numbers subtracted from unfiltered ones describe the rows
        // a filter leaves out: for exact answers, where that group is small,
        // the filtered numbers are withheld too. Protected answers need no
        // such reads: their differences are multiples of the rounding base.
        let excluded = !query.filters.is_empty() && disclosure == Disclosure::Exact;
        let conversion = query.metrics.iter().any(|m| m.is_conversion());
        let plain = query.without_goals();
        let groups = conversion
            && query.metrics.contains(&Metric::GroupConversionRate)
            && !plain.dimensions.is_empty();
        let shares = query.metrics.iter().any(|m| m.is_consent());
        // The statements of one answer are independent: ClickHouse runs
        // them at once (each within the per-statement limits).
        // The left-out rows say nothing of the visitors left out: a
        // visitor of a left-out row may be in a selected one too. Exact
        // answers with filters or goals also read the query without them
        // (`Query::whole`); the difference is the visitors left out.
        let whole = query.whole();
        let whole_needed = disclosure == Disclosure::Exact
            && (!query.filters.is_empty() || query.dimensions.contains(&Dimension::Goal));
        // Imported days (`include.imports`) are added to what was counted
        // before any disclosure rule; such queries have no filters, goals
        // or consent metrics (`imported::check`), so only the rows and the
        // total need them, and every row is read (no pushdown).
        let imports = match query.include_imports {
            true => Some(self.imports(query, tz).await?),
            false => None,
        };
        let import_report = imports.as_ref().and_then(|(_, report)| *report);
        let (
            rows,
            total,
            excluded_rows,
            excluded_total,
            whole_rows,
            whole_total,
            plain_total,
            plain_groups,
            consent,
            imported_rows,
            imported_total,
        ) = tokio::try_join!(
            async {
                match import_report {
                    Some(_) => {
                        self.fetch(query, &query.dimensions, tz, Scope::Selected)
                            .await
                    }
                    None => self.breakdown(query, site, disclosure).await,
                }
            },
            self.fetch_if(true, query, &[], tz, Scope::Selected),
            self.fetch_if(excluded, query, &query.dimensions, tz, Scope::Excluded),
            self.fetch_if(excluded, query, &[], tz, Scope::Excluded),
            self.fetch_if(whole_needed, &whole, &whole.dimensions, tz, Scope::Selected),
            self.fetch_if(whole_needed, &whole, &[], tz, Scope::Selected),
            self.fetch_if(conversion, &plain, &[], tz, Scope::Selected),
            self.fetch_if(groups, &plain, &plain.dimensions, tz, Scope::Selected),
            async {
                if shares {
                    self.consent_counts(query, tz).await
                } else {
                    Ok(Vec::new())
                }
            },
            async {
                match import_report {
                    Some(r) => {
                        self.read(&imported::rows(
                            self.tables(),
                            query,
                            &query.dimensions,
                            r,
                            tz,
                        ))
                        .await
                    }
                    None => Ok(Vec::new()),
                }
            },
            async {
                match import_report {
                    Some(_) => {
                        self.read(&imported::rows(
                            self.tables(),
                            query,
                            &[],
                            ImportReport::Visitors,
                            tz,
                        ))
                        .await
                    }
                    None => Ok(Vec::new()),
                }
            },
        )?;
        let rows = with_imported(rows, imported_rows);
        let total = with_imported(total, imported_total);
        let one = |rows: Vec<(Vec<String>, Base)>| {
            rows.into_iter().next().map(|(_, b)| b).unwrap_or_default()
        };
        let mut counted = Counted {
            rows: relabel(rows, query, tz),
            total: one(total),
            excluded_rows: relabel(excluded_rows, query, tz),
            excluded_total: one(excluded_total),
            whole: whole_needed.then(|| suppress::Whole {
                rows: relabel(whole_rows, &whole, tz),
                total: one(whole_total),
            }),
            conversions: conversion.then(|| Conversions {
                total: one(plain_total),
                groups: relabel(plain_groups, &plain, tz),
            }),
        };
        // Consent shares count hits by consent state, dropped ones too.
        let first_week = query
            .dimensions
            .contains(&Dimension::Week)
            .then(|| query.from.with_timezone(&tz).date_naive().to_string());
        for (mut time, counts) in consent {
            if let Some(first) = first_week.as_ref().filter(|f| time < **f) {
                time.clone_from(first);
            }
            for (a, b) in counted.total.consent.iter_mut().zip(counts) {
                *a += b;
            }
            if let Some((_, base)) = counted
                .rows
                .iter_mut()
                .find(|(dims, _)| dims.first() == Some(&time) || dims.is_empty())
            {
                for (a, b) in base.consent.iter_mut().zip(counts) {
                    *a += b;
                }
            }
        }
        let mut report = report(query, site, disclosure, counted);
        report.time_labels = query.include_time_labels.then(|| time_labels(query, tz));
        report.imports = imports.map(|(i, _)| i);
        Ok(report)
    }

    /// Whether imported days answer `query`, and from which report (see
    /// [`imported::check`]); none in the range is said as Plausible says
    /// it (`no_imported_data`).
    async fn imports(
        &self,
        query: &Query,
        tz: Tz,
    ) -> Result<(imported::Imports, Option<ImportReport>), clickhouse::error::Error> {
        let skipped = |skip| imported::Imports {
            included: false,
            skip: Some(skip),
            period: None,
        };
        let report = match imported::check(query) {
            Ok(report) => report,
            Err(skip) => return Ok((skipped(skip), None)),
        };
        let statement = imported::period(self.tables(), query, report, tz);
        let (first, last, days) = self
            .fetch_with(&statement, |q| q.fetch_one::<(String, String, u64)>())
            .await?;
        if days == 0 {
            return Ok((skipped(imported::Skip::NoImportedData), None));
        }
        let imports = imported::Imports {
            included: true,
            skip: None,
            period: Some((first, last)),
        };
        Ok((imports, Some(report)))
    }
}

/// Collected rows with the imported ones added, row by row of equal
/// dimension values.
fn with_imported(mut rows: Vec<Counts>, imported: Vec<Counts>) -> Vec<Counts> {
    if imported.is_empty() {
        return rows;
    }
    let mut at: std::collections::HashMap<Vec<String>, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, (dims, _))| (dims.clone(), i))
        .collect();
    for (dims, base) in imported {
        match at.get(&dims) {
            Some(&i) => rows[i].1.add(&base),
            None => {
                at.insert(dims.clone(), rows.len());
                rows.push((dims, base));
            }
        }
    }
    rows
}

/// Rows as read, with the dimension values Plausible writes: names for
/// codes ([`named`]) and the first week by its first day
/// ([`weeks_not_before`]).
fn relabel(rows: Vec<Counts>, query: &Query, tz: Tz) -> Vec<Counts> {
    weeks_not_before(named(rows, &query.dimensions), query, tz)
}

/// `time:week` values as Plausible writes them: a week's Monday, but the
/// range's first day for the week the range starts in the middle of
/// (Plausible's `weekstart_not_before`). Rows are read by Monday; only
/// the first week's can fall before the range, so no two rows meet.
fn weeks_not_before(mut rows: Vec<Counts>, query: &Query, tz: Tz) -> Vec<Counts> {
    let Some(i) = query.dimensions.iter().position(|d| *d == Dimension::Week) else {
        return rows;
    };
    let first = query.from.with_timezone(&tz).date_naive().to_string();
    for (dims, _) in rows.iter_mut() {
        if let Some(v) = dims
            .get_mut(i)
            .filter(|v| **v < first && v.as_str() != OTHER)
        {
            v.clone_from(&first);
        }
    }
    rows
}

/// A row as read: its dimension values and what was counted.
pub type Counts = (Vec<String>, Base);

/// Rows read by country or region code, by name where the dimension asks
/// for names (`visit:country_name`, `visit:region_name`): two codes with
/// one name ("Central" is a region of several countries) become one row,
/// as Plausible groups by the name. Other rows pass unchanged.
pub fn named(rows: Vec<Counts>, dimensions: &[Dimension]) -> Vec<Counts> {
    let names: Vec<(usize, labels::Names)> = dimensions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Dimension::CountryName => Some((i, labels::Names::Country)),
            Dimension::RegionName => Some((i, labels::Names::Region)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return rows;
    }
    let mut out: Vec<Counts> = Vec::with_capacity(rows.len());
    let mut at: std::collections::HashMap<Vec<String>, usize> = std::collections::HashMap::new();
    for (mut dims, base) in rows {
        for (i, table) in &names {
            // The `(other)` row of small rows stays as it is.
            if let Some(v) = dims.get_mut(*i).filter(|v| v.as_str() != OTHER) {
                *v = table.name(v);
            }
        }
        match at.get(&dims) {
            Some(&j) => out[j].1.add(&base),
            None => {
                at.insert(dims.clone(), out.len());
                out.push((dims, base));
            }
        }
    }
    out
}

/// Day runs (`YYYY-MM-DD`, inclusive) and hour ranges (seconds,
/// half-open): see [`rollup_plan`].
pub type RollupPlan = (Vec<(String, String)>, Vec<(i64, i64)>);

/// How `[from, to)` is read when the local `days` (inside it) are rolled
/// up: those days as inclusive runs (`YYYY-MM-DD`), and the UTC hours
/// around them (seconds, half-open) read hourly.
pub fn rollup_plan(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut days: Vec<NaiveDate>,
    tz: Tz,
) -> RollupPlan {
    // Sorted here: ClickHouse 18.16 does not know `ORDER BY 1`.
    days.sort_unstable();
    days.dedup();
    let mut runs: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for day in days {
        match runs.last_mut() {
            Some((_, end)) if end.succ_opt() == Some(day) => *end = day,
            _ => runs.push((day, day)),
        }
    }
    let mut hours = Vec::new();
    let mut at = from;
    for (a, b) in &runs {
        let start = request::local_midnight(*a, tz);
        if at < start {
            hours.push((at.timestamp(), start.timestamp()));
        }
        at = request::local_midnight(*b + Duration::days(1), tz);
    }
    if at < to {
        hours.push((at.timestamp(), to.timestamp()));
    }
    (
        runs.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        hours,
    )
}

/// The whole local days inside `[from, to)` that have ended by `now`, as
/// the first and last, if any.
pub fn whole_closed_days(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<(NaiveDate, NaiveDate)> {
    let mut first = from.with_timezone(&tz).date_naive();
    if request::local_midnight(first, tz) < from {
        first = first.succ_opt()?;
    }
    let end = to.min(now);
    let mut last = end.with_timezone(&tz).date_naive();
    while request::local_midnight(last.succ_opt()?, tz) > end {
        last = last.pred_opt()?;
    }
    (first <= last).then_some((first, last))
}

/// Every bucket of the query's time dimension over its range, as the
/// dimension values are written.
fn time_labels(query: &Query, tz: Tz) -> Vec<String> {
    let Some(d) = query.dimensions.iter().find(|d| d.is_time()) else {
        return Vec::new();
    };
    let first = query.from.with_timezone(&tz);
    let last = (query.to - Duration::seconds(1)).with_timezone(&tz);
    let mut labels = Vec::new();
    match d {
        Dimension::Hour => {
            let start = crate::aggregate::hour::local_hour_start(query.from, tz);
            let mut t: DateTime<Utc> =
                DateTime::from_timestamp(i64::from(start), 0).unwrap_or(query.from);
            while t < query.to && labels.len() < 24 * 31 + 2 {
                labels.push(t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string());
                t += Duration::hours(1);
            }
        }
        _ => {
            let mut day = first.date_naive();
            while day <= last.date_naive() {
                let label = match d {
                    Dimension::Week => (day
                        - Duration::days(i64::from(day.weekday().num_days_from_monday())))
                    .max(first.date_naive()),
                    Dimension::Month => day.with_day(1).unwrap_or(day),
                    _ => day,
                };
                let label = label.to_string();
                if labels.last() != Some(&label) {
                    labels.push(label);
                }
                day += Duration::days(1);
            }
        }
    }
    labels
}

fn respond(query: &Query, site: &SiteSettings, disclosure: Disclosure, report: Report) -> Value {
    let suppressed = report.rows.iter().filter(|a| a.metrics.is_none()).count();
    let metric_values = |m: &Option<Vec<f64>>| match m {
        Some(m) => m.iter().copied().map(number).collect(),
        None => vec![Value::Null; query.metrics.len()],
    };
    let results: Vec<Value> = report
        .rows
        .iter()
        .map(|a| json!({ "metrics": metric_values(&a.metrics), "dimensions": a.dimensions }))
        .collect();
    let tz = site.timezone;
    let rounding_base = match disclosure {
        Disclosure::Protected => json!(disclosure::rounding_base(site.k_threshold)),
        Disclosure::Exact => Value::Null,
    };
    let mut meta = json!({
        "k_threshold": site.k_threshold,
        "suppressed_rows": suppressed,
        "time_zone": tz.name(),
        "disclosure": disclosure.name(),
        "rounding_base": rounding_base,
    });
    if let Some(totals) = &report.totals {
        meta["totals"] = Value::Array(metric_values(totals));
    }
    if let Some(labels) = report.time_labels {
        meta["time_labels"] = json!(labels);
    }
    if query.include_total_rows {
        meta["total_rows"] = json!(report.total_rows);
    }
    if let Some(imports) = &report.imports {
        meta["imports_included"] = json!(imports.included);
        if let Some(skip) = imports.skip {
            meta["imports_skip_reason"] = json!(skip.name());
            if let Some(warning) = skip.warning() {
                meta["imports_warning"] = json!(warning);
            }
        }
        if let Some((first, last)) = &imports.period {
            meta["imports_period"] = json!([first, last]);
        }
    }
    if let Some(i) = query
        .dimensions
        .iter()
        .position(|d| *d == Dimension::Region)
    {
        let names: serde_json::Map<String, Value> = report
            .rows
            .iter()
            .filter_map(|a| a.dimensions.get(i))
            .filter_map(|code| {
                labels::region_name(code, &site.language).map(|n| (code.clone(), Value::String(n)))
            })
            .collect();
        meta["region_names"] = Value::Object(names);
    }
    // Plausible's query_result.ex echoes the include options set, only.
    let include: serde_json::Map<String, Value> = [
        ("totals", query.include_totals),
        ("time_labels", query.include_time_labels),
        ("total_rows", query.include_total_rows),
        ("imports", query.include_imports),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, on)| (name.to_string(), json!(on)))
    .collect();
    json!({
        "results": results,
        "meta": meta,
        "query": {
            "site_id": site.id,
            "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "date_range": [
                query.from.with_timezone(&tz).to_rfc3339(),
                (query.to - Duration::seconds(1)).with_timezone(&tz).to_rfc3339(),
            ],
            "dimensions": query.dimensions.iter().map(|d| query.dimension_name(*d)).collect::<Vec<_>>(),
            "filters": query.filters.iter().map(|f| f.to_json(query)).collect::<Vec<_>>(),
            "order_by": query.order_by_applied().iter().map(|(f, asc)| json!([f, if *asc { "asc" } else { "desc" }])).collect::<Vec<_>>(),
            "include": include,
            "pagination": { "limit": query.limit, "offset": query.offset },
        }
    })
}

/// Counts are integers; JSON shows them without a fraction.
pub fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolled_days_and_the_hours_around_them() {
        let tz = chrono_tz::America::Toronto;
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // From mid-day on 2026-10-30 to the end of today (2026-11-03, now
        // 14:00): whole closed days are 10-31 … 11-02 (11-01 has 25 hours).
        let (from, to, now) = (
            t("2026-10-30T16:00:00Z"),
            t("2026-11-04T05:00:00Z"),
            t("2026-11-03T19:00:00Z"),
        );
        assert_eq!(
            whole_closed_days(from, to, now, tz),
            Some((d("2026-10-31"), d("2026-11-02")))
        );
        assert_eq!(
            whole_closed_days(t("2026-11-03T05:00:00Z"), to, now, tz),
            None,
            "today alone"
        );
        assert_eq!(
            whole_closed_days(
                t("2026-11-01T04:00:00Z"),
                t("2026-11-02T05:00:00Z"),
                now,
                tz
            ),
            Some((d("2026-11-01"), d("2026-11-01")))
        );
        // 11-01 not rolled: read hourly between the two runs.
        let (runs, hours) = rollup_plan(from, to, vec![d("2026-11-02"), d("2026-10-31")], tz);
        assert_eq!(
            runs,
            vec![
                ("2026-10-31".to_string(), "2026-10-31".to_string()),
                ("2026-11-02".to_string(), "2026-11-02".to_string())
            ]
        );
        let secs = |s: &str| t(s).timestamp();
        assert_eq!(
            hours,
            vec![
                (secs("2026-10-30T16:00:00Z"), secs("2026-10-31T04:00:00Z")),
                (secs("2026-11-01T04:00:00Z"), secs("2026-11-02T05:00:00Z")),
                (secs("2026-11-03T05:00:00Z"), secs("2026-11-04T05:00:00Z")),
            ]
        );
    }

    /// Differencing, as a property: on random small data sets (visitors on
    /// pages that prefix one another, each visitor on one page), for random
    /// pairs of protected queries (filters `is`, `is_not`, `contains`, with
    /// or without a breakdown by page, totals included), no difference of
    /// two published visitor counts is a count of 1 to k − 1 — the counts a
    /// single query withholds — so none equals the small group that tells
    /// the two queries apart.
    pub(in crate::query) mod differencing {
        use super::*;
        use proptest::prelude::*;

        const PAGES: [&str; 5] = ["/a", "/ab", "/abc", "/b", "/bc"];

        /// Site `a.org` in UTC with threshold `k` (also the pushdown
        /// tests').
        pub(in crate::query) fn site(k: u32) -> SiteSettings {
            let text = format!(
                "[query]\nrounding_key = '{}'\n[[site]]\nid = 'a.org'\ntimezone = 'UTC'\nk_threshold = {k}",
                crate::privacy::pipeline::TEST_ROUNDING_KEY
            );
            let settings = crate::config::Settings::from_config(
                toml::from_str(&text).expect("parses"),
                std::path::Path::new("."),
            )
            .expect("valid");
            (*settings.sites[0]).clone()
        }

        /// A query: filter (operator, value index) or none, breakdown or not.
        type Ask = (Option<(u8, usize)>, bool);

        /// What ClickHouse would count for `ask` on `visitors` per page.
        fn answer(ask: Ask, visitors: &[u32], site: &SiteSettings) -> Report {
            let (op, value) = match ask.0 {
                Some((0, i)) => ("is", PAGES[i]),
                Some((1, i)) => ("is_not", PAGES[i]),
                Some((_, i)) => ("contains", PAGES[i]),
                None => ("", ""),
            };
            let keep = |page: &str| match op {
                "is" => page == value,
                "is_not" => page != value,
                "contains" => page.contains(value),
                _ => true,
            };
            let mut body = json!({"site_id": "a.org", "metrics": ["visitors", "pageviews"],
                "date_range": ["2026-03-10", "2026-03-10"], "include": {"totals": true}});
            if !op.is_empty() {
                body["filters"] = json!([[op, "event:page", [value]]]);
            }
            if ask.1 {
                body["dimensions"] = json!(["event:page"]);
            }
            let view = SiteView {
                timezone: site.timezone,
                campaigns: false,
                prop_keys: vec![],
                goals: vec![],
            };
            let now = "2026-03-20T00:00:00Z".parse().expect("time");
            let query = request::parse(body.to_string().as_bytes(), &view, now).expect("valid");
            let base = |n: u32| Base {
                visitors: f64::from(n),
                visits: f64::from(n),
                pageviews: f64::from(n),
                bounces: f64::from(n),
                ..Base::default()
            };
            let kept: Vec<(String, u32)> = PAGES
                .iter()
                .zip(visitors)
                .filter(|(p, n)| **n > 0 && keep(p))
                .map(|(p, n)| (p.to_string(), *n))
                .collect();
            let total: u32 = kept.iter().map(|(_, n)| n).sum();
            let rows = if ask.1 {
                kept.iter()
                    .map(|(p, n)| (vec![p.clone()], base(*n)))
                    .collect()
            } else if total > 0 {
                vec![(vec![], base(total))]
            } else {
                vec![]
            };
            let counted = Counted {
                rows,
                total: base(total),
                ..Counted::default()
            };
            report(&query, site, Disclosure::Protected, counted)
        }

        fn published(r: &Report) -> Vec<f64> {
            r.rows
                .iter()
                .filter_map(|a| a.metrics.as_ref())
                .chain(r.totals.iter().flatten())
                .map(|m| m[0])
                .collect()
        }

        fn ask() -> impl Strategy<Value = Ask> {
            (
                proptest::option::of((0u8..3, 0..PAGES.len())),
                any::<bool>(),
            )
        }

        proptest! {
            #[test]
            fn no_difference_of_two_protected_answers_is_a_small_count(
                visitors in proptest::collection::vec(0u32..14, PAGES.len()),
                k in 1u32..12,
                a in ask(),
                b in ask(),
            ) {
                let site = site(k);
                let (x, y) = (answer(a, &visitors, &site), answer(b, &visitors, &site));
                for p in published(&x) {
                    for q in published(&y) {
                        let d = (p - q).abs();
                        prop_assert!(d == 0.0 || d >= f64::from(k), "{p} - {q} with k = {k}");
                    }
                }
                // Asked again, the same numbers.
                let again = answer(a, &visitors, &site);
                prop_assert_eq!(published(&x), published(&again));
            }
        }
    }
}
