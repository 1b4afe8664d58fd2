//! Conformance with Plausible's Stats API v2 (`POST /api/v2/query`): case
//! by case, what Plausible answers, with the Plausible test it comes from
//! (in `plausible/analytics`), and a check that tamis answers the same to
//! an exact-disclosure token, on hits sent through the real pipeline into
//! real ClickHouse (tamis in-process, so the clock decides each hit's
//! time). `tests/plausible.rs` is the Events API counterpart; the special
//! metrics (`conversion_rate`, `group_conversion_rate`) are in
//! `tests/goals.rs`.
//!
//! Every Plausible visitor is played by five tamis visitors, each from a
//! network of its own: the site's k is 5, so each of Plausible's groups
//! stays publishable. Counts of visitors, visits, pageviews and events are
//! Plausible's times five; rates, durations and views per visit are
//! Plausible's own. Each of Plausible's set-ups gets a local day (or a few)
//! of its own, and the cases ask for those days where Plausible asks for
//! `"all"` of a site that holds nothing else; Plausible's `00:25` is
//! 25 minutes after noon, local time, unless a case is about hours.
//! Plausible's test countries are played by the test GeoIP database's: EE
//! by FR (`100.64.0.0/16`), US by US (`192.0.2.0/24`, one network, so its
//! visitors are told apart by their Firefox versions).
//!
//! Where tamis differs by design (README, "Differences from Plausible's
//! Stats API"), the case is in [`kept_differences`] with tamis's answer and
//! the README's reason. Sources, by the short names the cases use, all in
//! `test/plausible_web/controllers/api/external_stats_controller/`:
//! - `query_test`: `query_test.exs`
//! - `validations_test`: `query_validations_test.exs`
//! - `parser_test`: `test/plausible/stats/query_parser_test.exs` (the
//!   parser the controller runs; its `check_error`s are the public API's
//!   answers)

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::*;
use serde_json::{json, Value};

/// Five tamis visitors per Plausible visitor (the site's k).
const SCALE: usize = 5;

/// Noon, in minutes after local midnight: where Plausible's `00:00` falls.
const NOON: i64 = 12 * 60;

const MAC_CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const WINDOWS_FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const GOOGLE: &str = "https://www.google.com/";
const TWITTER: &str = "https://twitter.com/";

/// The site's goals and accepted events, as Plausible's cases insert them.
const SITE: &str = r#"
event_names = ["Signup", "Login", "Irrelevant", "NotConfigured", "404",
               "Onboarding conversion: Step 1", "Onboarding conversion: Step 2", "Unrelated",
               "Purchase"]
prop_keys = ["cost"]
[[site.goal]]
event = "Signup"
[[site.goal]]
event = "Onboarding conversion: Step 1"
[[site.goal]]
event = "Onboarding conversion: Step 2"
[[site.goal]]
event = "Unrelated"
[[site.goal]]
page = "/register"
[[site.goal]]
page = "/blog**"
[[site.goal]]
page = "/**register"
[[site.goal]]
page = "/conversion"
"#;

/// Where a Plausible visitor's tamis visitors come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Country {
    /// `100.64.N.1`, a network per visitor: FR in the test GeoIP database.
    Fr,
    /// `192.0.2.1`, Firefox version 100 + N: US.
    Us,
}

/// One Plausible visitor: its hits (minutes after local midnight, event
/// name, path), the referrer of its first hit, its browser and country,
/// and the host its pages are on.
#[derive(Debug, Clone)]
struct Visitor {
    hits: Vec<(i64, &'static str, &'static str)>,
    host: &'static str,
    /// The `cost` property its custom events carry, if any.
    cost: Option<&'static str>,
    referrer: Option<&'static str>,
    agent: &'static str,
    country: Country,
}

/// A visitor viewing `path` at Plausible's `00:00` (local noon).
fn pageview_at(path: &'static str) -> Visitor {
    pageviews(&[(0, path)])
}

/// A visitor viewing pages, each `(minutes after Plausible's 00:00, path)`.
fn pageviews(hits: &[(i64, &'static str)]) -> Visitor {
    Visitor {
        hits: hits
            .iter()
            .map(|(at, path)| (NOON + at, "pageview", *path))
            .collect(),
        host: "example.org",
        cost: None,
        referrer: None,
        agent: FIREFOX,
        country: Country::Fr,
    }
}

/// A visitor sending events, each `(minutes after 00:00, name, path)`.
fn events(hits: &[(i64, &'static str, &'static str)]) -> Visitor {
    Visitor {
        hits: hits
            .iter()
            .map(|(at, name, path)| (NOON + at, *name, *path))
            .collect(),
        ..pageview_at("/")
    }
}

impl Visitor {
    fn in_country(self, country: Country) -> Visitor {
        Visitor { country, ..self }
    }
    fn cost(self, cost: &'static str) -> Visitor {
        Visitor {
            cost: Some(cost),
            ..self
        }
    }
    fn on_host(self, host: &'static str) -> Visitor {
        Visitor { host, ..self }
    }
    fn agent(self, agent: &'static str) -> Visitor {
        Visitor { agent, ..self }
    }
    fn referrer(self, referrer: &'static str) -> Visitor {
        Visitor {
            referrer: Some(referrer),
            ..self
        }
    }
    /// The same hits at local times (minutes after midnight), for the cases
    /// about hours.
    fn at_local(self, minutes: &[i64]) -> Visitor {
        let hits = self
            .hits
            .iter()
            .zip(minutes)
            .map(|((_, name, path), at)| (*at, *name, *path))
            .collect();
        Visitor { hits, ..self }
    }
}

/// Plausible's set-ups: each local day (America/Toronto) and its visitors,
/// in the order they are played (the clock only moves forward).
fn days() -> Vec<(&'static str, Vec<Visitor>)> {
    let pv = pageview_at;
    let mut days = vec![
        // query_test, "shows last 6 months of visitors" (2020-08-13,
        // 2020-12-31, 2021-01-01 twice, in July 2020 to January 2021).
        ("2025-03-13", vec![pv("/")]),
        ("2025-07-31", vec![pv("/")]),
        ("2025-08-01", vec![pv("/"), pv("/")]),
        // query_test, "shows a custom range with monthly interval".
        ("2025-09-01", vec![pageviews(&[(0, "/"), (5, "/")])]),
        ("2025-10-01", vec![pv("/")]),
        ("2025-10-02", vec![pv("/")]),
        // query_test, "timeseries with explicit order_by" (2021-01-01 to -04).
        ("2025-12-01", vec![pv("/")]),
        ("2025-12-02", vec![pv("/"), pv("/"), pv("/")]),
        ("2025-12-03", vec![pv("/"), pv("/")]),
        ("2025-12-04", vec![pv("/"), pv("/")]),
    ];
    days.extend([
        // query_test, "can filter by hostname" (one.example.com and
        // example.com are one.example.org and example.org here; the site's
        // default host is blog.example.net).
        (
            HOSTS,
            vec![
                pv("/").on_host("one.example.org"),
                pageviews(&[(25, "/")]),
                pv("/").on_host("blog.example.net"),
            ],
        ),
        // query_test, "breakdown by custom event property" (filtered by
        // event:name): its answer's Purchase events, 3 visitors with cost
        // 16, 2 with 14 and 1 without (the `(none)` row).
        (
            PROPS,
            vec![
                events(&[(0, "Purchase", "/")]).cost("16"),
                events(&[(0, "Purchase", "/")]).cost("16"),
                events(&[(0, "Purchase", "/")]).cost("16"),
                events(&[(25, "Purchase", "/")]).cost("14"),
                events(&[(26, "Purchase", "/")]).cost("14"),
                events(&[(25, "Purchase", "/")]),
            ],
        ),
        // query_test, "aggregates all metrics in a single query".
        (AGGREGATES, vec![pageviews(&[(0, "/"), (25, "/")]), pv("/")]),
        // query_test, "aggregate views_per_visit rounds to two decimal places".
        (
            VIEWS_PER_VISIT,
            vec![
                pageviews(&[(0, "/"), (25, "/")]),
                pageviews(&[(0, "/"), (25, "/")]),
                pv("/"),
            ],
        ),
        // query_test, "can filter by source" and "can filter by channel".
        (
            SOURCE_FILTER,
            vec![pageviews(&[(0, "/"), (25, "/")]).referrer(GOOGLE), pv("/")],
        ),
        // query_test, "can filter by no source/referrer".
        (
            NO_SOURCE,
            vec![pageviews(&[(0, "/"), (25, "/")]), pv("/").referrer(GOOGLE)],
        ),
        // query_test, "breakdown by visit:source" and "… visit:channel".
        (
            SOURCES,
            vec![
                pv("/").referrer(GOOGLE),
                pageviews(&[(25, "/")]).referrer(GOOGLE),
                pv("/"),
            ],
        ),
        // query_test, "can filter by page".
        (
            PAGE_FILTER,
            vec![
                pageviews(&[(0, "/"), (25, "/blogpost")]),
                pv("/"),
                pv("/blogpost"),
            ],
        ),
        // query_test, "combining filters" (EE is FR here, the others US).
        (
            COMBINED,
            vec![
                pageviews(&[(0, "/blogpost"), (25, "/")]),
                pv("/").in_country(Country::Us),
                pv("/blogpost").in_country(Country::Us),
            ],
        ),
        // query_test, "can filter by country".
        (
            COUNTRY_FILTER,
            vec![
                pageviews(&[(0, "/"), (25, "/")]),
                pv("/").in_country(Country::Us),
            ],
        ),
        // query_test, "breakdown by visit:country".
        (
            COUNTRIES,
            vec![
                pv("/"),
                pageviews(&[(25, "/")]),
                pv("/").in_country(Country::Us),
            ],
        ),
        // query_test, "contains page filter", "contains_not page filter".
        (
            CONTAINS,
            vec![pv("/en/page1"), pv("/en/page2"), pv("/pl/page1")],
        ),
        // query_test, "contains page filter case insensitive" and
        // "contains_not page filter case insensitive".
        (
            CONTAINS_CASE,
            vec![pv("/en/page1"), pv("/EN/page2"), pv("/pl/page1")],
        ),
        // query_test, "contains with and/or/not filters".
        (
            NESTED,
            vec![
                pv("/en/page1"),
                pv("/en/page2"),
                pv("/eng/page1"),
                pv("/pl/page1"),
                pv("/gb/page1"),
            ],
        ),
        // query_test, "`matches` operator", "`matches_not` operator".
        (
            MATCHES,
            vec![
                pv("/user/1234"),
                pv("/user/789/contributions"),
                pv("/blog/user/1234"),
                pv("/user/ef/contributions"),
                pv("/other/path"),
            ],
        ),
        // query_test, "contains and member filter combined".
        (
            MEMBERS,
            vec![
                pv("/en/page1"),
                pv("/en/page2"),
                pv("/pl/page1"),
                pv("/ee/page1"),
            ],
        ),
        // query_test, "can filter event:page with a wildcard".
        (
            PAGES_CONTAINING,
            vec![
                pv("/en/page1"),
                pv("/en/page2"),
                pv("/en/page2"),
                pv("/pl/page1"),
            ],
        ),
        // query_test, "explicit order_by". Plausible's test stores the
        // label "Linux"; its ingestion names Linux "GNU/Linux", as tamis does.
        (
            OS_AND_BROWSER,
            vec![
                pv("/").agent(CHROME),
                pv("/").agent(WINDOWS_FIREFOX),
                pv("/").agent(FIREFOX),
                pv("/").agent(FIREFOX),
                pv("/").agent(MAC_CHROME),
            ],
        ),
        // query_test, "event:page filter for breakdown by session props".
        (
            BROWSERS_OF_PAGE,
            vec![
                pv("/ignore").agent(CHROME),
                pv("/plausible.io").agent(CHROME),
                pageviews(&[(25, "/plausible.io")]).agent(CHROME),
                pv("/plausible.io").agent(SAFARI_IPHONE),
            ],
        ),
        // query_test, "event:page filter is interpreted as entry_page
        // filter only for bounce_rate".
        (
            ENTRY_BOUNCES,
            vec![
                pageviews(&[(0, "/ignore"), (1, "/plausible.io")]).agent(CHROME),
                pageviews(&[(0, "/important-page"), (1, "/")]).agent(CHROME),
                pageviews(&[(1, "/plausible.io")]).agent(CHROME),
            ],
        ),
        // query_test, "metrics=bounce_rate does not add visits to the response".
        (
            ENTRY_PAGES,
            vec![
                pageviews(&[(0, "/entry-page-1"), (10, "/some-page")]),
                pageviews(&[(5, "/entry-page-2")]).referrer(GOOGLE),
            ],
        ),
        // query_test, "all metrics for breakdown by event prop" (by event:page).
        (
            PAGES_ALL_METRICS,
            vec![
                pageviews(&[(0, "/"), (10, "/plausible.io")]),
                pageviews(&[(25, "/")]),
                pv("/plausible.io"),
            ],
        ),
        // query_test, "can breakdown by event:name".
        (
            NAMES,
            vec![
                events(&[(0, "Signup", "/")]),
                events(&[(0, "Signup", "/")]),
                pageviews(&[(25, "/")]),
            ],
        ),
        // query_test, "can breakdown by event:name with visitors and events
        // metrics" (Plausible's seconds are minutes here).
        (
            NAMES_AND_EVENTS,
            vec![
                events(&[
                    (0, "pageview", "/non-existing"),
                    (0, "404", "/non-existing"),
                    (2, "pageview", "/non-existing"),
                    (2, "404", "/non-existing"),
                    (3, "pageview", "/non-existing"),
                ]),
                pageviews(&[(1, "/non-existing")]),
            ],
        ),
        // query_test, "IN filter for event:name" and "… case insensitive".
        (
            NAMES_IN,
            vec![
                events(&[(0, "Signup", "/")]),
                events(&[(0, "Signup", "/")]),
                events(&[(0, "Login", "/")]),
                events(&[(0, "Irrelevant", "/")]),
            ],
        ),
        // query_test, "filtering by event:name".
        (
            NAME_FILTER,
            vec![
                events(&[(0, "Signup", "/")]),
                events(&[(25, "Signup", "/"), (25, "Signup", "/")]),
                pv("/"),
            ],
        ),
        // query_test, "can breakdown by event:page when filtering by event:name".
        (
            PAGES_OF_NAME,
            vec![
                events(&[(0, "Signup", "/pageA")]),
                events(&[(0, "Signup", "/pageA")]),
                events(&[(0, "Signup", "/pageB")]),
                pageviews(&[(25, "/pageB")]).referrer(TWITTER),
            ],
        ),
        // query_test, "filtering by a custom event goal".
        (
            EVENT_GOAL,
            vec![
                events(&[(0, "Signup", "/")]),
                events(&[(25, "Signup", "/"), (25, "Signup", "/")]),
                events(&[(25, "NotConfigured", "/")]),
            ],
        ),
        // query_test, "filtering by a simple pageview goal".
        (
            PAGE_GOAL,
            vec![
                pv("/register"),
                pageviews(&[(25, "/register"), (25, "/register")]),
                pageviews(&[(25, "/")]),
            ],
        ),
        // query_test, "filtering by a wildcard pageview goal".
        (
            WILDCARD_GOAL,
            vec![
                pv("/blog/post-1"),
                pageviews(&[(0, "/blog/post-2"), (0, "/blog")]),
                pv("/"),
            ],
        ),
        // query_test, "filtering by multiple mixed goals".
        (
            MIXED_GOALS,
            vec![
                pv("/account/register"),
                events(&[(0, "pageview", "/register"), (0, "Signup", "/register")]),
                pv("/"),
            ],
        ),
        // query_test, "goal contains filter for goal breakdown".
        (
            GOALS_CONTAINING,
            vec![
                events(&[(0, "Onboarding conversion: Step 1", "/")]),
                events(&[(0, "Onboarding conversion: Step 1", "/")]),
                events(&[(0, "Onboarding conversion: Step 2", "/")]),
                events(&[(0, "Unrelated", "/")]),
                pv("/conversion"),
            ],
        ),
        // query_test, "IN filter for visit:browser".
        (
            PAGES_OF_BROWSERS,
            vec![
                pv("/ignore").agent(FIREFOX),
                pv("/plausible.io").agent(CHROME),
                pv("/plausible.io").agent(SAFARI_IPHONE),
                pv("/important-page").agent(SAFARI_IPHONE),
            ],
        ),
        // query_test, describe "pagination".
        (
            PAGINATION,
            ["/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8"]
                .into_iter()
                .map(pv)
                .collect(),
        ),
        // query_test, "shows hourly data for a certain date with time_labels"
        // (00:00, 00:10 and 23:59, local time).
        (
            HOURS,
            vec![
                pageviews(&[(0, "/"), (10, "/")]).at_local(&[0, 10]),
                pv("/").at_local(&[23 * 60 + 59]),
            ],
        ),
        // query_test, "multiple breakdown timeseries with sources"
        // (2021-01-01 to -03).
        ("2026-02-19", vec![pv("/").referrer(GOOGLE)]),
        (
            "2026-02-20",
            vec![pv("/"), pv("/").referrer(GOOGLE), pv("/").referrer(GOOGLE)],
        ),
        (
            "2026-02-21",
            vec![pv("/"), pv("/"), pv("/").referrer(TWITTER)],
        ),
        // query_test, "shows last 7 days of visitors with time labels"
        // (2021-01-01 00:00 and 2021-01-07 23:59).
        ("2026-02-23", vec![pv("/").at_local(&[0])]),
        ("2026-03-01", vec![pv("/").at_local(&[23 * 60 + 59])]),
    ]);
    days
}

const HOSTS: &str = "2026-01-02";
const PROPS: &str = "2026-01-03";
const AGGREGATES: &str = "2026-01-05";
const VIEWS_PER_VISIT: &str = "2026-01-06";
const SOURCE_FILTER: &str = "2026-01-07";
const NO_SOURCE: &str = "2026-01-08";
const SOURCES: &str = "2026-01-09";
const PAGE_FILTER: &str = "2026-01-12";
const COMBINED: &str = "2026-01-13";
const COUNTRY_FILTER: &str = "2026-01-14";
const COUNTRIES: &str = "2026-01-15";
const CONTAINS: &str = "2026-01-16";
const CONTAINS_CASE: &str = "2026-01-19";
const NESTED: &str = "2026-01-20";
const MATCHES: &str = "2026-01-21";
const MEMBERS: &str = "2026-01-22";
const PAGES_CONTAINING: &str = "2026-01-23";
const OS_AND_BROWSER: &str = "2026-01-26";
const BROWSERS_OF_PAGE: &str = "2026-01-27";
const ENTRY_BOUNCES: &str = "2026-01-28";
const ENTRY_PAGES: &str = "2026-01-29";
const PAGES_ALL_METRICS: &str = "2026-01-30";
const NAMES: &str = "2026-02-02";
const NAMES_AND_EVENTS: &str = "2026-02-03";
const NAMES_IN: &str = "2026-02-04";
const NAME_FILTER: &str = "2026-02-05";
const PAGES_OF_NAME: &str = "2026-02-06";
const EVENT_GOAL: &str = "2026-02-09";
const PAGE_GOAL: &str = "2026-02-10";
const WILDCARD_GOAL: &str = "2026-02-11";
const MIXED_GOALS: &str = "2026-02-12";
const GOALS_CONTAINING: &str = "2026-02-13";
const PAGES_OF_BROWSERS: &str = "2026-02-16";
const PAGINATION: &str = "2026-02-17";
const HOURS: &str = "2026-02-18";
/// The server's day when the cases are asked.
/// The server's day when the cases are asked: "7d" is the seven days
/// before it, the days of "shows last 7 days of visitors with time labels".
const TODAY: &str = "2026-03-02";

/// One Stats API case: the query (`site_id` added), Plausible's `results`
/// (visitor-derived counts times [`SCALE`]) and the `meta` entries its
/// test checks.
struct Case {
    /// Source, test name.
    source: &'static str,
    query: Value,
    results: Value,
    meta: Value,
}

/// A case on one scenario day (`date_range` is that day).
fn on(source: &'static str, day: &str, query: Value, results: Value) -> Case {
    let mut query = query;
    query["date_range"] = json!([day, day]);
    Case {
        source,
        query,
        results,
        meta: json!({}),
    }
}

/// Plausible's single aggregate row.
fn aggregate(metrics: Value) -> Value {
    json!([{"dimensions": [], "metrics": metrics}])
}

/// Breakdown rows, `(dimension values, metrics)`.
fn rows(rows: &[(Value, Value)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(d, m)| json!({"dimensions": d, "metrics": m}))
            .collect(),
    )
}

fn cases() -> Vec<Case> {
    let s = |n: usize| n * SCALE;
    let all_metrics = json!(["pageviews", "visitors", "bounce_rate", "visit_duration"]);
    let pages = |from: usize, to: usize| {
        rows(
            &(from..=to)
                .map(|p| (json!([format!("/{p}")]), json!([s(1)])))
                .collect::<Vec<_>>(),
        )
    };
    let paginated = |limit: usize, offset: usize| {
        json!({"metrics": ["pageviews"], "dimensions": ["event:page"],
               "order_by": [["event:page", "asc"]], "include": {"total_rows": true},
               "pagination": {"limit": limit, "offset": offset}})
    };
    let mut cases = vec![
        // Aggregates.
        on(
            "query_test, \"aggregates a single metric\"",
            AGGREGATES,
            json!({"metrics": ["pageviews"]}),
            aggregate(json!([s(3)])),
        ),
        on(
            "query_test, \"aggregates all metrics in a single query\"",
            AGGREGATES,
            json!({"metrics": ["pageviews", "visits", "views_per_visit", "visitors", "bounce_rate", "visit_duration"]}),
            aggregate(json!([s(3), s(2), 1.5, s(2), 50, 750])),
        ),
        on(
            "query_test, \"aggregate views_per_visit rounds to two decimal places\"",
            VIEWS_PER_VISIT,
            json!({"metrics": ["views_per_visit"]}),
            aggregate(json!([1.67])),
        ),
        // Filters.
        on(
            "query_test, \"can filter by source\"",
            SOURCE_FILTER,
            json!({"metrics": all_metrics, "filters": [["is", "visit:source", ["Google"]]]}),
            aggregate(json!([s(2), s(1), 0, 1500])),
        ),
        on(
            "query_test, \"can filter by channel\"",
            SOURCE_FILTER,
            json!({"metrics": all_metrics, "filters": [["is", "visit:channel", ["Organic Search"]]]}),
            aggregate(json!([s(2), s(1), 0, 1500])),
        ),
        on(
            "query_test, \"can filter by no source/referrer\"",
            NO_SOURCE,
            json!({"metrics": all_metrics, "filters": [["is", "visit:source", ["Direct / None"]]]}),
            aggregate(json!([s(2), s(1), 0, 1500])),
        ),
        on(
            "query_test, \"can filter by country\"",
            COUNTRY_FILTER,
            json!({"metrics": all_metrics, "filters": [["is", "visit:country", ["FR"]]]}),
            aggregate(json!([s(2), s(1), 0, 1500])),
        ),
        on(
            "query_test, \"combining filters\"",
            COMBINED,
            json!({"metrics": all_metrics, "filters": [
                ["is", "event:page", ["/blogpost"]], ["is", "visit:country", ["FR"]]]}),
            aggregate(json!([s(1), s(1), 0, 1500])),
        ),
        on(
            "query_test, \"contains page filter\"",
            CONTAINS,
            json!({"metrics": ["visitors"], "filters": [["contains", "event:page", ["/en/"]]]}),
            aggregate(json!([s(2)])),
        ),
        on(
            "query_test, \"contains_not page filter\"",
            CONTAINS,
            json!({"metrics": ["visitors"], "filters": [["contains_not", "event:page", ["/en/"]]]}),
            aggregate(json!([s(1)])),
        ),
        on(
            "query_test, \"contains page filter case insensitive\"",
            CONTAINS_CASE,
            json!({"metrics": ["visitors"],
                   "filters": [["contains", "event:page", ["/En/"], {"case_sensitive": false}]]}),
            aggregate(json!([s(2)])),
        ),
        on(
            "query_test, \"contains_not page filter case insensitive\"",
            CONTAINS_CASE,
            json!({"metrics": ["visitors"],
                   "filters": [["contains_not", "event:page", ["/En/"], {"case_sensitive": false}]]}),
            aggregate(json!([s(1)])),
        ),
        on(
            "query_test, \"contains with and/or/not filters\"",
            NESTED,
            json!({"metrics": ["visitors"], "filters": [["or", [
                ["and", [["contains", "event:page", ["/en"]],
                         ["not", ["contains", "event:page", ["/eng"]]]]],
                ["contains", "event:page", ["/gb"]]]]]}),
            aggregate(json!([s(3)])),
        ),
        on(
            "query_test, \"`matches` operator\"",
            MATCHES,
            json!({"metrics": ["visitors"], "filters": [["matches", "event:page", ["^/user/[0-9]+"]]]}),
            aggregate(json!([s(2)])),
        ),
        on(
            "query_test, \"`matches_not` operator\"",
            MATCHES,
            json!({"metrics": ["visitors"], "filters": [["matches_not", "event:page", ["^/user/[0-9]+"]]]}),
            aggregate(json!([s(3)])),
        ),
        on(
            "query_test, \"contains and member filter combined\"",
            MEMBERS,
            json!({"metrics": ["visitors"], "filters": [["contains", "event:page", ["/en/", "/pl/"]]]}),
            aggregate(json!([s(3)])),
        ),
        on(
            "query_test, \"filtering by event:name\"",
            NAME_FILTER,
            json!({"metrics": ["visitors", "pageviews"], "filters": [["is", "event:name", ["Signup"]]]}),
            aggregate(json!([s(2), 0])),
        ),
        on(
            "query_test, \"IN filter for event:name case insensitive\"",
            NAMES_IN,
            json!({"metrics": ["visitors"],
                   "filters": [["is", "event:name", ["signup", "LOGIN"], {"case_sensitive": false}]]}),
            aggregate(json!([s(3)])),
        ),
        // Goals as filters (conversion rates: tests/goals.rs).
        on(
            "query_test, \"filtering by a custom event goal\"",
            EVENT_GOAL,
            json!({"metrics": ["visitors", "events"], "filters": [["is", "event:goal", ["Signup"]]]}),
            aggregate(json!([s(2), s(3)])),
        ),
        on(
            "query_test, \"filtering by a simple pageview goal\"",
            PAGE_GOAL,
            json!({"metrics": ["visitors", "pageviews"], "filters": [["is", "event:goal", ["Visit /register"]]]}),
            aggregate(json!([s(2), s(3)])),
        ),
        on(
            "query_test, \"filtering by a wildcard pageview goal\"",
            WILDCARD_GOAL,
            json!({"metrics": ["visitors", "pageviews"], "filters": [["is", "event:goal", ["Visit /blog**"]]]}),
            aggregate(json!([s(2), s(3)])),
        ),
        on(
            "query_test, \"filtering by multiple mixed goals\"",
            MIXED_GOALS,
            json!({"metrics": ["visitors", "events", "pageviews"],
                   "filters": [["is", "event:goal", ["Signup", "Visit /**register"]]]}),
            aggregate(json!([s(2), s(3), s(2)])),
        ),
        on(
            "query_test, \"goal contains filter for goal breakdown\"",
            GOALS_CONTAINING,
            json!({"metrics": ["visitors"], "dimensions": ["event:goal"],
                   "filters": [["contains", "event:goal", ["conversion"]]]}),
            rows(&[
                (json!(["Onboarding conversion: Step 1"]), json!([s(2)])),
                (json!(["Onboarding conversion: Step 2"]), json!([s(1)])),
                (json!(["Visit /conversion"]), json!([s(1)])),
            ]),
        ),
        // Breakdowns.
        on(
            "query_test, \"breakdown by visit:source\"",
            SOURCES,
            json!({"metrics": ["visitors"], "dimensions": ["visit:source"]}),
            rows(&[
                (json!(["Google"]), json!([s(2)])),
                (json!(["Direct / None"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"breakdown by visit:channel\"",
            SOURCES,
            json!({"metrics": ["visitors"], "dimensions": ["visit:channel"]}),
            rows(&[
                (json!(["Organic Search"]), json!([s(2)])),
                (json!(["Direct"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"breakdown by visit:country\" (EE is FR here)",
            COUNTRIES,
            json!({"metrics": ["visitors"], "dimensions": ["visit:country"]}),
            rows(&[
                (json!(["FR"]), json!([s(2)])),
                (json!(["US"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"explicit order_by\"",
            OS_AND_BROWSER,
            json!({"metrics": ["visitors"], "dimensions": ["visit:os", "visit:browser"],
                   "order_by": [["visitors", "asc"], ["visit:browser", "desc"], ["visit:os", "asc"]]}),
            rows(&[
                (json!(["Windows", "Firefox"]), json!([s(1)])),
                (json!(["Mac", "Chrome"]), json!([s(1)])),
                (json!(["Windows", "Chrome"]), json!([s(1)])),
                (json!(["GNU/Linux", "Firefox"]), json!([s(2)])),
            ]),
        ),
        on(
            "query_test, \"can filter event:page with a wildcard\"",
            PAGES_CONTAINING,
            json!({"metrics": ["visitors"], "dimensions": ["event:page"],
                   "filters": [["contains", "event:page", ["/en/"]]]}),
            rows(&[
                (json!(["/en/page2"]), json!([s(2)])),
                (json!(["/en/page1"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"event:page filter for breakdown by session props\"",
            BROWSERS_OF_PAGE,
            json!({"metrics": ["visitors"], "dimensions": ["visit:browser"],
                   "filters": [["is", "event:page", ["/plausible.io"]]]}),
            rows(&[
                (json!(["Chrome"]), json!([s(2)])),
                (json!(["Safari"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"event:page filter is interpreted as entry_page filter only for bounce_rate\"",
            ENTRY_BOUNCES,
            json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["visit:browser"],
                   "filters": [["is", "event:page", ["/plausible.io", "/important-page"]]]}),
            rows(&[(json!(["Chrome"]), json!([s(3), 50]))]),
        ),
        on(
            "query_test, \"metrics=bounce_rate does not add visits to the response\"",
            ENTRY_PAGES,
            json!({"metrics": ["bounce_rate"], "dimensions": ["visit:entry_page"],
                   "order_by": [["visit:entry_page", "asc"]]}),
            rows(&[
                (json!(["/entry-page-1"]), json!([0])),
                (json!(["/entry-page-2"]), json!([100])),
            ]),
        ),
        on(
            "query_test, \"can breakdown by event:name\"",
            NAMES,
            json!({"metrics": ["visitors"], "dimensions": ["event:name"]}),
            rows(&[
                (json!(["Signup"]), json!([s(2)])),
                (json!(["pageview"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"can breakdown by event:name with visitors and events metrics\"",
            NAMES_AND_EVENTS,
            json!({"metrics": ["visitors", "events"], "dimensions": ["event:name"]}),
            rows(&[
                (json!(["pageview"]), json!([s(2), s(4)])),
                (json!(["404"]), json!([s(1), s(2)])),
            ]),
        ),
        on(
            "query_test, \"IN filter for event:name\"",
            NAMES_IN,
            json!({"metrics": ["visitors"], "dimensions": ["event:name"],
                   "filters": [["is", "event:name", ["Signup", "Login"]]]}),
            rows(&[
                (json!(["Signup"]), json!([s(2)])),
                (json!(["Login"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"can breakdown by event:page when filtering by event:name\"",
            PAGES_OF_NAME,
            json!({"metrics": ["visitors"], "dimensions": ["event:page"],
                   "filters": [["is", "event:name", ["Signup"]]]}),
            rows(&[
                (json!(["/pageA"]), json!([s(2)])),
                (json!(["/pageB"]), json!([s(1)])),
            ]),
        ),
        on(
            "query_test, \"IN filter for visit:browser\"",
            PAGES_OF_BROWSERS,
            json!({"metrics": ["visitors"], "dimensions": ["event:page"],
                   "filters": [["is", "visit:browser", ["Chrome", "Safari"]]]}),
            rows(&[
                (json!(["/plausible.io"]), json!([s(2)])),
                (json!(["/important-page"]), json!([s(1)])),
            ]),
        ),
        // Pagination and include.total_rows.
        Case {
            meta: json!({"total_rows": 8}),
            ..on(
                "query_test, \"pagination above total count - all results are returned\"",
                PAGINATION,
                paginated(10, 0),
                pages(1, 8),
            )
        },
        Case {
            meta: json!({"total_rows": 8}),
            ..on(
                "query_test, \"pagination with offset\" (limit 3)",
                PAGINATION,
                paginated(3, 0),
                pages(1, 3),
            )
        },
        Case {
            meta: json!({"total_rows": 8}),
            ..on(
                "query_test, \"pagination with offset\" (limit 3, offset 3)",
                PAGINATION,
                paginated(3, 3),
                pages(4, 6),
            )
        },
        Case {
            meta: json!({"total_rows": 8}),
            ..on(
                "query_test, \"pagination with offset\" (limit 3, offset 6)",
                PAGINATION,
                paginated(3, 6),
                pages(7, 8),
            )
        },
        on(
            "query_test, \"pagination with offset\" (limit 3, offset 9)",
            PAGINATION,
            paginated(3, 9),
            json!([]),
        ),
        // Time series.
        Case {
            meta: json!({"time_labels": (0..24)
                .map(|h| format!("{HOURS} {h:02}:00:00"))
                .collect::<Vec<_>>()}),
            ..on(
                "query_test, \"shows hourly data for a certain date with time_labels\"",
                HOURS,
                json!({"metrics": ["visitors", "pageviews", "visits", "visit_duration", "bounce_rate"],
                       "dimensions": ["time:hour"], "include": {"time_labels": true}}),
                rows(&[
                    (json!([format!("{HOURS} 00:00:00")]), json!([s(1), s(2), s(1), 600, 0])),
                    (json!([format!("{HOURS} 23:00:00")]), json!([s(1), s(1), s(1), 0, 100])),
                ]),
            )
        },
    ];
    let seven_days = rows(&[
        (json!(["2026-02-23"]), json!([s(1)])),
        (json!(["2026-03-01"]), json!([s(1)])),
    ]);
    let seven_labels = json!({"time_labels": [
        "2026-02-23", "2026-02-24", "2026-02-25", "2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01"]});
    cases.extend([
        Case {
            source: "query_test, \"shows last 7 days of visitors with time labels\"",
            query: json!({"metrics": ["visitors"], "date_range": ["2026-02-23", "2026-03-01"],
                          "dimensions": ["time"], "include": {"time_labels": true}}),
            results: seven_days.clone(),
            meta: seven_labels.clone(),
        },
        Case {
            source: "parser_test, \"parsing public shortcut options for date_range\" (\"7d\": the 7 days before today)",
            query: json!({"metrics": ["visitors"], "date_range": "7d",
                          "dimensions": ["time"], "include": {"time_labels": true}}),
            results: seven_days,
            meta: seven_labels,
        },
        Case {
            source: "query_test, \"shows last 6 months of visitors\" (July 2020 to January 2021)",
            query: json!({"metrics": ["visitors"], "date_range": ["2025-02-01", "2025-08-31"],
                          "dimensions": ["time:month"]}),
            results: rows(&[
                (json!(["2025-03-01"]), json!([s(1)])),
                (json!(["2025-07-01"]), json!([s(1)])),
                (json!(["2025-08-01"]), json!([s(2)])),
            ]),
            meta: json!({}),
        },
        Case {
            source: "query_test, \"shows a custom range with monthly interval\"",
            query: json!({"metrics": ["pageviews", "visitors", "bounce_rate", "visit_duration"],
                          "date_range": ["2025-09-01", "2025-10-02"], "dimensions": ["time:month"]}),
            results: rows(&[
                (json!(["2025-09-01"]), json!([s(2), s(1), 0, 300])),
                (json!(["2025-10-01"]), json!([s(2), s(2), 100, 0])),
            ]),
            meta: json!({}),
        },
        Case {
            source: "query_test, \"timeseries with explicit order_by\" (2020-12-01 to 2021-01-04)",
            query: json!({"metrics": ["pageviews"], "date_range": ["2025-10-31", "2025-12-04"],
                          "dimensions": ["time"], "order_by": [["pageviews", "desc"], ["time", "asc"]]}),
            results: rows(&[
                (json!(["2025-12-02"]), json!([s(3)])),
                (json!(["2025-12-03"]), json!([s(2)])),
                (json!(["2025-12-04"]), json!([s(2)])),
                (json!(["2025-12-01"]), json!([s(1)])),
            ]),
            meta: json!({}),
        },
        Case {
            source: "query_test, \"multiple breakdown timeseries with sources\"",
            query: json!({"metrics": ["visitors"], "date_range": ["2026-02-19", "2026-02-21"],
                          "dimensions": ["time", "visit:source"]}),
            results: rows(&[
                (json!(["2026-02-19", "Google"]), json!([s(1)])),
                (json!(["2026-02-20", "Google"]), json!([s(2)])),
                (json!(["2026-02-20", "Direct / None"]), json!([s(1)])),
                (json!(["2026-02-21", "Direct / None"]), json!([s(2)])),
                (json!(["2026-02-21", "Twitter"]), json!([s(1)])),
            ]),
            meta: json!({}),
        },
    ]);
    // not yet: query_test, "can filter by page" (its set-up is played, on
    // PAGE_FILTER): Plausible answers [2, 2, 100, 750] (pageviews,
    // visitors, bounce_rate, visit_duration; here [10, 10, 100, 750]),
    // tamis [10, 10, 100, 0]. Plausible's duration is that of the visits
    // that saw the page; tamis keeps a visit's duration on its entry page
    // only (README, "Counting notes"), so it counts the visit that entered
    // there.
    // not yet: query_test, "all metrics for breakdown by event prop" (by
    // event:page, played on PAGES_ALL_METRICS): Plausible's `visits` of
    // /plausible.io is 2 (here 10), the visits that saw the page; tamis
    // answers 5, the visits that entered there (README, "Counting notes").
    // Every other number of the case is Plausible's.
    cases.push(on(
        "query_test, \"breakdown by custom event property\"",
        PROPS,
        json!({"metrics": ["visitors"], "dimensions": ["event:props:cost"],
               "filters": [["is", "event:name", ["Purchase"]]]}),
        rows(&[
            (json!(["16"]), json!([s(3)])),
            (json!(["14"]), json!([s(2)])),
            (json!(["(none)"]), json!([s(1)])),
        ]),
    ));
    // The same `(none)` row as a filter (parser_test, "does not fail if
    // using session metric with event filter", accepts `is "(none)"`).
    cases.push(on(
        "query_test, \"breakdown by custom event property\", its (none) row as a filter",
        PROPS,
        json!({"metrics": ["visitors"], "filters": [["is", "event:name", ["Purchase"]],
                                                     ["is", "event:props:cost", ["(none)"]]]}),
        aggregate(json!([s(1)])),
    ));
    cases.push(on(
        "query_test, \"can filter by hostname\"",
        HOSTS,
        json!({"metrics": ["pageviews", "visitors", "bounce_rate", "visit_duration"],
               "filters": [["contains", "event:hostname", ["one.example.org", "example.org"]]]}),
        aggregate(json!([s(2), s(2), 100, 0])),
    ));
    cases
}

/// A refusal: Plausible's status is 400 and its `error` is `plausible`;
/// tamis's is `field: ` then Plausible's words (README, "Errors"), whole,
/// or containing them where Plausible's test matches part of its message.
struct Refusal {
    source: &'static str,
    query: Value,
    /// The field tamis names.
    field: &'static str,
    /// Plausible's error, JSON pointer (`#/metrics/1: `) included.
    plausible: &'static str,
    /// Plausible's test compares the whole message (`==`), not a part (`=~`).
    whole: bool,
}

fn refusals() -> Vec<Refusal> {
    let refused = |source, query: Value, field, plausible, whole| {
        let mut query = query;
        query["date_range"] = json!("all");
        Refusal {
            source,
            query,
            field,
            plausible,
            whole,
        }
    };
    vec![
        refused(
            "validations_test, \"validates that metric views_per_visit cannot be used together with dimensions\"",
            json!({"metrics": ["views_per_visit"], "dimensions": ["event:name"]}),
            "metrics",
            "Metric `views_per_visit` cannot be queried with `dimensions`.",
            true,
        ),
        refused(
            "validations_test, \"fails when an invalid metric is provided\"",
            json!({"metrics": ["visitors", "baa"], "dimensions": ["event:name"]}),
            "metrics",
            "#/metrics/1: Invalid metric \"baa\"",
            true,
        ),
        refused(
            "parser_test, \"scroll_depth metric\", \"fails validation on its own\"",
            json!({"metrics": ["scroll_depth"]}),
            "metrics",
            "Metric `scroll_depth` can only be queried with event:page filters or dimensions.",
            true,
        ),
        refused(
            "parser_test, \"scroll_depth metric\", \"fails with only a non-top-level event:page filter\"",
            json!({"metrics": ["scroll_depth"], "filters": [["not", ["is", "event:page", ["/"]]]]}),
            "metrics",
            "Metric `scroll_depth` can only be queried with event:page filters or dimensions.",
            true,
        ),
        refused(
            "validations_test, \"validates that dimensions are valid\"",
            json!({"metrics": ["visitors"], "dimensions": ["badproperty"]}),
            "dimensions",
            "#/dimensions/0: Invalid dimension \"badproperty\"",
            true,
        ),
        Refusal {
            query: json!({"metrics": ["visitors"], "date_range": "bad_period", "dimensions": ["event:name"]}),
            ..refused(
                "validations_test, \"validates that correct date range is used\"",
                json!({}),
                "date_range",
                "#/date_range: Invalid date range \"bad_period\"",
                true,
            )
        },
        refused(
            "validations_test, \"validates a metric can't be asked multiple times\"",
            json!({"metrics": ["views_per_visit", "visitors", "visitors"]}),
            "metrics",
            "#/metrics: Expected items to be unique but they were not.",
            true,
        ),
        refused(
            "validations_test, \"session metrics cannot be used with event:name dimension\"",
            json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["event:name"]}),
            "metrics",
            "Session metric(s) `bounce_rate` cannot be queried along with event dimension(s) `event:name`",
            false,
        ),
        refused(
            "validations_test, \"validates that metric views_per_visit cannot be used with event:page filter\"",
            json!({"metrics": ["views_per_visit"], "filters": [["is", "event:page", ["/something"]]]}),
            "metrics",
            "Metric `views_per_visit` cannot be queried with a filter on `event:page`.",
            true,
        ),
        refused(
            "validations_test, \"handles filtering by visit:country with invalid country code\"",
            json!({"metrics": ["pageviews"], "filters": [["is", "visit:country", ["USA"]]]}),
            "filters",
            "Invalid visit:country filter, visit:country needs to be a valid 2-letter country code.",
            true,
        ),
    ]
}

/// A case where tamis answers otherwise by design: Plausible's answer and
/// tamis's, with the README's reason.
struct Kept {
    source: &'static str,
    /// The README's reason ("Differences from Plausible's Stats API").
    reason: &'static str,
    query: Value,
    /// `{"status": 200, "results": …}` or `{"status": 400, "error": …}`.
    plausible: Value,
    tamis: Value,
}

fn kept_differences() -> Vec<Kept> {
    vec![
        Kept {
            source: "query_test, \"contains page filter case insensitive\", without the modifier",
            reason: "`contains` ignores case by default (Plausible respects it unless `case_sensitive` is false)",
            query: json!({"metrics": ["visitors"], "date_range": [CONTAINS_CASE, CONTAINS_CASE],
                          "filters": [["contains", "event:page", ["/en/"]]]}),
            plausible: json!({"status": 200, "results": aggregate(json!([SCALE]))}),
            tamis: json!({"status": 200, "results": aggregate(json!([2 * SCALE]))}),
        },
        Kept {
            source: "query_test, \"handles filtering by visit:city\"",
            reason: "Cities (`visit:city`, `visit:city_name`) are refused (400, saying why)",
            query: json!({"metrics": ["pageviews"], "date_range": [AGGREGATES, AGGREGATES],
                          "filters": [["is", "visit:city", [588_409, 689_123]]]}),
            // On its own data: tamis never stores a city to play it with.
            plausible: json!({"status": 200, "results": aggregate(json!([2 * SCALE]))}),
            tamis: json!({"status": 400, "error": "filters: `visit:city` is not available: tamis locates visitors to their region at most (visit:region, visit:region_name), never their city"}),
        },
        Kept {
            source: "parser_test, \"30m and realtime date_ranges are unavailable in public API\"",
            reason: "Windows of minutes (`realtime`, `30m`, `24h`): tamis accepts them from any client",
            query: json!({"metrics": ["visitors"], "date_range": "realtime"}),
            plausible: json!({"status": 400, "error": "#/date_range: Invalid date range \"realtime\""}),
            // No hit in the current hour: a cell below k of a window shorter
            // than a day is `null` (README, "Small counts").
            tamis: json!({"status": 200, "results": aggregate(json!([null]))}),
        },
        Kept {
            source: "parser_test, \"date parameter is not available in the public API schema\"",
            reason: "`date` is accepted from any client (Plausible: from its own dashboard only)",
            query: json!({"metrics": ["visitors"], "date_range": "7d", "date": "2026-03-01"}),
            plausible: json!({"status": 400, "error": "#/date: Schema does not allow additional properties."}),
            // The seven days before 2026-03-01: only 2026-02-23 of the
            // 7-day set-up.
            tamis: json!({"status": 200, "results": aggregate(json!([SCALE]))}),
        },
    ]
}

/// Plays the days: each Plausible visitor as [`SCALE`] tamis visitors,
/// every hit at its time on the server's clock, in time order.
fn play(server: &InProcess) -> usize {
    let tz = chrono_tz::America::Toronto;
    let mut sent = 0;
    let mut previous = None;
    for (day, visitors) in days() {
        let date: NaiveDate = day.parse().expect("scenario day");
        assert!(previous < Some(date), "days are played in order: {day}");
        previous = Some(date);
        let midnight = tz
            .from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("an unambiguous midnight");
        let mut hits = Vec::new();
        let mut n = 0;
        for visitor in &visitors {
            for _ in 0..SCALE {
                let (ip, agent) = match visitor.country {
                    Country::Fr => (format!("100.64.{n}.1"), visitor.agent.to_string()),
                    Country::Us => (
                        "192.0.2.1".to_string(),
                        format!(
                            "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
                            v = 100 + n
                        ),
                    ),
                };
                n += 1;
                for (i, (at, name, path)) in visitor.hits.iter().enumerate() {
                    let referrer = if i == 0 { visitor.referrer } else { None };
                    hits.push((
                        *at,
                        ip.clone(),
                        agent.clone(),
                        *name,
                        visitor.host,
                        *path,
                        referrer,
                        visitor.cost,
                    ));
                }
            }
        }
        assert!(n <= 250, "{day}: one network per tamis visitor");
        hits.sort_by_key(|h| h.0);
        for (at, ip, agent, name, host, path, referrer, cost) in hits {
            let when: DateTime<Utc> =
                (midnight + chrono::Duration::minutes(at)).with_timezone(&Utc);
            server.clock.set(when);
            let mut body = json!({"n": name, "u": format!("https://{host}{path}"),
                              "d": "example.org", "r": referrer});
            if let (Some(cost), true) = (cost, name != "pageview") {
                body["p"] = json!({"cost": cost});
            }
            let r = send_hit(server.addr, &ip, &agent, &body.to_string(), &[]);
            assert_eq!(r.status, 202, "{day} {path}: {}", r.body);
            assert_eq!(r.header("X-Tamis-Dropped"), None, "{day} {name} {path}");
            sent += 1;
        }
    }
    sent
}

fn ask(server: &InProcess, query: &Value) -> (u16, Value) {
    let mut query = query.clone();
    query["site_id"] = json!("example.org");
    let r = stats(server.addr, TOKEN, query);
    (r.status, r.json())
}

#[test]
fn stats_api_answers_as_plausible_answers() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("plausible_stats");
    let scratch = Scratch::new();
    let geodb = scratch.geodb();
    let clock = tamis::clock::Clock::manual("2025-03-01T17:00:00Z".parse().expect("instant"));
    // Plausible's hostname case plays three hosts of the site.
    let config = config(ch, &db, Some(geodb.as_path()), SITE).replace(
        r#"hostnames = ["example.org", "www.example.org"]"#,
        r#"hostnames = ["example.org", "www.example.org", "one.example.org", "blog.example.net"]"#,
    );
    let server = InProcess::serve(&config, clock);
    let sent = play(&server);
    wait_until(Duration::from_secs(20), "every hit stored", || {
        ch.query_in(
            &db,
            "SELECT sumMerge(pageviews) + sumMerge(events) FROM traffic_hourly WHERE event != 'tamis:delivered'",
        )
        .trim()
            == sent.to_string()
    });
    server
        .clock
        .set(format!("{TODAY}T16:00:00Z").parse().expect("instant"));

    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let (status, answer) = ask(&server, &case.query);
        let meta_differs = case
            .meta
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| &answer["meta"][k] != v);
        if status != 200 || answer["results"] != case.results || meta_differs {
            failures.push(format!(
                "{}\n  query: {}\n  Plausible: {} {}\n  tamis: {status} {answer}",
                case.source, case.query, case.results, case.meta
            ));
        }
    }
    let refusals = refusals();
    for refusal in &refusals {
        let (status, answer) = ask(&server, &refusal.query);
        let error = answer["error"].as_str().unwrap_or_default();
        // Plausible's JSON pointer, if any, is tamis's field name.
        let words = match refusal.plausible.split_once(": ") {
            Some((pointer, words)) if pointer.starts_with("#/") => words,
            _ => refusal.plausible,
        };
        let same = if refusal.whole {
            error == format!("{}: {words}", refusal.field)
        } else {
            error.starts_with(&format!("{}: ", refusal.field)) && error.contains(words)
        };
        if status != 400 || !same {
            failures.push(format!(
                "{}\n  query: {}\n  Plausible: 400 {:?}\n  tamis: {status} {answer}",
                refusal.source, refusal.query, refusal.plausible
            ));
        }
    }
    let kept = kept_differences();
    for k in &kept {
        let (status, answer) = ask(&server, &k.query);
        let got = match status {
            200 => json!({"status": 200, "results": answer["results"]}),
            _ => json!({"status": status, "error": answer["error"]}),
        };
        assert_ne!(k.plausible, k.tamis, "{}: not a difference", k.source);
        if got != k.tamis {
            failures.push(format!(
                "{} (kept: {})\n  query: {}\n  tamis should answer: {}\n  tamis: {got}",
                k.source, k.reason, k.query, k.tamis
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len() + refusals.len() + kept.len(),
        failures.join("\n")
    );
    server.stop();
}
