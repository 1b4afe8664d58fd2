//! Growing from one ClickHouse to a cluster: a collector writes to a single
//! server, `tamis migrate --adopt URL` copies that server's data into the
//! cluster's first shard, and the same collector (same durable log), now
//! configured for the cluster, goes on: what it counted before is read
//! through the Distributed tables as it was, what it counts after is added
//! once, and nothing is counted twice.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{config, pageview, send_hit, wait_until, Binary, ClickHouse, Scratch};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const MARK: &str = "tamis:delivered";

fn pageviews(node: &ClickHouse, db: &str, table: &str) -> u64 {
    node.query_in(
        db,
        &format!("SELECT sumMerge(pageviews) FROM {table} WHERE event != '{MARK}' FORMAT TSV"),
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

fn visitors(node: &ClickHouse, db: &str, table: &str) -> String {
    node.query_in(
        db,
        &format!("SELECT uniqIfMerge(visitors) FROM {table} WHERE event != '{MARK}' FORMAT TSV"),
    )
}

fn send(server: &Binary, from: u32, count: u32) {
    for i in from..from + count {
        let ip = format!("198.51.100.{}", 10 + i % 7);
        let r = send_hit(
            server.addr,
            &ip,
            FIREFOX,
            &pageview(&format!("https://example.org/p/{i}")),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
}

#[test]
fn a_single_server_adopted_by_a_cluster_keeps_its_counts_and_its_collector_goes_on() {
    let single = ClickHouse::shared();
    let db = single.create_database("adopt");
    let scratch = Scratch::new();
    let mut collector = Binary::serve(&scratch, &config(single, &db, None, ""));
    send(&collector, 0, 30);
    wait_until(
        Duration::from_secs(30),
        "30 pageviews on the single server",
        || pageviews(single, &db, "traffic_hourly") == 30,
    );
    let visitors_before = visitors(single, &db, "traffic_hourly");
    // Killed, as a machine can be, with its log folder and its note of the
    // last batch (written without a shard) left as they are.
    collector.kill9();

    let cluster = Cluster::start();
    let single_url = single.url.clone();
    let first_node = cluster.node(1, 1).url.clone();
    collector.edit_config(|text| {
        cluster.with_cluster(&text.replace(
            &format!("url = \"{single_url}\""),
            &format!("url = \"{first_node}\""),
        ))
    });
    let config_path = scratch.path("tamis.toml");
    let adopt = |what: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamis"))
            .args(["migrate", "--adopt", &single.url, "--config"])
            .arg(&config_path)
            .output()
            .expect("run tamis migrate --adopt");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("--- {what}:\n{text}");
        (out.status.success(), text)
    };
    let (ok, out) = adopt("adopt");
    assert!(ok, "{out}");
    assert!(out.contains("rows of `traffic_hourly`"), "{out}");
    assert!(out.contains("rows of `batch_receipts`"), "{out}");
    // Everything in the first shard, read through the Distributed table as
    // it was on the single server.
    let reader = cluster.node(2, 2);
    assert_eq!(pageviews(reader, &db, "traffic_hourly_all"), 30);
    assert_eq!(visitors(reader, &db, "traffic_hourly_all"), visitors_before);
    assert_eq!(pageviews(cluster.node(2, 1), &db, "traffic_hourly"), 0);

    // A second run would count everything twice: refused, nothing copied.
    let (ok, out) = adopt("adopt again");
    assert!(!ok && out.contains("already holds"), "{out}");
    assert_eq!(pageviews(reader, &db, "traffic_hourly_all"), 30);

    // The collector, now on the cluster, goes on from its log.
    collector.restart();
    send(&collector, 30, 20);
    wait_until(
        Duration::from_secs(60),
        "50 pageviews in the cluster",
        || pageviews(reader, &db, "traffic_hourly_all") == 50,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pageviews(reader, &db, "traffic_hourly_all"),
        50,
        "counted twice"
    );
    let per_shard = cluster.replicas_agree(
        &db,
        "traffic_hourly",
        &format!(
            "SELECT sumMerge(pageviews) FROM {db}.traffic_hourly WHERE event != '{MARK}' FORMAT TSV"
        ),
    );
    eprintln!("pageviews per shard after the move: {per_shard:?}");
    let log = collector.stop();
    assert!(!log.contains(" ERROR "), "{log}");
}
