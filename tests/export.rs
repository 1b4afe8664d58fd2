//! `tamis export` (issue 17, part 4): the real binary writes a month's
//! open-data package from a real ClickHouse, seeded through the real
//! ingestion endpoint of an in-process tamis whose clock is set to March
//! 2026. k is 5; every table must equal, line for line, what the stats
//! API's CSV gives a protected (public) token for the same question.
//!
//! The metadata follows the W3C "Metadata Vocabulary for Tabular Data"
//! (CSV on the Web, https://www.w3.org/TR/tabular-metadata/): a
//! `csv-metadata.json` beside the tables, whose columns' `titles` match
//! the CSV headers.
//!
//! Seeded (America/Toronto, all visitors from FR-IDF in the test GeoIP):
//! - 2026-03-10: 20 visitors on `/popular`, 6 on a page whose path holds
//!   a spreadsheet formula, 6 from a referrer whose host starts with `=`,
//!   2 on `/rare` (merged into a withheld `(other)`), and 5 hits dropped
//!   for Global Privacy Control;
//! - 2026-03-11: 3 visitors (a day below k: withheld);
//! - 2026-04-02: 6 visitors on `/april` (outside the month).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MONTH: [&str; 2] = ["2026-03-01", "2026-03-31"];
const FORMULA_PAGE: &str = "/=HYPERLINK(\"http://evil.example\",\"x\")";
/// A referrer whose host a spreadsheet would run: `=` and `+` are not
/// forbidden host code points in the WHATWG URL Standard
/// (https://url.spec.whatwg.org/#forbidden-host-code-point), so the
/// referrer's host, kept as the visit's source, starts with `=`.
const FORMULA_SOURCE: &str = "=1+2.example";

struct Seeded {
    server: InProcess,
    scratch: Scratch,
    config: PathBuf,
    db: String,
}

/// One seeded ClickHouse database and server for every test of this file.
fn seeded() -> &'static Seeded {
    static SEEDED: OnceLock<Seeded> = OnceLock::new();
    SEEDED.get_or_init(seed)
}

fn seed() -> Seeded {
    let ch = ClickHouse::shared();
    let db = ch.create_database("export");
    // A static is never dropped: the scratch folder lives under the
    // target directory (removed by `cargo clean`), not in /tmp.
    let scratch = Scratch {
        dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch folder"),
    };
    let geodb = scratch.geodb();
    let text = config(ch, &db, Some(&geodb), "collect_campaigns = true");
    let config_path = scratch.path("tamis.toml");
    std::fs::write(&config_path, &text).expect("write config");
    let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
    let server = InProcess::serve(&text, clock.clone());
    let mut v = 0;
    let mut hit_with_body = |body: String| {
        let r = send_hit(server.addr, &format!("100.64.{v}.1"), FIREFOX, &body, &[]);
        assert_eq!(r.status, 202, "{}", r.body);
        v += 1;
    };
    for (path, n) in [
        ("/popular".to_string(), 20),
        (FORMULA_PAGE.to_string(), 6),
        ("/rare".to_string(), 2),
    ] {
        for _ in 0..n {
            hit_with_body(pageview(&format!("https://example.org{path}")));
        }
    }
    for _ in 0..6 {
        let body = json!({"n": "pageview", "u": "https://example.org/from-elsewhere",
            "d": "example.org", "r": format!("https://{FORMULA_SOURCE}/link")});
        hit_with_body(body.to_string());
    }
    for _ in 0..5 {
        let r = send_hit(
            server.addr,
            "100.64.200.1",
            FIREFOX,
            &pageview("https://example.org/popular"),
            &[("Sec-GPC", "1")],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let stored = |n: u32| {
        wait_until(Duration::from_secs(20), "pageviews stored", || {
            ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == format!("{n}\n")
        })
    };
    stored(34);
    clock.set("2026-03-11T15:00:00Z".parse().unwrap());
    for _ in 0..3 {
        hit_with_body(pageview("https://example.org/popular"));
    }
    stored(37);
    clock.set("2026-04-02T15:00:00Z".parse().unwrap());
    for _ in 0..6 {
        hit_with_body(pageview("https://example.org/april"));
    }
    stored(43);
    Seeded {
        server,
        scratch,
        config: config_path,
        db,
    }
}

fn export(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["export", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run tamis export")
}

/// Exports March in `lang` into a folder of its own (`tag`: tests run at
/// once), which it returns.
fn export_march(s: &Seeded, lang: &str, tag: &str) -> PathBuf {
    let out = s.scratch.path(&format!("open-data-{tag}-{lang}"));
    let o = export(
        &s.config,
        &[
            "--site",
            "example.org",
            "--month",
            "2026-03",
            "--lang",
            lang,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "export failed: {stderr}");
    assert!(stderr.contains("pages.csv"), "progress per table: {stderr}");
    out
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The data lines (header left out) of a CSV text.
fn data_lines(csv: &str) -> Vec<String> {
    csv.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The stats API's CSV for a protected token: its data lines.
fn api_csv(s: &Seeded, metrics: &[&str], dimensions: &[&str]) -> Vec<String> {
    let r = stats(
        s.server.addr,
        PROTECTED_TOKEN,
        json!({
            "site_id": "example.org",
            "metrics": metrics,
            "dimensions": dimensions,
            "date_range": MONTH,
            "pagination": {"limit": 10000},
            "format": "csv",
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    data_lines(&r.body)
}

const TOTALS: [&str; 5] = [
    "visitors",
    "visits",
    "pageviews",
    "bounce_rate",
    "visit_duration",
];

/// Every table holds what the API answers a public token for the same
/// month, line for line: the same protected (rounded, withheld) numbers,
/// the same `(other)` rows, the same cells.
#[test]
fn export_tables_equal_the_protected_stats_api() {
    let s = seeded();
    let out = export_march(s, "en", "tables_equal_the_protect");
    let prefixed = |label: &str, lines: Vec<String>| -> Vec<String> {
        lines.into_iter().map(|l| format!("{label},{l}")).collect()
    };
    let expected: Vec<(&str, Vec<String>)> = vec![
        ("month.csv", prefixed("2026-03", api_csv(s, &TOTALS, &[]))),
        ("daily.csv", api_csv(s, &TOTALS, &["time:day"])),
        (
            "pages.csv",
            api_csv(s, &["visitors", "pageviews"], &["event:page"]),
        ),
        (
            "sources.csv",
            api_csv(s, &["visitors", "visits"], &["visit:source"]),
        ),
        (
            "regions.csv",
            api_csv(
                s,
                &["visitors", "visits"],
                &["visit:country", "visit:region"],
            ),
        ),
        (
            "devices.csv",
            [
                ("device", "visit:device"),
                ("browser", "visit:browser"),
                ("os", "visit:os"),
            ]
            .into_iter()
            .flat_map(|(label, d)| prefixed(label, api_csv(s, &["visitors", "visits"], &[d])))
            .collect(),
        ),
        (
            "languages.csv",
            api_csv(s, &["visitors", "visits"], &["visit:language"]),
        ),
        (
            "consent.csv",
            api_csv(
                s,
                &[
                    "consent_rate",
                    "consent_denied_rate",
                    "consent_unset_rate",
                    "opt_out_rate",
                ],
                &["time:day"],
            ),
        ),
    ];
    for (file, lines) in expected {
        assert!(!lines.is_empty(), "{file}: the API answered rows");
        assert_eq!(data_lines(&read(&out, file)), lines, "{file}");
    }
    // The month's totals: 20 + 6 + 6 + 2 visitors on the 10th and 3 on
    // the 11th (April left out), rounded to a multiple of 5 near 37.
    let month = data_lines(&read(&out, "month.csv"));
    let visitors: f64 = month[0].split(',').nth(1).unwrap().parse().unwrap();
    assert!(
        [35.0, 40.0].contains(&visitors),
        "protected total near 37: {month:?}"
    );
    assert!(
        !read(&out, "pages.csv").contains("/april"),
        "April stays out of March"
    );
    let audited = ClickHouse::shared().query_in(
        &s.db,
        "SELECT count() FROM audit_log WHERE kind = 'export' AND site_id = 'example.org'",
    );
    assert_ne!(audited.trim(), "0", "the export is in the audit log");
}

/// Small cells are withheld exactly as the API withholds them: the 3
/// visitors of 11 March leave an empty row, the 2 of `/rare` an empty
/// `(other)`, and every published count is a multiple of 5.
#[test]
fn export_withholds_small_cells_and_rounds_counts() {
    let s = seeded();
    let out = export_march(s, "en", "withholds_small_cells_an");
    let daily = data_lines(&read(&out, "daily.csv"));
    assert!(
        daily.contains(&"2026-03-11,,,,,".to_string()),
        "a day of 3 visitors is withheld: {daily:?}"
    );
    let pages = data_lines(&read(&out, "pages.csv"));
    assert!(
        pages.contains(&"(other),,".to_string()),
        "2 visitors of /rare merge into a withheld (other): {pages:?}"
    );
    assert!(!pages.iter().any(|l| l.starts_with("/rare")), "{pages:?}");
    for file in [
        "month.csv",
        "daily.csv",
        "pages.csv",
        "sources.csv",
        "devices.csv",
    ] {
        for line in data_lines(&read(&out, file)) {
            // The counts: visitors (and visits/pageviews) after the
            // dimension columns; rates are not counts.
            let cells: Vec<&str> = line.rsplitn(6, ',').collect();
            let counts = match file {
                "month.csv" | "daily.csv" => &cells[2..5],
                _ => &cells[..2],
            };
            for c in counts.iter().filter(|c| !c.is_empty()) {
                let n: f64 = c.parse().unwrap_or_else(|_| panic!("{file}: {line}"));
                assert_eq!(n % 5.0, 0.0, "{file}: every count a multiple of 5: {line}");
            }
        }
    }
}

/// A page path and a source that hold spreadsheet formulas come out as
/// the API's CSV writes them (`query::csv::cell`): the source, which
/// starts with `=`, behind an apostrophe; the path starts with `/`, which
/// no spreadsheet runs as a formula, and is quoted as a whole. (OWASP, "CSV
/// Injection": https://owasp.org/www-community/attacks/CSV_Injection.)
#[test]
fn export_neutralises_formula_cells() {
    let s = seeded();
    let out = export_march(s, "en", "neutralises_formula_cell");
    let sources = read(&out, "sources.csv");
    let neutralised = format!("'{FORMULA_SOURCE}");
    assert!(sources.contains(&format!("{neutralised},")), "{sources}");
    assert!(
        !sources.split("\r\n").any(|l| l.starts_with('=')),
        "{sources}"
    );
    let pages = read(&out, "pages.csv");
    let quoted = format!("\"{}\"", FORMULA_PAGE.replace('"', "\"\""));
    assert!(pages.contains(&format!("{quoted},")), "{pages}");
}

/// `--lang fr` and `--lang en` name the columns in their language, and
/// the metadata describes each table and column in it, with the licence
/// and the suppression rule.
#[test]
fn export_headers_and_metadata_follow_the_language() {
    let s = seeded();
    for (lang, daily, pages, words) in [
        (
            "fr",
            "date,visiteurs,visites,pages_vues,taux_de_rebond,duree_de_visite_secondes",
            "page,visiteurs,pages_vues",
            "Aucun nombre ne décrit moins de 5 visiteurs",
        ),
        (
            "en",
            "date,visitors,visits,pageviews,bounce_rate,visit_duration_seconds",
            "page,visitors,pageviews",
            "No number describes fewer than 5 visitors",
        ),
    ] {
        let out = export_march(s, lang, "headers_and_metadata_fol");
        assert_eq!(read(&out, "daily.csv").split("\r\n").next(), Some(daily));
        assert_eq!(read(&out, "pages.csv").split("\r\n").next(), Some(pages));
        let meta: Value = serde_json::from_str(&read(&out, "csv-metadata.json")).unwrap();
        assert_eq!(meta["@context"][0], "http://www.w3.org/ns/csvw");
        assert_eq!(meta["dc:language"], lang);
        assert_eq!(
            meta["dc:license"]["@id"],
            "https://creativecommons.org/licenses/by/4.0/"
        );
        let rule = &meta["tamis:suppression"];
        assert_eq!(rule["disclosure"], "protected");
        assert_eq!(rule["k"], 5);
        assert_eq!(rule["rounding_base"], 5);
        assert!(rule["rule"].as_str().unwrap().contains(words), "{rule}");
        assert_eq!(meta["tamis:complete"], true);
        let tables = meta["tables"].as_array().unwrap();
        assert_eq!(tables.len(), 8);
        for t in tables {
            let file = t["url"].as_str().unwrap();
            let header: Vec<String> = read(&out, file)
                .split("\r\n")
                .next()
                .unwrap()
                .split(',')
                .map(str::to_string)
                .collect();
            let titles: Vec<String> = t["tableSchema"]["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    assert!(!c["dc:description"].as_str().unwrap().is_empty());
                    c["titles"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(header, titles, "{file}: CSVW titles match the header");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary file left: {leftovers:?}"
        );
    }
}

/// A licence given on the command line is the one the metadata states.
#[test]
fn export_licence_is_configurable() {
    let s = seeded();
    let out = s.scratch.path("open-data-cc0");
    let o = export(
        &s.config,
        &[
            "--site",
            "example.org",
            "--month",
            "2026-03",
            "--out",
            out.to_str().unwrap(),
            "--licence",
            "CC0-1.0",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: Value = serde_json::from_str(&read(&out, "csv-metadata.json")).unwrap();
    assert_eq!(
        meta["dc:license"]["@id"],
        "https://creativecommons.org/publicdomain/zero/1.0/"
    );
    assert_eq!(meta["dc:language"], "fr", "French by default");
}

fn refused(config: &Path, args: &[&str], says: &str) {
    let o = export(config, args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} must fail");
    assert!(
        stderr.contains(says),
        "{args:?}: expected `{says}` in {stderr}"
    );
}

/// Unknown site, bad or future month, bad language, an output folder that
/// cannot be made: a clear message and a non-zero exit, nothing written.
#[test]
fn export_refuses_bad_arguments_clearly() {
    let s = seeded();
    let out = s.scratch.path("refused");
    let o = out.to_str().unwrap();
    let cfg = &s.config;
    refused(
        cfg,
        &["--site", "nope.org", "--month", "2026-03", "--out", o],
        "`nope.org` is not a configured site id",
    );
    for month in ["2026-13", "2026-3", "march", "2026-03-01"] {
        refused(
            cfg,
            &["--site", "example.org", "--month", month, "--out", o],
            "--month takes a month as YYYY-MM",
        );
    }
    refused(
        cfg,
        &["--site", "example.org", "--month", "2099-01", "--out", o],
        "--month 2099-01 is in the future",
    );
    refused(
        cfg,
        &[
            "--site",
            "example.org",
            "--month",
            "2026-03",
            "--lang",
            "de",
            "--out",
            o,
        ],
        "--lang takes fr or en",
    );
    assert!(!out.exists(), "nothing made for refused arguments");
    // A folder below a regular file cannot be made (even by root).
    let file = s.scratch.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let below = file.join("out");
    refused(
        cfg,
        &[
            "--site",
            "example.org",
            "--month",
            "2026-03",
            "--out",
            below.to_str().unwrap(),
        ],
        "cannot create the output folder",
    );
}

/// With ClickHouse unreachable the export fails with a clear message and
/// leaves the package already in the folder as it was: nothing is
/// renamed into place before every table is read.
#[test]
fn export_with_clickhouse_down_fails_and_keeps_the_previous_package() {
    let s = seeded();
    let out = export_march(s, "fr", "with_clickhouse_down_fai");
    let before: Vec<(String, String)> = ["daily.csv", "pages.csv", "csv-metadata.json"]
        .iter()
        .map(|f| (f.to_string(), read(&out, f)))
        .collect();
    let down = s.scratch.path("down.toml");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &ClickHouse::shared().url,
        &format!("http://127.0.0.1:{}", free_port()),
    );
    std::fs::write(&down, text).unwrap();
    refused(
        &down,
        &[
            "--site",
            "example.org",
            "--month",
            "2026-03",
            "--lang",
            "en",
            "--out",
            out.to_str().unwrap(),
        ],
        "ClickHouse cannot be reached",
    );
    for (file, text) in before {
        assert_eq!(read(&out, &file), text, "{file} unchanged");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
}
