//! Google Analytics 4 reports as files: a Data API `runReport` (or
//! `batchRunReports`) JSON response, or the CSV that GA4's "Export → CSV"
//! writes. Each file is one report of the set Plausible's GA4 importer
//! requests (`lib/plausible/google/ga4/report_request.ex`): visitors by
//! date, sources, pages, entry pages, locations, devices, browsers and
//! operating systems. Parsing is pure: bytes in, validated rows out, or an
//! error naming the row and field. Values are coarsened to what tamis
//! stores (no city; regions as ISO 3166-2 codes; page paths without query
//! and with personal-looking parts redacted; Plausible's browser and OS
//! names; an OS's major version only).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde_json::Value;

use crate::privacy::referrer::ReferrerClassifier;

/// The reports tamis imports, by the dimension that tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Report {
    Visitors,
    Sources,
    Pages,
    EntryPages,
    Locations,
    Devices,
    Browsers,
    OperatingSystems,
}

impl Report {
    pub const ALL: [Report; 8] = [
        Report::Visitors,
        Report::Sources,
        Report::Pages,
        Report::EntryPages,
        Report::Locations,
        Report::Devices,
        Report::Browsers,
        Report::OperatingSystems,
    ];

    /// The name stored in `imported_daily.report` (Plausible's dataset
    /// names without `imported_`).
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Visitors => "visitors",
            Report::Sources => "sources",
            Report::Pages => "pages",
            Report::EntryPages => "entry_pages",
            Report::Locations => "locations",
            Report::Devices => "devices",
            Report::Browsers => "browsers",
            Report::OperatingSystems => "operating_systems",
        }
    }

    /// The GA4 dimension (API name) whose presence names the report.
    fn key(self) -> Option<&'static str> {
        match self {
            Report::Visitors => None,
            Report::Sources => Some("sessionSource"),
            Report::Pages => Some("pagePath"),
            Report::EntryPages => Some("landingPage"),
            Report::Locations => Some("countryId"),
            Report::Devices => Some("deviceCategory"),
            Report::Browsers => Some("browser"),
            Report::OperatingSystems => Some("operatingSystem"),
        }
    }

    /// The other GA4 dimensions the report may carry (besides `date`).
    fn optional(self) -> &'static [&'static str] {
        match self {
            Report::Sources => &[
                "sessionMedium",
                "sessionCampaignName",
                "sessionManualAdContent",
                "sessionGoogleAdsKeyword",
                // Requested by Plausible, then left out: GA4 gives a full
                // URL here, and tamis keeps referrers' hosts only.
                "pageReferrer",
            ],
            Report::Pages => &["hostName"],
            Report::Locations => &["country", "region", "city"],
            Report::OperatingSystems => &["operatingSystemVersion"],
            _ => &[],
        }
    }

    /// Whether the report counts bounces and engagement time (GA4 has no
    /// bounces per page, see Plausible's `imported_pages`).
    pub fn has_bounces(self) -> bool {
        self != Report::Pages
    }
}

/// The columns of `imported_daily` that hold a report's dimension values,
/// named as `traffic_hourly`'s, in table order.
pub const COLUMNS: [&str; 14] = [
    "page",
    "hostname",
    "entry_page",
    "source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country",
    "region",
    "device",
    "browser",
    "os",
    "os_version",
];

/// A column's position in [`COLUMNS`].
fn col(name: &str) -> usize {
    COLUMNS.iter().position(|c| *c == name).unwrap_or(0)
}

/// What a row counts, as tamis names it: `totalUsers`, `sessions`,
/// `screenPageViews`, `bounces` (or `sessions - engagedSessions`) and
/// `userEngagementDuration` (seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visitors: u64,
    pub visits: u64,
    pub pageviews: u64,
    pub bounces: u64,
    pub duration: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.visitors += o.visitors;
        self.visits += o.visits;
        self.pageviews += o.pageviews;
        self.bounces += o.bounces;
        self.duration += o.duration;
    }
}

/// A parsed report: its rows merged by (day, coarsened values).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub report: Report,
    pub format: Format,
    /// Rows as read (before merging), for the summary.
    pub rows_read: usize,
    pub rows: BTreeMap<(NaiveDate, [String; COLUMNS.len()]), Counts>,
    /// Country names that no ISO 3166-1 code matched (kept as unknown).
    pub unknown_countries: BTreeSet<String>,
    /// Region names that no ISO 3166-2 code matched (kept as unknown).
    pub unknown_regions: BTreeSet<String>,
}

impl Parsed {
    pub fn days(&self) -> BTreeSet<NaiveDate> {
        self.rows.keys().map(|(d, _)| *d).collect()
    }

    pub fn totals(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.rows.values() {
            t.add(c);
        }
        t
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "ga4-json",
            Format::Csv => "ga4-csv",
        }
    }
}

/// A bad file: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {at}, field `{field}`: {problem}")]
pub struct BadFile {
    pub file: String,
    /// `line 12` (CSV) or `rows[11]` (JSON), or `header`.
    pub at: String,
    pub field: String,
    pub problem: String,
}

/// What coarsening needs: the referrer list (sources to their names).
pub struct Coarsen {
    referrers: ReferrerClassifier,
}

impl Coarsen {
    pub fn new() -> Result<Coarsen, crate::privacy::referrer::ReferrerError> {
        Ok(Coarsen {
            referrers: ReferrerClassifier::new()?,
        })
    }
}

/// Parses one file: JSON when it starts with `{`, else CSV.
pub fn parse(file: &str, bytes: &[u8], coarsen: &Coarsen) -> Result<Parsed, BadFile> {
    let text = std::str::from_utf8(bytes).map_err(|e| BadFile {
        file: file.into(),
        at: "byte ".to_string() + &e.valid_up_to().to_string(),
        field: "(file)".into(),
        problem: "not UTF-8 text".into(),
    })?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('{') {
        parse_json(file, text, coarsen)
    } else {
        parse_csv(file, text, coarsen)
    }
}

/// A table read from either format: GA4 API names of the columns, then
/// rows of strings with where each came from.
struct Table {
    dimensions: Vec<String>,
    metrics: Vec<String>,
    rows: Vec<(String, Vec<String>, Vec<String>)>,
}

fn parse_json(file: &str, text: &str, coarsen: &Coarsen) -> Result<Parsed, BadFile> {
    let bad = |at: &str, field: &str, problem: String| BadFile {
        file: file.into(),
        at: at.into(),
        field: field.into(),
        problem,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        bad(
            &format!("line {}", e.line()),
            "(json)",
            format!("not JSON: {e}"),
        )
    })?;
    // `batchRunReports` wraps one `runReport` response per report; a file
    // holds one report.
    let report = match value.get("reports") {
        Some(Value::Array(reports)) if reports.len() == 1 => &reports[0],
        Some(_) => {
            return Err(bad(
                "top level",
                "reports",
                "a file holds one report; save each of a batchRunReports response's reports in its own file".into(),
            ))
        }
        None => &value,
    };
    let names = |key: &str| -> Result<Vec<String>, BadFile> {
        let Some(Value::Array(headers)) = report.get(key) else {
            return Err(bad(
                "top level",
                key,
                "missing (a runReport response has dimensionHeaders, metricHeaders and rows)"
                    .into(),
            ));
        };
        headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                h.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad("header", &format!("{key}[{i}].name"), "missing".into()))
            })
            .collect()
    };
    let dimensions = names("dimensionHeaders")?;
    let metrics = names("metricHeaders")?;
    // A report without rows has no `rows` key at all.
    let empty = Vec::new();
    let rows = match report.get("rows") {
        Some(Value::Array(rows)) => rows,
        None => &empty,
        Some(_) => return Err(bad("top level", "rows", "not an array".into())),
    };
    let mut table = Table {
        dimensions,
        metrics,
        rows: Vec::with_capacity(rows.len()),
    };
    for (i, row) in rows.iter().enumerate() {
        let at = format!("rows[{i}]");
        let values = |key: &str, n: usize, names: &[String]| -> Result<Vec<String>, BadFile> {
            let Some(Value::Array(cells)) = row.get(key) else {
                return Err(bad(&at, key, "missing".into()));
            };
            if cells.len() != n {
                return Err(bad(
                    &at,
                    key,
                    format!("{} values for {n} headers", cells.len()),
                ));
            }
            cells
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    c.get("value")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            bad(
                                &at,
                                &format!("{key}[{j}] ({})", names[j]),
                                "no string `value`".into(),
                            )
                        })
                })
                .collect()
        };
        let d = values("dimensionValues", table.dimensions.len(), &table.dimensions)?;
        let m = values("metricValues", table.metrics.len(), &table.metrics)?;
        table.rows.push((at, d, m));
    }
    build(file, Format::Json, table, coarsen)
}

/// GA4's column titles in its CSV export (English interface) and the API
/// names they stand for. API names are accepted as titles too.
const CSV_TITLES: [(&str, &str); 26] = [
    ("date", "date"),
    ("session source", "sessionSource"),
    ("session medium", "sessionMedium"),
    ("session campaign", "sessionCampaignName"),
    ("session manual ad content", "sessionManualAdContent"),
    ("session google ads keyword text", "sessionGoogleAdsKeyword"),
    ("page referrer", "pageReferrer"),
    ("hostname", "hostName"),
    ("page path and screen class", "pagePath"),
    ("page path", "pagePath"),
    ("landing page", "landingPage"),
    ("country id", "countryId"),
    ("country", "country"),
    ("region", "region"),
    ("city", "city"),
    ("device category", "deviceCategory"),
    ("browser", "browser"),
    ("operating system", "operatingSystem"),
    ("os version", "operatingSystemVersion"),
    ("total users", "totalUsers"),
    ("views", "screenPageViews"),
    ("sessions", "sessions"),
    ("engaged sessions", "engagedSessions"),
    ("bounces", "bounces"),
    ("user engagement", "userEngagementDuration"),
    ("users", "totalUsers"),
];

const METRICS: [&str; 6] = [
    "totalUsers",
    "screenPageViews",
    "sessions",
    "engagedSessions",
    "bounces",
    "userEngagementDuration",
];

fn parse_csv(file: &str, text: &str, coarsen: &Coarsen) -> Result<Parsed, BadFile> {
    let bad = |line: usize, field: &str, problem: String| BadFile {
        file: file.into(),
        at: format!("line {line}"),
        field: field.into(),
        problem,
    };
    // GA4 writes `#` comment lines (report name, property, date range)
    // before each table and a blank line between tables; the table with a
    // Date column is the report. Lines keep their numbers for errors.
    let mut table: Option<Table> = None;
    let mut titles: Vec<String> = Vec::new();
    let mut kinds: Vec<(bool, usize)> = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            bad(line, "(csv)", format!("not CSV: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let cells: Vec<String> = record.iter().map(|c| c.trim().to_string()).collect();
        if cells.iter().all(String::is_empty) {
            // A blank line ends a table: keep the first one with dates.
            if table.as_ref().is_some_and(|t| !t.rows.is_empty()) {
                break;
            }
            table = None;
            continue;
        }
        match &table {
            None => {
                let names: Vec<Option<&str>> = cells
                    .iter()
                    .map(|c| {
                        let lower = c.to_lowercase();
                        CSV_TITLES
                            .iter()
                            .find(|(t, api)| *t == lower || api.eq_ignore_ascii_case(c))
                            .map(|(_, api)| *api)
                    })
                    .collect();
                if !names.contains(&Some("date")) {
                    // Another table (a chart's series): skipped.
                    continue;
                }
                let mut t = Table {
                    dimensions: Vec::new(),
                    metrics: Vec::new(),
                    rows: Vec::new(),
                };
                kinds.clear();
                titles.clear();
                for (i, name) in names.iter().enumerate() {
                    let Some(name) = name else {
                        return Err(bad(
                            line,
                            &cells[i],
                            "not a column of the imported reports".into(),
                        ));
                    };
                    titles.push(cells[i].clone());
                    if METRICS.contains(name) {
                        kinds.push((true, t.metrics.len()));
                        t.metrics.push(name.to_string());
                    } else {
                        kinds.push((false, t.dimensions.len()));
                        t.dimensions.push(name.to_string());
                    }
                }
                table = Some(t);
            }
            Some(_) => {
                let t = table.as_mut().expect("matched Some");
                // Explorations end with a "Grand total" row.
                if cells[0].eq_ignore_ascii_case("grand total")
                    || cells[0].eq_ignore_ascii_case("total")
                {
                    continue;
                }
                if cells.len() != kinds.len() {
                    return Err(bad(
                        line,
                        "(row)",
                        format!("{} cells for {} columns", cells.len(), kinds.len()),
                    ));
                }
                let mut d = vec![String::new(); t.dimensions.len()];
                let mut m = vec![String::new(); t.metrics.len()];
                for (cell, (metric, i)) in cells.into_iter().zip(&kinds) {
                    if *metric {
                        m[*i] = cell;
                    } else {
                        d[*i] = cell;
                    }
                }
                t.rows.push((format!("line {line}"), d, m));
            }
        }
    }
    let Some(table) = table else {
        return Err(BadFile {
            file: file.into(),
            at: "header".into(),
            field: "Date".into(),
            problem:
                "no table with a Date column (export the report with Date as its first dimension)"
                    .into(),
        });
    };
    // CSV errors name the column as GA4 titled it.
    let rename = |name: &str| -> String {
        match titles.iter().zip(&kinds).find(|(_, (m, i))| {
            let list = if *m {
                &table.metrics
            } else {
                &table.dimensions
            };
            list.get(*i).is_some_and(|n| n == name)
        }) {
            Some((t, _)) => t.clone(),
            None => name.to_string(),
        }
    };
    let renamed: Vec<(String, String)> = table
        .dimensions
        .iter()
        .chain(&table.metrics)
        .map(|n| (n.clone(), rename(n)))
        .collect();
    build(file, Format::Csv, table, coarsen).map_err(|mut e| {
        if let Some((_, title)) = renamed.iter().find(|(api, _)| *api == e.field) {
            e.field = title.clone();
        }
        e
    })
}

/// The report a table is, from its dimensions; then its rows validated,
/// coarsened and merged.
fn build(file: &str, format: Format, table: Table, coarsen: &Coarsen) -> Result<Parsed, BadFile> {
    let bad = |at: &str, field: &str, problem: String| BadFile {
        file: file.into(),
        at: at.into(),
        field: field.into(),
        problem,
    };
    let dims = &table.dimensions;
    let has = |n: &str| dims.iter().any(|d| d == n);
    if !has("date") {
        return Err(bad(
            "header",
            "date",
            "missing: every imported report is by date".into(),
        ));
    }
    let report = Report::ALL
        .into_iter()
        .filter(|r| r.key().is_some_and(has) || (*r == Report::Locations && has("country")))
        .collect::<Vec<_>>();
    let report = match report.as_slice() {
        [] => Report::Visitors,
        [one] => *one,
        several => {
            return Err(bad(
                "header",
                several[1].key().unwrap_or("?"),
                format!(
                    "one report per file: this one mixes {} and {}",
                    several[0].as_str(),
                    several[1].as_str()
                ),
            ))
        }
    };
    for d in dims {
        if d != "date"
            && report.key() != Some(d.as_str())
            && !report.optional().contains(&d.as_str())
        {
            return Err(bad(
                "header",
                d,
                format!("not a dimension of the {} report", report.as_str()),
            ));
        }
    }
    for m in &table.metrics {
        if !METRICS.contains(&m.as_str()) {
            return Err(bad(
                "header",
                m,
                "not a metric of the imported reports".into(),
            ));
        }
    }
    let metric = |n: &str| table.metrics.iter().position(|m| m == n);
    let mut required = vec!["totalUsers", "screenPageViews", "sessions"];
    if report.has_bounces() {
        required.push("userEngagementDuration");
    }
    for r in required {
        if metric(r).is_none() {
            return Err(bad(
                "header",
                r,
                format!("missing: the {} report needs it", report.as_str()),
            ));
        }
    }
    let bounces = metric("bounces");
    let engaged = metric("engagedSessions");
    if report.has_bounces() && bounces.is_none() && engaged.is_none() {
        return Err(bad(
            "header",
            "bounces",
            "missing (or engagedSessions, from which bounces = sessions - engagedSessions)".into(),
        ));
    }
    let dim = |n: &str| dims.iter().position(|d| d == n);
    let mut parsed = Parsed {
        report,
        format,
        rows_read: table.rows.len(),
        rows: BTreeMap::new(),
        unknown_countries: BTreeSet::new(),
        unknown_regions: BTreeSet::new(),
    };
    for (at, d, m) in &table.rows {
        let day_text = &d[dim("date").unwrap_or(0)];
        let day = parse_day(day_text).ok_or_else(|| {
            bad(
                at,
                "date",
                format!("`{}` is not a date (YYYYMMDD)", short(day_text)),
            )
        })?;
        let number = |name: &str| -> Result<u64, BadFile> {
            let Some(i) = metric(name) else {
                return Ok(0);
            };
            parse_count(&m[i])
                .ok_or_else(|| bad(at, name, format!("`{}` is not a count", short(&m[i]))))
        };
        let visits = number("sessions")?;
        let bounces = match (bounces, engaged) {
            (Some(_), _) => number("bounces")?,
            (None, Some(_)) => visits.saturating_sub(number("engagedSessions")?),
            (None, None) => 0,
        };
        let mut counts = Counts {
            visitors: number("totalUsers")?,
            visits,
            pageviews: number("screenPageViews")?,
            bounces,
            duration: number("userEngagementDuration")?,
        };
        if !report.has_bounces() {
            counts.bounces = 0;
            counts.duration = 0;
        }
        let get = |n: &str| dim(n).map_or("", |i| d[i].as_str());
        let mut values: [String; COLUMNS.len()] = Default::default();
        match report {
            Report::Visitors => {}
            Report::Sources => {
                values[col("source")] = source(get("sessionSource"), coarsen);
                values[col("utm_medium")] = tag(get("sessionMedium"));
                values[col("utm_campaign")] = tag(get("sessionCampaignName"));
                values[col("utm_content")] = tag(get("sessionManualAdContent"));
                values[col("utm_term")] = tag(get("sessionGoogleAdsKeyword"));
            }
            Report::Pages => {
                values[col("page")] = path(get("pagePath"));
                values[col("hostname")] = host(get("hostName"));
            }
            Report::EntryPages => values[col("entry_page")] = path(get("landingPage")),
            Report::Locations => {
                let country = match dim("countryId") {
                    Some(i) => country_code(&d[i]),
                    None => country_by_name(get("country")),
                };
                let country = match country {
                    Ok(c) => c,
                    Err(name) => {
                        parsed.unknown_countries.insert(name);
                        String::new()
                    }
                };
                let region = get("region");
                if !country.is_empty() && !missing(region) {
                    match crate::privacy::subdivision::index().code_for(&country, region) {
                        Some(code) => values[col("region")] = code.to_string(),
                        None => {
                            parsed
                                .unknown_regions
                                .insert(format!("{country}: {}", short(region)));
                        }
                    }
                }
                values[col("country")] = country;
                // `city` is read past: no city is stored.
            }
            Report::Devices => values[col("device")] = device(get("deviceCategory")),
            Report::Browsers => values[col("browser")] = browser(get("browser")),
            Report::OperatingSystems => {
                values[col("os")] = os(get("operatingSystem"));
                values[col("os_version")] = major(get("operatingSystemVersion"));
            }
        }
        parsed.rows.entry((day, values)).or_default().add(&counts);
    }
    Ok(parsed)
}

/// At most 60 characters of a value quoted in an error.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
        .ok()
}

/// A non-negative count; GA4 writes durations with decimals, rounded here.
fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let x: f64 = s.parse().ok()?;
    (x.is_finite() && (0.0..1e15).contains(&x)).then(|| x.round() as u64)
}

/// GA4's placeholders for no value (Plausible's `@missing_values`).
fn missing(s: &str) -> bool {
    matches!(
        s,
        "" | "(none)" | "(not set)" | "(not provided)" | "(other)" | "(data not available)"
    )
}

/// A campaign tag; GA4's own labels in parentheses (`(organic)`,
/// `(referral)`, `(direct)`) are no tag.
fn tag(s: &str) -> String {
    if missing(s) || (s.starts_with('(') && s.ends_with(')')) {
        String::new()
    } else {
        crate::privacy::url::redact(s)
    }
}

/// A session source as tamis names sources: direct as "Direct / None",
/// a known host by its name (the referrer list), another host as it is.
fn source(s: &str, coarsen: &Coarsen) -> String {
    let s = s.trim();
    if missing(s) || s == "(direct)" {
        return coarsen.referrers.classify(None, &[]).source;
    }
    // GA4 names search engines without a domain ("google"), as
    // Plausible's `parse_referrer` knows them; other sources are hosts.
    match s {
        "google" => return "Google".into(),
        "bing" => return "Bing".into(),
        "duckduckgo" => return "DuckDuckGo".into(),
        _ => {}
    }
    let host = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    if !host.contains('.') {
        return tag(s);
    }
    let r = coarsen
        .referrers
        .classify(Some(&format!("https://{host}")), &[]);
    if r.host.is_empty() {
        tag(s)
    } else {
        r.source
    }
}

/// A page path: no query or fragment, personal-looking parts redacted.
fn path(s: &str) -> String {
    if missing(s) {
        return String::new();
    }
    let p = s.split(['?', '#']).next().unwrap_or("");
    let p = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    };
    crate::privacy::url::redact(&p)
}

fn host(s: &str) -> String {
    if missing(s) {
        return String::new();
    }
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    h.strip_prefix("www.").map(str::to_string).unwrap_or(h)
}

fn country_code(s: &str) -> Result<String, String> {
    if missing(s) {
        return Ok(String::new());
    }
    let code = s.trim().to_ascii_uppercase();
    if crate::query::labels::Names::Country.is_code(&code) {
        Ok(code)
    } else {
        Err(short(s))
    }
}

/// GA4's English country names that ISO 3166-1's common names do not
/// match.
const COUNTRY_ALIASES: [(&str, &str); 10] = [
    ("united states", "US"),
    ("south korea", "KR"),
    ("north korea", "KP"),
    ("russia", "RU"),
    ("vietnam", "VN"),
    ("türkiye", "TR"),
    ("turkey", "TR"),
    ("czechia", "CZ"),
    ("côte d’ivoire", "CI"),
    ("myanmar (burma)", "MM"),
];

fn country_by_name(s: &str) -> Result<String, String> {
    if missing(s) {
        return Ok(String::new());
    }
    let lower = s.trim().to_lowercase();
    if let Some((_, code)) = COUNTRY_ALIASES.iter().find(|(n, _)| *n == lower) {
        return Ok(code.to_string());
    }
    crate::query::labels::country_code(&lower).ok_or_else(|| short(s))
}

fn device(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "desktop" => "Desktop".into(),
        "mobile" => "Mobile".into(),
        "tablet" => "Tablet".into(),
        _ => String::new(),
    }
}

/// GA4's browser names as Plausible stores them (Plausible's
/// `@browser_google_to_plausible`, and tamis's names in `privacy::agent`).
fn browser(s: &str) -> String {
    match s {
        _ if missing(s) => String::new(),
        "User-Agent:Opera" => "Opera".into(),
        "Mozilla Compatible Agent" | "Android Webview" | "Android Browser" | "Safari (in-app)" => {
            "Mobile App".into()
        }
        "User-Agent: Mozilla" => "Firefox".into(),
        "Edge" => "Microsoft Edge".into(),
        "Samsung Internet" => "Samsung Browser".into(),
        other => other.to_string(),
    }
}

/// GA4's OS names as Plausible stores them (`@os_google_to_plausible`).
fn os(s: &str) -> String {
    match s {
        _ if missing(s) => String::new(),
        "Macintosh" => "Mac".into(),
        "Linux" => "GNU/Linux".into(),
        other => other.to_string(),
    }
}

/// An OS version's major part only, as tamis stores it.
fn major(s: &str) -> String {
    if missing(s) {
        return String::new();
    }
    s.split(['.', ' ']).next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coarsen() -> Coarsen {
        Coarsen::new().expect("referrer list")
    }

    /// A row as the tests expect it: day, (column, value) pairs, counts.
    type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], Counts);

    fn check(file: &str, text: &str, expected: Result<Vec<Want<'_>>, &str>) {
        let got = parse(file, text.as_bytes(), &coarsen());
        match (got, expected) {
            (Ok(p), Ok(rows)) => {
                let want: BTreeMap<(NaiveDate, [String; COLUMNS.len()]), Counts> = rows
                    .into_iter()
                    .map(|(day, values, counts)| {
                        let mut v: [String; COLUMNS.len()] = Default::default();
                        for (c, x) in values {
                            v[col(c)] = x.to_string();
                        }
                        ((parse_day(day).unwrap(), v), counts)
                    })
                    .collect();
                assert_eq!(p.rows, want, "{text}");
            }
            (Err(e), Err(message)) => assert_eq!(e.to_string(), message, "{text}"),
            (got, _) => panic!("{text}: got {got:?}"),
        }
    }

    fn counts(visitors: u64, visits: u64, pageviews: u64, bounces: u64, duration: u64) -> Counts {
        Counts {
            visitors,
            visits,
            pageviews,
            bounces,
            duration,
        }
    }

    /// The response shape of the Data API's `properties.runReport`
    /// (developers.google.com/analytics/devguides/reporting/data/v1/rest/v1beta/RunReportResponse):
    /// `dimensionHeaders[].name`, `metricHeaders[].{name,type}`,
    /// `rows[].dimensionValues[].value`, `rows[].metricValues[].value`,
    /// with the metrics Plausible's importer asks for
    /// (`lib/plausible/google/ga4/report_request.ex`, `bounces = sessions -
    /// engagedSessions` answered under the name `bounces`).
    #[test]
    fn run_report_json_by_date_and_by_region() {
        check(
            "visitors.json",
            r#"{"dimensionHeaders":[{"name":"date"}],
                "metricHeaders":[{"name":"totalUsers","type":"TYPE_INTEGER"},{"name":"screenPageViews","type":"TYPE_INTEGER"},{"name":"bounces","type":"TYPE_INTEGER"},{"name":"sessions","type":"TYPE_INTEGER"},{"name":"userEngagementDuration","type":"TYPE_SECONDS"}],
                "rows":[{"dimensionValues":[{"value":"20250102"}],"metricValues":[{"value":"10"},{"value":"30"},{"value":"4"},{"value":"12"},{"value":"600.4"}]}],
                "rowCount":1,"metadata":{"currencyCode":"CAD","timeZone":"America/Toronto"},"kind":"analyticsData#runReport"}"#,
            Ok(vec![("20250102", &[], counts(10, 12, 30, 4, 600))]),
        );
        // Cities merge into their region; region names become ISO codes.
        check(
            "locations.json",
            r#"{"reports":[{"dimensionHeaders":[{"name":"date"},{"name":"countryId"},{"name":"region"},{"name":"city"}],
                "metricHeaders":[{"name":"screenPageViews"},{"name":"totalUsers"},{"name":"sessions"},{"name":"engagedSessions"},{"name":"userEngagementDuration"}],
                "rows":[
                 {"dimensionValues":[{"value":"20250102"},{"value":"CA"},{"value":"Quebec"},{"value":"Montreal"}],"metricValues":[{"value":"5"},{"value":"3"},{"value":"4"},{"value":"1"},{"value":"60"}]},
                 {"dimensionValues":[{"value":"20250102"},{"value":"CA"},{"value":"Quebec"},{"value":"Gatineau"}],"metricValues":[{"value":"2"},{"value":"2"},{"value":"2"},{"value":"2"},{"value":"30"}]},
                 {"dimensionValues":[{"value":"20250102"},{"value":"(not set)"},{"value":"(not set)"},{"value":"(not set)"}],"metricValues":[{"value":"1"},{"value":"1"},{"value":"1"},{"value":"0"},{"value":"0"}]}]}]}"#,
            Ok(vec![
                (
                    "20250102",
                    &[("country", "CA"), ("region", "CA-QC")],
                    counts(5, 6, 7, 3, 90),
                ),
                ("20250102", &[], counts(1, 1, 1, 1, 0)),
            ]),
        );
    }

    /// GA4's "Export → CSV" (Reports → Share this report → Download file →
    /// CSV): `#` comment lines naming the report, property and dates,
    /// then the table with the interface's column titles.
    #[test]
    fn ga4_csv_export_with_comments_and_titles() {
        check(
            "pages.csv",
            "# ----------------------------------------\n# Pages and screens: Page path and screen class\n# Account: Ville\n# Property: www.ville.example\n# ----------------------------------------\n#\n# All Users\n# Start date: 20250101\n# End date: 20250131\nDate,Hostname,Page path and screen class,Total users,Views,Sessions\n20250103,www.ville.example,/permis?id=12,4,9,5\n20250103,ville.example,/contact/jean.tremblay@example.com,2,2,2\n",
            Ok(vec![
                ("20250103", &[("hostname", "ville.example"), ("page", "/permis")], counts(4, 5, 9, 0, 0)),
                ("20250103", &[("hostname", "ville.example"), ("page", "/contact/[email]")], counts(2, 2, 2, 0, 0)),
            ]),
        );
        check(
            "devices.csv",
            "# Tech details\n\nDate,Device category,Total users,Views,Sessions,Engaged sessions,User engagement\n20250104,desktop,8,20,9,6,300\n20250104,smart tv,1,1,1,0,0\nGrand total,,9,21,10,6,300\n",
            Ok(vec![
                ("20250104", &[("device", "Desktop")], counts(8, 9, 20, 3, 300)),
                ("20250104", &[], counts(1, 1, 1, 1, 0)),
            ]),
        );
    }

    #[test]
    fn bad_files_name_file_row_and_field() {
        check(
            "v.json",
            r#"{"dimensionHeaders":[{"name":"date"}],"metricHeaders":[{"name":"totalUsers"},{"name":"screenPageViews"},{"name":"sessions"},{"name":"bounces"},{"name":"userEngagementDuration"}],
                "rows":[{"dimensionValues":[{"value":"20250102"}],"metricValues":[{"value":"1"},{"value":"1"},{"value":"1"},{"value":"0"},{"value":"0"}]},
                        {"dimensionValues":[{"value":"20250103"}],"metricValues":[{"value":"1"},{"value":"-3"},{"value":"1"},{"value":"0"},{"value":"0"}]}]}"#,
            Err("v.json: rows[1], field `screenPageViews`: `-3` is not a count"),
        );
        check(
            "v.csv",
            "Date,Total users,Views,Sessions,Bounces,User engagement\n20250102,1,1,1,0,0\n2025-13-40,1,1,1,0,0\n",
            Err("v.csv: line 3, field `Date`: `2025-13-40` is not a date (YYYYMMDD)"),
        );
        check(
            "v.csv",
            "Date,Total users,Views,Sessions,Bounces\n20250102,1,1,1,0\n",
            Err("v.csv: header, field `userEngagementDuration`: missing: the visitors report needs it"),
        );
        check(
            "x.json",
            r#"{"dimensionHeaders":[{"name":"date"},{"name":"pagePath"},{"name":"browser"}],"metricHeaders":[],"rows":[]}"#,
            Err("x.json: header, field `browser`: one report per file: this one mixes pages and browsers"),
        );
    }

    #[test]
    fn values_coarsened_to_what_tamis_stores() {
        let c = coarsen();
        assert_eq!(source("(direct)", &c), "Direct / None");
        assert_eq!(source("google", &c), "Google");
        assert_eq!(tag("(organic)"), "");
        assert_eq!(browser("Edge"), "Microsoft Edge");
        assert_eq!(os("Macintosh"), "Mac");
        assert_eq!(major("17.1.2"), "17");
        assert_eq!(country_by_name("Canada"), Ok("CA".to_string()));
        assert_eq!(country_by_name("United States"), Ok("US".to_string()));
        assert_eq!(country_by_name("Atlantis"), Err("Atlantis".to_string()));
    }
}
