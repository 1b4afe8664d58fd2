//! Delivery on a real ClickHouse cluster (ZooKeeper, 2 shards × 2 replicas
//! of clickhouse-server 18.16, started by `common::cluster`), with two
//! tamis collectors, each with its own durable log and its own visitors
//! (as behind a load balancer with source-IP affinity): every 202 counted
//! exactly once, read through the Distributed table, and both replicas of
//! each shard agreeing afterwards, through the failures the cluster is for.
//!
//! What ClickHouse promises and these tests lean on, from its documentation
//! of replication (https://clickhouse.com/docs/engines/table-engines/mergetree-family/replication):
//! an insert is acknowledged by the replica that took it, and the others
//! fetch its part afterwards; the hashes of the last inserted blocks are
//! kept in ZooKeeper and an identical block inserted again (on any replica)
//! is dropped — "the INSERT is idempotent" (`replicated_deduplication_window`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::clickhouse::Stop;
use common::cluster::{Cluster, SHARDS};
use common::load::{Client, Load, Report, Spec};
use common::rig::{config_text, scrape, Knobs, AGENTS};
use common::{Binary, Scratch};

const MARK: &str = "tamis:delivered";

/// One collector: its site (each sends its own site's pages, so that the
/// counts of the two never mix) and its visitors' addresses.
struct Collector {
    site: &'static str,
    ips: [&'static str; 2],
    _scratch: Scratch,
    tamis: Binary,
}

struct ClusterRig {
    name: &'static str,
    cluster: Cluster,
    db: String,
    collectors: Vec<Collector>,
}

impl ClusterRig {
    fn start(name: &'static str, collectors: usize) -> ClusterRig {
        let cluster = Cluster::start();
        let db = format!("{name}_{}", std::process::id());
        let knobs = Knobs {
            flush_interval_ms: 100,
            clickhouse_timeout_ms: 5_000,
            ..Knobs::default()
        };
        let sites = [
            ("example.org", ["198.51.100.77", "203.0.113.219"]),
            ("other.org", ["192.0.2.14", "198.51.100.201"]),
        ];
        let collectors = sites
            .into_iter()
            .take(collectors)
            .map(|(site, ips)| {
                let scratch = Scratch::new();
                let text = cluster.with_cluster(&config_text(
                    &cluster.node(1, 1).url,
                    &db,
                    &scratch.path("log"),
                    &knobs,
                ));
                let tamis = Binary::serve(&scratch, &text);
                Collector {
                    site,
                    ips,
                    _scratch: scratch,
                    tamis,
                }
            })
            .collect();
        ClusterRig {
            name,
            cluster,
            db,
            collectors,
        }
    }

    /// A load on each collector, its own visitors and site's pages.
    fn load(&self, duration: Duration) -> Vec<Load> {
        self.collectors
            .iter()
            .map(|c| {
                Load::start(
                    c.tamis.addr,
                    Spec {
                        rate: 150,
                        connections: 2,
                        duration,
                        max_requests: 150 * duration.as_secs().max(1) * 2,
                        clients: c
                            .ips
                            .iter()
                            .flat_map(|ip| {
                                AGENTS.iter().map(move |ua| Client {
                                    ip: ip.to_string(),
                                    user_agent: ua.to_string(),
                                })
                            })
                            .collect(),
                        hosts: vec![c.site.to_string()],
                    },
                )
            })
            .collect()
    }

    /// A node that answers, to read through the Distributed tables.
    fn reader(&self) -> &common::ClickHouse {
        self.cluster
            .nodes()
            .map(|(_, _, n)| n)
            .find(|n| n.is_up() && n.try_query("SELECT 1").is_ok())
            .expect("a node up")
    }

    /// Pageviews per (site, page) through `traffic_hourly_all`.
    fn pageviews(&self) -> HashMap<(String, String), u64> {
        let text = self.reader().query_in(
            &self.db,
            &format!("SELECT site_id, page, sumMerge(pageviews) FROM traffic_hourly_all WHERE event != '{MARK}' GROUP BY site_id, page FORMAT TabSeparated"),
        );
        text.lines()
            .filter_map(|l| {
                let mut cols = l.split('\t');
                Some((
                    (cols.next()?.to_string(), cols.next()?.to_string()),
                    cols.next()?.trim().parse().ok()?,
                ))
            })
            .collect()
    }

    /// Waits until every collector's backlog is empty and the total stays
    /// the same over two readings.
    fn drained(&self) -> HashMap<(String, String), u64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut previous = None;
        loop {
            let empty = self.collectors.iter().all(|c| {
                scrape(c.tamis.admin).and_then(|m| m.get("tamis_log_backlog_hits").copied())
                    == Some(0.0)
            });
            let counts = self.pageviews();
            let total: u64 = counts.values().sum();
            if empty && previous == Some(total) {
                return counts;
            }
            previous = empty.then_some(total);
            assert!(
                Instant::now() < deadline,
                "{}: not drained after 120 s ({total} pageviews)\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn logs(&self) -> String {
        self.collectors
            .iter()
            .map(|c| {
                let text = c.tamis.log_text();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                format!("--- {} ---\n{}", c.site, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every 202 of every collector counted once; both replicas of each
    /// shard agree on every count; and, with `spread`, each shard holds
    /// some of each site (batches are spread over the shards, even one
    /// site's). Returns a line for the test's output.
    fn verify(&self, reports: &[Report], spread: bool) -> String {
        let counts = self.drained();
        let mut lines = Vec::new();
        for (collector, report) in self.collectors.iter().zip(reports) {
            let mine: HashMap<String, u64> = counts
                .iter()
                .filter(|((site, _), _)| site == collector.site)
                .map(|((_, page), n)| (page.clone(), *n))
                .collect();
            let verdict = report.check(&mine, &[]);
            assert!(
                verdict.problems.is_empty() && verdict.accepted > 0,
                "{}: {}: {}\n{}\n{}",
                self.name,
                collector.site,
                verdict.summary(),
                verdict.problems.join("\n"),
                self.logs()
            );
            lines.push(format!("{}: {}", collector.site, verdict.summary()));
        }
        let per_shard = self.cluster.replicas_agree(
            &self.db,
            "traffic_hourly",
            &format!(
                "SELECT site_id, page, sumMerge(pageviews), uniqIfMerge(visitors) FROM {}.traffic_hourly WHERE event != '{MARK}' GROUP BY site_id, page ORDER BY site_id, page FORMAT TSV",
                self.db
            ),
        );
        self.cluster.replicas_agree(
            &self.db,
            "batch_receipts",
            &format!(
                "SELECT journal_id, end_seq, hits FROM {}.batch_receipts ORDER BY journal_id, end_seq FORMAT TSV",
                self.db
            ),
        );
        for collector in self.collectors.iter().filter(|_| spread) {
            for (shard, answer) in per_shard.iter().enumerate() {
                assert!(
                    answer.lines().any(|l| l.starts_with(collector.site)),
                    "{}: shard {} holds nothing of {}: batches are not spread over the shards",
                    self.name,
                    shard + 1,
                    collector.site
                );
            }
        }
        let said = |what: &str| -> usize {
            self.collectors
                .iter()
                .map(|c| c.tamis.log_text().matches(what).count())
                .sum()
        };
        lines.push(format!(
            "{} inserts sent again byte for byte after an unclear failure, {} waits for a replica that may hold a batch",
            said("sending the same block again"),
            said("cannot be ruled out")
        ));
        lines.join("; ")
    }

    fn stop(self) {
        for c in self.collectors {
            c.tamis.stop();
        }
    }
}

fn wait_load(loads: Vec<Load>) -> Vec<Report> {
    loads.into_iter().map(Load::wait).collect()
}

/// Under load from two collectors: one replica killed (SIGKILL) while
/// inserts go to it, then started again; one collector killed and
/// restarted; ZooKeeper restarted. Every 202 is counted once, the replicas
/// agree, and both shards hold part of each site.
#[test]
fn a_replica_killed_a_collector_killed_and_zookeeper_restarted_under_load_count_every_hit_once() {
    let mut rig = ClusterRig::start("cluster_faults", 2);
    let loads = rig.load(Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(4));

    // A replica of each shard killed in turn while inserts go on.
    for shard in 1..=SHARDS {
        rig.cluster.stop(shard, 1, Stop::Kill);
        std::thread::sleep(Duration::from_secs(4));
        rig.cluster.restart(shard, 1);
        std::thread::sleep(Duration::from_secs(2));
    }
    // A collector killed and restarted: its log replays what it accepted.
    rig.collectors[0].tamis.kill9();
    std::thread::sleep(Duration::from_millis(500));
    rig.collectors[0].tamis.restart();
    std::thread::sleep(Duration::from_secs(3));
    // ZooKeeper stopped and started: replicated inserts fail meanwhile.
    rig.cluster.zookeeper.stop(Stop::Kill);
    std::thread::sleep(Duration::from_secs(4));
    rig.cluster.restart_zookeeper();

    let reports = wait_load(loads);
    let summary = rig.verify(&reports, true);
    eprintln!("[{}] {summary}", rig.name);
    rig.stop();
}

/// A whole shard unreachable for 30 s (both replicas killed): the
/// collectors go on answering 202, the hits wait in their logs, and once
/// the shard is back every one is counted once.
#[test]
fn a_whole_shard_out_for_30_seconds_delays_hits_and_loses_none() {
    let mut rig = ClusterRig::start("cluster_shard_out", 2);
    let loads = rig.load(Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(3));
    rig.cluster.stop_many(&[(2, 1), (2, 2)], Stop::Kill);
    let accepted_before: u64 = loads.iter().map(|l| l.live.accepted()).sum();
    std::thread::sleep(Duration::from_secs(30));
    let accepted_during = loads.iter().map(|l| l.live.accepted()).sum::<u64>() - accepted_before;
    let backlog: f64 = rig
        .collectors
        .iter()
        .filter_map(|c| {
            scrape(c.tamis.admin)?
                .get("tamis_log_backlog_hits")
                .copied()
        })
        .sum();
    rig.cluster.restart(2, 1);
    rig.cluster.restart(2, 2);
    assert!(
        accepted_during > 1_000,
        "only {accepted_during} hits answered 202 while shard 2 was out"
    );
    assert!(
        backlog > 0.0,
        "no hit waited in the logs while shard 2 was out"
    );
    let reports = wait_load(loads);
    let summary = rig.verify(&reports, true);
    eprintln!(
        "[{}] {accepted_during} hits answered 202 while shard 2 was out, {backlog} waiting in the logs at its end; {summary}",
        rig.name
    );
    rig.stop();
}

/// The trap of deduplication: an insert acknowledged by one replica, tamis
/// killed before the batch's receipt, that replica killed before its twin
/// fetched the part. At restart the batch's rows are not on the twin; a
/// batch formed again and sent there would count them twice once the
/// replica is back (and the window of deduplication may have passed).
/// tamis must resolve the batch where it may be before sending anything of
/// it: it waits, and once the replica is back it finds the rows in and
/// counts nothing twice.
#[test]
fn a_batch_acknowledged_by_a_replica_that_died_before_its_twin_fetched_it_is_not_sent_again() {
    let mut rig = ClusterRig::start("cluster_trap", 1);
    let db = rig.db.clone();
    // No replica fetches from another: an acknowledged part stays on the
    // replica that took it. And no receipt goes in (a test-only view on
    // every node refuses receipts): the batch stays in flight.
    for (_, _, node) in rig.cluster.nodes() {
        node.query(&format!("SYSTEM STOP FETCHES {db}.traffic_hourly"));
        node.query(&format!("SYSTEM STOP FETCHES {db}.batch_receipts"));
        node.refuse_rows(&db, "batch_in", "kind = 'receipt'");
    }
    let loads = rig.load(Duration::from_secs(2));
    let reports = wait_load(loads);
    let accepted = reports[0].count(|o| *o == common::load::Outcome::Accepted);
    assert!(accepted > 100, "{accepted} hits accepted");
    // The rows are in on exactly one replica (of the shard the first batch
    // went to), the writer stuck on the receipt.
    let local = |node: &common::ClickHouse| -> u64 {
        node.query_in(
            &db,
            &format!(
                "SELECT sumMerge(pageviews) FROM traffic_hourly WHERE event != '{MARK}' FORMAT TSV"
            ),
        )
        .trim()
        .parse()
        .unwrap_or(0)
    };
    let mut holder = None;
    common::wait_until(Duration::from_secs(30), "rows on one replica", || {
        holder = rig
            .cluster
            .nodes()
            .find(|(_, _, n)| local(n) > 0)
            .map(|(s, r, _)| (s, r));
        holder.is_some()
    });
    let (shard, replica) = holder.unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let held = local(rig.cluster.node(shard, replica));
    rig.collectors[0].tamis.kill9();
    for (_, _, node) in rig.cluster.nodes() {
        node.stop_refusing(&db);
    }
    rig.cluster.stop(shard, replica, Stop::Kill);
    let twin = 3 - replica;

    // tamis restarts: the batch in flight cannot be resolved (its replica
    // is gone, its twin lacks parts it knows of): nothing is sent again.
    rig.collectors[0].tamis.restart();
    std::thread::sleep(Duration::from_secs(6));
    let on_twin = local(rig.cluster.node(shard, twin));
    let log = rig.collectors[0].tamis.log_text();
    assert_eq!(
        on_twin, 0,
        "the batch was sent again to the twin while the replica holding it was down\n{log}"
    );
    assert!(
        log.contains("what it acknowledged cannot be ruled out"),
        "tamis did not say why it waits\n{log}"
    );

    // The replica returns, fetches resume: the batch is found in, its
    // receipt written, and every 202 counted once.
    rig.cluster.restart(shard, replica);
    for (_, _, node) in rig.cluster.nodes() {
        node.query(&format!("SYSTEM START FETCHES {db}.traffic_hourly"));
        node.query(&format!("SYSTEM START FETCHES {db}.batch_receipts"));
    }
    // Two seconds of hits make few batches, all replayed after the wait:
    // no spread to expect.
    let summary = rig.verify(&reports, false);
    eprintln!(
        "[{}] {held} pageviews held by shard {shard} replica {replica} alone when it was killed; {summary}",
        rig.name
    );
    rig.stop();
}
