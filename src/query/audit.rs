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
/// configuration changes) or of every site, oldest first. `table`: the
/// audit log as the server reads it (`sink::nodes::Nodes::table`).
pub async fn read(
    client: &clickhouse::Client,
    table: &str,
    since: DateTime<Utc>,
    site: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditRecord>, clickhouse::error::Error> {
    let since = u32::try_from(since.timestamp().max(0)).unwrap_or(u32::MAX);
    let limit = limit.clamp(1, MAX_ROWS) as u64;
    let base = format!("SELECT toUInt32(at), kind, actor, client, site_id, summary, rows, format FROM {table} WHERE at >= toDateTime(?)");
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

/// Farthest back `since` may reach: the audit log keeps months, and
/// chrono panics on arithmetic past its own range, so a client's duration
/// is checked against this before any subtraction.
pub const MAX_BACK_DAYS: i64 = 100 * 366;

/// `2026-11-01` (midnight UTC), an RFC 3339 time, or a duration back from
/// `now`: `90m`, `24h`, `7d`, at most [`MAX_BACK_DAYS`]. Never panics,
/// whatever the text.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let minutes_per_unit = match unit {
        "m" => 1,
        "h" => 60,
        "d" => 24 * 60,
        _ if number.is_empty() => {
            return Err(format!(
                "`{}` is not a date, an RFC 3339 time or a duration such as 24h or 7d",
                printable(s)
            ))
        }
        _ => return Err(format!("`{}`: the unit must be m, h or d", printable(s))),
    };
    let too_far = || format!("`{}`: at most {MAX_BACK_DAYS} days back", printable(s));
    // Digits only, so the one failure left is overflow: too far back.
    let n: i64 = number.parse().map_err(|_| too_far())?;
    let minutes = n
        .checked_mul(minutes_per_unit)
        .filter(|m| *m <= MAX_BACK_DAYS * 24 * 60)
        .ok_or_else(too_far)?;
    Duration::try_minutes(minutes)
        .and_then(|back| now.checked_sub_signed(back))
        .ok_or_else(too_far)
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
        check("m", Err(()));
        check("-5m", Err(()));
        check("36600d", Ok("1926-09-09T12:00:00+00:00"));
    }

    /// Issue 12, point 7: `?since=99999999999999999m` and
    /// `?since=1000000000000h` panicked in chrono (API and CLI).
    #[test]
    fn audit_since_out_of_range_is_refused_not_a_panic() {
        check("99999999999999999m", Err(()));
        check("1000000000000h", Err(()));
        check("36601d", Err(()));
        check("99999999999999999999999999d", Err(()));
        check("9223372036854775807m", Err(()));
        let now: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().unwrap();
        let e = parse_since("1000000000000h", now).unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn summaries_hold_no_filter_values() {
        let site = super::super::request::SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: vec![],
            goals: vec![],
        };
        let body = br#"{"site_id":"example.org","metrics":["visitors"],"date_range":["2026-11-01","2026-11-07"],"dimensions":["event:page"],"filters":[["contains","event:page",["secret-value"]]]}"#;
        let q = super::super::request::parse(body, &site, "2026-11-23T12:00:00Z".parse().unwrap())
            .unwrap();
        let s = summarize(&q, chrono_tz::America::Toronto);
        assert_eq!(s, "metrics=visitors dimensions=event:page range=2026-11-01..2026-11-07 filters=1 limit=10000 offset=0");
    }

    /// A hostile duration or date: digits (often too many) and units,
    /// date-shaped text with odd years, offsets and separators, and
    /// anything at all.
    fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[0-9]{0,30}[mhdwsy]?",
            "[-+]?[0-9]{1,9}-[0-9]{1,3}-[0-9]{1,3}",
            "[-+]?[0-9]{4,9}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[-+][0-9]{2}:[0-9]{2})?",
            "(2105|1970|0000|9999|262143)-(12|01|13|00)-(31|01|00|32)(T(23:59:59|00:00:00|24:00:00|23:59:60)(Z|[-+]23:59|[-+]00:00)?)?",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Issue 12, point 7: every parser of a client's duration or date
        /// (the audit log's `since`, the stats API's `date_range`, as a
        /// word or as a pair of bounds, with every time dimension) answers
        /// without panicking, and the audit log's `since` never goes past
        /// its bound.
        #[test]
        fn client_durations_and_dates_never_panic(a in hostile(), b in hostile(), dim in 0..5usize) {
            let now: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().unwrap();
            let is_duration = a.len() > 1 && a.trim_end_matches(['m', 'h', 'd']).len() + 1 == a.len()
                && a[..a.len() - 1].bytes().all(|b| b.is_ascii_digit());
            match parse_since(&a, now) {
                Ok(t) if is_duration => proptest::prop_assert!(t >= now - Duration::days(MAX_BACK_DAYS)),
                _ => {}
            }
            let site = super::super::request::SiteView {
                timezone: chrono_tz::America::Toronto,
                campaigns: false,
                prop_keys: vec![],
                goals: vec![],
            };
            let dimension = ["time:hour", "time:day", "time:week", "time:month", "time"][dim];
            for range in [serde_json::json!(a), serde_json::json!([a, b])] {
                let body = serde_json::json!({
                    "site_id": "example.org",
                    "metrics": ["visitors"],
                    "date_range": range,
                    "dimensions": [dimension],
                })
                .to_string();
                if let Ok(q) = super::super::request::parse(body.as_bytes(), &site, now) {
                    let _ = summarize(&q, chrono_tz::America::Toronto);
                }
            }
        }
    }
}
