//! tamis's schema on a real ClickHouse cluster: ZooKeeper and 2 shards × 2
//! replicas of clickhouse-server, started by `common::cluster`.
//!
//! What ClickHouse promises and these tests lean on, from its documentation
//! of replication (https://clickhouse.com/docs/engines/table-engines/mergetree-family/replication):
//! `CREATE TABLE` is not replicated, so every node makes its own tables; a
//! `Replicated*MergeTree` whose ZooKeeper path and replica name come from
//! the `{shard}` and `{replica}` macros joins its shard's other replicas,
//! which then copy each other's inserts; and of the Distributed engine
//! (https://clickhouse.com/docs/engines/table-engines/special/distributed):
//! with `internal_replication`, a `Distributed` table reads one replica of
//! each shard.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::clickhouse::Stop;
use common::cluster::{Cluster, REPLICAS, SHARDS};
use common::{pageview, send_hit, wait_until, Binary, Scratch};

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

/// Each table of `db` on a node, with its whole engine (ZooKeeper path and
/// replica name as written, before the macros are filled in), and its
/// columns: `db` itself is written `DB`, to compare two databases.
fn schema_of(node: &common::ClickHouse, db: &str) -> String {
    let tables = node.query(&format!(
        "SELECT name, engine_full FROM system.tables WHERE database = '{db}' ORDER BY name FORMAT TSV"
    ));
    let columns = node.query(&format!(
        "SELECT table, name, type FROM system.columns WHERE database = '{db}' ORDER BY table, name FORMAT TSV"
    ));
    format!("{tables}{columns}").replace(db, "DB")
}

/// The versions a node recorded in its own `schema_migrations`.
fn recorded(node: &common::ClickHouse, db: &str) -> Vec<u32> {
    node.query(&format!(
        "SELECT version FROM {db}.schema_migrations ORDER BY version FORMAT TSV"
    ))
    .lines()
    .map(|l| l.parse().unwrap())
    .collect()
}

fn versions() -> Vec<u32> {
    tamis::sink::schema::migrations()
        .iter()
        .map(|m| m.version)
        .collect()
}

/// One pageview of example.org into a node's `batch_in`, as the writer
/// inserts it: the node's materialized view folds it into its
/// `traffic_hourly` replica.
fn pageviews(db: &str, n: u32) -> String {
    format!(
        "INSERT INTO {db}.batch_in (kind, site_id, hour, event, page, visitor, pageviews) \
         SELECT 'traffic2', 'example.org', toDateTime('2026-12-01 10:00:00'), 'pageview', '/', number + 1, 1 \
         FROM system.numbers LIMIT {n}"
    )
}

const PAGEVIEWS: &str = "SELECT sumMerge(pageviews) FROM {table} FORMAT TSV";

fn count_in(cluster: &Cluster, shard: u32, replica: u32, table: &str) -> String {
    cluster
        .query(shard, replica, &PAGEVIEWS.replace("{table}", table))
        .trim()
        .to_string()
}

/// `tamis migrate` with `cluster` makes the schema on all four nodes —
/// replicated tables, a Distributed table over each, each node's record —
/// its rerun is a no-op, `--print` shows the same DDL, and a node down
/// during a migration fails it naming that node; the rerun after the node
/// is back completes it there.
#[test]
fn migrate_makes_a_replicated_schema_on_every_node_and_resumes_after_a_node_was_down() {
    let mut cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("cluster_{}", std::process::id());
    let config_path = scratch.path("tamis.toml");
    std::fs::write(&config_path, common::cluster_config(&cluster, &db)).unwrap();

    // --- every node gets the schema, each recording it --------------------
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(ok, "{out}{err}");
    for url in cluster.urls() {
        assert!(
            out.contains(&format!(
                "applied migrations {:?} to `{db}` on {url}",
                versions()
            )),
            "{out}"
        );
    }
    let data_tables: Vec<&str> = [
        "audit_log",
        "batch_receipts",
        "dropped_hourly",
        "funnel_hourly",
        "imported_daily",
        "imported_days",
        "props_hourly",
        "retention_log",
        "rollup_daily",
        "rollup_days",
        "rollup_goal_days",
        "rounding_secret",
        "salt_destructions",
        "salts",
        "shared_links",
        "traffic_hourly",
    ]
    .to_vec();
    let reference = schema_of(cluster.node(1, 1), &db);
    for (shard, replica, node) in cluster.nodes() {
        assert_eq!(recorded(node, &db), versions(), "node {}", node.url);
        assert_eq!(
            schema_of(node, &db),
            reference,
            "node {} differs from shard 1 replica 1",
            node.url
        );
        // Every table that holds data is replicated, at the path of this
        // node's shard, under this node's replica name.
        let replicas = node.query(&format!(
            "SELECT table, zookeeper_path, replica_name FROM system.replicas \
             WHERE database = '{db}' ORDER BY table FORMAT TSV"
        ));
        let expected: String = data_tables
            .iter()
            .map(|t| format!("{t}\t/clickhouse/tables/{shard}/{db}.{t}\tr{replica}\n"))
            .collect();
        assert_eq!(replicas, expected, "node {}", node.url);
        let engines = node.query(&format!(
            "SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name FORMAT TSV"
        ));
        for t in &data_tables {
            assert!(
                engines.contains(&format!("\n{t}_all\tDistributed\n")),
                "{t}_all on {}:\n{engines}",
                node.url
            );
        }
        // Inputs, views and the migrations record are each node's own.
        for own in [
            "batch_in\tNull",
            "batch_traffic2_mv\tMaterializedView",
            "schema_migrations\tMergeTree",
        ] {
            assert!(engines.contains(own), "{own} on {}:\n{engines}", node.url);
        }
    }

    // --- a row inserted on replica 1 of shard 1 -----------------------------
    cluster.query(1, 1, &pageviews(&db, 3));
    let traffic = format!("{db}.traffic_hourly");
    let per_shard = cluster.replicas_agree(
        &db,
        "traffic_hourly",
        &PAGEVIEWS.replace("{table}", &traffic),
    );
    assert_eq!(
        per_shard,
        ["3\n", "0\n"],
        "reaches replica 2 of shard 1 only"
    );
    cluster.query(2, 2, &pageviews(&db, 4));
    let per_shard = cluster.replicas_agree(
        &db,
        "traffic_hourly",
        &PAGEVIEWS.replace("{table}", &traffic),
    );
    assert_eq!(per_shard, ["3\n", "4\n"]);
    // The Distributed table reads both shards, from any node.
    let all = format!("{db}.traffic_hourly_all");
    for (_, _, node) in cluster.nodes() {
        assert_eq!(
            node.query(&PAGEVIEWS.replace("{table}", &all)).trim(),
            "7",
            "{}",
            node.url
        );
    }

    // --- a rerun changes nothing --------------------------------------------
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(ok, "{out}{err}");
    for url in cluster.urls() {
        assert!(
            out.contains(&format!("schema of `{db}` is up to date on {url}")),
            "{out}"
        );
    }
    assert!(!out.contains("applied"), "{out}");
    for (_, _, node) in cluster.nodes() {
        assert_eq!(schema_of(node, &db), reference);
        assert_eq!(
            recorded(node, &db),
            versions(),
            "recorded once: {}",
            node.url
        );
    }
    assert_eq!(count_in(&cluster, 1, 2, &all), "7");

    // --- `--print` is the same DDL, run on every node ------------------------
    let (ok, printed, err) = run_tamis(&["migrate", "--print"], &config_path);
    assert!(ok, "{err}");
    assert!(
        printed.starts_with(&format!(
            "-- On every node of cluster `tamis` ({}), each node's macros",
            cluster.urls().join(", ")
        )),
        "{printed}"
    );
    let copy = format!("{db}_printed");
    for (_, _, node) in cluster.nodes() {
        for statement in printed.split(";\n").map(str::trim).filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
        }) {
            node.query(&statement.replace(&db, &copy));
        }
    }
    for (_, _, node) in cluster.nodes() {
        assert_eq!(schema_of(node, &copy), reference, "{}", node.url);
    }

    // --- a node down during a migration --------------------------------------
    let fresh = format!("{db}_fresh");
    std::fs::write(&config_path, common::cluster_config(&cluster, &fresh)).unwrap();
    let down = cluster.node(2, 2).url.clone();
    cluster.stop(2, 2, Stop::Kill);
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(!ok, "migrate succeeded with a node down:\n{out}{err}");
    assert!(
        err.contains(&format!("ClickHouse at {down}")),
        "the error names the node that was down:\n{err}"
    );
    // The others were migrated all the same.
    for url in cluster.urls().iter().filter(|u| **u != down) {
        assert!(
            out.contains(&format!(
                "applied migrations {:?} to `{fresh}` on {url}",
                versions()
            )),
            "{out}"
        );
    }
    cluster.restart(2, 2);
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "applied migrations {:?} to `{fresh}` on {down}",
            versions()
        )),
        "{out}"
    );
    assert_eq!(
        out.matches(&format!("schema of `{fresh}` is up to date on "))
            .count(),
        (SHARDS * REPLICAS - 1) as usize,
        "{out}"
    );
    let fresh_reference = schema_of(cluster.node(1, 1), &fresh);
    for (_, _, node) in cluster.nodes() {
        assert_eq!(schema_of(node, &fresh), fresh_reference, "{}", node.url);
        assert_eq!(recorded(node, &fresh), versions(), "{}", node.url);
    }
    // The node that came back is a replica of its shard: it gets what its
    // other replica takes.
    cluster.query(2, 1, &pageviews(&fresh, 5));
    let per_shard = cluster.replicas_agree(
        &fresh,
        "traffic_hourly",
        &PAGEVIEWS.replace("{table}", &format!("{fresh}.traffic_hourly")),
    );
    assert_eq!(per_shard, ["0\n", "5\n"]);
    // And the first database's replica on it came back with its rows.
    assert_eq!(count_in(&cluster, 2, 2, &traffic), "4");

    // --- `tamis check` describes every node ----------------------------------
    let (ok, out, err) = run_tamis(&["check"], &config_path);
    assert!(ok, "{out}{err}");
    let mut described = BTreeSet::new();
    for (shard, replica, node) in cluster.nodes() {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("node {}:", node.url)))
            .unwrap_or_else(|| panic!("no line for {}:\n{out}", node.url));
        assert!(line.contains("reachable, version "), "{line}");
        assert!(
            line.contains(&format!(
                "shard {shard}, replica r{replica}, `tamis` has {} replica(s)",
                SHARDS * REPLICAS
            )),
            "{line}"
        );
        described.insert(node.url.clone());
    }
    assert_eq!(described.len(), cluster.urls().len());
}

/// With ZooKeeper down no node can make a replicated table: `tamis
/// migrate` fails naming every node, and its rerun once ZooKeeper is back
/// makes the whole schema, whose replicas then replicate.
#[test]
fn migrate_with_zookeeper_down_fails_on_every_node_and_the_rerun_completes() {
    let mut cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("zk_down_{}", std::process::id());
    let config_path = scratch.path("tamis.toml");
    std::fs::write(&config_path, common::cluster_config(&cluster, &db)).unwrap();

    cluster.zookeeper.stop(Stop::Kill);
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(!ok, "migrate succeeded without ZooKeeper:\n{out}{err}");
    for url in cluster.urls() {
        assert!(
            err.contains(&format!("ClickHouse at {url}")),
            "{url}:\n{err}"
        );
    }
    assert!(!out.contains("applied"), "{out}");

    cluster.restart_zookeeper();
    let (ok, out, err) = run_tamis(&["migrate"], &config_path);
    assert!(ok, "{out}{err}");
    for url in cluster.urls() {
        assert!(
            out.contains(&format!(
                "applied migrations {:?} to `{db}` on {url}",
                versions()
            )),
            "{out}"
        );
    }
    let reference = schema_of(cluster.node(1, 1), &db);
    for (_, _, node) in cluster.nodes() {
        assert_eq!(schema_of(node, &db), reference, "{}", node.url);
        assert_eq!(recorded(node, &db), versions(), "{}", node.url);
    }
    cluster.query(1, 2, &pageviews(&db, 2));
    let per_shard = cluster.replicas_agree(
        &db,
        "traffic_hourly",
        &PAGEVIEWS.replace("{table}", &format!("{db}.traffic_hourly")),
    );
    assert_eq!(per_shard, ["2\n", "0\n"]);
}

/// `tamis serve` with `cluster` makes the schema on every node at start-up,
/// as `tamis migrate` does, and a hit it accepts is counted once, read
/// through the Distributed table (it writes through `url` for now: one
/// node, whose shard's other replica copies it).
#[test]
fn serve_makes_the_schema_on_every_node_at_start_up_and_a_hit_is_counted_once() {
    let cluster = Cluster::start();
    let scratch = Scratch::new();
    let db = format!("serve_{}", std::process::id());
    let server = Binary::serve(&scratch, &common::cluster_config(&cluster, &db));
    wait_until(Duration::from_secs(60), "every node migrated", || {
        cluster.nodes().all(|(_, _, node)| {
            node.try_query(&format!(
                "SELECT version FROM {db}.schema_migrations ORDER BY version FORMAT TSV"
            ))
            .is_ok_and(|v| v.lines().count() == versions().len())
        })
    });
    let reference = schema_of(cluster.node(1, 1), &db);
    for (_, _, node) in cluster.nodes() {
        assert_eq!(schema_of(node, &db), reference, "{}", node.url);
    }
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let r = send_hit(
        server.addr,
        "203.0.113.9",
        ua,
        &pageview("https://example.org/"),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let all = format!("{db}.traffic_hourly_all");
    wait_until(Duration::from_secs(30), "the hit in ClickHouse", || {
        count_in(&cluster, 2, 2, &all) == "1"
    });
    let traffic = PAGEVIEWS.replace("{table}", &format!("{db}.traffic_hourly"));
    let per_shard: u64 = cluster
        .replicas_agree(&db, "traffic_hourly", &traffic)
        .iter()
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_shard, 1, "counted once over the shards");
    let log = server.stop();
    assert!(!log.contains(" ERROR "), "{log}");
}
