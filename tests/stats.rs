//! The stats API on data that went through the real pipeline: real
//! ClickHouse, real tamis (in-process, so the clock is known), real HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Seeds, on 2026-03-10 (Toronto), 20 visitors on `/popular` (10 of them
/// going on to `/popular/suite` a minute later), and 3, 2 and 1 visitors on
/// `/rare-a`, `/rare-b`, `/rare-c`. Returns the server.
fn seeded(db: &str) -> InProcess {
    let ch = ClickHouse::shared();
    let start: chrono::DateTime<chrono::Utc> = "2026-03-10T15:00:00Z".parse().unwrap();
    let clock = tamis::clock::Clock::manual(start);
    let server = InProcess::serve(&config(ch, db, None, ""), clock.clone());
    let hit = |ip: &str, page: &str| {
        let r = send_hit(
            server.addr,
            ip,
            FIREFOX,
            &pageview(&format!("https://example.org{page}")),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    for v in 0..20 {
        hit(&format!("100.64.{v}.1"), "/popular");
    }
    clock.set(start + chrono::Duration::minutes(1));
    for v in 0..10 {
        hit(&format!("100.64.{v}.1"), "/popular/suite");
    }
    for (p, (page, n)) in [("/rare-a", 3), ("/rare-b", 2), ("/rare-c", 1)]
        .into_iter()
        .enumerate()
    {
        for v in 0..n {
            hit(&format!("100.65.{}.1", p * 10 + v), page);
        }
    }
    wait_until(Duration::from_secs(10), "36 pageviews stored", || {
        ch.query_in(db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "36\n"
    });
    server
}

fn query(server: &InProcess, body: Value) -> Value {
    let r = stats(server.addr, TOKEN, body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

const DAY: [&str; 2] = ["2026-03-10", "2026-03-10"];

#[test]
fn plausible_examples_and_small_count_suppression() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("stats");
    let server = seeded(&db);

    // Aggregate, with every derived metric.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"]}),
    );
    // 26 visitors, 26 visits, 36 pageviews; 10 of 26 visits saw two pages
    // (60 s each): bounce rate 16/26 = 62%, duration 600/26 = 23 s.
    assert_eq!(
        r["results"][0]["metrics"],
        json!([26, 26, 36, 1.38, 62, 23, 36]),
        "{r}"
    );
    assert_eq!(
        r["query"]["date_range"],
        json!(["2026-03-10T00:00:00-04:00", "2026-03-10T23:59:59-04:00"])
    );

    // Timeseries by day with labels.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": ["2026-03-09", "2026-03-11"],
        "metrics": ["visitors"], "dimensions": ["time:day"], "include": {"time_labels": true, "totals": true}}),
    );
    assert_eq!(
        r["results"],
        json!([{"dimensions": ["2026-03-10"], "metrics": [26]}]),
        "{r}"
    );
    assert_eq!(
        r["meta"]["time_labels"],
        json!(["2026-03-09", "2026-03-10", "2026-03-11"])
    );
    assert_eq!(r["meta"]["totals"], json!([26]));

    // Breakdown by page: rare pages never appear by name; (other) carries
    // their sum; totals are unchanged.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "include": {"totals": true}}),
    );
    assert_eq!(
        r["results"],
        json!([
            {"dimensions": ["/popular"], "metrics": [20, 20]},
            {"dimensions": ["/popular/suite"], "metrics": [10, 10]},
            {"dimensions": ["(other)"], "metrics": [6, 6]},
        ]),
        "{r}"
    );
    assert_eq!(r["meta"]["totals"], json!([26, 36]));
    assert!(!r.to_string().contains("rare"), "{r}");

    // Filters cannot single out a rare page, directly, by pattern, or by
    // leaving it out.
    for filters in [
        json!([["is", "event:page", ["/rare-a"]]]),
        json!([["contains", "event:page", ["rare-b"]]]),
        json!([["matches", "event:page", ["^/rare-[ac]$"]]]),
        json!([["is_not", "event:page", ["/rare-c"]]]),
        json!([["not", ["is", "event:page", ["/rare-b"]]]]),
    ] {
        for dims in [json!([]), json!(["event:page"]), json!(["time:day"])] {
            let r = query(
                &server,
                json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "pageviews"],
                "dimensions": dims, "filters": filters, "include": {"totals": true}}),
            );
            for row in r["results"].as_array().unwrap() {
                // Only rows that no rare visitor touches may keep numbers,
                // and then exactly the unfiltered ones.
                match row["dimensions"][0].as_str() {
                    Some("/popular") => {
                        assert_eq!(row["metrics"], json!([20, 20]), "{filters}: {r}")
                    }
                    Some("/popular/suite") => {
                        assert_eq!(row["metrics"], json!([10, 10]), "{filters}: {r}")
                    }
                    _ => assert_eq!(row["metrics"], json!([null, null]), "{filters} {dims}: {r}"),
                }
                assert!(
                    !row["dimensions"].to_string().contains("rare"),
                    "{filters} {dims}: {r}"
                );
            }
            assert_eq!(r["meta"]["totals"], json!([null, null]), "{filters}: {r}");
        }
    }
    // Nor by subtraction: unfiltered rows minus the rows of a filter that
    // leaves out a small group would describe that group.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "dimensions": ["event:page"], "filters": [["is_not", "event:page", ["/rare-c", "/rare-b"]]]}),
    );
    assert_eq!(
        r["results"],
        json!([
            {"dimensions": ["/popular"], "metrics": [20]},
            {"dimensions": ["/popular/suite"], "metrics": [10]},
            {"dimensions": ["(other)"], "metrics": [null]},
        ]),
        "{r}"
    );
    // A filter that selects enough visitors answers normally.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "filters": [["contains", "event:page", ["popular"]]]}),
    );
    assert_eq!(r["results"][0]["metrics"], json!([20]), "{r}");

    // Multiple dimensions.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "percentage"],
        "dimensions": ["visit:browser", "visit:device"]}),
    );
    assert_eq!(
        r["results"],
        json!([{"dimensions": ["Firefox", "Desktop"], "metrics": [26, 100]}]),
        "{r}"
    );

    // Entry and exit pages.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visits"], "dimensions": ["visit:exit_page"]}),
    );
    assert_eq!(
        r["results"][0],
        json!({"dimensions": ["/popular"], "metrics": [10]}),
        "{r}"
    );
    assert_eq!(
        r["results"][1],
        json!({"dimensions": ["/popular/suite"], "metrics": [10]}),
        "{r}"
    );

    // CSV: same rows, same suppression.
    let csv = http(server.addr, "POST", "/api/v2/query", &[("Authorization", &format!("Bearer {TOKEN}")), ("Accept", "text/csv")],
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}).to_string().as_bytes());
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.body, "event:page,visitors,pageviews\r\n/popular,20,20\r\n/popular/suite,10,10\r\n(other),6,6\r\n");
    let csv = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "dimensions": ["event:page"], "filters": [["is", "event:page", ["/rare-a"]]], "format": "csv"}),
    );
    assert_eq!(csv.body, "event:page,visitors\r\n(other),\r\n");
    server.stop();
}

/// Bad requests are refused with the field named, and nothing reaches
/// ClickHouse.
#[test]
fn bad_queries_are_refused_before_sql() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("badq");
    let server = InProcess::serve(&config(ch, &db, None, ""), tamis::clock::Clock::system());
    let long = "x".repeat(2000);
    for (body, field) in [
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors'; DROP TABLE traffic_hourly"]}),
            "metrics",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "dimensions": ["page) --"]}),
            "dimensions",
        ),
        (
            json!({"site_id": "example.org", "date_range": "1=1", "metrics": ["visitors"]}),
            "date_range",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "filters": [["is", "event:page", [long]]]}),
            "filters",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "filters": [["matches", "event:page", ["(a+"]]]}),
            "filters",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "order_by": [["visitors", "sideways"]]}),
            "order_by",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "pagination": {"limit": 1000000}}),
            "pagination",
        ),
        (
            json!({"site_id": "example.org", "date_range": "day"}),
            "metrics",
        ),
        (
            json!({"site_id": 5, "date_range": "day", "metrics": ["visitors"]}),
            "site_id",
        ),
    ] {
        let r = stats(server.addr, TOKEN, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(field),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(
        ch.query(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'traffic_hourly'"
        )),
        "1\n"
    );
    server.stop();
}

/// The consent report gives the exact shares of hits by consent state,
/// including hits dropped for an opt-out signal.
#[test]
fn consent_report_gives_exact_shares() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("consent");
    let server = InProcess::serve(
        &config(ch, &db, None, ""),
        tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap()),
    );
    let send = |i: usize, consent: Option<&str>, gpc: bool| {
        let mut body = json!({"n": "pageview", "u": "https://example.org/", "d": "example.org"});
        if let Some(c) = consent {
            body["c"] = json!(c);
        }
        let extra: &[(&str, &str)] = if gpc { &[("Sec-GPC", "1")] } else { &[] };
        assert_eq!(
            send_hit(
                server.addr,
                &format!("100.66.{i}.1"),
                FIREFOX,
                &body.to_string(),
                extra
            )
            .status,
            202
        );
    };
    let mut i = 0;
    for (consent, gpc, n) in [
        (Some("granted"), false, 8),
        (Some("denied"), false, 6),
        (None, false, 4),
        (None, true, 2),
    ] {
        for _ in 0..n {
            send(i, consent, gpc);
            i += 1;
        }
    }
    wait_until(
        Duration::from_secs(10),
        "18 pageviews and 2 opt-outs stored",
        || {
            ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "18\n"
                && ch.query_in(
                    &db,
                    "SELECT sum(hits) FROM dropped_hourly WHERE reason = 'opt_out'",
                ) == "2\n"
        },
    );
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["consent_rate", "consent_denied_rate", "consent_unset_rate", "opt_out_rate", "pageviews", "visitors"]}),
    );
    // Denied hits are counted without a visitor key: 12 visitors, 18 pageviews.
    assert_eq!(
        r["results"][0]["metrics"],
        json!([40, 30, 20, 10, 18, 12]),
        "{r}"
    );
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["consent_rate", "opt_out_rate"], "dimensions": ["time:day"]}),
    );
    assert_eq!(
        r["results"],
        json!([{"dimensions": ["2026-03-10"], "metrics": [40, 10]}]),
        "{r}"
    );
    let refused = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["consent_rate"], "dimensions": ["event:page"]}),
    );
    assert_eq!(refused.status, 400);
    server.stop();
}

/// `GET /api/v2/openapi.json` describes what the API really answers:
/// requests and responses of several kinds are checked against it.
#[test]
fn answers_match_the_openapi_document() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("openapi");
    let server = seeded(&db);
    let doc = http(server.addr, "GET", "/api/v2/openapi.json", &[], b"").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let validator = |name: &str| openapi_validator(&doc, name);
    let (request, response, error) = (
        validator("QueryRequest"),
        validator("QueryResponse"),
        validator("Error"),
    );
    let requests = [
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "pageviews", "bounce_rate", "visit_duration"]}),
        json!({"site_id": "example.org", "date_range": "7d", "metrics": ["visitors"], "dimensions": ["time:day"], "include": {"time_labels": true, "totals": true}}),
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "percentage"], "dimensions": ["event:page", "visit:country"],
            "filters": [["or", [["contains", "event:page", ["popular"]], ["not", ["is", "visit:device", ["Mobile"]]]]]],
            "order_by": [["visitors", "desc"]], "pagination": {"limit": 2, "offset": 0}}),
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"], "filters": [["is", "event:page", ["/rare-a"]]], "include": {"totals": true}}),
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["consent_rate", "opt_out_rate"]}),
    ];
    for body in requests {
        assert!(
            request.is_valid(&body),
            "request {body}: {:?}",
            request
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        let r = stats(server.addr, TOKEN, body.clone());
        assert_eq!(r.status, 200, "{}", r.body);
        let answer = r.json();
        assert!(
            response.is_valid(&answer),
            "{answer}: {:?}",
            response
                .iter_errors(&answer)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
    for (token, body, status) in [
        (
            TOKEN,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["nope"]}),
            400,
        ),
        (
            "wrong",
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"]}),
            401,
        ),
        (
            OTHER_TOKEN,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"]}),
            404,
        ),
    ] {
        let r = stats(server.addr, token, body);
        assert_eq!(r.status, status);
        assert!(error.is_valid(&r.json()), "{}", r.body);
        assert!(
            doc["paths"]["/api/v2/query"]["post"]["responses"][status.to_string()].is_object(),
            "{status} is documented"
        );
    }
    server.stop();
}

/// Custom events and their allow-listed properties; other properties are
/// never stored.
#[test]
fn custom_event_properties() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("props");
    let server = InProcess::serve(
        &config(
            ch,
            &db,
            None,
            "event_names = [\"signup\"]\nprop_keys = [\"plan\"]",
        ),
        tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap()),
    );
    let mut i = 0;
    for (plan, n) in [("basic", 6), ("pro", 2)] {
        for _ in 0..n {
            let body = json!({"n": "signup", "u": "https://example.org/inscription", "d": "example.org",
                "p": {"plan": plan, "email": "jean@example.com"}});
            assert_eq!(
                send_hit(
                    server.addr,
                    &format!("100.67.{i}.1"),
                    FIREFOX,
                    &body.to_string(),
                    &[]
                )
                .status,
                202
            );
            i += 1;
        }
    }
    let r = send_hit(
        server.addr,
        "100.67.200.1",
        FIREFOX,
        &json!({"n": "purchase", "u": "https://example.org/", "d": "example.org"}).to_string(),
        &[],
    );
    assert_eq!(r.header("x-tamis-dropped"), Some("event_not_allowed"));
    wait_until(Duration::from_secs(10), "8 signups stored", || {
        ch.query_in(
            &db,
            "SELECT sumMerge(events) FROM props_hourly WHERE event != 'tamis:delivered'",
        ) == "8\n"
    });
    // A batch reaches props_hourly and traffic_hourly by separate inserts:
    // wait until tamis saw the whole batch confirmed.
    wait_until(Duration::from_secs(10), "every hit written", || {
        http(server.admin, "GET", "/metrics", &[], b"")
            .body
            .contains("tamis_log_backlog_hits 0\n")
    });
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT DISTINCT prop_key FROM props_hourly WHERE event != 'tamis:delivered'"
        ),
        "plan\n",
        "only allow-listed keys are stored"
    );

    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors", "events"],
        "dimensions": ["event:props:plan"], "filters": [["is", "event:name", ["signup"]]]}),
    );
    assert_eq!(
        r["results"],
        json!([{"dimensions": ["basic"], "metrics": [6, 6]}, {"dimensions": ["(other)"], "metrics": [null, null]}]),
        "{r}"
    );
    assert_eq!(r["query"]["dimensions"], json!(["event:props:plan"]));
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["events"], "dimensions": ["event:name"]}),
    );
    assert_eq!(
        r["results"],
        json!([{"dimensions": ["signup"], "metrics": [8]}]),
        "{r}"
    );
    let refused = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["events"], "dimensions": ["event:props:email"]}),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    server.stop();
}

/// Plausible's query_builder.ex (`build_datetime_range`): `Nd` is the N days
/// before the reference day, so a day's hits are in the "7d" of the next
/// day and not in their own; `date` sets the reference day. The
/// `case_sensitive` modifier runs on ClickHouse as it is (`lowerUTF8`,
/// `positionUTF8`); `time:minute` is refused with its reason.
#[test]
fn last_days_end_yesterday_and_filter_modifiers_run_on_clickhouse() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("stats_ranges");
    let server = seeded(&db);
    let ask = |extra: Value| {
        let mut body = json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"]});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        query(&server, body)
    };
    let numbers = |extra: Value| ask(extra)["results"].clone();
    let seeded_day = numbers(json!({"date_range": DAY}));
    assert_eq!(seeded_day[0]["metrics"][1], 36, "{seeded_day}");
    // The server's clock is on the seeded day: its "7d" ends the day before.
    assert_eq!(
        numbers(json!({"date_range": "7d"})),
        numbers(json!({"date_range": ["2026-03-03", "2026-03-09"]}))
    );
    assert_ne!(numbers(json!({"date_range": "7d"})), seeded_day);
    let next_day = ask(json!({"date_range": "7d", "date": "2026-03-11"}));
    assert_eq!(next_day["results"], seeded_day);
    // Toronto moved to daylight saving time on 2026-03-08.
    assert_eq!(
        next_day["query"]["date_range"],
        json!(["2026-03-04T00:00:00-05:00", "2026-03-10T23:59:59-04:00"])
    );
    assert_eq!(numbers(json!({"date_range": "month"})), seeded_day);
    // Plausible's `weekstart_not_before` (lib/plausible/stats/sql/expression.ex,
    // `select_dimension(q, key, "time:week", …)`): the week a range starts
    // in the middle of is labelled with the range's first day, not its
    // Monday (2026-03-09).
    let weeks = ask(
        json!({"date_range": ["2026-03-10", "2026-03-22"], "dimensions": ["time:week"],
                           "include": {"time_labels": true}}),
    );
    assert_eq!(
        weeks["results"][0]["dimensions"],
        json!(["2026-03-10"]),
        "{weeks}"
    );
    assert_eq!(
        weeks["results"][0]["metrics"], seeded_day[0]["metrics"],
        "{weeks}"
    );
    assert_eq!(
        weeks["meta"]["time_labels"],
        json!(["2026-03-10", "2026-03-16"]),
        "{weeks}"
    );
    // Regression: "all" starts at the epoch, bound as `'0'`, which
    // ClickHouse 18.16's toDateTime could not read (a 503 for every "all").
    assert_eq!(numbers(json!({"date_range": "all"})), seeded_day);

    let filtered = |filter: Value| numbers(json!({"date_range": DAY, "filters": [filter]}));
    let popular = filtered(json!(["is", "event:page", ["/popular"]]));
    assert_eq!(popular[0]["metrics"][1], 20, "{popular}");
    assert_eq!(
        filtered(json!(["is", "event:page", ["/POPULAR"], {"case_sensitive": false}])),
        popular
    );
    assert_ne!(filtered(json!(["is", "event:page", ["/POPULAR"]])), popular);
    let containing = filtered(json!(["contains", "event:page", ["popular"]]));
    assert_eq!(containing[0]["metrics"][1], 30, "{containing}");
    assert_eq!(
        filtered(json!(["contains", "event:page", ["POPULAR"]])),
        containing
    );
    assert_eq!(
        filtered(json!(["contains", "event:page", ["popular"], {"case_sensitive": true}])),
        containing
    );
    assert_eq!(
        filtered(json!(["contains", "event:page", ["POPULAR"], {"case_sensitive": true}])),
        filtered(json!(["is", "event:page", ["/nowhere"]]))
    );

    let minute = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": "day", "dimensions": ["time:minute"]}),
    );
    assert_eq!(minute.status, 400, "{}", minute.body);
    assert_eq!(
        minute.json()["error"],
        "dimensions: `time:minute` is not available: tamis stores hourly aggregates, never the minute of a hit; use time:hour"
    );
    server.stop();
}

/// Visit dimensions Plausible computes from what it stores, which tamis
/// computes from its codes and sources when read: country and region
/// names (plausible/analytics
/// `test/plausible_web/controllers/api/external_stats_controller/query_test.exs`,
/// "country_name, region_name, city_name": names as dimensions and in
/// filters) and acquisition channels (its `acquisition_channel` rules,
/// after Google Analytics 4's default channel group).
#[test]
fn names_and_channels_are_computed_from_stored_codes_and_sources() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("names");
    let scratch = Scratch::new();
    let geo = scratch.geodb();
    let start: chrono::DateTime<chrono::Utc> = "2026-03-10T15:00:00Z".parse().unwrap();
    let clock = tamis::clock::Clock::manual(start);
    let server = InProcess::serve(
        &config(
            ch,
            &db,
            Some(&geo),
            "k_threshold = 1\ncollect_campaigns = true",
        ),
        clock,
    );
    // One visitor each (a network and a browser), but two from Québec.
    for (ip, ua, url, referrer) in [
        (
            geodb::QUEBEC_IP,
            FIREFOX,
            "https://example.org/",
            Some("https://www.google.com/search"),
        ),
        (
            geodb::QUEBEC_IP,
            CHROME,
            "https://example.org/?utm_source=newsletter&utm_medium=email",
            None,
        ),
        (
            "203.0.113.5",
            FIREFOX,
            "https://example.org/?utm_medium=paid_social",
            Some("https://m.facebook.com/"),
        ),
        ("192.0.2.5", FIREFOX, "https://example.org/", None),
        (
            "198.18.0.5",
            FIREFOX,
            "https://example.org/",
            Some("https://blog.example.net/post"),
        ),
    ] {
        let body = json!({"n": "pageview", "u": url, "d": "example.org", "r": referrer});
        let r = send_hit(server.addr, ip, ua, &body.to_string(), &[]);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    wait_until(Duration::from_secs(10), "5 pageviews stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "5\n"
    });

    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "dimensions": ["visit:country_name", "visit:region_name", "visit:region"]}),
    );
    assert_eq!(
        r["results"],
        json!([
            {"dimensions": ["Canada", "Quebec", "CA-QC"], "metrics": [2]},
            {"dimensions": ["Belgium", "Brussels", "BE-BRU"], "metrics": [1]},
            {"dimensions": ["Canada", "Ontario", "CA-ON"], "metrics": [1]},
            {"dimensions": ["United States", "California", "US-CA"], "metrics": [1]},
        ]),
        "{r}"
    );

    // Conditions on names select the codes so named.
    for (filters, visitors) in [
        (json!([["is", "visit:country_name", ["Canada"]]]), json!(3)),
        (
            json!([
                ["is", "visit:country_name", ["Canada"]],
                ["is_not", "visit:region_name", ["Ontario"]]
            ]),
            json!(2),
        ),
        (
            json!([["contains", "visit:region_name", ["QUEB", "forn"]]]),
            json!(3),
        ),
        (
            json!([["matches", "visit:country_name", ["^United"]]]),
            json!(1),
        ),
        (
            json!([["is", "visit:country_name", ["Canada (nowhere)"]]]),
            // No country has that name: nothing counted, a small cell.
            Value::Null,
        ),
    ] {
        let r = query(
            &server,
            json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"], "filters": filters}),
        );
        assert_eq!(
            r["results"][0]["metrics"],
            json!([visitors]),
            "{filters} {r}"
        );
    }

    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "dimensions": ["visit:channel"]}),
    );
    assert_eq!(
        r["results"],
        json!([
            {"dimensions": ["Direct"], "metrics": [1]},
            {"dimensions": ["Email"], "metrics": [1]},
            {"dimensions": ["Organic Search"], "metrics": [1]},
            {"dimensions": ["Paid Social"], "metrics": [1]},
            {"dimensions": ["Referral"], "metrics": [1]},
        ]),
        "{r}"
    );
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "filters": [["is", "visit:channel", ["Email", "Direct"]]]}),
    );
    assert_eq!(r["results"][0]["metrics"], json!([2]), "{r}");

    // tamis keeps no city: asked for one, it says so.
    let r = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["visitors"],
        "dimensions": ["visit:city_name"]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("never their city"), "{}", r.body);
}

/// Plausible's channel cases, table-driven (plausible/analytics
/// `test/plausible/ingestion/acquisition_test.exs`, `@static_tests`), run
/// through tamis's channel expression in ClickHouse over one literal row
/// each: the referrer's source as tamis stores it (`source`), the campaign
/// tags, and the click id's name. The cases tamis answers otherwise by
/// design are left out and listed in the README ("AI Assistants", and the
/// sources Plausible adds to GA4's list by hand: Threads, Discord…).
#[test]
fn channel_rules_answer_plausibles_acquisition_cases() {
    let ch = ClickHouse::shared();
    let (expression, params) = tamis::query::channel::sql();
    // The crate binds `?` as quoted strings; so does this test.
    let mut bound = String::new();
    let mut values = params.iter();
    for c in expression.chars() {
        if c == '?' {
            let v = values.next().expect("a value per placeholder");
            bound.push('\'');
            bound.push_str(&v.replace('\\', "\\\\").replace('\'', "\\'"));
            bound.push('\'');
        } else {
            bound.push(c);
        }
    }
    assert!(values.next().is_none(), "every value bound");
    // (referrer source, utm_source, utm_medium, utm_campaign, click id, channel)
    let cases: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("", "", "", "", "", "Direct"),
        ("", "", "", "cross-network", "", "Cross-network"),
        ("", "", "paid", "shopping", "", "Paid Shopping"),
        ("DuckDuckGo", "", "paid", "", "", "Paid Search"),
        ("Google", "", "", "", "gclid", "Paid Search"),
        ("DuckDuckGo", "", "", "", "gclid", "Organic Search"),
        ("Bing", "", "", "", "msclkid", "Paid Search"),
        ("DuckDuckGo", "", "", "", "msclkid", "Organic Search"),
        ("", "google", "paid", "", "", "Paid Search"),
        ("YouTube", "", "paid", "", "", "Paid Video"),
        ("", "youtube", "paid", "", "", "Paid Video"),
        ("", "", "banner", "", "", "Display"),
        ("", "", "cpc", "", "", "Paid Other"),
        ("walmart.com", "", "", "", "", "Organic Shopping"),
        ("", "", "", "shop", "", "Organic Shopping"),
        ("Facebook", "", "", "", "", "Organic Social"),
        ("", "twitter", "", "", "", "Organic Social"),
        ("", "", "social", "", "", "Organic Social"),
        ("Vimeo", "", "", "", "", "Organic Video"),
        ("", "", "video", "", "", "Organic Video"),
        ("DuckDuckGo", "", "", "", "", "Organic Search"),
        ("", "duckduckgo", "", "", "", "Organic Search"),
        ("", "", "referral", "", "", "Referral"),
        ("", "email", "", "", "", "Email"),
        ("", "", "email", "", "", "Email"),
        ("", "", "affiliate", "", "", "Affiliates"),
        ("", "", "audio", "", "", "Audio"),
        ("", "sms", "", "", "", "SMS"),
        ("", "", "sms", "", "", "SMS"),
        ("", "", "app-push", "", "", "Mobile Push Notifications"),
        (
            "",
            "",
            "example-mobile",
            "",
            "",
            "Mobile Push Notifications",
        ),
        ("othersite.com", "", "", "", "", "Referral"),
        ("Instagram", "ig", "", "", "", "Organic Social"),
        ("YouTube", "yt", "", "", "", "Organic Video"),
        ("YouTube", "yt-ads", "", "", "", "Paid Video"),
        ("Facebook", "fb", "", "", "", "Organic Social"),
        ("Facebook", "fb-ads", "", "", "", "Paid Social"),
        ("Facebook", "fbad", "", "", "", "Paid Social"),
        ("Facebook", "facebook-ads", "", "", "", "Paid Social"),
        ("Reddit", "Reddit-ads", "", "", "", "Paid Social"),
        ("Google", "google_ads", "", "", "", "Paid Search"),
        ("Google", "Google-ads", "", "", "", "Paid Search"),
        ("Google", "Adwords", "", "", "", "Paid Search"),
        ("Twitter", "twitter-ads", "", "", "", "Paid Social"),
        ("Reddit", "", "", "", "", "Organic Social"),
        ("Bing", "", "", "", "", "Organic Search"),
        ("Yandex", "", "", "", "", "Organic Search"),
        ("Baidu", "", "", "", "", "Organic Search"),
        ("", "Newsletter-UK", "", "", "", "Email"),
        ("Google", "", "display", "", "123identifier", "Display"),
    ];
    let quote = |s: &str| format!("'{}'", s.replace('\'', "\\'"));
    let rows: Vec<String> = cases
        .iter()
        .map(|(source, utm_source, medium, campaign, click_id, _)| {
            // tamis stores a visit without a referrer as "Direct / None".
            let source = if source.is_empty() {
                "Direct / None"
            } else {
                source
            };
            format!(
                "SELECT {} AS source, {} AS utm_source, {} AS utm_medium, {} AS utm_campaign, {} AS click_id",
                quote(source),
                quote(utm_source),
                quote(medium),
                quote(campaign),
                quote(click_id)
            )
        })
        .collect();
    // One statement per case keeps the answers in the cases' order.
    let mut failures = Vec::new();
    for (row, case) in rows.iter().zip(cases) {
        let got = ch.query(&format!("SELECT {bound} FROM ({row})"));
        if got.trim() != case.5 {
            failures.push(format!("{case:?}: tamis says {}", got.trim()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `time_on_page` and `scroll_depth` from real engagement hits, sent as
/// Plausible's tracker sends them after a pageview (`{"n": "engagement",
/// "e": ms, "sd": percent}`): per (visit, page), the engaged time summed
/// and the deepest scroll, averaged over the pairs that reported
/// (plausible/analytics `query_time_on_page_test.exs` and
/// `query_special_metrics_test.exs`, "scroll_depth"). And bounces as
/// Plausible counts them: a non-interactive custom event (`"i": false`)
/// keeps the visit a bounce, an interactive one ends it.
#[test]
fn engagement_gives_time_on_page_and_scroll_depth_and_interactive_events_end_bounces() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("engagement");
    let start: chrono::DateTime<chrono::Utc> = "2026-03-10T15:00:00Z".parse().unwrap();
    let clock = tamis::clock::Clock::manual(start);
    let server = InProcess::serve(
        &config(ch, &db, None, "k_threshold = 1\nevent_names = [\"Click\"]"),
        clock.clone(),
    );
    let send = |minute: i64, ip: &str, body: Value| {
        clock.set(start + chrono::Duration::minutes(minute));
        let r = send_hit(server.addr, ip, FIREFOX, &body.to_string(), &[]);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.header("X-Tamis-Dropped"), None, "{body}");
    };
    let url = |page: &str| format!("https://example.org{page}");
    let view = |page: &str| json!({"n": "pageview", "u": url(page), "d": "example.org"});
    let engaged = |page: &str, ms: u32, depth: u32| json!({"n": "engagement", "u": url(page), "d": "example.org", "e": ms, "sd": depth});
    // /a: one visit engaged twice (30 s, deepest scroll 70 %), another
    // once (10 s, 30 %): 20 s and 50 % on average over the two visits.
    // The clock only moves forward: hits in time order.
    send(0, "100.64.1.1", view("/a"));
    send(0, "100.64.2.1", view("/a"));
    send(1, "100.64.1.1", engaged("/a", 20_000, 40));
    send(2, "100.64.1.1", engaged("/a", 10_000, 70));
    send(3, "100.64.2.1", engaged("/a", 10_000, 30));
    // /b: 5 s, scrolled to the end.
    send(4, "100.64.3.1", view("/b"));
    send(5, "100.64.3.1", engaged("/b", 5_000, 100));
    // /c: no engagement reported; one visit sends a non-interactive
    // event (still a bounce), the other an interactive one (not).
    send(6, "100.64.4.1", view("/c"));
    send(6, "100.64.5.1", view("/c"));
    send(
        7,
        "100.64.4.1",
        json!({"n": "Click", "u": url("/c"), "d": "example.org", "i": false}),
    );
    send(
        7,
        "100.64.5.1",
        json!({"n": "Click", "u": url("/c"), "d": "example.org"}),
    );
    wait_until(Duration::from_secs(10), "engagement stored", || {
        ch.query_in(
            &db,
            "SELECT sumMerge(pageviews), sumMerge(events), sumMerge(engaged_visits), sumMerge(scroll_visits) \
             FROM traffic_hourly WHERE event != 'tamis:delivered'",
        ) == "5\t2\t3\t3\n"
    });

    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["visitors", "time_on_page", "scroll_depth"], "dimensions": ["event:page"]}),
    );
    let row = |page: &str| {
        r["results"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["dimensions"] == json!([page])))
            .map(|row| row["metrics"].clone())
            .unwrap_or_else(|| panic!("{page} in {r}"))
    };
    assert_eq!(row("/a"), json!([2, 20, 50]), "{r}");
    assert_eq!(row("/b"), json!([1, 5, 100]), "{r}");
    // No engagement reported: no mean, as Plausible answers `null`.
    assert_eq!(row("/c"), json!([2, null, null]), "{r}");

    // A filter on the page reads the same numbers.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["time_on_page", "scroll_depth"], "filters": [["is", "event:page", ["/a"]]]}),
    );
    assert_eq!(r["results"][0]["metrics"], json!([20, 50]), "{r}");

    // Without a page, refused in Plausible's words.
    let refused = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": DAY, "metrics": ["scroll_depth"]}),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains(
            "Metric `scroll_depth` can only be queried with event:page filters or dimensions."
        ),
        "{}",
        refused.body
    );

    // The non-interactive event kept its visit a bounce; the other ended it.
    let r = query(
        &server,
        json!({"site_id": "example.org", "date_range": DAY,
        "metrics": ["visits", "bounce_rate"], "filters": [["is", "event:page", ["/c"]]]}),
    );
    assert_eq!(r["results"][0]["metrics"], json!([2, 50]), "{r}");
    server.stop();
}
