//! The stats API on a ClickHouse cluster reads through the `Distributed`
//! tables and answers exactly what a single server answers for the same
//! rows; when a shard has no replica left it answers 503 with
//! `Retry-After`, never smaller numbers.
//!
//! The same aggregate rows go into one single ClickHouse and into the 2 × 2
//! cluster of `common::cluster`, there spread over both shards as the
//! writer spreads batches (`batch_in` of shard 1 replica 1 for some, of
//! shard 2 replica 2 for others), and a tamis in-process serves each.
//!
//! What ClickHouse promises and these tests lean on, from its
//! documentation of the Distributed engine
//! (https://clickhouse.com/docs/engines/table-engines/special/distributed):
//! a `Distributed` read asks one replica of every shard, a live one when
//! another cannot be reached, and merges the shards' intermediate
//! aggregate states, so visitor sketches of one visitor on two shards
//! count once; and of `skip_unavailable_shards`
//! (https://clickhouse.com/docs/operations/settings/settings#skip_unavailable_shards):
//! off by default, so a read with a shard unreachable fails (code 279 on
//! 18.16) rather than answering without it — which tamis never turns on.
//! Of `GLOBAL IN`
//! (https://clickhouse.com/docs/sql-reference/operators/in#distributed-subqueries):
//! the subquery runs once on the node asked and its answer goes to every
//! shard, as the newest version of an imported day needs when its ledger
//! row and its rows are on different shards.

mod common;

use std::path::Path;
use std::time::Duration;

use common::clickhouse::Stop;
use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

/// Goals, a funnel and a property, so that every kind of read is asked.
const SITE: &str = r#"
event_names = ["Signup"]
prop_keys = ["plan"]
[[site.goal]]
page = "/a"
name = "Page A"
[[site.goal]]
event = "Signup"
name = "Signup"
[[site.funnel]]
name = "Signup path"
steps = ["Page A", "Signup"]
"#;

/// Where a row goes on the cluster: shard 1 replica 1 or shard 2 replica 2.
#[derive(Clone, Copy, PartialEq)]
enum Shard {
    One,
    Two,
}

/// The rows of one shard, as INSERT statements into `db`.
fn inserts(db: &str, shard: Shard) -> Vec<String> {
    let mut traffic = Vec::new();
    let mut props = Vec::new();
    let row = |v: u64, hour: &str, event: &str, page: &str, source: &str, counts: [i64; 6]| {
        let [pageviews, events, visits, bounces, duration, exits] = counts;
        format!(
            "('traffic2', 'example.org', toDateTime('{hour}', 'UTC'), '{event}', '{page}', '{page}', '{source}', \
             '{referrer}', {v}, {pageviews}, {events}, {visits}, {bounces}, {duration}, {exits})",
            referrer = if source.is_empty() { String::new() } else { format!("{}.example", source.to_lowercase()) },
        )
    };
    let on = |v: u64| if v % 2 == 1 { Shard::One } else { Shard::Two };
    let other = |s: Shard| {
        if s == Shard::One {
            Shard::Two
        } else {
            Shard::One
        }
    };
    for v in 1..=60u64 {
        let day = if v % 3 == 0 {
            "2026-11-11"
        } else {
            "2026-11-10"
        };
        let hour = format!("{day} {}:00:00", ["14", "15", "19"][(v % 3) as usize]);
        let page = ["/", "/a", "/b", "/c"][(v % 4) as usize];
        let source = ["Google", "", "Twitter"][(v % 5 % 3) as usize];
        let bounce = i64::from(v % 2 == 0);
        let duration = (v % 7) as i64 * 10;
        if on(v) == shard {
            traffic.push(row(
                v,
                &hour,
                "pageview",
                page,
                source,
                [1, 0, 1, bounce, duration, 1],
            ));
        }
        // One visit, two shards: the visitor's second page lands on the
        // other shard (another batch), in the same hour.
        if v <= 12 && other(on(v)) == shard {
            traffic.push(row(v, &hour, "pageview", "/d", source, [1, 0, 0, 0, 0, 0]));
        }
        // A custom event with a property, the first five on shard 1.
        if v <= 10 && (if v <= 5 { Shard::One } else { Shard::Two }) == shard {
            traffic.push(row(v, &hour, "Signup", "/a", source, [0, 1, 0, 0, 0, 0]));
            props.push(format!(
                "('prop', 'example.org', toDateTime('{hour}', 'UTC'), 'Signup', '/a', 'plan', '{}', {v}, 1)",
                if v % 2 == 1 { "pro" } else { "free" }
            ));
        }
    }
    let mut out = vec![
        format!(
            "INSERT INTO {db}.batch_in (kind, site_id, hour, event, page, entry_page, source, referrer, \
             visitor, pageviews, events, visits, bounces, duration, exits) VALUES {}",
            traffic.join(", ")
        ),
        format!(
            "INSERT INTO {db}.batch_in (kind, site_id, hour, event, page, prop_key, prop_value, visitor, events) VALUES {}",
            props.join(", ")
        ),
    ];
    // Funnel steps and dropped hits, some on each shard.
    let (funnel, dropped) = match shard {
        Shard::One => ("(1, 8), (2, 3)", 2),
        Shard::Two => ("(1, 7), (2, 4)", 5),
    };
    out.push(format!(
        "INSERT INTO {db}.batch_in (kind, site_id, hour, event, hits, visits) \
         SELECT 'funnel', 'example.org', toDateTime('2026-11-10 15:00:00', 'UTC'), 'Signup path', s.1, s.2 \
         FROM system.one ARRAY JOIN [{funnel}] AS s"
    ));
    out.push(format!(
        "INSERT INTO {db}.batch_in (kind, site_id, hour, reason, hits) VALUES \
         ('dropped', 'example.org', toDateTime('2026-11-10 15:00:00', 'UTC'), 'opt_out', {dropped})"
    ));
    // Imported history: the ledger's current version (7) on shard 1, its
    // rows and a replaced version (3) on shard 2.
    match shard {
        Shard::One => out.push(format!(
            "INSERT INTO {db}.imported_days (site_id, report, day, version, file, file_sha256, rows, imported_at) VALUES \
             ('example.org', 'visitors', '2026-11-01', 7, 'b.json', 'bb', 1, now()), \
             ('example.org', 'visitors', '2026-11-02', 7, 'b.json', 'bb', 1, now())"
        )),
        Shard::Two => {
            out.push(format!(
                "INSERT INTO {db}.imported_days (site_id, report, day, version, file, file_sha256, rows, imported_at) VALUES \
                 ('example.org', 'visitors', '2026-11-01', 3, 'a.json', 'aa', 1, now())"
            ));
            out.push(format!(
                "INSERT INTO {db}.imported_daily (site_id, day, version, report, visitors, visits, pageviews, bounces, duration) VALUES \
                 ('example.org', '2026-11-01', 3, 'visitors', 999, 999, 999, 0, 0), \
                 ('example.org', '2026-11-01', 7, 'visitors', 100, 120, 300, 40, 6000), \
                 ('example.org', '2026-11-02', 7, 'visitors', 200, 220, 500, 60, 9000)"
            ));
        }
    }
    out
}

/// The reads compared, each a Stats API v2 query of example.org.
fn queries() -> Vec<Value> {
    let range = json!(["2026-11-10", "2026-11-11"]);
    vec![
        json!({"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"],
               "date_range": range}),
        json!({"metrics": ["visitors", "pageviews"], "date_range": range, "dimensions": ["time:hour"],
               "include": {"totals": true, "time_labels": true}}),
        json!({"metrics": ["visitors", "pageviews", "bounce_rate"], "date_range": range, "dimensions": ["time:day"]}),
        json!({"metrics": ["visitors", "pageviews"], "date_range": range, "dimensions": ["event:page"],
               "include": {"totals": true, "total_rows": true}}),
        json!({"metrics": ["visitors", "visits"], "date_range": range, "dimensions": ["visit:source"]}),
        // A page of a breakdown, read a page at a time in ClickHouse.
        json!({"metrics": ["visitors"], "date_range": range, "dimensions": ["event:page"],
               "order_by": [["visitors", "desc"]], "pagination": {"limit": 2, "offset": 1}}),
        // Filters: exact answers also read what the filter leaves out.
        json!({"metrics": ["visitors", "pageviews"], "date_range": range, "dimensions": ["event:page"],
               "filters": [["is_not", "visit:source", ["Twitter"]]]}),
        json!({"metrics": ["visitors", "events"], "date_range": range, "dimensions": ["event:props:plan"],
               "filters": [["is", "event:name", ["Signup"]]]}),
        json!({"metrics": ["visitors", "conversion_rate"], "date_range": range, "dimensions": ["event:goal"]}),
        json!({"metrics": ["pageviews", "opt_out_rate"], "date_range": range}),
        json!({"metrics": ["visitors", "pageviews"], "date_range": ["2026-11-01", "2026-11-11"],
               "dimensions": ["time:day"], "include": {"imports": true}}),
    ]
}

fn funnel_query() -> Value {
    json!({"site_id": "example.org", "funnel": "Signup path", "date_range": ["2026-11-10", "2026-11-11"]})
}

fn ask(server: &InProcess, query: &Value) -> Response {
    let mut query = query.clone();
    query["site_id"] = json!("example.org");
    stats(server.addr, TOKEN, query)
}

fn funnel(server: &InProcess) -> Response {
    let auth = format!("Bearer {TOKEN}");
    http(
        server.addr,
        "POST",
        "/api/v2/funnel",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        funnel_query().to_string().as_bytes(),
    )
}

/// Every answer (status and body), queries then the funnel.
fn answers(server: &InProcess) -> Vec<(u16, Value)> {
    let mut out: Vec<(u16, Value)> = queries()
        .iter()
        .map(|q| {
            let r = ask(server, q);
            (r.status, r.json())
        })
        .collect();
    let r = funnel(server);
    out.push((r.status, r.json()));
    out
}

fn health(server: &InProcess) -> Response {
    http(server.addr, "GET", "/api/health", &[], b"")
}

fn metric(server: &InProcess, name: &str) -> f64 {
    let text = http(server.admin, "GET", "/metrics", &[], b"").body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn run_check(config: &str, scratch: &Scratch) -> (bool, String) {
    let path = scratch.path("check.toml");
    std::fs::write(&path, config).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["check", "--config"])
        .arg(Path::new(&path))
        .output()
        .expect("run tamis check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The stats API, funnels, `/api/health` and `tamis check` on a cluster:
/// the numbers a single server gives for the same rows, visitors of one
/// visit on two shards counted once; one replica of each shard down
/// changes nothing; a shard with no replica is a 503 with `Retry-After`
/// (and a reason in `/api/health`), whole again once a replica is back.
#[test]
fn reads_through_the_cluster_equal_a_single_server_and_refuse_when_a_shard_is_down() {
    let mut cluster = Cluster::start();
    let ch = ClickHouse::shared();
    let single_db = ch.create_database("cluster_reads");
    let db = format!("cluster_reads_{}", std::process::id());
    let scratch = Scratch::new();
    let clock = || tamis::clock::Clock::manual("2026-11-20T17:00:00Z".parse().expect("instant"));

    let single = InProcess::serve(&config(ch, &single_db, None, SITE), clock());
    // Stopped with shard 1's first replica (its `url`) down: its audit rows
    // cannot be written, and need not be waited for.
    let cluster_config = with_site(&common::cluster_config(&cluster, &db), SITE).replacen(
        "[server]\n",
        "[server]\nshutdown_timeout_ms = 2000\n",
        1,
    );
    let on_cluster = InProcess::serve(&cluster_config, clock());

    for shard in [Shard::One, Shard::Two] {
        for sql in inserts(&db, shard) {
            let (s, r) = if shard == Shard::One { (1, 1) } else { (2, 2) };
            cluster.query(s, r, &sql);
        }
        for sql in inserts(&single_db, shard) {
            ch.query(&sql);
        }
    }

    // --- the same numbers ------------------------------------------------
    let expected = answers(&single);
    for (i, (status, answer)) in expected.iter().enumerate() {
        assert_eq!(*status, 200, "single server, read {i}: {answer}");
    }
    // Not trivially equal: the single server counts what was inserted,
    // 60 visitors (12 of them with a page on each shard), 72 pageviews,
    // 82 events (pageviews and the 10 custom events, as Plausible counts
    // them).
    let aggregate = &expected[0].1["results"][0]["metrics"];
    assert_eq!(
        [&aggregate[0], &aggregate[2], &aggregate[6]],
        [&json!(60), &json!(72), &json!(82)],
        "{}",
        expected[0].1
    );
    assert_eq!(
        expected[10].1["results"][0],
        json!({"dimensions": ["2026-11-01"], "metrics": [100, 300]}),
        "the imported day at its current version: {}",
        expected[10].1
    );
    let got = answers(&on_cluster);
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(have, want, "read {i} on the cluster");
    }
    // The visitor sketches merged: each shard alone counts the visitors
    // of the two-shard visits, 72 in all, the cluster 60.
    let local = |s: u32, r: u32| -> u64 {
        cluster
            .query(
                s,
                r,
                &format!("SELECT uniqIfMerge(visitors) FROM {db}.traffic_hourly FORMAT TSV"),
            )
            .trim()
            .parse()
            .expect("a count")
    };
    assert_eq!(local(1, 1) + local(2, 2), 72);
    assert_eq!(
        health(&on_cluster).json(),
        json!({"clickhouse": "ok", "ingest": "ok"})
    );
    rolled_reads_agree(&cluster, ch, &db, &single_db);

    // `tamis check` reads what ClickHouse holds through the cluster: the
    // oldest month is on shard 2 alone, its `url` on shard 1.
    cluster.query(
        2,
        2,
        &format!(
            "INSERT INTO {db}.batch_in (kind, site_id, hour, event, page, visitor, pageviews) VALUES \
             ('traffic2', 'example.org', toDateTime('2026-09-15 10:00:00', 'UTC'), 'pageview', '/', 999, 1)"
        ),
    );
    let (ok, out) = run_check(&cluster_config, &scratch);
    assert!(ok, "{out}");
    assert!(
        out.contains("site example.org: oldest month stored 202609"),
        "{out}"
    );
    assert!(
        out.contains("reads go through its Distributed tables"),
        "{out}"
    );
    cluster.query(
        2,
        2,
        &format!("ALTER TABLE {db}.traffic_hourly DROP PARTITION ('example.org', 202609)"),
    );

    // --- one replica of each shard down: the other answers ---------------
    for table in [
        "traffic_hourly",
        "props_hourly",
        "funnel_hourly",
        "dropped_hourly",
        "imported_daily",
        "imported_days",
    ] {
        cluster.sync_replicas(&db, table);
    }
    // The replicas the rows were inserted into: the answers now come from
    // the copies.
    cluster.stop_many(&[(1, 1), (2, 2)], Stop::Kill);
    let got = answers(&on_cluster);
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(have, want, "read {i} with one replica of each shard");
    }
    wait_until(
        Duration::from_secs(10),
        "health ok with a replica per shard",
        || health(&on_cluster).status == 200,
    );

    // --- a whole shard down: 503, never fewer numbers ---------------------
    let refused_before = metric(&on_cluster, "tamis_api_shard_unreachable_total");
    cluster.stop(2, 1, Stop::Kill);
    for query in queries() {
        let r = ask(&on_cluster, &query);
        assert_eq!(r.status, 503, "{query}: {}", r.body);
        assert_eq!(r.header("Retry-After"), Some("10"), "{query}");
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(
                "part of the data is on a ClickHouse shard none of whose replicas can be reached"
            ),
            "{error}"
        );
        for word in CLICKHOUSE_WORDS {
            assert!(!r.body.contains(word), "ClickHouse's text in {}", r.body);
        }
    }
    let r = funnel(&on_cluster);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("Retry-After"), Some("10"));
    assert_eq!(
        metric(&on_cluster, "tamis_api_shard_unreachable_total") - refused_before,
        (queries().len() + 1) as f64
    );
    wait_until(
        Duration::from_secs(10),
        "health to say a shard is down",
        || health(&on_cluster).status == 500,
    );
    assert_eq!(
        health(&on_cluster).json(),
        json!({"clickhouse": "error", "ingest": "ok",
               "clickhouse_reason": "a shard of the ClickHouse cluster has no replica that answers: statistics cannot be read whole"})
    );
    let (ok, out) = run_check(&cluster_config, &scratch);
    assert!(!ok, "check passes with a shard down:\n{out}");
    assert!(
        out.contains("could not read: a shard of the cluster has no replica that answers"),
        "{out}"
    );

    // --- a replica back: whole again ---------------------------------------
    cluster.restart(2, 1);
    wait_until(Duration::from_secs(20), "health ok again", || {
        health(&on_cluster).status == 200
    });
    let got = answers(&on_cluster);
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(have, want, "read {i} once shard 2 is back");
    }
    on_cluster.stop();
    single.stop();
}

/// The rolled-up days of 2026-11-10: version 5, current, recorded on
/// shard 1 with its rows on shard 2; version 4, replaced, the other way
/// round, with numbers no answer may show. A single server holds them all.
fn rollups(db: &str, shard: Shard) -> Vec<String> {
    let days = |version: u64| {
        format!(
            "INSERT INTO {db}.rollup_days (site_id, day, version, rolled_at) VALUES ('example.org', '2026-11-10', {version}, now())"
        )
    };
    let rows = |version: u64, n: u64| {
        format!(
            "INSERT INTO {db}.rollup_daily (site_id, day, version, dimension, value, visitors, visits, pageviews) VALUES \
             ('example.org', '2026-11-10', {version}, 'page', '/', {n}, {n}, {}), \
             ('example.org', '2026-11-10', {version}, 'page', '/a', {}, {}, {}), \
             ('example.org', '2026-11-10', {version}, 'goal', 'page:/a', {n}, {n}, {n}), \
             ('example.org', '2026-11-10', {version}, 'goal', 'event:Signup', 6, 6, 0)",
            n * 2,
            n + 1,
            n + 1,
            n + 3
        )
    };
    let goals = |version: u64| {
        format!(
            "INSERT INTO {db}.rollup_goal_days (site_id, day, version, goal) VALUES \
             ('example.org', '2026-11-10', {version}, 'page:/a'), ('example.org', '2026-11-10', {version}, 'event:Signup')"
        )
    };
    match shard {
        Shard::One => vec![days(5), rows(4, 1000), goals(4)],
        Shard::Two => vec![days(4), rows(5, 7), goals(5)],
    }
}

/// `sql::Statement` with its values written in, as the client binds them.
fn inline(statement: &tamis::query::sql::Statement) -> String {
    let mut out = String::new();
    let mut params = statement.params.iter();
    for c in statement.sql.chars() {
        if c == '?' {
            let value = params.next().expect("a value per placeholder");
            out.push('\'');
            for ch in value.chars() {
                if matches!(ch, '\\' | '\'') {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('\'');
        } else {
            out.push(c);
        }
    }
    out
}

/// The statements reading rolled-up days (which `serve` reads once its
/// rollup job has rolled them; the job itself is not run here), through the
/// cluster and on the single server: the same rows, at the version the
/// cluster's ledger records on the other shard.
fn rolled_reads_agree(cluster: &Cluster, ch: &ClickHouse, db: &str, single_db: &str) {
    use tamis::query::request::{parse, Dimension, SiteView};
    use tamis::query::sql::{rolled, rolled_days};
    use tamis::sink::nodes::Tables;
    for shard in [Shard::One, Shard::Two] {
        let (s, r) = if shard == Shard::One { (1, 1) } else { (2, 2) };
        for sql in rollups(db, shard) {
            cluster.query(s, r, &sql);
        }
        for sql in rollups(single_db, shard) {
            ch.query(&sql);
        }
    }
    let tz = chrono_tz::America::Toronto;
    let view = SiteView {
        timezone: tz,
        campaigns: false,
        prop_keys: Vec::new(),
        goals: vec![
            tamis::goal::Goal::page("/a", Some("Page A")).expect("goal"),
            tamis::goal::Goal::event("Signup", Some("Signup")).expect("goal"),
        ],
    };
    let now = "2026-11-20T17:00:00Z".parse().expect("instant");
    let query = |dimension: &str| {
        let body = json!({"site_id": "example.org", "metrics": ["visitors"],
                          "date_range": ["2026-11-10", "2026-11-11"], "dimensions": [dimension]});
        parse(body.to_string().as_bytes(), &view, now).expect("valid")
    };
    let (pages, goals) = (query("event:page"), query("event:goal"));
    let runs = [("2026-11-10".to_string(), "2026-11-10".to_string())];
    // 2026-11-11 in Toronto, read hourly.
    let hours = [(1_794_373_200, 1_794_459_600)];
    let statements = |tables: Tables| {
        [
            rolled_days(
                tables,
                &pages,
                &[Dimension::Page],
                "2026-11-10",
                "2026-11-11",
            ),
            rolled_days(
                tables,
                &goals,
                &[Dimension::Goal],
                "2026-11-10",
                "2026-11-11",
            ),
            rolled(tables, &pages, &[Dimension::Page], tz.name(), &runs, &[]),
            rolled(tables, &pages, &[Dimension::Page], tz.name(), &runs, &hours),
            rolled(tables, &goals, &[Dimension::Goal], tz.name(), &runs, &hours),
        ]
    };
    let sorted = |tsv: String| {
        let mut lines: Vec<String> = tsv.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let mut answers = Vec::new();
    for (own, distributed) in statements(Tables::Own)
        .iter()
        .zip(statements(Tables::Distributed))
    {
        let single = sorted(ch.query_in(single_db, &format!("{} FORMAT TSV", inline(own))));
        let through = sorted(
            cluster
                .node(1, 2)
                .query_in(db, &format!("{} FORMAT TSV", inline(&distributed))),
        );
        assert_eq!(through, single, "{}", distributed.sql);
        assert!(!single.is_empty(), "{}", own.sql);
        answers.push(single);
    }
    assert_eq!(answers[0], ["2026-11-10"]);
    assert_eq!(answers[1], ["2026-11-10"], "both goals rolled at version 5");
    // Version 5's rows alone: `[dims]`, then the counts in `sql::BASE` order.
    assert!(
        answers[2][0].starts_with("['/']\t[7,7,14,"),
        "{:?}",
        answers[2]
    );
    assert!(
        answers[2][1].starts_with("['/a']\t[8,8,10,"),
        "{:?}",
        answers[2]
    );
}

/// `site_extra` for a config made without one: appended to example.org's
/// table, as `common::config` does.
fn with_site(config: &str, extra: &str) -> String {
    config.replacen(
        "timezone = \"America/Toronto\"\n",
        &format!("timezone = \"America/Toronto\"\n{extra}\n"),
        1,
    )
}
