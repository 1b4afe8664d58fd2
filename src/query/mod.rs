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
pub mod funnel;
pub mod labels;
pub mod limits;
pub mod pattern;
pub mod pushdown;
pub mod request;
pub mod sites;
pub mod sql;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use clickhouse::Row;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{Disclosure, SiteSettings, TokenSettings};
use crate::ingest::handler::json_error;
use crate::metrics::Metrics;
use crate::sink::audit::{AuditEntry, AuditLog};
use auth::Access;
use limits::{Failure, Limits};
use request::{Dimension, Metric, Query, SiteView};
use sql::Scope;

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
    pub client: clickhouse::Client,
    pub sites: Vec<Arc<SiteSettings>>,
    pub tokens: Vec<TokenSettings>,
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

/// The aggregates behind one answered row, in [`sql::BASE`] order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Base {
    pub visitors: f64,
    pub visits: f64,
    pub pageviews: f64,
    pub events: f64,
    pub bounces: f64,
    pub duration: f64,
    pub exits: f64,
    /// Hits by consent state: granted, denied, unset, opted out (filled
    /// only for consent metrics).
    pub consent: [f64; 4],
}

impl Base {
    fn from_slice(b: &[f64]) -> Option<Base> {
        match *b {
            [visitors, visits, pageviews, events, bounces, duration, exits] => Some(Base {
                visitors,
                visits,
                pageviews,
                events,
                bounces,
                duration,
                exits,
                consent: [0.0; 4],
            }),
            _ => None,
        }
    }

    fn add(&mut self, o: &Base) {
        self.visitors += o.visitors;
        self.visits += o.visits;
        self.pageviews += o.pageviews;
        self.events += o.events;
        self.bounces += o.bounces;
        self.duration += o.duration;
        self.exits += o.exits;
        for (a, b) in self.consent.iter_mut().zip(o.consent) {
            *a += b;
        }
    }

    /// Too few to show: fewer than `k` visitors or, for traffic counted
    /// without visitor keys, fewer than `k` pageviews and events.
    pub fn is_small(&self, k: f64) -> bool {
        if self.visitors > 0.0 {
            self.visitors < k
        } else {
            self.pageviews + self.events < k
        }
    }

    fn value(&self, metric: Metric, exits_as_visits: bool, total_visitors: f64) -> f64 {
        let visits = if exits_as_visits {
            self.exits
        } else {
            self.visits
        };
        let per_visit = |x: f64| if visits > 0.0 { x / visits } else { 0.0 };
        let all: f64 = self.consent.iter().sum();
        let share = |i: usize| {
            if all > 0.0 {
                (self.consent[i] / all * 1000.0).round() / 10.0
            } else {
                0.0
            }
        };
        match metric {
            Metric::Visitors => self.visitors,
            Metric::Visits => visits,
            Metric::Pageviews => self.pageviews,
            Metric::Events => self.events + self.pageviews,
            Metric::ViewsPerVisit => (per_visit(self.pageviews) * 100.0).round() / 100.0,
            Metric::BounceRate => (per_visit(self.bounces) * 100.0).round(),
            Metric::VisitDuration => per_visit(self.duration).round(),
            Metric::ConsentRate => share(0),
            Metric::ConsentDeniedRate => share(1),
            Metric::ConsentUnsetRate => share(2),
            Metric::OptOutRate => share(3),
            Metric::Percentage => {
                if total_visitors > 0.0 {
                    (self.visitors / total_visitors * 1000.0).round() / 10.0
                } else {
                    0.0
                }
            }
            // Their denominators come from another read: see `report`.
            Metric::ConversionRate | Metric::GroupConversionRate => f64::NAN,
        }
    }
}

/// Visitors in percent of `of`, to two decimals as Plausible writes
/// conversion rates; NaN (written `null`) without a denominator.
fn conversion_rate(visitors: f64, of: Option<f64>) -> f64 {
    match of {
        Some(of) if of > 0.0 => (visitors / of * 10_000.0).round() / 100.0,
        Some(_) => 0.0,
        None => f64::NAN,
    }
}

/// The denominators of conversion rates: what the query counts without
/// its goal filters and goal dimension ([`Query::without_goals`]), in
/// total and by the row's other dimension values.
#[derive(Debug, Clone, Default)]
pub struct Conversions {
    pub total: Base,
    pub groups: Vec<(Vec<String>, Base)>,
}

/// One answered row; `metrics` is `None` when withheld.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub dimensions: Vec<String>,
    pub base: Base,
    pub metrics: Option<Vec<f64>>,
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
}

/// Everything a query answers.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Answer>,
    /// Rows before pagination (small ones merged), for `include.total_rows`.
    pub total_rows: usize,
    pub totals: Option<Option<Vec<f64>>>,
    pub time_labels: Option<Vec<String>>,
}

impl Api {
    /// What every stats endpoint reads before its own fields, refusing as
    /// they all refuse: POST only, the token (401), the body within 64 KiB
    /// (413) and 10 s (408), the site id (400), and a site the token may
    /// read (404, like a missing one).
    pub(crate) async fn asked(
        &self,
        request: Request<Incoming>,
    ) -> Result<Asked, Response<Full<Bytes>>> {
        if request.method() != Method::POST {
            return Err(json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
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
        let (token, allowed, disclosure) =
            match auth::authorize(authorization.as_deref(), &self.tokens) {
                Access::Unauthorized => {
                    return Err(json_error(
                        StatusCode::UNAUTHORIZED,
                        "missing or invalid API token",
                    ))
                }
                Access::Granted {
                    token,
                    sites,
                    disclosure,
                    ..
                } => (token.to_string(), sites.to_vec(), disclosure),
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
            Ok(Err(_)) => {
                return Err(json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "query body is larger than 64 KiB",
                ))
            }
            Err(_) => {
                return Err(json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the query body did not arrive within 10 s: send it whole, at once",
                ))
            }
        };
        let site_id = request::site_id(&body)
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, &e.to_string()))?;
        // A site the token may not read looks exactly like a missing one.
        let site = match self.sites.iter().find(|s| s.id == site_id) {
            Some(site) if allowed.contains(&site.id) => site.clone(),
            _ => return Err(json_error(StatusCode::NOT_FOUND, "site not found")),
        };
        Ok(Asked {
            token,
            disclosure,
            client,
            wants_csv,
            body,
            site,
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
        } = match self.asked(request).await {
            Ok(asked) => asked,
            Err(refused) => return refused,
        };
        let mut prop_keys: Vec<String> = site.prop_keys.iter().cloned().collect();
        prop_keys.sort();
        let view = SiteView {
            timezone: site.timezone,
            campaigns: site.collect_campaigns,
            prop_keys,
            goals: site.goals.clone(),
        };
        let mut query = match request::parse(&body, &view, self.clock.now()) {
            Ok(q) => q,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        query.csv |= wants_csv;
        // Counted until this function returns or its future is dropped.
        let Some(_permit) = self.limits.admit(&token) else {
            tracing::info!(token = %token, site = %site.id, "stats query refused: too many running");
            return self.limits.too_many_running();
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
            Err(error) => self
                .limits
                .read_failed(&error, &token, &site.id, "stats query"),
        }
    }

    /// `GET /api/v2/audit?since=…&site=…&limit=…`, for admin tokens only.
    /// Anything else — no token, a wrong one, a token without `admin` — is
    /// answered like a path that does not exist, so the endpoint is not
    /// revealed to whoever may not use it.
    pub async fn audit(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let not_found = || json_error(StatusCode::NOT_FOUND, "no such endpoint");
        let authorization = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match auth::authorize(authorization, &self.tokens) {
            Access::Granted {
                token, admin: true, ..
            } => token.to_string(),
            _ => return not_found(),
        };
        if request.method() != Method::GET {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let now = self.clock.now();
        let (mut since, mut site, mut limit) = (now - Duration::days(7), None, 1000usize);
        for (key, value) in
            url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        {
            match key.as_ref() {
                "since" => match audit::parse_since(&value, now) {
                    Ok(t) => since = t,
                    Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("since: {e}")),
                },
                "site" => match self.sites.iter().find(|s| s.id == value) {
                    Some(s) => site = Some(s.id.clone()),
                    None => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "site: not a configured site id",
                        )
                    }
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=audit::MAX_ROWS).contains(&n) => limit = n,
                    _ => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            &format!("limit: must be 1 to {}", audit::MAX_ROWS),
                        )
                    }
                },
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "unknown parameter: use since, site and limit",
                    )
                }
            }
        }
        match audit::read(&self.stats_client(), since, site.as_deref(), limit).await {
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
                tracing::error!(category = failure.name(), code, "audit log read failed");
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit log is unavailable right now",
                )
            }
        }
    }

    /// The client every stats-API statement goes through: the configured
    /// one with the per-query limits (see [`Limits::client`]).
    fn stats_client(&self) -> clickhouse::Client {
        self.limits.client(&self.client)
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
            None => sql::build(query, dimensions, tz.name(), scope),
        })
    }

    /// The rows (`dims`, `base`) of one statement.
    async fn read(
        &self,
        statement: &sql::Statement,
    ) -> Result<Vec<(Vec<String>, Base)>, clickhouse::error::Error> {
        let mut q = self.stats_client().query(&statement.sql);
        for p in &statement.params {
            q = q.bind(p.as_str());
        }
        Ok(q.fetch_all::<ResultRow>()
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
        let mut q = self.stats_client().query(&statement.sql);
        for p in &statement.params {
            q = q.bind(p.as_str());
        }
        let small = q.fetch_optional::<SmallRows>().await?;
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
        let days: Vec<String> = self
            .stats_client()
            .query("SELECT DISTINCT toString(day) FROM rollup_days WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?)")
            .bind(query.site_id.as_str())
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all::<String>()
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
        let statement = sql::dropped(query, &time, tz.name());
        let mut q = self.stats_client().query(&statement.sql);
        for p in statement.params {
            q = q.bind(p);
        }
        for row in q.fetch_all::<ResultRow>().await? {
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
        let rows = named(
            self.breakdown(query, site, disclosure).await?,
            &query.dimensions,
        );
        let total = self
            .fetch(query, &[], tz, Scope::Selected)
            .await?
            .into_iter()
            .next()
            .map(|(_, b)| b)
            .unwrap_or_default();
        // Filtered numbers subtracted from unfiltered ones describe the rows
        // a filter leaves out: for exact answers, where that group is small,
        // the filtered numbers are withheld too. Protected answers need no
        // such reads: their differences are multiples of the rounding base.
        let (excluded_rows, excluded_total) =
            if query.filters.is_empty() || disclosure == Disclosure::Protected {
                (Vec::new(), Base::default())
            } else {
                let rows = self
                    .fetch(query, &query.dimensions, tz, Scope::Excluded)
                    .await?;
                let total = self
                    .fetch(query, &[], tz, Scope::Excluded)
                    .await?
                    .into_iter()
                    .next()
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                (named(rows, &query.dimensions), total)
            };
        let conversions = if query.metrics.iter().any(|m| m.is_conversion()) {
            let plain = query.without_goals();
            let total = self
                .fetch(&plain, &[], tz, Scope::Selected)
                .await?
                .into_iter()
                .next()
                .map(|(_, b)| b)
                .unwrap_or_default();
            let groups = if query.metrics.contains(&Metric::GroupConversionRate)
                && !plain.dimensions.is_empty()
            {
                named(
                    self.fetch(&plain, &plain.dimensions, tz, Scope::Selected)
                        .await?,
                    &plain.dimensions,
                )
            } else {
                Vec::new()
            };
            Some(Conversions { total, groups })
        } else {
            None
        };
        let mut counted = Counted {
            rows,
            total,
            excluded_rows,
            excluded_total,
            conversions,
        };
        if query.metrics.iter().any(|m| m.is_consent()) {
            let counts = self.consent_counts(query, tz).await?;
            for (time, counts) in counts {
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
        }
        let mut report = report(query, site, disclosure, counted);
        report.time_labels = query.include_time_labels.then(|| time_labels(query, tz));
        Ok(report)
    }
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

/// What ClickHouse counted for one query, before any disclosure rule.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    pub rows: Vec<(Vec<String>, Base)>,
    pub total: Base,
    /// For exact answers to filtered queries: the rows and the total the
    /// filters leave out (empty otherwise).
    pub excluded_rows: Vec<(Vec<String>, Base)>,
    pub excluded_total: Base,
    /// For conversion rates only.
    pub conversions: Option<Conversions>,
}

/// The disclosure rules applied to what was counted: the answer's rows
/// (small ones merged or withheld, ordered, paged) and totals, without time
/// labels.
///
/// Every mode merges small breakdown rows into `(other)` and withholds a
/// small time bucket, a small `(other)`, and any small cell of a window
/// shorter than a day (see [`disclosure::short_window`]).
/// - **Protected**: every cell below k is withheld, rows and totals alike,
///   and every published count is consistently randomly rounded
///   ([`disclosure::Rounding`]); rates and shares are computed from the
///   rounded counts.
/// - **Exact**: counts as they are; besides the above, a filtered query
///   withholds its small cells, and cells whose complement (what the
///   filters leave out) is small, which one subtraction would reveal.
pub fn report(
    query: &Query,
    site: &SiteSettings,
    disclosure: Disclosure,
    counted: Counted,
) -> Report {
    let k = f64::from(site.k_threshold);
    let Counted {
        rows,
        total,
        excluded_rows,
        excluded_total,
        conversions,
    } = counted;
    let exits = query.dimensions.contains(&Dimension::ExitPage);
    let rounding = disclosure::Rounding::new(&site.rounding_key, site.k_threshold, query);
    // What is published of a cell's counts: rounded, or as counted.
    let published = |dims: &[String], b: &Base| match disclosure {
        Disclosure::Protected => rounding.publish(dims, b, exits),
        Disclosure::Exact => *b,
    };
    let published_total = published(&[], &total);
    // Conversion rates divide published counts by published counts: the
    // denominators are cells of the query without its goals, rounded as
    // that query would round them.
    let plain = query.without_goals();
    let plain_rounding = disclosure::Rounding::new(&site.rounding_key, site.k_threshold, &plain);
    let published_plain = |dims: &[String], b: &Base| match disclosure {
        Disclosure::Protected => plain_rounding.publish(dims, b, exits).visitors,
        Disclosure::Exact => b.visitors,
    };
    let goal_at = query.dimensions.iter().position(|d| *d == Dimension::Goal);
    let all_visitors = conversions.as_ref().map(|c| published_plain(&[], &c.total));
    // A row's group: its values of the dimensions other than the goal. The
    // `(other)` row merges several groups and has none.
    let group_visitors = |dims: &[String]| -> Option<f64> {
        if dims.iter().any(|d| d == OTHER) {
            return None;
        }
        let key: Vec<&String> = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != goal_at)
            .map(|(_, v)| v)
            .collect();
        if key.is_empty() {
            return all_visitors;
        }
        let c = conversions.as_ref()?;
        c.groups
            .iter()
            .find(|(g, _)| g.iter().eq(key.iter().copied()))
            .map(|(g, b)| published_plain(g, b))
    };
    let values = |dims: &[String], b: &Base| {
        query
            .metrics
            .iter()
            .map(|m| match m {
                Metric::ConversionRate => conversion_rate(b.visitors, all_visitors),
                Metric::GroupConversionRate => conversion_rate(b.visitors, group_visitors(dims)),
                m => b.value(*m, exits, published_total.visitors),
            })
            .collect::<Vec<_>>()
    };

    let reveals = |b: &Base| b.visitors + b.pageviews + b.events > 0.0 && b.is_small(k);
    let reveals_row = |dims: &[String]| excluded_rows.iter().any(|(d, b)| d == dims && reveals(b));
    let answers = rows
        .into_iter()
        .map(|(dimensions, base)| Answer {
            metrics: (!reveals_row(&dimensions)).then(Vec::new),
            dimensions,
            base,
        })
        .collect();
    let mut answers = suppress(answers, &query.dimensions, k);
    let short = disclosure::short_window(query.from, query.to, site.timezone);
    let withhold_small = match disclosure {
        Disclosure::Protected => true,
        Disclosure::Exact => !query.filters.is_empty() || short,
    };
    let time_only = query.dimensions.iter().all(|d| d.is_time()) && !query.dimensions.is_empty();
    // `(other)` rows compare with the unfiltered `(other)`, which holds
    // the small excluded rows: any of those would show by difference.
    let other_reveals = excluded_rows.iter().any(|(_, b)| reveals(b));
    for a in answers.iter_mut() {
        let is_other = a.dimensions.iter().any(|d| d == OTHER);
        let withheld = a.metrics.is_none()
            || is_other && other_reveals
            || a.base.is_small(k) && (withhold_small || time_only || is_other);
        a.metrics = (!withheld).then(|| values(&a.dimensions, &published(&a.dimensions, &a.base)));
    }
    order(&mut answers, query);
    let total_rows = answers.len();
    let rows = answers
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    let totals = query.include_totals.then(|| {
        let withheld = withhold_small && total.is_small(k) || reveals(&excluded_total);
        (!withheld).then(|| values(&[], &published_total))
    });
    Report {
        rows,
        total_rows,
        totals,
        time_labels: None,
    }
}

/// How `[from, to)` is read when the local `days` (inside it) are rolled
/// up: those days as inclusive runs (`YYYY-MM-DD`), and the UTC hours
/// around them (seconds, half-open) read hourly.
pub fn rollup_plan(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut days: Vec<NaiveDate>,
    tz: Tz,
) -> (Vec<(String, String)>, Vec<(i64, i64)>) {
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

/// Merges rows backed by too few visitors (see [`Base::is_small`]) into one
/// `(other)` row per value of the time dimensions. Rows of time dimensions
/// alone are not merged (a bucket of "other times" means nothing); small
/// ones are withheld instead. Rows already withheld (`metrics` is `None`)
/// stay withheld when merged.
pub fn suppress(answers: Vec<Answer>, dimensions: &[Dimension], k: f64) -> Vec<Answer> {
    if dimensions.iter().all(|d| d.is_time()) {
        return answers;
    }
    let mut kept = Vec::with_capacity(answers.len());
    let mut others: Vec<Answer> = Vec::new();
    for a in answers {
        if !a.base.is_small(k) {
            kept.push(a);
            continue;
        }
        let key: Vec<String> = dimensions
            .iter()
            .zip(&a.dimensions)
            .map(|(d, v)| {
                if d.is_time() {
                    v.clone()
                } else {
                    OTHER.to_string()
                }
            })
            .collect();
        match others.iter_mut().find(|o| o.dimensions == key) {
            Some(o) => {
                o.base.add(&a.base);
                if a.metrics.is_none() {
                    o.metrics = None;
                }
            }
            None => others.push(Answer {
                dimensions: key,
                ..a
            }),
        }
    }
    kept.extend(others);
    kept
}

/// Plausible's default order: time ascending, else the first metric
/// descending; `(other)` rows last.
fn order(answers: &mut [Answer], query: &Query) {
    let metric_index = |name: &str| query.metrics.iter().position(|m| m.name() == name);
    let dim_index = |name: &str| {
        query
            .dimensions
            .iter()
            .position(|d| query.dimension_name(*d) == name)
    };
    let mut keys: Vec<(Option<usize>, Option<usize>, bool)> = query
        .order_by
        .iter()
        .map(|(field, asc)| (metric_index(field), dim_index(field), *asc))
        .collect();
    if keys.is_empty() {
        if let Some(t) = query.dimensions.iter().position(|d| d.is_time()) {
            keys.push((None, Some(t), true));
        }
        keys.push((Some(0), None, false));
    }
    answers.sort_by(|a, b| {
        let other = |x: &Answer| x.dimensions.iter().any(|d| d == OTHER);
        other(a).cmp(&other(b)).then_with(|| {
            for (m, d, asc) in &keys {
                let ord = match (m, d) {
                    (Some(i), _) => {
                        let v = |x: &Answer| x.metrics.as_ref().map(|m| m[*i]).unwrap_or(-1.0);
                        v(a).total_cmp(&v(b))
                    }
                    (None, Some(i)) => a.dimensions[*i].cmp(&b.dimensions[*i]),
                    _ => std::cmp::Ordering::Equal,
                };
                let ord = if *asc { ord } else { ord.reverse() };
                if ord.is_ne() {
                    return ord;
                }
            }
            a.dimensions.cmp(&b.dimensions)
        })
    });
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
                    Dimension::Week => {
                        day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
                    }
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
    if query.include_imports {
        meta["imports_included"] = json!(false);
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
            "order_by": query.order_by.iter().map(|(f, asc)| json!([f, if *asc { "asc" } else { "desc" }])).collect::<Vec<_>>(),
            "include": {
                "totals": query.include_totals,
                "time_labels": query.include_time_labels,
                "total_rows": query.include_total_rows,
                "imports": query.include_imports,
            },
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

    fn answer(page: &str, visitors: f64, pageviews: f64) -> Answer {
        Answer {
            dimensions: vec![page.into()],
            base: Base {
                visitors,
                pageviews,
                ..Base::default()
            },
            metrics: None,
        }
    }

    fn check(rows: Vec<Answer>, expected: &[(&str, f64, f64)]) {
        let got = suppress(rows, &[Dimension::Page], 5.0);
        let got: Vec<(String, f64, f64)> = got
            .into_iter()
            .map(|a| (a.dimensions[0].clone(), a.base.visitors, a.base.pageviews))
            .collect();
        let want: Vec<(String, f64, f64)> = expected
            .iter()
            .map(|(p, v, pv)| (p.to_string(), *v, *pv))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn small_rows_merge_into_other() {
        check(
            vec![
                answer("/", 10.0, 20.0),
                answer("/a", 3.0, 3.0),
                answer("/b", 2.0, 4.0),
            ],
            &[("/", 10.0, 20.0), (OTHER, 5.0, 7.0)],
        );
        check(
            vec![answer("/", 10.0, 20.0), answer("/a", 3.0, 3.0)],
            &[("/", 10.0, 20.0), (OTHER, 3.0, 3.0)],
        );
        // Counted without visitor keys: k pageviews.
        check(
            vec![answer("/anon", 0.0, 6.0), answer("/few", 0.0, 2.0)],
            &[("/anon", 0.0, 6.0), (OTHER, 0.0, 2.0)],
        );
    }

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
            let text = format!("[[site]]\nid = 'a.org'\ntimezone = 'UTC'\nk_threshold = {k}");
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

    #[test]
    fn derived_metrics() {
        let b = Base {
            visitors: 8.0,
            visits: 10.0,
            pageviews: 25.0,
            events: 5.0,
            bounces: 4.0,
            duration: 1234.0,
            exits: 3.0,
            consent: [2.0, 1.0, 1.0, 0.0],
        };
        let v = |m| b.value(m, false, 16.0);
        assert_eq!(v(Metric::ViewsPerVisit), 2.5);
        assert_eq!(v(Metric::BounceRate), 40.0);
        assert_eq!(v(Metric::VisitDuration), 123.0);
        assert_eq!(v(Metric::Events), 30.0);
        assert_eq!(v(Metric::Percentage), 50.0);
        assert_eq!(v(Metric::ConsentRate), 50.0);
        assert_eq!(v(Metric::OptOutRate), 0.0);
        assert_eq!(b.value(Metric::Visits, true, 16.0), 3.0);
        assert_eq!(Base::default().value(Metric::BounceRate, false, 0.0), 0.0);
    }
}
