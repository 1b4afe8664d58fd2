//! Daily rollups answer exactly what the hourly aggregates answer. Traffic
//! goes through the real pipeline over several local days (one of them the
//! 25-hour day when Toronto falls back) into a real ClickHouse; one
//! in-process tamis rolls finished days up and reads the rollups, another
//! on the same database reads only the hourly aggregates, and every query
//! of the dashboard's standard set (and a few shapes around it) must get
//! the same JSON from both: after the days close, after late data for a
//! closed day, after the job runs again and concurrently, and after a
//! computation that crashed half-way; and, for goals added to rolled days,
//! after passes that ClickHouse refused or died in the middle of.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::clickhouse::Stop;
use common::proxy::{Fault, Matcher, Part, Proxy, Rule};
use common::*;
use serde_json::{json, Value};

const TZ: &str = "America/Toronto";
/// The closed days seeded, and today (2026-11-03, seeded up to 14:00).
const CLOSED: [&str; 5] = [
    "2026-10-29",
    "2026-10-30",
    "2026-10-31",
    "2026-11-01",
    "2026-11-02",
];

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("test instant")
}

fn hit(server: &InProcess, ip: &str, agent: &str, page: &str, referrer: Option<&str>) {
    let body = json!({"n": "pageview", "u": format!("https://example.org{page}"), "d": "example.org", "r": referrer}).to_string();
    let r = send_hit(server.addr, ip, agent, &body, &[]);
    assert_eq!(r.status, 202, "{}", r.body);
}

/// One day's traffic from `morning` (a UTC instant): 6 + `n` visitors over
/// four pages and three referrers, half of them going on to `/next` a
/// minute later, and three visitors late in the evening on a page of its
/// own (a small row, merged into `(other)`).
fn seed_day(server: &InProcess, morning: DateTime<Utc>, evening: DateTime<Utc>, n: u8) {
    let referrers = [
        Some("https://www.google.com/"),
        Some("https://news.example.net/a"),
        None,
    ];
    let pages = ["/", "/a", "/b", "/c"];
    server.clock.set(morning);
    for v in 0..6 + n {
        let ip = format!("100.64.{v}.1");
        hit(
            server,
            &ip,
            BROWSERS[usize::from(v) % 5],
            pages[usize::from(v) % 4],
            referrers[usize::from(v) % 3],
        );
    }
    server.clock.set(morning + chrono::Duration::minutes(1));
    for v in (0..6 + n).step_by(2) {
        hit(
            server,
            &format!("100.64.{v}.1"),
            BROWSERS[usize::from(v) % 5],
            "/next",
            None,
        );
    }
    server.clock.set(evening);
    for v in 0..3 {
        hit(
            server,
            &format!("100.65.{v}.1"),
            FIREFOX,
            "/late-night",
            None,
        );
    }
}

/// The ranges compared: all closed days, today, mid-day starts, the DST day.
fn ranges() -> [Value; 7] {
    [
        json!("30d"),
        json!("7d"),
        json!(["2026-10-29", "2026-11-02"]),
        json!(["2026-10-30T12:00:00", "2026-11-03T10:00:00"]),
        json!(["2026-11-01", "2026-11-01"]),
        json!("day"),
        json!("month"),
    ]
}

/// The requests compared, over ranges that are all closed days ("30d" and
/// "7d" end yesterday), hold today ("day", "month", which also holds days to
/// come), start mid-day, or cover the DST day.
fn requests() -> Vec<Value> {
    let ranges = ranges();
    let all = [
        "visitors",
        "visits",
        "pageviews",
        "views_per_visit",
        "bounce_rate",
        "visit_duration",
        "events",
    ];
    let mut out = Vec::new();
    for range in ranges {
        let q = |metrics: &[&str], dimensions: &[&str], extra: Value| {
            let mut q = json!({"site_id": "example.org", "date_range": range, "metrics": metrics, "dimensions": dimensions});
            if let (Some(q), Some(extra)) = (q.as_object_mut(), extra.as_object()) {
                q.extend(extra.clone());
            }
            q
        };
        let totals = json!({"include": {"totals": true}});
        out.push(q(&all, &[], json!({})));
        out.push(q(&all, &[], totals.clone()));
        for time in ["time:day", "time:week", "time:month"] {
            out.push(q(
                &["visitors", "pageviews", "visits", "bounce_rate"],
                &[time],
                json!({"include": {"totals": true, "time_labels": true}}),
            ));
        }
        for dim in [
            "event:page",
            "visit:source",
            "visit:region",
            "visit:browser",
            "visit:device",
        ] {
            out.push(q(
                &["visitors", "pageviews", "percentage"],
                &[dim],
                json!({"pagination": {"limit": 10}}),
            ));
            // Not views_per_visit, which Plausible refuses with dimensions.
            out.push(q(&all[..3], &[dim], totals.clone()));
            out.push(q(&all[4..], &[dim], totals.clone()));
        }
        for dim in [
            "visit:exit_page",
            "visit:entry_page",
            "visit:referrer",
            "visit:os",
            "visit:browser_version",
            "visit:country",
            "visit:language",
        ] {
            out.push(q(&["visitors", "visits", "bounce_rate"], &[dim], json!({})));
        }
        // Session-only metrics are refused with event dimensions but
        // event:page, as Plausible refuses them.
        out.push(q(
            &["visitors", "visits", "events"],
            &["event:name"],
            json!({}),
        ));
        out.push(q(
            &["visitors", "consent_rate", "opt_out_rate"],
            &[],
            json!({}),
        ));
        // Shapes that stay on the hourly aggregates.
        out.push(q(
            &["visitors", "pageviews"],
            &["time:day", "event:page"],
            json!({}),
        ));
        out.push(q(
            &["visitors", "pageviews"],
            &["event:page"],
            json!({"filters": [["is_not", "event:page", ["/a"]]], "include": {"totals": true}}),
        ));
    }
    out
}

fn answer(server: &InProcess, request: &Value) -> Value {
    let r = stats(server.addr, TOKEN, request.clone());
    assert_eq!(r.status, 200, "{request}: {}", r.body);
    r.json()
}

/// Every request answered identically by the server reading rollups and
/// the one reading hourly aggregates only.
fn assert_same(rolled: &InProcess, hourly: &InProcess, when: &str) {
    for request in requests() {
        assert_eq!(
            answer(rolled, &request),
            answer(hourly, &request),
            "{when}: {request}"
        );
    }
}

/// Sums by local day: from the hourly aggregates, and as last rolled.
fn day_sums(ch: &ClickHouse, db: &str) -> (String, String) {
    let days = CLOSED.map(|d| format!("'{d}'")).join(", ");
    let hourly = ch.query_in(
        db,
        &format!(
            "SELECT toDate(hour, '{TZ}') AS day, sumMerge(pageviews), sumMerge(events), sumMerge(visits), sumMerge(bounces), \
             sumMerge(duration), sumMerge(exits) FROM traffic_hourly WHERE site_id = 'example.org' AND event != 'tamis:delivered' AND day IN ({days}) GROUP BY day ORDER BY day"
        ),
    );
    let rolled = ch.query_in(
        db,
        &format!(
            "SELECT day, argMax(pageviews, version), argMax(events, version), argMax(visits, version), argMax(bounces, version), \
             argMax(duration, version), argMax(exits, version) FROM rollup_days WHERE site_id = 'example.org' AND day IN ({days}) \
             GROUP BY day ORDER BY day"
        ),
    );
    (hourly, rolled)
}

fn wait_rolled(ch: &ClickHouse, db: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (hourly, rolled) = day_sums(ch, db);
        if hourly.lines().count() == CLOSED.len() && hourly == rolled {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}\nhourly sums:\n{hourly}rolled sums:\n{rolled}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pageviews_30d(server: &InProcess) -> Value {
    answer(
        server,
        &json!({"site_id": "example.org", "date_range": "30d", "metrics": ["pageviews"]}),
    )["results"][0]["metrics"][0]
        .clone()
}

/// The five closed days and today (2026-11-03) up to 14:00 local, then
/// the clock at 14:00: returns the pageviews sent.
fn seed_week(server: &InProcess) -> u64 {
    // Toronto is UTC-4 until 2026-11-01 02:00, UTC-5 after: mornings at
    // 09:10 local, evenings at 23:40 local; the DST day also gets traffic
    // in both of its 01:30 hours.
    seed_day(
        server,
        utc("2026-10-29T13:10:00Z"),
        utc("2026-10-30T03:40:00Z"),
        0,
    );
    seed_day(
        server,
        utc("2026-10-30T13:10:00Z"),
        utc("2026-10-31T03:40:00Z"),
        1,
    );
    seed_day(
        server,
        utc("2026-10-31T13:10:00Z"),
        utc("2026-11-01T03:40:00Z"),
        2,
    );
    server.clock.set(utc("2026-11-01T05:30:00Z"));
    for v in 0..6 {
        hit(server, &format!("100.64.{v}.1"), CHROME, "/fall-back", None);
    }
    server.clock.set(utc("2026-11-01T06:30:00Z"));
    for v in 3..9 {
        hit(server, &format!("100.64.{v}.1"), CHROME, "/fall-back", None);
    }
    seed_day(
        server,
        utc("2026-11-01T14:10:00Z"),
        utc("2026-11-02T04:40:00Z"),
        3,
    );
    seed_day(
        server,
        utc("2026-11-02T14:10:00Z"),
        utc("2026-11-03T04:40:00Z"),
        4,
    );
    // Today, up to 14:00 local.
    seed_day(
        server,
        utc("2026-11-03T14:10:00Z"),
        utc("2026-11-03T18:40:00Z"),
        5,
    );
    server.clock.set(utc("2026-11-03T19:00:00Z"));
    (0..6u64)
        .map(|n| (6 + n) + (6 + n).div_ceil(2) + 3)
        .sum::<u64>()
        + 12
}

/// [`seed_week`] through `server`, then waits until every pageview is
/// stored and every closed day is rolled (`what`); returns the pageviews.
fn seed_and_roll(ch: &ClickHouse, db: &str, server: &InProcess, what: &str) -> u64 {
    let expected = seed_week(server);
    wait_until(Duration::from_secs(20), "every pageview stored", || {
        ch.query_in(db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == format!("{expected}\n")
    });
    wait_rolled(ch, db, what);
    expected
}

/// The settings of `cfg` and a rollup job over its sites, run by hand.
fn job(
    cfg: &str,
    clock: &tamis::clock::Clock,
) -> (tamis::config::Settings, tamis::sink::rollup::Rollup) {
    let config: tamis::config::Config = toml::from_str(cfg).expect("config parses");
    let settings =
        tamis::config::Settings::from_config(config, Path::new(".")).expect("config valid");
    let job = tamis::sink::rollup::Rollup::new(
        std::sync::Arc::new(tamis::sink::nodes::Nodes::new(&settings.clickhouse, 0)),
        settings.sites.clone(),
        clock.clone(),
    );
    (settings, job)
}

#[test]
fn rollups_answer_exactly_like_hourly_aggregates() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("rollup");
    let scratch = Scratch::new();
    let geo = scratch.geodb();
    let cfg = config(ch, &db, Some(&geo), "");
    let clock = tamis::clock::Clock::manual(utc("2026-10-29T13:00:00Z"));
    let hourly = InProcess::serve(&cfg, clock.clone());
    // Two collectors on one database: each has its own durable log.
    let rolled = InProcess::serve_with_rollups(
        &config(ch, &db, Some(&geo), ""),
        clock.clone(),
        Some(Duration::from_millis(100)),
    );

    let expected = seed_and_roll(ch, &db, &rolled, "the closed days rolled up");
    assert_same(&rolled, &hourly, "closed days rolled up");

    // The rolled server does read the rollups: a newer recorded version of
    // a day whose totals row has 1000 pageviews more changes its answer
    // (its record keeps the true sums, so the job sees nothing to redo);
    // computing the day again puts it right.
    let (settings, job) = job(&cfg, &clock);
    let site = settings
        .sites
        .iter()
        .find(|s| s.id == "example.org")
        .expect("site")
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let day = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("day");
    let before = pageviews_30d(&hourly);
    ch.query_in(
        &db,
        "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, visits, pageviews, events, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits) SELECT site_id, day, version + 1, dimension, value, visitors, visits, pageviews + 1000, events, \
         bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits FROM rollup_daily WHERE site_id = 'example.org' AND day = '2026-10-30' AND dimension = '' \
         AND version = (SELECT max(version) FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-10-30')",
    );
    ch.query_in(
        &db,
        "INSERT INTO rollup_days (site_id, day, version, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, rolled_at) SELECT site_id, day, version + 1, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, now() \
         FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-10-30' ORDER BY version DESC LIMIT 1",
    );
    assert_eq!(
        pageviews_30d(&rolled).as_u64(),
        before.as_u64().map(|b| b + 1000),
        "the rolled server reads rollup_daily"
    );
    rt.block_on(job.roll_day(&site, day("2026-10-30")))
        .expect("roll 2026-10-30 again");
    assert_same(&rolled, &hourly, "after the tampered day was rolled again");

    // Late data: a collector replays hits of 2026-10-30 (closed) hours
    // later. They land in traffic_hourly; the job sees the day's sums
    // change and rolls it again.
    let now = rolled.clock.now();
    rolled.clock.set(utc("2026-10-30T16:00:00Z"));
    for v in 0..7 {
        hit(
            &rolled,
            &format!("100.66.{v}.1"),
            EDGE,
            "/replayed",
            Some("https://www.google.com/"),
        );
    }
    rolled.clock.set(now);
    wait_until(Duration::from_secs(20), "late pageviews stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly")
            == format!("{}\n", expected + 7)
    });
    wait_rolled(ch, &db, "the late day rolled again");
    assert_eq!(
        pageviews_30d(&rolled).as_u64(),
        before.as_u64().map(|b| b + 7)
    );
    assert_same(&rolled, &hourly, "after late data");

    // Running the job again, twice at once, and a computation that crashed
    // before its record: nothing changes.
    let versions = || {
        ch.query_in(
            &db,
            "SELECT count() FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-11-01'",
        )
    };
    let versions_before: u64 = versions().trim().parse().expect("count");
    rt.block_on(async {
        let day = day("2026-11-01");
        let (a, b, c) = tokio::join!(
            job.roll_day(&site, day),
            job.roll_day(&site, day),
            job.pass(None)
        );
        a.expect("first roll");
        b.expect("second roll");
        c.expect("full pass");
    });
    let versions_after: u64 = versions().trim().parse().expect("count");
    assert!(
        versions_after >= versions_before + 2,
        "two more computations of 2026-11-01 recorded ({versions_before} → {versions_after})"
    );
    ch.query_in(
        &db,
        "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, visits, pageviews, events, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits) SELECT site_id, day, version + 7, dimension, value, visitors * 2, visits, pageviews * 2, events, \
         bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits FROM rollup_daily WHERE site_id = 'example.org' AND day = '2026-11-02' \
         AND version = (SELECT max(version) FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-11-02')",
    );
    assert_same(
        &rolled,
        &hourly,
        "after concurrent runs and a crashed computation",
    );
    let (h, r) = day_sums(ch, &db);
    assert_eq!(h, r, "rolled sums still match");

    rolled.stop();
    hourly.stop();
}

/// Goals, all page goals: a page most visitors see, a small one (merged
/// into `(other)`), a pattern, and every page.
const GOALS: &str = r#"
[[site.goal]]
page = "/next"
[[site.goal]]
page = "/a"
name = "Page A"
[[site.goal]]
page = "/late*"
name = "Nuit"
[[site.goal]]
page = "/*"
name = "Tout"
"#;

/// Goal breakdowns and goal conversion rates over the ranges of
/// [`ranges`] but the last.
fn goal_requests() -> Vec<Value> {
    // Not "month", whose days to come hold no goal.
    ranges()[..6]
        .iter()
        .map(|range| {
            json!({"site_id": "example.org", "date_range": range,
                   "metrics": ["visitors", "events", "conversion_rate"],
                   "dimensions": ["event:goal"],
                   "order_by": [["visitors", "desc"], ["event:goal", "asc"]],
                   "include": {"totals": true}})
        })
        .collect()
}

fn assert_same_goals(rolled: &InProcess, hourly: &InProcess, when: &str) {
    for request in goal_requests() {
        assert_eq!(
            answer(rolled, &request),
            answer(hourly, &request),
            "{when}: {request}"
        );
    }
}

/// Goals covered by each closed day's newest rollup.
fn goals_covered(ch: &ClickHouse, db: &str) -> String {
    ch.query_in(
        db,
        "SELECT toString(day), arrayStringConcat(arraySort(groupArray(goal)), ' ') FROM rollup_goal_days \
         WHERE site_id = 'example.org' AND (day, version) IN \
         (SELECT day, max(version) FROM rollup_days WHERE site_id = 'example.org' GROUP BY day) GROUP BY day ORDER BY day",
    )
}

/// The goals of [`GOALS`] by key, as rolled for each of the five days.
fn all_goals_covered() -> String {
    CLOSED
        .iter()
        .map(|d| format!("{d}\tpage:/* page:/a page:/late* page:/next\n"))
        .collect()
}

#[test]
fn goal_breakdowns_read_rolled_days_and_goals_added_later_are_rolled_in() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("rollup_goals");
    let scratch = Scratch::new();
    let geo = scratch.geodb();
    let clock = tamis::clock::Clock::manual(utc("2026-10-29T13:00:00Z"));

    // A week rolled up by a collector whose site has no goals yet.
    let before = InProcess::serve_with_rollups(
        &config(ch, &db, Some(&geo), ""),
        clock.clone(),
        Some(Duration::from_millis(100)),
    );
    seed_and_roll(ch, &db, &before, "the closed days rolled up without goals");
    before.stop();
    assert_eq!(goals_covered(ch, &db), "", "no goal rolled yet");
    let page_rows = |version: &str| {
        ch.query_in(
            &db,
            &format!(
                "SELECT toString(day), value, visitors, pageviews FROM rollup_daily WHERE site_id = 'example.org' \
                 AND dimension = 'page' AND (day, version) IN (SELECT day, {version}(version) FROM rollup_days \
                 WHERE site_id = 'example.org' GROUP BY day) ORDER BY day, value"
            ),
        )
    };
    let pages_before = page_rows("max");
    let versions = || -> u64 {
        ch.query_in(&db, "SELECT count() FROM rollup_days")
            .trim()
            .parse()
            .expect("count")
    };
    let versions_before = versions();

    // The site gains goals: the collector's first pass adds them to every
    // rolled day, once, without computing its other dimensions again (the
    // new version's page rows are the previous version's, copied).
    // Two collectors, each with its own log (config text).
    let cfg = config(ch, &db, Some(&geo), GOALS);
    let hourly = InProcess::serve(&config(ch, &db, Some(&geo), GOALS), clock.clone());
    let rolled =
        InProcess::serve_with_rollups(&cfg, clock.clone(), Some(Duration::from_secs(3600)));
    wait_until(
        Duration::from_secs(30),
        "goals added to the rolled days",
        || goals_covered(ch, &db) == all_goals_covered(),
    );
    assert_eq!(page_rows("max"), pages_before);
    assert_eq!(versions(), versions_before + CLOSED.len() as u64);
    assert_ne!(
        ch.query_in(
            &db,
            "SELECT count() FROM rollup_daily WHERE dimension = 'goal'"
        ),
        "0\n"
    );
    assert_same_goals(&rolled, &hourly, "goals added to rolled days");
    assert_same(&rolled, &hourly, "goals added to rolled days");

    // A day whose newest computation covers no goal (a computation by a
    // collector without them) is read hourly: still the same answers.
    let newest = |day: &str| {
        format!("(SELECT max(version) FROM rollup_days WHERE site_id = 'example.org' AND day = '{day}')")
    };
    ch.query_in(
        &db,
        &format!(
            "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, visits, pageviews, events, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits) SELECT site_id, day, version + 1, dimension, value, visitors, visits, pageviews, events, \
             bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits FROM rollup_daily WHERE site_id = 'example.org' AND day = '2026-10-30' \
             AND dimension != 'goal' AND version = {}",
            newest("2026-10-30")
        ),
    );
    ch.query_in(
        &db,
        "INSERT INTO rollup_days (site_id, day, version, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, rolled_at) SELECT site_id, day, version + 1, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, now() \
         FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-10-30' ORDER BY version DESC LIMIT 1",
    );
    assert_same_goals(&rolled, &hourly, "a day rolled without goals");

    // The rolled server does read goal rollups: a newer version of
    // 2026-10-31 with 1000 more visitors on `Visit /next` changes its
    // answer.
    let visitors = |server: &InProcess| {
        let a = answer(
            server,
            &json!({"site_id": "example.org", "date_range": ["2026-10-29", "2026-11-02"],
                    "metrics": ["visitors"], "dimensions": ["event:goal"],
                    "filters": [], "order_by": [["event:goal", "asc"]]}),
        );
        a["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["dimensions"][0] == "Visit /next")
            .map(|r| r["metrics"][0].as_u64().expect("visitors"))
            .expect("a Visit /next row")
    };
    let true_visitors = visitors(&hourly);
    assert_eq!(visitors(&rolled), true_visitors);
    ch.query_in(
        &db,
        &format!(
            "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, visits, pageviews, events, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits) SELECT site_id, day, version + 1, dimension, value, \
             if(dimension = 'goal' AND value = 'page:/next', visitors + 1000, visitors), visits, pageviews, events, \
             bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits FROM rollup_daily WHERE site_id = 'example.org' AND day = '2026-10-31' AND version = {}",
            newest("2026-10-31")
        ),
    );
    ch.query_in(
        &db,
        &format!(
            "INSERT INTO rollup_goal_days SELECT site_id, day, version + 1, goal FROM rollup_goal_days \
             WHERE site_id = 'example.org' AND day = '2026-10-31' AND version = {}",
            newest("2026-10-31")
        ),
    );
    ch.query_in(
        &db,
        "INSERT INTO rollup_days (site_id, day, version, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, rolled_at) SELECT site_id, day, version + 1, pageviews, events, visits, bounces, duration, exits, engaged_ms, engaged_visits, scroll_total, scroll_visits, now() \
         FROM rollup_days WHERE site_id = 'example.org' AND day = '2026-10-31' ORDER BY version DESC LIMIT 1",
    );
    assert_eq!(visitors(&rolled), true_visitors + 1000);
    // Its record holds the true sums, so only computing the day again (as
    // after late data) puts it right.
    let (settings, job) = job(&cfg, &clock);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(job.roll_day(
            &settings.sites[0],
            chrono::NaiveDate::from_ymd_opt(2026, 10, 31).expect("day"),
        ))
        .expect("roll 2026-10-31 again");
    assert_eq!(visitors(&rolled), true_visitors);
    rolled.stop();
    hourly.stop();

    // Renamed goals keep their rolled days (rollups know goals by what
    // they count); the next pass adds the goals to the day rolled
    // without them.
    let renamed = GOALS
        .replace("Nuit", "Soirée")
        .replace("Tout", "Toutes les pages");
    let cfg = config(ch, &db, Some(&geo), &renamed);
    let hourly = InProcess::serve(&config(ch, &db, Some(&geo), &renamed), clock.clone());
    let rolled =
        InProcess::serve_with_rollups(&cfg, clock.clone(), Some(Duration::from_secs(3600)));
    wait_until(
        Duration::from_secs(30),
        "the tampered days rolled again",
        || goals_covered(ch, &db) == all_goals_covered(),
    );
    let a = answer(&rolled, &goal_requests()[2]);
    assert!(a.to_string().contains("Soirée"), "{a}");
    assert_same_goals(&rolled, &hourly, "renamed goals");
    rolled.stop();
    hourly.stop();
}

/// Goals are added to a rolled week by a pass that ClickHouse cuts short
/// twice: first it refuses the goals of 2026-10-31 (a test-only view on
/// `rollup_goal_days`), then, asked again, it is killed (SIGKILL) while
/// the day's record is on its way. What an unfinished computation wrote
/// (copied rows, goal rows, covered goals) is never read: every answer is
/// the hourly-only server's; the next pass completes the days left, each
/// with exactly one new version.
#[test]
fn goals_added_while_clickhouse_fails_mid_pass_stay_unread_until_a_pass_completes() {
    let mut ch = ClickHouse::start();
    let db = ch.create_database("rollup_goals_faults");
    let scratch = Scratch::new();
    let geo = scratch.geodb();
    let clock = tamis::clock::Clock::manual(utc("2026-10-29T13:00:00Z"));
    let before = InProcess::serve_with_rollups(
        &config(&ch, &db, Some(&geo), ""),
        clock.clone(),
        Some(Duration::from_millis(100)),
    );
    seed_and_roll(&ch, &db, &before, "the closed days rolled up without goals");
    before.stop();
    let versions = |ch: &ClickHouse| -> u64 {
        ch.query_in(&db, "SELECT count() FROM rollup_days")
            .trim()
            .parse()
            .expect("count")
    };
    let versions_before = versions(&ch);
    let covered = |days: &[&str]| -> String {
        let all = all_goals_covered();
        all.lines()
            .filter(|l| days.iter().any(|d| l.starts_with(d)))
            .map(|l| format!("{l}\n"))
            .collect()
    };

    // The rolled server's start-up pass adds goals to 10-29 and 10-30,
    // then meets the refusal at 10-31 and waits an hour for the next.
    ch.refuse_rows(&db, "rollup_goal_days", "day = toDate('2026-10-31')");
    let hourly = InProcess::serve(&config(&ch, &db, Some(&geo), GOALS), clock.clone());
    let rolled = InProcess::serve_with_rollups(
        &config(&ch, &db, Some(&geo), GOALS),
        clock.clone(),
        Some(Duration::from_secs(3600)),
    );
    let unrecorded_goal_rows = |ch: &ClickHouse, day: &str| {
        ch.query_in(
            &db,
            &format!(
                "SELECT count() FROM rollup_daily WHERE day = '{day}' AND dimension = 'goal' \
                 AND version NOT IN (SELECT version FROM rollup_days WHERE day = '{day}')"
            ),
        ) != "0\n"
    };
    wait_until(
        Duration::from_secs(30),
        "the pass cut short at 2026-10-31",
        || {
            goals_covered(&ch, &db) == covered(&CLOSED[..2])
                && unrecorded_goal_rows(&ch, "2026-10-31")
        },
    );
    assert_same_goals(&rolled, &hourly, "a pass refused at 2026-10-31");
    assert_same(&rolled, &hourly, "a pass refused at 2026-10-31");
    assert_eq!(versions(&ch), versions_before + 2);

    // The next pass, by hand through a proxy: ClickHouse takes goals
    // again, and is killed while 10-31's record is held on the way.
    ch.stop_refusing(&db);
    let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], ch.http_port)));
    let cfg = config(&ch, &db, Some(&geo), GOALS).replace(&ch.url, &proxy.url());
    let (_, job) = job(&cfg, &clock);
    let job = std::sync::Arc::new(job);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    proxy.arm(Rule::new(
        Matcher::new(|line, body| {
            let body = String::from_utf8_lossy(body);
            (line.contains("INSERT") || body.contains("INSERT"))
                && (line.contains("rollup_days") || body.contains("INTO rollup_days"))
        }),
        Fault::Hold(Part::Nothing),
    ));
    let pass = {
        let job = job.clone();
        std::thread::spawn(move || {
            runtime()
                .block_on(job.pass(None))
                .map_err(|e| e.to_string())
        })
    };
    assert!(
        proxy.wait_held(Duration::from_secs(30)),
        "no record insert held ({} matched)",
        proxy.matched()
    );
    proxy.disarm();
    ch.stop(Stop::Kill);
    proxy.release();
    let result = pass.join().expect("pass thread");
    assert!(
        result.is_err(),
        "the pass failed with ClickHouse: {result:?}"
    );
    ch.restart();
    assert_ne!(
        ch.query_in(
            &db,
            "SELECT count() FROM rollup_goal_days WHERE day = '2026-10-31' \
             AND version NOT IN (SELECT version FROM rollup_days WHERE day = '2026-10-31')"
        ),
        "0\n",
        "10-31's covered goals were written, its record was not"
    );
    wait_until(Duration::from_secs(30), "both servers answer again", || {
        stats(rolled.addr, TOKEN, goal_requests()[0].clone()).status == 200
            && stats(hourly.addr, TOKEN, goal_requests()[0].clone()).status == 200
    });
    assert_eq!(goals_covered(&ch, &db), covered(&CLOSED[..2]));
    assert_same_goals(&rolled, &hourly, "a pass killed at 10-31's record");
    assert_same(&rolled, &hourly, "a pass killed at 10-31's record");

    // A pass that runs to its end adds the goals to the three days left.
    runtime()
        .block_on(job.pass(None))
        .expect("a pass with ClickHouse up");
    assert_eq!(goals_covered(&ch, &db), all_goals_covered());
    assert_eq!(
        versions(&ch),
        versions_before + CLOSED.len() as u64,
        "one new recorded version per day"
    );
    assert_same_goals(&rolled, &hourly, "the goals rolled in at last");
    assert_same(&rolled, &hourly, "the goals rolled in at last");
    rolled.stop();
    hourly.stop();
}
