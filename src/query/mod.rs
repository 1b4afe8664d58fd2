//! The stats API, `POST /api/v2/query`, in Plausible's Stats API v2 shape.
//! It only reads aggregates. Breakdown rows backed by fewer than the site's
//! k visitors are merged into one `(other)` row before anything is answered.

pub mod auth;
pub mod request;
pub mod sql;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use clickhouse::Row;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{SiteSettings, TokenSettings};
use crate::ingest::handler::json_error;
use crate::metrics::Metrics;
use auth::Access;
use request::{Dimension, Query};

const MAX_QUERY_BODY: usize = 64 * 1024;
pub const OTHER: &str = "(other)";

pub struct Api {
    pub client: clickhouse::Client,
    pub sites: Vec<Arc<SiteSettings>>,
    pub tokens: Vec<TokenSettings>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Row, Deserialize)]
struct ResultRow {
    dims: Vec<String>,
    metrics: Vec<f64>,
}

/// One answered row; `metrics` are `None` when suppressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub dimensions: Vec<String>,
    pub metrics: Option<Vec<f64>>,
    visitors: f64,
    pageviews: f64,
}

impl Api {
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let authorization = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let allowed = match auth::authorize(authorization.as_deref(), &self.tokens) {
            Access::Unauthorized => return json_error(StatusCode::UNAUTHORIZED, "missing or invalid API token"),
            Access::Granted { token, sites } => (token.to_string(), sites.to_vec()),
        };
        let body = match Limited::new(request.into_body(), MAX_QUERY_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "query body is larger than 64 KiB"),
        };
        let site_id = match request::site_id(&body) {
            Ok(id) => id,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let site = match self.sites.iter().find(|s| s.id == site_id) {
            Some(site) if allowed.1.contains(&site.id) => site.clone(),
            _ => return json_error(StatusCode::NOT_FOUND, "site not found"),
        };
        let query = match request::parse(&body, site.timezone, self.clock.now()) {
            Ok(q) => q,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match self.run(&query, &site).await {
            Ok(answers) => {
                self.metrics.api_queries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(token = %allowed.0, site = %site.id, rows = answers.len(), "stats query");
                let body = respond(&query, &site, answers);
                let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                r
            }
            Err(error) => {
                tracing::error!(error = %error, "stats query failed");
                json_error(StatusCode::SERVICE_UNAVAILABLE, "statistics are unavailable right now")
            }
        }
    }

    pub async fn run(&self, query: &Query, site: &SiteSettings) -> Result<Vec<Answer>, clickhouse::error::Error> {
        let (sql, params) = sql::build(query, site.timezone.name());
        let mut statement = self.client.query(&sql);
        for p in params {
            statement = statement.bind(p);
        }
        let rows = statement.fetch_all::<ResultRow>().await?;
        let n = query.metrics.len();
        let answers = rows
            .into_iter()
            .filter(|r| r.metrics.len() == n + 2)
            .map(|r| Answer {
                visitors: r.metrics[n],
                pageviews: r.metrics[n + 1],
                metrics: Some(r.metrics[..n].to_vec()),
                dimensions: r.dims,
            })
            .collect();
        let mut answers = suppress(answers, &query.dimensions, f64::from(site.k_threshold));
        order(&mut answers, query);
        Ok(answers.into_iter().skip(query.offset).take(query.limit).collect())
    }
}

/// Merges rows backed by fewer than `k` visitors (or, for traffic counted
/// without visitor keys, fewer than `k` pageviews) into one `(other)` row
/// per value of the time dimensions. An `(other)` row that is itself below
/// `k` keeps its place but not its numbers.
pub fn suppress(answers: Vec<Answer>, dimensions: &[Dimension], k: f64) -> Vec<Answer> {
    if dimensions.iter().all(|d| d.is_time()) {
        return answers;
    }
    let mut kept = Vec::with_capacity(answers.len());
    let mut others: Vec<Answer> = Vec::new();
    for a in answers {
        let small = if a.visitors > 0.0 { a.visitors < k } else { a.pageviews < k };
        if !small {
            kept.push(a);
            continue;
        }
        let key: Vec<String> = dimensions
            .iter()
            .zip(&a.dimensions)
            .map(|(d, v)| if d.is_time() { v.clone() } else { OTHER.to_string() })
            .collect();
        match others.iter_mut().find(|o| o.dimensions == key) {
            Some(o) => {
                o.visitors += a.visitors;
                o.pageviews += a.pageviews;
                if let (Some(sum), Some(add)) = (o.metrics.as_mut(), a.metrics.as_ref()) {
                    sum.iter_mut().zip(add).for_each(|(s, x)| *s += x);
                }
            }
            None => others.push(Answer { dimensions: key, ..a }),
        }
    }
    for mut o in others {
        let small = if o.visitors > 0.0 { o.visitors < k } else { o.pageviews < k };
        if small {
            o.metrics = None;
        }
        kept.push(o);
    }
    kept
}

/// Plausible's default order: time ascending, else the first metric
/// descending; `(other)` rows last.
fn order(answers: &mut [Answer], query: &Query) {
    let metric_index = |name: &str| query.metrics.iter().position(|m| m.name() == name);
    let dim_index = |name: &str| query.dimensions.iter().position(|d| d.name() == name);
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

fn respond(query: &Query, site: &SiteSettings, answers: Vec<Answer>) -> Value {
    let suppressed = answers.iter().filter(|a| a.metrics.is_none()).count();
    let results: Vec<Value> = answers
        .into_iter()
        .map(|a| {
            let metrics = match a.metrics {
                Some(m) => m.into_iter().map(number).collect(),
                None => vec![Value::Null; query.metrics.len()],
            };
            json!({ "metrics": metrics, "dimensions": a.dimensions })
        })
        .collect();
    let tz = site.timezone;
    json!({
        "results": results,
        "meta": { "k_threshold": site.k_threshold, "suppressed_rows": suppressed, "time_zone": tz.name() },
        "query": {
            "site_id": site.id,
            "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "date_range": [
                query.from.with_timezone(&tz).to_rfc3339(),
                (query.to - chrono::Duration::seconds(1)).with_timezone(&tz).to_rfc3339(),
            ],
            "dimensions": query.dimensions.iter().map(|d| d.name()).collect::<Vec<_>>(),
            "filters": query.filters.iter().map(|f| json!([
                match f.op { request::FilterOp::Is => "is", request::FilterOp::IsNot => "is_not", request::FilterOp::Contains => "contains" },
                f.dimension.name(),
                f.values,
            ])).collect::<Vec<_>>(),
            "order_by": query.order_by.iter().map(|(f, asc)| json!([f, if *asc { "asc" } else { "desc" }])).collect::<Vec<_>>(),
            "pagination": { "limit": query.limit, "offset": query.offset },
        }
    })
}

/// Counts are integers; JSON shows them without a fraction.
fn number(x: f64) -> Value {
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
            metrics: Some(vec![visitors, pageviews]),
            visitors,
            pageviews,
        }
    }

    fn check(rows: Vec<Answer>, expected: &[(&str, Option<Vec<f64>>)]) {
        let got = suppress(rows, &[Dimension::Page], 5.0);
        let got: Vec<(String, Option<Vec<f64>>)> = got.into_iter().map(|a| (a.dimensions[0].clone(), a.metrics)).collect();
        let want: Vec<(String, Option<Vec<f64>>)> = expected.iter().map(|(p, m)| (p.to_string(), m.clone())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn small_rows_merge_into_other() {
        check(vec![answer("/", 10.0, 20.0), answer("/a", 3.0, 3.0), answer("/b", 2.0, 4.0)], &[("/", Some(vec![10.0, 20.0])), (OTHER, Some(vec![5.0, 7.0]))]);
        check(vec![answer("/", 10.0, 20.0), answer("/a", 3.0, 3.0)], &[("/", Some(vec![10.0, 20.0])), (OTHER, None)]);
        // Counted without visitor keys: k pageviews.
        check(vec![answer("/anon", 0.0, 6.0), answer("/few", 0.0, 2.0)], &[("/anon", Some(vec![0.0, 6.0])), (OTHER, None)]);
    }
}
