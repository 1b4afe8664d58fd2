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

// --- the rounding key: the installation's stored secret ------------------
//
// Without `query.rounding_key`, the rounding is keyed by a secret drawn once
// and stored in ClickHouse (`sink::rounding`). These run the real binary, so
// that restarts, reloads and a second collector are real; the day is
// today's, in the site's time zone.

/// Visitors per page: none a multiple of 5, so each of the 36 counts (3
/// metrics × 12 pages) is rounded up or down by its own draw. Two
/// different keys give the same answer to all of them with a probability
/// below 1e-8, so equal answers mean one key.
const ROUNDED_PAGES: [u32; 12] = [6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19];

/// The protected question asked before and after each change.
fn protected_question() -> Value {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::Toronto)
        .date_naive()
        .to_string();
    json!({"site_id": "example.org", "metrics": ["visitors", "visits", "pageviews"],
        "dimensions": ["event:page"], "date_range": [today, today],
        "include": {"totals": true}})
}

/// The protected answer's numbers: rows and totals.
fn protected_numbers(addr: std::net::SocketAddr) -> Value {
    let answer = query_as(addr, PROTECTED_TOKEN, protected_question());
    assert_protected(&answer, 3);
    json!({"results": answer["results"], "totals": answer["meta"]["totals"]})
}

/// Sends [`ROUNDED_PAGES`]'s visitors, each from a /24 of its own (the
/// truncated address is part of the visitor), and waits until ClickHouse
/// holds them.
fn send_rounded_pages(addr: std::net::SocketAddr, ch: &ClickHouse, db: &str) {
    let mut v = 0;
    for (i, n) in ROUNDED_PAGES.iter().enumerate() {
        for _ in 0..*n {
            let r = send_hit(
                addr,
                &format!("100.70.{v}.1"),
                FIREFOX,
                &pageview(&format!("https://example.org/p{i}")),
                &[],
            );
            assert_eq!(r.status, 202, "{}", r.body);
            v += 1;
        }
    }
    let total: u32 = ROUNDED_PAGES.iter().sum();
    wait_until(Duration::from_secs(20), "pageviews stored", || {
        ch.query_in(db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == format!("{total}\n")
    });
}

/// A collector without `query.rounding_key` on a new database `name`,
/// its pages seeded ([`seed_rounded_pages`]); the scratch folder holds its
/// config and must outlive it.
fn seeded_collector(ch: &ClickHouse, name: &str) -> (String, Scratch, Binary) {
    let db = ch.create_database(name);
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    seed_rounded_pages(server.addr, ch, &db);
    (db, scratch, server)
}

/// [`send_rounded_pages`], then checks that an exact token sees them one
/// by one.
fn seed_rounded_pages(addr: std::net::SocketAddr, ch: &ClickHouse, db: &str) {
    send_rounded_pages(addr, ch, db);
    let exact = query_as(addr, TOKEN, protected_question());
    let mut seen: Vec<(String, Value)> = exact["results"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap_or("").to_string(),
                r["metrics"].clone(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, Value)> = ROUNDED_PAGES
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("/p{i}"), json!([n, n, n])))
        .collect();
    let mut expected = expected;
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen, expected,
        "one visit of one pageview per visitor: {exact}"
    );
}

/// The secrets stored in `db` (hex), oldest first.
fn stored_secrets(ch: &ClickHouse, db: &str) -> Vec<String> {
    ch.query_in(
        db,
        "SELECT secret FROM rounding_secret ORDER BY created_at, secret FORMAT TSV",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A `[[token]]` table for a token named `name` (a new secret).
fn token_table(name: &str) -> String {
    format!(
        "\n[[token]]\nname = \"{name}\"\nsecret_sha256 = \"{}\"\nsites = [\"example.org\"]\n",
        sha256_hex(&format!("{name}-secret-token"))
    )
}

fn sighup(server: &Binary) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The regression: without `query.rounding_key` the key was derived from
/// the tokens' digests, so a token added or removed (by SIGHUP or at a
/// restart) drew every rounding anew, and asking before and after gave
/// two draws to average. Now the same protected question gets the same
/// answer across a reload that adds a token and a restart that removes
/// one, and one secret stays stored.
#[test]
fn protected_answers_stay_the_same_when_tokens_change_without_a_rounding_key() {
    let ch = ClickHouse::shared();
    let (db, _scratch, mut server) = seeded_collector(ch, "roundkey_tokens");
    let before = protected_numbers(server.addr);
    let secrets = stored_secrets(ch, &db);
    assert_eq!(secrets.len(), 1, "one secret drawn: {secrets:?}");

    // A token added by SIGHUP.
    server.edit_config(|text| text + &token_table("added-by-reload"));
    sighup(&server);
    wait_until(Duration::from_secs(20), "the reload", || {
        server.log_text().contains("configuration reloaded")
    });
    assert_eq!(protected_numbers(server.addr), before, "after the reload");

    // A token removed and another added, then a restart.
    let stopped = server.terminate(Duration::from_secs(30));
    assert!(stopped.status.is_some(), "tamis stopped");
    server.edit_config(|text| {
        let other = text
            .find("[[token]]\nname = \"other\"")
            .expect("the other token");
        let end = text[other..].find("\n\n").map_or(text.len(), |e| other + e);
        format!(
            "{}{}{}",
            &text[..other],
            &text[end..],
            token_table("added-at-restart")
        )
    });
    server.restart();
    assert_eq!(protected_numbers(server.addr), before, "after the restart");
    assert_eq!(
        stored_secrets(ch, &db),
        secrets,
        "the same secret, no other"
    );
    server.stop();
}

/// Two collectors that start at once on one database, with different token
/// lists, race to draw the secret; both take the earliest stored, so a
/// question asked of either gets the same protected answer.
#[test]
fn two_collectors_on_one_clickhouse_give_the_same_protected_answers() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("roundkey_two");
    let (scratch_a, scratch_b) = (Scratch::new(), Scratch::new());
    let config_a = config(ch, &db, None, "");
    let config_b = config(ch, &db, None, "") + &token_table("only-on-b");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Binary::serve(&scratch_a, &config_a));
        let b = s.spawn(|| Binary::serve(&scratch_b, &config_b));
        (
            a.join().expect("collector a"),
            b.join().expect("collector b"),
        )
    });
    seed_rounded_pages(a.addr, ch, &db);
    let from_a = protected_numbers(a.addr);
    assert_eq!(
        protected_numbers(b.addr),
        from_a,
        "collector b answers as a"
    );
    let secrets = stored_secrets(ch, &db);
    assert!(
        (1..=2).contains(&secrets.len()),
        "each collector drew one at most: {secrets:?}"
    );
    a.stop();
    b.stop();
}

/// Two collectors that each drew a secret at once agree because each reads
/// back the earliest after a pause; should a rival's row land later than
/// that, a collector's periodic check (`Options::salt_period`, 100 ms
/// in-process) moves it to the earliest stored, the one every collector
/// started since takes.
#[test]
fn a_collector_rounding_with_a_later_secret_moves_to_the_earliest_stored() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("roundkey_recheck");
    let clock = || tamis::clock::Clock::manual(chrono::Utc::now());
    let first = InProcess::serve(&config(ch, &db, None, ""), clock());
    seed_rounded_pages(first.addr, ch, &db);
    let own = protected_numbers(first.addr);
    // A rival's secret that sorts first, landing late.
    ch.query_in(
        &db,
        &format!(
            "INSERT INTO rounding_secret SELECT toDateTime(86400), '{}'",
            "5a".repeat(32)
        ),
    );
    let second = InProcess::serve(&config(ch, &db, None, ""), clock());
    let earliest = protected_numbers(second.addr);
    assert_ne!(
        earliest, own,
        "the two secrets round these counts differently"
    );
    wait_until(
        Duration::from_secs(10),
        "the first collector on the earliest secret",
        || protected_numbers(first.addr) == earliest,
    );
}

/// A configured `query.rounding_key` wins over the stored secret: two
/// installations with the same visits and their own stored secrets answer
/// differently without it (each secret is drawn at random), and alike
/// once both set the same key — which changes their roundings once (the
/// migration path the README describes).
#[test]
fn a_configured_rounding_key_wins_over_the_stored_secret() {
    let ch = ClickHouse::shared();
    let key = "[query]\nrounding_key = \"5f1c0e9a7d3b24c68e0f1a2b3c4d5e6f\"\n";
    let mut answers = Vec::new();
    for name in ["roundkey_key_a", "roundkey_key_b"] {
        let (db, _scratch, mut server) = seeded_collector(ch, name);
        let stored = protected_numbers(server.addr);
        let secrets = stored_secrets(ch, &db);
        server.terminate(Duration::from_secs(30));
        server.edit_config(|text| format!("{key}{text}"));
        server.restart();
        let keyed = protected_numbers(server.addr);
        assert_ne!(keyed, stored, "setting the key changes the roundings once");
        server.terminate(Duration::from_secs(30));
        server.restart();
        assert_eq!(protected_numbers(server.addr), keyed, "and then they stay");
        assert_eq!(
            stored_secrets(ch, &db),
            secrets,
            "the stored secret is kept"
        );
        answers.push((stored, keyed, secrets));
        server.stop();
    }
    let [(stored_a, keyed_a, secrets_a), (stored_b, keyed_b, secrets_b)] =
        <[_; 2]>::try_from(answers).expect("two installations");
    assert_ne!(
        secrets_a, secrets_b,
        "each installation draws its own secret"
    );
    assert_ne!(
        stored_a, stored_b,
        "each stored secret keys its own roundings"
    );
    assert_eq!(keyed_a, keyed_b, "the configured key alone decides");
}

/// The stored secret never leaves ClickHouse: not in the collector's log
/// (at debug level), its metrics, its privacy facts, nor the audit log.
#[test]
fn the_stored_rounding_secret_appears_in_no_log_metric_notice_or_audit_row() {
    let ch = ClickHouse::shared();
    let (db, _scratch, mut server) = seeded_collector(ch, "roundkey_quiet");
    protected_numbers(server.addr);
    server.terminate(Duration::from_secs(30));
    server.restart();
    protected_numbers(server.addr);
    let secrets = stored_secrets(ch, &db);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let secret = secrets[0].to_ascii_lowercase();
    assert_eq!(secret.len(), 64, "256 bits as hex");
    let metrics = http(server.admin, "GET", "/metrics", &[], b"").body;
    let facts = http(server.addr, "GET", "/privacy.json", &[], b"").body;
    let audit = ch.query_in(&db, "SELECT * FROM audit_log FORMAT TSV");
    let log = server.stop();
    assert!(
        log.contains("stats query"),
        "the log is the collector's: {log}"
    );
    for (what, text) in [
        ("log", &log),
        ("/metrics", &metrics),
        ("/privacy.json", &facts),
        ("audit_log", &audit),
    ] {
        let text = text.to_ascii_lowercase();
        // Any 8 consecutive bytes of it, as hex.
        for start in (0..=48).step_by(2) {
            assert!(
                !text.contains(&secret[start..start + 16]),
                "{what} holds part of the rounding secret"
            );
        }
    }
}

/// With the stored secret unreadable at start-up (every read of
/// `rounding_secret` cut by a proxy in front of ClickHouse, everything else
/// passed), tamis starts and counts hits, but its stats API answers 503
/// with `Retry-After` rather than round with any other key; once the read
/// goes through, the secret is read in the background and the same
/// question is answered, protected.
#[test]
fn stats_wait_for_an_unreadable_rounding_secret_and_answer_once_it_is_read() {
    use common::proxy::{Fault, Matcher, Part, Proxy, Rule};
    let ch = ClickHouse::shared();
    let db = ch.create_database("roundkey_unread");
    let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], ch.http_port)));
    // Every request naming the table but the migration's CREATE.
    let reads = Matcher::new(|line, body| {
        let body = String::from_utf8_lossy(body);
        (line.contains("rounding_secret") || body.contains("rounding_secret"))
            && !body.contains("CREATE TABLE")
    });
    proxy.arm(Rule::new(reads, Fault::Cut(Part::Nothing)).times(1_000_000));
    let text = config(ch, &db, None, "").replace(&ch.url, &proxy.url());
    let server = InProcess::serve(&text, tamis::clock::Clock::system());
    send_rounded_pages(server.addr, ch, &db);
    assert!(proxy.faulted() > 0, "the secret's read was cut");
    let refused = stats(server.addr, PROTECTED_TOKEN, protected_question());
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert!(refused.body.contains("rounding secret"), "{}", refused.body);
    assert!(
        stored_secrets(ch, &db).is_empty(),
        "nothing drawn without a read"
    );
    proxy.disarm();
    wait_until(Duration::from_secs(30), "the secret read", || {
        stats(server.addr, PROTECTED_TOKEN, protected_question()).status == 200
    });
    protected_numbers(server.addr);
    assert_eq!(stored_secrets(ch, &db).len(), 1);
}
