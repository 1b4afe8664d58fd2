//! Goals and conversion rates through the stats API, on hits that went
//! through the real pipeline: real ClickHouse, real tamis (in-process, so
//! the clock is known), real HTTP.
//!
//! The cases are Plausible's own, from `plausible/analytics`
//! `test/plausible_web/controllers/api/external_stats_controller/query_special_metrics_test.exs`
//! (named in each case), with every Plausible visitor played by five tamis
//! visitors: the site's k is 5, so each of Plausible's groups stays
//! publishable, and every rate is the one Plausible answers. tamis writes
//! a whole number without a fraction (`50`, where Plausible's JSON has
//! `50.0`): the same number to any JSON reader.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Five visitors per Plausible visitor (the site's k).
const SCALE: usize = 5;

const GOALS: &str = r#"
event_names = ["Signup", "AddToCart", "Purchase"]
[[site.goal]]
event = "Signup"
[[site.goal]]
event = "AddToCart"
[[site.goal]]
event = "Purchase"
[[site.goal]]
page = "/blog*"
[[site.goal]]
page = "/en/*"
name = "<img src=x onerror=alert(1)>"
"#;

struct Site {
    server: InProcess,
    next: usize,
}

impl Site {
    fn new(db: &str, extra: &str) -> Site {
        let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
        let server = InProcess::serve(&config(ClickHouse::shared(), db, None, extra), clock);
        Site { server, next: 0 }
    }

    /// One Plausible visitor: `SCALE` tamis visitors (each its own
    /// network), each sending `hits` (event name, path) with `agent`.
    fn visitor(&mut self, agent: &str, hits: &[(&str, &str)]) {
        for _ in 0..SCALE {
            self.next += 1;
            let ip = format!("100.{}.{}.1", 64 + self.next / 250, self.next % 250);
            for (name, path) in hits {
                let body = json!({"n": name, "u": format!("https://example.org{path}"), "d": "example.org"});
                let r = send_hit(self.server.addr, &ip, agent, &body.to_string(), &[]);
                assert_eq!(r.status, 202, "{}", r.body);
            }
        }
    }

    fn stored(&self, db: &str, hits: usize) {
        let ch = ClickHouse::shared();
        wait_until(Duration::from_secs(10), "hits stored", || {
            ch.query_in(
                db,
                "SELECT sumMerge(pageviews) + sumMerge(events) FROM traffic_hourly WHERE event != 'tamis:delivered'",
            )
            .trim()
                == hits.to_string()
        });
    }

    fn query(&self, token: &str, body: Value) -> Value {
        let mut body = body;
        body["site_id"] = json!("example.org");
        body["date_range"] = json!(["2026-03-10", "2026-03-10"]);
        let r = stats(self.server.addr, token, body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    fn results(&self, body: Value) -> Value {
        self.query(TOKEN, body)["results"].clone()
    }
}

#[test]
fn conversion_rates_as_plausible_computes_them() {
    let db = "goals_plausible";
    let mut site = Site::new(db, GOALS);
    // "returns conversion_rate in a goal filtered event:page breakdown"
    site.visitor(FIREFOX, &[("pageview", "/en/register")]);
    site.visitor(FIREFOX, &[("Signup", "/en/register")]);
    site.visitor(FIREFOX, &[("Signup", "/en/register")]);
    site.visitor(
        FIREFOX,
        &[("Signup", "/it/register"), ("Signup", "/it/register")],
    );
    site.visitor(FIREFOX, &[("pageview", "/it/register")]);
    // "returns conversion_rate in a multi-goal filtered visit:screen_size
    // breakdown" (Plausible's screen size is tamis's device).
    site.visitor(SAFARI_IPHONE, &[("pageview", "/m")]);
    site.visitor(SAFARI_IPHONE, &[("AddToCart", "/m")]);
    site.visitor(SAFARI_IPHONE, &[("AddToCart", "/m")]);
    site.visitor(CHROME, &[("AddToCart", "/d"), ("Purchase", "/d")]);
    site.visitor(CHROME, &[("pageview", "/d")]);
    site.stored(db, 12 * SCALE);

    assert_eq!(
        site.results(json!({
            "dimensions": ["event:page"],
            "filters": [["is", "event:goal", ["Signup"]]],
            "metrics": ["visitors", "events", "group_conversion_rate"]
        })),
        json!([
            {"dimensions": ["/en/register"], "metrics": [2 * SCALE, 2 * SCALE, 66.67]},
            {"dimensions": ["/it/register"], "metrics": [SCALE, 2 * SCALE, 50]}
        ])
    );
    // "returns conversion_rate alone in a goal filtered event:page breakdown"
    // (its own data: one page, half the visitors converting).
    assert_eq!(
        site.results(json!({
            "dimensions": ["event:page"],
            "filters": [["is", "event:goal", ["Signup"]], ["is", "event:page", ["/it/register"]]],
            "metrics": ["group_conversion_rate"]
        })),
        json!([{"dimensions": ["/it/register"], "metrics": [50]}])
    );
    let by_device = site.results(json!({
        "metrics": ["visitors", "events", "group_conversion_rate"],
        "dimensions": ["visit:device"],
        "filters": [["is", "event:goal", ["AddToCart", "Purchase"]], ["is", "event:page", ["/m", "/d"]]]
    }));
    // Phones are "Mobile", as Plausible's screen size names them. The page
    // filter keeps the case's own visitors (the others are on desktops).
    assert_eq!(
        by_device,
        json!([
            {"dimensions": ["Mobile"], "metrics": [2 * SCALE, 2 * SCALE, 66.67]},
            {"dimensions": ["Desktop"], "metrics": [SCALE, 2 * SCALE, 50]}
        ])
    );
    // conversion_rate: of every visitor of the site (10 Plausible visitors).
    assert_eq!(
        site.results(json!({
            "metrics": ["visitors", "conversion_rate"],
            "filters": [["is", "event:goal", ["Signup"]]]
        })),
        json!([{"dimensions": [], "metrics": [3 * SCALE, 30]}])
    );
    // By goal: each goal's converting visitors and completions, and its
    // share of all visitors. A visitor with a pageview under /en/ reaches
    // the page goal; an event there does not.
    let answer = site.query(
        TOKEN,
        json!({
            "metrics": ["visitors", "events", "conversion_rate"],
            "dimensions": ["event:goal"],
            "order_by": [["visitors", "desc"], ["event:goal", "asc"]],
            "include": {"total_rows": true, "imports": true},
            "pagination": {"limit": 2}
        }),
    );
    // query_result.ex: `include.total_rows` gives the rows before
    // pagination; `include.imports` says whether imports were counted.
    assert_eq!(answer["meta"]["total_rows"], 4, "{answer}");
    assert_eq!(answer["meta"]["imports_included"], false, "{answer}");
    assert_eq!(answer["query"]["include"]["total_rows"], true, "{answer}");
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(2));
    let by_goal = site.results(json!({
        "metrics": ["visitors", "events", "conversion_rate"],
        "dimensions": ["event:goal"],
        "order_by": [["visitors", "desc"], ["event:goal", "asc"]]
    }));
    assert_eq!(
        by_goal,
        json!([
            {"dimensions": ["AddToCart"], "metrics": [3 * SCALE, 3 * SCALE, 30]},
            {"dimensions": ["Signup"], "metrics": [3 * SCALE, 4 * SCALE, 30]},
            {"dimensions": ["<img src=x onerror=alert(1)>"], "metrics": [SCALE, SCALE, 10]},
            {"dimensions": ["Purchase"], "metrics": [SCALE, SCALE, 10]}
        ])
    );
    // Goals by page and goal: group rates within each page.
    let both = site.results(json!({
        "metrics": ["visitors", "group_conversion_rate"],
        "dimensions": ["event:goal", "event:page"],
        "filters": [["contains", "event:goal", ["sign", "purch"]]],
        "order_by": [["event:page", "asc"], ["event:goal", "asc"]]
    }));
    assert_eq!(
        both,
        json!([
            {"dimensions": ["Purchase", "/d"], "metrics": [SCALE, 50]},
            {"dimensions": ["Signup", "/en/register"], "metrics": [2 * SCALE, 66.67]},
            {"dimensions": ["Signup", "/it/register"], "metrics": [SCALE, 50]}
        ])
    );
    // A goal filter is a filter: `is_not` keeps the other events.
    let not_signup = site.results(json!({
        "metrics": ["events"],
        "filters": [["is_not", "event:goal", ["Signup"]]]
    }));
    assert_eq!(
        not_signup,
        json!([{"dimensions": [], "metrics": [8 * SCALE]}])
    );
    site.server.stop();
}

#[test]
fn goal_queries_are_refused_as_plausible_refuses_them() {
    let db = "goals_refused";
    let site = Site::new(db, GOALS);
    let refused = |body: Value, field: &str, text: &str| {
        let mut body = body;
        body["site_id"] = json!("example.org");
        body["date_range"] = json!("7d");
        let r = stats(site.server.addr, TOKEN, body);
        assert_eq!(r.status, 400, "{}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.starts_with(field) && error.contains(text), "{error}");
    };
    // query_parser_test.exs, "conversion_rate metric" / "fails validation on its own".
    refused(
        json!({"metrics": ["conversion_rate"]}),
        "metrics",
        "Metric `conversion_rate` can only be queried with event:goal filters or dimensions.",
    );
    // external_stats_controller query_test.exs, "does not allow querying
    // conversion_rate without a goal filter".
    refused(
        json!({"metrics": ["conversion_rate"], "dimensions": ["event:page"],
               "filters": [["is", "event:page", ["/"]]]}),
        "metrics",
        "can only be queried with event:goal filters or dimensions",
    );
    refused(
        json!({"metrics": ["visitors"], "filters": [["is", "event:goal", ["Unknown"]]]}),
        "filters",
        "The goal `Unknown` is not configured for this site",
    );
    refused(
        json!({"metrics": ["visit_duration"], "dimensions": ["event:goal"]}),
        "metrics",
        // TableDecider.validate_no_metrics_dimensions_conflict, word for word.
        "Session metric(s) `visit_duration` cannot be queried along with event dimension(s) `event:goal`",
    );
    site.server.stop();
}

/// Goals are read from the hourly aggregates: a page goal added after the
/// pageviews were counted counts them.
#[test]
fn a_goal_added_later_counts_past_pageviews() {
    let db = "goals_later";
    let ch = ClickHouse::shared();
    let mut site = Site::new(db, "");
    site.visitor(FIREFOX, &[("pageview", "/formulaire/envoye")]);
    site.visitor(FIREFOX, &[("pageview", "/formulaire/envoye")]);
    site.visitor(FIREFOX, &[("pageview", "/accueil")]);
    site.stored(db, 3 * SCALE);
    site.server.stop();
    let later = Site::new(
        db,
        "[[site.goal]]\npage = \"/formulaire/*\"\nname = \"Formulaire envoyé\"\n",
    );
    let answer = later.query(
        TOKEN,
        json!({"metrics": ["visitors", "conversion_rate"], "dimensions": ["event:goal"]}),
    );
    assert_eq!(
        answer["results"],
        json!([{"dimensions": ["Formulaire envoyé"], "metrics": [2 * SCALE, 66.67]}])
    );
    assert_eq!(
        ch.query_in(
            db,
            "SELECT count() FROM traffic_hourly WHERE event = 'Formulaire envoyé'"
        )
        .trim(),
        "0",
        "goals are computed when read, never stored"
    );
    later.server.stop();
}

/// For tokens in the protected mode, a conversion rate is the quotient of
/// two published (rounded) numbers: the goal's visitors as the breakdown
/// publishes them, and the group's visitors as the same breakdown without
/// the goal filter publishes them. The rate reveals nothing the two
/// published counts do not.
#[test]
fn protected_rates_divide_published_counts() {
    let db = "goals_protected";
    let mut site = Site::new(db, GOALS);
    for _ in 0..3 {
        site.visitor(FIREFOX, &[("pageview", "/en/register")]);
    }
    for _ in 0..4 {
        site.visitor(
            FIREFOX,
            &[("pageview", "/en/register"), ("Signup", "/en/register")],
        );
    }
    site.visitor(
        FIREFOX,
        &[("pageview", "/it/register"), ("Signup", "/it/register")],
    );
    site.visitor(FIREFOX, &[("pageview", "/it/register")]);
    site.stored(db, (3 + 8 + 2 + 1) * SCALE);
    let converted = site.query(
        PROTECTED_TOKEN,
        json!({"metrics": ["visitors", "group_conversion_rate"], "dimensions": ["event:page"],
               "filters": [["is", "event:goal", ["Signup"]]]}),
    )["results"]
        .clone();
    let all = site.query(
        PROTECTED_TOKEN,
        json!({"metrics": ["visitors"], "dimensions": ["event:page"]}),
    )["results"]
        .clone();
    let rows = converted.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{converted}");
    for row in rows {
        let page = &row["dimensions"][0];
        let visitors = row["metrics"][0].as_f64().unwrap();
        let rate = row["metrics"][1].as_f64().unwrap();
        let of = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| &r["dimensions"][0] == page)
            .and_then(|r| r["metrics"][0].as_f64())
            .unwrap();
        assert_eq!(
            visitors % 5.0,
            0.0,
            "published counts are multiples of the base"
        );
        // Capped at 100: rounded apart, a part may be published above
        // its whole (`suppress::Base::value`).
        assert_eq!(
            rate,
            ((visitors / of * 10_000.0).round() / 100.0).min(100.0),
            "{row} of {of}"
        );
    }
    site.server.stop();
}

/// Plausible's query_special_metrics_test.exs, `describe "exit_rate"`,
/// "in visit:exit_page breakdown without filters" (five tamis visitors
/// per Plausible visitor; Plausible's custom event "a" is left out: this
/// site does not accept it, and it ends no visit).
#[test]
fn exit_rate_as_plausible_computes_it() {
    let mut site = Site::new("goals_exit_rate", GOALS);
    site.visitor(FIREFOX, &[("pageview", "/one"), ("pageview", "/two")]);
    site.visitor(
        FIREFOX,
        &[
            ("pageview", "/one"),
            ("pageview", "/never-exit"),
            ("pageview", "/one"),
        ],
    );
    wait_until(Duration::from_secs(20), "pageviews stored", || {
        site.results(
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["pageviews"]}),
        ) == json!([{"dimensions": [], "metrics": [25]}])
    });
    assert_eq!(
        site.results(json!({"site_id": "example.org", "date_range": "day",
            "metrics": ["exit_rate"], "dimensions": ["visit:exit_page"],
            "order_by": [["exit_rate", "desc"]]})),
        json!([
            {"dimensions": ["/two"], "metrics": [100]},
            {"dimensions": ["/one"], "metrics": [33.3]}
        ])
    );
    // query_builder.ex, `validate_metric(:exit_rate, …)`.
    for (body, error) in [
        (
            json!({"metrics": ["exit_rate"], "dimensions": ["event:page"]}),
            "metrics: Metric `exit_rate` requires a `\"visit:exit_page\"` dimension. No other dimensions are allowed.",
        ),
        (
            json!({"metrics": ["exit_rate"], "dimensions": ["visit:exit_page"],
                   "filters": [["is", "event:page", ["/one"]]]}),
            "metrics: Metric `exit_rate` cannot be queried when filtering on event dimensions.",
        ),
    ] {
        let mut body = body;
        body["site_id"] = json!("example.org");
        body["date_range"] = json!("day");
        let r = stats(site.server.addr, TOKEN, body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"], error);
    }
    site.server.stop();
}
