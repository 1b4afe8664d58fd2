//! End to end, with real parts: a real ClickHouse server, the real tamis
//! binary (or library, where the clock must move), real HTTP on loopback.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn day_query(site: &str, metrics: &[&str], dimensions: &[&str]) -> serde_json::Value {
    json!({"site_id": site, "metrics": metrics, "date_range": "day", "dimensions": dimensions})
}

fn metric(resp: &Response, row: usize, index: usize) -> f64 {
    resp.json()["results"][row]["metrics"][index]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric in {}", resp.body))
}

/// The issue's main acceptance scenario: 1,000 pageviews from 100 (IP, user
/// agent) pairs over 5 pages, 10% of them with `Sec-GPC: 1`, through a
/// trusted proxy, plus bots.
#[test]
fn thousand_pageviews_through_a_trusted_proxy() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("thousand");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    let pages = ["/", "/services", "/nouvelles", "/contact", "/emplois"];

    let mut accepted = 0;
    for pair in 0..100 {
        // Distinct /24 networks, so truncation keeps the pairs apart.
        let ip = format!("100.{}.{}.7", 64 + pair / 50, pair % 50 * 5);
        let ua = BROWSERS[pair % BROWSERS.len()];
        let gpc = pair < 10;
        for hit in 0..10 {
            let url = format!("https://example.org{}", pages[(pair + hit) % 5]);
            let extra: &[(&str, &str)] = if gpc { &[("Sec-GPC", "1")] } else { &[] };
            let r = send_hit(server.addr, &ip, ua, &pageview(&url), extra);
            assert_eq!(r.status, 202, "{}", r.body);
            if gpc {
                assert_eq!(r.header("x-tamis-dropped"), Some("opt_out"));
            } else {
                assert_eq!(r.header("x-tamis-dropped"), None);
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 900);
    let bots = [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
        "curl/8.5.0",
    ];
    for bot in bots {
        let r = send_hit(
            server.addr,
            "100.80.1.1",
            bot,
            &pageview("https://example.org/"),
            &[],
        );
        assert_eq!(
            (r.status, r.header("x-tamis-dropped")),
            (202, Some("bot")),
            "{bot}"
        );
    }

    let total = || {
        stats(
            server.addr,
            TOKEN,
            day_query("example.org", &["pageviews", "visitors", "visits"], &[]),
        )
    };
    wait_until(
        Duration::from_secs(10),
        "900 pageviews in the stats API",
        || {
            let r = total();
            r.status == 200 && r.json()["results"][0]["metrics"][0].as_f64() == Some(900.0)
        },
    );
    let r = total();
    let visitors = metric(&r, 0, 1);
    assert!(
        (87.0..=93.0).contains(&visitors),
        "visitors {visitors} not within 3% of 90"
    );
    assert!(
        metric(&r, 0, 2) >= 90.0,
        "every visitor made at least one visit"
    );

    let by_page = stats(
        server.addr,
        TOKEN,
        day_query("example.org", &["pageviews", "visitors"], &["event:page"]),
    );
    assert_eq!(by_page.status, 200, "{}", by_page.body);
    let rows = by_page.json()["results"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 5, "{}", by_page.body);
    let sum: f64 = rows.iter().map(|r| r["metrics"][0].as_f64().unwrap()).sum();
    assert_eq!(sum, 900.0, "page breakdown adds up");
    for row in &rows {
        assert_eq!(row["metrics"][0].as_f64(), Some(180.0), "{row}");
        assert!(pages.contains(&row["dimensions"][0].as_str().unwrap()));
    }

    let metrics = http(server.admin, "GET", "/metrics", &[], b"").body;
    assert!(
        metrics.contains("tamis_hits_dropped_total{reason=\"opt_out\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tamis_hits_dropped_total{reason=\"bot\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tamis_hits_accepted_total 900"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tamis_hits_received_total 1003"),
        "{metrics}"
    );

    // The dropped hits are in ClickHouse as counts by reason, not as hits.
    wait_until(Duration::from_secs(10), "dropped counts written", || {
        ch.query_in(
            &db,
            "SELECT reason, sum(hits) FROM dropped_hourly WHERE reason NOT LIKE 'tamis:delivered:%' GROUP BY reason ORDER BY reason",
        ) == "bot\t3\nopt_out\t100\n"
    });
    server.stop();
}

/// The README's `curl` hit is visible in ClickHouse within 2 s with the
/// default flush interval.
#[test]
fn a_hit_reaches_clickhouse_within_two_seconds() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("latency");
    let scratch = Scratch::new();
    let text =
        config(ch, &db, None, "").replace("flush_interval_ms = 200", "flush_interval_ms = 1000");
    let server = Binary::serve(&scratch, &text);
    let sent = std::time::Instant::now();
    let r = send_hit(
        server.addr,
        "100.64.0.1",
        CHROME,
        &pageview("https://example.org/"),
        &[],
    );
    assert_eq!(r.status, 202);
    wait_until(Duration::from_secs(2), "the hit in traffic_hourly", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "1\n"
    });
    eprintln!("visible after {:?}", sent.elapsed());
    server.stop();
}

/// A Québec address is stored as CA / CA-QC and nothing finer; the test
/// addresses appear nowhere, in any form, in ClickHouse, the log or files.
#[test]
fn region_only_and_no_ip_anywhere() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("noip");
    let scratch = Scratch::new();
    let geo = scratch.geodb();
    // k = 1: this test looks at single visitors' regions.
    let config_text = config(ch, &db, Some(&geo), "k_threshold = 1");
    let server = Binary::serve(&scratch, &config_text);
    // The durable log lives outside the scratch folder; it is searched too.
    let journal_dir = config_text
        .lines()
        .find_map(|l| l.strip_prefix("log_dir = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(std::path::PathBuf::from)
        .expect("the test config names a log_dir");
    let quebec = "198.51.100.77";
    let ontario = "203.0.113.201";
    let v6 = "2001:db8:1:2::77";
    for (ip, ua) in [(quebec, FIREFOX), (ontario, CHROME), (v6, SAFARI_IPHONE)] {
        for page in ["/", "/a"] {
            let r = send_hit(
                server.addr,
                ip,
                ua,
                &pageview(&format!("https://example.org{page}")),
                &[("Accept-Language", "fr-CA")],
            );
            assert_eq!(r.status, 202, "{}", r.body);
        }
        // Also through a garbled hop and a direct connection: the log must
        // not quote them either.
        send_hit(
            server.addr,
            &format!("{ip}, not-an-ip"),
            ua,
            &pageview("https://example.org/"),
            &[],
        );
        send_hit(server.addr, ip, ua, "{not json", &[]);
    }
    wait_until(Duration::from_secs(10), "6 pageviews stored", || {
        ch.query_in(
            &db,
            "SELECT sumMerge(pageviews) FROM traffic_hourly WHERE country != ''",
        ) == "6\n"
    });
    let places = ch.query_in(
        &db,
        "SELECT DISTINCT country, region FROM traffic_hourly WHERE country != '' ORDER BY region",
    );
    assert_eq!(places, "CA\tCA-ON\nCA\tCA-QC\n");
    // The stats API names regions in the site's language (French by default).
    let r = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": "day", "metrics": ["visitors"], "dimensions": ["visit:region"]}),
    );
    assert_eq!(
        r.json()["meta"]["region_names"],
        json!({"CA-QC": "Québec", "CA-ON": "Ontario"}),
        "{}",
        r.body
    );
    // (The hits with a garbled X-Forwarded-For count from the proxy's own
    // address, which has no region.)
    assert!(
        r.json()["results"]
            .as_array()
            .unwrap()
            .contains(&json!({"dimensions": ["CA-QC"], "metrics": [2]})),
        "{}",
        r.body
    );
    let log = server.stop();

    let forms = |ip: &str| -> Vec<String> {
        let mut forms = vec![ip.to_string()];
        if let Ok(std::net::IpAddr::V4(v4)) = ip.parse() {
            let n = u32::from(v4);
            forms.push(n.to_string());
            forms.push(format!("{n:08x}"));
            forms.push(format!("{n:08X}"));
            forms.push(format!("{:08x}", n.swap_bytes()));
        } else if let Ok(std::net::IpAddr::V6(v6)) = ip.parse() {
            forms.push(v6.to_string());
            forms.push(
                v6.segments()
                    .iter()
                    .map(|s| format!("{s:04x}"))
                    .collect::<String>(),
            );
            forms.push(u128::from(v6).to_string());
        }
        forms
    };
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![("tamis log".into(), log.into_bytes())];
    // Every table of the test database, every column, as text…
    for table in ch
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}'"
        ))
        .lines()
    {
        if ch
            .query(&format!(
                "SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{table}'"
            ))
            .trim()
            == "Null"
        {
            continue;
        }
        let dump = ch.query_in(&db, &format!("SELECT * FROM {table} FORMAT TSV"));
        haystacks.push((format!("table {table}"), dump.into_bytes()));
    }
    // …every file ClickHouse wrote for it, and every file tamis wrote,
    // its durable log included.
    let ch_files = walk(&ch.dir);
    let scratch_files = walk(scratch.dir.path());
    let journal_files = walk(&journal_dir);
    assert!(
        journal_files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "log")),
        "no log segment in {}",
        journal_dir.display()
    );
    for file in ch_files.iter().chain(&scratch_files).chain(&journal_files) {
        if file.extension().is_some_and(|e| e == "mmdb") {
            continue; // the GeoIP database itself maps these test networks
        }
        if let Ok(bytes) = std::fs::read(file) {
            haystacks.push((file.display().to_string(), bytes));
        }
    }
    for ip in [quebec, ontario, v6] {
        for form in forms(ip) {
            for (name, bytes) in &haystacks {
                assert!(!contains(bytes, form.as_bytes()), "{form} found in {name}");
            }
        }
        if let Ok(std::net::IpAddr::V4(v4)) = ip.parse() {
            for (name, bytes) in haystacks
                .iter()
                .filter(|(n, _)| !n.starts_with("table") && !n.ends_with(".bin"))
            {
                assert!(
                    !contains(bytes, &v4.octets()),
                    "raw bytes of {ip} in {name}"
                );
            }
        }
    }
    assert!(
        !haystacks
            .iter()
            .any(|(_, b)| contains(b, "Montr".as_bytes())),
        "the city must never be read"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

/// The example URL of the issue keeps its path only, with placeholders.
#[test]
fn urls_are_reduced_before_storage() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("urls");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    let url = "https://example.org/users/jean.tremblay@example.com/4501234567?email=a@b.c&utm_source=x#top";
    assert_eq!(
        send_hit(server.addr, "100.64.9.9", FIREFOX, &pageview(url), &[]).status,
        202
    );
    wait_until(Duration::from_secs(10), "the page stored", || {
        ch.query_in(&db, "SELECT count() FROM traffic_hourly") != "0\n"
    });
    let stored = ch.query_in(
        &db,
        "SELECT DISTINCT page, entry_page, utm_source FROM traffic_hourly WHERE event != 'tamis:delivered'",
    );
    assert_eq!(
        stored,
        "/users/[email]/[number]\t/users/[email]/[number]\t\n"
    );
    server.stop();
}

/// Same IP and user agent on two local days are two visitors; the salt of
/// day D is gone from ClickHouse by D+2. The clock is injected.
#[test]
fn daily_keys_rotate_and_salts_are_destroyed() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("salts");
    let start: chrono::DateTime<chrono::Utc> = "2026-03-07T17:00:00Z".parse().unwrap(); // noon in Toronto
    let clock = tamis::clock::Clock::manual(start);
    // One visitor per day: k = 1 so the daily rows are shown.
    let server = InProcess::serve(&config(ch, &db, None, "k_threshold = 1"), clock.clone());
    let salt_days = || {
        ch.query_in(
            &db,
            "SELECT toString(day) FROM salts WHERE site_id = 'example.org' ORDER BY day",
        )
    };

    for _ in 0..3 {
        assert_eq!(
            send_hit(
                server.addr,
                "100.64.1.1",
                FIREFOX,
                &pageview("https://example.org/"),
                &[]
            )
            .status,
            202
        );
    }
    wait_until(Duration::from_secs(10), "day D's salt shared", || {
        salt_days().contains("2026-03-07")
    });
    let salt_d = ch
        .query_in(
            &db,
            "SELECT salt FROM salts WHERE site_id = 'example.org' AND day = '2026-03-07'",
        )
        .trim()
        .to_string();
    assert_eq!(
        salt_d.len(),
        64,
        "{}",
        ch.query_in(
            &db,
            "SELECT site_id, day, created_at, substring(salt, 1, 8) FROM salts"
        )
    );

    // Day D+1 (the night of D+1 to D+2 is a DST change in Toronto).
    clock.set(start + chrono::Duration::days(1));
    for _ in 0..2 {
        assert_eq!(
            send_hit(
                server.addr,
                "100.64.1.1",
                FIREFOX,
                &pageview("https://example.org/"),
                &[]
            )
            .status,
            202
        );
    }
    wait_until(
        Duration::from_secs(10),
        "day D+1's salt shared, day D's destroyed",
        || salt_days() == "2026-03-08\n",
    );

    let query = json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"], "date_range": ["2026-03-07", "2026-03-08"], "dimensions": ["time:day"]});
    wait_until(Duration::from_secs(10), "5 pageviews", || {
        let r = stats(server.addr, TOKEN, query.clone());
        r.json()["results"].as_array().is_some_and(|rows| {
            rows.iter()
                .map(|r| r["metrics"][1].as_f64().unwrap_or(0.0))
                .sum::<f64>()
                == 5.0
        })
    });
    let r = stats(server.addr, TOKEN, query.clone());
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["dimensions"][0], "2026-03-07", "{}", r.body);
    assert_eq!(results[0]["metrics"], json!([1, 3]), "{}", r.body);
    assert_eq!(results[1]["dimensions"][0], "2026-03-08", "{}", r.body);
    assert_eq!(results[1]["metrics"], json!([1, 2]), "{}", r.body);
    let both = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": ["2026-03-07", "2026-03-08"]}),
    );
    assert_eq!(
        both.json()["results"][0]["metrics"][0],
        2,
        "two days, two visitors: {}",
        both.body
    );

    // D+2: no salt of D or D+1 remains.
    clock.set(start + chrono::Duration::days(2));
    assert_eq!(
        send_hit(
            server.addr,
            "100.64.1.1",
            FIREFOX,
            &pageview("https://example.org/"),
            &[]
        )
        .status,
        202
    );
    wait_until(Duration::from_secs(10), "only D+2's salt left", || {
        salt_days() == "2026-03-09\n"
    });
    server.stop();
    // The salt never travelled in SQL text, so ClickHouse's logs never
    // held it.
    for file in walk(&ch.dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(&salt_d), "salt in {}", file.display());
    }
}

/// `tamis migrate --print` is DDL this ClickHouse (Debian's 18.16 in CI)
/// runs unchanged, twice (it is idempotent).
#[test]
fn printed_migrations_run_on_this_clickhouse() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("printed");
    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    std::fs::write(&path, config(ch, &db, None, "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["migrate", "--print", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = String::from_utf8(out.stdout).unwrap();
    for _ in 0..2 {
        // Steps for upgrading older databases are printed as comments.
        for statement in sql.split(";\n").map(str::trim).filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
        }) {
            ch.query(statement);
        }
    }
    let printed = schema_of(ch, &db);
    for core in [
        "traffic_hourly",
        "batch_in",
        "batch_receipts",
        "salts",
        "audit_log",
    ] {
        assert!(
            printed.contains(&format!("\n{core}\t")) || printed.starts_with(&format!("{core}\t")),
            "{core} missing from the printed schema:\n{printed}"
        );
    }

    // And `tamis migrate` itself applies nothing more on that schema… after
    // recording versions; on a fresh database it applies all of them.
    let fresh = ch.create_database("migrated");
    std::fs::write(&path, config(ch, &fresh, None, "")).unwrap();
    let versions: Vec<u32> = tamis::sink::schema::migrations()
        .iter()
        .map(|m| m.version)
        .collect();
    for expected in [
        format!("applied migrations {versions:?}"),
        "up to date".to_string(),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
            .args(["migrate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&expected),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The printed SQL and `tamis migrate` make the same tables, engines and
    // columns.
    assert_eq!(schema_of(ch, &db), schema_of(ch, &fresh));
}

/// Migration 9 alters tables that hold data: columns added only where
/// missing (resumable after a crash between its steps), old rows kept, and
/// traffic rows of a collector still on the previous version, written
/// after the migration, never counted twice beside the new kind's.
#[test]
fn a_database_made_before_migration_9_is_upgraded_in_place_and_counts_old_and_new_rows_once() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("upgrade");
    let old = include_str!("data/schema-v8.sql").replace("{db}", &db);
    for statement in old.split(";\n").map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
    }) {
        ch.query(statement);
    }
    ch.query_in(
        &db,
        "INSERT INTO schema_migrations (version, name, applied_at) \
         SELECT toUInt32(number + 1), 'before', now() FROM system.numbers LIMIT 8",
    );
    // What a collector of the previous version writes: a pageview.
    let old_row = "INSERT INTO batch_in (kind, site_id, hour, event, page, os, visitor, pageviews) \
                   VALUES ('traffic', 'example.org', toDateTime(1795446000), 'pageview', '/', 'Mac', 1, 1)";
    ch.query_in(&db, old_row);
    // As if an earlier `tamis migrate` had died after migration 9's first
    // step.
    ch.query_in(
        &db,
        "ALTER TABLE traffic_hourly ADD COLUMN os_version String, ADD COLUMN hostname String, \
         ADD COLUMN utm_content String, ADD COLUMN utm_term String, ADD COLUMN click_id String, \
         MODIFY ORDER BY (site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, \
         utm_campaign, country, region, browser, browser_version, os, device, language, consent, \
         os_version, hostname, utm_content, utm_term, click_id)",
    );

    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    std::fs::write(&path, config(ch, &db, None, "")).unwrap();
    let migrate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
            .args(["migrate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let first = migrate();
    assert!(
        first.contains("applied migrations [9, 10, 11, 12]"),
        "{first}"
    );
    assert!(migrate().contains("up to date"));

    // The same tables and columns as a database made new, but for what
    // this version never writes to and migration 9 leaves as it was: the
    // view of the old kind of traffic rows (kept for collectors of the
    // previous version), and the first input table and its view.
    let fresh = ch.create_database("upgrade-fresh");
    std::fs::write(&path, config(ch, &fresh, None, "")).unwrap();
    migrate();
    let written = |db: &str| -> String {
        schema_of(ch, db)
            .lines()
            .filter(|l| {
                !["batch_traffic_mv\t", "traffic_in\t", "traffic_mv\t"]
                    .iter()
                    .any(|t| l.starts_with(t))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(written(&db), written(&fresh));

    // The old collector once more. Its view writes none of the new key
    // columns: ClickHouse 18.16 refuses the whole insert ("Expected column
    // os_version"), so that collector's hits wait in its log until it is
    // upgraded; a current ClickHouse fills the defaults and counts them.
    // Either way, once and only once.
    let old_again = ch
        .try_query(&old_row.replace(
            "INSERT INTO batch_in",
            &format!("INSERT INTO {db}.batch_in"),
        ))
        .is_ok();
    // A collector of this version, with what only it writes.
    ch.query_in(
        &db,
        "INSERT INTO batch_in (kind, site_id, hour, event, page, os, os_version, hostname, visitor, pageviews, \
         engaged_ms, engaged_visits, scroll_total, scroll_visits) \
         VALUES ('traffic2', 'example.org', toDateTime(1795446000), 'pageview', '/', 'iOS', '17', 'example.org', 2, 1, \
         1500, 1, 80, 1)",
    );
    let got = ch.query_in(
        &db,
        "SELECT os, os_version, hostname, uniqIfMerge(visitors), sumMerge(pageviews), sumMerge(engaged_ms), \
         sumMerge(engaged_visits), sumMerge(scroll_total), sumMerge(scroll_visits) \
         FROM traffic_hourly GROUP BY os, os_version, hostname ORDER BY os FORMAT TSV",
    );
    let old_pageviews = if old_again { 2 } else { 1 };
    assert_eq!(
        got,
        format!("Mac\t\t\t1\t{old_pageviews}\t0\t0\t0\t0\niOS\t17\texample.org\t1\t1\t1500\t1\t80\t1\n"),
        "the rows before the upgrade kept, each row counted once (old collector's insert accepted: {old_again})"
    );
}

/// Every table of `db` with its engine, then every column with its type,
/// one per line, in a stable order.
fn schema_of(ch: &ClickHouse, db: &str) -> String {
    let tables = ch.query(&format!(
        "SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name FORMAT TSV"
    ));
    let columns = ch.query(&format!(
        "SELECT table, name, type FROM system.columns WHERE database = '{db}' ORDER BY table, name FORMAT TSV"
    ));
    format!("{tables}{columns}")
}

/// Malformed JSON, oversize bodies, missing fields and invalid UTF-8 get
/// 4xx JSON errors; nothing panics the server.
#[test]
fn bad_input_gets_clear_errors() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("badinput");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    let post = |body: &[u8]| {
        http(
            server.addr,
            "POST",
            "/api/event",
            &[("User-Agent", FIREFOX)],
            body,
        )
    };
    // Refusals answer as Plausible's Events API does:
    // `{"errors": {"<field>": ["<reason>"]}}` (tests/plausible.rs holds
    // the cases Plausible's own tests pin).
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            b"{\"n\":\"pageview\"".to_vec(),
            400,
            "request",
            "ends too early",
        ),
        (b"not json".to_vec(), 400, "request", "syntax"),
        (
            b"{\"u\":\"https://example.org/\",\"d\":\"example.org\"}".to_vec(),
            400,
            "event_name",
            "can't be blank",
        ),
        (
            b"{\"n\":\"pageview\",\"d\":\"example.org\"}".to_vec(),
            400,
            "url",
            "is required",
        ),
        (
            b"{\"n\":\"pageview\",\"u\":\"https://example.org/\",\"d\":\"\"}".to_vec(),
            400,
            "domain",
            "can't be blank",
        ),
        (
            b"{\"n\":\"pageview\",\"u\":\"https://example.org/\xff\",\"d\":\"example.org\"}"
                .to_vec(),
            400,
            "request",
            "line 1",
        ),
        (vec![b' '; 9 * 1024], 413, "request", "larger than 8192"),
    ];
    for (body, status, field, message) in cases {
        let r = post(&body);
        assert_eq!(r.status, status, "{}", r.body);
        assert!(
            r.json()["errors"][field][0]
                .as_str()
                .unwrap()
                .contains(message),
            "{}",
            r.body
        );
    }
    let r = http(server.addr, "GET", "/api/event", &[], b"");
    assert_eq!(r.status, 405);
    let r = http(
        server.addr,
        "OPTIONS",
        "/api/event",
        &[("Origin", "https://example.org")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // Unknown site and foreign host name are dropped with a reason.
    let r = send_hit(
        server.addr,
        "100.64.0.9",
        FIREFOX,
        r#"{"n":"pageview","u":"https://example.org/","d":"unknown.org"}"#,
        &[],
    );
    assert_eq!(
        (r.status, r.header("x-tamis-dropped")),
        (202, Some("unknown_site"))
    );
    let r = send_hit(
        server.addr,
        "100.64.0.9",
        FIREFOX,
        r#"{"n":"pageview","u":"https://phishing.example/","d":"example.org"}"#,
        &[],
    );
    assert_eq!(
        (r.status, r.header("x-tamis-dropped")),
        (202, Some("hostname_not_allowed"))
    );

    // A bounded stream of garbage, some of it almost valid.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 300) as usize;
        let mut body: Vec<u8> = (0..len)
            .map(|j| (seed.rotate_left(j as u32) & 0xff) as u8)
            .collect();
        if i % 3 == 0 {
            body = format!("{{\"n\":\"pageview\",\"u\":\"https://example.org/{}\",\"d\":\"example.org\",\"p\":{}}}", i, String::from_utf8_lossy(&body)).into_bytes();
        }
        let r = post(&body);
        assert!(
            r.status == 202 || (400..500).contains(&r.status),
            "{} for case {i}",
            r.status
        );
    }
    assert_eq!(http(server.addr, "GET", "/healthz", &[], b"").status, 200);
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// Tokens: none or wrong → 401; a site the token may not read → 404, the
/// same answer as an unknown site.
#[test]
fn stats_api_checks_tokens_and_sites() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("auth");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    let q = day_query("example.org", &["visitors"], &[]);
    assert_eq!(stats(server.addr, TOKEN, q.clone()).status, 200);
    assert_eq!(stats(server.addr, "wrong", q.clone()).status, 401);
    let none = http(
        server.addr,
        "POST",
        "/api/v2/query",
        &[],
        q.to_string().as_bytes(),
    );
    assert_eq!(none.status, 401);
    assert_eq!(stats(server.addr, OTHER_TOKEN, q.clone()).status, 404);
    assert_eq!(
        stats(
            server.addr,
            TOKEN,
            day_query("nope.org", &["visitors"], &[])
        )
        .status,
        404
    );
    let bad = stats(
        server.addr,
        TOKEN,
        day_query(
            "example.org",
            &["visitors'; DROP TABLE traffic_hourly --"],
            &[],
        ),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("metrics"));
    let filtered = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["pageviews"], "date_range": "7d", "filters": [["is", "event:page", ["/'; DROP TABLE traffic_hourly; --"]]]}),
    );
    assert_eq!(filtered.status, 200, "{}", filtered.body);
    assert_eq!(
        ch.query(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'traffic_hourly'"
        )),
        "1\n"
    );
    assert_eq!(http(server.addr, "GET", "/readyz", &[], b"").status, 200);
    server.stop();
}

/// When ClickHouse cannot take writes, the durable log fills up to its cap
/// and ingest answers 503 with Retry-After; every hit answered 202 is
/// written once ClickHouse is back.
#[test]
fn overload_answers_503_and_loses_no_accepted_hit() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("overload");
    let scratch = Scratch::new();
    let text = config(ch, &db, None, "")
        .replace(
            "flush_interval_ms = 200",
            "flush_interval_ms = 50\nbatch_rows = 5",
        )
        .replace("[storage]\n", "[storage]\nlog_max_bytes = 65536\n");
    let server = Binary::serve(&scratch, &text);
    // Take the input table away: every insert fails whole and is retried.
    ch.query_in(&db, "RENAME TABLE batch_in TO batch_in_away");

    let (mut accepted, mut refused) = (0u32, 0u32);
    for i in 0..1000 {
        let ip = format!("100.64.{}.1", i % 200);
        let r = send_hit(
            server.addr,
            &ip,
            FIREFOX,
            &pageview("https://example.org/"),
            &[],
        );
        match r.status {
            202 => accepted += 1,
            503 => {
                assert_eq!(r.header("retry-after"), Some("5"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(
        refused > 0,
        "the full log must push back ({accepted} accepted)"
    );
    assert!(http(server.admin, "GET", "/metrics", &[], b"")
        .body
        .contains(&format!("tamis_hits_overloaded_total {refused}")));

    // ClickHouse takes writes again: the backlog drains, exactly.
    ch.query_in(&db, "RENAME TABLE batch_in_away TO batch_in");
    wait_until(Duration::from_secs(30), "the backlog written", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly")
            == format!("{accepted}\n")
    });
    // Once written, it stays exact: nothing is applied twice.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly"),
        format!("{accepted}\n")
    );
    server.stop();
}

/// A bad configuration stops start-up with a message naming the key.
#[test]
fn bad_config_names_the_key() {
    let scratch = Scratch::new();
    let path = scratch.path("bad.toml");
    for (text, key) in [
        (
            "[[site]]\nid = 'example.org'\nipv4_prefix = 32\n",
            "site[0].ipv4_prefix",
        ),
        (
            "[[site]]\nid = 'example.org'\ntimezone = 'Mars/Olympus'\n",
            "site[0].timezone",
        ),
        (
            "[server]\nlisten = 'everywhere'\n[[site]]\nid = 'example.org'\n",
            "server.listen",
        ),
        ("[[site]]\nid = 'example.org'\ncolour = 'blue'\n", "colour"),
    ] {
        std::fs::write(&path, text).unwrap();
        for command in ["serve", "check"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
                .args([command, "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{command} accepted {text}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(key),
                "{command}: {stderr} does not name {key}"
            );
        }
    }
}

/// SIGTERM: tamis finishes open requests and writes every accepted hit
/// before exiting, even when its batch was far from due.
#[test]
fn sigterm_writes_every_accepted_hit() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("sigterm");
    let scratch = Scratch::new();
    let text =
        config(ch, &db, None, "").replace("flush_interval_ms = 200", "flush_interval_ms = 60000");
    let server = Binary::serve(&scratch, &text);
    for i in 0..50 {
        let r = send_hit(
            server.addr,
            &format!("100.64.{i}.1"),
            CHROME,
            &pageview("https://example.org/"),
            &[],
        );
        assert_eq!(r.status, 202);
    }
    assert_eq!(
        ch.query_in(&db, "SELECT count() FROM traffic_hourly"),
        "0\n",
        "nothing is due yet"
    );
    let log = server.stop();
    assert!(log.contains("tamis stopped"), "{log}");
    assert_eq!(
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly"),
        "50\n"
    );
}
