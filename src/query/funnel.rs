//! `POST /api/v2/funnel`: the visits that reached each step of one of a
//! site's configured funnels over a date range, with conversion and
//! drop-off. It reads `funnel_hourly` only, which holds one count per
//! (hour a visit started, funnel, step): a funnel counts within a visit,
//! because tamis has no identity across visits (the visitor key rotates
//! daily and is never stored). Same token, running limit, ClickHouse
//! limits and error answers as `/api/v2/query`, and the same disclosure
//! rules per step ([`steps`], pure): a step below k is withheld, protected
//! answers are consistently rounded, exact answers also withhold a step
//! whose drop-off from the last published one is small. Must not write
//! anything but its audit entry.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use chrono::Duration;
use clickhouse::Row;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::request::{self, RequestError};
use super::{disclosure, number, Api, Base};
use crate::config::{Disclosure, SiteSettings};
use crate::goal::Funnel;
use crate::sink::audit::AuditEntry;

/// The dimension names of a step's cell, for its rounding draw: a step
/// is named by its funnel and number, not by the range asked.
const CELL: [&str; 2] = ["funnel", "funnel:step"];

/// A validated funnel request.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelQuery {
    /// Index into the site's funnels.
    pub funnel: usize,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

/// One step as published: `None` counts and rates when withheld.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub visits: Option<f64>,
    pub conversion_rate: Option<f64>,
    pub conversion_rate_step: Option<f64>,
    pub dropoff: Option<f64>,
    pub dropoff_percentage: Option<f64>,
}

#[derive(Debug, Row, Deserialize)]
struct StepRow {
    step: u8,
    visits: u64,
}

/// Reads the request body after the site id: the funnel by name and the
/// date range, as the query API reads it.
pub fn parse(
    body: &[u8],
    site: &SiteSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<FunnelQuery, ApiError> {
    let bad =
        |field: &'static str, problem: String| ApiError::Invalid(RequestError { field, problem });
    let fields: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| bad("body", "not a JSON object".to_string()))?;
    if let Some(other) = fields
        .keys()
        .find(|k| !["site_id", "funnel", "date_range"].contains(&k.as_str()))
    {
        let shown: String = other.chars().filter(|c| !c.is_control()).take(64).collect();
        return Err(bad(
            "body",
            format!("unknown field `{shown}`: use site_id, funnel and date_range"),
        ));
    }
    let name = match fields.get("funnel") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(bad("funnel", "must be a funnel's name (a string)".into())),
        None => return Err(bad("funnel", "is required".into())),
    };
    let Some(funnel) = site.funnels.iter().position(|f| &f.name == name) else {
        // The configured names, never the client's text.
        let names: Vec<String> = site
            .funnels
            .iter()
            .map(|f| Value::String(f.name.clone()).to_string())
            .collect();
        let known = if names.is_empty() {
            "this site has no funnels ([[site.funnel]] in the configuration)".to_string()
        } else {
            format!("this site's funnels are {}", names.join(", "))
        };
        return Err(ApiError::FunnelNotFound { known });
    };
    let Some(range) = fields.get("date_range") else {
        return Err(bad("date_range", "is required".into()));
    };
    let (from, to) = request::date_range(range, site.timezone, now, None)?;
    Ok(FunnelQuery { funnel, from, to })
}

/// The disclosure rules applied to the visits counted per step (`counts`,
/// in step order, as ClickHouse summed them).
///
/// A step below k is withheld; counts never grow along a funnel, so every
/// later step is too. **Protected**: each count is consistently randomly
/// rounded (its cell: the funnel and the step number), and kept no larger
/// than the step before as published; rates and drop-offs come from the
/// published counts, so any difference is 0 or at least the base.
/// **Exact**: counts as they are, but a step whose drop-off from the last
/// published step is 1 to k − 1 visits is withheld too (a small
/// complement, one subtraction away, as for exact filtered queries).
/// Rates against a withheld step are withheld.
pub fn steps(
    site: &SiteSettings,
    funnel: &Funnel,
    disclosure: Disclosure,
    counts: &[u64],
) -> Vec<Step> {
    let k = f64::from(site.k_threshold);
    let rounding = disclosure::Rounding::for_cells(
        site.rounding_key(),
        site.k_threshold,
        CELL.iter().map(|s| s.to_string()).collect(),
    );
    let mut out = Vec::with_capacity(funnel.steps.len());
    let mut first: Option<f64> = None;
    // The previous step as published (`None`: withheld), and the last
    // step that was published at all.
    let mut previous: Option<f64> = None;
    let mut last_shown: Option<f64> = None;
    for (i, goal) in funnel.steps.iter().enumerate() {
        let exact = counts.get(i).copied().unwrap_or(0) as f64;
        let published = match disclosure {
            Disclosure::Protected => {
                let cell = [funnel.name.clone(), (i + 1).to_string()];
                let base = Base {
                    visits: exact,
                    ..Base::default()
                };
                let rounded = rounding.publish(&cell, &base, false).visits;
                rounded.min(last_shown.unwrap_or(f64::INFINITY))
            }
            Disclosure::Exact => exact,
        };
        let small_complement = disclosure == Disclosure::Exact
            && last_shown.is_some_and(|shown| {
                let gone = shown - exact;
                gone > 0.0 && gone < k
            });
        let withheld = exact < k || small_complement;
        let name = site
            .goals
            .get(*goal)
            .map(|g| g.name.clone())
            .unwrap_or_default();
        if withheld {
            out.push(Step {
                name,
                visits: None,
                conversion_rate: None,
                conversion_rate_step: None,
                dropoff: None,
                dropoff_percentage: None,
            });
            previous = None;
            continue;
        }
        if i == 0 {
            first = Some(published);
        }
        let share = |part: f64, of: f64| {
            if of > 0.0 {
                (part / of * 10_000.0).round() / 100.0
            } else {
                0.0
            }
        };
        let (conversion_rate_step, dropoff, dropoff_percentage) = match (i, previous) {
            (0, _) => (Some(share(published, published)), Some(0.0), Some(0.0)),
            (_, Some(prev)) => (
                Some(share(published, prev)),
                Some(prev - published),
                Some(share(prev - published, prev)),
            ),
            (_, None) => (None, None, None),
        };
        out.push(Step {
            name,
            visits: Some(published),
            conversion_rate: first.map(|top| share(published, top)),
            conversion_rate_step,
            dropoff,
            dropoff_percentage,
        });
        previous = Some(published);
        last_shown = Some(published);
    }
    out
}

impl Api {
    /// `POST /api/v2/funnel`, authorized, bounded and audited as
    /// [`Api::handle`] does a stats query.
    pub async fn funnel(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let super::Asked {
            token,
            disclosure,
            client,
            body,
            site,
            viewer,
            ..
        } = match self.asked(request).await {
            Ok(asked) => asked,
            Err(refused) => return refused.response(),
        };
        let query = match parse(&body, &site, self.clock.now()) {
            Ok(q) => q,
            Err(refused) => return refused.response(),
        };
        let funnel = &site.funnels[query.funnel];
        let _permit = match self.limits.admit(&token, viewer) {
            Ok(permit) => permit,
            Err(busy) => {
                tracing::info!(token = %token, site = %site.id, limit = ?busy.running_limit(), "funnel query refused: too many running");
                return busy.response();
            }
        };
        let ran = tokio::time::timeout(
            self.limits.settings.timeout,
            self.funnel_counts(&site, funnel, &query),
        )
        .await;
        let Ok(ran) = ran else {
            tracing::warn!(token = %token, site = %site.id, category = "tamis_timeout", "funnel query stopped");
            return self.limits.timed_out();
        };
        let counts = match ran {
            Ok(counts) => counts,
            Err(error) => return self.read_failed(&error, &token, &site.id, "funnel query"),
        };
        let steps = steps(&site, funnel, disclosure, &counts);
        self.metrics.api_queries.fetch_add(1, Ordering::Relaxed);
        let tz = site.timezone;
        let range = [
            query.from.with_timezone(&tz).to_rfc3339(),
            (query.to - Duration::seconds(1))
                .with_timezone(&tz)
                .to_rfc3339(),
        ];
        tracing::info!(token = %token, site = %site.id, steps = steps.len(), disclosure = disclosure.name(), "funnel query");
        // The funnel's configured name, never the client's text.
        self.audit.record(AuditEntry {
            at: self.clock.now(),
            kind: "stats_read",
            actor: token.clone(),
            client,
            site_id: site.id.clone(),
            summary: format!(
                "funnel={} date_range={}..{} disclosure={}",
                Value::String(funnel.name.clone()),
                range[0],
                range[1],
                disclosure.name()
            ),
            rows: steps.len() as u64,
            format: "json",
            detail: format!("disclosure={}", disclosure.name()),
        });
        let body = respond(&site, funnel, disclosure, &steps, &range);
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    }

    /// Visits per step of `funnel` (index 0 is step 1) among visits that
    /// started in the query's range.
    async fn funnel_counts(
        &self,
        site: &SiteSettings,
        funnel: &Funnel,
        query: &FunnelQuery,
    ) -> Result<Vec<u64>, clickhouse::error::Error> {
        // Step 0 holds delivery marks: steps are read from 1.
        let sql = format!(
            "SELECT step, sum(visits) AS visits FROM {} \
             WHERE site_id = ? AND funnel = ? AND hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)) \
             AND step >= 1 AND step <= ? GROUP BY step",
            self.nodes.table("funnel_hourly")
        );
        let rows = self
            .on_any(|client| {
                client
                    .query(&sql)
                    .bind(site.id.as_str())
                    .bind(funnel.name.as_str())
                    .bind(query.from.timestamp().to_string())
                    .bind(query.to.timestamp().to_string())
                    .bind(funnel.steps.len() as u64)
                    .fetch_all::<StepRow>()
            })
            .await?;
        let mut counts = vec![0; funnel.steps.len()];
        for row in rows {
            if let Some(c) = usize::from(row.step)
                .checked_sub(1)
                .and_then(|i| counts.get_mut(i))
            {
                *c = row.visits;
            }
        }
        Ok(counts)
    }
}

fn respond(
    site: &SiteSettings,
    funnel: &Funnel,
    disclosure: Disclosure,
    steps: &[Step],
    range: &[String; 2],
) -> Value {
    let opt = |x: Option<f64>| x.map(number).unwrap_or(Value::Null);
    let rounding_base = match disclosure {
        Disclosure::Protected => json!(disclosure::rounding_base(site.k_threshold)),
        Disclosure::Exact => Value::Null,
    };
    json!({
        "funnel": funnel.name,
        "steps": steps.iter().map(|s| json!({
            "name": s.name,
            "visits": opt(s.visits),
            "conversion_rate": opt(s.conversion_rate),
            "conversion_rate_step": opt(s.conversion_rate_step),
            "dropoff": opt(s.dropoff),
            "dropoff_percentage": opt(s.dropoff_percentage),
        })).collect::<Vec<_>>(),
        "meta": {
            "site_id": site.id,
            "date_range": range,
            "time_zone": site.timezone.name(),
            "k_threshold": site.k_threshold,
            "disclosure": disclosure.name(),
            "rounding_base": rounding_base,
            "suppressed_steps": steps.iter().filter(|s| s.visits.is_none()).count(),
            // Steps are counted within one visit, by the hour it started.
            "counted_within": "visit",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goal::Goal;
    use crate::privacy::pipeline::test_site;

    fn site() -> SiteSettings {
        let mut site = test_site("example.org");
        site.k_threshold = 5;
        site.goals = vec![
            Goal::page("/a", Some("A")).unwrap(),
            Goal::page("/b", Some("B")).unwrap(),
            Goal::page("/c", Some("C")).unwrap(),
            Goal::page("/d", Some("D")).unwrap(),
        ];
        site.funnels = vec![Funnel {
            name: "f".into(),
            steps: vec![0, 1, 2, 3],
        }];
        site
    }

    /// Published visits per step (`None`: withheld).
    fn check(disclosure: Disclosure, counts: &[u64], expected: &[Option<f64>]) {
        let site = site();
        let got: Vec<Option<f64>> = steps(&site, &site.funnels[0], disclosure, counts)
            .iter()
            .map(|s| s.visits)
            .collect();
        assert_eq!(got, expected, "{disclosure:?} {counts:?}");
    }

    #[test]
    fn exact_steps_below_k_or_with_a_small_dropoff_are_withheld() {
        check(
            Disclosure::Exact,
            &[40, 20, 8, 4],
            &[Some(40.0), Some(20.0), Some(8.0), None],
        );
        // 20 → 18 loses 2 visits: 18 would show them; 17 is 3 below the
        // last published 20 too; 10 is not.
        check(
            Disclosure::Exact,
            &[20, 18, 17, 10],
            &[Some(20.0), None, None, Some(10.0)],
        );
        // No drop-off is no complement.
        check(
            Disclosure::Exact,
            &[6, 6, 0, 0],
            &[Some(6.0), Some(6.0), None, None],
        );
        check(Disclosure::Exact, &[3, 3, 0, 0], &[None, None, None, None]);
    }

    #[test]
    fn protected_steps_are_rounded_monotone_and_withheld_below_k() {
        let site = site();
        for counts in [[40, 38, 12, 4], [23, 22, 21, 5], [101, 7, 6, 6]] {
            let got = steps(&site, &site.funnels[0], Disclosure::Protected, &counts);
            let mut last = f64::INFINITY;
            for (s, exact) in got.iter().zip(counts) {
                match s.visits {
                    None => assert!(exact < 5, "{counts:?}"),
                    Some(v) => {
                        assert!(exact >= 5, "{counts:?}");
                        assert_eq!(v % 5.0, 0.0, "rounded: {counts:?}");
                        assert!((v - exact as f64).abs() < 5.0, "{counts:?}");
                        assert!(v <= last, "monotone: {counts:?}");
                        last = v;
                    }
                }
            }
            // The same cells give the same numbers however often asked.
            assert_eq!(
                got,
                steps(&site, &site.funnels[0], Disclosure::Protected, &counts)
            );
        }
    }

    #[test]
    fn rates_come_from_published_counts() {
        let site = site();
        let got = steps(&site, &site.funnels[0], Disclosure::Exact, &[40, 10, 0, 0]);
        assert_eq!(got[0].conversion_rate, Some(100.0));
        assert_eq!(got[0].dropoff, Some(0.0));
        assert_eq!(got[1].name, "B");
        assert_eq!(got[1].conversion_rate, Some(25.0));
        assert_eq!(got[1].conversion_rate_step, Some(25.0));
        assert_eq!(got[1].dropoff, Some(30.0));
        assert_eq!(got[1].dropoff_percentage, Some(75.0));
        assert_eq!(got[2].conversion_rate, None);
        // A step after a withheld one has no rate against it.
        let got = steps(
            &site,
            &site.funnels[0],
            Disclosure::Exact,
            &[20, 18, 10, 10],
        );
        assert_eq!(got[2].visits, Some(10.0));
        assert_eq!(got[2].conversion_rate, Some(50.0));
        assert_eq!(got[2].conversion_rate_step, None);
        assert_eq!(got[3].conversion_rate_step, Some(100.0));
    }

    #[test]
    fn requests_name_the_field_and_unknown_funnels_list_the_site_s() {
        let site = site();
        let now = "2026-11-23T15:00:00Z".parse().unwrap();
        let check = |body: &str, status: u16, says: &str| {
            let got = parse(body.as_bytes(), &site, now);
            match got {
                Ok(q) => assert_eq!((200, q.funnel), (status, 0), "{body}"),
                Err(e) => {
                    let message = e.message();
                    assert_eq!(e.status().as_u16(), status, "{body}: {message}");
                    assert!(message.contains(says), "{body}: {message}");
                }
            }
        };
        check(
            r#"{"site_id":"example.org","funnel":"f","date_range":"7d"}"#,
            200,
            "",
        );
        check(
            r#"{"site_id":"example.org","funnel":"g","date_range":"7d"}"#,
            404,
            r#"funnels are "f""#,
        );
        check(
            r#"{"site_id":"example.org","date_range":"7d"}"#,
            400,
            "funnel",
        );
        check(
            r#"{"site_id":"example.org","funnel":3,"date_range":"7d"}"#,
            400,
            "funnel",
        );
        check(
            r#"{"site_id":"example.org","funnel":"f"}"#,
            400,
            "date_range",
        );
        check(
            r#"{"site_id":"example.org","funnel":"f","date_range":"soon"}"#,
            400,
            "date_range",
        );
        check(
            r#"{"site_id":"example.org","funnel":"f","date_range":"7d","x":1}"#,
            400,
            "unknown field `x`",
        );
        check("[]", 400, "body");
    }
}
