//! SQL for a validated [`Query`]. Column and function names come only from
//! the `match`es below; every value a client sent travels as a bound
//! parameter.

use super::labels::Names;
use super::pushdown::{Bound, Order};
use super::request::{Dimension, Filter, FilterOp, Query};
use crate::goal::Goal;
use crate::sink::nodes::Tables;
use crate::sink::rows::DELIVERY_MARK;
use crate::sink::schema::{GOAL_DIMENSION, ROLLUP_COUNTS};

/// The aggregates every statement reads, in this order; the requested
/// metrics are computed from them (see `super::suppress::Base`). The last
/// four are pages' engagement (`sink::rows::EngagementCounts`), 0 in rows
/// stored before migration 9.
pub const BASE: [&str; 11] = [
    "toFloat64(uniqIfMerge(visitors))",
    "toFloat64(sumMerge(visits))",
    "toFloat64(sumMerge(pageviews))",
    "toFloat64(sumMerge(events))",
    "toFloat64(sumMerge(bounces))",
    "toFloat64(sumMerge(duration))",
    "toFloat64(sumMerge(exits))",
    "toFloat64(sumMerge(engaged_ms))",
    "toFloat64(sumMerge(engaged_visits))",
    "toFloat64(sumMerge(scroll_total))",
    "toFloat64(sumMerge(scroll_visits))",
];

/// The `rollup_daily` counts, in [`BASE`] order after `visitors`.
const ROLLED_COUNTS: [&str; BASE.len() - 1] = ROLLUP_COUNTS;

/// Plausible's label of an empty value of these dimensions
/// (`Plausible.Stats.SQL.Expression`'s `field_or_blank_value`): tamis
/// writes it in the SQL expression, so a filter on `(not set)` selects
/// the empty values as Plausible's does.
pub const NOT_SET: &str = "(not set)";

/// Whether a dimension's empty value is answered as [`NOT_SET`].
fn labels_empty(d: Dimension) -> bool {
    matches!(
        d,
        Dimension::UtmSource
            | Dimension::UtmMedium
            | Dimension::UtmCampaign
            | Dimension::UtmContent
            | Dimension::UtmTerm
            | Dimension::OsVersion
    )
}

/// A statement being built: SQL text and its parameters in `?` order.
#[derive(Default)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<String>,
    /// Whether `sql` ends in a `HAVING` that further conditions join with
    /// `AND` (see [`kept`]).
    pub having: bool,
}

impl Statement {
    fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    fn bind(&mut self, value: impl Into<String>) {
        self.params.push(value.into());
    }
}

/// Appends the expression of a dimension (binding the time zone where it
/// needs one). `goals` are the site's, which `event:goal` values name.
fn dimension(s: &mut Statement, d: Dimension, tz: &str, goals: &[Goal]) {
    if d == Dimension::Goal {
        return goal_names(s, goals);
    }
    if d == Dimension::Channel {
        let (sql, params) = super::channel::sql();
        s.push(&sql);
        s.params.extend(params);
        return;
    }
    let column = match d {
        Dimension::Page | Dimension::ExitPage => "page",
        Dimension::Name => "event",
        Dimension::Goal => unreachable!("written by goal_names"),
        Dimension::Channel => unreachable!("written by channel::sql"),
        // Read as codes and named by `super::labels` once counted.
        Dimension::CountryName => "country",
        Dimension::RegionName => "region",
        Dimension::EntryPage => "entry_page",
        Dimension::Source => "source",
        Dimension::Referrer => "referrer",
        Dimension::UtmSource => "utm_source",
        Dimension::UtmMedium => "utm_medium",
        Dimension::UtmCampaign => "utm_campaign",
        Dimension::UtmContent => "utm_content",
        Dimension::UtmTerm => "utm_term",
        Dimension::Country => "country",
        Dimension::Region => "region",
        Dimension::Browser => "browser",
        Dimension::BrowserVersion => "browser_version",
        Dimension::Os => "os",
        Dimension::OsVersion => "os_version",
        Dimension::Hostname => "hostname",
        Dimension::Device => "device",
        Dimension::Language => "language",
        Dimension::Consent => "consent",
        Dimension::Prop => "prop_value",
        Dimension::Hour => "toString(hour, ?)",
        Dimension::Day => "toString(toDate(hour, ?))",
        Dimension::Week => "toString(toMonday(toDate(hour, ?)))",
        Dimension::Month => "toString(toStartOfMonth(toDate(hour, ?)))",
    };
    if labels_empty(d) {
        s.push(&not_set(column));
    } else {
        s.push(column);
    }
    if d.is_time() {
        s.bind(tz);
    }
}

/// `column`, its empty value written [`NOT_SET`].
fn not_set(column: &str) -> String {
    format!("if(empty({column}), '{NOT_SET}', {column})")
}

/// `event:goal`: one row per goal the row's event reaches (an event can
/// reach several page goals), none when it reaches none. The same text
/// stands in the `SELECT` and the `GROUP BY`, which ClickHouse reads as
/// one expression.
fn goal_names(s: &mut Statement, goals: &[Goal]) {
    if goals.is_empty() {
        s.push("arrayJoin(emptyArrayString())");
        return;
    }
    s.push("arrayJoin(arrayFilter(g -> g != '', [");
    for (i, goal) in goals.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.push("if(");
        goal_condition(s, goal);
        s.push(", ?, '')");
        s.bind(goal.name.as_str());
    }
    s.push("]))");
}

fn goal_condition(s: &mut Statement, goal: &Goal) {
    let (sql, params) = goal.sql();
    s.push(sql);
    s.params.extend(params);
}

/// ` PREWHERE` any of the goals' conditions, when there are goals: rows
/// that reach none add nothing to a goal breakdown or rollup, and as a
/// PREWHERE ClickHouse reads the event and page columns first and the
/// visitor sets of the goals' rows only (the query bench's 12 months read
/// 6.9 GB without it; its optimizer does not move these conditions by
/// itself).
fn goal_prewhere(s: &mut Statement, goals: &[Goal]) {
    if goals.is_empty() {
        return;
    }
    s.push(" PREWHERE ");
    for (i, goal) in goals.iter().enumerate() {
        if i > 0 {
            s.push(" OR ");
        }
        goal_condition(s, goal);
    }
}

/// One row per goal of `goals` that one local day (`[from, to)`, UTC
/// seconds) of the site reaches, inserted into `rollup_daily` under
/// `version` as dimension [`GOAL_DIMENSION`] with the goal's
/// [`Goal::key`] as value; goals the day does not reach get no row.
/// Visitors are exact per goal because the row's visitor sets merge per
/// goal before they are counted. `hourly` is the table the hourly
/// aggregates are read from (`traffic_hourly`, or its `Distributed` table
/// on a cluster).
pub fn goal_rollup(
    site_id: &str,
    day: &str,
    version: u64,
    goals: &[Goal],
    from: i64,
    to: i64,
    hourly: &str,
) -> Statement {
    let mut s = Statement::default();
    s.push(&format!(
        "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, {}) \
             SELECT ?, toDate(?), toUInt64(?), ?, goal, uniqIfMerge(visitors), {} FROM (SELECT ",
        ROLLED_COUNTS.join(", "),
        ROLLED_COUNTS
            .iter()
            .map(|c| format!("sumMerge({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.bind(site_id);
    s.bind(day);
    s.bind(version.to_string());
    s.bind(GOAL_DIMENSION);
    s.push("arrayJoin(arrayFilter(g -> g != '', [");
    for (i, goal) in goals.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.push("if(");
        goal_condition(&mut s, goal);
        s.push(", ?, '')");
        s.bind(goal.key());
    }
    s.push(&format!(
        "])) AS goal, visitors, {} FROM {hourly}",
        ROLLED_COUNTS.join(", ")
    ));
    goal_prewhere(&mut s, goals);
    s.push(" WHERE site_id = ? AND hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)) AND event != ?) GROUP BY goal");
    s.bind(site_id);
    s.bind(from.to_string());
    s.bind(to.to_string());
    s.bind(DELIVERY_MARK);
    s
}

/// The closed days in `first..=last` (`YYYY-MM-DD`) whose rollups answer
/// a query that [`rollup_dimension`] accepts: every rolled day, or for an
/// `event:goal` breakdown the days whose newest computation rolled every
/// one of the site's goals (a goal added since is read hourly on the
/// other days until the rollup job has added it).
pub fn rolled_days(
    tables: Tables,
    query: &Query,
    dimensions: &[Dimension],
    first: &str,
    last: &str,
) -> Statement {
    let mut s = Statement::default();
    let rollup_days = tables.name("rollup_days");
    if dimensions != [Dimension::Goal] || query.goals.is_empty() {
        s.push(&format!("SELECT DISTINCT toString(day) FROM {rollup_days} WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?)"));
        s.bind(query.site_id.as_str());
        s.bind(first);
        s.bind(last);
        return s;
    }
    s.push(&format!("SELECT toString(day) AS d FROM {} WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?) AND goal IN (", tables.name("rollup_goal_days")));
    s.bind(query.site_id.as_str());
    s.bind(first);
    s.bind(last);
    let keys: Vec<String> = query.goals.iter().map(Goal::key).collect();
    for (i, key) in keys.iter().enumerate() {
        s.push(if i > 0 { ", ?" } else { "?" });
        s.bind(key.as_str());
    }
    s.push(&format!(") AND (day, version) {} (SELECT day, max(version) FROM {rollup_days} WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?) GROUP BY day) GROUP BY d HAVING uniqExact(goal) = ", tables.in_subquery()));
    s.bind(query.site_id.as_str());
    s.bind(first);
    s.bind(last);
    s.push(
        &keys
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            .to_string(),
    );
    s
}

/// The goals a condition on `event:goal` names, by their names: the
/// values themselves (`is`), or the goals whose names contain or match
/// them.
fn named_goals<'g>(
    op: FilterOp,
    values: &[String],
    case_sensitive: Option<bool>,
    goals: &'g [Goal],
) -> Vec<&'g Goal> {
    let fold = |x: &str| {
        if Filter::ignores_case(op, case_sensitive) {
            x.to_lowercase()
        } else {
            x.to_string()
        }
    };
    goals
        .iter()
        .filter(|g| {
            values.iter().any(|v| match op {
                FilterOp::Is | FilterOp::IsNot => fold(&g.name) == fold(v),
                FilterOp::Contains | FilterOp::ContainsNot => fold(&g.name).contains(&fold(v)),
                // Checked as portable when the request was parsed.
                FilterOp::Matches | FilterOp::MatchesNot => {
                    regex::Regex::new(v).is_ok_and(|r| r.is_match(&g.name))
                }
            })
        })
        .collect()
}

fn filter(s: &mut Statement, f: &Filter, tz: &str, goals: &[Goal]) {
    match f {
        Filter::And(children) | Filter::Or(children) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            s.push("(");
            for (i, child) in children.iter().enumerate() {
                if i > 0 {
                    s.push(joiner);
                }
                filter(s, child, tz, goals);
            }
            s.push(")");
        }
        Filter::Not(child) => {
            s.push("NOT (");
            filter(s, child, tz, goals);
            s.push(")");
        }
        Filter::Condition {
            op,
            dimension: d,
            values,
            case_sensitive,
        } => {
            let fold = Filter::ignores_case(*op, *case_sensitive);
            let negated = op.is_negative();
            s.push(if negated { "NOT (" } else { "(" });
            if *d == Dimension::Goal {
                // A goal is a condition on the row's event and page, not a
                // column: the named goals' conditions, any of them.
                let named = named_goals(*op, values, *case_sensitive, goals);
                if named.is_empty() {
                    s.push("0");
                }
                for (i, goal) in named.into_iter().enumerate() {
                    if i > 0 {
                        s.push(" OR ");
                    }
                    goal_condition(s, goal);
                }
                s.push(")");
                return;
            }
            if let Some(names) = names_of(*d) {
                return named_codes(s, names, *op, values);
            }
            match op {
                // `case_sensitive: false` compares lower-cased UTF-8 on both
                // sides (lowerUTF8 exists in ClickHouse 18.16 as today).
                FilterOp::Is | FilterOp::IsNot => {
                    s.push(if fold { "lowerUTF8(" } else { "" });
                    dimension(s, *d, tz, goals);
                    s.push(if fold { ") IN (" } else { " IN (" });
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            s.push(", ");
                        }
                        s.push(if fold { "lowerUTF8(?)" } else { "?" });
                        s.bind(v.as_str());
                    }
                    s.push(")");
                }
                FilterOp::Contains
                | FilterOp::ContainsNot
                | FilterOp::Matches
                | FilterOp::MatchesNot => {
                    let contains = matches!(op, FilterOp::Contains | FilterOp::ContainsNot);
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            s.push(" OR ");
                        }
                        s.push(match (contains, fold) {
                            (true, true) => "positionCaseInsensitiveUTF8(",
                            (true, false) => "positionUTF8(",
                            (false, _) => "match(",
                        });
                        dimension(s, *d, tz, goals);
                        s.push(", ?)");
                        if contains {
                            s.push(" > 0");
                        }
                        s.bind(v.as_str());
                    }
                }
            }
            s.push(")");
        }
    }
}

/// The name table a name dimension reads its codes' names from.
fn names_of(d: Dimension) -> Option<Names> {
    match d {
        Dimension::CountryName => Some(Names::Country),
        Dimension::RegionName => Some(Names::Region),
        _ => None,
    }
}

/// A condition on country or region names (`op` read positively; the
/// caller's bracket negates), as one on the stored codes: the codes whose
/// names satisfy it, and, for a region kept as the database's name (no
/// code matched), that name itself. Ends the bracket the caller opened.
fn named_codes(s: &mut Statement, names: Names, op: FilterOp, values: &[String]) {
    let column = match names {
        Names::Country => "country",
        Names::Region => "region",
    };
    let codes = names.codes_where(op, values);
    if codes.is_empty() {
        s.push("0");
    } else {
        s.push(column);
        s.push(" IN (");
        for (i, code) in codes.iter().enumerate() {
            s.push(if i > 0 { ", ?" } else { "?" });
            s.bind(*code);
        }
        s.push(")");
    }
    if names == Names::Region {
        // A region stored as the database's name (no code matched) is its
        // own name; codes have ISO 3166-2's shape, names never do.
        s.push(" OR (region != '' AND NOT match(region, '^[A-Z]{2}-[A-Z0-9]{1,3}$') AND (");
        match op {
            FilterOp::Is | FilterOp::IsNot => {
                s.push("region IN (");
                for (i, v) in values.iter().enumerate() {
                    s.push(if i > 0 { ", ?" } else { "?" });
                    s.bind(v.as_str());
                }
                s.push(")");
            }
            _ => {
                let contains = matches!(op, FilterOp::Contains | FilterOp::ContainsNot);
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        s.push(" OR ");
                    }
                    s.push(if contains {
                        "positionCaseInsensitiveUTF8(region, ?) > 0"
                    } else {
                        "match(region, ?)"
                    });
                    s.bind(v.as_str());
                }
            }
        }
        s.push("))");
    }
    s.push(")");
}

/// Which rows a statement reads.
#[derive(Clone, Copy)]
pub enum Scope {
    /// Rows the query's filters select.
    Selected,
    /// Rows the filters leave out (to check what a negative filter hides).
    Excluded,
}

/// `SELECT dims, base FROM traffic_hourly WHERE … GROUP BY dims`.
pub fn build(
    tables: Tables,
    query: &Query,
    dimensions: &[Dimension],
    tz: &str,
    scope: Scope,
) -> Statement {
    let mut s = Statement::default();
    s.push("SELECT ");
    if dimensions.is_empty() {
        s.push("emptyArrayString()");
    } else {
        s.push("[");
        for (i, d) in dimensions.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            dimension(&mut s, *d, tz, &query.goals);
        }
        s.push("]");
    }
    s.push(" AS dims, [");
    match &query.prop_key {
        None => {
            s.push(&BASE.join(", "));
            s.push("] AS base FROM ");
            s.push(&tables.name("traffic_hourly"));
        }
        // Property aggregates hold visitors and events only.
        Some(_) => {
            s.push("toFloat64(uniqIfMerge(visitors)), 0, 0, toFloat64(sumMerge(events)), 0, 0, 0, 0, 0, 0, 0] AS base FROM ");
            s.push(&tables.name("props_hourly"));
        }
    }
    // A row that reaches no goal adds nothing to an `event:goal`
    // breakdown. As a PREWHERE, ClickHouse reads the event and page
    // columns first and the visitor sets of the goals' rows only (the
    // query bench's 12 months read 6.9 GB without it; its optimizer does
    // not move these conditions by itself).
    if dimensions.contains(&Dimension::Goal) {
        goal_prewhere(&mut s, &query.goals);
    }
    s.push(" WHERE site_id = ? AND hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)) AND event != ?");
    s.bind(query.site_id.as_str());
    s.bind(query.from.timestamp().to_string());
    s.bind(query.to.timestamp().to_string());
    s.bind(DELIVERY_MARK);
    if let Some(key) = &query.prop_key {
        s.push(" AND prop_key = ?");
        s.bind(key.as_str());
    }
    if !query.filters.is_empty() {
        s.push(match scope {
            Scope::Excluded => " AND NOT (",
            Scope::Selected => " AND (",
        });
        let all = Filter::And(query.filters.clone());
        filter(&mut s, &all, tz, &query.goals);
        s.push(")");
    }
    if !dimensions.is_empty() {
        s.push(" GROUP BY ");
        for (i, d) in dimensions.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            dimension(&mut s, *d, tz, &query.goals);
        }
        exit_pages_only(&mut s, dimensions);
    }
    s
}

/// The `rollup_daily` dimension that answers `dimensions` for whole closed
/// days (`""`: the site's totals, also behind time series by day, week or
/// month), or `None` when the query's shape needs the hourly aggregates:
/// filters, a custom property, an hour series, or two dimensions.
pub fn rollup_dimension(query: &Query, dimensions: &[Dimension]) -> Option<&'static str> {
    if !query.filters.is_empty() || query.prop_key.is_some() {
        return None;
    }
    match dimensions {
        [] => Some(""),
        [d] => match d {
            Dimension::Page | Dimension::ExitPage => Some("page"),
            Dimension::Name => Some("event"),
            Dimension::EntryPage => Some("entry_page"),
            Dimension::Source => Some("source"),
            Dimension::Referrer => Some("referrer"),
            Dimension::UtmSource => Some("utm_source"),
            Dimension::UtmMedium => Some("utm_medium"),
            Dimension::UtmCampaign => Some("utm_campaign"),
            Dimension::UtmContent => Some("utm_content"),
            Dimension::UtmTerm => Some("utm_term"),
            Dimension::Country => Some("country"),
            Dimension::Region => Some("region"),
            Dimension::CountryName => Some("country"),
            Dimension::RegionName => Some("region"),
            Dimension::Browser => Some("browser"),
            Dimension::BrowserVersion => Some("browser_version"),
            Dimension::Os => Some("os"),
            Dimension::OsVersion => Some("os_version"),
            Dimension::Hostname => Some("hostname"),
            Dimension::Device => Some("device"),
            Dimension::Language => Some("language"),
            Dimension::Consent => Some("consent"),
            Dimension::Day | Dimension::Week | Dimension::Month => Some(""),
            Dimension::Goal => Some(GOAL_DIMENSION),
            Dimension::Prop | Dimension::Hour | Dimension::Channel => None,
        },
        _ => None,
    }
}

/// `SELECT dims, base` like [`build`], for a query that
/// [`rollup_dimension`] accepts: the local days `rolled` (inclusive runs,
/// read at the newest version recorded in `rollup_days`) from
/// `rollup_daily`, and the half-open UTC `hours` ranges (seconds) from
/// `traffic_hourly`, added up. Visitors add up because no visitor key spans
/// two local days, so the numbers are those [`build`] gives.
pub fn rolled(
    tables: Tables,
    query: &Query,
    dimensions: &[Dimension],
    tz: &str,
    rolled: &[(String, String)],
    hours: &[(i64, i64)],
) -> Statement {
    let mut s = Statement::default();
    let grouped = !dimensions.is_empty();
    let sums: Vec<String> = (1..=BASE.len()).map(|i| format!("sum(c{i})")).collect();
    s.push(if grouped {
        "SELECT [d] AS dims, ["
    } else {
        "SELECT emptyArrayString() AS dims, ["
    });
    s.push(&sums.join(", "));
    s.push("] AS base FROM (");
    let mut branches = 0;
    if !rolled.is_empty() {
        s.push("SELECT ");
        match dimensions.first() {
            Some(Dimension::Day) => s.push("toString(day) AS d, "),
            Some(Dimension::Week) => s.push("toString(toMonday(day)) AS d, "),
            Some(Dimension::Month) => s.push("toString(toStartOfMonth(day)) AS d, "),
            // Goals are rolled under their keys: the names the site gives
            // them now (a key may have none, or two).
            Some(Dimension::Goal) if query.goals.is_empty() => {
                s.push("arrayJoin(emptyArrayString()) AS d, ")
            }
            Some(Dimension::Goal) => {
                s.push("arrayJoin(arrayFilter(g -> g != '', [");
                for (i, goal) in query.goals.iter().enumerate() {
                    if i > 0 {
                        s.push(", ");
                    }
                    s.push("if(value = ?, ?, '')");
                    s.bind(goal.key());
                    s.bind(goal.name.as_str());
                }
                s.push("])) AS d, ");
            }
            Some(d) if labels_empty(*d) => {
                s.push(&not_set("value"));
                s.push(" AS d, ");
            }
            Some(_) => s.push("value AS d, "),
            None => {}
        }
        let counts: Vec<String> = std::iter::once("visitors")
            .chain(ROLLED_COUNTS)
            .enumerate()
            .map(|(i, c)| format!("toFloat64(sum({c})) AS c{}", i + 1))
            .collect();
        s.push(&counts.join(", "));
        s.push(&format!(
            " FROM {} WHERE site_id = ? AND dimension = ? AND ",
            tables.name("rollup_daily")
        ));
        s.bind(query.site_id.as_str());
        s.bind(rollup_dimension(query, dimensions).unwrap_or_default());
        day_runs(&mut s, rolled);
        s.push(&format!(
            " AND (day, version) {} (SELECT day, max(version) FROM {} WHERE site_id = ? AND ",
            tables.in_subquery(),
            tables.name("rollup_days")
        ));
        s.bind(query.site_id.as_str());
        day_runs(&mut s, rolled);
        s.push(" GROUP BY day)");
        if grouped {
            s.push(" GROUP BY d");
        }
        branches += 1;
    }
    if !hours.is_empty() || branches == 0 {
        if branches > 0 {
            s.push(" UNION ALL ");
        }
        s.push("SELECT ");
        if let Some(d) = dimensions.first() {
            dimension(&mut s, *d, tz, &query.goals);
            s.push(" AS d, ");
        }
        let named: Vec<String> = BASE
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{b} AS c{}", i + 1))
            .collect();
        s.push(&named.join(", "));
        s.push(" FROM ");
        s.push(&tables.name("traffic_hourly"));
        if dimensions.contains(&Dimension::Goal) {
            goal_prewhere(&mut s, &query.goals);
        }
        s.push(" WHERE site_id = ? AND (");
        s.bind(query.site_id.as_str());
        if hours.is_empty() {
            s.push("0");
        }
        for (i, (from, to)) in hours.iter().enumerate() {
            s.push(if i > 0 {
                " OR (hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)))"
            } else {
                "(hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)))"
            });
            s.bind(from.to_string());
            s.bind(to.to_string());
        }
        s.push(") AND event != ?");
        s.bind(DELIVERY_MARK);
        if grouped {
            s.push(" GROUP BY d");
        }
    }
    s.push(")");
    if grouped {
        s.push(" GROUP BY d");
        exit_pages_only(&mut s, dimensions);
    }
    s
}

/// `(day >= ? AND day <= ?) OR …` over inclusive runs of days, in brackets.
fn day_runs(s: &mut Statement, runs: &[(String, String)]) {
    s.push("(");
    for (i, (first, last)) in runs.iter().enumerate() {
        s.push(if i > 0 {
            " OR (day >= toDate(?) AND day <= toDate(?))"
        } else {
            "(day >= toDate(?) AND day <= toDate(?))"
        });
        s.bind(first.as_str());
        s.bind(last.as_str());
    }
    s.push(")");
}

/// Whether a row of `base` is small, as [`super::Base::is_small`] says:
/// fewer than `k` visitors or, counted without visitor keys, fewer than
/// `k` pageviews and events.
fn small(k: u32) -> String {
    format!("if(base[1] > 0, base[1] < {k}, base[3] + base[4] < {k})")
}

/// `inner`'s rows (`dims`, `base`) that are not small, ordered by `order`
/// and cut at `limit`, or those within `bound` (see
/// [`super::pushdown`]). `inner` is a grouped statement ([`build`] or
/// [`rolled`] with dimensions, ending in its `GROUP BY`): the conditions
/// go into its `HAVING`. Not a `WHERE` around it as a subquery:
/// ClickHouse 18.16 pushes such a predicate down into the subquery's
/// `WHERE`, where `base` is an aggregate, and refuses it (code 184). Only
/// numbers tamis computed are written into the text; `inner`'s values stay
/// bound.
pub fn kept(
    inner: &Statement,
    k: u32,
    order: Order,
    bound: Option<Bound>,
    limit: Option<usize>,
) -> Statement {
    let key = order.key();
    let mut sql = format!("{} {} NOT {}", inner.sql, join_having(inner), small(k));
    match bound {
        Some(Bound::AtLeast(v)) => sql.push_str(&format!(" AND {key} >= {v}")),
        Some(Bound::AtMost(v)) => sql.push_str(&format!(" AND {key} <= {v}")),
        None => {}
    }
    sql.push_str(&format!(
        " ORDER BY {key} {}",
        if order.asc() { "ASC" } else { "DESC" }
    ));
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Statement {
        sql,
        params: inner.params.clone(),
        having: true,
    }
}

/// How a condition joins `inner`'s grouped rows: its own `HAVING`, or the
/// one it has.
fn join_having(inner: &Statement) -> &'static str {
    if inner.having {
        "AND"
    } else {
        "HAVING"
    }
}

/// `visit:exit_page` lists the pages visits ended on: rows of pages no
/// visit ended on (`base[7]`, exits) are not exit pages, as in Plausible.
fn exit_pages_only(s: &mut Statement, dimensions: &[Dimension]) {
    if dimensions.contains(&Dimension::ExitPage) {
        s.push(" HAVING base[7] > 0");
        s.having = true;
    }
}

/// The sum of `inner`'s small rows (the `(other)` row before its
/// dimension values are written) and how many there are; `inner` as for
/// [`kept`].
pub fn small_rows(inner: &Statement, k: u32) -> Statement {
    let sums: Vec<String> = (1..=BASE.len())
        .map(|i| format!("sum(base[{i}])"))
        .collect();
    Statement {
        sql: format!(
            "SELECT [{}] AS base, count() AS n FROM ({} {} {})",
            sums.join(", "),
            inner.sql,
            join_having(inner),
            small(k)
        ),
        params: inner.params.clone(),
        having: false,
    }
}

/// Hits dropped for an opt-out signal or a denied consent, by the time
/// dimension and reason: `SELECT [time…, reason], [hits] FROM dropped_hourly`.
pub fn dropped(tables: Tables, query: &Query, time: &[Dimension], tz: &str) -> Statement {
    let mut s = Statement::default();
    s.push("SELECT [");
    for d in time {
        dimension(&mut s, *d, tz, &query.goals);
        s.push(", ");
    }
    s.push("reason] AS dims, [toFloat64(sum(hits))] AS base FROM ");
    s.push(&tables.name("dropped_hourly"));
    s.push(" WHERE site_id = ? AND hour >= toDateTime(toUInt32(?)) AND hour < toDateTime(toUInt32(?)) AND reason IN ('opt_out', 'consent_denied') GROUP BY ");
    s.bind(query.site_id.as_str());
    s.bind(query.from.timestamp().to_string());
    s.bind(query.to.timestamp().to_string());
    for d in time {
        dimension(&mut s, *d, tz, &query.goals);
        s.push(", ");
    }
    s.push("reason");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::request::{parse, SiteView};

    fn check(body: &str, expected_where: &str, expected_params: usize) {
        let view = SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: Vec::new(),
        };
        let q = parse(
            body.as_bytes(),
            &view,
            "2026-11-23T15:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let s = build(
            Tables::Own,
            &q,
            &q.dimensions,
            "America/Toronto",
            Scope::Selected,
        );
        assert!(s.sql.contains(expected_where), "{}", s.sql);
        assert_eq!(s.sql.matches('?').count(), s.params.len());
        assert_eq!(s.params.len(), expected_params, "{:?}", s.params);
        assert!(!s.sql.contains("DROP"), "values never reach the SQL text");
    }

    #[test]
    fn rolled_shapes_and_bound_values() {
        let view = SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: Vec::new(),
        };
        let q = |body: &str| {
            parse(
                body.as_bytes(),
                &view,
                "2026-11-23T15:00:00Z".parse().unwrap(),
            )
            .unwrap()
        };
        let pages = q(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["event:page"]}"#,
        );
        assert_eq!(rollup_dimension(&pages, &pages.dimensions), Some("page"));
        assert_eq!(rollup_dimension(&pages, &[]), Some(""));
        let runs = [("2026-10-25".to_string(), "2026-11-22".to_string())];
        for hours in [vec![], vec![(1, 2), (3, 4)]] {
            let s = rolled(
                Tables::Own,
                &pages,
                &pages.dimensions,
                "America/Toronto",
                &runs,
                &hours,
            );
            assert_eq!(s.sql.matches('?').count(), s.params.len(), "{}", s.sql);
            assert_eq!(s.sql.contains("traffic_hourly"), !hours.is_empty());
        }
        for (body, expected) in [
            (
                r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["time:week"]}"#,
                Some(""),
            ),
            (
                r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["visit:exit_page"]}"#,
                Some("page"),
            ),
            (
                r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","dimensions":["time:hour"]}"#,
                None,
            ),
            (
                r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["time:day","event:page"]}"#,
                None,
            ),
            (
                r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","filters":[["is","event:page",["/"]]]}"#,
                None,
            ),
        ] {
            let q = q(body);
            assert_eq!(rollup_dimension(&q, &q.dimensions), expected, "{body}");
        }
    }

    #[test]
    fn goal_rollups_bind_every_value_and_name_goals_by_key() {
        let goals = vec![
            Goal::event("Signup", Some("Inscription ?")).unwrap(),
            Goal::page("/merci*", None).unwrap(),
        ];
        let view = SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: goals.clone(),
        };
        let q = parse(
            br#"{"site_id":"a","metrics":["visitors","conversion_rate"],"date_range":"30d","dimensions":["event:goal"]}"#,
            &view,
            "2026-11-23T15:00:00Z".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(rollup_dimension(&q, &q.dimensions), Some(GOAL_DIMENSION));
        let placeholders = |s: &Statement| s.sql.matches('?').count();
        let insert = goal_rollup("a", "2026-11-22", 7, &goals, 1, 2, "traffic_hourly");
        assert_eq!(placeholders(&insert), insert.params.len(), "{}", insert.sql);
        assert!(insert.params.contains(&"event:Signup".to_string()));
        assert!(insert.params.contains(&"page:/merci*".to_string()));
        assert!(insert.sql.contains(" PREWHERE "));
        let days = rolled_days(Tables::Own, &q, &q.dimensions, "2026-10-25", "2026-11-22");
        assert_eq!(placeholders(&days), days.params.len(), "{}", days.sql);
        assert!(days.sql.contains("rollup_goal_days") && days.sql.ends_with("= 2"));
        let plain = rolled_days(Tables::Own, &q, &[], "2026-10-25", "2026-11-22");
        assert!(!plain.sql.contains("rollup_goal_days"));
        let runs = [("2026-10-25".to_string(), "2026-11-22".to_string())];
        let s = rolled(
            Tables::Own,
            &q,
            &q.dimensions,
            "America/Toronto",
            &runs,
            &[(1, 2)],
        );
        // The display names are bound beside the keys: a `?` in a name is
        // a value, not a placeholder.
        assert_eq!(placeholders(&s), s.params.len(), "{}", s.sql);
        assert!(s.params.contains(&"Inscription ?".to_string()));
    }

    #[test]
    fn paged_reads_wrap_the_statement_and_keep_its_values_bound() {
        let view = SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: Vec::new(),
            goals: Vec::new(),
        };
        let q = parse(
            br#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["event:page"],"filters":[["contains","event:page",["'; DROP TABLE x; --"]]]}"#,
            &view,
            "2026-11-23T15:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let inner = build(
            Tables::Own,
            &q,
            &q.dimensions,
            "America/Toronto",
            Scope::Selected,
        );
        let order = crate::query::pushdown::plan(&q, crate::config::Disclosure::Protected)
            .expect("a page at a time");
        let first = kept(&inner, 5, order, None, Some(12));
        assert!(
            first.sql.ends_with(
                "GROUP BY page HAVING NOT if(base[1] > 0, base[1] < 5, base[3] + base[4] < 5) ORDER BY base[1] DESC LIMIT 12"
            ),
            "{}",
            first.sql
        );
        let second = kept(&inner, 5, order, Some(Bound::AtLeast(-4.0)), None);
        assert!(
            second
                .sql
                .ends_with("AND base[1] >= -4 ORDER BY base[1] DESC"),
            "{}",
            second.sql
        );
        let small = small_rows(&inner, 5);
        assert!(
            small.sql.starts_with("SELECT [sum(base[1]), "),
            "{}",
            small.sql
        );
        for s in [first, second, small] {
            assert_eq!(s.sql.matches('?').count(), s.params.len(), "{}", s.sql);
            assert_eq!(s.params, inner.params);
            assert!(!s.sql.contains("DROP"), "values never reach the SQL text");
        }
    }

    /// On a cluster, every statement the stats API reads with names the
    /// `Distributed` tables and filters by its subqueries with `GLOBAL IN`
    /// (see `Tables::in_subquery`); otherwise it is the single server's
    /// text, with the same values bound.
    #[test]
    fn cluster_statements_read_distributed_tables_and_global_subqueries() {
        let view = SiteView {
            timezone: chrono_tz::America::Toronto,
            campaigns: false,
            prop_keys: vec!["plan".to_string()],
            goals: vec![Goal::event("Signup", None).unwrap()],
        };
        let q = |body: &str| {
            parse(
                body.as_bytes(),
                &view,
                "2026-11-23T15:00:00Z".parse().unwrap(),
            )
            .unwrap()
        };
        let pages = q(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["event:page"]}"#,
        );
        let goals = q(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["event:goal"]}"#,
        );
        let props = q(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"30d","dimensions":["event:props:plan"]}"#,
        );
        let runs = [("2026-10-25".to_string(), "2026-11-22".to_string())];
        let tz = "America/Toronto";
        let statements = |t: Tables| {
            vec![
                build(t, &pages, &pages.dimensions, tz, Scope::Selected),
                build(t, &props, &props.dimensions, tz, Scope::Excluded),
                rolled(t, &pages, &pages.dimensions, tz, &runs, &[(1, 2)]),
                rolled(t, &goals, &goals.dimensions, tz, &runs, &[]),
                rolled_days(t, &pages, &pages.dimensions, "2026-10-25", "2026-11-22"),
                rolled_days(t, &goals, &goals.dimensions, "2026-10-25", "2026-11-22"),
                dropped(t, &pages, &[Dimension::Day], tz),
                crate::query::imported::period(
                    t,
                    &pages,
                    crate::import::ga4::Report::Pages,
                    chrono_tz::America::Toronto,
                ),
                crate::query::imported::rows(
                    t,
                    &pages,
                    &pages.dimensions,
                    crate::import::ga4::Report::Pages,
                    chrono_tz::America::Toronto,
                ),
            ]
        };
        let table = regex::Regex::new(r"FROM ([a-z_]+)").unwrap();
        let mut read = std::collections::BTreeSet::new();
        for (own, cluster) in statements(Tables::Own)
            .into_iter()
            .zip(statements(Tables::Distributed))
        {
            for name in table.captures_iter(&own.sql) {
                assert!(!name[1].ends_with("_all"), "{}", own.sql);
                read.insert(name[1].to_string());
            }
            let expected = table
                .replace_all(&own.sql, "FROM ${1}_all")
                .replace(" IN (SELECT", " GLOBAL IN (SELECT");
            assert_eq!(cluster.sql, expected);
            assert_eq!(cluster.params, own.params);
        }
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            [
                "dropped_hourly",
                "imported_daily",
                "imported_days",
                "props_hourly",
                "rollup_daily",
                "rollup_days",
                "rollup_goal_days",
                "traffic_hourly"
            ],
            "every table the stats API reads"
        );
    }

    #[test]
    fn values_are_bound_and_filters_nest() {
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is","event:page",["/'; DROP TABLE x; --","/b"]]]}"#,
            "AND (((page IN (?, ?))))",
            6,
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["or",[["contains","event:page",["blog"]],["not",["is","visit:country",["CA"]]]]]]}"#,
            "AND ((((positionCaseInsensitiveUTF8(page, ?) > 0) OR NOT ((country IN (?))))))",
            6,
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["time:day","visit:region"]}"#,
            "GROUP BY toString(toDate(hour, ?)), region",
            6,
        );
    }

    #[test]
    fn case_sensitive_modifier_folds_both_sides_or_neither() {
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is_not","event:page",["/A","/b"],{"case_sensitive":false}]]}"#,
            "AND ((NOT (lowerUTF8(page) IN (lowerUTF8(?), lowerUTF8(?)))))",
            6,
        );
        check(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["contains","event:page",["Blog"],{"case_sensitive":true}]]}"#,
            "AND (((positionUTF8(page, ?) > 0)))",
            5,
        );
    }
}
