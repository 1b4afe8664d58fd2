//! Funnels end to end: hits over HTTP into the real tamis binary, through
//! the journal, the aggregator and the exactly-once writer into a real
//! ClickHouse, read back through `POST /api/v2/funnel` with an exact and a
//! protected token; and the same counts after tamis is killed (-9) with
//! hits not yet written, and again once they are.
//!
//! Site example.org (k = 5), goals "Produit" (pages `/produit*`),
//! "Inscription" (event `Signup`), "Merci" (page `/merci`); funnel "Achat"
//! is Produit → Inscription → Merci, funnel "Retour" Merci → Produit.

mod common;

use std::time::Duration;

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
            ch.query_in(
                &db,
                "SELECT step, sum(visits) FROM funnel_hourly WHERE step >= 1 GROUP BY funnel, step ORDER BY funnel, step FORMAT TSV"
            ),
            "1\t27\n2\t20\n3\t14\n1\t17\n2\t3\n"
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
