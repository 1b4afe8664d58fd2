//! The disclosure modes of the stats API against the attacks that broke
//! small-count suppression (issue 12): real ClickHouse, real tamis
//! (in-process, so the clock is known), real HTTP. k is 5.
//!
//! The seeded day, 2026-03-10 in Toronto (UTC−4):
//! - 07:10: 2 visitors on `/early` — the 07:00 hour holds only them;
//! - 11:00: 20 visitors on `/popular`, 6 on `/dp/a`, 1 on `/dp/ab`, 1 on
//!   `/rare`.
//!
//! That is 30 visitors; a breakdown by page shows `/popular` and `/dp/a`
//! and merges the other 4 into a withheld `(other)`. Goals are tried on a
//! day of their own (see [`exact_goal_answers_hide_the_few_visitors_who_missed_a_goal`]).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DAY: [&str; 2] = ["2026-03-10", "2026-03-10"];

/// The seeded server, and the answer `realtime` gave at 07:50 (before the
/// later hits), for each token.
struct Seeded {
    server: InProcess,
    db: String,
    realtime: Vec<(&'static str, Value)>,
}

fn seeded(prefix: &str) -> Seeded {
    let ch = ClickHouse::shared();
    let db = ch.create_database(prefix);
    let start: chrono::DateTime<chrono::Utc> = "2026-03-10T11:10:00Z".parse().unwrap();
    let clock = tamis::clock::Clock::manual(start);
    let server = InProcess::serve(&config(ch, &db, None, ""), clock.clone());
    let hit = |ip: String, page: &str| {
        let r = send_hit(
            server.addr,
            &ip,
            FIREFOX,
            &pageview(&format!("https://example.org{page}")),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    for v in 0..2 {
        hit(format!("100.66.{v}.1"), "/early");
    }
    let stored = |n: u32| {
        wait_until(Duration::from_secs(10), "pageviews stored", || {
            ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == format!("{n}\n")
        })
    };
    stored(2);
    clock.set("2026-03-10T11:50:00Z".parse().unwrap());
    let realtime = [TOKEN, PROTECTED_TOKEN]
        .into_iter()
        .map(|token| {
            (
                token,
                query_as(
                    server.addr,
                    token,
                    json!({"site_id": "example.org", "date_range": "realtime", "metrics": ["visitors", "pageviews"]}),
                ),
            )
        })
        .collect();
    clock.set("2026-03-10T15:00:00Z".parse().unwrap());
    let mut v = 0;
    for (page, n) in [("/popular", 20), ("/dp/a", 6), ("/dp/ab", 1), ("/rare", 1)] {
        for _ in 0..n {
            hit(format!("100.64.{v}.1"), page);
            v += 1;
        }
    }
    stored(30);
    Seeded {
        server,
        db,
        realtime,
    }
}

fn query_as(addr: std::net::SocketAddr, token: &str, body: Value) -> Value {
    let r = stats(addr, token, body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Every number of an answer (rows and totals), nulls left out.
fn numbers(answer: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    for row in answer["results"].as_array().into_iter().flatten() {
        out.extend(
            row["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64),
        );
    }
    out.extend(
        answer["meta"]["totals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64),
    );
    out
}

/// A protected answer: its first `counts` metrics (counts, not rates) are
/// multiples of 5 in every row and in the totals.
fn assert_protected(answer: &Value, counts: usize) {
    assert_eq!(answer["meta"]["disclosure"], "protected", "{answer}");
    assert_eq!(answer["meta"]["rounding_base"], 5, "{answer}");
    let rows = answer["results"].as_array().into_iter().flatten();
    for metrics in rows
        .map(|r| &r["metrics"])
        .chain(std::iter::once(&answer["meta"]["totals"]))
    {
        for n in metrics.as_array().into_iter().flatten().take(counts) {
            if let Some(n) = n.as_f64() {
                assert_eq!(n % 5.0, 0.0, "every count is a multiple of 5: {answer}");
            }
        }
    }
}

/// `contains "/dp/a"` (7 visitors) minus `is "/dp/a"` (6) was the one
/// visitor of `/dp/ab`. Protected answers are multiples of 5: their
/// difference is never 1; asked again, each gives the same number.
#[test]
fn differencing_two_filters() {
    let s = seeded("disclosure_diff");
    let ask = |token: &str, op: &str| {
        query_as(
            s.server.addr,
            token,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "pageviews"],
                "filters": [[op, "event:page", ["/dp/a"]]], "include": {"totals": true}}),
        )
    };
    // The exact token still sees the attack's numbers: that is what exact
    // means, and why `tamis check` warns about such tokens.
    let first = |a: &Value| a["results"][0]["metrics"][0].as_f64();
    assert_eq!(first(&ask(TOKEN, "contains")), Some(7.0));
    assert_eq!(first(&ask(TOKEN, "is")), Some(6.0));

    let contains = ask(PROTECTED_TOKEN, "contains");
    let is = ask(PROTECTED_TOKEN, "is");
    assert_protected(&contains, 2);
    assert_protected(&is, 2);
    let (a, b) = (
        first(&contains).expect("7 visitors are published"),
        first(&is).expect("6 visitors are published"),
    );
    assert!(
        [5.0, 10.0].contains(&a) && [5.0, 10.0].contains(&b),
        "{a} {b}"
    );
    assert_ne!(a - b, 1.0, "the difference isolates no visitor");
    for _ in 0..3 {
        assert_eq!(ask(PROTECTED_TOKEN, "contains"), contains, "asked again");
        assert_eq!(ask(PROTECTED_TOKEN, "is"), is, "asked again");
    }
}

/// The 07:00 bucket (2 visitors) is withheld by `time:hour`; asked as a
/// date range of that hour, or as `realtime` at 07:50, it used to be
/// answered exactly. Now withheld for both tokens, and the exact token's
/// reads are recorded in the audit log as exact.
#[test]
fn a_withheld_hour_asked_as_a_date_range() {
    let s = seeded("disclosure_hour");
    for token in [TOKEN, PROTECTED_TOKEN] {
        let by_hour = query_as(
            s.server.addr,
            token,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"], "dimensions": ["time:hour"]}),
        );
        let seven = by_hour["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dimensions"][0] == "2026-03-10 07:00:00")
            .unwrap_or_else(|| panic!("{by_hour}"));
        assert_eq!(seven["metrics"], json!([null]), "{token}: {by_hour}");

        let range = query_as(
            s.server.addr,
            token,
            json!({"site_id": "example.org", "date_range": ["2026-03-10T07:00:00", "2026-03-10T07:59:59"],
                "metrics": ["visitors", "pageviews"], "include": {"totals": true}}),
        );
        assert_eq!(
            range["results"][0]["metrics"],
            json!([null, null]),
            "{token}: {range}"
        );
        assert_eq!(
            range["meta"]["totals"],
            json!([null, null]),
            "{token}: {range}"
        );
        assert!(!numbers(&range).contains(&2.0), "{range}");
    }
    for (token, realtime) in &s.realtime {
        assert_eq!(
            realtime["results"][0]["metrics"],
            json!([null, null]),
            "{token}: realtime at 07:50 holds 2 visitors: {realtime}"
        );
    }
    let ch = ClickHouse::shared();
    let reads = |actor: &str, disclosure: &str| {
        ch.query_in(
            &s.db,
            &format!("SELECT count() FROM audit_log WHERE kind = 'stats_read' AND actor = '{actor}' AND endsWith(summary, ' disclosure={disclosure}') AND detail = 'disclosure={disclosure}'"),
        )
    };
    wait_until(
        Duration::from_secs(10),
        "every read audited with its disclosure",
        || reads("dashboard", "exact") == "3\n" && reads("public", "protected") == "3\n",
    );
}

/// Rows plus `meta.totals` gave the withheld `(other)` (4 visitors) by
/// subtraction. Protected totals and rows are rounded: what they leave for
/// `(other)` is a multiple of 5, never 4.
#[test]
fn other_recovered_from_totals() {
    let s = seeded("disclosure_other");
    let ask = |token: &str| {
        query_as(
            s.server.addr,
            token,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "pageviews", "bounce_rate", "percentage"],
                "dimensions": ["event:page"], "include": {"totals": true}}),
        )
    };
    let exact = ask(TOKEN);
    assert_eq!(exact["meta"]["disclosure"], "exact");
    assert_eq!(exact["meta"]["rounding_base"], Value::Null);
    assert_eq!(exact["meta"]["totals"][0], 30, "{exact}");

    let protected = ask(PROTECTED_TOKEN);
    assert_protected(&protected, 2);
    let rows = protected["results"].as_array().unwrap();
    let pages: Vec<&str> = rows
        .iter()
        .map(|r| r["dimensions"][0].as_str().unwrap())
        .collect();
    assert_eq!(pages, ["/popular", "/dp/a", "(other)"], "{protected}");
    assert_eq!(
        rows[2]["metrics"],
        json!([null, null, null, null]),
        "{protected}"
    );
    let visitors = |r: &Value| r["metrics"][0].as_f64().unwrap();
    let total = protected["meta"]["totals"][0]
        .as_f64()
        .expect("30 published");
    let left = total - visitors(&rows[0]) - visitors(&rows[1]);
    assert_ne!(left, 4.0, "(other) is not recovered: {protected}");
    assert_eq!(left % 5.0, 0.0, "{protected}");
    // Rates come from the rounded counts: 100 % bounces over rounded
    // visits, shares of the rounded total.
    assert_eq!(rows[0]["metrics"][2], 100, "{protected}");
    let share = rows[0]["metrics"][3].as_f64().unwrap();
    assert_eq!(
        share,
        (visitors(&rows[0]) / total * 1000.0).round() / 10.0,
        "{protected}"
    );
    assert_eq!(ask(PROTECTED_TOKEN), protected, "asked again");

    // CSV carries the same published numbers.
    let csv = http(
        s.server.addr,
        "POST",
        "/api/v2/query",
        &[
            ("Authorization", &format!("Bearer {PROTECTED_TOKEN}")),
            ("Accept", "text/csv"),
        ],
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"], "dimensions": ["event:page"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(
        csv.body,
        format!(
            "event:page,visitors\r\n/popular,{}\r\n/dp/a,{}\r\n(other),\r\n",
            visitors(&rows[0]),
            visitors(&rows[1])
        )
    );
}

/// Goals of the goal-differencing test: a page most visitors reach, and
/// every page.
const GOALS: &str = r#"
[[site.goal]]
page = "/merci"
name = "Merci"
[[site.goal]]
page = "/*"
name = "Tout"
"#;

/// Regression: exact answers under an `event:goal` filter, or by
/// `event:goal`, gave away the visitors who missed the goal. 22 visitors
/// see `/`, 20 of them go on to `/merci` (goal "Merci"): the total (22)
/// minus the goal's visitors (20) is the 2 who did not convert, and the
/// conversion rate gives the total outright. The filter's complement was
/// measured on the rows it leaves out (`/`, 22 visitors, converters
/// included), never on the visitors it leaves out. Now a goal count
/// whose complement holds 1 to k−1 visitors is withheld, filtered or as
/// a breakdown row, with its rate; a goal every visitor reached stays.
#[test]
fn exact_goal_answers_hide_the_few_visitors_who_missed_a_goal() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("disclosure_goals");
    let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
    let server = InProcess::serve(&config(ch, &db, None, GOALS), clock);
    for v in 0..22 {
        let pages: &[&str] = if v < 20 { &["/", "/merci"] } else { &["/"] };
        for page in pages {
            let r = send_hit(
                server.addr,
                &format!("100.67.{v}.1"),
                FIREFOX,
                &pageview(&format!("https://example.org{page}")),
                &[],
            );
            assert_eq!(r.status, 202, "{}", r.body);
        }
    }
    wait_until(Duration::from_secs(10), "pageviews stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "42\n"
    });
    let ask = |body: Value| {
        let mut body = body;
        body["site_id"] = json!("example.org");
        body["date_range"] = json!(DAY);
        query_as(server.addr, TOKEN, body)
    };
    let total = ask(json!({"metrics": ["visitors"]}));
    assert_eq!(total["results"][0]["metrics"], json!([22]), "{total}");

    // The goal as a filter: `is` withholds the count and its rate, rows and
    // totals; `is_not` leaves out the converters (20), which is no secret.
    let is = ask(json!({"metrics": ["visitors", "conversion_rate"],
        "filters": [["is", "event:goal", ["Merci"]]], "include": {"totals": true}}));
    assert_eq!(is["results"][0]["metrics"], json!([null, null]), "{is}");
    assert_eq!(is["meta"]["totals"], json!([null, null]), "{is}");
    let is_not = ask(json!({"metrics": ["visitors"],
        "filters": [["is_not", "event:goal", ["Merci"]]]}));
    assert_eq!(is_not["results"][0]["metrics"], json!([22]), "{is_not}");

    // The goal as a dimension: "Merci" is withheld, "Tout" (every visitor)
    // is not.
    let by_goal = ask(json!({"metrics": ["visitors", "conversion_rate"],
        "dimensions": ["event:goal"], "include": {"totals": true}}));
    let row = |name: &str| {
        by_goal["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dimensions"][0] == name)
            .map(|r| r["metrics"].clone())
    };
    assert_eq!(row("Tout"), Some(json!([22, 100])), "{by_goal}");
    assert_eq!(row("Merci"), Some(json!([null, null])), "{by_goal}");
    for answer in [&is, &by_goal] {
        assert!(!numbers(answer).contains(&20.0), "{answer}");
    }
}
