//! Reloading the configuration without a restart (issue 17, part 1):
//! `kill -HUP` a real tamis after editing its file, as `systemctl reload`
//! does with `ExecReload=/bin/kill -HUP $MAINPID` (systemd.service(5)).
//! A site added is served at once, a site's allowed events and privacy
//! settings change for the hits after the reload (and not for those
//! before) and its new goal is read at once, an
//! open keep-alive connection stays usable, a visit in progress keeps
//! counting as one, settings bound at
//! start-up are reported as needing a restart, an invalid file is refused
//! with `tamis check`'s error while the running configuration keeps
//! serving, and each applied change is in the audit log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const NEW_TOKEN: &str = "token-of-the-site-added-by-a-reload";

/// One HTTP/1.1 connection kept open across requests.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn open(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeepAlive {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a hit on this connection and returns the status and whether
    /// it was dropped (`X-Tamis-Dropped`).
    fn hit(&mut self, client_ip: &str, body: &str) -> (u16, Option<String>) {
        let request = format!(
            "POST /api/event HTTP/1.1\r\nHost: tamis\r\nContent-Type: text/plain\r\nUser-Agent: {FIREFOX}\r\nX-Forwarded-For: {client_ip}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream
            .write_all(request.as_bytes())
            .expect("the connection is open");
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).expect("an answer");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
        let (mut length, mut dropped, mut close) = (0usize, None, false);
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("headers");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "x-tamis-dropped" => dropped = Some(value.trim().to_string()),
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        assert!(!close, "tamis asked to close the keep-alive connection");
        (status, dropped)
    }
}

fn hit_for(domain: &str, url: &str) -> String {
    json!({"n": "pageview", "u": url, "d": domain, "r": null}).to_string()
}

/// A custom event `name` on example.org.
fn event(name: &str, url: &str) -> String {
    json!({"n": name, "u": url, "d": "example.org", "r": null}).to_string()
}

/// A pageview sent with `Sec-GPC: 1` by the keep-alive connection's
/// visitor (same address, same agent), on a connection of its own.
fn gpc_pageview(addr: SocketAddr, url: &str) -> Response {
    send_hit(
        addr,
        "198.51.100.7",
        FIREFOX,
        &pageview(url),
        &[("Sec-GPC", "1")],
    )
}

/// example.org's answer to an exact query for `metrics` by `dimensions`.
fn results(addr: SocketAddr, metrics: &[&str], dimensions: &[&str]) -> serde_json::Value {
    let r = stats(
        addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": metrics, "dimensions": dimensions, "date_range": "day"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"].clone()
}

fn hup(server: &Binary) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for the `n`-th log line containing `what` and returns it.
fn wait_for_log(server: &Binary, what: &str, n: usize) -> String {
    wait_until(Duration::from_secs(20), what, || {
        server
            .log_text()
            .lines()
            .filter(|l| l.contains(what))
            .count()
            >= n
    });
    server
        .log_text()
        .lines()
        .filter(|l| l.contains(what))
        .nth(n - 1)
        .unwrap()
        .to_string()
}

fn totals(addr: SocketAddr, token: &str, site: &str) -> Option<(f64, f64, f64)> {
    let r = stats(
        addr,
        token,
        json!({"site_id": site, "metrics": ["pageviews", "visitors", "visits"], "date_range": "day"}),
    );
    if r.status != 200 {
        return None;
    }
    let m = &r.json()["results"][0]["metrics"];
    Some((m[0].as_f64()?, m[1].as_f64()?, m[2].as_f64()?))
}

fn metric(server: &Binary, name: &str) -> String {
    let text = http(server.admin, "GET", "/metrics", &[], b"").body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .to_string()
}

#[test]
fn sighup_changes_sites_goals_and_privacy_keeps_connections_and_visits_refuses_bad_files() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("reload");
    let scratch = Scratch::new();
    // example.org starts without goals or custom events, and ignoring
    // Global Privacy Control; the reload honours it and adds a goal.
    let text = config(ch, &db, None, "k_threshold = 1\nhonour_gpc = false");
    let server = Binary::serve(&scratch, &text);
    let config_path = scratch.path("tamis.toml");

    // A visit in progress on a keep-alive connection.
    let mut conn = KeepAlive::open(server.addr);
    assert_eq!(
        conn.hit("198.51.100.7", &pageview("https://example.org/a")),
        (202, None)
    );
    // Before the reload, a host the site will name is refused, and the
    // new site is unknown.
    assert_eq!(
        conn.hit("198.51.100.7", &pageview("https://shop.example.org/")),
        (202, Some("hostname_not_allowed".to_string()))
    );
    let before = send_hit(
        server.addr,
        "203.0.113.9",
        FIREFOX,
        &hit_for("new.example", "https://new.example/"),
        &[],
    );
    assert_eq!(
        (before.status, before.header("x-tamis-dropped")),
        (202, Some("unknown_site"))
    );
    // GPC not honoured yet: the visitor's `Sec-GPC: 1` pageview counts, in
    // the same visit. A custom event is not allowed yet (no `event_names`).
    let r = gpc_pageview(server.addr, "https://example.org/gpc-before");
    assert_eq!((r.status, r.header("x-tamis-dropped")), (202, None));
    assert_eq!(
        conn.hit("198.51.100.7", &event("Signup", "https://example.org/a")),
        (202, Some("event_not_allowed".to_string()))
    );

    // The file gains a site with its token; example.org gains a hostname,
    // an allowed event with a goal on it, and honours GPC again; and a
    // setting that is bound at start-up (the flush interval) changes too.
    server.edit_config(|text| {
        let text = text
            .replace(
                "hostnames = [\"example.org\", \"www.example.org\"]",
                "hostnames = [\"example.org\", \"www.example.org\", \"shop.example.org\"]",
            )
            .replace(
                "honour_gpc = false",
                "honour_gpc = true\nevent_names = [\"Signup\"]\n\n[[site.goal]]\nevent = \"Signup\"",
            );
        format!(
            "{}\n[[site]]\nid = \"new.example\"\nhostnames = [\"new.example\"]\nk_threshold = 1\n\n[[token]]\nname = \"new\"\nsecret_sha256 = \"{}\"\nsites = [\"new.example\"]\ndisclosure = \"exact\"\n",
            text.replace("flush_interval_ms = 200", "flush_interval_ms = 300"),
            sha256_hex(NEW_TOKEN)
        )
    });
    hup(&server);
    let reloaded = wait_for_log(&server, "configuration reloaded", 1);
    assert!(reloaded.contains("site new.example"), "{reloaded}");
    assert!(reloaded.contains("token new"), "{reloaded}");
    assert!(reloaded.contains("site example.org"), "{reloaded}");
    let restart = wait_for_log(&server, "needs a restart", 1);
    assert!(restart.contains("setting=clickhouse"), "{restart}");
    assert_eq!(metric(&server, "tamis_config_reloads_total"), "1");

    // The same connection still works, and the visit goes on, now on
    // the added hostname too.
    assert_eq!(
        conn.hit("198.51.100.7", &pageview("https://example.org/b")),
        (202, None)
    );
    assert_eq!(
        conn.hit("198.51.100.7", &pageview("https://shop.example.org/")),
        (202, None)
    );
    // The event is allowed now, and GPC honoured: the same visitor's
    // `Sec-GPC: 1` pageview is dropped as an opt-out.
    assert_eq!(
        conn.hit("198.51.100.7", &event("Signup", "https://example.org/b")),
        (202, None)
    );
    let r = gpc_pageview(server.addr, "https://example.org/gpc-after");
    assert_eq!(
        (r.status, r.header("x-tamis-dropped")),
        (202, Some("opt_out"))
    );
    // Hits for the new site are accepted and counted.
    // Three visitors: three /24 networks (addresses are truncated first).
    for (i, ip) in ["203.0.113.9", "198.18.0.10", "192.0.2.44"]
        .iter()
        .enumerate()
    {
        let r = send_hit(
            server.addr,
            ip,
            FIREFOX,
            &hit_for("new.example", &format!("https://new.example/p{i}")),
            &[],
        );
        assert_eq!(
            (r.status, r.header("x-tamis-dropped")),
            (202, None),
            "{}",
            r.body
        );
    }
    wait_until(
        Duration::from_secs(20),
        "the new site's hits in ClickHouse",
        || totals(server.addr, NEW_TOKEN, "new.example") == Some((3.0, 3.0, 3.0)),
    );
    // One visitor, one visit, four pages (the GPC pageview sent before
    // the reload among them): the visit held in memory across the reload
    // kept its salt and its session.
    wait_until(
        Duration::from_secs(20),
        "example.org's visit in ClickHouse",
        || totals(server.addr, TOKEN, "example.org") == Some((4.0, 1.0, 1.0)),
    );
    // The goal added by the reload counts the event sent after it (the one
    // sent before was dropped at ingest and stays uncounted): one visitor
    // of one converted, once.
    wait_until(Duration::from_secs(20), "the goal's conversion", || {
        results(
            server.addr,
            &["visitors", "events", "conversion_rate"],
            &["event:goal"],
        ) == json!([{"dimensions": ["Signup"], "metrics": [1, 1, 100]}])
    });
    // The GPC pageview sent before the reload stays counted; the one after
    // is not.
    let pages = results(server.addr, &["pageviews"], &["event:page"]);
    assert!(pages.to_string().contains("/gpc-before"), "{pages}");
    assert!(!pages.to_string().contains("/gpc-after"), "{pages}");
    // Each drop is counted by its reason: the event before the reload, the
    // opt-out after it.
    let dropped = "SELECT reason, sum(hits) FROM dropped_hourly WHERE site_id = 'example.org' \
                   AND reason IN ('event_not_allowed', 'opt_out') GROUP BY reason ORDER BY reason FORMAT TSV";
    wait_until(Duration::from_secs(20), "example.org's drops", || {
        ch.query_in(&db, dropped) == "event_not_allowed\t1\nopt_out\t1\n"
    });
    // The site list of the stats API follows the reload too.
    let sites = http(
        server.addr,
        "GET",
        "/api/v2/sites",
        &[("Authorization", &format!("Bearer {NEW_TOKEN}"))],
        b"",
    );
    assert_eq!(sites.status, 200, "{}", sites.body);
    assert!(sites.body.contains("new.example"), "{}", sites.body);

    // An invalid file: refused with the error `tamis check` gives, and
    // the running configuration keeps serving.
    let valid = std::fs::read_to_string(&config_path).unwrap();
    server.edit_config(|text| {
        text.replace(
            "id = \"new.example\"\nhostnames = [\"new.example\"]",
            "id = \"new.example\"\nhostnames = [\"new.example\"]\ntimezone = \"Mars/Olympus_Mons\"",
        )
    });
    let check = Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .expect("run tamis check");
    assert!(!check.status.success());
    let check_error = String::from_utf8_lossy(&check.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("tamis: ").map(str::to_string))
        .expect("tamis check names the error");
    hup(&server);
    let refused = wait_for_log(&server, "configuration reload refused", 1);
    assert!(
        refused.contains(&check_error),
        "the refusal logged is not tamis check's error `{check_error}`: {refused}"
    );
    assert_eq!(metric(&server, "tamis_config_last_reload_successful"), "0");
    assert_eq!(metric(&server, "tamis_config_reloads_total"), "1");
    assert_eq!(
        conn.hit("198.51.100.7", &pageview("https://example.org/c")),
        (202, None)
    );
    let r = send_hit(
        server.addr,
        "198.19.7.7",
        FIREFOX,
        &hit_for("new.example", "https://new.example/after"),
        &[],
    );
    assert_eq!((r.status, r.header("x-tamis-dropped")), (202, None));
    wait_until(
        Duration::from_secs(20),
        "hits after the refused reload",
        || {
            totals(server.addr, NEW_TOKEN, "new.example") == Some((4.0, 4.0, 4.0))
                && totals(server.addr, TOKEN, "example.org") == Some((5.0, 1.0, 1.0))
        },
    );

    // The file fixed again: applied; the metric says so.
    std::fs::write(&config_path, valid).unwrap();
    hup(&server);
    wait_for_log(&server, "configuration reloaded", 2);
    assert_eq!(metric(&server, "tamis_config_last_reload_successful"), "1");

    // The audit log: the start-up record, then the reload's, which names
    // the sections it changed (the second reload changed nothing).
    let sql = "SELECT summary FROM audit_log WHERE kind = 'config_change' ORDER BY at FORMAT TSV";
    wait_until(Duration::from_secs(20), "the reload's audit row", || {
        ch.query_in(&db, sql).lines().count() >= 2
    });
    // A moment for a wrong third row (the unchanged reload) to show.
    std::thread::sleep(Duration::from_secs(1));
    let rows = ch.query_in(&db, sql);
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].contains("recorded for the first time"), "{rows:?}");
    assert!(
        rows[1].contains("changed")
            && rows[1].contains("site new.example")
            && rows[1].contains("token new"),
        "{rows:?}"
    );
    // The flush interval was not applied: the record names no
    // `clickhouse` change.
    assert!(!rows[1].contains("clickhouse"), "{rows:?}");
    // Reloads leave the shutdown as it was: everything accepted written.
    let log = server.stop();
    assert!(
        log.contains("tamis stopped; every accepted hit is in ClickHouse"),
        "{log}"
    );
}

/// Regression: the audit log's `at` is to the second, so a reload made in
/// the same second as the start-up left two records that `at` cannot
/// order, and the next start compared with either one: with the start-up's
/// it took a configuration changed back for no change at all. When the
/// newest second holds records of different configurations, the
/// configuration is recorded again.
#[test]
fn a_start_after_two_config_records_in_one_second_records_its_configuration() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("reload_same_second");
    let scratch = Scratch::new();
    let mut server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    let sql = "SELECT toUInt32(at), summary FROM audit_log WHERE kind = 'config_change' ORDER BY at FORMAT TSV";
    wait_until(Duration::from_secs(20), "the start-up record", || {
        ch.query_in(&db, sql).lines().count() == 1
    });
    server.terminate(Duration::from_secs(30));
    // Another configuration recorded in the same second as this one.
    ch.query_in(
        &db,
        "INSERT INTO audit_log SELECT at, kind, actor, client, site_id, 'another configuration', rows, format, \
         '{\"hash\":\"0000000000000000\",\"sections\":[]}' FROM audit_log WHERE kind = 'config_change'",
    );
    server.restart();
    wait_until(Duration::from_secs(20), "a third record", || {
        ch.query_in(&db, sql).lines().count() == 3
    });
    let rows = ch.query_in(&db, sql);
    let last = rows.lines().last().unwrap();
    assert!(last.contains("changed"), "{rows}");
    // And a start with the same configuration again records nothing.
    server.terminate(Duration::from_secs(30));
    server.restart();
    wait_for_log(&server, "tamis is serving", 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ch.query_in(&db, sql).lines().count(),
        3,
        "{}",
        ch.query_in(&db, sql)
    );
    server.stop();
}
