//! Funnels end to end: hits over HTTP into the real tamis binary, through
//! the journal, the aggregator and the exactly-once writer into a real
//! ClickHouse, read back through `POST /api/v2/funnel` with an exact and a
//! protected token; and the same counts after tamis is killed (-9) with
//! hits not yet written, and again once they are; a funnel row ClickHouse
//! refuses, set aside without losing or doubling the others; and the
//! endpoint while ClickHouse is stopped, frozen or refusing the read.
//!
//! Site example.org (k = 5), goals "Produit" (pages `/produit*`),
//! "Inscription" (event `Signup`), "Merci" (page `/merci`); funnel "Achat"
//! is Produit → Inscription → Merci, funnel "Retour" Merci → Produit.

mod common;

use std::time::Duration;

use common::clickhouse::Stop;
use common::*;
use serde_json::{json, Value};

const GOALS: &str = r#"
event_names = ["Signup"]
[[site.goal]]
page = "/produit*"
name = "Produit"
[[site.goal]]
event = "Signup"
name = "Inscription"
[[site.goal]]
page = "/merci"
name = "Merci"
[[site.funnel]]
name = "Achat"
steps = ["Produit", "Inscription", "Merci"]
[[site.funnel]]
name = "Retour"
steps = ["Merci", "Produit"]
"#;

/// One hit of visitor `v` (its own /24, so its own visitor key).
fn hit(server: &Binary, v: u32, event: &str, path: &str) {
    let ip = format!("100.{}.{}.3", 64 + v / 256, v % 256);
    let body = json!({"n": event, "u": format!("https://example.org{path}"), "d": "example.org"})
        .to_string();
    let r = send_hit(server.addr, &ip, FIREFOX, &body, &[]);
    assert_eq!(
        (r.status, r.header("x-tamis-dropped")),
        (202, None),
        "{}",
        r.body
    );
}

/// The visits' hits, in order, as (visitor, event, path). What a funnel
/// counts, by construction:
/// - 12 visits go Produit → Signup → Merci;
/// - 6 go Produit → Signup;
/// - 4 see a product page only;
/// - 3 sign up and thank you *before* a product page (out of order:
///   Produit only);
/// - 2 repeat every step twice (each counted once).
///
/// Achat: 27, 20, 14. Retour (Merci then Produit): 17 visits reach
/// /merci, and only the 3 out-of-order ones a product page after it (below
/// k).
fn visits() -> Vec<(u32, &'static str, &'static str)> {
    let mut hits = Vec::new();
    for v in 0..12 {
        hits.extend([
            (v, "pageview", "/produit/a"),
            (v, "Signup", "/produit/a"),
            (v, "pageview", "/merci"),
        ]);
    }
    for v in 12..18 {
        hits.extend([(v, "pageview", "/produit/b"), (v, "Signup", "/produit/b")]);
    }
    for v in 18..22 {
        hits.push((v, "pageview", "/produit/c"));
    }
    for v in 22..25 {
        hits.extend([
            (v, "pageview", "/"),
            (v, "Signup", "/"),
            (v, "pageview", "/merci"),
            (v, "pageview", "/produit/d"),
        ]);
    }
    for v in 25..27 {
        for (event, path) in [
            ("pageview", "/produit/e"),
            ("Signup", "/produit/e"),
            ("pageview", "/merci"),
        ] {
            hits.extend([(v, event, path), (v, event, path)]);
        }
    }
    hits
}

const ACHAT: [u64; 3] = [27, 20, 14];
const RETOUR: [u64; 2] = [17, 3];

fn funnel(server: &Binary, token: &str, body: Value) -> Response {
    let auth = format!("Bearer {token}");
    http(
        server.addr,
        "POST",
        "/api/v2/funnel",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

fn steps(server: &Binary, token: &str, name: &str) -> Value {
    let r = funnel(
        server,
        token,
        // The hits were sent today: "7d" ends yesterday, as Plausible's does.
        json!({"site_id": "example.org", "funnel": name, "date_range": "day"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn visits_of(answer: &Value) -> Vec<Value> {
    answer["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["visits"].clone())
        .collect()
}

/// Waits until ClickHouse holds `total` visits over every step.
fn stored(ch: &ClickHouse, db: &str, total: u64) {
    wait_until(Duration::from_secs(30), "funnel steps stored", || {
        ch.query_in(db, "SELECT sum(visits) FROM funnel_hourly WHERE step >= 1")
            == format!("{total}\n")
    });
}

/// Visits per (funnel, step) in ClickHouse, delivery marks left out.
fn stored_steps(ch: &ClickHouse, db: &str) -> String {
    ch.query_in(
        db,
        "SELECT funnel, step, sum(visits) FROM funnel_hourly WHERE step >= 1 GROUP BY funnel, step ORDER BY funnel, step FORMAT TSV",
    )
}

fn total() -> u64 {
    ACHAT.iter().chain(&RETOUR).sum()
}

#[test]
fn funnel_counts_visits_per_step_in_order_and_withholds_small_steps() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("funnels_api");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, GOALS));
    for (v, event, path) in visits() {
        hit(&server, v, event, path);
    }
    stored(ch, &db, total());

    let exact = steps(&server, TOKEN, "Achat");
    assert_eq!(exact["funnel"], "Achat");
    assert_eq!(exact["meta"]["disclosure"], "exact");
    assert_eq!(exact["meta"]["counted_within"], "visit");
    assert_eq!(
        exact["steps"],
        json!([
            {"name": "Produit", "visits": 27, "conversion_rate": 100, "conversion_rate_step": 100, "dropoff": 0, "dropoff_percentage": 0},
            {"name": "Inscription", "visits": 20, "conversion_rate": 74.07, "conversion_rate_step": 74.07, "dropoff": 7, "dropoff_percentage": 25.93},
            {"name": "Merci", "visits": 14, "conversion_rate": 51.85, "conversion_rate_step": 70, "dropoff": 6, "dropoff_percentage": 30},
        ])
    );
    // Below k: withheld, counts and rates.
    let small = steps(&server, TOKEN, "Retour");
    assert_eq!(visits_of(&small), [json!(17), Value::Null]);
    assert_eq!(small["steps"][1]["conversion_rate"], Value::Null);
    assert_eq!(small["steps"][1]["dropoff"], Value::Null);
    assert_eq!(small["meta"]["suppressed_steps"], 1);

    // Protected: multiples of 5 near the counts, never growing along the
    // funnel, the same however often asked; small steps withheld.
    let protected = steps(&server, PROTECTED_TOKEN, "Achat");
    assert_eq!(protected["meta"]["disclosure"], "protected");
    assert_eq!(protected["meta"]["rounding_base"], 5);
    let published: Vec<u64> = visits_of(&protected)
        .iter()
        .map(|v| v.as_u64().expect("published"))
        .collect();
    for (p, exact) in published.iter().zip(ACHAT) {
        assert_eq!(p % 5, 0, "{published:?}");
        assert!(p.abs_diff(exact) < 5, "{published:?}");
    }
    assert!(published.windows(2).all(|w| w[1] <= w[0]), "{published:?}");
    let s = &protected["steps"][1];
    let expected_rate = (published[1] as f64 / published[0] as f64 * 10_000.0).round() / 100.0;
    assert_eq!(s["conversion_rate"].as_f64(), Some(expected_rate));
    assert_eq!(s["dropoff"].as_u64(), Some(published[0] - published[1]));
    assert_eq!(steps(&server, PROTECTED_TOKEN, "Achat"), protected);
    let small = steps(&server, PROTECTED_TOKEN, "Retour");
    let first = small["steps"][0]["visits"].as_u64().expect("17 is shown");
    assert!(first.is_multiple_of(5) && first.abs_diff(17) < 5, "{small}");
    assert_eq!(small["steps"][1]["visits"], Value::Null);

    // Visits are counted by the hour they started: a range before them
    // counts none.
    let r = funnel(
        &server,
        TOKEN,
        json!({"site_id": "example.org", "funnel": "Achat", "date_range": ["2020-01-01", "2020-01-31"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        visits_of(&r.json()),
        [Value::Null, Value::Null, Value::Null]
    );

    // Errors name the field; an unknown funnel names the site's.
    let r = funnel(
        &server,
        TOKEN,
        json!({"site_id": "example.org", "funnel": "Nope", "date_range": "7d"}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains(r#"\"Achat\", \"Retour\""#), "{}", r.body);
    let r = funnel(
        &server,
        TOKEN,
        json!({"site_id": "example.org", "funnel": "Achat"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("date_range"), "{}", r.body);
    let r = funnel(
        &server,
        TOKEN,
        json!({"site_id": "example.org", "date_range": "7d"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("funnel"), "{}", r.body);
    let r = funnel(
        &server,
        "wrong",
        json!({"site_id": "example.org", "funnel": "Achat", "date_range": "7d"}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = funnel(
        &server,
        OTHER_TOKEN,
        json!({"site_id": "example.org", "funnel": "Achat", "date_range": "7d"}),
    );
    assert_eq!(r.status, 404, "another site's token: {}", r.body);
    let r = http(server.addr, "GET", "/api/v2/funnel", &[], b"");
    assert_eq!(r.status, 405, "{}", r.body);

    // The OpenAPI document describes these answers.
    let doc = http(server.addr, "GET", "/api/v2/openapi.json", &[], b"").json();
    let validator = |name: &str| openapi_validator(&doc, name);
    let (request, response) = (validator("FunnelRequest"), validator("FunnelResponse"));
    assert!(request.is_valid(
        &json!({"site_id": "example.org", "funnel": "Achat", "date_range": ["2026-01-01", "2026-01-31"]})
    ));
    assert!(!request.is_valid(&json!({"site_id": "example.org", "funnel": "Achat"})));
    for answer in [&exact, &protected, &small] {
        assert!(
            response.is_valid(answer),
            "{answer}: {:?}",
            response
                .iter_errors(answer)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
    for status in [400, 401, 404, 429, 503] {
        assert!(
            doc["paths"]["/api/v2/funnel"]["post"]["responses"][status.to_string()].is_object(),
            "{status} is documented"
        );
    }

    // Only counts per step are stored: no page, visitor or order.
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'funnel_hourly' ORDER BY name FORMAT TSV"
        ),
        "funnel\nhour\nsite_id\nstep\nvisits\n"
    );
    // Each read is audited like a stats read.
    wait_until(Duration::from_secs(20), "funnel reads audited", || {
        ch.query_in(
            &db,
            "SELECT count() FROM audit_log WHERE kind = 'stats_read' AND summary LIKE 'funnel=\"Achat\"%'",
        ) == "4\n"
    });
    let log = server.stop();
    assert!(!log.contains("100.64."), "no client address in the log");
}

#[test]
fn funnel_counts_are_exact_after_kill9_and_replay() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("funnels_kill9");
    let scratch = Scratch::new();
    // Nothing is written for a minute: the kill finds every hit in the
    // journal only, and the visits' sessions are rebuilt by replay.
    let text = config(ch, &db, None, GOALS)
        .replace("flush_interval_ms = 200", "flush_interval_ms = 60000");
    let mut server = Binary::serve(&scratch, &text);
    let hits = visits();
    // The first half of every visit's hits, then a crash.
    let (before, after): (Vec<_>, Vec<_>) = hits
        .iter()
        .enumerate()
        .partition(|(i, (v, _, _))| hits[..*i].iter().filter(|h| h.0 == *v).count() < 2);
    for (_, (v, event, path)) in &before {
        hit(&server, *v, event, path);
    }
    server.kill9();
    assert_eq!(
        ch.query_in(&db, "SELECT count() FROM funnel_hourly"),
        "0\n",
        "nothing was written before the kill"
    );
    server.edit_config(|t| t.replace("flush_interval_ms = 60000", "flush_interval_ms = 200"));
    server.restart();
    // The rest of the visits, after the restart: their steps continue
    // where replay left them.
    for (_, (v, event, path)) in &after {
        hit(&server, *v, event, path);
    }
    stored(ch, &db, total());
    let check = |server: &Binary| {
        let exact = steps(server, TOKEN, "Achat");
        assert_eq!(visits_of(&exact), ACHAT.map(|n| json!(n)));
        assert_eq!(
            stored_steps(ch, &db),
            "Achat\t1\t27\nAchat\t2\t20\nAchat\t3\t14\nRetour\t1\t17\nRetour\t2\t3\n"
        );
    };
    check(&server);
    // Killed again once everything is in (receipts included): replay
    // starts after the last receipt, so nothing is counted twice.
    wait_until(Duration::from_secs(30), "every batch receipted", || {
        common::rig::scrape(server.admin).is_some_and(|m| m.get("tamis_queue_depth") == Some(&0.0))
    });
    server.kill9();
    server.restart();
    hit(&server, 500, "pageview", "/");
    wait_until(Duration::from_secs(30), "the new hit stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly")
            == format!(
                "{}\n",
                hits.iter().filter(|h| h.1 == "pageview").count() + 1
            )
    });
    check(&server);
}

/// Sends every hit of [`visits`] and the pageviews they hold.
fn send_visits(server: &Binary) -> u64 {
    let hits = visits();
    for (v, event, path) in &hits {
        hit(server, *v, event, path);
    }
    hits.iter().filter(|h| h.1 == "pageview").count() as u64
}

/// ClickHouse refuses the rows of step 2 of "Retour" (a test-only view on
/// `batch_in`, as `faults.rs` refuses pages). The hits that reach it reach
/// step 1 of "Achat" too, so the refused row shares its insert (kind
/// funnel, site, hour) with other funnels' steps. The writer isolates it:
/// only it is dead-lettered, with ClickHouse's code and never its text;
/// every other step and every pageview is counted exactly once; every hit
/// is accounted for by exactly one receipt, and delivery never blocks.
#[test]
fn a_refused_funnel_row_is_dead_lettered_and_the_rest_of_its_insert_counted_once() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("funnels_refused");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, GOALS));
    ch.refuse_rows(
        &db,
        "batch_in",
        "kind = 'funnel' AND event = 'Retour' AND hits = 2",
    );
    let pageviews = send_visits(&server);
    let hits = visits().len() as u64;
    stored(ch, &db, total() - RETOUR[1]);
    wait_until(Duration::from_secs(30), "every hit receipted", || {
        ch.query_in(&db, "SELECT sum(hits) FROM batch_receipts") == format!("{hits}\n")
            && common::rig::scrape(server.admin)
                .is_some_and(|m| m.get("tamis_log_backlog_hits") == Some(&0.0))
    });

    assert_eq!(
        stored_steps(ch, &db),
        "Achat\t1\t27\nAchat\t2\t20\nAchat\t3\t14\nRetour\t1\t17\n",
        "every step but the refused one, once"
    );
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT sumMerge(pageviews) FROM traffic_hourly WHERE event != 'tamis:delivered'"
        ),
        format!("{pageviews}\n")
    );
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT count() = uniqExact(first_seq, end_seq) FROM batch_receipts"
        ),
        "1\n",
        "no batch receipted twice"
    );
    assert_eq!(
        visits_of(&steps(&server, TOKEN, "Achat")),
        ACHAT.map(|n| json!(n))
    );
    assert_eq!(
        visits_of(&steps(&server, TOKEN, "Retour")),
        [json!(RETOUR[0]), Value::Null]
    );

    // Only the refused row is set aside: funnel rows of step 2 of
    // "Retour", holding its 3 visits, with ClickHouse's code.
    let letters = dead_letters(&server.log_dir());
    assert!(!letters.is_empty(), "nothing dead-lettered");
    let mut visits = 0;
    for (file, text) in &letters {
        let line: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(line["code"], 395, "{text}");
        assert!(
            line["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("ClickHouse code 395")),
            "{text}"
        );
        let row = &line["row"];
        assert_eq!(
            (&row["kind"], &row["event"], &row["hits"]),
            (&json!("funnel"), &json!("Retour"), &json!(2)),
            "only the refused row: {text}"
        );
        visits += row["visits"].as_u64().expect("visits");
        for quoted in CLICKHOUSE_WORDS {
            assert!(!text.contains(quoted), "{file} quotes ClickHouse: {text}");
        }
    }
    assert_eq!(visits, RETOUR[1], "the refused row's visits, once");
    let metrics = common::rig::scrape(server.admin).expect("metrics");
    assert_eq!(
        metrics.get("tamis_rows_dead_lettered_total"),
        Some(&(letters.len() as f64))
    );
    assert!(
        metrics
            .get("tamis_groups_isolated_total")
            .is_some_and(|n| *n >= 1.0),
        "{metrics:?}"
    );
    assert_eq!(metrics.get("tamis_delivery_blocked"), Some(&0.0));
    let log = server.stop();
    assert!(log.contains("refused rows isolated"), "{log}");
    for quoted in CLICKHOUSE_WORDS {
        assert!(
            !log.contains(quoted),
            "the log quotes ClickHouse ({quoted})"
        );
    }
}

/// The funnel endpoint and the stats endpoint, asked while ClickHouse
/// fails: the same status, `Retry-After` and message, never ClickHouse's
/// text.
fn fails_like_the_stats_api(server: &Binary, when: &str) -> Response {
    let f = funnel(
        server,
        TOKEN,
        json!({"site_id": "example.org", "funnel": "Achat", "date_range": "day"}),
    );
    let s = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": "day"}),
    );
    assert_eq!(f.status, 503, "{when}: {}", f.body);
    assert_eq!(
        (f.status, f.header("retry-after"), f.json()),
        (s.status, s.header("retry-after"), s.json()),
        "{when}: the funnel endpoint answers as the stats endpoint"
    );
    assert_eq!(
        f.json()
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["error".to_string()]),
        "{when}: {}",
        f.body
    );
    f
}

/// `POST /api/v2/funnel` while ClickHouse is stopped (killed), frozen
/// (SIGSTOP, past `query.timeout_ms`) or refusing the read (its table
/// renamed away): 503 as the stats API answers, with its `Retry-After`
/// and message, never ClickHouse's words; the failure is logged with the
/// code only; and the same steps as before once ClickHouse is back.
#[test]
fn funnel_endpoint_fails_like_the_stats_api_and_recovers_with_clickhouse() {
    let mut ch = ClickHouse::start();
    let db = ch.create_database("funnels_outage");
    let scratch = Scratch::new();
    let text = format!(
        "{}\n[query]\ntimeout_ms = 1000\n",
        config(&ch, &db, None, GOALS)
    );
    let server = Binary::serve(&scratch, &text);
    send_visits(&server);
    stored(&ch, &db, total());
    let before = steps(&server, TOKEN, "Achat");
    assert_eq!(visits_of(&before), ACHAT.map(|n| json!(n)));
    let recovered = |when: &str| {
        wait_until(Duration::from_secs(30), when, || {
            funnel(
                &server,
                TOKEN,
                json!({"site_id": "example.org", "funnel": "Achat", "date_range": "day"}),
            )
            .status
                == 200
        });
        assert_eq!(steps(&server, TOKEN, "Achat"), before, "{when}");
    };

    ch.stop(Stop::Kill);
    let down = fails_like_the_stats_api(&server, "ClickHouse stopped");
    assert_eq!(down.header("retry-after"), None);
    assert_eq!(down.json()["error"], "statistics are unavailable right now");
    ch.restart();
    recovered("ClickHouse restarted");

    ch.freeze(true);
    let frozen = fails_like_the_stats_api(&server, "ClickHouse frozen");
    ch.freeze(false);
    assert_eq!(frozen.header("retry-after"), Some("10"));
    let message = frozen.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("1000 ms") && message.contains("query.timeout_ms"),
        "{message}"
    );
    recovered("ClickHouse thawed");

    // A refusal whose text names the table: the answer is the generic
    // one, the log has the code (60, unknown table), neither the words.
    ch.query_in(&db, "RENAME TABLE funnel_hourly TO funnel_hourly_away");
    let refused = funnel(
        &server,
        TOKEN,
        json!({"site_id": "example.org", "funnel": "Achat", "date_range": "day"}),
    );
    ch.query_in(&db, "RENAME TABLE funnel_hourly_away TO funnel_hourly");
    assert_eq!(
        (
            refused.status,
            refused.header("retry-after"),
            refused.json()
        ),
        (503, None, down.json()),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("funnel_hourly"), "{}", refused.body);
    recovered("the table back");
    let log = server.stop();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("funnel query failed"))
        .collect();
    assert!(
        failed.iter().any(|l| l.contains("code=60")),
        "no failure logged with ClickHouse's code:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("query failed")) {
        for quoted in CLICKHOUSE_WORDS {
            assert!(!line.contains(quoted), "ClickHouse's text logged: {line}");
        }
        assert!(!line.contains("funnel_hourly_away"), "{line}");
    }
}
