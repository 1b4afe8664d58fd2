//! Imported history in answers (`include.imports`, as Plausible's stats
//! API): which queries imported days can answer, and the SQL reading them
//! from `imported_daily` in the shape of the collected rows, so that
//! `Api::run` adds them before any disclosure rule (k-suppression and
//! rounding apply to the sums). As Plausible, a query imports cannot
//! answer is answered without them, with `meta.imports_skip_reason` and
//! `meta.imports_warning`.
//!
//! Each dimension is read from the one report that holds it
//! (`import::ga4::Report`): totals and time series from the visitors
//! report, pages from the pages report, and so on; visitors are GA4's
//! daily users summed over days, as Plausible sums imported visitors.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::request::{Dimension, Metric, Query};
use super::sql::Statement;
use crate::import::ga4::Report;
use crate::sink::nodes::Tables;

/// Why imported days are not in an answer (Plausible's
/// `skip_imported_reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Filters, dimensions or metrics the imported reports do not hold.
    UnsupportedQuery,
    /// A time dimension finer than a day.
    UnsupportedInterval,
    /// No imported day in the range.
    NoImportedData,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::UnsupportedQuery => "unsupported_query",
            Skip::UnsupportedInterval => "unsupported_interval",
            Skip::NoImportedData => "no_imported_data",
        }
    }

    /// Plausible's warnings (`Plausible.Stats.QueryResult`'s
    /// `@imports_warnings`), where it gives one.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            Skip::UnsupportedQuery => Some(
                "Imported stats are not included in the results because query parameters are not supported.",
            ),
            Skip::UnsupportedInterval => Some(
                "Imported stats are not included because the time dimension (i.e. the interval) is too short.",
            ),
            Skip::NoImportedData => None,
        }
    }
}

/// What an answer says of imports (`meta.imports_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imports {
    pub included: bool,
    pub skip: Option<Skip>,
    /// The first and last imported day in the range (a tamis extension,
    /// `meta.imports_period`, which the dashboard marks).
    pub period: Option<(String, String)>,
}

/// The report holding `dimensions` (time dimensions aside), if one does.
pub fn report(dimensions: &[Dimension]) -> Option<Report> {
    let mut found: Option<Report> = None;
    for d in dimensions.iter().filter(|d| !d.is_time()) {
        let r = match d {
            Dimension::Page | Dimension::Hostname => Report::Pages,
            Dimension::EntryPage => Report::EntryPages,
            Dimension::Source
            | Dimension::UtmMedium
            | Dimension::UtmCampaign
            | Dimension::UtmContent
            | Dimension::UtmTerm => Report::Sources,
            Dimension::Country
            | Dimension::Region
            | Dimension::CountryName
            | Dimension::RegionName => Report::Locations,
            Dimension::Device => Report::Devices,
            Dimension::Browser => Report::Browsers,
            Dimension::Os | Dimension::OsVersion => Report::OperatingSystems,
            _ => return None,
        };
        match found {
            Some(f) if f != r => return None,
            _ => found = Some(r),
        }
    }
    Some(found.unwrap_or(Report::Visitors))
}

/// Whether imported days can answer `query`, or why not (before looking
/// for imported days).
pub fn check(query: &Query) -> Result<Report, Skip> {
    if query.dimensions.contains(&Dimension::Hour) {
        return Err(Skip::UnsupportedInterval);
    }
    if !query.filters.is_empty() || query.prop_key.is_some() {
        return Err(Skip::UnsupportedQuery);
    }
    let report = report(&query.dimensions).ok_or(Skip::UnsupportedQuery)?;
    let supported = |m: &Metric| match m {
        Metric::Visitors
        | Metric::Visits
        | Metric::Pageviews
        | Metric::ViewsPerVisit
        | Metric::Events
        | Metric::Percentage => true,
        Metric::BounceRate | Metric::VisitDuration => report.has_bounces(),
        _ => false,
    };
    if query.metrics.iter().all(supported) {
        Ok(report)
    } else {
        Err(Skip::UnsupportedQuery)
    }
}

/// The local days `[from, to)` touches, first and last.
pub fn days(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> (NaiveDate, NaiveDate) {
    (
        from.with_timezone(&tz).date_naive(),
        (to - Duration::seconds(1)).with_timezone(&tz).date_naive(),
    )
}

/// `(report, day, version)` of the current import of each day: the
/// newest version the ledger records (see `sink::imported`).
fn current(tables: Tables) -> String {
    format!(
        "(report, day, version) {} (SELECT report, day, max(version) FROM {} WHERE site_id = ? GROUP BY report, day)",
        tables.in_subquery(),
        tables.name("imported_days")
    )
}

/// The first and last imported day of `report` in the range, as one row
/// (empty strings when none).
pub fn period(tables: Tables, query: &Query, report: Report, tz: Tz) -> Statement {
    let (first, last) = days(query.from, query.to, tz);
    Statement {
        sql: format!(
            "SELECT toString(min(day)), toString(max(day)), count() FROM {} WHERE site_id = ? AND report = ? AND day >= toDate(?) AND day <= toDate(?) AND {}",
            tables.name("imported_days"),
            current(tables)
        ),
        params: vec![
            query.site_id.clone(),
            report.as_str().to_string(),
            first.to_string(),
            last.to_string(),
            query.site_id.clone(),
        ],
        having: false,
    }
}

/// The imported rows of `report` by `dimensions`, in the shape of
/// `sql::build`'s (`dims`, `base` in `sql::BASE` order; imported days
/// have no events, exits or engagement).
pub fn rows(
    tables: Tables,
    query: &Query,
    dimensions: &[Dimension],
    report: Report,
    tz: Tz,
) -> Statement {
    let (first, last) = days(query.from, query.to, tz);
    let exprs: Vec<&str> = dimensions
        .iter()
        .map(|d| match d {
            Dimension::Page => "page",
            Dimension::Hostname => "hostname",
            Dimension::EntryPage => "entry_page",
            Dimension::Source => "source",
            Dimension::UtmMedium => "if(empty(utm_medium), '(not set)', utm_medium)",
            Dimension::UtmCampaign => "if(empty(utm_campaign), '(not set)', utm_campaign)",
            Dimension::UtmContent => "if(empty(utm_content), '(not set)', utm_content)",
            Dimension::UtmTerm => "if(empty(utm_term), '(not set)', utm_term)",
            Dimension::Country | Dimension::CountryName => "country",
            Dimension::Region | Dimension::RegionName => "region",
            Dimension::Device => "device",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
            Dimension::OsVersion => "if(empty(os_version), '(not set)', os_version)",
            Dimension::Day => "toString(day)",
            Dimension::Week => "toString(toMonday(day))",
            Dimension::Month => "toString(toStartOfMonth(day))",
            // `check` admits no other dimension.
            _ => "''",
        })
        .collect();
    let dims = if exprs.is_empty() {
        "emptyArrayString()".to_string()
    } else {
        format!("[{}]", exprs.join(", "))
    };
    let mut sql = format!(
        "SELECT {dims} AS dims, [toFloat64(sum(visitors)), toFloat64(sum(visits)), toFloat64(sum(pageviews)), 0, \
         toFloat64(sum(bounces)), toFloat64(sum(duration)), 0, 0, 0, 0, 0] AS base \
         FROM {} WHERE site_id = ? AND report = ? AND day >= toDate(?) AND day <= toDate(?) AND {}",
        tables.name("imported_daily"),
        current(tables)
    );
    if !exprs.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", exprs.join(", ")));
    }
    Statement {
        sql,
        params: vec![
            query.site_id.clone(),
            report.as_str().to_string(),
            first.to_string(),
            last.to_string(),
            query.site_id.clone(),
        ],
        having: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_query(body: &str, expected: Result<Report, Skip>) {
        let site = super::super::request::SiteView {
            timezone: chrono_tz::UTC,
            campaigns: true,
            prop_keys: vec![],
            goals: vec![],
        };
        let query = super::super::request::parse(body.as_bytes(), &site, Utc::now())
            .unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(check(&query), expected, "{body}");
    }

    /// Plausible answers `imports_skip_reason` "unsupported_query" for
    /// filters it cannot apply to imported tables and
    /// "unsupported_interval" for hours
    /// (test/plausible_web/controllers/api/external_stats_controller/query_imported_test.exs).
    #[test]
    fn which_queries_imports_answer() {
        const R: &str = r#""site_id":"a.org","date_range":["2025-01-01","2025-12-31"]"#;
        check_query(
            &format!(r#"{{{R},"metrics":["visitors","pageviews","bounce_rate"]}}"#),
            Ok(Report::Visitors),
        );
        check_query(
            &format!(r#"{{{R},"metrics":["visitors"],"dimensions":["time:day"]}}"#),
            Ok(Report::Visitors),
        );
        check_query(
            r#"{"site_id":"a.org","date_range":["2025-01-01","2025-01-02"],"metrics":["visitors"],"dimensions":["time:hour"]}"#,
            Err(Skip::UnsupportedInterval),
        );
        check_query(
            &format!(r#"{{{R},"metrics":["visitors","pageviews"],"dimensions":["event:page"]}}"#),
            Ok(Report::Pages),
        );
        check_query(
            &format!(r#"{{{R},"metrics":["bounce_rate"],"dimensions":["event:page"]}}"#),
            Err(Skip::UnsupportedQuery),
        );
        check_query(
            &format!(
                r#"{{{R},"metrics":["visitors"],"dimensions":["visit:country","visit:region"]}}"#
            ),
            Ok(Report::Locations),
        );
        check_query(
            &format!(
                r#"{{{R},"metrics":["visitors"],"dimensions":["visit:country","visit:browser"]}}"#
            ),
            Err(Skip::UnsupportedQuery),
        );
        check_query(
            &format!(r#"{{{R},"metrics":["visitors"],"filters":[["is","event:page",["/"]]]}}"#),
            Err(Skip::UnsupportedQuery),
        );
        check_query(
            &format!(r#"{{{R},"metrics":["visitors"],"dimensions":["event:name"]}}"#),
            Err(Skip::UnsupportedQuery),
        );
    }
}
