//! Query benchmark: how fast the stats API answers the dashboard's standard
//! set of queries over a year of aggregates for a busy site.
//!
//! ```text
//! cargo bench --bench query                                  # 12 months, 2,500 rows/hour, 20 runs per query
//! cargo bench --bench query -- --runs 10 --days 120         # a quicker, smaller run
//! cargo bench --bench query -- --rows-per-hour 5000         # twice the dimension combinations per hour
//! cargo bench --bench query -- --explore                    # and time experimental rollup tables
//! cargo bench --bench query -- --cluster                    # on 2 shards × 2 replicas, Distributed tables
//! cargo bench --bench query -- --cluster --days 40 --runs 5 --no-diagnose   # a quick look at the cluster
//! ```
//!
//! Everything runs on this machine, on loopback only:
//!
//! - **ClickHouse**: a private server (`tests/common/clickhouse.rs`), one
//!   database `bench_query` migrated by the release binary
//!   (`tamis migrate`), so the schema is the real one.
//! - **seed**: one `INSERT INTO traffic_in SELECT … FROM numbers(N)` per
//!   calendar month (UTC, so one partition each) for `example.org`, from the
//!   local midnight a year ago (America/Toronto) up to the current hour. The
//!   materialized view aggregates it into `traffic_hourly`, as it does what
//!   tamis writes. Each hour gets `--rows-per-hour` rows, each one distinct
//!   combination of dimensions (collisions are rare: what lands in
//!   `traffic_hourly` is about that many rows per hour) carrying its share of
//!   `--pageviews-per-day` (1M: ~42k pageviews an hour). Values are drawn from
//!   deterministic hashes of the row number with realistic skew: 3,000 pages
//!   (Zipf, `/` ≈ 9 %), entry pages (40 % the page itself), 301 sources
//!   (Direct / None 35 %, Google 30 %, a Zipf tail of referrer hosts), the 13
//!   Canadian provinces and territories (QC 60 %, ON 20 %, … NU 0.2 %), 10
//!   browsers with 3 major versions each, 6 operating systems, 3 devices
//!   (by OS), fr/en/es, three consent states; visits ≈ pageviews / 2.5,
//!   bounce rate ≈ 45 %, ~150 s per visit. Each row's visitor key comes
//!   from a pool as large as a day's rows, renewed each local day as
//!   tamis's daily salts renew keys (keys repeat within a day: ~38k
//!   visitors a day), and the source, region, browser, OS, device, language
//!   and consent follow from the key, so a visitor keeps them all day.
//!   Real traffic of this volume has more visitors and more combinations
//!   per hour than 2,500 (raise `--rows-per-hour` to see reading time grow
//!   with them). Then it waits for background merges to finish (production
//!   never runs `OPTIMIZE … FINAL`, and neither does this bench) and
//!   reports the table's parts, rows and bytes.
//! - **rollups**: tamis's own rollup job (`tamis::sink::rollup`, one pass
//!   over every closed day since the first) then writes the daily rollups a
//!   collector running all year would have; the time it takes and the
//!   tables' size are printed, and it waits for merges again. Once tamis is up, the bench waits until
//!   ClickHouse has been idle for 3 s (tamis checks every rolled day at
//!   start-up) before timing anything.
//! - **tamis**: the release binary, `tamis serve`, as a child process.
//! - **queries**: the dashboard's standard set through the real HTTP API
//!   (`POST /api/v2/query`, Bearer token), one request at a time on a fresh
//!   connection, for `"30d"` and `"12mo"`: top-line totals with comparison
//!   (two requests, the range and the period of the same length before it,
//!   timed together), the time series (`time:day` for 30 days, `time:month`
//!   for 12 months, as Plausible's dashboard does), top pages, sources,
//!   regions, browsers and devices (`limit` 10). Each query is sent twice
//!   to warm up, then `--runs` times (fewer if `--budget` seconds run out
//!   first, never fewer than 5); it prints p50/p95/max per query and
//!   whether the issue's targets are met (p95 ≤ 300 ms for 30 days, ≤ 1 s
//!   for 12 months), without failing the run over them.
//!   The CPU other processes used meanwhile is shown per query (`others`,
//!   from `/proc`): above 5 % of the machine, the numbers are flagged as
//!   disturbed.
//! - **checks**: the answers must make sense (totals equal the seeded
//!   pageviews of the range, 10 top pages led by `/`, the 13 regions,
//!   browser and device shares adding up to 100 % within 3 %, as `uniq` is
//!   exact only up to 65,536 visitors, …); the run fails if they do not, or
//!   if any request is not answered 200.
//! - **where the time goes**: unless `--no-diagnose`, the exact statements
//!   tamis runs for each request (built with `tamis::query::sql` —
//!   `rolled` where tamis reads rollups, `build` elsewhere —, the values
//!   bound as the `clickhouse` crate binds them) are run again straight on
//!   ClickHouse's HTTP interface with `FORMAT JSON`, whose `statistics`
//!   give the server's own elapsed time, rows and bytes read: the
//!   difference to the API's time is tamis and HTTP.
//! - **exploration**: with `--explore`, experimental tables are created in
//!   the bench database (see [`explore`]): narrow rollups of one dimension
//!   each by hour, by local day and by local month, `uniqHLL12` sketches
//!   instead of `uniq` sets, plain sum columns, and finished days with
//!   visitors as plain per-day numbers. The requests' statements, shaped
//!   as tamis shapes them, are timed on those too, and the 12-month totals
//!   statement is timed part by part (scan, sums, visitor sets). Seeding
//!   takes about twice as long, the whole run about 15 minutes.
//!
//! With `--cluster` the same runs on a real ClickHouse cluster of 2
//! shards × 2 replicas and a ZooKeeper (`tests/common/cluster.rs`), all on
//! this machine: `tamis migrate` with a config naming the cluster makes the
//! schema on every node (`Replicated*MergeTree` local tables, `<table>_all`
//! `Distributed` tables over them); each month's insert is split over the
//! shards (rows `number % 2`, into each shard's local `traffic_in` on its
//! first replica, so the totals are the single server's and every hour has
//! rows on both shards, as tamis's writer spreads batches); the bench waits
//! until every replica has fetched them (`SYSTEM SYNC REPLICA`) and for
//! merges and replication queues on every node; tamis's rollup job reads
//! `traffic_hourly_all` and writes the rollups to the home shard; `tamis
//! serve` reads through the `Distributed` tables, and so do the checks and
//! the statements timed by the diagnosis. Parts, rows and bytes are summed
//! over one replica of each shard; the CPU of every ClickHouse node and of
//! ZooKeeper counts as ours. `--explore` is not available there.
//!
//! The 12-month comparison period lies mostly before the seeded days
//! (seed more with `--days 790` to fill it); the 30-day one is full.

#[path = "../tests/common/clickhouse.rs"]
mod clickhouse;
#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use clickhouse::ClickHouse;
use tamis::query::request::{self, SiteView};
use tamis::query::sql::{self, Scope};
use tamis::sink::nodes::Tables;

const USAGE: &str = "\
usage: cargo bench --bench query [-- OPTIONS]
  --runs N               timed runs per query (default 20), after 2 warm-up runs
  --budget SECONDS       stop a query's timed runs after this long, if at least 5 ran (default 25)
  --days N               days of aggregates to seed, ending with the current hour (default 400:
                         12mo is the 12 whole months before this one, up to 396 days back)
  --rows-per-hour N      dimension combinations (traffic_hourly rows) per hour (default 2500)
  --pageviews-per-day N  pageviews per day (default 1000000)
  --settle SECONDS       longest wait for background merges after seeding (default 180)
  --no-diagnose          skip timing tamis's statements directly on ClickHouse
  --explore              also fill experimental rollup tables while seeding (slower) and time the
                         same requests' statements on them
  --cluster              run on a ClickHouse cluster of 2 shards × 2 replicas and ZooKeeper, through
                         tamis's Distributed tables (not with --explore)";

const SITE: &str = "example.org";
const TZ: Tz = chrono_tz::America::Toronto;
const TOKEN: &str = "query-bench-token";
const DATABASE: &str = "bench_query";
const WARMUP: usize = 2;
const MIN_RUNS: usize = 5;
/// Runs of each statement when timing it straight on ClickHouse.
const DIAGNOSE_RUNS: usize = 3;

/// The issue's targets: p95 per standard query.
const TARGET_30D_MS: f64 = 300.0;
const TARGET_12MO_MS: f64 = 1000.0;
/// Share of the machine other processes may use during timed runs before
/// the numbers are flagged as disturbed.
const NOISY: f64 = 0.05;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("query bench: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !args.bench_mode {
        // `cargo test --benches` / `--all-targets` run bench targets without `--bench`.
        println!("query bench: not run in test mode; use `cargo bench --bench query`");
        return ExitCode::SUCCESS;
    }
    if !args.filters.is_empty() && !args.filters.iter().any(|f| "query".contains(f.as_str())) {
        println!("query bench: skipped (filtered out by {:?})", args.filters);
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("query bench: FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("query bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    runs: usize,
    budget: Duration,
    days: u32,
    rows_per_hour: u64,
    pageviews_per_day: u64,
    settle: Duration,
    diagnose: bool,
    explore: bool,
    cluster: bool,
    bench_mode: bool,
    filters: Vec<String>,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut args = Args {
            runs: 20,
            budget: Duration::from_secs(25),
            days: 400,
            rows_per_hour: 2500,
            pageviews_per_day: 1_000_000,
            settle: Duration::from_secs(180),
            diagnose: true,
            explore: false,
            cluster: false,
            bench_mode: false,
            filters: Vec::new(),
        };
        while let Some(arg) = raw.next() {
            let mut value = |name: &str| -> anyhow::Result<u64> {
                let text = raw.next().ok_or_else(|| anyhow!("{name} needs a value"))?;
                match text.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("{name} takes a positive whole number, not {text:?}"),
                }
            };
            match arg.as_str() {
                "--runs" => args.runs = value("--runs")? as usize,
                "--budget" => args.budget = Duration::from_secs(value("--budget")?),
                "--days" => args.days = u32::try_from(value("--days")?.min(3650)).unwrap_or(3650),
                "--rows-per-hour" => args.rows_per_hour = value("--rows-per-hour")?,
                "--pageviews-per-day" => args.pageviews_per_day = value("--pageviews-per-day")?,
                "--settle" => args.settle = Duration::from_secs(value("--settle")?),
                "--no-diagnose" => args.diagnose = false,
                "--explore" => args.explore = true,
                "--cluster" => args.cluster = true,
                "--bench" => args.bench_mode = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other if !other.starts_with('-') => args.filters.push(other.to_string()),
                other => bail!("unknown argument {other:?}"),
            }
        }
        if args.cluster && args.explore {
            bail!("--explore is not available with --cluster: its experimental tables are plain tables of one server, fed while seeding");
        }
        let mean = args.pageviews_per_day as f64 / (24.0 * args.rows_per_hour as f64);
        if mean < 1.0 {
            bail!("--pageviews-per-day must be at least 24 × --rows-per-hour (every row carries a pageview)");
        }
        Ok(args)
    }

    fn command(&self) -> String {
        let mut c = format!(
            "cargo bench --bench query -- --runs {} --budget {} --days {} --rows-per-hour {} --pageviews-per-day {} --settle {}",
            self.runs,
            self.budget.as_secs(),
            self.days,
            self.rows_per_hour,
            self.pageviews_per_day,
            self.settle.as_secs()
        );
        if self.cluster {
            c.push_str(" --cluster");
        }
        if !self.diagnose {
            c.push_str(" --no-diagnose");
        }
        if self.explore {
            c.push_str(" --explore");
        }
        c
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    println!("== tamis query bench");
    println!("command: {}", args.command());
    print_machine();

    let scratch = tempfile::Builder::new()
        .prefix("tamis-query-bench-")
        .tempdir()
        .context("creating a scratch directory")?;
    let servers = Servers::start(args.cluster)?;
    servers.print()?;
    let ch = servers.reader();
    let config = scratch.path().join("tamis.toml");
    fs::write(&config, servers.config_text()).context("writing the tamis config")?;
    migrate(&config)?;

    if args.explore {
        explore::create(ch)?;
    }
    let now = Utc::now();
    let plan = SeedPlan::new(args, now)?;
    let seeded = seed(&servers, &plan)?;
    sync_replicas(&servers)?;
    settle(&servers, args.settle)?;
    roll_up(&servers, &config)?;
    sync_replicas(&servers)?;
    // Each rolled day is a part of its own: let them merge, as months-old
    // rollups have on a collector that has run all year.
    settle(&servers, args.settle)?;
    if args.explore {
        explore::derive(ch)?;
    }
    let table = TableFacts::read(&servers)?;
    println!("{}", table.describe(&seeded, &plan));

    let server = Tamis::start(&config, scratch.path())?;
    wait_idle(&servers);
    // This process, ClickHouse (every node and ZooKeeper on a cluster) and
    // tamis: everything else is "other processes".
    let ours: Vec<u32> = [Some(std::process::id()), Some(server.child.id())]
        .into_iter()
        .flatten()
        .chain(servers.pids())
        .collect();
    let cases = cases(now)?;
    let mut outcomes = Vec::new();
    for case in &cases {
        let outcome = measure(server.addr, case, args, &ours)?;
        println!(
            "  {:<5} {:<28} {:>3} runs  p50 {:>8.1} ms  p95 {:>8.1} ms  (other processes: {:.0} % of the machine)",
            case.range,
            case.name,
            outcome.samples.len(),
            outcome.p(0.50),
            outcome.p(0.95),
            outcome.others * 100.0
        );
        outcomes.push(outcome);
    }
    let merges_after = ch.query(&format!(
        "SELECT count() FROM {} WHERE database = '{DATABASE}'",
        servers.system("merges", Over::Nodes)
    ));

    println!("\n-- checks of the answers");
    let sane = checks(&servers, &cases, &outcomes)?;

    let cpu = cpu::Window::start(&ours);
    let diagnosis = if args.diagnose {
        Some(diagnose(ch, servers.tables(), &cases, &outcomes, now)?)
    } else {
        None
    };
    let explored = if args.explore {
        Some(explore::run(ch, &cases, now, diagnosis.as_deref())?)
    } else {
        None
    };
    let others_after = (args.diagnose || args.explore).then(|| cpu.others());

    let log = server.stop();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    if !noisy.is_empty() {
        println!(
            "\ntamis logged {} warning/error lines; last ones:",
            noisy.len()
        );
        for line in &noisy[noisy.len().saturating_sub(5)..] {
            println!("  {line}");
        }
    }

    println!(
        "\n== results ({} merges still running at the end of the timed runs)",
        merges_after.trim()
    );
    println!("command: {}", args.command());
    if let Some(mode) = servers.mode() {
        println!("mode: {mode}");
    }
    println!("{}", table.describe(&seeded, &plan));
    report(&cases, &outcomes, diagnosis.as_deref());
    if servers.mode().is_some() {
        let mut note = String::from(
            "(on the cluster, others leaves out the CPU of every ClickHouse node and of ZooKeeper",
        );
        if diagnosis.is_some() {
            note.push_str("; ch_ms is the time of the node the statements were sent to, which reads both shards through the Distributed tables");
        }
        println!("{note})");
    }
    if let Some(text) = explored {
        println!("{text}");
    }
    if let Some(others) = others_after {
        println!("other processes used {:.0} % of the machine while the statements were timed on ClickHouse", others * 100.0);
    }
    Ok(sane)
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_mb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb / 1024);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cores} cores ({model}), {memory_mb} MB memory, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Where the bench's aggregates live: one server, or (`--cluster`) the
/// test cluster, read through its `Distributed` tables as tamis reads it.
enum Servers {
    One(ClickHouse),
    Cluster(cluster::Cluster),
}

/// Which nodes a look at a system table covers.
#[derive(Clone, Copy)]
enum Over {
    /// One replica of each shard: what the cluster holds, counted once.
    Shards,
    /// Every node: what each one is doing.
    Nodes,
}

impl Servers {
    fn start(cluster: bool) -> anyhow::Result<Servers> {
        if !cluster {
            return ClickHouse::try_start()
                .map(Servers::One)
                .map_err(|message| anyhow!("starting ClickHouse: {message}"));
        }
        // `Cluster::start` panics with the servers' own output (printed by
        // the panic hook) when a node or ZooKeeper cannot start.
        std::panic::catch_unwind(cluster::Cluster::start)
            .map(Servers::Cluster)
            .map_err(|_| anyhow!("starting the ClickHouse cluster failed (see above)"))
    }

    /// What the run is on, for the header and results (none for one
    /// server, whose output stays as it was).
    fn mode(&self) -> Option<String> {
        match self {
            Servers::One(_) => None,
            Servers::Cluster(_) => Some(format!(
                "{} shards × {} replicas, Distributed tables",
                cluster::SHARDS,
                cluster::REPLICAS
            )),
        }
    }

    fn print(&self) -> anyhow::Result<()> {
        let version = self
            .reader()
            .try_query("SELECT version()")
            .map_err(|e| anyhow!(e))?;
        match self {
            Servers::One(ch) => println!("ClickHouse {} on {}", version.trim(), ch.url),
            Servers::Cluster(c) => {
                let shards: Vec<String> = (1..=cluster::SHARDS)
                    .map(|s| {
                        let urls: Vec<&str> = (1..=cluster::REPLICAS)
                            .map(|r| c.node(s, r).url.as_str())
                            .collect();
                        format!("shard {s} on {}", urls.join(" and "))
                    })
                    .collect();
                println!(
                    "mode: {}\nClickHouse {} cluster `{}`: {}; ZooKeeper on 127.0.0.1:{}",
                    self.mode().unwrap_or_default(),
                    version.trim(),
                    cluster::CLUSTER,
                    shards.join("; "),
                    c.zookeeper.port
                );
            }
        }
        Ok(())
    }

    /// The server statements are sent to: the one server, or shard 1
    /// replica 1, the first node of tamis's `clickhouse.urls` (the one it
    /// reads through while it answers).
    fn reader(&self) -> &ClickHouse {
        match self {
            Servers::One(ch) => ch,
            Servers::Cluster(c) => c.node(1, 1),
        }
    }

    /// How reads name tamis's tables here, as tamis names them.
    fn tables(&self) -> Tables {
        match self {
            Servers::One(_) => Tables::Own,
            Servers::Cluster(_) => Tables::Distributed,
        }
    }

    /// The table to read `name` through: itself, or its `Distributed` table.
    fn table(&self, name: &str) -> String {
        self.tables().name(name)
    }

    /// `system.<name>`, or on the cluster that table of `over`'s nodes
    /// through `remote()` (each address a shard of its own), so that one
    /// statement sent to [`Servers::reader`] sums them.
    fn system(&self, name: &str, over: Over) -> String {
        match self {
            Servers::One(_) => format!("system.{name}"),
            Servers::Cluster(c) => {
                let nodes: Vec<String> = c
                    .nodes()
                    .filter(|&(_, replica, _)| matches!(over, Over::Nodes) || replica == 1)
                    .map(|(_, _, node)| format!("127.0.0.1:{}", node.tcp_port))
                    .collect();
                format!("remote('{}', system.{name})", nodes.join(","))
            }
        }
    }

    /// The servers that take the seed, each with its share: the one server
    /// all of it; on the cluster the first replica of each shard the rows
    /// whose number is its shard's, `(shards, index)`.
    fn writers(&self) -> Vec<(&ClickHouse, Option<(u32, u32)>)> {
        match self {
            Servers::One(ch) => vec![(ch, None)],
            Servers::Cluster(c) => (1..=cluster::SHARDS)
                .map(|s| (c.node(s, 1), Some((cluster::SHARDS, s - 1))))
                .collect(),
        }
    }

    /// The processes of ClickHouse: the server, or every node and ZooKeeper.
    fn pids(&self) -> Vec<u32> {
        match self {
            Servers::One(ch) => ch.pid().into_iter().collect(),
            Servers::Cluster(c) => c
                .nodes()
                .filter_map(|(_, _, node)| node.pid())
                .chain(c.zookeeper.pid())
                .collect(),
        }
    }

    /// A tamis config for these servers: on the cluster, naming it and
    /// every node, so that `tamis migrate` makes the schema on each.
    fn config_text(&self) -> String {
        match self {
            Servers::One(ch) => config_text(ch),
            Servers::Cluster(c) => c.with_cluster(&config_text(c.node(1, 1))),
        }
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config_text(ch: &ClickHouse) -> String {
    format!(
        r#"[server]
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[clickhouse]
url = "{url}"
database = "{DATABASE}"

[[site]]
id = "{SITE}"
hostnames = ["{SITE}", "www.{SITE}"]
timezone = "America/Toronto"
{goals}
[[token]]
name = "dashboard"
secret_sha256 = "{token}"
sites = ["{SITE}"]
"#,
        url = ch.url,
        token = sha256_hex(TOKEN),
        goals = GOALS_TOML,
    )
}

/// The bench site's goals (page goals over seeded sections) and one funnel
/// over them, whose step counts [`seed`] writes into `funnel_hourly`.
const GOALS_TOML: &str = r#"
[[site.goal]]
page = "/blog/*"
name = "Blog"
[[site.goal]]
page = "/aide/*"
name = "Aide"
[[site.goal]]
page = "/produits/page-1*"
name = "Produits 1…"
[[site.funnel]]
name = "Parcours"
steps = ["Blog", "Aide", "Produits 1…"]
"#;

/// The goals as the request parser needs them (the same as [`GOALS_TOML`]).
fn goals() -> Vec<tamis::goal::Goal> {
    use tamis::goal::Goal;
    [
        ("/blog/*", "Blog"),
        ("/aide/*", "Aide"),
        ("/produits/page-1*", "Produits 1…"),
    ]
    .into_iter()
    .filter_map(|(page, name)| Goal::page(page, Some(name)).ok())
    .collect()
}

/// The daily rollups of every seeded closed day, made by tamis's own job
/// (`tamis::sink::rollup`, one pass over every day since the first) before
/// tamis starts, as a collector that has been running all year would have
/// them. Prints how long that took and what the tables hold.
fn roll_up(servers: &Servers, config: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(config).context("reading the tamis config")?;
    let parsed: tamis::config::Config =
        toml::from_str(&text).context("parsing the tamis config")?;
    let settings =
        tamis::config::Settings::from_config(parsed, config.parent().unwrap_or(Path::new(".")))
            .map_err(|e| anyhow!("{e}"))?;
    let job = tamis::sink::rollup::Rollup::new(
        std::sync::Arc::new(tamis::sink::nodes::Nodes::new(&settings.clickhouse, 0)),
        settings.sites.clone(),
        tamis::clock::Clock::system(),
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let days = runtime
        .block_on(job.pass(None))
        .context("rolling up the seeded days")?;
    let elapsed = started.elapsed().as_secs_f64();
    let sizes = servers.reader().query(&format!(
        "SELECT table, sum(rows), round(sum(data_compressed_bytes) / 1e6, 1) FROM {} \
         WHERE database = '{DATABASE}' AND active AND table IN ('rollup_daily', 'rollup_days') GROUP BY table ORDER BY table",
        servers.system("parts", Over::Shards)
    ));
    println!(
        "rolled up {days} closed days with tamis's rollup job in {elapsed:.0} s ({:.2} s a day); tables (rows, MB compressed): {}",
        elapsed / days.max(1) as f64,
        sizes.lines().map(|l| l.replace('\t', " ")).collect::<Vec<_>>().join("; ")
    );
    Ok(())
}

/// Waits (up to 2 minutes) until ClickHouse (every node of the cluster) has
/// run no statement for 3 s: tamis checks every rolled day against the
/// hourly aggregates when it starts, which is not what the timed runs
/// should compete with.
fn wait_idle(servers: &Servers) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet = 0;
    while quiet < 6 && Instant::now() < deadline {
        let running = servers
            .reader()
            .try_query(&format!(
                "SELECT count() FROM {} WHERE query NOT LIKE '%system.processes%'",
                servers.system("processes", Over::Nodes)
            ))
            .unwrap_or_default();
        quiet = if running.trim() == "0" { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The statement tamis runs for `q` broken down by `dimensions` (see
/// `Api::rolled_statement`): on the rollups when its shape and range allow
/// and days are rolled, else on the hourly aggregates.
fn tamis_statement(
    ch: &ClickHouse,
    tables: Tables,
    q: &request::Query,
    dimensions: &[request::Dimension],
    now: DateTime<Utc>,
) -> anyhow::Result<sql::Statement> {
    let hourly = || sql::build(tables, q, dimensions, TZ.name(), Scope::Selected);
    if sql::rollup_dimension(q, dimensions).is_none() {
        return Ok(hourly());
    }
    let Some((first, last)) = tamis::query::whole_closed_days(q.from, q.to, now, TZ) else {
        return Ok(hourly());
    };
    let days = ch.query_in(
        DATABASE,
        &inline(&sql::rolled_days(
            tables,
            q,
            dimensions,
            &first.to_string(),
            &last.to_string(),
        )),
    );
    let days: Vec<NaiveDate> = days
        .lines()
        .filter_map(|d| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
        .collect();
    if days.is_empty() {
        return Ok(hourly());
    }
    let (runs, hours) = tamis::query::rollup_plan(q.from, q.to, days, TZ);
    Ok(sql::rolled(tables, q, dimensions, TZ.name(), &runs, &hours))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tamis"))
}

fn migrate(config: &Path) -> anyhow::Result<()> {
    let out = Command::new(binary())
        .args(["migrate", "--config"])
        .arg(config)
        .env("TAMIS_LOG", "warn")
        .output()
        .context("running tamis migrate")?;
    if !out.status.success() {
        bail!(
            "tamis migrate failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "tamis migrate: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------- seeding

/// What to seed: every hour from `start` (a local midnight) to the current
/// hour, in chunks of one UTC calendar month (one partition each).
struct SeedPlan {
    start: DateTime<Utc>,
    hours: u64,
    rows_per_hour: u64,
    mean_pageviews: f64,
    /// Visitor keys drawn per day (keys repeat within a day).
    visitor_pool: u64,
    chunks: Vec<(i64, u64, u64)>,
}

impl SeedPlan {
    fn new(args: &Args, now: DateTime<Utc>) -> anyhow::Result<SeedPlan> {
        let today = now.with_timezone(&TZ).date_naive();
        let start =
            request::local_midnight(today - chrono::Duration::days(i64::from(args.days) - 1), TZ);
        let twelve = range_of(&json!("12mo"), now)?.0;
        if start > twelve {
            println!(
                "note: --days {} does not cover the whole \"12mo\" range (from {})",
                args.days,
                twelve.with_timezone(&TZ).date_naive()
            );
        }
        let end_ts = now.timestamp() / 3600 * 3600 + 3600;
        let hours = ((end_ts - start.timestamp()) / 3600) as u64;
        let mut chunks = Vec::new();
        let mut hour = 0u64;
        while hour < hours {
            let ts = start.timestamp() + hour as i64 * 3600;
            let t = DateTime::from_timestamp(ts, 0).unwrap_or(now);
            let next_month = if t.month() == 12 {
                NaiveDate::from_ymd_opt(t.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(t.year(), t.month() + 1, 1)
            }
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp())
            .unwrap_or(end_ts);
            let n = ((next_month.min(end_ts) - ts) / 3600) as u64;
            chunks.push((ts, hour, n));
            hour += n;
        }
        Ok(SeedPlan {
            start,
            hours,
            rows_per_hour: args.rows_per_hour,
            mean_pageviews: args.pageviews_per_day as f64 / (24.0 * args.rows_per_hour as f64),
            visitor_pool: args.rows_per_hour * 24,
            chunks,
        })
    }

    /// `INSERT … SELECT` for one chunk: `hours` hours from `first_ts`, the
    /// `first_hour`-th hour of the plan (row numbers continue across chunks,
    /// so every row draws its own values). With `share` `(n, i)`, only the
    /// rows whose number is `i` modulo `n`: one shard's part of the chunk.
    fn sql(&self, first_ts: i64, first_hour: u64, hours: u64, share: Option<(u32, u32)>) -> String {
        let r = self.rows_per_hour;
        let share = share.map_or(String::new(), |(n, i)| format!(" WHERE number % {n} = {i}"));
        // u*: drawn per row (page, entry page, counts); v*: per visitor key,
        // so a visitor keeps one source, region, browser, OS, device,
        // language and consent state all day.
        let u: String = [1, 2, 3, 10, 14, 15, 16]
            .iter()
            .map(|k| format!(", cityHash64(n, {k}) / 18446744073709551616. AS u{k}"))
            .collect();
        let v: String = (4..=13)
            .map(|k| format!(", cityHash64(vk, {k}) / 18446744073709551616. AS v{k}"))
            .collect();
        let sections =
            "['/blog/', '/nouvelles/', '/produits/', '/aide/', '/evenements/', '/carrieres/']";
        let sources = "['Direct / None', 'Google', 'Bing', 'DuckDuckGo', 'Facebook', 'Reddit', 'LinkedIn', 'Instagram', \
                       'X', 'YouTube', 'Wikipedia', 'Yahoo!', 'Qwant', 'Ecosia', 'La Presse', 'Radio-Canada']";
        let hosts = "['', 'google.com', 'bing.com', 'duckduckgo.com', 'facebook.com', 'reddit.com', 'linkedin.com', 'instagram.com', \
                     'x.com', 'youtube.com', 'wikipedia.org', 'yahoo.com', 'qwant.com', 'ecosia.org', 'lapresse.ca', 'ici.radio-canada.ca']";
        let browsers = "['Chrome', 'Safari', 'Edge', 'Firefox', 'Samsung Internet', 'Opera', 'Facebook', 'DuckDuckGo', 'Chrome Webview', 'Vivaldi']";
        let majors = "[129, 16, 129, 131, 25, 113, 480, 5, 129, 6]";
        format!(
            "INSERT INTO {DATABASE}.traffic_in (site_id, hour, event, page, entry_page, source, referrer, utm_source, utm_medium, \
             utm_campaign, country, region, browser, browser_version, os, device, language, consent, visitor, pageviews, events, \
             visits, bounces, duration, exits) \
             SELECT '{SITE}', toDateTime(hts), 'pageview', \
               if(pi = 0, '/', concat({sections}[pi % 6 + 1], 'page-', toString(pi))) AS c_page, \
               if(u3 < 0.4, c_page, if(ei = 0, '/', concat({sections}[ei % 6 + 1], 'page-', toString(ei)))), \
               if(si < 16, {sources}[si + 1], concat('site-', toString(si), '.example.ca')), \
               if(si < 16, {hosts}[si + 1], concat('site-', toString(si), '.example.ca')), \
               '', '', '', 'CA', \
               multiIf(v6 < 0.60, 'CA-QC', v6 < 0.80, 'CA-ON', v6 < 0.86, 'CA-BC', v6 < 0.91, 'CA-AB', v6 < 0.93, 'CA-NB', \
                       v6 < 0.95, 'CA-NS', v6 < 0.965, 'CA-MB', v6 < 0.977, 'CA-SK', v6 < 0.987, 'CA-NL', v6 < 0.992, 'CA-PE', \
                       v6 < 0.995, 'CA-NT', v6 < 0.998, 'CA-YT', 'CA-NU'), \
               {browsers}[bi], \
               toString({majors}[bi] + toUInt32(floor(v9 * 3))), \
               multiIf(v8 < 0.33, 'Windows', v8 < 0.58, 'iOS', v8 < 0.80, 'Android', v8 < 0.95, 'Mac', v8 < 0.98, 'GNU/Linux', 'Chrome OS') AS c_os, \
               multiIf(c_os IN ('iOS', 'Android'), if(v11 < 0.12, 'Tablet', 'Mobile'), 'Desktop'), \
               multiIf(v12 < 0.70, 'fr', v12 < 0.98, 'en', 'es'), \
               multiIf(v13 < 0.60, 'none', v13 < 0.90, 'granted', 'denied'), \
               vk, \
               toUInt64(1 + floor(pow(u14, 3) * {spread})) AS c_pv, \
               toUInt64(0), \
               toInt64(floor(c_pv / 2.5 + u10)) AS c_visits, \
               toInt64(floor(c_visits * 0.45 + u15)), \
               c_visits * toInt64(30 + floor(u16 * 240)), \
               c_visits \
             FROM (SELECT n, hts, vk{u}{v}, \
                     toUInt32(floor(exp(u1 * log(3001.)) - 1)) AS pi, \
                     toUInt32(floor(exp(u2 * log(3001.)) - 1)) AS ei, \
                     multiIf(v4 < 0.35, 0, v4 < 0.65, 1, 2 + toUInt32(floor(exp(v5 * log(300.)) - 1))) AS si, \
                     multiIf(v7 < 0.45, 1, v7 < 0.70, 2, v7 < 0.80, 3, v7 < 0.87, 4, v7 < 0.91, 5, v7 < 0.93, 6, \
                             v7 < 0.95, 7, v7 < 0.97, 8, v7 < 0.985, 9, 10) AS bi \
                   FROM (SELECT n, hts, cityHash64(toUInt32(toDate(toDateTime(hts), '{tz}')), cityHash64(n, 20) % {pool}) AS vk \
                         FROM (SELECT number + {offset} AS n, toUInt32({first_ts} + intDiv(number, {r}) * 3600) AS hts \
                               FROM numbers({count}){share})))",
            pool = self.visitor_pool,
            tz = TZ.name(),
            spread = 4.0 * (self.mean_pageviews - 1.0),
            offset = first_hour * r,
            count = hours * r,
        )
    }
}

struct Seeded {
    input_rows: u64,
    seconds: f64,
}

fn seed(servers: &Servers, plan: &SeedPlan) -> anyhow::Result<Seeded> {
    let writers = servers.writers();
    let split = match writers.len() {
        1 => String::new(),
        n => format!(" each split over {n} shards"),
    };
    println!(
        "\n-- seeding {} hours from {} ({} local) in {} inserts{split}: {} rows/hour, {:.1} pageviews/row on average",
        plan.hours,
        plan.start.format("%Y-%m-%d %H:%M UTC"),
        plan.start.with_timezone(&TZ).format("%Y-%m-%d %H:%M"),
        plan.chunks.len(),
        plan.rows_per_hour,
        plan.mean_pageviews
    );
    let started = Instant::now();
    let mut input_rows = 0;
    for (i, &(ts, first_hour, hours)) in plan.chunks.iter().enumerate() {
        let t = Instant::now();
        // On the cluster, each shard's part at the same time.
        std::thread::scope(|scope| {
            let inserts: Vec<_> = writers
                .iter()
                .map(|&(ch, share)| {
                    scope.spawn(move || ch.try_query(&plan.sql(ts, first_hour, hours, share)))
                })
                .collect();
            inserts.into_iter().try_for_each(|insert| {
                insert
                    .join()
                    .map_err(|_| anyhow!("a seeding thread panicked"))?
                    .map(drop)
                    .map_err(|e| anyhow!(e))
            })
        })?;
        input_rows += hours * plan.rows_per_hour;
        let month = DateTime::from_timestamp(ts, 0)
            .map_or(String::new(), |t| t.format("%Y-%m").to_string());
        println!(
            "  [{:>2}/{}] {month}: {:>4} hours, {:>9} rows in {:>5.1} s  (total {:>11} rows, {:>6.1} s)",
            i + 1,
            plan.chunks.len(),
            hours,
            hours * plan.rows_per_hour,
            t.elapsed().as_secs_f64(),
            input_rows,
            started.elapsed().as_secs_f64()
        );
    }
    // Funnel steps as the aggregator writes them: per hour, visits that
    // reached each step of "Parcours" (about 400, 160 and 60); on the
    // cluster each hour's steps on one shard, the shards taking turns.
    for &(ch, share) in &writers {
        let share = share.map_or(String::new(), |(n, i)| {
            format!(" WHERE intDiv(number, 3) % {n} = {i}")
        });
        ch.try_query(&format!(
            "INSERT INTO {DATABASE}.funnel_hourly (site_id, hour, funnel, step, visits) \
             SELECT '{SITE}', toDateTime({start} + intDiv(number, 3) * 3600), 'Parcours', toUInt8(number % 3 + 1), \
             toUInt64(floor(400 / pow(2.5, number % 3)) + cityHash64(number) % 40) FROM numbers({n}){share}",
            start = plan.start.timestamp(),
            n = plan.hours * 3
        ))
        .map_err(|e| anyhow!(e))?;
    }
    Ok(Seeded {
        input_rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Cluster only: waits until every replica holds what the other replica
/// of its shard took (`SYSTEM SYNC REPLICA` of each replicated table of the
/// bench database, on every node). Reads through a `Distributed` table ask
/// either replica of a shard, so the answers are the seeded numbers only
/// once both hold everything.
fn sync_replicas(servers: &Servers) -> anyhow::Result<()> {
    let Servers::Cluster(cluster) = servers else {
        return Ok(());
    };
    let started = Instant::now();
    for (shard, replica, node) in cluster.nodes() {
        let tables = node
            .try_query(&format!(
                "SELECT name FROM system.tables WHERE database = '{DATABASE}' AND engine LIKE 'Replicated%' ORDER BY name"
            ))
            .map_err(|e| anyhow!(e))?;
        for table in tables.lines() {
            // 18.16 gives up waiting after `receive_timeout` (300 s): a big
            // seed may take longer to fetch, so ask again a few times.
            let mut attempt = 1;
            while let Err(error) =
                node.try_query(&format!("SYSTEM SYNC REPLICA {DATABASE}.{table}"))
            {
                if attempt == 3 {
                    bail!("shard {shard} replica {replica} did not sync {table}: {error}");
                }
                println!("   shard {shard} replica {replica}: {table} not in sync yet ({}), waiting again", error.lines().next().unwrap_or(""));
                attempt += 1;
            }
        }
    }
    println!(
        "-- every replica in sync after {:.1} s (SYSTEM SYNC REPLICA of each replicated table on every node)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits (10 s at least) until no merge runs in the bench database for 5 s
/// in a row, or `longest` has passed. On the cluster: no merge on any node,
/// and no entry left in any replica's replication queue.
fn settle(servers: &Servers, longest: Duration) -> anyhow::Result<()> {
    let ch = servers.reader();
    let started = Instant::now();
    let count = |sql: String| -> anyhow::Result<u64> {
        Ok(ch.try_query(&sql).map_err(|e| anyhow!(e))?.trim().parse()?)
    };
    let (merges_name, queues) = match servers {
        Servers::One(_) => ("merges", None),
        Servers::Cluster(_) => (
            "merges or replication tasks",
            Some(format!(
                "SELECT sum(queue_size) FROM {} WHERE database = '{DATABASE}'",
                servers.system("replicas", Over::Nodes)
            )),
        ),
    };
    let merges = || -> anyhow::Result<u64> {
        let merges = count(format!(
            "SELECT count() FROM {} WHERE database = '{DATABASE}'",
            servers.system("merges", Over::Nodes)
        ))?;
        Ok(merges + queues.clone().map_or(Ok(0), count)?)
    };
    let parts = || {
        ch.query(&format!("SELECT count() FROM {} WHERE database = '{DATABASE}' AND table = 'traffic_hourly' AND active", servers.system("parts", Over::Shards))).trim().to_string()
    };
    println!(
        "-- waiting for background merges (at most {} s): {} active parts",
        longest.as_secs(),
        parts()
    );
    let mut quiet_since: Option<Instant> = None;
    let mut last_print = Instant::now();
    loop {
        let running = merges()?;
        let elapsed = started.elapsed();
        if running == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if elapsed >= Duration::from_secs(10) && since.elapsed() >= Duration::from_secs(5) {
                println!(
                    "   merges done after {:.0} s: {} active parts",
                    elapsed.as_secs_f64(),
                    parts()
                );
                return Ok(());
            }
        } else {
            quiet_since = None;
        }
        if elapsed >= longest {
            println!("   still {running} {merges_name} running after {:.0} s ({} active parts): measuring anyway", elapsed.as_secs_f64(), parts());
            return Ok(());
        }
        if last_print.elapsed() >= Duration::from_secs(15) {
            println!(
                "   {:.0} s: {running} {merges_name} running, {} active parts",
                elapsed.as_secs_f64(),
                parts()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

struct TableFacts {
    /// Which copies the numbers count ("" for one server).
    scope: &'static str,
    parts: u64,
    rows: u64,
    compressed: u64,
    uncompressed: u64,
    pageviews: u64,
    days: u64,
    pages: u64,
    sources: u64,
    regions: u64,
    combos_per_hour: f64,
}

impl TableFacts {
    /// On the cluster, parts, rows and bytes summed over one replica of
    /// each shard, and the content read through the `Distributed` table.
    fn read(servers: &Servers) -> anyhow::Result<TableFacts> {
        let ch = servers.reader();
        let q = |sql: &str| -> anyhow::Result<Vec<u64>> {
            ch.try_query(sql)
                .map_err(|e| anyhow!(e))?
                .split_whitespace()
                .map(|v| {
                    v.parse::<u64>()
                        .with_context(|| format!("{v:?} from {sql}"))
                })
                .collect()
        };
        let parts = q(&format!(
            "SELECT count(), sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM {} \
             WHERE database = '{DATABASE}' AND table = 'traffic_hourly' AND active",
            servers.system("parts", Over::Shards)
        ))?;
        let content = q(&format!(
            "SELECT sumMerge(pageviews), uniqExact(toDate(hour)), uniqExact(page), uniqExact(source), uniqExact(region), uniqExact(hour) \
             FROM {DATABASE}.{}",
            servers.table("traffic_hourly")
        ))?;
        Ok(TableFacts {
            scope: match servers {
                Servers::One(_) => "",
                Servers::Cluster(_) => " (both shards, one replica each)",
            },
            parts: parts[0],
            rows: parts[1],
            compressed: parts[2],
            uncompressed: parts[3],
            pageviews: content[0],
            days: content[1],
            pages: content[2],
            sources: content[3],
            regions: content[4],
            combos_per_hour: parts[1] as f64 / content[5].max(1) as f64,
        })
    }

    fn describe(&self, seeded: &Seeded, plan: &SeedPlan) -> String {
        format!(
            "seeded: {} input rows in {:.0} s ({:.0} rows/s) → traffic_hourly{}: {} rows ({:.0} per hour), {} active parts, \
             {:.0} MB compressed ({:.0} MB uncompressed); {} pageviews over {} UTC days ({:.2}M per day), \
             {} pages, {} sources, {} regions; {} visitor keys per day drawn with repeats",
            seeded.input_rows,
            seeded.seconds,
            seeded.input_rows as f64 / seeded.seconds.max(0.001),
            self.scope,
            self.rows,
            self.combos_per_hour,
            self.parts,
            self.compressed as f64 / 1e6,
            self.uncompressed as f64 / 1e6,
            self.pageviews,
            self.days,
            self.pageviews as f64 / plan.hours as f64 * 24.0 / 1e6,
            self.pages,
            self.sources,
            self.regions,
            plan.visitor_pool,
        )
    }
}

// ---------------------------------------------------------------- tamis

/// CPU accounting from `/proc`, to tell whether other processes shared the
/// machine while something was timed.
mod cpu {
    use std::fs;

    /// (busy, interrupts, total) clock ticks of the whole machine.
    fn host() -> (u64, u64, u64) {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let total: u64 = v.iter().take(8).sum();
        let idle = get(3) + get(4);
        (total - idle, get(5) + get(6), total)
    }

    /// User + system clock ticks of every thread of `pid`.
    fn process(pid: u32) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of the whole line; `rest` starts at field 3.
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    }

    pub struct Window {
        pids: Vec<u32>,
        host: (u64, u64, u64),
        ours: u64,
    }

    impl Window {
        pub fn start(pids: &[u32]) -> Window {
            Window {
                pids: pids.to_vec(),
                host: host(),
                ours: pids.iter().map(|p| process(*p)).sum(),
            }
        }

        /// Share of the machine's capacity (all cores) used since `start` by
        /// processes other than `pids` (interrupt time, loopback traffic
        /// mostly, left out).
        pub fn others(&self) -> f64 {
            let (busy, irq, total) = host();
            let ours: u64 = self.pids.iter().map(|p| process(*p)).sum();
            let busy = busy
                .saturating_sub(self.host.0)
                .saturating_sub(irq.saturating_sub(self.host.1));
            let total = total.saturating_sub(self.host.2);
            if total == 0 {
                return 0.0;
            }
            busy.saturating_sub(ours.saturating_sub(self.ours)) as f64 / total as f64
        }
    }
}

struct Tamis {
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Tamis {
    fn start(config: &Path, scratch: &Path) -> anyhow::Result<Tamis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let log = scratch.join("tamis.log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("TAMIS_LISTEN", format!("127.0.0.1:{port}"))
            .env("TAMIS_LOG", "warn")
            .current_dir(scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(&log).context("creating the tamis log")?,
            ))
            .spawn()
            .context("starting tamis serve")?;
        let mut tamis = Tamis {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = tamis.child.try_wait()? {
                bail!(
                    "tamis exited with {status}:\n{}",
                    fs::read_to_string(&tamis.log).unwrap_or_default()
                );
            }
            if http(tamis.addr, "GET", "/healthz", &[], "").is_ok_and(|(status, _)| status == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "tamis did not answer /healthz within 60 s:\n{}",
                    fs::read_to_string(&tamis.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "\n-- tamis {} (pid {}) on {}",
            binary().display(),
            tamis.child.id(),
            tamis.addr
        );
        Ok(tamis)
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tamis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(std::io::Error::other(
            "chunked answers are not expected from tamis",
        ));
    }
    Ok((status, body.to_string()))
}

fn api(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<Value> {
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = http(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .with_context(|| format!("POST {path}"))?;
    if status != 200 {
        bail!("POST {path} answered {status}: {text}\nrequest: {body}");
    }
    serde_json::from_str(&text).with_context(|| format!("answer is not JSON: {text}"))
}

// ---------------------------------------------------------------- queries

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Totals,
    Timeseries,
    Pages,
    Sources,
    Regions,
    Browsers,
    Devices,
    Goals,
    Funnel,
}

struct Case {
    kind: Kind,
    /// `/api/v2/query`, or `/api/v2/funnel` for the funnel.
    path: &'static str,
    name: &'static str,
    range: &'static str,
    /// Sent one after the other; timed together.
    bodies: Vec<String>,
    target_ms: f64,
}

/// What the request parser may use of the bench site's settings.
fn site_view() -> SiteView {
    SiteView {
        timezone: TZ,
        campaigns: false,
        prop_keys: Vec::new(),
        goals: goals(),
    }
}

/// The half-open UTC interval tamis gives a date range right now.
fn range_of(range: &Value, now: DateTime<Utc>) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let body = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range}).to_string();
    let q = request::parse(body.as_bytes(), &site_view(), now).map_err(|e| anyhow!("{e}"))?;
    Ok((q.from, q.to))
}

fn cases(now: DateTime<Utc>) -> anyhow::Result<Vec<Case>> {
    let mut out = Vec::new();
    for (range, time, target_ms) in [
        ("30d", "time:day", TARGET_30D_MS),
        ("12mo", "time:month", TARGET_12MO_MS),
    ] {
        // The period of the same length just before, as explicit dates.
        let (from, to) = range_of(&json!(range), now)?;
        let first = from.with_timezone(&TZ).date_naive();
        let last = (to - chrono::Duration::seconds(1))
            .with_timezone(&TZ)
            .date_naive();
        let days = (last - first).num_days() + 1;
        let previous = json!([
            (first - chrono::Duration::days(days)).to_string(),
            (first - chrono::Duration::days(1)).to_string()
        ]);
        let top = [
            "visitors",
            "visits",
            "pageviews",
            "bounce_rate",
            "visit_duration",
        ];
        let body = |range: &Value, metrics: &[&str], dims: &[&str], extra: Value| {
            let mut b = json!({"site_id": SITE, "metrics": metrics, "date_range": range, "dimensions": dims});
            if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
                b.extend(extra.clone());
            }
            b.to_string()
        };
        let r = json!(range);
        let limit = json!({"pagination": {"limit": 10}});
        let mut case = |kind, name, bodies| {
            out.push(Case {
                kind,
                path: if kind == Kind::Funnel {
                    "/api/v2/funnel"
                } else {
                    "/api/v2/query"
                },
                name,
                range,
                bodies,
                target_ms,
            })
        };
        case(
            Kind::Totals,
            "totals + comparison",
            vec![
                body(&r, &top, &[], json!({})),
                body(&previous, &top, &[], json!({})),
            ],
        );
        case(
            Kind::Timeseries,
            if range == "30d" {
                "timeseries (time:day)"
            } else {
                "timeseries (time:month)"
            },
            vec![body(
                &r,
                &["visitors", "pageviews"],
                &[time],
                json!({"include": {"time_labels": true}}),
            )],
        );
        case(
            Kind::Pages,
            "top pages (event:page)",
            vec![body(
                &r,
                &["visitors", "pageviews"],
                &["event:page"],
                limit.clone(),
            )],
        );
        case(
            Kind::Sources,
            "sources (visit:source)",
            vec![body(&r, &["visitors"], &["visit:source"], limit.clone())],
        );
        case(
            Kind::Regions,
            "regions (visit:region)",
            vec![body(&r, &["visitors"], &["visit:region"], limit.clone())],
        );
        case(
            Kind::Browsers,
            "browsers (visit:browser)",
            vec![body(
                &r,
                &["visitors", "percentage"],
                &["visit:browser"],
                limit.clone(),
            )],
        );
        case(
            Kind::Devices,
            "devices (visit:device)",
            vec![body(
                &r,
                &["visitors", "percentage"],
                &["visit:device"],
                limit.clone(),
            )],
        );
        case(
            Kind::Goals,
            "goals (event:goal)",
            vec![body(
                &r,
                &["visitors", "events", "conversion_rate"],
                &["event:goal"],
                limit.clone(),
            )],
        );
        case(
            Kind::Funnel,
            "funnel (3 steps)",
            vec![json!({"site_id": SITE, "funnel": "Parcours", "date_range": r}).to_string()],
        );
    }
    Ok(out)
}

struct Outcome {
    samples: Vec<f64>,
    /// Share of the machine other processes used during the timed runs.
    others: f64,
    /// The answers of the last warm-up run, one per body.
    answers: Vec<Value>,
}

impl Outcome {
    /// Nearest-rank percentile, in ms.
    fn p(&self, q: f64) -> f64 {
        percentile(&self.samples, q)
    }
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn measure(addr: SocketAddr, case: &Case, args: &Args, ours: &[u32]) -> anyhow::Result<Outcome> {
    let mut answers = Vec::new();
    for _ in 0..WARMUP {
        answers = case
            .bodies
            .iter()
            .map(|b| api(addr, case.path, b))
            .collect::<anyhow::Result<_>>()?;
    }
    let cpu = cpu::Window::start(ours);
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < args.runs && (samples.len() < MIN_RUNS || started.elapsed() < args.budget)
    {
        let t = Instant::now();
        for b in &case.bodies {
            api(addr, case.path, b)?;
        }
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Outcome {
        samples,
        others: cpu.others(),
        answers,
    })
}

// ---------------------------------------------------------------- checks

/// On the cluster, the seeded numbers are read through the `Distributed`
/// table: both shards, as tamis reads them.
fn checks(servers: &Servers, cases: &[Case], outcomes: &[Outcome]) -> anyhow::Result<bool> {
    let ch = servers.reader();
    let hourly = servers.table("traffic_hourly");
    let mut ok = true;
    let mut check = |what: String, good: bool| {
        println!("  [{}] {what}", if good { "ok" } else { "FAILED" });
        ok &= good;
    };
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for (case, outcome) in cases.iter().zip(outcomes) {
        let rows = |i: usize| {
            outcome.answers[i]["results"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let dims = |i: usize| {
            rows(i)
                .iter()
                .map(|r| r["dimensions"][0].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        let label = format!("{} {}:", case.range, case.name);
        match case.kind {
            Kind::Totals => {
                for (i, which) in [(0, "range"), (1, "previous period")] {
                    let answer = &outcome.answers[i];
                    let got = rows(i)
                        .first()
                        .map(|r| number(&r["metrics"][2]))
                        .unwrap_or(f64::NAN);
                    let range = &answer["query"]["date_range"];
                    let (from, to) = (
                        parse_rfc3339(&range[0])?,
                        parse_rfc3339(&range[1])? + chrono::Duration::seconds(1),
                    );
                    let want: f64 = ch
                        .query(&format!(
                            "SELECT sumMerge(pageviews) FROM {DATABASE}.{hourly} WHERE site_id = '{SITE}' \
                             AND hour >= toDateTime({}) AND hour < toDateTime({})",
                            from.timestamp(),
                            to.timestamp()
                        ))
                        .trim()
                        .parse()
                        .unwrap_or(f64::NAN);
                    let m = |k: usize| {
                        rows(i)
                            .first()
                            .map(|r| number(&r["metrics"][k]))
                            .unwrap_or(f64::NAN)
                    };
                    check(
                        format!(
                            "{label} {which} {} … {}: {:.2}M pageviews (seeded: {:.2}M, rounded to base 5), {:.2}M visitors, {:.2}M visits, bounce rate {} %, visit duration {} s",
                            range[0].as_str().unwrap_or("?"),
                            range[1].as_str().unwrap_or("?"),
                            got / 1e6,
                            want / 1e6,
                            m(0) / 1e6,
                            m(1) / 1e6,
                            m(3),
                            m(4)
                        ),
                        // The bench's token reads in the default protected
                        // mode: the count is rounded to one of the two
                        // multiples of 5 around the seeded one.
                        // A comparison period before the seeded days has
                        // no visitor: withheld, like any cell under k.
                        (i == 1 && want == 0.0 && got.is_nan())
                            || got % 5.0 == 0.0
                                && (got - want).abs() < 5.0
                                && (i == 1 || got > 0.0),
                    );
                }
            }
            Kind::Timeseries => {
                let labels = outcome.answers[0]["meta"]["time_labels"]
                    .as_array()
                    .map_or(0, Vec::len);
                let n = rows(0).len();
                let withheld = rows(0).iter().filter(|r| r["metrics"][0].is_null()).count();
                check(
                    format!(
                        "{label} {n} buckets with data of {labels} labelled, {withheld} withheld"
                    ),
                    n > 0 && n <= labels && withheld == 0,
                );
            }
            Kind::Pages => {
                let d = dims(0);
                check(
                    format!(
                        "{label} {} rows, first {:?}, last {:?}",
                        d.len(),
                        d.first(),
                        d.last()
                    ),
                    d.len() == 10 && d[0] == "/",
                );
            }
            Kind::Sources => {
                let d = dims(0);
                check(
                    format!("{label} {} rows: {}", d.len(), d.join(", ")),
                    d.len() == 10 && d[0] == "Direct / None" && d[1] == "Google",
                );
            }
            Kind::Regions => {
                let d = dims(0);
                let names = outcome.answers[0]["meta"]["region_names"]
                    .as_object()
                    .map_or(0, |m| m.len());
                check(
                    format!("{label} {} rows (limit 10 of 13 provinces and territories), {names} display names: {}", d.len(), d.join(", ")),
                    d.len() == 10 && d[0] == "CA-QC" && d[1] == "CA-ON" && names == 10,
                );
            }
            Kind::Goals => {
                let d = dims(0);
                let rates: Vec<f64> = rows(0).iter().map(|r| number(&r["metrics"][2])).collect();
                check(
                    format!(
                        "{label} {} goals: {} (conversion {rates:?} %)",
                        d.len(),
                        d.join(", ")
                    ),
                    d.len() == 3 && rates.iter().all(|r| *r > 0.0 && *r < 100.0),
                );
            }
            Kind::Funnel => {
                let steps: Vec<f64> = outcome.answers[0]["steps"]
                    .as_array()
                    .map(|s| s.iter().map(|s| number(&s["visits"])).collect())
                    .unwrap_or_default();
                check(
                    format!("{label} visits per step {steps:?}"),
                    steps.len() == 3 && steps.windows(2).all(|w| w[0] >= w[1]) && steps[2] > 0.0,
                );
            }
            Kind::Browsers | Kind::Devices => {
                let d = dims(0);
                let share: f64 = rows(0).iter().map(|r| number(&r["metrics"][1])).sum();
                let want = if case.kind == Kind::Browsers { 10 } else { 3 };
                check(
                    format!(
                        "{label} {} rows, shares add up to {share:.1} %: {}",
                        d.len(),
                        d.join(", ")
                    ),
                    d.len() == want && (share - 100.0).abs() < 3.0,
                );
            }
        }
    }
    // The regions beyond the page of 10: all 13 are there, none suppressed.
    let all = ch.query(&format!(
        "SELECT uniqExact(region) FROM {DATABASE}.{hourly}"
    ));
    check(
        format!("all regions seeded: {}", all.trim()),
        all.trim() == "13",
    );
    Ok(ok)
}

fn parse_rfc3339(v: &Value) -> anyhow::Result<DateTime<Utc>> {
    let s = v
        .as_str()
        .ok_or_else(|| anyhow!("date_range bound is not a string: {v}"))?;
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("date_range bound {s:?}"))?
        .with_timezone(&Utc))
}

// ---------------------------------------------------------------- diagnosis

/// One statement tamis runs, timed on ClickHouse itself.
struct Timed {
    /// Median of the server's own `elapsed`, ms.
    elapsed_ms: f64,
    rows_read: u64,
    bytes_read: u64,
}

struct Diagnosis {
    statements: usize,
    elapsed_ms: f64,
    /// Of which the totals statements (no dimension) that follow each breakdown.
    totals_ms: f64,
    rows_read: u64,
    bytes_read: u64,
    identical_pairs: usize,
}

/// The SQL the `clickhouse` crate sends for `statement`: each `?` replaced
/// by its value as a quoted string literal.
fn inline(statement: &sql::Statement) -> String {
    let mut out = String::new();
    let mut params = statement.params.iter();
    for c in statement.sql.chars() {
        if c == '?' {
            let value = params.next().map_or("", String::as_str);
            out.push('\'');
            for ch in value.chars() {
                if matches!(ch, '\\' | '\'' | '`' | '\t' | '\n') {
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

fn time_statement(ch: &ClickHouse, sql: &str) -> anyhow::Result<Timed> {
    let mut runs = Vec::new();
    // Slow statements (over 1 s) are timed once: their noise is small next to them.
    while runs.len() < DIAGNOSE_RUNS && runs.first().is_none_or(|r: &(f64, u64, u64)| r.0 < 1000.0)
    {
        // tamis names its tables without a database (its client sets one).
        let mut qualified = sql.to_string();
        for table in ["traffic_hourly", "rollup_daily", "rollup_days"] {
            qualified = qualified.replace(
                &format!(" FROM {table}"),
                &format!(" FROM {DATABASE}.{table}"),
            );
        }
        let text = ch
            .try_query(&format!("{qualified} FORMAT JSON"))
            .map_err(|e| anyhow!(e))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("FORMAT JSON answer of {sql}"))?;
        let s = &v["statistics"];
        runs.push((
            s["elapsed"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            s["rows_read"].as_u64().unwrap_or(0),
            s["bytes_read"].as_u64().unwrap_or(0),
        ));
    }
    let elapsed: Vec<f64> = runs.iter().map(|r| r.0).collect();
    Ok(Timed {
        elapsed_ms: percentile(&elapsed, 0.5),
        rows_read: runs[0].1,
        bytes_read: runs[0].2,
    })
}

/// For every case, the statements tamis runs for its requests (as
/// `Api::run` does: the breakdown, then the totals), timed on ClickHouse.
fn diagnose(
    ch: &ClickHouse,
    tables: Tables,
    cases: &[Case],
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Diagnosis>> {
    println!("\n-- the same statements straight on ClickHouse (FORMAT JSON statistics, median of {DIAGNOSE_RUNS} runs, 1 run when over 1 s)");
    let view = site_view();
    let mut out = Vec::new();
    for (case, outcome) in cases.iter().zip(outcomes) {
        let mut d = Diagnosis {
            statements: 0,
            elapsed_ms: 0.0,
            totals_ms: 0.0,
            rows_read: 0,
            bytes_read: 0,
            identical_pairs: 0,
        };
        // The funnel endpoint reads `funnel_hourly` with one statement of
        // its own: timed through the API only.
        let bodies = if case.kind == Kind::Funnel {
            &[][..]
        } else {
            &case.bodies[..]
        };
        for body in bodies {
            let q = request::parse(body.as_bytes(), &view, now).map_err(|e| anyhow!("{e}"))?;
            let rows = inline(&tamis_statement(ch, tables, &q, &q.dimensions, now)?);
            let total = inline(&tamis_statement(ch, tables, &q, &[], now)?);
            if rows == total {
                d.identical_pairs += 1;
            }
            for (i, statement) in [rows, total].iter().enumerate() {
                let t = time_statement(ch, statement)?;
                if i == 1 {
                    d.totals_ms += t.elapsed_ms;
                }
                d.statements += 1;
                d.elapsed_ms += t.elapsed_ms;
                d.rows_read += t.rows_read;
                d.bytes_read += t.bytes_read;
            }
        }
        println!(
            "  {:<5} {:<28} {} statements: {:>8.1} ms in ClickHouse ({:>7.1} ms of it the totals statements), {:>10} rows, {:>7.1} MB read; API p50 {:>8.1} ms",
            case.range,
            case.name,
            d.statements,
            d.elapsed_ms,
            d.totals_ms,
            d.rows_read,
            d.bytes_read as f64 / 1e6,
            outcome.p(0.5)
        );
        out.push(d);
    }
    if let Some(case) = cases
        .iter()
        .find(|c| c.kind == Kind::Pages && c.range == "12mo")
    {
        let q =
            request::parse(case.bodies[0].as_bytes(), &view, now).map_err(|e| anyhow!("{e}"))?;
        println!(
            "  e.g. 12mo top pages runs:\n    {}\n    {}",
            inline(&tamis_statement(ch, tables, &q, &q.dimensions, now)?),
            inline(&tamis_statement(ch, tables, &q, &[], now)?)
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------- report

fn report(cases: &[Case], outcomes: &[Outcome], diagnosis: Option<&[Diagnosis]>) {
    let mut header = format!(
        "{:<5}  {:<28} {:>4} {:>9} {:>9} {:>9} {:>7}  {:<6} {:>7}",
        "range", "query", "runs", "p50(ms)", "p95(ms)", "max(ms)", "target", "result", "others"
    );
    if diagnosis.is_some() {
        header.push_str(&format!(
            " {:>8} {:>9} {:>11} {:>8}",
            "ch_ms", "totals_ms", "rows_read", "MB_read"
        ));
    }
    println!("{header}");
    let mut missed = Vec::new();
    for (i, (case, o)) in cases.iter().zip(outcomes).enumerate() {
        let p95 = o.p(0.95);
        let met = p95 <= case.target_ms;
        if !met {
            missed.push(format!("{} {}", case.range, case.name));
        }
        let max = o.samples.iter().copied().fold(f64::NAN, f64::max);
        let mut line = format!(
            "{:<5}  {:<28} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>7}  {:<6} {:>6.0}%",
            case.range,
            case.name,
            o.samples.len(),
            o.p(0.5),
            p95,
            max,
            format!("{:.0}", case.target_ms),
            if met { "met" } else { "MISSED" },
            o.others * 100.0
        );
        if let Some(d) = diagnosis.and_then(|d| d.get(i)) {
            line.push_str(&format!(
                " {:>8.1} {:>9.1} {:>11} {:>8.1}",
                d.elapsed_ms,
                d.totals_ms,
                d.rows_read,
                d.bytes_read as f64 / 1e6
            ));
        }
        println!("{line}");
    }
    println!(
        "(p95 is nearest-rank over the timed runs, the slowest run when fewer than 20; \"totals + comparison\" is two requests in a row; \
         others: CPU share of the machine used by processes other than ClickHouse, tamis and this bench during the timed runs; \
         ch_ms: the server's own time for the statements tamis runs for those requests, medians, summed; totals_ms: the part \
         of it spent on the totals statement tamis runs after each breakdown)"
    );
    if let Some(d) = diagnosis {
        let doubled: usize = d.iter().map(|d| d.identical_pairs).sum();
        if doubled > 0 {
            println!("note: {doubled} of these requests have no dimension, and tamis runs the very same statement twice for them (rows and totals)");
        }
    }
    let busiest = outcomes.iter().map(|o| o.others).fold(0.0, f64::max);
    if busiest > NOISY {
        println!(
            "WARNING: other processes used up to {:.0} % of the machine during the timed runs (column others): those numbers are disturbed",
            busiest * 100.0
        );
    }
    if missed.is_empty() {
        println!("targets (p95 ≤ {TARGET_30D_MS:.0} ms for 30d, ≤ {TARGET_12MO_MS:.0} ms for 12mo): all met");
    } else {
        println!("targets (p95 ≤ {TARGET_30D_MS:.0} ms for 30d, ≤ {TARGET_12MO_MS:.0} ms for 12mo): MISSED by {}", missed.join("; "));
    }
}

// ---------------------------------------------------------------- exploration

/// `--explore`: experimental tables in the bench database (never in
/// tamis's schema), and the same requests' statements timed on them, shaped
/// as tamis shapes them (each breakdown followed by its totals statement).
///
/// - fed while seeding by materialized views of their own from `traffic_in`,
///   as extra migrations would be: `x_site_hourly` (no dimension),
///   `x_<dimension>_hourly` (one dimension each), `x_page_daily` (by the
///   site's local day), the same three with `uniqHLL12` visitor sketches
///   instead of `uniq` sets (`*_hll`), and `x_wide_sum`, today's wide table
///   with plain sum columns in a `SummingMergeTree`;
/// - derived after seeding with `-MergeState` (what materialized views
///   would hold too): `x_<…>_daily` and `x_<…>_monthly` by local day and
///   month, used "tiled": whole months from the monthly table, the other
///   days from the daily one;
/// - derived after that: `x_<…>_daily_plain` and `x_<…>_monthly_plain`,
///   finished days with visitors as plain numbers (`uniqIfMerge` per local
///   day, then sums), what a job closing each local day would write. Since
///   each local day's salt gives every visitor a new key, visitors of
///   different days never coincide and per-day counts add up across days
///   (not across rows of one day: one plain table per breakdown). Today
///   still comes from the hourly states.
mod explore {
    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum Grain {
        Hour,
        Day,
        Month,
    }

    impl Grain {
        fn column(self) -> &'static str {
            match self {
                Grain::Hour => "hour DateTime",
                Grain::Day => "day Date",
                Grain::Month => "month Date",
            }
        }

        fn name(self) -> &'static str {
            match self {
                Grain::Hour => "hour",
                Grain::Day => "day",
                Grain::Month => "month",
            }
        }

        /// The expression giving this grain's column from a finer table's.
        fn from(self, finer: Grain) -> String {
            match (self, finer) {
                (Grain::Hour, _) => "hour".into(),
                (Grain::Day, _) => format!("toDate(hour, '{}')", TZ.name()),
                (Grain::Month, Grain::Day) => "toStartOfMonth(day)".into(),
                (Grain::Month, _) => format!("toStartOfMonth(toDate(hour, '{}'))", TZ.name()),
            }
        }
    }

    const DIMENSIONS: [&str; 5] = ["page", "source", "region", "browser", "device"];

    /// Fed from `traffic_in`: name, grain, dimension, distinct-count function.
    const FED: [(&str, Grain, Option<&str>, &str); 10] = [
        ("site_hourly", Grain::Hour, None, "uniqIf"),
        ("page_hourly", Grain::Hour, Some("page"), "uniqIf"),
        ("page_daily", Grain::Day, Some("page"), "uniqIf"),
        ("source_hourly", Grain::Hour, Some("source"), "uniqIf"),
        ("region_hourly", Grain::Hour, Some("region"), "uniqIf"),
        ("browser_hourly", Grain::Hour, Some("browser"), "uniqIf"),
        ("device_hourly", Grain::Hour, Some("device"), "uniqIf"),
        ("site_hourly_hll", Grain::Hour, None, "uniqHLL12If"),
        (
            "source_hourly_hll",
            Grain::Hour,
            Some("source"),
            "uniqHLL12If",
        ),
        ("page_daily_hll", Grain::Day, Some("page"), "uniqHLL12If"),
    ];

    /// Derived after seeding, in this order: name, source table, grains, dimension.
    const DERIVED: [(&str, &str, Grain, Grain, Option<&str>); 11] = [
        ("site_daily", "site_hourly", Grain::Day, Grain::Hour, None),
        ("site_monthly", "site_daily", Grain::Month, Grain::Day, None),
        (
            "page_monthly",
            "page_daily",
            Grain::Month,
            Grain::Day,
            Some("page"),
        ),
        (
            "source_daily",
            "source_hourly",
            Grain::Day,
            Grain::Hour,
            Some("source"),
        ),
        (
            "source_monthly",
            "source_daily",
            Grain::Month,
            Grain::Day,
            Some("source"),
        ),
        (
            "region_daily",
            "region_hourly",
            Grain::Day,
            Grain::Hour,
            Some("region"),
        ),
        (
            "region_monthly",
            "region_daily",
            Grain::Month,
            Grain::Day,
            Some("region"),
        ),
        (
            "browser_daily",
            "browser_hourly",
            Grain::Day,
            Grain::Hour,
            Some("browser"),
        ),
        (
            "browser_monthly",
            "browser_daily",
            Grain::Month,
            Grain::Day,
            Some("browser"),
        ),
        (
            "device_daily",
            "device_hourly",
            Grain::Day,
            Grain::Hour,
            Some("device"),
        ),
        (
            "device_monthly",
            "device_daily",
            Grain::Month,
            Grain::Day,
            Some("device"),
        ),
    ];

    const STATE_COLUMNS: &str = "visitors, pageviews, events, visits, bounces, duration, exits";

    fn states(distinct: &str) -> String {
        format!(
            "visitors AggregateFunction({distinct}, UInt64, UInt8), pageviews AggregateFunction(sum, UInt64), \
             events AggregateFunction(sum, UInt64), visits AggregateFunction(sum, Int64), bounces AggregateFunction(sum, Int64), \
             duration AggregateFunction(sum, Int64), exits AggregateFunction(sum, Int64)"
        )
    }

    fn exec(ch: &ClickHouse, sql: &str) -> anyhow::Result<String> {
        ch.try_query(sql).map_err(|e| anyhow!(e))
    }

    fn create_table(
        ch: &ClickHouse,
        name: &str,
        grain: Grain,
        dim: Option<&str>,
        distinct: &str,
    ) -> anyhow::Result<()> {
        let col = dim.map_or(String::new(), |d| format!(", {d} String"));
        let key = dim.map_or(String::new(), |d| format!(", {d}"));
        let time = grain.name();
        exec(
            ch,
            &format!(
                "CREATE TABLE {DATABASE}.x_{name} (site_id String, {}{col}, {}) ENGINE = AggregatingMergeTree() \
                 PARTITION BY (site_id, toYYYYMM({time})) ORDER BY (site_id, {time}{key})",
                grain.column(),
                states(distinct)
            ),
        )?;
        Ok(())
    }

    /// Before seeding: the tables fed from `traffic_in`, and a check that a
    /// `SummingMergeTree` merges an `AggregateFunction` column (18.16 too).
    pub fn create(ch: &ClickHouse) -> anyhow::Result<()> {
        for (name, grain, dim, distinct) in FED {
            create_table(ch, name, grain, dim, distinct)?;
            let key = dim.map_or(String::new(), |d| format!(", {d}"));
            exec(
                ch,
                &format!(
                    "CREATE MATERIALIZED VIEW {DATABASE}.x_{name}_mv TO {DATABASE}.x_{name} AS SELECT site_id, {} AS {}{key}, \
                     {distinct}State(visitor, toUInt8(visitor != 0)) AS visitors, sumState(pageviews) AS pageviews, \
                     sumState(events) AS events, sumState(visits) AS visits, sumState(bounces) AS bounces, \
                     sumState(duration) AS duration, sumState(exits) AS exits \
                     FROM {DATABASE}.traffic_in GROUP BY site_id, {}{key}",
                    grain.from(Grain::Hour),
                    grain.name(),
                    grain.name()
                ),
            )?;
        }
        let dims = tamis::sink::rows::TRAFFIC_DIMENSIONS;
        let cols: Vec<String> = dims.iter().map(|(c, ty)| format!("{c} {ty}")).collect();
        let list = tamis::sink::rows::column_names(dims);
        exec(
            ch,
            &format!(
                "CREATE TABLE {DATABASE}.x_wide_sum ({}, visitors AggregateFunction(uniqIf, UInt64, UInt8), pageviews UInt64, events UInt64, \
                 visits Int64, bounces Int64, duration Int64, exits Int64) ENGINE = SummingMergeTree() \
                 PARTITION BY (site_id, toYYYYMM(hour)) ORDER BY ({list})",
                cols.join(", ")
            ),
        )?;
        exec(
            ch,
            &format!(
                "CREATE MATERIALIZED VIEW {DATABASE}.x_wide_sum_mv TO {DATABASE}.x_wide_sum AS SELECT {list}, \
                 uniqIfState(visitor, toUInt8(visitor != 0)) AS visitors, sum(pageviews) AS pageviews, sum(events) AS events, \
                 sum(visits) AS visits, sum(bounces) AS bounces, sum(duration) AS duration, sum(exits) AS exits \
                 FROM {DATABASE}.traffic_in GROUP BY {list}"
            ),
        )?;
        // Two rows with one key, visitors 1 and 2: merged, they must hold both.
        exec(ch, &format!("CREATE TABLE {DATABASE}.x_sum_check (k String, v AggregateFunction(uniqIf, UInt64, UInt8), n UInt64) ENGINE = SummingMergeTree() ORDER BY k"))?;
        for visitor in [1, 2] {
            exec(ch, &format!("INSERT INTO {DATABASE}.x_sum_check SELECT 'a', uniqIfState(toUInt64({visitor}), toUInt8(1)), toUInt64(1)"))?;
        }
        exec(ch, &format!("OPTIMIZE TABLE {DATABASE}.x_sum_check FINAL"))?;
        let got = exec(
            ch,
            &format!("SELECT count(), uniqIfMerge(v), sum(n) FROM {DATABASE}.x_sum_check"),
        )?;
        println!(
            "--explore: created {} experimental tables fed by materialized views; SummingMergeTree merges an AggregateFunction column: {} (rows, visitors, n after OPTIMIZE FINAL: {})",
            FED.len() + 1,
            if got.trim() == "1\t2\t2" { "yes" } else { "NO" },
            got.trim().replace('\t', ", ")
        );
        Ok(())
    }

    /// After seeding: the daily and monthly tables, from the finer ones.
    pub fn derive(ch: &ClickHouse) -> anyhow::Result<()> {
        let started = Instant::now();
        for (name, from, grain, finer, dim) in DERIVED {
            create_table(ch, name, grain, dim, "uniqIf")?;
            let key = dim.map_or(String::new(), |d| format!(", {d}"));
            exec(
                ch,
                &format!(
                    "INSERT INTO {DATABASE}.x_{name} SELECT site_id, {} AS {}{key}, uniqIfMergeState(visitors), sumMergeState(pageviews), \
                     sumMergeState(events), sumMergeState(visits), sumMergeState(bounces), sumMergeState(duration), sumMergeState(exits) \
                     FROM {DATABASE}.x_{from} GROUP BY site_id, {}{key}",
                    grain.from(finer),
                    grain.name(),
                    grain.name()
                ),
            )?;
        }
        // Finished days as plain numbers: visitor keys change with each local
        // day's salt, so visitors add up across days (not across rows).
        for t in PLAIN {
            let dim = (t != "site").then_some(t);
            let col = dim.map_or(String::new(), |d| format!(", {d} String"));
            let key = dim.map_or(String::new(), |d| format!(", {d}"));
            for grain in [Grain::Day, Grain::Month] {
                let time = grain.name();
                exec(
                    ch,
                    &format!(
                        "CREATE TABLE {DATABASE}.x_{t}_{}_plain (site_id String, {}{col}, visitors UInt64, visits Int64, pageviews UInt64, \
                         events UInt64, bounces Int64, duration Int64, exits Int64) ENGINE = SummingMergeTree() \
                         PARTITION BY (site_id, toYYYYMM({time})) ORDER BY (site_id, {time}{key})",
                        if grain == Grain::Day { "daily" } else { "monthly" },
                        grain.column()
                    ),
                )?;
            }
            exec(
                ch,
                &format!(
                    "INSERT INTO {DATABASE}.x_{t}_daily_plain SELECT site_id, day{key}, uniqIfMerge(visitors), sumMerge(visits), sumMerge(pageviews), \
                     sumMerge(events), sumMerge(bounces), sumMerge(duration), sumMerge(exits) FROM {DATABASE}.x_{t}_daily GROUP BY site_id, day{key}"
                ),
            )?;
            exec(
                ch,
                &format!(
                    "INSERT INTO {DATABASE}.x_{t}_monthly_plain SELECT site_id, toStartOfMonth(day) AS month{key}, sum(visitors), sum(visits), \
                     sum(pageviews), sum(events), sum(bounces), sum(duration), sum(exits) FROM {DATABASE}.x_{t}_daily_plain GROUP BY site_id, month{key}"
                ),
            )?;
        }
        println!(
            "--explore: derived {} daily and monthly tables with states and {} with plain numbers in {:.0} s",
            DERIVED.len(),
            PLAIN.len() * 2,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Dimensions (and `site`, none) with plain daily and monthly tables.
    const PLAIN: [&str; 6] = ["site", "page", "source", "region", "browser", "device"];

    /// Local days `first..=last` as whole months and the other day ranges.
    /// (A breakdown by day cannot use monthly rows: `months_ok` false.)
    fn split(
        first: NaiveDate,
        last: NaiveDate,
        months_ok: bool,
    ) -> (Vec<(NaiveDate, NaiveDate)>, Vec<NaiveDate>) {
        let mut day_ranges = Vec::new();
        let mut months = Vec::new();
        let mut m = first.with_day(1).unwrap_or(first);
        while m <= last {
            let next = m.checked_add_months(chrono::Months::new(1)).unwrap_or(m);
            let end = next - chrono::Duration::days(1);
            let (a, b) = (first.max(m), last.min(end));
            if months_ok && a == m && b == end {
                months.push(m);
            } else {
                day_ranges.push((a, b));
            }
            m = next;
        }
        (day_ranges, months)
    }

    /// The range from plain tables for finished days (whole months from
    /// `x_<t>_monthly_plain`, other days from `x_<t>_daily_plain`) and from
    /// states for today (`today_states`: table, grouping expression, filter).
    fn plain(
        t: &str,
        d_day: Option<&str>,
        d_month: Option<&str>,
        first: NaiveDate,
        last: NaiveDate,
        today: NaiveDate,
        today_states: (&str, Option<&str>, &str),
    ) -> String {
        let cols = named(&[
            "toFloat64(visitors)",
            "toFloat64(visits)",
            "toFloat64(pageviews)",
            "toFloat64(events)",
            "toFloat64(bounces)",
            "toFloat64(duration)",
            "toFloat64(exits)",
        ]);
        let site = format!("site_id = '{SITE}'");
        let mut parts = Vec::new();
        let finished = last.min(today - chrono::Duration::days(1));
        if first <= finished {
            let (day_ranges, months) =
                split(first, finished, !(d_day.is_some() && d_month.is_none()));
            if !day_ranges.is_empty() {
                let days: Vec<String> = day_ranges
                    .iter()
                    .map(|(a, b)| format!("(day >= toDate('{a}') AND day <= toDate('{b}'))"))
                    .collect();
                let d = d_day.map_or(String::new(), |d| format!("{d} AS d, "));
                parts.push(format!(
                    "SELECT {d}{cols} FROM {DATABASE}.x_{t}_daily_plain WHERE {site} AND ({})",
                    days.join(" OR ")
                ));
            }
            if let (Some(a), Some(b)) = (months.first(), months.last()) {
                let d = d_month.map_or(String::new(), |d| format!("{d} AS d, "));
                parts.push(format!("SELECT {d}{cols} FROM {DATABASE}.x_{t}_monthly_plain WHERE {site} AND month >= toDate('{a}') AND month <= toDate('{b}')"));
            }
        }
        if last >= today {
            let (table, d, filter) = today_states;
            let base = named(&sql::BASE);
            parts.push(match d {
                Some(d) => format!("SELECT {d} AS d, {base} FROM {DATABASE}.x_{table} WHERE {site} AND {filter} GROUP BY d"),
                None => format!("SELECT {base} FROM {DATABASE}.x_{table} WHERE {site} AND {filter}"),
            });
        }
        let sums: Vec<String> = (1..=7).map(|i| format!("sum(c{i})")).collect();
        let grouped = if d_day.is_some() { "d, " } else { "" };
        let group = if d_day.is_some() { " GROUP BY d" } else { "" };
        format!(
            "SELECT {grouped}{} FROM ({}){group}",
            sums.join(", "),
            parts.join(" UNION ALL ")
        )
    }

    /// Seven value expressions named c1..c7 (a union names its columns
    /// after its first branch).
    fn named(values: &[&str]) -> String {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v} AS c{}", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Server time (ms) and rows read of statements run one after the other.
    fn time_all(ch: &ClickHouse, statements: &[String]) -> anyhow::Result<(f64, u64)> {
        let mut ms = 0.0;
        let mut rows = 0;
        for s in statements {
            let t = time_statement(ch, s)?;
            ms += t.elapsed_ms;
            rows += t.rows_read;
        }
        Ok((ms, rows))
    }

    fn base(distinct: &str) -> String {
        sql::BASE
            .join(", ")
            .replace("uniqIfMerge(", &format!("{distinct}Merge("))
    }

    /// `SELECT [d,] base FROM table WHERE filter [GROUP BY d]`.
    fn flat(table: &str, d: Option<&str>, filter: &str, distinct: &str) -> String {
        let base = base(distinct);
        match d {
            Some(d) => format!(
                "SELECT {d} AS d, {base} FROM {DATABASE}.x_{table} WHERE {filter} GROUP BY d"
            ),
            None => format!("SELECT {base} FROM {DATABASE}.x_{table} WHERE {filter}"),
        }
    }

    /// The local days `first..=last` from `x_<table>_monthly` (months that
    /// lie wholly inside) and `x_<table>_daily` (the other days); `d_day` and
    /// `d_month` group each table's rows.
    fn tiled(
        table: &str,
        d_day: Option<&str>,
        d_month: Option<&str>,
        first: NaiveDate,
        last: NaiveDate,
    ) -> String {
        let (day_ranges, months) = split(first, last, !(d_day.is_some() && d_month.is_none()));
        let site = format!("site_id = '{SITE}'");
        let mut parts = Vec::new();
        if !day_ranges.is_empty() {
            let days: Vec<String> = day_ranges
                .iter()
                .map(|(a, b)| format!("(day >= toDate('{a}') AND day <= toDate('{b}'))"))
                .collect();
            let d = d_day.map_or(String::new(), |d| format!("{d} AS d, "));
            parts.push(format!(
                "SELECT {d}{STATE_COLUMNS} FROM {DATABASE}.x_{table}_daily WHERE {site} AND ({})",
                days.join(" OR ")
            ));
        }
        if let (Some(a), Some(b)) = (months.first(), months.last()) {
            let d = d_month.map_or(String::new(), |d| format!("{d} AS d, "));
            parts.push(format!("SELECT {d}{STATE_COLUMNS} FROM {DATABASE}.x_{table}_monthly WHERE {site} AND month >= toDate('{a}') AND month <= toDate('{b}')"));
        }
        let base = base("uniqIf");
        let group = if d_day.is_some() { " GROUP BY d" } else { "" };
        let d = if d_day.is_some() { "d, " } else { "" };
        format!(
            "SELECT {d}{base} FROM ({}){group}",
            parts.join(" UNION ALL ")
        )
    }

    fn dimension_of(kind: Kind) -> Option<&'static str> {
        match kind {
            Kind::Pages => Some("page"),
            Kind::Sources => Some("source"),
            Kind::Regions => Some("region"),
            Kind::Browsers => Some("browser"),
            Kind::Devices => Some("device"),
            Kind::Totals | Kind::Timeseries | Kind::Goals | Kind::Funnel => None,
        }
    }

    pub fn run(
        ch: &ClickHouse,
        cases: &[Case],
        now: DateTime<Utc>,
        current: Option<&[Diagnosis]>,
    ) -> anyhow::Result<String> {
        println!("\n-- exploration: the same requests on experimental tables");
        debug_assert!(DIMENSIONS
            .iter()
            .all(|d| FED.iter().any(|f| f.2 == Some(*d))));
        let mut out = String::new();
        let _ = writeln!(out, "\n== exploration (--explore): server time in ms of the statements tamis would run for each request, summed");
        let sizes = exec(
            ch,
            &format!(
                "SELECT table, sum(rows), round(sum(data_compressed_bytes) / 1e6, 1) FROM system.parts \
                 WHERE database = '{DATABASE}' AND active AND (table LIKE 'x\\\\_%' OR table = 'traffic_hourly') GROUP BY table ORDER BY table"
            ),
        )?;
        let _ = writeln!(
            out,
            "tables (rows, MB compressed): {}",
            sizes
                .lines()
                .map(|l| l.replace('\t', " "))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let view = site_view();
        let header = format!(
            "{:<5}  {:<28} {:>8} {:>10} {:>8} {:>8} {:>8} {:>11} {:>8} {:>11}",
            "range",
            "query",
            "now",
            "plain_sums",
            "hourly",
            "tiled",
            "hll",
            "tiled_rows",
            "plain",
            "plain_rows"
        );
        println!("  {header}");
        let _ = writeln!(out, "{header}");
        let tz = TZ.name();
        let today = now.with_timezone(&TZ).date_naive();
        let today_start = request::local_midnight(today, TZ).timestamp();
        for (i, case) in cases.iter().enumerate() {
            // Goals and funnels have no experimental tables.
            if matches!(case.kind, Kind::Goals | Kind::Funnel) {
                continue;
            }
            let dim = dimension_of(case.kind);
            let month_series = case.range == "12mo";
            let (mut wide, mut hourly, mut tiled_s, mut hll, mut plain_s) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let hll_table = match case.kind {
                Kind::Totals | Kind::Timeseries => Some("site_hourly_hll"),
                Kind::Sources => Some("source_hourly_hll"),
                Kind::Pages => Some("page_daily_hll"),
                _ => None,
            };
            for body in &case.bodies {
                let q = request::parse(body.as_bytes(), &view, now).map_err(|e| anyhow!("{e}"))?;
                for statement in [
                    sql::build(Tables::Own, &q, &q.dimensions, tz, Scope::Selected),
                    sql::build(Tables::Own, &q, &[], tz, Scope::Selected),
                ] {
                    wide.push(
                        inline(&statement)
                            .replace(
                                " FROM traffic_hourly",
                                &format!(" FROM {DATABASE}.x_wide_sum"),
                            )
                            .replace("sumMerge(", "sum("),
                    );
                }
                let hours = format!(
                    "site_id = '{SITE}' AND hour >= toDateTime({}) AND hour < toDateTime({})",
                    q.from.timestamp(),
                    q.to.timestamp()
                );
                let first = q.from.with_timezone(&TZ).date_naive();
                let last = (q.to - chrono::Duration::seconds(1))
                    .with_timezone(&TZ)
                    .date_naive();
                let days = format!(
                    "site_id = '{SITE}' AND day >= toDate('{first}') AND day <= toDate('{last}')"
                );
                let series_hour = if month_series {
                    format!("toString(toStartOfMonth(toDate(hour, '{tz}')))")
                } else {
                    format!("toString(toDate(hour, '{tz}'))")
                };
                // hourly rollups (pages by local day)
                hourly.push(match (case.kind, dim) {
                    (Kind::Timeseries, _) => {
                        flat("site_hourly", Some(&series_hour), &hours, "uniqIf")
                    }
                    (Kind::Pages, _) => flat("page_daily", Some("page"), &days, "uniqIf"),
                    (_, Some(d)) => flat(&format!("{d}_hourly"), Some(d), &hours, "uniqIf"),
                    (_, None) => flat("site_hourly", None, &hours, "uniqIf"),
                });
                hourly.push(flat("site_hourly", None, &hours, "uniqIf"));
                // tiled daily + monthly rollups
                tiled_s.push(match (case.kind, dim) {
                    (Kind::Timeseries, _) if month_series => tiled(
                        "site",
                        Some("toString(toStartOfMonth(day))"),
                        Some("toString(month)"),
                        first,
                        last,
                    ),
                    (Kind::Timeseries, _) => {
                        tiled("site", Some("toString(day)"), None, first, last)
                    }
                    (_, Some(d)) => tiled(d, Some(d), Some(d), first, last),
                    (_, None) => tiled("site", None, None, first, last),
                });
                tiled_s.push(tiled("site", None, None, first, last));
                // finished days as plain numbers, today from states
                let today_hours = format!(
                    "hour >= toDateTime({}) AND hour < toDateTime({})",
                    today_start,
                    q.to.timestamp()
                );
                let today_day = format!("day = toDate('{today}')");
                let site_today = ("site_hourly", None, today_hours.as_str());
                plain_s.push(match (case.kind, dim) {
                    (Kind::Timeseries, _) if month_series => plain(
                        "site",
                        Some("toString(toStartOfMonth(day))"),
                        Some("toString(month)"),
                        first,
                        last,
                        today,
                        ("site_hourly", Some(&series_hour), &today_hours),
                    ),
                    (Kind::Timeseries, _) => plain(
                        "site",
                        Some("toString(day)"),
                        None,
                        first,
                        last,
                        today,
                        ("site_hourly", Some(&series_hour), &today_hours),
                    ),
                    (Kind::Pages, _) => plain(
                        "page",
                        Some("page"),
                        Some("page"),
                        first,
                        last,
                        today,
                        ("page_daily", Some("page"), &today_day),
                    ),
                    (_, Some(d)) => plain(
                        d,
                        Some(d),
                        Some(d),
                        first,
                        last,
                        today,
                        (&format!("{d}_hourly"), Some(d), &today_hours),
                    ),
                    (_, None) => plain("site", None, None, first, last, today, site_today),
                });
                plain_s.push(plain("site", None, None, first, last, today, site_today));
                // visitor sketches instead of sets
                if let Some(table) = hll_table {
                    hll.push(match case.kind {
                        Kind::Timeseries => flat(table, Some(&series_hour), &hours, "uniqHLL12If"),
                        Kind::Pages => flat(table, Some("page"), &days, "uniqHLL12If"),
                        Kind::Sources => flat(table, Some("source"), &hours, "uniqHLL12If"),
                        _ => flat(table, None, &hours, "uniqHLL12If"),
                    });
                    hll.push(flat("site_hourly_hll", None, &hours, "uniqHLL12If"));
                }
            }
            let wide_ms = time_all(ch, &wide)?.0;
            let hourly_ms = time_all(ch, &hourly)?.0;
            let (tiled_ms, tiled_rows) = time_all(ch, &tiled_s)?;
            let hll_ms = if hll.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", time_all(ch, &hll)?.0)
            };
            let (plain_ms, plain_rows) = time_all(ch, &plain_s)?;
            let now_ms = current
                .and_then(|d| d.get(i))
                .map_or("-".to_string(), |d| format!("{:.1}", d.elapsed_ms));
            let line = format!(
                "{:<5}  {:<28} {:>8} {:>10.1} {:>8.1} {:>8.1} {:>8} {:>11} {:>8.1} {:>11}",
                case.range,
                case.name,
                now_ms,
                wide_ms,
                hourly_ms,
                tiled_ms,
                hll_ms,
                tiled_rows,
                plain_ms,
                plain_rows
            );
            println!("  {line}");
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "(now: traffic_hourly, as tamis runs today; plain_sums: x_wide_sum, the same rows with plain sum columns; \
             hourly: x_site_hourly for totals and series, x_page_daily for pages, x_<dimension>_hourly otherwise; \
             tiled: x_<…>_monthly for whole local months + x_<…>_daily for the other days; hll: like hourly with uniqHLL12 \
             sketches (totals, series, sources, pages only); tiled_rows: rows the tiled statements read; plain: finished days \
             from x_<…>_monthly_plain / x_<…>_daily_plain, where visitors are plain per-day counts (visitor keys change with each \
             local day's salt, so they add up across days), today from the states of the hourly tables; plain_rows: rows those read)"
        );

        // Where the time goes in one statement: the 12-month totals.
        if let Some(case) = cases
            .iter()
            .find(|c| c.kind == Kind::Totals && c.range == "12mo")
        {
            let q = request::parse(case.bodies[0].as_bytes(), &view, now)
                .map_err(|e| anyhow!("{e}"))?;
            let filter = format!(
                "site_id = '{SITE}' AND hour >= toDateTime({}) AND hour < toDateTime({})",
                q.from.timestamp(),
                q.to.timestamp()
            );
            let first = q.from.with_timezone(&TZ).date_naive();
            let last = (q.to - chrono::Duration::seconds(1))
                .with_timezone(&TZ)
                .date_naive();
            let sums = "sumMerge(visits), sumMerge(pageviews), sumMerge(events), sumMerge(bounces), sumMerge(duration), sumMerge(exits)";
            let today_hours = format!(
                "hour >= toDateTime({today_start}) AND hour < toDateTime({})",
                q.to.timestamp()
            );
            let plain_totals = plain(
                "site",
                None,
                None,
                first,
                last,
                today,
                ("site_hourly", None, &today_hours),
            );
            let mut parts = Vec::new();
            for (label, statement) in [
                ("count() (scan and filter only)", format!("SELECT count() FROM {DATABASE}.traffic_hourly WHERE {filter}")),
                ("6 sumMerge", format!("SELECT {sums} FROM {DATABASE}.traffic_hourly WHERE {filter}")),
                ("uniqIfMerge(visitors)", format!("SELECT uniqIfMerge(visitors) FROM {DATABASE}.traffic_hourly WHERE {filter}")),
                ("all 7 (as tamis)", format!("SELECT {} FROM {DATABASE}.traffic_hourly WHERE {filter}", base("uniqIf"))),
                ("6 plain sum() on x_wide_sum", format!("SELECT {} FROM {DATABASE}.x_wide_sum WHERE {filter}", sums.replace("sumMerge(", "sum("))),
                ("all 7 on x_site_hourly", flat("site_hourly", None, &filter, "uniqIf")),
                ("6 sumMerge on x_site_hourly", format!("SELECT {sums} FROM {DATABASE}.x_site_hourly WHERE {filter}")),
                ("all 7 tiled (x_site_monthly + x_site_daily)", tiled("site", None, None, first, last)),
                ("all 7 on x_site_hourly_hll", flat("site_hourly_hll", None, &filter, "uniqHLL12If")),
                ("all 7 plain (finished days) + states (today)", plain_totals.clone()),
            ] {
                let t = time_statement(ch, &statement)?;
                parts.push(format!("{label}: {:.0} ms ({} rows)", t.elapsed_ms, t.rows_read));
            }
            let _ = writeln!(
                out,
                "12mo totals statement, part by part: {}",
                parts.join("; ")
            );
            let answer = |statement: String| -> anyhow::Result<String> {
                let row = exec(ch, &statement)?;
                let v: Vec<&str> = row.trim().split('\t').collect();
                Ok(format!(
                    "{} visitors, {} pageviews",
                    v.first().unwrap_or(&"?"),
                    v.get(2).unwrap_or(&"?")
                ))
            };
            let _ = writeln!(
                out,
                "12mo totals from each: traffic_hourly {}; x_wide_sum {}; x_site_hourly {}; tiled {}; x_site_hourly_hll {}; plain {}",
                answer(format!("SELECT {} FROM {DATABASE}.traffic_hourly WHERE {filter}", base("uniqIf")))?,
                answer(format!("SELECT {} FROM {DATABASE}.x_wide_sum WHERE {filter}", base("uniqIf").replace("sumMerge(", "sum(")))?,
                answer(flat("site_hourly", None, &filter, "uniqIf"))?,
                answer(tiled("site", None, None, first, last))?,
                answer(flat("site_hourly_hll", None, &filter, "uniqHLL12If"))?,
                answer(plain_totals)?,
            );
        }
        Ok(out)
    }
}
