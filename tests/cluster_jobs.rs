//! tamis's background jobs and privacy operations on a real ClickHouse
//! cluster (ZooKeeper and 2 shards × 2 replicas, `common::cluster`), each
//! run by two collectors at once: the library's job structs, each with its
//! own `Nodes` asking a different replica of each shard first, as two
//! collectors do.
//!
//! What ClickHouse promises and these tests lean on, from its documentation
//! of replication
//! (https://clickhouse.com/docs/engines/table-engines/mergetree-family/replication):
//! an insert into a replicated table is acknowledged once it is on the
//! replica that took it and its entry is in the shard's log in ZooKeeper;
//! the other replicas copy it asynchronously; a block identical to a recent
//! one is dropped ("deduplication"); `ALTER … DROP PARTITION` is replicated;
//! `SYSTEM STOP FETCHES` keeps a replica from copying (used here to hold a
//! salt on one replica). And of the Distributed engine
//! (https://clickhouse.com/docs/engines/table-engines/special/distributed):
//! a read fails when every replica of a shard is unreachable, unless
//! `skip_unavailable_shards` (which tamis never sets).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use common::clickhouse::Stop;
use common::cluster::Cluster;
use common::{wait_until, Scratch};
use tamis::privacy::salt::SaltStore;
use tamis::sink::nodes::Nodes;

/// One test at a time: a cluster is five processes, the machines two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cluster of the tests that stop no node (each in its own database).
fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(Cluster::start)
}

/// Example.org keeps 3 months and counts two goals.
const SITE_EXTRA: &str = "retention_months = 3\nevent_names = [\"Signup\"]\n\
    [[site.goal]]\nevent = \"Signup\"\n[[site.goal]]\npage = \"/blog*\"\n";

/// Makes the schema of `db` on every node with `tamis migrate`, and returns
/// the config's path and settings.
fn migrate(cluster: &Cluster, scratch: &Scratch, db: &str) -> (PathBuf, tamis::config::Settings) {
    let text = common::cluster_config(cluster, db).replacen(
        "timezone = \"America/Toronto\"\n",
        &format!("timezone = \"America/Toronto\"\n{SITE_EXTRA}"),
        1,
    );
    let path = scratch.path(&format!("{db}.toml"));
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["migrate", "--config"])
        .arg(&path)
        .output()
        .expect("run tamis migrate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config: tamis::config::Config = toml::from_str(&text).expect("config parses");
    let settings =
        tamis::config::Settings::from_config(config, Path::new(".")).expect("config valid");
    assert_eq!(settings.sites[0].goals.len(), 2);
    (path, settings)
}

/// A collector's view of the cluster: `spread` 0 asks replica r1 of each
/// shard first, 1 asks r2 first.
fn collector(settings: &tamis::config::Settings, spread: u64) -> Arc<Nodes> {
    Arc::new(Nodes::new(&settings.clickhouse, spread))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `pass` until it succeeds, once a second for at most 40 s: a
/// replicated `DROP PARTITION` goes through the shard's leader, and the
/// leader killed with its node keeps that role until its ZooKeeper session
/// expires (10 s in the test cluster), the drop failing meanwhile (code
/// 292). The jobs retry the same way, later.
fn until_done<T, E: std::fmt::Display>(what: &str, mut pass: impl FnMut() -> Result<T, E>) -> T {
    let mut last = String::new();
    for _ in 0..40 {
        match pass() {
            Ok(done) => return done,
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{what}: still failing after 40 s: {last}");
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// One hit of `event` on `page` at `hour` by each visitor of `visitors`,
/// inserted into one node's `batch_in` as the writer inserts a batch: the
/// node's views fold it into its shard's `traffic_hourly`.
fn traffic(
    cluster: &Cluster,
    (shard, replica): (u32, u32),
    db: &str,
    hour: &str,
    event: &str,
    page: &str,
    visitors: std::ops::RangeInclusive<u64>,
) {
    let (pageviews, events) = if event == "pageview" { (1, 0) } else { (0, 1) };
    cluster.query(
        shard,
        replica,
        &format!(
            "INSERT INTO {db}.batch_in (kind, site_id, hour, event, page, visitor, visits, pageviews, events) \
             SELECT 'traffic2', 'example.org', toDateTime({}), '{event}', '{page}', number + {}, 1, {pageviews}, {events} \
             FROM system.numbers LIMIT {}",
            utc(hour).timestamp(),
            visitors.start(),
            visitors.end() - visitors.start() + 1
        ),
    );
}

/// The rolled rows of `day` (dimension, value, visitors, visits,
/// pageviews, events) at each day's newest recorded version, read through
/// the Distributed tables as the stats API reads them.
fn rolled(cluster: &Cluster, db: &str, day: &str, dimensions: &str) -> String {
    cluster.query(
        2,
        2,
        &format!(
            "SELECT dimension, value, visitors, visits, pageviews, events FROM {db}.rollup_daily_all \
             WHERE site_id = 'example.org' AND day = '{day}' AND dimension IN ({dimensions}) \
             AND (day, version) GLOBAL IN (SELECT day, max(version) FROM {db}.rollup_days_all WHERE site_id = 'example.org' GROUP BY day) \
             ORDER BY dimension, value FORMAT TSV"
        ),
    )
}

/// The same numbers from the hourly aggregates of every shard: by `page`,
/// or the day's totals when `by_page` is false.
fn hourly(cluster: &Cluster, db: &str, day: &str, by_page: bool) -> String {
    let from = utc(&format!("{day}T05:00:00Z")).timestamp();
    let (select, group) = if by_page {
        ("page, ", " GROUP BY page ORDER BY page")
    } else {
        ("", "")
    };
    cluster.query(
        1,
        2,
        &format!(
            "SELECT {select}uniqIfMerge(visitors), sumMerge(visits), sumMerge(pageviews), sumMerge(events) \
             FROM {db}.traffic_hourly_all WHERE site_id = 'example.org' AND hour >= toDateTime({from}) \
             AND hour < toDateTime({}){group} FORMAT TSV",
            from + 24 * 3600
        ),
    )
}

/// Two collectors run the rollup job at once over a day whose hits are on
/// both shards, some visitors on both: the day is rolled once for the
/// cluster on the home shard, its numbers those of the hourly aggregates of
/// every shard (visitors merged, not added per shard), and its replicas
/// agree. A second pass finds nothing to do.
#[test]
fn rollups_by_two_collectors_at_once_count_both_shards_once_on_the_home_shard() {
    let _serial = serial();
    let cluster = shared();
    let scratch = Scratch::new();
    let db = format!("rollups_{}", std::process::id());
    let (_, settings) = migrate(cluster, &scratch, &db);
    // Toronto's 2026-11-23 (05:00Z to 05:00Z): visitors 21 to 30 and 30 to
    // 34 reach both shards.
    traffic(
        cluster,
        (1, 1),
        &db,
        "2026-11-23T14:00:00Z",
        "pageview",
        "/",
        1..=30,
    );
    traffic(
        cluster,
        (2, 2),
        &db,
        "2026-11-23T20:00:00Z",
        "pageview",
        "/a",
        21..=50,
    );
    traffic(
        cluster,
        (1, 2),
        &db,
        "2026-11-23T14:00:00Z",
        "pageview",
        "/blog/x",
        5..=12,
    );
    traffic(
        cluster,
        (1, 1),
        &db,
        "2026-11-23T14:00:00Z",
        "Signup",
        "/s",
        25..=34,
    );
    traffic(
        cluster,
        (2, 1),
        &db,
        "2026-11-23T21:00:00Z",
        "Signup",
        "/s",
        30..=39,
    );
    traffic(
        cluster,
        (2, 1),
        &db,
        "2026-11-24T16:00:00Z",
        "pageview",
        "/",
        100..=104,
    );
    cluster.sync_replicas(&db, "traffic_hourly");

    let clock = tamis::clock::Clock::manual(utc("2026-11-25T15:00:00Z"));
    let job = |spread| {
        tamis::sink::rollup::Rollup::new(
            collector(&settings, spread),
            settings.sites.clone(),
            clock.clone(),
        )
    };
    let (a, b) = (job(0), job(1));
    let rt = runtime();
    let (ra, rb) = rt.block_on(async { tokio::join!(a.pass(None), b.pass(None)) });
    let (ra, rb) = (
        ra.expect("collector a's pass"),
        rb.expect("collector b's pass"),
    );
    assert!(ra + rb >= 2, "both closed days rolled: {ra} + {rb}");

    // Visitors 1 to 50 (not 30 + 30 + 8 + 10 + 10), every hit once.
    assert_eq!(
        rolled(cluster, &db, "2026-11-23", "''"),
        "\t\t50\t88\t68\t20\n"
    );
    assert_eq!(
        hourly(cluster, &db, "2026-11-23", false),
        "50\t88\t68\t20\n"
    );
    // Every page as the hourly aggregates count it.
    let pages: String = hourly(cluster, &db, "2026-11-23", true)
        .lines()
        .map(|l| format!("page\t{l}\n"))
        .collect();
    assert_eq!(rolled(cluster, &db, "2026-11-23", "'page'"), pages);
    // Goals: Signup by visitors 25 to 39 (10 + 10 events); the page goal by
    // the 8 visitors of /blog/x.
    assert_eq!(
        rolled(cluster, &db, "2026-11-23", "'goal'"),
        "goal\tevent:Signup\t15\t20\t0\t20\ngoal\tpage:/blog*\t8\t8\t8\t0\n"
    );
    assert_eq!(rolled(cluster, &db, "2026-11-24", "''"), "\t\t5\t5\t5\t0\n");

    // The rollups and their ledger are on the home shard alone, the same on
    // both of its replicas.
    for table in ["rollup_daily", "rollup_days", "rollup_goal_days"] {
        let per_shard = cluster.replicas_agree(
            &db,
            table,
            &format!("SELECT * FROM {db}.{table} ORDER BY tuple(*) FORMAT TSV"),
        );
        assert!(!per_shard[0].is_empty(), "{table} on shard 1");
        assert_eq!(per_shard[1], "", "{table} on shard 2");
    }
    // Every recorded computation of a day is whole: whichever is newest,
    // the numbers are the day's (two collectors may both have computed it).
    let versions = cluster.query(
        1,
        1,
        &format!(
            "SELECT version, pageviews FROM {db}.rollup_daily WHERE dimension = '' AND day = '2026-11-23' \
             AND version IN (SELECT version FROM {db}.rollup_days WHERE day = '2026-11-23') FORMAT TSV"
        ),
    );
    assert!((1..=2).contains(&versions.lines().count()), "{versions}");
    for line in versions.lines() {
        assert!(line.ends_with("\t68"), "{versions}");
    }

    // Either collector finds both days rolled.
    let again = rt.block_on(async { tokio::join!(a.pass(None), b.pass(None)) });
    assert_eq!((again.0.unwrap(), again.1.unwrap()), (0, 0));
}

/// The janitor drops expired partitions on both shards (one replica each,
/// the drop replicated to the other) and reports each (site, table, month)
/// once, read through `retention_log_all`; a second pass has nothing to do.
#[test]
fn retention_drops_expired_partitions_on_every_shard_and_reports_each_once() {
    let _serial = serial();
    let cluster = shared();
    let scratch = Scratch::new();
    let db = format!("retention_{}", std::process::id());
    let (_, settings) = migrate(cluster, &scratch, &db);
    traffic(
        cluster,
        (1, 2),
        &db,
        "2026-01-10T14:00:00Z",
        "pageview",
        "/",
        1..=3,
    );
    traffic(
        cluster,
        (2, 1),
        &db,
        "2026-01-12T14:00:00Z",
        "pageview",
        "/",
        1..=4,
    );
    traffic(
        cluster,
        (1, 1),
        &db,
        "2026-11-23T14:00:00Z",
        "pageview",
        "/",
        1..=5,
    );
    traffic(
        cluster,
        (2, 2),
        &db,
        "2026-11-23T14:00:00Z",
        "pageview",
        "/",
        1..=6,
    );
    // An audit row older than `audit.retention_months` (24) on shard 2.
    cluster.query(
        2,
        2,
        &format!("INSERT INTO {db}.audit_log (at, kind) VALUES (toDateTime('2023-01-15 00:00:00'), 'stats_read')"),
    );
    cluster.sync_replicas(&db, "traffic_hourly");
    cluster.sync_replicas(&db, "audit_log");

    let clock = tamis::clock::Clock::manual(utc("2026-11-25T15:00:00Z"));
    let janitor = |spread| {
        tamis::sink::retention::Janitor::new(
            collector(&settings, spread),
            settings.sites.clone(),
            settings.audit_retention_months,
            clock.clone(),
        )
    };
    let rt = runtime();
    let mut dropped: Vec<(String, &str, u32, u64)> = rt
        .block_on(janitor(1).tick())
        .expect("retention pass")
        .into_iter()
        .map(|d| (d.site_id, d.table, d.period, d.rows))
        .collect();
    dropped.sort();
    // traffic_hourly keeps one row per (hour, page) of each shard.
    assert_eq!(
        dropped,
        [
            (String::new(), "audit_log", 202301, 1),
            ("example.org".to_string(), "traffic_hourly", 202601, 2),
        ]
    );
    let parts = |table: &str| {
        format!(
            "SELECT partition FROM system.parts WHERE database = '{db}' AND table = '{table}' AND active \
             GROUP BY partition ORDER BY partition FORMAT TSV"
        )
    };
    assert_eq!(
        cluster.replicas_agree(&db, "traffic_hourly", &parts("traffic_hourly")),
        // (TSV escapes the quotes.)
        [
            "(\\'example.org\\',202611)\n",
            "(\\'example.org\\',202611)\n"
        ]
    );
    assert_eq!(
        cluster.replicas_agree(&db, "audit_log", &parts("audit_log")),
        ["", ""]
    );
    let report = format!(
        "SELECT site_id, table_name, period, rows FROM {db}.retention_log_all ORDER BY table_name FORMAT TSV"
    );
    cluster.sync_replicas(&db, "retention_log");
    assert_eq!(
        cluster.query(1, 1, &report),
        "\taudit_log\t202301\t1\nexample.org\ttraffic_hourly\t202601\t2\n"
    );
    assert_eq!(rt.block_on(janitor(0).tick()).expect("second pass"), []);
    assert_eq!(
        cluster.query(2, 1, &report).lines().count(),
        2,
        "reported once"
    );
}

/// Audit rows from two collectors land on one shard and are read through
/// `audit_log_all`; two identical entries (one token reading the same
/// thing twice in a second) are both kept although replicated tables drop
/// an identical block; the configuration is recorded once.
#[test]
fn audit_rows_are_kept_every_one_and_read_through_audit_log_all() {
    let _serial = serial();
    let cluster = shared();
    let scratch = Scratch::new();
    let db = format!("audit_{}", std::process::id());
    let (_, settings) = migrate(cluster, &scratch, &db);
    let rt = runtime();
    let entry = tamis::sink::audit::AuditEntry {
        at: utc("2026-11-25T15:00:00Z"),
        kind: "stats_read",
        actor: "dashboard".into(),
        client: "api",
        site_id: "example.org".into(),
        summary: "metrics=visitors period=30d".into(),
        rows: 1,
        format: "json",
        detail: String::new(),
    };
    rt.block_on(async {
        for spread in [0, 1] {
            let metrics = Arc::new(tamis::metrics::Metrics::default());
            let (log, task) = tamis::sink::audit::AuditLog::start(
                collector(&settings, spread),
                metrics.clone(),
                Duration::from_secs(10),
            );
            // One insert each, so that the second is the same block again.
            for written in 1..=2 {
                log.record(entry.clone());
                while metrics.audit_rows_written.load(Ordering::Relaxed) < written {
                    assert_eq!(metrics.audit_rows_lost.load(Ordering::Relaxed), 0);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            drop(log);
            task.await.expect("audit writer");
        }
        let sections = tamis::config::fingerprint::sections(&settings);
        let at = utc("2026-11-25T15:00:00Z");
        let first = tamis::sink::audit::record_config_change(
            &collector(&settings, 0),
            sections.clone(),
            "ops",
            at,
        )
        .await
        .expect("configuration recorded");
        assert!(first.is_some());
        let second =
            tamis::sink::audit::record_config_change(&collector(&settings, 1), sections, "ops", at)
                .await
                .expect("configuration compared");
        assert_eq!(second, None, "the other collector finds it recorded");
    });
    let count = format!(
        "SELECT kind, count() FROM {db}.audit_log_all GROUP BY kind ORDER BY kind FORMAT TSV"
    );
    cluster.sync_replicas(&db, "audit_log");
    assert_eq!(
        cluster.query(2, 2, &count),
        "config_change\t1\nstats_read\t4\n"
    );
    let per_shard = cluster.replicas_agree(
        &db,
        "audit_log",
        &format!("SELECT count() FROM {db}.audit_log FORMAT TSV"),
    );
    assert_eq!(per_shard, ["5\n", "0\n"], "on the home shard");
}

/// `tamis import ga4` on a cluster writes the rows and the ledger once, to
/// the home shard (both replicas), and the ledger read there refuses a
/// second import of the same days from another file; the same file again
/// is a no-op.
#[test]
fn ga4_import_writes_the_home_shard_once_and_its_ledger_refuses_a_second_import() {
    let _serial = serial();
    let cluster = shared();
    let scratch = Scratch::new();
    let db = format!("import_{}", std::process::id());
    let (config, _) = migrate(cluster, &scratch, &db);
    let dir = scratch.path("fixtures");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ga4_fixtures.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed to generate the GA4 fixtures (apt-get install python3): {e}")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let import = |file: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
            .args(["import", "ga4", "--config"])
            .arg(&config)
            .args(["--site", "example.org"])
            .arg(dir.join(file))
            .output()
            .expect("run tamis import ga4");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = import("json/visitors.json");
    assert!(ok, "{out}");
    assert!(out.contains("imported 1 file(s)"), "{out}");
    let counts = |table: &str| {
        cluster.replicas_agree(
            &db,
            table,
            &format!("SELECT count() FROM {db}.{table} FORMAT TSV"),
        )
    };
    assert_eq!(counts("imported_daily"), ["365\n", "0\n"]);
    assert_eq!(counts("imported_days"), ["365\n", "0\n"]);

    let (ok, out) = import("json/visitors.json");
    assert!(ok, "{out}");
    assert!(out.contains("nothing to import"), "{out}");
    let (ok, out) = import("csv/visitors.csv");
    assert!(!ok, "{out}");
    assert!(
        out.contains("365 day(s) of the visitors report were imported from another file (visitors.json); add --replace"),
        "{out}"
    );
    assert_eq!(counts("imported_days"), ["365\n", "0\n"]);
    assert_eq!(
        cluster.query(
            2,
            1,
            &format!("SELECT count() FROM {db}.audit_log_all WHERE kind = 'import' FORMAT TSV")
        ),
        "1\n"
    );
}

/// With a whole shard unreachable, the rollup pass fails and writes nothing
/// (no day rolled from half its hits), the janitor cleans the other shard
/// and reports it, and an audit row still lands; once the shard is back the
/// day is rolled with every hit and its partitions are dropped. With the
/// home shard down, audit rows go to the other shard.
#[test]
fn a_shard_down_holds_rollups_back_and_retention_cleans_the_others_until_it_returns() {
    let _serial = serial();
    let mut cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("down_{}", std::process::id());
    let (_, settings) = migrate(&cluster, &scratch, &db);
    traffic(
        &cluster,
        (1, 1),
        &db,
        "2026-11-23T14:00:00Z",
        "pageview",
        "/",
        1..=30,
    );
    traffic(
        &cluster,
        (2, 1),
        &db,
        "2026-11-23T20:00:00Z",
        "pageview",
        "/",
        21..=50,
    );
    traffic(
        &cluster,
        (1, 2),
        &db,
        "2026-01-10T14:00:00Z",
        "pageview",
        "/",
        1..=3,
    );
    traffic(
        &cluster,
        (2, 2),
        &db,
        "2026-01-10T14:00:00Z",
        "pageview",
        "/",
        1..=4,
    );
    cluster.sync_replicas(&db, "traffic_hourly");

    let clock = tamis::clock::Clock::manual(utc("2026-11-25T15:00:00Z"));
    let nodes = collector(&settings, 0);
    let rt = runtime();
    rt.block_on(nodes.shards()).expect("topology learnt");
    let rollup =
        tamis::sink::rollup::Rollup::new(nodes.clone(), settings.sites.clone(), clock.clone());
    let janitor = tamis::sink::retention::Janitor::new(
        nodes.clone(),
        settings.sites.clone(),
        settings.audit_retention_months,
        clock.clone(),
    );
    let audit = |summary: &str| tamis::sink::audit::AuditEntry {
        at: utc("2026-11-25T15:00:00Z"),
        kind: "stats_read",
        actor: "dashboard".into(),
        client: "api",
        site_id: "example.org".into(),
        summary: summary.into(),
        rows: 1,
        format: "json",
        detail: String::new(),
    };

    cluster.stop_many(&[(2, 1), (2, 2)], Stop::Kill);
    let error = rt
        .block_on(rollup.pass(Some(3)))
        .expect_err("a pass with a shard down");
    assert!(!error.is_transport(), "ClickHouse answered: {error}");
    for replica in [1, 2] {
        for table in ["rollup_daily", "rollup_days"] {
            assert_eq!(
                cluster.query(
                    1,
                    replica,
                    &format!("SELECT count() FROM {db}.{table} FORMAT TSV")
                ),
                "0\n",
                "{table} on replica {replica}"
            );
        }
    }
    rt.block_on(janitor.tick())
        .expect_err("a retention pass with a shard down");
    let old_parts = format!(
        "SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'traffic_hourly' \
         AND active AND partition = '(\\'example.org\\',202601)' FORMAT TSV"
    );
    cluster.sync_replicas(&db, "traffic_hourly");
    assert_eq!(cluster.query(1, 1, &old_parts), "0\n");
    assert_eq!(cluster.query(1, 2, &old_parts), "0\n");
    let report =
        format!("SELECT table_name, period, rows FROM {db}.retention_log ORDER BY rows FORMAT TSV");
    cluster.sync_replicas(&db, "retention_log");
    assert_eq!(cluster.query(1, 2, &report), "traffic_hourly\t202601\t1\n");
    rt.block_on(tamis::sink::audit::insert(&nodes, &[audit("shard 2 down")]))
        .expect("audit row written with shard 2 down");

    cluster.restart(2, 1);
    cluster.restart(2, 2);
    cluster.sync_replicas(&db, "traffic_hourly");
    let rolled_days = rt.block_on(rollup.pass(Some(3))).expect("pass once back");
    assert_eq!(rolled_days, 6, "2026-11-22 to 2026-11-24 of both sites");
    assert_eq!(
        rolled(&cluster, &db, "2026-11-23", "''"),
        "\t\t50\t60\t60\t0\n"
    );
    until_done("retention once back", || rt.block_on(janitor.tick()));
    assert_eq!(
        cluster.replicas_agree(&db, "traffic_hourly", &old_parts),
        ["0\n", "0\n"]
    );
    cluster.sync_replicas(&db, "retention_log");
    assert_eq!(
        cluster.query(
            2,
            2,
            &report.replace("retention_log ", "retention_log_all ")
        ),
        "traffic_hourly\t202601\t1\ntraffic_hourly\t202601\t1\n",
        "each shard's drop reported once"
    );

    // The home shard down: the audit row goes to the other one.
    cluster.stop_many(&[(1, 1), (1, 2)], Stop::Kill);
    rt.block_on(tamis::sink::audit::insert(&nodes, &[audit("shard 1 down")]))
        .expect("audit row written with the home shard down");
    cluster.sync_replicas(&db, "audit_log");
    assert_eq!(
        cluster.query(
            2,
            1,
            &format!("SELECT summary FROM {db}.audit_log FORMAT TSV")
        ),
        "shard 1 down\n"
    );
    cluster.restart(1, 1);
    cluster.restart(1, 2);
    cluster.sync_replicas(&db, "audit_log");
    assert_eq!(
        cluster.query(
            1,
            1,
            &format!("SELECT summary FROM {db}.audit_log_all ORDER BY summary FORMAT TSV")
        ),
        "shard 1 down\nshard 2 down\n"
    );
}

/// The salts of every site and local day in both replicas of the home
/// shard, as (site, day, salt), sorted.
fn stored_salts(cluster: &Cluster, db: &str) -> BTreeSet<(String, String, String)> {
    let mut all = BTreeSet::new();
    for replica in [1, 2] {
        if !cluster.node(1, replica).is_up() {
            continue;
        }
        for line in cluster
            .query(
                1,
                replica,
                &format!("SELECT site_id, toString(day), salt FROM {db}.salts FORMAT TSV"),
            )
            .lines()
        {
            let f: Vec<&str> = line.split('\t').collect();
            all.insert((f[0].to_string(), f[1].to_string(), f[2].to_string()));
        }
    }
    all
}

/// The earliest salt stored for (site, day), by (created_at, salt) as the
/// keeper's rule orders them, on every replica that is up.
fn earliest(cluster: &Cluster, db: &str, site: &str, day: &str) -> Option<String> {
    let mut rows: Vec<(u32, String)> = Vec::new();
    for replica in [1, 2] {
        if !cluster.node(1, replica).is_up() {
            continue;
        }
        for line in cluster
            .query(
                1,
                replica,
                &format!("SELECT toUInt32(created_at), salt FROM {db}.salts WHERE site_id = '{site}' AND day = '{day}' FORMAT TSV"),
            )
            .lines()
        {
            let (at, salt) = line.split_once('\t').unwrap();
            rows.push((at.parse().unwrap(), salt.to_string()));
        }
    }
    rows.into_iter().min().map(|(_, salt)| salt)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn salt_of(store: &SaltStore, site: usize, day: &str) -> String {
    let day: NaiveDate = day.parse().unwrap();
    assert!(store.days(site).contains(&day), "no salt for {site} {day}");
    hex(store.get_or_create(site, day).as_bytes())
}

/// Two collectors writing their salts through different replicas of the
/// home shard, copies held back, agree on one salt per site and day: the
/// earliest on either replica. A replica that took a salt and then became
/// unreachable before the other fetched it: the other collector publishes
/// no salt of its own meanwhile (its replica shows the pending insert), and
/// adopts the first collector's once the replica is back. Expired salts are
/// dropped from both replicas and their destruction recorded, with a
/// commitment to every salt stored.
#[test]
fn two_collectors_agree_on_one_salt_per_site_and_day_even_while_a_replica_holding_one_is_down() {
    let _serial = serial();
    let mut cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("salts_{}", std::process::id());
    let (_, settings) = migrate(&cluster, &scratch, &db);
    let clock = tamis::clock::Clock::manual(utc("2026-11-23T15:00:00Z"));
    let keeper = |spread| {
        let store = Arc::new(SaltStore::new());
        let keeper = tamis::sink::salts::SaltKeeper::new(
            collector(&settings, spread),
            settings.sites.clone(),
            store.clone(),
            clock.clone(),
        );
        (keeper, store)
    };
    let ((a, store_a), (b, store_b)) = (keeper(0), keeper(1));
    let rt = runtime();
    let both_replicas = |sql: &str| {
        for replica in [1, 2] {
            cluster.query(1, replica, &sql.replace("DB", &db));
        }
    };

    // --- a race through both replicas, neither copying the other ----------
    both_replicas("SYSTEM STOP FETCHES DB.salts");
    let (ra, rb) = rt.block_on(async { tokio::join!(a.tick(), b.tick()) });
    ra.expect("collector a");
    rb.expect("collector b");
    rt.block_on(a.tick()).expect("collector a again");
    rt.block_on(b.tick()).expect("collector b again");
    for (index, site) in ["example.org", "other.org"].iter().enumerate() {
        let agreed = salt_of(&store_a, index, "2026-11-23");
        assert_eq!(salt_of(&store_b, index, "2026-11-23"), agreed, "{site}");
        assert_eq!(
            earliest(&cluster, &db, site, "2026-11-23").as_deref(),
            Some(agreed.as_str()),
            "{site}: the earliest of both replicas"
        );
    }
    both_replicas("SYSTEM START FETCHES DB.salts");
    cluster.replicas_agree(
        &db,
        "salts",
        &format!(
            "SELECT site_id, day, salt FROM {db}.salts ORDER BY site_id, day, salt FORMAT TSV"
        ),
    );
    assert_eq!(
        cluster.query(2, 1, &format!("SELECT count() FROM {db}.salts FORMAT TSV")),
        "0\n",
        "salts live on the home shard only"
    );

    // --- a salt on a replica that goes down before the other fetched it ----
    // An hour before Toronto's midnight, tomorrow's salt is made.
    clock.set(utc("2026-11-24T04:00:00Z"));
    cluster.query(1, 2, &format!("SYSTEM STOP FETCHES {db}.salts"));
    rt.block_on(a.tick())
        .expect("collector a publishes tomorrow's salts");
    let tomorrow: Vec<String> = (0..2).map(|i| salt_of(&store_a, i, "2026-11-24")).collect();
    let pending = format!(
        "SELECT inserts_in_queue FROM system.replicas WHERE database = '{db}' AND table = 'salts' FORMAT TSV"
    );
    wait_until(
        Duration::from_secs(10),
        "replica r2 knows of the inserts",
        || cluster.query(1, 2, &pending).trim() == "2",
    );
    cluster.stop(1, 1, Stop::Kill);
    rt.block_on(b.tick()).expect("collector b with r1 down");
    assert_eq!(
        cluster.query(
            1,
            2,
            &format!("SELECT count() FROM {db}.salts WHERE day = '2026-11-24' FORMAT TSV")
        ),
        "0\n",
        "collector b published no salt of its own"
    );
    let day: NaiveDate = "2026-11-24".parse().unwrap();
    assert!(!store_b.days(0).contains(&day) && !store_b.days(1).contains(&day));
    cluster.restart(1, 1);
    cluster.query(1, 2, &format!("SYSTEM START FETCHES {db}.salts"));
    cluster.sync_replicas(&db, "salts");
    rt.block_on(b.tick()).expect("collector b with r1 back");
    for (index, salt) in tomorrow.iter().enumerate() {
        assert_eq!(&salt_of(&store_b, index, "2026-11-24"), salt);
    }

    // --- destruction -------------------------------------------------------
    let stored = stored_salts(&cluster, &db);
    let expired: BTreeSet<String> = stored
        .iter()
        .filter(|(_, day, _)| day.as_str() < "2026-11-25")
        .map(|(site, day, salt)| {
            let mut bytes = [0u8; 32];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&salt[2 * i..2 * i + 2], 16).unwrap();
            }
            format!(
                "{site}\t{day}\t{}",
                tamis::privacy::salt::commitment(&bytes)
            )
        })
        .collect();
    assert!(expired.len() >= 4, "{stored:?}");
    clock.set(utc("2026-11-25T12:00:00Z"));
    until_done("collector a destroys expired salts", || {
        rt.block_on(a.tick())
    });
    let left = cluster.replicas_agree(
        &db,
        "salts",
        &format!("SELECT count() FROM {db}.salts WHERE day < '2026-11-25' FORMAT TSV"),
    );
    assert_eq!(left[0], "0\n");
    cluster.sync_replicas(&db, "salt_destructions");
    let recorded: BTreeSet<String> = cluster
        .query(
            2,
            2,
            &format!(
                "SELECT site_id, toString(day), commitment FROM {db}.salt_destructions_all \
                 WHERE place = 'clickhouse' FORMAT TSV"
            ),
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(recorded, expired);
    assert_eq!(
        cluster
            .query(
                2,
                2,
                &format!("SELECT count() FROM {db}.salt_destructions_all WHERE place = 'clickhouse' FORMAT TSV")
            )
            .trim(),
        expired.len().to_string(),
        "one record per salt"
    );
    assert_eq!(
        cluster.query(2, 2, &format!("SELECT count() FROM {db}.salts FORMAT TSV")),
        "0\n"
    );
}

/// Two collectors drawing the installation's rounding secret through
/// different replicas of the home shard, neither replica copying the
/// other, agree on one: the earliest on either replica, which both then
/// read. It lives on the home shard only. With a replica holding the only
/// secret down before the other fetched it, a collector draws none of its
/// own (it could not be sure to agree) and reads the secret once the
/// replica is back.
#[test]
fn two_collectors_agree_on_one_rounding_secret_even_while_a_replica_holding_it_is_down() {
    let _serial = serial();
    let mut cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("roundkey_{}", std::process::id());
    let (_, settings) = migrate(&cluster, &scratch, &db);
    let clock = tamis::clock::Clock::manual(utc("2026-11-23T15:00:00Z"));
    let (a, b) = (collector(&settings, 0), collector(&settings, 1));
    let rt = runtime();
    let both_replicas = |sql: &str| {
        for replica in [1, 2] {
            cluster.query(1, replica, &sql.replace("DB", &db));
        }
    };
    let secret = |nodes: &Nodes| {
        rt.block_on(tamis::sink::rounding::installation_secret(nodes, &clock))
            .expect("read")
            .map(|s| hex(s.as_bytes()))
    };
    let stored = |replica: u32| -> Vec<String> {
        let mut rows: Vec<(String, String)> = cluster
            .query(
                1,
                replica,
                &format!(
                    "SELECT toString(created_at), secret FROM {db}.rounding_secret FORMAT TSV"
                ),
            )
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(c, s)| (c.to_string(), s.to_string()))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, s)| s).collect()
    };

    // --- a race through both replicas, neither copying the other ----------
    both_replicas("SYSTEM STOP FETCHES DB.rounding_secret");
    let (ra, rb) = rt.block_on(async {
        tokio::join!(
            tamis::sink::rounding::installation_secret(&a, &clock),
            tamis::sink::rounding::installation_secret(&b, &clock)
        )
    });
    let ra = ra.expect("collector a").map(|s| hex(s.as_bytes()));
    let rb = rb.expect("collector b").map(|s| hex(s.as_bytes()));
    assert!(ra.is_some(), "collector a has a secret");
    assert_eq!(ra, rb, "both collectors took the same secret");
    let mut everything = stored(1);
    everything.extend(stored(2));
    everything.sort();
    everything.dedup();
    assert!(
        everything.contains(ra.as_ref().unwrap()),
        "the agreed secret is one stored"
    );
    both_replicas("SYSTEM START FETCHES DB.rounding_secret");
    cluster.replicas_agree(
        &db,
        "rounding_secret",
        &format!("SELECT secret FROM {db}.rounding_secret ORDER BY secret FORMAT TSV"),
    );
    assert_eq!(secret(&a), ra, "read again by a");
    assert_eq!(secret(&b), ra, "read again by b");
    assert_eq!(
        cluster.query(
            2,
            1,
            &format!("SELECT count() FROM {db}.rounding_secret FORMAT TSV")
        ),
        "0\n",
        "the rounding secret lives on the home shard only"
    );

    // --- the only secret on a replica that goes down unfetched ------------
    let db2 = format!("roundkey2_{}", std::process::id());
    let (_, settings2) = migrate(&cluster, &scratch, &db2);
    let (a2, b2) = (collector(&settings2, 0), collector(&settings2, 1));
    // b learns where every node is while all answer, as a running
    // collector has.
    rt.block_on(b2.shards()).expect("the cluster's shards");
    cluster.query(1, 2, &format!("SYSTEM STOP FETCHES {db2}.rounding_secret"));
    let drawn = secret(&a2).expect("collector a draws one");
    let pending = format!(
        "SELECT inserts_in_queue FROM system.replicas WHERE database = '{db2}' AND table = 'rounding_secret' FORMAT TSV"
    );
    wait_until(
        Duration::from_secs(10),
        "replica r2 knows of the insert",
        || cluster.query(1, 2, &pending).trim() == "1",
    );
    cluster.stop(1, 1, Stop::Kill);
    assert_eq!(
        secret(&b2),
        None,
        "collector b waits rather than draw its own"
    );
    assert_eq!(
        cluster.query(
            1,
            2,
            &format!("SELECT count() FROM {db2}.rounding_secret FORMAT TSV")
        ),
        "0\n",
        "nothing written meanwhile"
    );
    cluster.restart(1, 1);
    cluster.query(1, 2, &format!("SYSTEM START FETCHES {db2}.rounding_secret"));
    assert_eq!(secret(&b2), Some(drawn), "collector b takes a's secret");
}
