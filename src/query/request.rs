//! The Stats API v2 request, validated: every name checked against an
//! allow-list and every value bounded before any SQL is built.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

use crate::aggregate::hour::local_hour_start;
use crate::goal::Goal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    ViewsPerVisit,
    BounceRate,
    VisitDuration,
    Events,
    Percentage,
    /// Shares of all hits received, in percent, by consent state: granted,
    /// denied (counted anonymously or dropped), unset, and opted out
    /// (counted anonymously or dropped).
    ConsentRate,
    ConsentDeniedRate,
    ConsentUnsetRate,
    OptOutRate,
    /// Visitors who reached the goals, in percent of all visitors (the
    /// query without its goal filters).
    ConversionRate,
    /// The same within each row's group: in percent of the visitors with
    /// the row's other dimension values.
    GroupConversionRate,
    /// Visits that ended on the page, in percent of its pageviews (with
    /// `visit:exit_page` only).
    ExitRate,
    /// Seconds a page was engaged (visible and focused), on average over
    /// the (visit, page) pairs that reported engaged time.
    TimeOnPage,
    /// The deepest scroll of a page, in percent, on average over the
    /// (visit, page) pairs that reported one.
    ScrollDepth,
}

impl Metric {
    pub const ALL: [Metric; 17] = [
        Metric::Visitors,
        Metric::Visits,
        Metric::Pageviews,
        Metric::ViewsPerVisit,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::Events,
        Metric::Percentage,
        Metric::ConsentRate,
        Metric::ConsentDeniedRate,
        Metric::ConsentUnsetRate,
        Metric::OptOutRate,
        Metric::ConversionRate,
        Metric::GroupConversionRate,
        Metric::ExitRate,
        Metric::TimeOnPage,
        Metric::ScrollDepth,
    ];

    fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::Events => "events",
            Metric::Percentage => "percentage",
            Metric::ConsentRate => "consent_rate",
            Metric::ConsentDeniedRate => "consent_denied_rate",
            Metric::ConsentUnsetRate => "consent_unset_rate",
            Metric::OptOutRate => "opt_out_rate",
            Metric::ConversionRate => "conversion_rate",
            Metric::GroupConversionRate => "group_conversion_rate",
            Metric::ExitRate => "exit_rate",
            Metric::TimeOnPage => "time_on_page",
            Metric::ScrollDepth => "scroll_depth",
        }
    }

    pub fn is_conversion(self) -> bool {
        matches!(self, Metric::ConversionRate | Metric::GroupConversionRate)
    }

    /// Metrics of whole visits, which the hourly aggregates hold on the
    /// visit's rows, not on the events a goal picks out.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Metric::Visits | Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
        )
    }

    /// Metrics Plausible reads from its sessions table alone
    /// (`TableDecider`'s `metric_partitioner`): they describe whole visits,
    /// which an event dimension other than `event:page` would split.
    pub fn is_session_only(self) -> bool {
        matches!(
            self,
            Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
        )
    }

    pub fn is_consent(self) -> bool {
        matches!(
            self,
            Metric::ConsentRate
                | Metric::ConsentDeniedRate
                | Metric::ConsentUnsetRate
                | Metric::OptOutRate
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Page,
    Name,
    /// `event:goal`: the site's goals each event reaches.
    Goal,
    EntryPage,
    ExitPage,
    Source,
    Referrer,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmContent,
    UtmTerm,
    Country,
    Region,
    /// `visit:country_name`: the country's English name, read from the
    /// stored code (`super::labels`).
    CountryName,
    /// `visit:region_name`: the region's English name, likewise.
    RegionName,
    /// `visit:channel`: the acquisition channel, computed when read from
    /// the stored source and campaign tags (`super::channel`).
    Channel,
    Browser,
    BrowserVersion,
    Os,
    /// `visit:os_version`: the OS's major version only (privacy rules).
    OsVersion,
    /// `event:hostname`: the page's host, without `www.`.
    Hostname,
    Device,
    Language,
    Consent,
    /// `event:props:<key>`: the key is the query's `prop_key`.
    Prop,
    Hour,
    Day,
    Week,
    Month,
}

impl Dimension {
    pub const ALL: [Dimension; 30] = [
        Dimension::Page,
        Dimension::Name,
        Dimension::Goal,
        Dimension::EntryPage,
        Dimension::ExitPage,
        Dimension::Source,
        Dimension::Referrer,
        Dimension::UtmSource,
        Dimension::UtmMedium,
        Dimension::UtmCampaign,
        Dimension::UtmContent,
        Dimension::UtmTerm,
        Dimension::Country,
        Dimension::Region,
        Dimension::CountryName,
        Dimension::RegionName,
        Dimension::Channel,
        Dimension::Browser,
        Dimension::BrowserVersion,
        Dimension::Os,
        Dimension::OsVersion,
        Dimension::Hostname,
        Dimension::Device,
        Dimension::Language,
        Dimension::Consent,
        Dimension::Prop,
        Dimension::Hour,
        Dimension::Day,
        Dimension::Week,
        Dimension::Month,
    ];

    fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL
            .into_iter()
            .filter(|d| *d != Dimension::Prop)
            .find(|d| d.name() == s)
    }

    /// What property queries can be broken down or filtered by.
    fn works_with_props(self) -> bool {
        matches!(
            self,
            Dimension::Prop | Dimension::Name | Dimension::Page | Dimension::Goal
        ) || self.is_time()
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Page => "event:page",
            Dimension::Name => "event:name",
            Dimension::Goal => "event:goal",
            Dimension::EntryPage => "visit:entry_page",
            Dimension::ExitPage => "visit:exit_page",
            Dimension::Source => "visit:source",
            Dimension::Referrer => "visit:referrer",
            Dimension::UtmSource => "visit:utm_source",
            Dimension::UtmMedium => "visit:utm_medium",
            Dimension::UtmCampaign => "visit:utm_campaign",
            Dimension::UtmContent => "visit:utm_content",
            Dimension::UtmTerm => "visit:utm_term",
            Dimension::Country => "visit:country",
            Dimension::Region => "visit:region",
            Dimension::CountryName => "visit:country_name",
            Dimension::RegionName => "visit:region_name",
            Dimension::Channel => "visit:channel",
            Dimension::Browser => "visit:browser",
            Dimension::BrowserVersion => "visit:browser_version",
            Dimension::Os => "visit:os",
            Dimension::OsVersion => "visit:os_version",
            Dimension::Hostname => "event:hostname",
            Dimension::Device => "visit:device",
            Dimension::Language => "visit:language",
            Dimension::Consent => "visit:consent",
            Dimension::Prop => "event:props",
            Dimension::Hour => "time:hour",
            Dimension::Day => "time:day",
            Dimension::Week => "time:week",
            Dimension::Month => "time:month",
        }
    }

    pub fn is_time(self) -> bool {
        matches!(
            self,
            Dimension::Hour | Dimension::Day | Dimension::Week | Dimension::Month
        )
    }

    /// Campaign dimensions exist only for sites that collect campaigns.
    pub fn is_campaign(self) -> bool {
        matches!(
            self,
            Dimension::UtmSource
                | Dimension::UtmMedium
                | Dimension::UtmCampaign
                | Dimension::UtmContent
                | Dimension::UtmTerm
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Is,
    IsNot,
    Contains,
    ContainsNot,
    Matches,
    MatchesNot,
}

impl FilterOp {
    pub fn name(self) -> &'static str {
        match self {
            FilterOp::Is => "is",
            FilterOp::IsNot => "is_not",
            FilterOp::Contains => "contains",
            FilterOp::ContainsNot => "contains_not",
            FilterOp::Matches => "matches",
            FilterOp::MatchesNot => "matches_not",
        }
    }

    fn parse(s: &str) -> Option<FilterOp> {
        [
            FilterOp::Is,
            FilterOp::IsNot,
            FilterOp::Contains,
            FilterOp::ContainsNot,
            FilterOp::Matches,
            FilterOp::MatchesNot,
        ]
        .into_iter()
        .find(|op| op.name() == s)
    }

    /// Whether the filter keeps rows *outside* the named values: such a
    /// filter could single out the small group it excludes by difference.
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            FilterOp::IsNot | FilterOp::ContainsNot | FilterOp::MatchesNot
        )
    }
}

/// Plausible's filter tree: conditions combined with `and`, `or`, `not`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Condition {
        op: FilterOp,
        dimension: Dimension,
        values: Vec<String>,
        /// The `case_sensitive` modifier (a 4th element
        /// `{"case_sensitive": bool}`), when the request gave one; see
        /// [`Filter::ignores_case`].
        case_sensitive: Option<bool>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    /// The filter as the request wrote it (`query` names property keys).
    pub fn to_json(&self, query: &Query) -> Value {
        let all = |fs: &[Filter]| fs.iter().map(|f| f.to_json(query)).collect::<Vec<_>>();
        match self {
            Filter::Condition {
                op,
                dimension,
                values,
                case_sensitive,
            } => {
                let mut condition =
                    serde_json::json!([op.name(), query.dimension_name(*dimension), values]);
                if let (Some(c), Some(parts)) = (case_sensitive, condition.as_array_mut()) {
                    parts.push(serde_json::json!({ "case_sensitive": c }));
                }
                condition
            }
            Filter::And(fs) => serde_json::json!(["and", all(fs)]),
            Filter::Or(fs) => serde_json::json!(["or", all(fs)]),
            Filter::Not(f) => serde_json::json!(["not", f.to_json(query)]),
        }
    }

    /// Whether a condition compares without regard to case: `is` and
    /// `is_not` respect case unless `case_sensitive` is false, as in
    /// Plausible; `contains` and `contains_not` ignore case unless it is
    /// true (tamis's default, Plausible's is to respect it).
    pub fn ignores_case(op: FilterOp, case_sensitive: Option<bool>) -> bool {
        match op {
            FilterOp::Is | FilterOp::IsNot => case_sensitive == Some(false),
            FilterOp::Contains | FilterOp::ContainsNot => case_sensitive != Some(true),
            FilterOp::Matches | FilterOp::MatchesNot => false,
        }
    }

    /// Every dimension the tree names.
    pub fn dimensions(&self) -> Vec<Dimension> {
        match self {
            Filter::Condition { dimension, .. } => vec![*dimension],
            Filter::And(fs) | Filter::Or(fs) => fs.iter().flat_map(Filter::dimensions).collect(),
            Filter::Not(f) => f.dimensions(),
        }
    }

    /// Whether the tree excludes something (a negative condition, or any
    /// `not`).
    pub fn excludes(&self) -> bool {
        match self {
            Filter::Condition { op, .. } => op.is_negative(),
            Filter::And(fs) | Filter::Or(fs) => fs.iter().any(Filter::excludes),
            Filter::Not(_) => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub site_id: String,
    /// The custom property key of `event:props:<key>` (dimension or filter);
    /// such a query reads the property aggregates.
    pub prop_key: Option<String>,
    pub metrics: Vec<Metric>,
    pub dimensions: Vec<Dimension>,
    pub filters: Vec<Filter>,
    /// The half-open interval queried, and how the request named it.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub order_by: Vec<(String, bool)>,
    pub limit: usize,
    pub offset: usize,
    pub include_totals: bool,
    pub include_time_labels: bool,
    /// `include.total_rows`: the number of rows before pagination, in
    /// `meta.total_rows`.
    pub include_total_rows: bool,
    /// `include.imports`: imported days added where they answer the query
    /// (`super::imported`), said in `meta.imports_included`.
    pub include_imports: bool,
    pub csv: bool,
    /// The site's goals, which `event:goal` values name.
    pub goals: Vec<Goal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    site_id: String,
    metrics: Vec<String>,
    date_range: Value,
    /// The day named ranges count from (see [`reference_day`]).
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    order_by: Vec<(String, String)>,
    #[serde(default)]
    include: Include,
    #[serde(default)]
    pagination: Option<Pagination>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    #[serde(default)]
    totals: bool,
    #[serde(default)]
    time_labels: bool,
    #[serde(default)]
    imports: bool,
    #[serde(default)]
    total_rows: bool,
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
const MAX_FILTER_DEPTH: usize = 4;
const MAX_CONDITIONS: usize = 20;

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
/// is validated against the site's settings.
pub fn site_id(body: &[u8]) -> Result<String, RequestError> {
    #[derive(Deserialize)]
    struct Only {
        site_id: Option<Value>,
    }
    let only: Only = serde_json::from_slice(body).map_err(|_| bad("body", "not a JSON object"))?;
    match only.site_id {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 253 => Ok(id),
        Some(_) => Err(bad("site_id", "must be a site id string")),
        None => Err(bad("site_id", "is required")),
    }
}

/// What the request may use of the site's settings.
pub struct SiteView {
    pub timezone: Tz,
    pub campaigns: bool,
    pub prop_keys: Vec<String>,
    pub goals: Vec<Goal>,
}

impl SiteView {
    /// The view of a configured site: its property keys in name order.
    pub fn of(site: &crate::config::SiteSettings) -> SiteView {
        let mut prop_keys: Vec<String> = site.prop_keys.iter().cloned().collect();
        prop_keys.sort();
        SiteView {
            timezone: site.timezone,
            campaigns: site.collect_campaigns,
            prop_keys,
            goals: site.goals.clone(),
        }
    }
}

impl Query {
    /// The query as its conversion rates' denominators read it: without
    /// its `event:goal` filters and dimension (see [`Metric::ConversionRate`]).
    pub fn without_goals(&self) -> Query {
        Query {
            filters: self
                .filters
                .iter()
                .filter(|f| !f.dimensions().contains(&Dimension::Goal))
                .cloned()
                .collect(),
            dimensions: self
                .dimensions
                .iter()
                .copied()
                .filter(|d| *d != Dimension::Goal)
                .collect(),
            ..self.clone()
        }
    }

    /// The query as a cell's complement is counted against: without any
    /// filter and without the `event:goal` dimension. What it counts and
    /// a cell does not is what the cell's filters or goal leave out.
    pub fn whole(&self) -> Query {
        Query {
            filters: Vec::new(),
            ..self.without_goals()
        }
    }

    /// The order the answer's rows are in, as Plausible's query echoes it:
    /// the request's `order_by`, or else the time dimension ascending, then
    /// the first metric descending (what `mod.rs`'s `order` applies).
    pub fn order_by_applied(&self) -> Vec<(String, bool)> {
        if !self.order_by.is_empty() {
            return self.order_by.clone();
        }
        let time = self.dimensions.iter().find(|d| d.is_time());
        time.map(|d| (self.dimension_name(*d), true))
            .into_iter()
            .chain(self.metrics.first().map(|m| (m.name().to_string(), false)))
            .collect()
    }

    /// A dimension's name as the request wrote it.
    pub fn dimension_name(&self, d: Dimension) -> String {
        match (d, &self.prop_key) {
            (Dimension::Prop, Some(key)) => format!("event:props:{key}"),
            _ => d.name().to_string(),
        }
    }
}

pub fn parse(body: &[u8], site: &SiteView, now: DateTime<Utc>) -> Result<Query, RequestError> {
    let wire = read_wire(body)?;
    let metrics = metrics(&wire)?;
    let mut prop_key = None;
    let mut dimensions = dimensions(&wire, site, &mut prop_key)?;
    if metrics.contains(&Metric::Percentage) && dimensions.is_empty() {
        return Err(bad("metrics", "percentage needs a dimension"));
    }
    if metrics.iter().any(|m| m.is_consent())
        && (!wire.filters.is_empty() || dimensions.iter().any(|d| !d.is_time()))
    {
        return Err(bad(
            "metrics",
            "consent rates are shares of all hits: only time dimensions, no filters",
        ));
    }
    let filters = filters(&wire, site, &mut prop_key)?;
    hostname_filters_fit(&filters)?;
    engagement_fits(&metrics, &dimensions, &filters)?;
    metrics_fit(&metrics, &dimensions, &filters, prop_key.as_deref())?;
    goals_fit(&metrics, &dimensions, &filters)?;
    if prop_key.is_some() {
        props_fit(&metrics, &dimensions, &filters)?;
    }
    let today = wire.date.as_deref().map(reference_day).transpose()?;
    let (from, to) = date_range(&wire.date_range, site.timezone, now, today)?;
    time_fits(&wire, &mut dimensions, from, to)?;
    let order_by = order_by(&wire, &metrics, &dimensions)?;
    let (limit, offset) = pagination(&wire)?;
    let csv = match wire.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad("format", "must be json or csv")),
    };
    if wire.include.time_labels && !dimensions.iter().any(|d| d.is_time()) {
        return Err(bad("include", "time_labels needs a time dimension"));
    }
    Ok(Query {
        prop_key,
        site_id: wire.site_id,
        metrics,
        dimensions,
        filters,
        from,
        to,
        order_by,
        limit,
        offset,
        include_totals: wire.include.totals,
        include_time_labels: wire.include.time_labels,
        include_total_rows: wire.include.total_rows,
        include_imports: wire.include.imports,
        csv,
        goals: site.goals.clone(),
    })
}

/// The body as JSON of the query's shape, or a refusal naming the field
/// serde could not read.
fn read_wire(body: &[u8]) -> Result<Wire, RequestError> {
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        // Name the unknown or missing field when serde says which.
        let field = text.split('`').nth(1).map(|f| f.to_string());
        bad(
            "body",
            match field {
                Some(f)
                    if !f.is_empty()
                        && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    format!("problem with field `{f}`")
                }
                _ => format!(
                    "not a valid query at line {} column {}",
                    e.line(),
                    e.column()
                ),
            },
        )
    })
}

/// `metrics`: known names, each once.
fn metrics(wire: &Wire) -> Result<Vec<Metric>, RequestError> {
    if wire.metrics.is_empty() {
        return Err(bad("metrics", "at least one metric is required"));
    }
    // Plausible's query_parser_test.exs, "same metric queried multiple times",
    // and query_validations_test.exs, "validates a metric can't be asked
    // multiple times": its query schema's `uniqueItems`, in its words.
    if wire
        .metrics
        .iter()
        .enumerate()
        .any(|(i, m)| wire.metrics[..i].contains(m))
    {
        return Err(bad(
            "metrics",
            "Expected items to be unique but they were not.",
        ));
    }
    if wire.metrics.len() > Metric::ALL.len() {
        return Err(bad("metrics", "too many metrics"));
    }
    wire.metrics
        .iter()
        .map(|m| {
            Metric::parse(m)
                // Plausible's words (query_validations_test.exs, "fails
                // when an invalid metric is provided").
                .ok_or_else(|| bad("metrics", format!("Invalid metric \"{}\"", printable(m))))
        })
        .collect()
}

/// `dimensions`: known names, each once, at most 4, one of time.
fn dimensions(
    wire: &Wire,
    site: &SiteView,
    prop_key: &mut Option<String>,
) -> Result<Vec<Dimension>, RequestError> {
    let mut dimensions = Vec::new();
    for d in &wire.dimensions {
        let dimension = dimension(d, site, prop_key).map_err(|p| bad("dimensions", p))?;
        if dimensions.contains(&dimension) {
            return Err(bad(
                "dimensions",
                format!("`{}` is listed twice", dimension.name()),
            ));
        }
        dimensions.push(dimension);
    }
    if dimensions.len() > 4 {
        return Err(bad("dimensions", "at most 4 dimensions"));
    }
    if dimensions.iter().filter(|d| d.is_time()).count() > 1 {
        return Err(bad("dimensions", "at most one time dimension"));
    }
    Ok(dimensions)
}

/// `filters`, within the bounds on conditions and pattern bytes.
fn filters(
    wire: &Wire,
    site: &SiteView,
    prop_key: &mut Option<String>,
) -> Result<Vec<Filter>, RequestError> {
    let mut conditions = 0;
    let mut pattern_bytes = 0;
    wire.filters
        .iter()
        .map(|f| parse_filter(f, site, 0, &mut conditions, &mut pattern_bytes, prop_key))
        .collect()
}

/// Plausible's query_parser.ex (`validate_toplevel_only_filter_dimension`):
/// a condition on `event:hostname` stands at the top level of filters.
fn hostname_filters_fit(filters: &[Filter]) -> Result<(), RequestError> {
    let nested = filters.iter().any(|f| match f {
        Filter::Condition { .. } => false,
        _ => f.dimensions().contains(&Dimension::Hostname),
    });
    if nested {
        return Err(bad(
            "filters",
            "Invalid filters. Dimension `event:hostname` can only be filtered at the top level.",
        ));
    }
    Ok(())
}

/// Plausible's query_parser.ex (`validate_metric(:scroll_depth | :time_on_page, …)`):
/// the engagement of pages is read by page, with an `event:page`
/// dimension or filter (for `scroll_depth`, a filter at the top level).
fn engagement_fits(
    metrics: &[Metric],
    dimensions: &[Dimension],
    filters: &[Filter],
) -> Result<(), RequestError> {
    let page_dimension = dimensions.contains(&Dimension::Page);
    for m in metrics {
        let fits = match m {
            Metric::ScrollDepth => filters.iter().any(|f| {
                matches!(
                    f,
                    Filter::Condition {
                        dimension: Dimension::Page,
                        ..
                    }
                )
            }),
            Metric::TimeOnPage => filters
                .iter()
                .any(|f| f.dimensions().contains(&Dimension::Page)),
            _ => continue,
        };
        if !page_dimension && !fits {
            return Err(bad(
                "metrics",
                format!(
                    "Metric `{}` can only be queried with event:page filters or dimensions.",
                    m.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Conversion rates need goals, kept apart from other filters so their
/// denominators can leave them out; session metrics do not go with goals.
fn goals_fit(
    metrics: &[Metric],
    dimensions: &[Dimension],
    filters: &[Filter],
) -> Result<(), RequestError> {
    let goal_filtered = filters
        .iter()
        .any(|f| f.dimensions().contains(&Dimension::Goal));
    let goal_dimension = dimensions.contains(&Dimension::Goal);
    if let Some(m) = metrics.iter().find(|m| m.is_conversion()) {
        if !goal_dimension && !goal_filtered {
            return Err(bad(
                "metrics",
                format!(
                    "Metric `{}` can only be queried with event:goal filters or dimensions.",
                    m.name()
                ),
            ));
        }
        // Their denominators are the query without its goal filters: a
        // goal nested among other conditions cannot be taken out alone.
        if filters.iter().any(|f| {
            let names = f.dimensions();
            names.contains(&Dimension::Goal) && names.iter().any(|d| *d != Dimension::Goal)
        }) {
            return Err(bad(
                "filters",
                format!(
                    "Metric `{}` needs its event:goal filters apart from the others, at the top level of filters",
                    m.name()
                ),
            ));
        }
    }
    if goal_dimension || goal_filtered {
        if let Some(m) = metrics.iter().find(|m| m.is_session()) {
            return Err(bad(
                "metrics",
                format!(
                    "Session metric `{}` cannot be queried with event:goal: tamis keeps no list of a visit's events, so it cannot tell which visits reached a goal",
                    m.name()
                ),
            ));
        }
    }
    Ok(())
}

/// What a custom-property query combines with: property aggregates hold
/// events by name and page, visitors and events.
fn props_fit(
    metrics: &[Metric],
    dimensions: &[Dimension],
    filters: &[Filter],
) -> Result<(), RequestError> {
    if !dimensions.iter().all(|d| d.works_with_props())
        || !filters
            .iter()
            .all(|f| f.dimensions().iter().all(|d| d.works_with_props()))
    {
        return Err(bad(
            "dimensions",
            "event:props combines only with event:name, event:page, event:goal and time",
        ));
    }
    if !metrics
        .iter()
        .all(|m| matches!(m, Metric::Visitors | Metric::Events | Metric::Percentage))
    {
        return Err(bad(
            "metrics",
            "event:props queries take visitors, events and percentage",
        ));
    }
    Ok(())
}

/// `time` takes its granularity from the range, as Plausible does; hours
/// are limited to 31 days.
fn time_fits(
    wire: &Wire,
    dimensions: &mut [Dimension],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), RequestError> {
    let days = (to - from).num_hours() / 24;
    for d in dimensions.iter_mut() {
        if *d == Dimension::Hour && wire.dimensions.iter().any(|n| n == "time") {
            *d = if days <= 1 {
                Dimension::Hour
            } else if days <= 62 {
                Dimension::Day
            } else {
                Dimension::Month
            };
        }
    }
    if dimensions.contains(&Dimension::Hour) && days > 31 {
        return Err(bad(
            "dimensions",
            "time:hour is limited to ranges of 31 days",
        ));
    }
    Ok(())
}

/// `order_by`: requested metrics and dimensions, `asc` or `desc`.
fn order_by(
    wire: &Wire,
    metrics: &[Metric],
    dimensions: &[Dimension],
) -> Result<Vec<(String, bool)>, RequestError> {
    wire.order_by
        .iter()
        .map(|(field, dir)| {
            // A request that asked for `time` orders by `time` (Plausible's
            // query_test.exs, "timeseries with explicit order_by"): the
            // time dimension it was resolved to above.
            let resolved_time = (field == "time" && wire.dimensions.iter().any(|n| n == "time"))
                .then(|| dimensions.iter().find(|d| d.is_time()))
                .flatten();
            let field = &resolved_time.map_or_else(|| field.clone(), |d| d.name().to_string());
            let known = metrics.iter().any(|m| m.name() == field)
                || dimensions.iter().any(|d| {
                    d.name() == field
                        || (*d == Dimension::Prop && field.starts_with("event:props:"))
                });
            if !known {
                return Err(bad(
                    "order_by",
                    format!(
                        "`{}` is not a requested metric or dimension",
                        printable(field)
                    ),
                ));
            }
            match dir.as_str() {
                "asc" => Ok((field.clone(), true)),
                "desc" => Ok((field.clone(), false)),
                _ => Err(bad("order_by", "direction must be asc or desc")),
            }
        })
        .collect()
}

/// `pagination`: (limit, offset), within bounds.
fn pagination(wire: &Wire) -> Result<(usize, usize), RequestError> {
    Ok(match &wire.pagination {
        Some(p) if p.limit == 0 || p.limit > MAX_LIMIT => {
            return Err(bad("pagination", "limit must be 1 to 10000"))
        }
        Some(p) if p.offset > 1_000_000 => {
            return Err(bad("pagination", "offset is at most 1000000"))
        }
        Some(p) => (p.limit, p.offset),
        None => (default_limit(), 0),
    })
}

/// Plausible's refusals of metrics its tables cannot answer with the
/// query's dimensions or filters, word for word (`query_builder.ex`,
/// `validate_metric` and `TableDecider.validate_no_metrics_dimensions_conflict`).
/// tamis's hourly aggregates have the same limits: a visit's bounce, length
/// and pageviews are held on the rows of its visit, not on each event.
fn metrics_fit(
    metrics: &[Metric],
    dimensions: &[Dimension],
    filters: &[Filter],
    prop_key: Option<&str>,
) -> Result<(), RequestError> {
    let event_dimensions: Vec<String> = dimensions
        .iter()
        .filter(|d| d.name().starts_with("event:"))
        .map(|d| match (d, prop_key) {
            (Dimension::Prop, Some(key)) => format!("event:props:{key}"),
            _ => d.name().to_string(),
        })
        .collect();
    // query_builder.ex, `validate_metric(:exit_rate, …)`: exits are
    // counted per page, against all of its pageviews.
    if metrics.contains(&Metric::ExitRate) {
        if dimensions != [Dimension::ExitPage] {
            return Err(bad(
                "metrics",
                "Metric `exit_rate` requires a `\"visit:exit_page\"` dimension. No other dimensions are allowed.",
            ));
        }
        if filters.iter().any(|f| {
            f.dimensions()
                .iter()
                .any(|d| d.name().starts_with("event:"))
        }) {
            return Err(bad(
                "metrics",
                "Metric `exit_rate` cannot be queried when filtering on event dimensions.",
            ));
        }
    }
    // query_builder.ex, `validate_metric(:views_per_visit, …)`, checked
    // before the tables' conflicts as Plausible checks it.
    if metrics.contains(&Metric::ViewsPerVisit) {
        if filters
            .iter()
            .any(|f| f.dimensions().contains(&Dimension::Page))
        {
            return Err(bad(
                "metrics",
                "Metric `views_per_visit` cannot be queried with a filter on `event:page`.",
            ));
        }
        if !dimensions.is_empty() {
            return Err(bad(
                "metrics",
                "Metric `views_per_visit` cannot be queried with `dimensions`.",
            ));
        }
    }
    let session_only: Vec<&str> = metrics
        .iter()
        .filter(|m| m.is_session_only())
        .map(|m| m.name())
        .collect();
    // `event:page` alone splits visits by the pages they saw, which
    // Plausible (and tamis) answer.
    if !session_only.is_empty()
        && !event_dimensions.is_empty()
        && event_dimensions != ["event:page"]
    {
        return Err(bad(
            "metrics",
            format!(
                "Session metric(s) `{}` cannot be queried along with event dimension(s) `{}`",
                session_only.join(", "),
                event_dimensions.join(", ")
            ),
        ));
    }
    // Plausible's table_decider.ex: pageviews and events are counted per
    // event, entry and exit pages per visit.
    let event_only: Vec<&str> = metrics
        .iter()
        .filter(|m| matches!(m, Metric::Pageviews | Metric::Events))
        .map(|m| m.name())
        .collect();
    let session_dimensions: Vec<&str> = dimensions
        .iter()
        .filter(|d| matches!(d, Dimension::EntryPage | Dimension::ExitPage))
        .map(|d| d.name())
        .collect();
    if event_dimensions != ["event:page"]
        && !event_only.is_empty()
        && !session_dimensions.is_empty()
    {
        return Err(bad(
            "metrics",
            format!(
                "Event metric(s) `{}` cannot be queried along with session dimension(s) `{}`",
                event_only.join(", "),
                session_dimensions.join(", ")
            ),
        ));
    }
    Ok(())
}

fn dimension(
    name: &str,
    site: &SiteView,
    prop_key: &mut Option<String>,
) -> Result<Dimension, String> {
    if let Some(key) = name.strip_prefix("event:props:") {
        if !site.prop_keys.iter().any(|k| k == key) {
            return Err(format!(
                "`{}` is not an allow-listed property key of this site",
                printable(key)
            ));
        }
        match prop_key {
            Some(other) if other != key => return Err("one property key per query".into()),
            _ => *prop_key = Some(key.to_string()),
        }
        return Ok(Dimension::Prop);
    }
    if name == "time:minute" {
        return Err(
            "`time:minute` is not available: tamis stores hourly aggregates, never the minute of a hit; use time:hour"
                .into(),
        );
    }
    // `time` is resolved once the date range is known; Hour stands for it.
    let d = if name == "time" {
        Some(Dimension::Hour)
    } else {
        Dimension::parse(name)
    };
    if let Some(why) = not_stored(name) {
        return Err(format!("`{name}` is not available: {why}"));
    }
    match d {
        Some(d) if d.is_campaign() && !site.campaigns => {
            Err(format!("`{name}` needs collect_campaigns on this site"))
        }
        Some(d) => Ok(d),
        // Plausible's words (query_validations_test.exs, "validates that
        // dimensions are valid").
        None => Err(format!("Invalid dimension \"{}\"", printable(name))),
    }
}

/// Plausible dimensions tamis does not answer, and why: said plainly
/// rather than "unknown".
fn not_stored(name: &str) -> Option<&'static str> {
    match name {
        "visit:city" | "visit:city_name" => Some(
            "tamis locates visitors to their region at most (visit:region, visit:region_name), never their city",
        ),
        "visit:entry_page_hostname" | "visit:exit_page_hostname" => {
            Some("tamis does not store it in its aggregates (yet)")
        }
        _ => None,
    }
}

fn parse_filter(
    value: &Value,
    site: &SiteView,
    depth: usize,
    conditions: &mut usize,
    pattern_bytes: &mut usize,
    prop_key: &mut Option<String>,
) -> Result<Filter, RequestError> {
    let shape = || {
        bad("filters", "each filter is [operator, dimension, [values]], or [\"and\"|\"or\", [filters]], or [\"not\", filter]")
    };
    if depth > MAX_FILTER_DEPTH {
        return Err(bad("filters", "filters nest at most 4 deep"));
    }
    let parts = value.as_array().ok_or_else(shape)?;
    let op = parts.first().and_then(Value::as_str).ok_or_else(shape)?;
    match (op, parts.as_slice()) {
        ("and" | "or", [_, Value::Array(children)]) if !children.is_empty() => {
            let children = children
                .iter()
                .map(|c| parse_filter(c, site, depth + 1, conditions, pattern_bytes, prop_key))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(children)
            } else {
                Filter::Or(children)
            })
        }
        // Plausible's behavioral filters select visits by the events they
        // hold (query_builder.ex, `validate_behavioral_filters`).
        ("has_done" | "has_not_done", _) => Err(bad(
            "filters",
            "Behavioral filters (has_done, has_not_done) are not available: tamis keeps no list of a visit's events, so it cannot tell which visits did something",
        )),
        ("not", [_, child]) => Ok(Filter::Not(Box::new(parse_filter(
            child,
            site,
            depth + 1,
            conditions,
            pattern_bytes,
            prop_key,
        )?))),
        (_, [_, dimension_name, values, rest @ ..]) if rest.len() <= 1 => {
            let case_sensitive = match rest {
                [] => None,
                [modifiers] => Some(case_sensitive(modifiers)?),
                _ => return Err(shape()),
            };
            if case_sensitive.is_some() && matches!(op, "matches" | "matches_not") {
                // Plausible's query_builder.ex,
                // `validate_case_sensitive_filter_modifier`.
                return Err(bad(
                    "filters",
                    format!(
                        "Invalid filters. The case_sensitive modifier is not allowed with pattern operators ({})",
                        printable(&value.to_string())
                    ),
                ));
            }
            *conditions += 1;
            if *conditions > MAX_CONDITIONS {
                return Err(bad("filters", "at most 20 conditions"));
            }
            let op = FilterOp::parse(op)
                .ok_or_else(|| bad("filters", format!("unknown operator `{}`", printable(op))))?;
            let dimension = dimension_name
                .as_str()
                .ok_or_else(shape)
                .and_then(|n| dimension(n, site, prop_key).map_err(|p| bad("filters", p)))?;
            if dimension.is_time() {
                return Err(bad(
                    "filters",
                    "time dimensions are filtered with date_range",
                ));
            }
            // Plausible's query_parser.ex (`parse_clauses_list`): countries
            // are compared by their two-letter codes.
            if dimension == Dimension::Country
                && matches!(op, FilterOp::Is | FilterOp::IsNot)
                && values
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v.as_str().is_none_or(|c| c.chars().count() != 2))
            {
                return Err(bad(
                    "filters",
                    "Invalid visit:country filter, visit:country needs to be a valid 2-letter country code.",
                ));
            }
            if dimension == Dimension::Goal && matches!(op, FilterOp::Is | FilterOp::IsNot) {
                if let Some(v) = values
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .find(|v| !site.goals.iter().any(|g| g.name == *v))
                {
                    return Err(bad(
                        "filters",
                        format!(
                            "The goal `{}` is not configured for this site: add it as [[site.goal]] in tamis's configuration",
                            printable(v)
                        ),
                    ));
                }
            }
            let values = values
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= 100)
                .ok_or_else(|| bad("filters", "values must be a list of 1 to 100 strings"))?
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) if s.len() <= MAX_VALUE => Ok(s.to_string()),
                    _ => Err(bad(
                        "filters",
                        "values must be strings of at most 1024 bytes",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if matches!(op, FilterOp::Matches | FilterOp::MatchesNot) {
                for pattern in &values {
                    *pattern_bytes += pattern.len();
                    if *pattern_bytes > super::pattern::MAX_PATTERN_BYTES {
                        return Err(bad(
                            "filters",
                            format!(
                                "regular expressions of one query take at most {} bytes together",
                                super::pattern::MAX_PATTERN_BYTES
                            ),
                        ));
                    }
                    super::pattern::check(pattern).map_err(|why| bad("filters", why))?;
                }
            }
            Ok(Filter::Condition {
                op,
                dimension,
                values,
                case_sensitive,
            })
        }
        _ => Err(shape()),
    }
}

/// A filter's modifiers, `{"case_sensitive": bool}`, as Plausible's query
/// schema allows them (`filter_without_goals`, `filter_with_goals`).
fn case_sensitive(modifiers: &Value) -> Result<bool, RequestError> {
    match modifiers
        .as_object()
        .map(|m| (m.len(), m.get("case_sensitive")))
    {
        Some((1, Some(Value::Bool(c)))) => Ok(*c),
        _ => Err(bad(
            "filters",
            "a filter's 4th element is {\"case_sensitive\": true|false}",
        )),
    }
}

/// A named date range, as Plausible's query builder resolves it
/// (`lib/plausible/stats/query_builder.ex`, `build_datetime_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shorthand {
    /// The reference day.
    Day,
    /// The whole calendar month of the reference day, days to come included.
    Month,
    /// The whole calendar year of the reference day.
    Year,
    /// Every day up to the reference day.
    All,
    /// `Nd`: the N days before the reference day; the reference day itself
    /// is not part of it (Plausible's `{:last_n_days, n}`).
    LastDays(i64),
    /// `Nmo`: the N whole calendar months before the reference day's month.
    LastMonths(u32),
    /// `realtime`, `30m`, `24h`: the minutes before now, whatever the
    /// reference day.
    Window(i64),
}

/// Plausible's bounds on `Nd` and `Nmo` (`api_query_parser.ex`,
/// `parse_input_date_range`).
const MAX_LAST_DAYS: i64 = 5_000;
const MAX_LAST_MONTHS: u32 = 100;

fn shorthand(s: &str) -> Option<Shorthand> {
    let number = |digits: &str| {
        (!digits.is_empty() && digits.len() <= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<i64>().ok())
            .flatten()
    };
    match s {
        "day" => Some(Shorthand::Day),
        "month" => Some(Shorthand::Month),
        "year" => Some(Shorthand::Year),
        "all" => Some(Shorthand::All),
        // Plausible's dashboard windows: "realtime" is the last 5 minutes,
        // "30m" the last 30 (`build_datetime_range(:realtime | :realtime_30m)`),
        // "24h" the last 24 hours (`build_datetime_range(:"24h")`).
        "realtime" => Some(Shorthand::Window(5)),
        "30m" => Some(Shorthand::Window(30)),
        "24h" => Some(Shorthand::Window(24 * 60)),
        _ => {
            if let Some(n) = s.strip_suffix("mo").and_then(number) {
                return (1..=i64::from(MAX_LAST_MONTHS))
                    .contains(&n)
                    .then_some(Shorthand::LastMonths(n as u32));
            }
            let n = s.strip_suffix('d').and_then(number)?;
            (1..=MAX_LAST_DAYS)
                .contains(&n)
                .then_some(Shorthand::LastDays(n))
        }
    }
}

/// The `date` parameter: the day a request's named ranges count from,
/// instead of today in the site's zone (Plausible's `date`, which it takes
/// from its own dashboard only).
pub fn reference_day(value: &str) -> Result<NaiveDate, RequestError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=2105).contains(&d.year()))
        .ok_or_else(|| bad("date", format!("Invalid date '{}'.", printable(value))))
}

/// The half-open UTC interval of a date range, in the site's zone. Named
/// ranges count from `today` when given (the request's `date`), else from
/// the local day of `now`.
pub(crate) fn date_range(
    value: &Value,
    tz: Tz,
    now: DateTime<Utc>,
    today: Option<NaiveDate>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), RequestError> {
    let invalid = || {
        bad(
            "date_range",
            format!(
                "Invalid date range {}",
                printable(&value.to_string().replace(',', ", "))
            ),
        )
    };
    let range = match value {
        Value::String(s) => {
            let named = shorthand(s).ok_or_else(invalid)?;
            named_range(
                named,
                tz,
                now,
                today.unwrap_or(now.with_timezone(&tz).date_naive()),
            )
        }
        Value::Array(pair) if pair.len() == 2 => {
            let bound = |v: &Value, end: bool| -> Result<DateTime<Utc>, RequestError> {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad("date_range", "bounds are strings"))?;
                // Years outside what ClickHouse's DateTime holds are refused
                // before any date arithmetic.
                if !s
                    .get(..4)
                    .is_some_and(|y| y.parse::<u32>().is_ok_and(|y| (1970..=2105).contains(&y)))
                {
                    return Err(bad("date_range", "years are 1970 to 2105"));
                }
                if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                    return Ok(local_midnight(
                        if end { d + Duration::days(1) } else { d },
                        tz,
                    ));
                }
                if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                    return Ok(t.with_timezone(&Utc)
                        + if end {
                            Duration::seconds(1)
                        } else {
                            Duration::zero()
                        });
                }
                if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
                    let t = tz
                        .from_local_datetime(&t)
                        .earliest()
                        .ok_or_else(|| bad("date_range", "that local time does not exist"))?;
                    return Ok(t.with_timezone(&Utc)
                        + if end {
                            Duration::seconds(1)
                        } else {
                            Duration::zero()
                        });
                }
                Err(bad(
                    "date_range",
                    "bounds are YYYY-MM-DD dates or ISO 8601 date-times",
                ))
            };
            (bound(&pair[0], false)?, bound(&pair[1], true)?)
        }
        _ => return Err(invalid()),
    };
    if range.0 >= range.1 {
        return Err(bad("date_range", "from is after to"));
    }
    if range.0.timestamp() < 0 || range.1.timestamp() > i64::from(u32::MAX) {
        return Err(bad("date_range", "out of range"));
    }
    Ok(range)
}

fn named_range(
    named: Shorthand,
    tz: Tz,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let days = |first: NaiveDate, last: NaiveDate| {
        (
            local_midnight(first, tz),
            local_midnight(last + Duration::days(1), tz),
        )
    };
    let first_of_month = today.with_day(1).unwrap_or(today);
    let months_later =
        |d: NaiveDate, n: u32| d.checked_add_months(chrono::Months::new(n)).unwrap_or(d);
    let months_before =
        |d: NaiveDate, n: u32| d.checked_sub_months(chrono::Months::new(n)).unwrap_or(d);
    match named {
        Shorthand::Day => days(today, today),
        Shorthand::Month => days(
            first_of_month,
            months_later(first_of_month, 1) - Duration::days(1),
        ),
        Shorthand::Year => {
            let first = NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today);
            let last = NaiveDate::from_ymd_opt(today.year(), 12, 31).unwrap_or(today);
            days(first, last)
        }
        Shorthand::All => (
            DateTime::<Utc>::UNIX_EPOCH,
            local_midnight(today + Duration::days(1), tz),
        ),
        Shorthand::LastDays(n) => days(today - Duration::days(n), today - Duration::days(1)),
        Shorthand::LastMonths(n) => days(
            months_before(first_of_month, n),
            first_of_month - Duration::days(1),
        ),
        // Aggregates are hourly buckets of local hours: a window of minutes
        // is read as every hour bucket it overlaps, from the one holding its
        // first minute to the current one. The answer thus covers the window
        // and at most one hour more before it: "realtime" (5 minutes) reads 1
        // or 2 buckets, "30m" 1 or 2, "24h" 25 (24 on the hour).
        Shorthand::Window(minutes) => {
            let bucket = |t: DateTime<Utc>| {
                DateTime::from_timestamp(i64::from(local_hour_start(t, tz)), 0).unwrap_or(t)
            };
            (
                bucket(now - Duration::minutes(minutes)),
                bucket(now) + Duration::hours(1),
            )
        }
    }
}

/// The instant a local day starts. Days that start in a DST gap (a few
/// zones skip midnight) start at the first instant that exists.
pub fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::hours(h)))
                .earliest()
        })
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

    fn view() -> SiteView {
        SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: vec!["plan".into()],
            goals: vec![
                Goal::event("Signup", None).unwrap(),
                Goal::page("/merci*", Some("Merci")).unwrap(),
            ],
        }
    }

    /// Expected: the local first and last day of the range, or an error part.
    fn check(body: &str, expected: Result<(&str, &str), &str>) {
        let got = parse(body.as_bytes(), &view(), now());
        let tz = chrono_tz::America::Toronto;
        match (got, expected) {
            (Ok(q), Ok((first, last))) => {
                let first_got = q.from.with_timezone(&tz).date_naive().to_string();
                let last_got = (q.to - Duration::seconds(1))
                    .with_timezone(&tz)
                    .date_naive()
                    .to_string();
                assert_eq!(
                    (first_got.as_str(), last_got.as_str()),
                    (first, last),
                    "{body}"
                );
            }
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e} lacks {want}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    fn range(r: &str) -> String {
        format!(r#"{{"site_id":"a","metrics":["visitors"],"date_range":{r}}}"#)
    }

    /// Plausible's query_builder.ex (`build_datetime_range`): `Nd` ends
    /// yesterday, `Nmo` ends with last month, `month` and `year` are whole
    /// calendar ones; tested as query_parser_test.exs does ("date_range").
    #[test]
    fn date_ranges_in_the_site_zone() {
        check(&range(r#""day""#), Ok(("2026-11-23", "2026-11-23")));
        check(&range(r#""1d""#), Ok(("2026-11-22", "2026-11-22")));
        check(&range(r#""7d""#), Ok(("2026-11-16", "2026-11-22")));
        check(&range(r#""28d""#), Ok(("2026-10-26", "2026-11-22")));
        check(&range(r#""30d""#), Ok(("2026-10-24", "2026-11-22")));
        check(&range(r#""91d""#), Ok(("2026-08-24", "2026-11-22")));
        check(&range(r#""5000d""#), Ok(("2013-03-16", "2026-11-22")));
        check(&range(r#""month""#), Ok(("2026-11-01", "2026-11-30")));
        check(&range(r#""1mo""#), Ok(("2026-10-01", "2026-10-31")));
        check(&range(r#""6mo""#), Ok(("2026-05-01", "2026-10-31")));
        check(&range(r#""12mo""#), Ok(("2025-11-01", "2026-10-31")));
        check(&range(r#""100mo""#), Ok(("2018-07-01", "2026-10-31")));
        check(&range(r#""year""#), Ok(("2026-01-01", "2026-12-31")));
        check(
            &range(r#"["2026-01-01","2026-01-31"]"#),
            Ok(("2026-01-01", "2026-01-31")),
        );
        check(
            &range(r#"["2026-01-01T08:00:00-05:00","2026-01-01T17:59:59-05:00"]"#),
            Ok(("2026-01-01", "2026-01-01")),
        );
        check(&range(r#"["2026-02-01","2026-01-31"]"#), Err("after"));
        check(
            &range(r#""forever""#),
            Err(r#"Invalid date range "forever""#),
        );
        for refused in [
            "0d", "5001d", "0mo", "101mo", "7D", "-7d", "+7d", "7", "d", "1w",
        ] {
            check(
                &range(&format!(r#""{refused}""#)),
                Err(&format!(r#"date_range: Invalid date range "{refused}""#)),
            );
        }
        check(&range("7"), Err("Invalid date range 7"));
        check(&range(r#"["2026-13-01","2026-01-31"]"#), Err("date_range"));
        check(
            &range(r#"["2026-01-01","+262142-12-31"]"#),
            Err("1970 to 2105"),
        );
        check(
            &range(r#"["2026-01-01","2105-12-31"]"#),
            Ok(("2026-01-01", "2105-12-31")),
        );
    }

    /// Expected: the UTC interval `[from, to)` of a date range, or an error
    /// part; `date` is the request's reference day, if any.
    fn check_instants(
        tz: Tz,
        now: &str,
        date_range: &str,
        date: Option<&str>,
        expected: Result<(&str, &str), &str>,
    ) {
        let site = SiteView {
            timezone: tz,
            ..view()
        };
        let date = date
            .map(|d| format!(r#","date":"{d}""#))
            .unwrap_or_default();
        let body =
            format!(r#"{{"site_id":"a","metrics":["visitors"],"date_range":{date_range}{date}}}"#);
        let got = parse(body.as_bytes(), &site, now.parse().unwrap());
        match (got, expected) {
            (Ok(q), Ok((from, to))) => assert_eq!(
                (q.from.to_rfc3339(), q.to.to_rfc3339()),
                (from.to_string(), to.to_string()),
                "{body} at {now} in {tz}"
            ),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e} lacks {want}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn date_ranges_are_local_days_across_daylight_saving_time() {
        use chrono_tz::{America::St_Johns, America::Toronto, Asia::Kolkata};
        let noon = "2026-11-23T17:00:00Z";
        for (tz, now, date_range, date, expected) in [
            // Toronto springs forward on 2026-03-08: the last 7 days before
            // the 9th hold a 23-hour day.
            (
                Toronto,
                noon,
                r#""7d""#,
                Some("2026-03-09"),
                Ok(("2026-03-02T05:00:00+00:00", "2026-03-09T04:00:00+00:00")),
            ),
            // and falls back on 2026-11-01: that day has 25 hours.
            (
                Toronto,
                noon,
                r#""day""#,
                Some("2026-11-01"),
                Ok(("2026-11-01T04:00:00+00:00", "2026-11-02T05:00:00+00:00")),
            ),
            (
                Toronto,
                noon,
                r#""1mo""#,
                Some("2026-04-15"),
                Ok(("2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00")),
            ),
            (
                Toronto,
                noon,
                r#""month""#,
                Some("2026-03-31"),
                Ok(("2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00")),
            ),
            // Without `date`, the reference day is today in the site's zone:
            // 00:30 UTC on the 24th is still the 23rd in Toronto.
            (
                Toronto,
                "2026-11-24T00:30:00Z",
                r#""day""#,
                None,
                Ok(("2026-11-23T05:00:00+00:00", "2026-11-24T05:00:00+00:00")),
            ),
            (
                Toronto,
                noon,
                r#""day""#,
                Some("2026-02-30"),
                Err("date: Invalid date '2026-02-30'."),
            ),
            (
                Toronto,
                noon,
                r#""day""#,
                Some("23/11/2026"),
                Err("Invalid date"),
            ),
            (
                Toronto,
                noon,
                r#""day""#,
                Some("2106-01-01"),
                Err("Invalid date"),
            ),
            // Windows of minutes are the hour buckets they overlap, whatever
            // `date` says.
            (
                Toronto,
                "2026-11-23T15:00:00Z",
                r#""realtime""#,
                Some("2020-01-01"),
                Ok(("2026-11-23T14:00:00+00:00", "2026-11-23T16:00:00+00:00")),
            ),
            (
                Toronto,
                "2026-11-23T15:20:00Z",
                r#""realtime""#,
                None,
                Ok(("2026-11-23T15:00:00+00:00", "2026-11-23T16:00:00+00:00")),
            ),
            (
                Toronto,
                "2026-11-23T15:20:00Z",
                r#""30m""#,
                None,
                Ok(("2026-11-23T14:00:00+00:00", "2026-11-23T16:00:00+00:00")),
            ),
            (
                Toronto,
                "2026-03-08T15:20:00Z",
                r#""24h""#,
                None,
                Ok(("2026-03-07T15:00:00+00:00", "2026-03-08T16:00:00+00:00")),
            ),
            // Local hours start on the half hour in Kolkata (+05:30) and
            // St. John's (-03:30 in winter).
            (
                Kolkata,
                "2026-11-23T15:00:00Z",
                r#""realtime""#,
                None,
                Ok(("2026-11-23T14:30:00+00:00", "2026-11-23T15:30:00+00:00")),
            ),
            (
                St_Johns,
                "2026-11-23T15:00:00Z",
                r#""30m""#,
                None,
                Ok(("2026-11-23T14:30:00+00:00", "2026-11-23T15:30:00+00:00")),
            ),
            (
                St_Johns,
                noon,
                r#""7d""#,
                None,
                Ok(("2026-11-16T03:30:00+00:00", "2026-11-23T03:30:00+00:00")),
            ),
        ] {
            check_instants(tz, now, date_range, date, expected);
        }
    }

    #[test]
    fn names_are_allow_listed() {
        check(
            r#"{"site_id":"a","metrics":["visitors; DROP TABLE x"],"date_range":"day"}"#,
            Err("Invalid metric"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["event:page'--"],"date_range":"day"}"#,
            Err("Invalid dimension"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["visit:utm_source"],"date_range":"day"}"#,
            Err("collect_campaigns"),
        );
        // Plausible's city dimensions name something tamis never reads.
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["visit:city_name"],"date_range":"day"}"#,
            Err("never their city"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"filters":[["is","visit:city",["6077243"]]],"date_range":"day"}"#,
            Err("never their city"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["visit:entry_page_hostname"],"date_range":"day"}"#,
            Err("does not store it"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["visit:os_version"],"date_range":"day"}"#,
            Ok(("2026-11-23", "2026-11-23")),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"dimensions":["visit:utm_term"],"date_range":"day"}"#,
            Err("collect_campaigns"),
        );
        check(
            r#"{"site_id":"a","metrics":[],"date_range":"day"}"#,
            Err("at least one"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","bogus":1}"#,
            Err("bogus"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","order_by":[["pageviews","desc"]]}"#,
            Err("order_by"),
        );
        check(
            r#"{"site_id":"a","metrics":["percentage"],"date_range":"day"}"#,
            Err("needs a dimension"),
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","format":"xml"}"#,
            Err("format"),
        );
        check(
            r#"{"site_id":"a","metrics":["events"],"date_range":"day","dimensions":["event:props:plan"]}"#,
            Ok(("2026-11-23", "2026-11-23")),
        );
        check(
            r#"{"site_id":"a","metrics":["events"],"date_range":"day","dimensions":["event:props:email"]}"#,
            Err("allow-listed"),
        );
        check(
            r#"{"site_id":"a","metrics":["events"],"date_range":"day","dimensions":["event:props:plan","visit:country"]}"#,
            Err("combines only"),
        );
    }

    #[test]
    fn filters_nest_and_are_bounded() {
        let f = |filters: &str| {
            format!(
                r#"{{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":{filters}}}"#
            )
        };
        check(
            &f(r#"[["is","event:page",["/"]]]"#),
            Ok(("2026-11-23", "2026-11-23")),
        );
        check(
            &f(
                r#"[["or",[["is","visit:country",["CA"]],["not",["contains","event:page",["admin"]]]]]]"#,
            ),
            Ok(("2026-11-23", "2026-11-23")),
        );
        check(
            &f(r#"[["matches","event:page",["^/blog/[0-9]+$"]]]"#),
            Ok(("2026-11-23", "2026-11-23")),
        );
        check(
            &f(r#"[["matches","event:page",["(unclosed"]]]"#),
            Err("not a regular expression"),
        );
        check(&f(r#"[["like","event:page",["/"]]]"#), Err("operator"));
        check(
            &f(r#"[["is","time:day",["2026-01-01"]]]"#),
            Err("date_range"),
        );
        check(
            &f(r#"[["not",["not",["not",["not",["not",["is","event:page",["/"]]]]]]]]"#),
            Err("4 deep"),
        );
        check(&f(r#"[["and",[]]]"#), Err("each filter"));
    }

    #[test]
    fn time_follows_the_range() {
        let q = |r: &str| {
            parse(format!(r#"{{"site_id":"a","metrics":["visitors"],"date_range":{r},"dimensions":["time"]}}"#).as_bytes(), &view(), now()).unwrap().dimensions
        };
        assert_eq!(q(r#""day""#), vec![Dimension::Hour]);
        assert_eq!(q(r#""30d""#), vec![Dimension::Day]);
        assert_eq!(q(r#""12mo""#), vec![Dimension::Month]);
    }

    #[test]
    fn local_midnight_is_utc_offset() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        assert_eq!(
            local_midnight(day, chrono_tz::America::Toronto).to_rfc3339(),
            "2026-11-23T05:00:00+00:00"
        );
    }

    #[test]
    fn goals_are_validated_as_plausible_validates_them() {
        let q = |metrics: &str, dims: &str, filters: &str| {
            parse(
                format!(r#"{{"site_id":"a","metrics":{metrics},"date_range":"7d","dimensions":{dims},"filters":{filters}}}"#).as_bytes(),
                &view(),
                now(),
            )
        };
        // Plausible's query_parser_test.exs, "conversion_rate metric".
        let err = q(r#"["conversion_rate"]"#, "[]", "[]").unwrap_err();
        assert_eq!(
            err.problem,
            "Metric `conversion_rate` can only be queried with event:goal filters or dimensions."
        );
        assert!(q(
            r#"["conversion_rate"]"#,
            "[]",
            r#"[["is","event:goal",["Signup"]]]"#
        )
        .is_ok());
        assert!(q(r#"["conversion_rate"]"#, r#"["event:goal"]"#, "[]").is_ok());
        assert!(q(
            r#"["visitors","group_conversion_rate"]"#,
            r#"["event:page"]"#,
            r#"[["is","event:goal",["Merci"]]]"#
        )
        .is_ok());
        let err = q(r#"["visitors"]"#, "[]", r#"[["is","event:goal",["Nope"]]]"#).unwrap_err();
        assert!(
            err.problem
                .starts_with("The goal `Nope` is not configured for this site"),
            "{err}"
        );
        // `contains` names goals by part of their names: nothing to check.
        assert!(q(
            r#"["visitors"]"#,
            "[]",
            r#"[["contains","event:goal",["sign"]]]"#
        )
        .is_ok());
        let err = q(r#"["bounce_rate"]"#, r#"["event:goal"]"#, "[]").unwrap_err();
        assert_eq!(
            err.problem,
            "Session metric(s) `bounce_rate` cannot be queried along with event dimension(s) `event:goal`"
        );
        let err = q(r#"["visits"]"#, "[]", r#"[["is","event:goal",["Signup"]]]"#).unwrap_err();
        assert!(err.problem.contains("Session metric `visits`"), "{err}");
        let err = q(
            r#"["conversion_rate"]"#,
            "[]",
            r#"[["or",[["is","event:goal",["Signup"]],["is","event:page",["/"]]]]]"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "filters");
        let query = q(
            r#"["visitors","conversion_rate"]"#,
            r#"["event:goal","event:page"]"#,
            r#"[["is","event:goal",["Signup"]],["is","event:page",["/"]]]"#,
        )
        .unwrap();
        let plain = query.without_goals();
        assert_eq!(plain.dimensions, vec![Dimension::Page]);
        assert_eq!(plain.filters.len(), 1);
    }

    /// Plausible's query_builder.ex (`validate_metric`, and
    /// `TableDecider.validate_no_metrics_dimensions_conflict`), with its
    /// table_decider_test.exs and query_test.exs cases.
    #[test]
    fn metrics_refused_with_dimensions_or_filters_as_plausible_refuses_them() {
        let q = |metrics: &str, dims: &str, filters: &str| {
            parse(
                format!(r#"{{"site_id":"a","metrics":{metrics},"date_range":"7d","dimensions":{dims},"filters":{filters}}}"#).as_bytes(),
                &view(),
                now(),
            )
            .map(|_| ())
        };
        let session = |m: &str, d: &str| {
            Err(bad(
                "metrics",
                format!(
                    "Session metric(s) `{m}` cannot be queried along with event dimension(s) `{d}`"
                ),
            ))
        };
        for (metrics, dims, filters, expected) in [
            (r#"["bounce_rate"]"#, r#"["event:name"]"#, "[]", session("bounce_rate", "event:name")),
            (r#"["visitors","visit_duration"]"#, r#"["event:props:plan"]"#, "[]",
                session("visit_duration", "event:props:plan")),
            (r#"["bounce_rate","visit_duration"]"#, r#"["event:page","event:name"]"#, "[]",
                session("bounce_rate, visit_duration", "event:page, event:name")),
            // views_per_visit is refused with any dimension first
            // (`validate_metric` runs before the tables' conflicts).
            (r#"["bounce_rate","views_per_visit"]"#, r#"["event:page","event:name"]"#, "[]",
                Err(bad("metrics", "Metric `views_per_visit` cannot be queried with `dimensions`."))),
            (r#"["pageviews","events"]"#, r#"["visit:entry_page"]"#, "[]",
                Err(bad("metrics", "Event metric(s) `pageviews, events` cannot be queried along with session dimension(s) `visit:entry_page`"))),
            // `event:page` alone is answered, and visits are not session-only.
            (r#"["bounce_rate","visit_duration"]"#, r#"["event:page"]"#, "[]", Ok(())),
            (r#"["bounce_rate"]"#, r#"["event:page","visit:country"]"#, "[]", Ok(())),
            (r#"["visits"]"#, r#"["event:name"]"#, "[]", Ok(())),
            (r#"["bounce_rate"]"#, r#"["visit:exit_page"]"#, "[]", Ok(())),
            (r#"["bounce_rate"]"#, "[]", r#"[["is","event:name",["Signup"]]]"#, Ok(())),
            (r#"["views_per_visit"]"#, "[]", r#"[["is","event:page",["/"]]]"#,
                Err(bad("metrics", "Metric `views_per_visit` cannot be queried with a filter on `event:page`."))),
            (r#"["views_per_visit"]"#, "[]", r#"[["not",["contains","event:page",["/a"]]]]"#,
                Err(bad("metrics", "Metric `views_per_visit` cannot be queried with a filter on `event:page`."))),
            (r#"["views_per_visit"]"#, "[]", r#"[["is","visit:entry_page",["/"]]]"#, Ok(())),
            (r#"["visitors"]"#, r#"["time:minute"]"#, "[]",
                Err(bad("dimensions", "`time:minute` is not available: tamis stores hourly aggregates, never the minute of a hit; use time:hour"))),
        ] {
            assert_eq!(q(metrics, dims, filters), expected, "{metrics} {dims} {filters}");
        }
    }

    /// The `case_sensitive` modifier as Plausible's query schema takes it
    /// (a 4th element of is, is_not, contains, contains_not), refused with
    /// pattern operators (query_builder.ex,
    /// `validate_case_sensitive_filter_modifier`); behavioral filters are
    /// refused with the reason.
    #[test]
    fn filter_modifiers_and_behavioral_filters() {
        let q = |filters: &str| {
            parse(
                format!(r#"{{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":{filters}}}"#).as_bytes(),
                &view(),
                now(),
            )
        };
        let query = q(r#"[["is","event:page",["/A"],{"case_sensitive":false}],["contains","event:page",["b"]]]"#).unwrap();
        assert_eq!(
            query.filters[0],
            Filter::Condition {
                op: FilterOp::Is,
                dimension: Dimension::Page,
                values: vec!["/A".into()],
                case_sensitive: Some(false),
            }
        );
        assert_eq!(
            query
                .filters
                .iter()
                .map(|f| f.to_json(&query))
                .collect::<Vec<_>>(),
            vec![
                serde_json::json!(["is", "event:page", ["/A"], {"case_sensitive": false}]),
                serde_json::json!(["contains", "event:page", ["b"]]),
            ]
        );
        for (op, given, ignores) in [
            (FilterOp::Is, None, false),
            (FilterOp::Is, Some(false), true),
            (FilterOp::IsNot, Some(true), false),
            (FilterOp::Contains, None, true),
            (FilterOp::ContainsNot, Some(false), true),
            (FilterOp::Contains, Some(true), false),
            (FilterOp::Matches, None, false),
        ] {
            assert_eq!(Filter::ignores_case(op, given), ignores, "{op:?} {given:?}");
        }
        let err = q(r#"[["matches","event:page",["^/a"],{"case_sensitive":false}]]"#).unwrap_err();
        assert!(
            err.problem.starts_with("Invalid filters. The case_sensitive modifier is not allowed with pattern operators ("),
            "{err}"
        );
        for refused in [
            r#"[["is","event:page",["/"],{"case_sensitive":"no"}]]"#,
            r#"[["is","event:page",["/"],{"case_sensitive":false,"x":1}]]"#,
        ] {
            assert!(
                q(refused).unwrap_err().problem.contains("case_sensitive"),
                "{refused}"
            );
        }
        assert_eq!(
            q(r#"[["is","event:page",["/"],{"case_sensitive":false},{}]]"#)
                .unwrap_err()
                .field,
            "filters"
        );
        let err = q(r#"[["has_done",["is","event:name",["Signup"]]]]"#).unwrap_err();
        assert_eq!(err.field, "filters");
        assert!(err.problem.starts_with("Behavioral filters (has_done, has_not_done) are not available: tamis keeps no list of a visit's events"), "{err}");
        assert!(q(r#"[["not",["has_not_done",["is","event:name",["Signup"]]]]]"#).is_err());
    }

    #[test]
    fn the_echo_names_the_order_applied() {
        let q = |extra: &str| {
            parse(
                format!(r#"{{"site_id":"a","metrics":["visitors","pageviews"],"date_range":"day"{extra}}}"#).as_bytes(),
                &view(),
                now(),
            )
            .unwrap()
            .order_by_applied()
        };
        assert_eq!(q(""), vec![("visitors".to_string(), false)]);
        assert_eq!(
            q(r#","dimensions":["event:page","time"]"#),
            vec![
                ("time:hour".to_string(), true),
                ("visitors".to_string(), false)
            ]
        );
        assert_eq!(
            q(r#","dimensions":["event:page"],"order_by":[["event:page","asc"]]"#),
            vec![("event:page".to_string(), true)]
        );
    }

    #[test]
    fn refusals_word_for_word_as_plausible() {
        let q = |metrics: &str, filters: &str| {
            parse(
                format!(
                    r#"{{"site_id":"a","metrics":{metrics},"date_range":"7d","filters":{filters}}}"#
                )
                .as_bytes(),
                &view(),
                now(),
            )
        };
        // query_parser_test.exs, "same metric queried multiple times".
        assert_eq!(
            q(r#"["events","visitors","visitors"]"#, "[]").unwrap_err(),
            bad("metrics", "Expected items to be unique but they were not.")
        );
        // query_parser.ex, parse_clauses_list: `is` on countries takes codes.
        assert_eq!(
            q(r#"["visitors"]"#, r#"[["is","visit:country",["Canada"]]]"#).unwrap_err(),
            bad(
                "filters",
                "Invalid visit:country filter, visit:country needs to be a valid 2-letter country code."
            )
        );
        assert!(q(r#"["visitors"]"#, r#"[["is","visit:country",["CA","FR"]]]"#).is_ok());
        assert!(q(r#"["visitors"]"#, r#"[["contains","visit:country",["C"]]]"#).is_ok());
        let d = |metrics: &str, dimensions: &str| {
            parse(
                format!(
                    r#"{{"site_id":"a","metrics":{metrics},"date_range":"7d","dimensions":{dimensions}}}"#
                )
                .as_bytes(),
                &view(),
                now(),
            )
        };
        // query_parser_test.exs, "views_per_visit … fails validation with
        // dimensions".
        assert_eq!(
            d(r#"["views_per_visit"]"#, r#"["event:name"]"#).unwrap_err(),
            bad(
                "metrics",
                "Metric `views_per_visit` cannot be queried with `dimensions`."
            )
        );
        assert!(d(r#"["views_per_visit"]"#, "[]").is_ok());
        // query_parser_test.exs, "exit_rate … fails validation with event
        // metrics", and table_decider_test.exs.
        assert_eq!(
            d(r#"["visitors","pageviews"]"#, r#"["visit:exit_page"]"#).unwrap_err(),
            bad(
                "metrics",
                "Event metric(s) `pageviews` cannot be queried along with session dimension(s) `visit:exit_page`"
            )
        );
        assert!(d(
            r#"["visitors","visits","bounce_rate"]"#,
            r#"["visit:entry_page"]"#
        )
        .is_ok());
        assert!(d(r#"["visitors","pageviews"]"#, r#"["event:page"]"#).is_ok());
    }

    /// Regression: `"order_by": [["time", "asc"]]` with the dimension
    /// `time` was refused as "not a requested metric or dimension", since
    /// `time` is resolved to `time:day` (or hour, month) before `order_by`
    /// is read.
    #[test]
    fn order_by_time_when_time_was_asked_is_not_refused() {
        let q = parse(
            br#"{"site_id":"a","metrics":["pageviews"],"date_range":["2026-10-01","2026-11-04"],"dimensions":["time"],"order_by":[["pageviews","desc"],["time","asc"]]}"#,
            &view(),
            now(),
        )
        .expect("ordered by time");
        assert_eq!(q.dimensions, vec![Dimension::Day]);
        assert_eq!(
            q.order_by,
            vec![
                ("pageviews".to_string(), false),
                ("time:day".to_string(), true)
            ]
        );
    }
}
