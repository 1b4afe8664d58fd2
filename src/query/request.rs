//! The Stats API v2 request, validated: every name checked against an
//! allow-list and every value bounded before any SQL is built.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
}

impl Metric {
    fn parse(s: &str) -> Option<Metric> {
        match s {
            "visitors" => Some(Metric::Visitors),
            "visits" => Some(Metric::Visits),
            "pageviews" => Some(Metric::Pageviews),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Page,
    Country,
    Region,
    Browser,
    Os,
    Device,
    Source,
    Day,
}

impl Dimension {
    fn parse(s: &str) -> Option<Dimension> {
        Some(match s {
            "event:page" => Dimension::Page,
            "visit:country" => Dimension::Country,
            "visit:region" => Dimension::Region,
            "visit:browser" => Dimension::Browser,
            "visit:os" => Dimension::Os,
            "visit:device" => Dimension::Device,
            "visit:source" => Dimension::Source,
            "time:day" | "time" => Dimension::Day,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Page => "event:page",
            Dimension::Country => "visit:country",
            Dimension::Region => "visit:region",
            Dimension::Browser => "visit:browser",
            Dimension::Os => "visit:os",
            Dimension::Device => "visit:device",
            Dimension::Source => "visit:source",
            Dimension::Day => "time:day",
        }
    }

    pub fn is_time(self) -> bool {
        self == Dimension::Day
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Is,
    IsNot,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub op: FilterOp,
    pub dimension: Dimension,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub site_id: String,
    pub metrics: Vec<Metric>,
    pub dimensions: Vec<Dimension>,
    pub filters: Vec<Filter>,
    /// Site-local dates, both included.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub order_by: Vec<(String, bool)>,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    site_id: String,
    metrics: Vec<String>,
    date_range: Value,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    order_by: Vec<(String, String)>,
    #[serde(default)]
    include: Option<Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pagination {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10_000
}

pub const MAX_LIMIT: usize = 10_000;
const MAX_VALUE: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {problem}")]
pub struct RequestError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> RequestError {
    RequestError {
        field,
        problem: problem.into(),
    }
}

/// The site id alone, read first so authorization can run before the rest
/// is validated against the site's time zone.
pub fn site_id(body: &[u8]) -> Result<String, RequestError> {
    #[derive(Deserialize)]
    struct Only {
        site_id: Option<String>,
    }
    let only: Only = serde_json::from_slice(body).map_err(|_| bad("body", "not a JSON object"))?;
    only.site_id.ok_or_else(|| bad("site_id", "is required"))
}

pub fn parse(body: &[u8], timezone: Tz, now: DateTime<Utc>) -> Result<Query, RequestError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        // Name the unknown or missing field when serde says which.
        let field = text.split('`').nth(1).map(|f| f.to_string());
        bad("body", match field {
            Some(f) if f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => format!("problem with field `{f}`"),
            _ => format!("not a valid query at line {} column {}", e.line(), e.column()),
        })
    })?;
    let _ = wire.include;
    if wire.metrics.is_empty() {
        return Err(bad("metrics", "at least one metric is required"));
    }
    let metrics = wire
        .metrics
        .iter()
        .map(|m| Metric::parse(m).ok_or_else(|| bad("metrics", format!("unknown metric `{}`", printable(m)))))
        .collect::<Result<Vec<_>, _>>()?;
    let dimensions = wire
        .dimensions
        .iter()
        .map(|d| Dimension::parse(d).ok_or_else(|| bad("dimensions", format!("unknown dimension `{}`", printable(d)))))
        .collect::<Result<Vec<_>, _>>()?;
    if dimensions.len() > 4 {
        return Err(bad("dimensions", "at most 4 dimensions"));
    }
    let filters = wire.filters.iter().map(parse_filter).collect::<Result<Vec<_>, _>>()?;
    let (first_day, last_day) = date_range(&wire.date_range, timezone, now)?;
    let order_by = wire
        .order_by
        .iter()
        .map(|(field, dir)| {
            let known = metrics.iter().any(|m| m.name() == field) || dimensions.iter().any(|d| d.name() == field);
            if !known {
                return Err(bad("order_by", format!("`{}` is not a requested metric or dimension", printable(field))));
            }
            match dir.as_str() {
                "asc" => Ok((field.clone(), true)),
                "desc" => Ok((field.clone(), false)),
                _ => Err(bad("order_by", "direction must be asc or desc")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (limit, offset) = match wire.pagination {
        Some(p) if p.limit == 0 || p.limit > MAX_LIMIT => return Err(bad("pagination", "limit must be 1 to 10000")),
        Some(p) => (p.limit, p.offset),
        None => (default_limit(), 0),
    };
    Ok(Query {
        site_id: wire.site_id,
        metrics,
        dimensions,
        filters,
        from: local_midnight(first_day, timezone),
        to: local_midnight(last_day + Duration::days(1), timezone),
        first_day,
        last_day,
        order_by,
        limit,
        offset,
    })
}

fn parse_filter(value: &Value) -> Result<Filter, RequestError> {
    let parts = value.as_array().ok_or_else(|| bad("filters", "each filter is [operator, dimension, [values]]"))?;
    let [op, dimension, values] = parts.as_slice() else {
        return Err(bad("filters", "each filter is [operator, dimension, [values]]"));
    };
    let op = match op.as_str() {
        Some("is") => FilterOp::Is,
        Some("is_not") => FilterOp::IsNot,
        Some("contains") => FilterOp::Contains,
        _ => return Err(bad("filters", "operator must be is, is_not or contains")),
    };
    let dimension = dimension
        .as_str()
        .and_then(Dimension::parse)
        .filter(|d| !d.is_time())
        .ok_or_else(|| bad("filters", "unknown filter dimension"))?;
    let values = values
        .as_array()
        .filter(|v| !v.is_empty() && v.len() <= 100)
        .ok_or_else(|| bad("filters", "values must be a list of 1 to 100 strings"))?
        .iter()
        .map(|v| match v.as_str() {
            Some(s) if s.len() <= MAX_VALUE => Ok(s.to_string()),
            _ => Err(bad("filters", "values must be strings of at most 1024 bytes")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter { op, dimension, values })
}

fn date_range(value: &Value, tz: Tz, now: DateTime<Utc>) -> Result<(NaiveDate, NaiveDate), RequestError> {
    let today = now.with_timezone(&tz).date_naive();
    let range = match value {
        Value::String(s) => match s.as_str() {
            "day" => (today, today),
            "7d" => (today - Duration::days(6), today),
            "30d" => (today - Duration::days(29), today),
            _ => return Err(bad("date_range", "must be day, 7d, 30d or [from, to]")),
        },
        Value::Array(pair) if pair.len() == 2 => {
            let day = |v: &Value| {
                v.as_str()
                    .and_then(|s| {
                        NaiveDate::parse_from_str(s, "%Y-%m-%d")
                            .ok()
                            .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&tz).date_naive()))
                            .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok().map(|d| d.date()))
                    })
                    .ok_or_else(|| bad("date_range", "dates are YYYY-MM-DD"))
            };
            (day(&pair[0])?, day(&pair[1])?)
        }
        _ => return Err(bad("date_range", "must be day, 7d, 30d or [from, to]")),
    };
    if range.0 > range.1 {
        return Err(bad("date_range", "from is after to"));
    }
    if (range.1 - range.0).num_days() > 3660 {
        return Err(bad("date_range", "at most ten years"));
    }
    Ok(range)
}

/// The instant a local day starts. Days that start in a DST gap (a few
/// zones skip midnight) start at the first instant that exists.
pub fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|h| tz.from_local_datetime(&(midnight + Duration::hours(h))).earliest())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// Echoes names back in errors without control characters or great length.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-23T15:00:00Z".parse().unwrap()
    }

    fn check(body: &str, expected: Result<(&str, &str), &str>) {
        let got = parse(body.as_bytes(), chrono_tz::America::Toronto, now());
        match (got, expected) {
            (Ok(q), Ok((first, last))) => assert_eq!((q.first_day.to_string(), q.last_day.to_string()), (first.to_string(), last.to_string())),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e} lacks {want}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn date_ranges_in_the_site_zone() {
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day"}"#, Ok(("2026-11-23", "2026-11-23")));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d"}"#, Ok(("2026-11-17", "2026-11-23")));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d"}"#, Ok(("2026-10-25", "2026-11-23")));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":["2026-01-01","2026-01-31"]}"#, Ok(("2026-01-01", "2026-01-31")));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":["2026-02-01","2026-01-31"]}"#, Err("after"));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"forever"}"#, Err("date_range"));
    }

    #[test]
    fn names_are_allow_listed() {
        check(r#"{"site_id":"a","metrics":["visitors; DROP TABLE x"],"date_range":"day"}"#, Err("unknown metric"));
        check(r#"{"site_id":"a","metrics":["visitors"],"dimensions":["event:page'--"],"date_range":"day"}"#, Err("unknown dimension"));
        check(r#"{"site_id":"a","metrics":[],"date_range":"day"}"#, Err("at least one"));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","bogus":1}"#, Err("bogus"));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is","event:page",["/"]]]}"#, Ok(("2026-11-23", "2026-11-23")));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["like","event:page",["/"]]]}"#, Err("operator"));
        check(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","order_by":[["pageviews","desc"]]}"#, Err("order_by"));
    }

    #[test]
    fn local_midnight_is_utc_offset() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        assert_eq!(local_midnight(day, chrono_tz::America::Toronto).to_rfc3339(), "2026-11-23T05:00:00+00:00");
    }
}
