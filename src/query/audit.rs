//! Reads the audit log (for `tamis audit` and `GET /api/v2/audit`) and
//! summarizes stats queries for it. Summaries hold allow-listed names,
//! dates and counts only: never a filter value or any other raw string a
//! client sent.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::request::Query;

/// Most rows one read returns.
pub const MAX_ROWS: usize = 10_000;

#[derive(Debug, Clone, Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: u32,
    pub kind: String,
    pub actor: String,
    pub client: String,
    pub site_id: String,
    pub summary: String,
    pub rows: u64,
    pub format: String,
}

impl AuditRecord {
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(i64::from(self.at), 0).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "at": self.time().to_rfc3339(),
            "kind": self.kind,
            "actor": self.actor,
            "client": self.client,
            "site_id": self.site_id,
            "summary": self.summary,
            "rows": self.rows,
            "format": self.format,
        })
    }
}

/// Rows at or after `since`, of `site` (and the rows about no site, such as
/// configuration changes) or of every site, oldest first.
pub async fn read(
    client: &clickhouse::Client,
    since: DateTime<Utc>,
    site: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditRecord>, clickhouse::error::Error> {
    let since = u32::try_from(since.timestamp().max(0)).unwrap_or(u32::MAX);
    let limit = limit.clamp(1, MAX_ROWS) as u64;
    let base = "SELECT toUInt32(at), kind, actor, client, site_id, summary, rows, format FROM audit_log WHERE at >= toDateTime(?)";
    let q = match site {
        Some(site) => client
            .query(&format!(
                "{base} AND (site_id = ? OR site_id = '') ORDER BY at, kind, site_id LIMIT ?"
            ))
            .bind(since)
            .bind(site)
            .bind(limit),
        None => client
            .query(&format!("{base} ORDER BY at, kind, site_id LIMIT ?"))
            .bind(since)
            .bind(limit),
    };
    q.fetch_all::<AuditRecord>().await
}

/// `2026-11-01` (midnight UTC), an RFC 3339 time, or a duration back from
/// `now`: `90m`, `24h`, `7d`.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number.parse().map_err(|_| {
        format!(
            "`{}` is not a date, an RFC 3339 time or a duration such as 24h or 7d",
            printable(s)
        )
    })?;
    let back = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n.min(100_000)),
        _ => return Err(format!("`{}`: the unit must be m, h or d", printable(s))),
    };
    Ok(now - back)
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// What a stats query asked, for the audit log: metrics, dimensions, the
/// local dates of its range, how many filters and the page size.
pub fn summarize(query: &Query, tz: Tz) -> String {
    let metrics: Vec<&str> = query.metrics.iter().map(|m| m.name()).collect();
    let dimensions: Vec<String> = query
        .dimensions
        .iter()
        .map(|d| query.dimension_name(*d))
        .collect();
    let from = query.from.with_timezone(&tz).date_naive();
    let to = (query.to - Duration::seconds(1))
        .with_timezone(&tz)
        .date_naive();
    format!(
        "metrics={} dimensions={} range={from}..{to} filters={} limit={} offset={}",
        metrics.join(","),
        if dimensions.is_empty() {
            "-".to_string()
        } else {
            dimensions.join(",")
        },
        query.filters.len(),
        query.limit,
        query.offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, ()>) {
        let now: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().unwrap();
        let got = parse_since(input, now)
            .map(|t| t.to_rfc3339())
            .map_err(|_| ());
        assert_eq!(got, expected.map(|s| s.to_string()), "{input}");
    }

    #[test]
    fn since_takes_dates_times_and_durations() {
        check("2026-11-01", Ok("2026-11-01T00:00:00+00:00"));
        check("2026-11-01T05:00:00-05:00", Ok("2026-11-01T10:00:00+00:00"));
        check("24h", Ok("2026-11-22T12:00:00+00:00"));
        check("7d", Ok("2026-11-16T12:00:00+00:00"));
        check("90m", Ok("2026-11-23T10:30:00+00:00"));
        check("yesterday", Err(()));
        check("7w", Err(()));
        check("", Err(()));
    }

    #[test]
    fn summaries_hold_no_filter_values() {
        let site = super::super::request::SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: vec![],
        };
        let body = br#"{"site_id":"example.org","metrics":["visitors"],"date_range":["2026-11-01","2026-11-07"],"dimensions":["event:page"],"filters":[["contains","event:page",["secret-value"]]]}"#;
        let q = super::super::request::parse(body, &site, "2026-11-23T12:00:00Z".parse().unwrap())
            .unwrap();
        let s = summarize(&q, chrono_tz::America::Toronto);
        assert_eq!(s, "metrics=visitors dimensions=event:page range=2026-11-01..2026-11-07 filters=1 limit=10000 offset=0");
    }
}
