//! Privacy operations, end to end with real parts: retention, the salt
//! lifecycle across local midnights (one of them a DST change), the
//! generated notice and `/privacy.json`, the self-audit and the audit log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::json;

/// An admin token, in configs that add it.
const ADMIN_TOKEN: &str = "admin-token-for-tamis";

fn admin_token() -> String {
    format!(
        "\n[[token]]\nname = \"privacy-officer\"\nsecret_sha256 = \"{}\"\nadmin = true\n",
        sha256_hex(ADMIN_TOKEN)
    )
}

fn with_other_site(config_text: &str, extra: &str) -> String {
    config_text.replace(
        "id = \"other.org\"",
        &format!("id = \"other.org\"\n{extra}"),
    )
}

fn run_tamis(args: &[&str], config_path: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(args)
        .arg("--config")
        .arg(config_path)
        .output()
        .expect("run tamis");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A GET with the given Host header (the common client sends its own).
fn raw_get(addr: std::net::SocketAddr, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A goal and a funnel on both sites, for the retention test's funnel
/// rows and goal rollups.
const FUNNEL: &str = r#"
[[site.goal]]
page = "/a"
[[site.goal]]
page = "/b"
[[site.funnel]]
name = "AB"
steps = ["Visit /a", "Visit /b"]
"#;

/// Visitors of each site going /a then /b in the old month.
const OLD_VISITORS: u64 = 5;

/// The old month of [`retention_drops_expired_months_of_each_site_only`]
/// through the real pipeline: an in-process tamis whose clock is at `at`
/// takes [`OLD_VISITORS`] funnel visits on each site (`funnel_hourly`,
/// `traffic_hourly`), then, two days later, rolls that day up with its
/// goals (`rollup_daily`, `rollup_days`, `rollup_goal_days`).
fn seed_old_month(ch: &ClickHouse, db: &str, text: &str, at: DateTime<Utc>) {
    let clock = tamis::clock::Clock::manual(at);
    let server =
        InProcess::serve_with_rollups(text, clock.clone(), Some(Duration::from_millis(100)));
    for site in ["example.org", "other.org"] {
        for v in 0..OLD_VISITORS {
            for page in ["/a", "/b"] {
                let body =
                    json!({"n": "pageview", "u": format!("https://{site}{page}"), "d": site})
                        .to_string();
                let r = send_hit(server.addr, &format!("100.64.{v}.1"), FIREFOX, &body, &[]);
                assert_eq!(
                    (r.status, r.header("x-tamis-dropped")),
                    (202, None),
                    "{}",
                    r.body
                );
            }
        }
    }
    wait_until(
        Duration::from_secs(20),
        "the old funnel visits stored",
        || {
            ch.query_in(
            db,
            "SELECT site_id, sum(visits) FROM funnel_hourly WHERE step >= 1 GROUP BY site_id ORDER BY site_id FORMAT TSV",
        ) == format!("example.org\t{n}\nother.org\t{n}\n", n = 2 * OLD_VISITORS)
        },
    );
    clock.set(at + chrono::Duration::days(2));
    wait_until(
        Duration::from_secs(30),
        "the old day rolled up with its goals",
        || {
            ch.query_in(
            db,
            "SELECT uniqExact(site_id) FROM rollup_goal_days WHERE (site_id, day, version) IN (SELECT site_id, day, version FROM rollup_days)",
        ) == "2\n"
        },
    );
    server.stop();
}

/// What the janitor will drop, read from `system.parts` once every part is
/// merged (so no merge changes the rows meanwhile): `(site, table, month,
/// rows)` lines as `retention_log` is read below, for example.org's
/// partitions of `period` and tamis's own records of `period`.
fn expected_deletions(ch: &ClickHouse, db: &str, period: &str) -> String {
    let tables = ch.query_in(
        db,
        "SELECT DISTINCT table FROM system.parts WHERE database = currentDatabase() AND active FORMAT TSV",
    );
    for table in tables.lines() {
        ch.query_in(db, &format!("OPTIMIZE TABLE {table} FINAL"));
    }
    let parts = ch.query_in(
        db,
        "SELECT table, partition, sum(rows) FROM system.parts WHERE database = currentDatabase() AND active GROUP BY table, partition FORMAT TabSeparatedRaw",
    );
    let mut lines: Vec<(String, String, String)> = parts
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (table, partition, rows) = (f.next()?, f.next()?, f.next()?);
            let site = if tamis::sink::retention::parse_site_partition(partition)
                == Some(("example.org".to_string(), period.parse().ok()?))
            {
                "example.org"
            } else if partition == period && tamis::sink::retention::RECORD_TABLES.contains(&table)
            {
                ""
            } else {
                return None;
            };
            Some((site.to_string(), table.to_string(), rows.to_string()))
        })
        .collect();
    lines.sort();
    lines
        .into_iter()
        .map(|(site, table, rows)| format!("{site}\t{table}\t{period}\t{rows}\n"))
        .collect()
}

/// Aggregates 30 months old disappear when the janitor runs at start-up:
/// hourly traffic and drops seeded directly, funnel steps and pageviews
/// counted by tamis from real hits, and the daily rollups of that month
/// with their goals (`funnel_hourly`, `rollup_daily`, `rollup_days`,
/// `rollup_goal_days`); a second site with a longer retention keeps its own
/// old data; the current month stays; each drop is reported in the log and
/// in `retention_log` with the rows it held; tamis's own records follow
/// `audit.retention_months`; and the rollup job, running beside the
/// janitor, writes nothing into the dropped months again.
#[test]
fn retention_drops_expired_months_of_each_site_only() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("retention");
    let scratch = Scratch::new();
    // example.org keeps the default 25 months, other.org 36.
    let text = with_other_site(
        &config(ch, &db, None, FUNNEL),
        &format!("retention_months = 36\n{FUNNEL}"),
    );
    let config_path = scratch.path("tamis.toml");
    std::fs::write(&config_path, &text).unwrap();
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(ok, "{out}{err}");

    let now = Utc::now();
    let old_day = (now - chrono::Duration::days(30 * 31)).format("%Y-%m-15");
    let old = format!("{old_day} 12:00:00");
    let period = (now - chrono::Duration::days(30 * 31))
        .format("%Y%m")
        .to_string();
    seed_old_month(
        ch,
        &db,
        &text,
        format!("{old_day}T12:00:00Z").parse().expect("old instant"),
    );
    let recent = now.format("%Y-%m-%d 00:00:00").to_string();
    for site in ["example.org", "other.org"] {
        for (hour, views) in [(&old, 7), (&recent, 3)] {
            ch.query_in(&db, &format!("INSERT INTO traffic_in (site_id, hour, page, pageviews, visitor) VALUES ('{site}', '{hour}', '/', {views}, 1)"));
            ch.query_in(&db, &format!("INSERT INTO dropped_hourly (site_id, hour, reason, hits) VALUES ('{site}', '{hour}', 'opt_out', 2)"));
        }
    }
    ch.query_in(&db, &format!("INSERT INTO audit_log (at, kind, actor, client, site_id, summary, rows, format, detail) VALUES ('{old}', 'stats_read', 'old', 'api', 'example.org', '', 1, 'json', '')"));
    let pageviews = |site: &str, old_only: bool| {
        let when = if old_only {
            format!(" AND hour < '{recent}'")
        } else {
            String::new()
        };
        ch.query_in(
            &db,
            &format!(
                "SELECT sumMerge(pageviews) FROM traffic_hourly WHERE site_id = '{site}' AND event != 'tamis:delivered'{when}"
            ),
        )
        .trim()
        .to_string()
    };
    let old_pageviews = (7 + 2 * OLD_VISITORS).to_string();
    assert_eq!(
        (pageviews("example.org", true), pageviews("other.org", true)),
        (old_pageviews.clone(), old_pageviews.clone())
    );
    let expected = expected_deletions(ch, &db, &period);
    let dropped_tables: Vec<&str> = expected
        .lines()
        .filter(|l| l.starts_with("example.org"))
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    assert_eq!(
        dropped_tables,
        [
            "dropped_hourly",
            "funnel_hourly",
            "rollup_daily",
            "rollup_days",
            "rollup_goal_days",
            "traffic_hourly"
        ],
        "every kind of site table is seeded in the old month"
    );
    let site_rows: u64 = expected
        .lines()
        .filter(|l| l.starts_with("example.org"))
        .filter_map(|l| l.rsplit('\t').next()?.parse::<u64>().ok())
        .sum();

    let server = Binary::serve(&scratch, &text);
    wait_until(
        Duration::from_secs(20),
        "the deletion report written",
        || {
            ch.query_in(&db, "SELECT count() FROM retention_log").trim()
                == expected.lines().count().to_string()
        },
    );
    let report = ch.query_in(&db, "SELECT site_id, table_name, toString(period), rows FROM retention_log ORDER BY site_id, table_name");
    assert_eq!(
        report, expected,
        "one row per dropped partition, with the rows it held"
    );
    // The rollup job's start-up pass goes site by site, example.org first:
    // once other.org's recent days are rolled, it has passed example.org.
    let two_days_ago = (now - chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    wait_until(
        Duration::from_secs(180),
        "the rollup pass over both sites",
        || {
            ch.query_in(
            &db,
            &format!("SELECT count() FROM rollup_days WHERE site_id = 'other.org' AND day >= '{two_days_ago}'"),
        ) != "0\n"
        },
    );
    let old_rows = |site: &str, table: &str, column: &str| {
        ch.query_in(
            &db,
            &format!("SELECT count() FROM {table} WHERE site_id = '{site}' AND toYYYYMM({column}) = {period}"),
        )
        .trim()
        .to_string()
    };
    for (table, column) in [
        ("traffic_hourly", "hour"),
        ("dropped_hourly", "hour"),
        ("funnel_hourly", "hour"),
        ("rollup_daily", "day"),
        ("rollup_days", "day"),
        ("rollup_goal_days", "day"),
    ] {
        assert_eq!(
            old_rows("example.org", table, column),
            "0",
            "{table}: example.org's old month dropped, and not written again"
        );
        assert_ne!(
            old_rows("other.org", table, column),
            "0",
            "{table}: other.org keeps its old month"
        );
    }
    // The longer retention keeps other.org's old month; current months stay.
    assert_eq!(pageviews("other.org", true), old_pageviews);
    assert_eq!(pageviews("example.org", false), "3");
    assert_eq!(
        pageviews("other.org", false),
        (7 + 2 * OLD_VISITORS + 3).to_string()
    );
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT sum(hits) FROM dropped_hourly WHERE site_id = 'example.org' AND reason NOT LIKE 'tamis:delivered:%'"
        )
        .trim(),
        "2"
    );
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT sum(hits) FROM dropped_hourly WHERE site_id = 'other.org' AND reason NOT LIKE 'tamis:delivered:%'"
        )
        .trim(),
        "4"
    );
    // The 30-month-old audit row is past audit.retention_months (24).
    assert_eq!(
        ch.query_in(&db, "SELECT count() FROM audit_log WHERE actor = 'old'")
            .trim(),
        "0"
    );
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| {
            l.contains("retention: expired partitions dropped")
                && l.contains("site=\"example.org\"")
                || l.contains("retention: expired partitions dropped")
                    && l.contains("site=example.org")
        })
        .unwrap_or_else(|| panic!("no deletion report for example.org in the log:\n{log}"));
    assert!(
        line.contains(&format!("period={period}"))
            && line.contains(&format!("partitions={}", dropped_tables.len()))
            && line.contains(&format!("rows={site_rows}")),
        "{line}"
    );
    assert!(!log.lines().any(|l| l.contains("retention: expired partitions dropped") && l.contains("other.org")), "{log}");
}

/// Salts rotate at the site's local midnight across two midnights, one of
/// them the night clocks fall back (1 November 2026 in Toronto: that day
/// lasts 25 hours), and no salt older than 48 hours exists anywhere: not in
/// the `salts` table or any other table, not in ClickHouse's data files or
/// logs, not in the collector's memory (its salt gauges); each destruction
/// is recorded with a commitment, never the salt. (This server runs in
/// process and writes no files; the binary's log and files are searched in
/// `reads_and_configuration_changes_are_audited`.)
#[test]
fn salts_rotate_at_local_midnight_across_fall_back_and_never_outlive_48_hours() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("fallback");
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let clock = tamis::clock::Clock::manual(at("2026-10-31T16:00:00Z")); // noon EDT
    let server = InProcess::serve(&config(ch, &db, None, "k_threshold = 1"), clock.clone());
    let mut seen: BTreeMap<String, String> = BTreeMap::new(); // day → salt hex

    // No salt anywhere older than 48 h at the clock's time; remembers every
    // salt seen, to look for it later.
    let check_salts = |now: DateTime<Utc>, seen: &mut BTreeMap<String, String>| {
        let rows = ch.query_in(&db, "SELECT toString(day), salt, created_at FROM salts WHERE site_id = 'example.org' ORDER BY day FORMAT TSV");
        for row in rows.lines() {
            let cols: Vec<&str> = row.split('\t').collect();
            let created: DateTime<Utc> = format!("{}Z", cols[2].replace(' ', "T")).parse().unwrap();
            assert!(
                now - created < chrono::Duration::hours(48),
                "salt of {} created {created}, now {now}",
                cols[0]
            );
            seen.entry(cols[0].to_string())
                .or_insert_with(|| cols[1].to_string());
        }
        let metrics = http(server.admin, "GET", "/metrics", &[], b"").body;
        let gauge = |name: &str| -> i64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in {metrics}"))
        };
        let oldest = gauge("tamis_salt_oldest_day_start_seconds");
        assert!(gauge("tamis_salts_in_memory") <= 4, "{metrics}");
        // A salt is made at most 2 hours before its day starts.
        assert!(
            oldest == 0 || now.timestamp() - (oldest - 2 * 3600) < 48 * 3600,
            "a salt in memory for a day that began at {oldest}, now {now}"
        );
    };

    let hit = |when: &str| {
        clock.set(at(when));
        // Give the keeper (every 100 ms) time to act on the new time.
        std::thread::sleep(Duration::from_millis(400));
        let r = send_hit(
            server.addr,
            "100.64.1.1",
            FIREFOX,
            &pageview("https://example.org/"),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    // One visitor: a minute before and after the midnight of 31 October
    // (EDT), then half an hour before and a minute after the midnight that
    // ends the 25-hour day of 1 November (EST). A day rotated at a fixed
    // offset, or in UTC, would put 23:30 EST in 2 November.
    for (when, day) in [
        ("2026-11-01T03:59:00Z", "2026-10-31"),
        ("2026-11-01T04:01:00Z", "2026-11-01"),
        ("2026-11-02T04:30:00Z", "2026-11-01"),
        ("2026-11-02T05:01:00Z", "2026-11-02"),
    ] {
        hit(when);
        wait_until(
            Duration::from_secs(10),
            &format!("salt of {day} shared"),
            || {
                ch.query_in(
                    &db,
                    "SELECT toString(day) FROM salts WHERE site_id = 'example.org'",
                )
                .contains(day)
            },
        );
        check_salts(at(when), &mut seen);
    }
    let query = json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"], "date_range": ["2026-10-31", "2026-11-02"], "dimensions": ["time:day"]});
    wait_until(Duration::from_secs(10), "4 pageviews", || {
        let r = stats(server.addr, TOKEN, query.clone());
        r.json()["results"].as_array().is_some_and(|rows| {
            rows.iter()
                .map(|r| r["metrics"][1].as_f64().unwrap_or(0.0))
                .sum::<f64>()
                == 4.0
        })
    });
    let r = stats(server.addr, TOKEN, query);
    assert_eq!(
        r.json()["results"],
        json!([
            {"dimensions": ["2026-10-31"], "metrics": [1, 1]},
            {"dimensions": ["2026-11-01"], "metrics": [1, 2]},
            {"dimensions": ["2026-11-02"], "metrics": [1, 1]},
        ]),
        "one key per local day: {}",
        r.body
    );
    let total = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": ["2026-10-31", "2026-11-02"]}),
    );
    assert_eq!(
        total.json()["results"][0]["metrics"][0],
        3,
        "three days, three keys: {}",
        total.body
    );

    // Two days later: every earlier salt is gone from the table and from
    // memory, and its destruction is recorded.
    let later = "2026-11-03T17:00:00Z";
    clock.set(at(later));
    wait_until(
        Duration::from_secs(10),
        "only 3 November's salt left",
        || {
            ch.query_in(
                &db,
                "SELECT toString(day) FROM salts WHERE site_id = 'example.org'",
            ) == "2026-11-03\n"
        },
    );
    wait_until(
        Duration::from_secs(10),
        "memory holds only today's salts",
        || {
            let metrics = http(server.admin, "GET", "/metrics", &[], b"").body;
            metrics.contains("tamis_salts_in_memory 2\n")
        },
    );
    check_salts(at(later), &mut seen);
    let records = ch.query_in(&db, "SELECT toString(day), place, commitment FROM salt_destructions WHERE site_id = 'example.org' ORDER BY day, place FORMAT TSV");
    for day in ["2026-10-31", "2026-11-01", "2026-11-02"] {
        for place in ["clickhouse", "memory"] {
            assert!(
                records
                    .lines()
                    .any(|l| l.starts_with(&format!("{day}\t{place}\t"))),
                "no {place} destruction of {day}:\n{records}"
            );
        }
    }
    for line in records.lines() {
        let commitment = line.split('\t').nth(2).unwrap();
        assert_eq!(commitment.len(), 64, "{line}");
        for salt in seen.values() {
            assert!(
                !commitment.contains(&salt[..16]) && !salt.contains(&commitment[..16]),
                "a commitment shows its salt: {line}"
            );
        }
    }
    server.stop();

    // No ClickHouse table holds a destroyed salt (nor, in the records, any
    // salt at all).
    let tables = ch.query(&format!("SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT IN ('Null', 'MaterializedView') ORDER BY name"));
    assert!(
        tables.contains("salt_destructions") && tables.contains("audit_log"),
        "{tables}"
    );
    for table in tables.lines() {
        let dump = ch.query_in(&db, &format!("SELECT * FROM {table} FORMAT TSV"));
        for (day, salt) in &seen {
            let old = day.as_str() < "2026-11-03";
            if old || table != "salts" {
                assert!(
                    !dump.contains(&salt[..16]) && !dump.contains(&salt[48..]),
                    "salt of {day} found in table {table}"
                );
            }
        }
    }

    // ClickHouse's files (data parts, logs): the destroyed salts are in
    // none of them, while today's salt is found, which shows the search
    // works on these files. Each salt is looked for in four 16-character
    // pieces, so compression of a repeated run cannot hide it.
    let pieces = |salt: &str| {
        (0..4)
            .map(|i| salt[i * 16..(i + 1) * 16].to_string())
            .collect::<Vec<_>>()
    };
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = walk(&ch.dir)
        .into_iter()
        .filter_map(|f| std::fs::read(&f).ok().map(|b| (f, b)))
        .collect();
    let today = &seen["2026-11-03"];
    assert!(
        files
            .iter()
            .any(|(_, bytes)| pieces(today).iter().any(|p| contains(bytes, p.as_bytes()))),
        "today's salt not found in ClickHouse's files: the search would prove nothing"
    );
    for (day, salt) in seen.iter().filter(|(d, _)| d.as_str() < "2026-11-03") {
        for (file, bytes) in &files {
            for piece in pieces(salt) {
                assert!(
                    !contains(bytes, piece.as_bytes()),
                    "salt of {day} still in {}",
                    file.display()
                );
            }
        }
    }
}

/// The settings of the two sites of `notice_config`: everything the notice
/// states differs, except the organization.
fn notice_config() -> String {
    format!(
        r#"
[organization]
name = "Ville de Saint-Exemple"
address = "1, rue de l'Hôtel-de-Ville, Saint-Exemple (Québec)"
website = "https://saint-exemple.qc.ca"
privacy_officer = "Me Julie Gagnon, greffière"
privacy_officer_email = "acces@saint-exemple.qc.ca"
privacy_officer_phone = "819 555-0199"
hosting_operator = "Centre de services <TI> & réseaux"
hosting_location = "Québec (Canada)"

[[site]]
id = "saint-exemple.qc.ca"
opt_out_url = "https://saint-exemple.qc.ca/refus"

[[site]]
id = "biblio.saint-exemple.qc.ca"
timezone = "America/Montreal"
retention_months = 13
ipv4_prefix = 16
ipv6_prefix = 32
geo_level = "country"
consent_mode = "required"
on_denied = "drop"
honour_dnt = false
query_params = ["q"]
collect_campaigns = true
event_names = ["Téléchargement"]
prop_keys = ["format"]
k_threshold = 10

[[token]]
name = "dashboard"
secret_sha256 = "{}"
sites = ["saint-exemple.qc.ca"]
"#,
        sha256_hex(TOKEN)
    )
}

/// Longest common subsequence of two lists of lines: the indexes of the
/// lines of `a` and of `b` that are not in it.
fn diff(a: &[String], b: &[String]) -> (Vec<usize>, Vec<usize>) {
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut only_a, mut only_b) = (0, 0, Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
            only_a.push(i);
            i += 1;
        } else {
            only_b.push(j);
            j += 1;
        }
    }
    (only_a, only_b)
}

/// The notices of two differently configured sites differ exactly where
/// their settings differ, in French and in English: every line that
/// differs depends on a setting that differs, and every differing setting
/// the notice states changes at least one line. Both mention retention, IP
/// truncation, the geolocation level, how to opt out and the privacy
/// officer; the command prints them as Markdown and escaped HTML.
#[test]
fn notices_differ_exactly_where_settings_differ() {
    let settings = tamis::config::Settings::from_config(
        toml::from_str(&notice_config()).unwrap(),
        Path::new("."),
    )
    .unwrap();
    let (a, b) = (&settings.sites[0], &settings.sites[1]);
    let (ja, jb) = (
        tamis::config::fingerprint::site_json(a),
        tamis::config::fingerprint::site_json(b),
    );
    let differing: BTreeSet<String> = ja
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| ja[k.as_str()] != jb[k.as_str()])
        .cloned()
        .collect();
    // Settings the notice does not state.
    let unstated: BTreeSet<&str> = ["hostnames", "language"].into();
    for lang in [tamis::notice::Lang::Fr, tamis::notice::Lang::En] {
        let facts = |site| tamis::notice::Facts {
            org: &settings.organization,
            site,
        };
        let (ba, bb) = (
            tamis::notice::blocks(&facts(a), lang),
            tamis::notice::blocks(&facts(b), lang),
        );
        let lines = |blocks: &[tamis::notice::Block]| {
            blocks.iter().map(|b| b.markdown()).collect::<Vec<_>>()
        };
        let (la, lb) = (lines(&ba), lines(&bb));
        let (only_a, only_b) = diff(&la, &lb);
        let mut explained: BTreeSet<String> = BTreeSet::new();
        for (blocks, lines, only) in [(&ba, &la, &only_a), (&bb, &lb, &only_b)] {
            for &i in only {
                let keys: BTreeSet<String> = blocks[i].keys.iter().map(|k| k.to_string()).collect();
                let why: Vec<&String> = keys.intersection(&differing).collect();
                assert!(
                    !why.is_empty(),
                    "{lang:?}: line differs but none of its settings {keys:?} differ: {}",
                    lines[i]
                );
                explained.extend(why.into_iter().cloned());
            }
        }
        for key in differing.iter().filter(|k| !unstated.contains(k.as_str())) {
            assert!(
                explained.contains(key),
                "{lang:?}: setting `{key}` differs but no line of the notice changed with it"
            );
        }
        let (ta, tb) = (la.join("\n"), lb.join("\n"));
        let must = match lang {
            tamis::notice::Lang::Fr => [
                ("25 mois", "13 mois"),
                (
                    "24 premiers bits d'une adresse IPv4 et les 48 premiers bits",
                    "16 premiers bits d'une adresse IPv4 et les 32 premiers bits",
                ),
                (
                    "le pays et la région (province ou État)",
                    "le pays d'où provient la consultation",
                ),
                ("page de refus", "Global Privacy Control"),
                ("Me Julie Gagnon, greffière", "acces@saint-exemple.qc.ca"),
            ],
            tamis::notice::Lang::En => [
                ("25 months", "13 months"),
                (
                    "first 24 bits of an IPv4 address and the first 48 bits",
                    "first 16 bits of an IPv4 address and the first 32 bits",
                ),
                (
                    "the country and region (province or state)",
                    "the country the visit comes from",
                ),
                ("opt-out page", "Global Privacy Control"),
                ("Me Julie Gagnon, greffière", "acces@saint-exemple.qc.ca"),
            ],
        };
        for (in_a, in_b) in must {
            assert!(
                ta.contains(in_a),
                "{lang:?} notice of site A lacks {in_a:?}:\n{ta}"
            );
            assert!(
                tb.contains(in_b),
                "{lang:?} notice of site B lacks {in_b:?}:\n{tb}"
            );
        }
        assert!(ta.contains("Global Privacy Control") && tb.contains("acces@saint-exemple.qc.ca"));
    }

    // The command, in both formats.
    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    std::fs::write(&path, notice_config()).unwrap();
    let (ok, md, err) = run_tamis(
        &["notice", "--site", "saint-exemple.qc.ca", "--lang", "fr"],
        &path,
    );
    assert!(ok, "{err}");
    assert!(
        md.starts_with("### Mesure d'audience du site saint-exemple.qc.ca\n"),
        "{md}"
    );
    assert!(
        md.contains("responsable de la protection des renseignements personnels")
            && md.contains("Commission d'accès à l'information"),
        "{md}"
    );
    let (ok, html, err) = run_tamis(
        &[
            "notice",
            "--site",
            "biblio.saint-exemple.qc.ca",
            "--lang",
            "en",
            "--format",
            "html",
        ],
        &path,
    );
    assert!(ok, "{err}");
    assert!(
        html.starts_with("<h3>Audience measurement on biblio.saint-exemple.qc.ca</h3>\n"),
        "{html}"
    );
    assert!(
        html.contains("Centre de services &lt;TI&gt; &amp; réseaux")
            && html.contains("<a href=\"mailto:acces@saint-exemple.qc.ca\">"),
        "{html}"
    );
    assert!(!html.contains("<TI>"), "HTML is escaped: {html}");
    assert!(md.contains("Centre de services \\<TI\\> & réseaux"), "{md}");
    let (ok, _, err) = run_tamis(&["notice", "--site", "nowhere.org", "--lang", "fr"], &path);
    assert!(!ok && err.contains("not a configured site id"), "{err}");
}

/// `tamis check` prints every control per site, warns with the reason for
/// each weakened default and for nothing else, and reports what
/// ClickHouse holds.
#[test]
fn check_audits_every_control_and_warns_about_weakened_defaults() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("check");
    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    let text = with_other_site(
        &config(ch, &db, None, "ipv4_prefix = 16"),
        "honour_gpc = false\nk_threshold = 2\nretention_months = 37",
    );
    std::fs::write(&path, &text).unwrap();
    let (ok, _, err) = run_tamis(&["migrate"], &path);
    assert!(ok, "{err}");
    let (ok, out, err) = run_tamis(&["check"], &path);
    assert!(ok, "{out}{err}");
    let section = |site: &str| {
        let start = out
            .find(&format!("privacy controls, site {site}:"))
            .unwrap_or_else(|| panic!("{out}"));
        let rest = &out[start..];
        rest[..rest[1..].find("\n\n").map_or(rest.len(), |e| e + 1)].to_string()
    };
    let (example, other) = (section("example.org"), section("other.org"));
    for text in [&example, &other] {
        for control in [
            "IP truncated on arrival",
            "geolocation",
            "opt-out signals honoured",
            "daily salt",
            "small-count threshold",
            "retention enforced",
            "privacy notice",
        ] {
            assert!(text.contains(control), "{control} missing:\n{text}");
        }
    }
    assert!(example.contains("IPv4 /16, IPv6 /48"), "{example}");
    let warnings = |text: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with("WARNING:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // example.org: a shorter prefix is stricter; only the missing notice
    // facts (no organization in this config) warn.
    assert_eq!(warnings(&example).len(), 1, "{example}");
    assert!(
        warnings(&example)[0].contains("organization.name"),
        "{example}"
    );
    let w = warnings(&other).join("\n");
    for reason in [
        "Global Privacy Control",
        "below the default 5",
        "beyond the 25 months",
        "organization.name",
    ] {
        assert!(w.contains(reason), "{reason} not warned:\n{other}");
    }
    assert_eq!(warnings(&other).len(), 4, "{other}");
    assert!(
        out.contains("site example.org: no aggregates stored")
            && out.contains("salts: none stored"),
        "{out}"
    );
}

/// Three API reads produce three audit rows with the token's name (one of
/// them from the dashboard, one a CSV export); the admin token reads them
/// over the API, other tokens cannot tell the endpoint exists; `tamis audit`
/// prints them; configuration changes are recorded with the operator and
/// the sections that changed; a failing audit insert neither fails nor
/// blocks reads. `/privacy.json` publishes each site's facts. tamis's log
/// and files hold no salt.
#[test]
fn reads_and_configuration_changes_are_audited() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("audit");
    let scratch = Scratch::new();
    let text = format!("{}{}", config(ch, &db, None, ""), admin_token());
    let server = Binary::serve(&scratch, &text);
    let operator = ["TAMIS_OPERATOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let changes = || {
        ch.query_in(&db, "SELECT actor, summary FROM audit_log WHERE kind = 'config_change' ORDER BY at FORMAT TSV")
    };
    assert!(
        changes().starts_with(&format!("{operator}\tconfiguration ")),
        "{}",
        changes()
    );
    assert!(
        changes().contains("recorded for the first time"),
        "{}",
        changes()
    );

    let query = json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"], "date_range": "7d", "dimensions": ["event:page"], "filters": [["contains", "event:page", ["secret-looking-value"]]]});
    let auth = format!("Bearer {TOKEN}");
    let post = |headers: &[(&str, &str)]| {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let r = http(
            server.addr,
            "POST",
            "/api/v2/query",
            &all,
            query.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    post(&[]);
    post(&[("X-Tamis-Client", "dashboard")]);
    post(&[("Accept", "text/csv")]);
    let reads = || {
        ch.query_in(&db, "SELECT actor, client, site_id, format, rows, summary FROM audit_log WHERE kind = 'stats_read' ORDER BY client, format FORMAT TSV")
    };
    wait_until(Duration::from_secs(10), "three audit rows", || {
        reads().lines().count() == 3
    });
    let rows = reads();
    let summary = "metrics=visitors,pageviews dimensions=event:page";
    let lines: Vec<&str> = rows.lines().collect();
    assert!(
        lines[0].starts_with("dashboard\tapi\texample.org\tcsv\t0\t") && lines[0].contains(summary),
        "{rows}"
    );
    assert!(
        lines[1].starts_with("dashboard\tapi\texample.org\tjson\t0\t"),
        "{rows}"
    );
    assert!(
        lines[2].starts_with("dashboard\tdashboard\texample.org\tjson\t0\t")
            && lines[2].contains("filters=1"),
        "{rows}"
    );
    assert!(
        !rows.contains("secret-looking-value"),
        "filter values never reach the audit log: {rows}"
    );

    // The audit endpoint: admin only; everyone else sees no such endpoint.
    // On the operators' listener, where the audit log is served.
    let get = |token: Option<&str>, path: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(server.admin, "GET", path, &headers, b"")
    };
    let unknown = get(None, "/api/v2/nothing-here");
    for token in [None, Some(TOKEN), Some("wrong")] {
        let r = get(token, "/api/v2/audit?since=1h");
        assert_eq!(
            (r.status, &r.body),
            (unknown.status, &unknown.body),
            "{token:?}"
        );
    }
    let r = get(Some(ADMIN_TOKEN), "/api/v2/audit?since=1h&site=example.org");
    assert_eq!(r.status, 200, "{}", r.body);
    // Answers follow the OpenAPI document.
    let doc: serde_json::Value = serde_json::from_str(tamis::query::OPENAPI).unwrap();
    let validator = |name: &str| openapi_validator(&doc, name);
    let answer = r.json();
    assert!(validator("AuditResponse").is_valid(&answer), "{answer}");
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(
        results
            .iter()
            .filter(|r| r["kind"] == "stats_read" && r["actor"] == "dashboard")
            .count(),
        3,
        "{}",
        r.body
    );
    assert!(
        results.iter().any(|r| r["kind"] == "config_change"),
        "{}",
        r.body
    );
    assert_eq!(
        get(Some(ADMIN_TOKEN), "/api/v2/audit?since=yesterday").status,
        400
    );
    assert_eq!(
        get(Some(ADMIN_TOKEN), "/api/v2/audit?site=nowhere.org").status,
        400
    );
    wait_until(Duration::from_secs(10), "the admin's read audited", || {
        ch.query_in(
            &db,
            "SELECT count() FROM audit_log WHERE kind = 'audit_read' AND actor = 'privacy-officer'",
        )
        .trim()
            == "1"
    });

    // /privacy.json: public, CORS open, per site by id or host name.
    let get = |_: Option<&str>, path: &str| http(server.addr, "GET", path, &[], b"");
    let p = get(None, "/privacy.json?site=example.org");
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.header("access-control-allow-origin"), Some("*"));
    let facts = p.json();
    assert!(validator("PrivacyFacts").is_valid(&facts), "{facts}");
    assert_eq!(facts["site"], "example.org");
    assert_eq!(
        facts["ip_truncation"],
        json!({"ipv4_prefix": 24, "ipv6_prefix": 48, "before_any_other_use": true, "stored": false})
    );
    assert_eq!(facts["storage"]["retention_months"], 25);
    assert_eq!(facts["daily_key"]["destroyed_within_hours"], 48);
    assert_eq!(facts["tamis_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(facts["third_parties"], json!([]));
    let other = get(None, "/privacy.json?site=other.org").json();
    assert_ne!(
        facts["configuration_version"],
        other["configuration_version"]
    );
    // Without `site`, the Host header names the site.
    let by_host = raw_get(server.addr, "www.example.org:443", "/privacy.json");
    assert!(
        by_host.starts_with("HTTP/1.1 200") && by_host.contains("\"site\":\"example.org\""),
        "{by_host}"
    );
    assert_eq!(get(None, "/privacy.json?site=nowhere.org").status, 404);

    // `tamis audit` prints the rows, and its own read is recorded.
    let path = scratch.path("tamis.toml");
    let (ok, out, err) = run_tamis(&["audit", "--since", "1h", "--site", "example.org"], &path);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("stats_read") && l.contains("dashboard"))
            .count(),
        3,
        "{out}"
    );
    assert!(out.contains("config_change"), "{out}");

    // A failing audit insert: reads still answer, the failure is counted.
    ch.query_in(&db, "RENAME TABLE audit_log TO audit_log_away");
    post(&[]);
    wait_until(Duration::from_secs(10), "the audit failure counted", || {
        http(server.admin, "GET", "/metrics", &[], b"")
            .body
            .lines()
            .any(|l| l.starts_with("tamis_audit_failures_total ") && !l.ends_with(" 0"))
    });
    ch.query_in(&db, "RENAME TABLE audit_log_away TO audit_log");
    // tamis's log and files never hold a salt.
    let salts: Vec<String> = ch
        .query_in(&db, "SELECT salt FROM salts")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!salts.is_empty());
    let log = server.stop();
    for salt in &salts {
        assert!(
            !log.contains(&salt[..16]) && !log.contains(&salt[48..]),
            "a salt in tamis's log"
        );
        for file in walk(scratch.dir.path()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !contains(&bytes, &salt.as_bytes()[..16]),
                "a salt in {}",
                file.display()
            );
        }
    }

    // A restart with a changed site records which section changed; an
    // unchanged restart records nothing.
    let changed = with_other_site(&text, "k_threshold = 7");
    let server = Binary::serve(&scratch, &changed);
    server.stop();
    let server = Binary::serve(&scratch, &changed);
    server.stop();
    let all = changes();
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(
        all.lines()
            .nth(1)
            .unwrap()
            .ends_with("changed: site other.org"),
        "{all}"
    );
}
