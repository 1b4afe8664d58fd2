//! A real ClickHouse cluster for integration tests: one ZooKeeper (Debian's
//! `zookeeper` package, standalone) and four `clickhouse-server` processes
//! forming 2 shards × 2 replicas on loopback, each with its own ports, data
//! directory and `{shard}`/`{replica}` macros, all knowing the cluster
//! [`CLUSTER`] with `internal_replication` and the ZooKeeper. Nothing is
//! mocked.
//!
//! Each node is a [`ClickHouse`] of `super::clickhouse`, its configuration
//! `deploy/clickhouse/config.xml.in` plus `deploy/clickhouse/cluster.xml.in`
//! as `config.d/cluster.xml`, so it stops, is killed and restarts as a
//! single server does. ZooKeeper runs under the same watchdog: no process
//! outlives the test process, however it ends.
//!
//! Environment:
//! - `TAMIS_TEST_JAVA`: the Java runtime (default `/usr/bin/java`, then
//!   `java` on `PATH`).
//! - `TAMIS_TEST_ZOOKEEPER_JAR`: ZooKeeper's jar (default
//!   `/usr/share/java/zookeeper.jar`, whose manifest names its libraries).

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::clickhouse::{free_port_list, spawn_watched, stop, tail, ClickHouse, Failure, Stop};

/// The cluster's name in every node's `<remote_servers>`.
pub const CLUSTER: &str = "tamis";
pub const SHARDS: u32 = 2;
pub const REPLICAS: u32 = 2;

/// What a node adds to `config.xml.in`, shared with operators as the
/// README's example.
const CLUSTER_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/clickhouse/cluster.xml.in"
));

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logger for ZooKeeper's SLF4J (Debian's `libslf4j-java`, a dependency
/// of the package): without it ZooKeeper says nothing when it fails.
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";
const ZOOKEEPER_NOT_FOUND: &str =
    "ZooKeeper not found: run `deploy/setup.sh` (or `apt-get install zookeeper`)";
const JAVA_NOT_FOUND: &str =
    "java not found (ZooKeeper needs it): run `deploy/setup.sh` (or `apt-get install default-jre-headless`)";

const START_ATTEMPTS: u32 = 3;
const LOG_TAIL: usize = 40;

/// A running 2 × 2 cluster and its ZooKeeper, stopped when dropped.
pub struct Cluster {
    /// Shard 1 replica 1, shard 1 replica 2, shard 2 replica 1, shard 2
    /// replica 2. Dropped before ZooKeeper (fields drop in order).
    nodes: Vec<ClickHouse>,
    pub zookeeper: ZooKeeper,
}

impl Cluster {
    /// Starts ZooKeeper, waits until it serves, then the four nodes, and
    /// waits until each has its ZooKeeper session. Panics with the
    /// servers' own error output if any cannot be started.
    pub fn start() -> Cluster {
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match start_once() {
                Ok(cluster) => return cluster,
                Err(Failure::PortTaken(message)) if attempt < START_ATTEMPTS => {
                    last_error = message
                }
                Err(Failure::PortTaken(message) | Failure::Fatal(message)) => panic!("{message}"),
            }
        }
        panic!("{last_error}")
    }

    fn index(shard: u32, replica: u32) -> usize {
        assert!(
            (1..=SHARDS).contains(&shard) && (1..=REPLICAS).contains(&replica),
            "no node shard {shard} replica {replica}"
        );
        ((shard - 1) * REPLICAS + (replica - 1)) as usize
    }

    /// The node of `shard` and `replica`, both counted from 1 as in the
    /// macros.
    pub fn node(&self, shard: u32, replica: u32) -> &ClickHouse {
        &self.nodes[Self::index(shard, replica)]
    }

    pub fn node_mut(&mut self, shard: u32, replica: u32) -> &mut ClickHouse {
        &mut self.nodes[Self::index(shard, replica)]
    }

    /// Every node as (shard, replica, node), in order.
    pub fn nodes(&self) -> impl Iterator<Item = (u32, u32, &ClickHouse)> {
        self.nodes.iter().enumerate().map(|(i, node)| {
            let i = i as u32;
            (i / REPLICAS + 1, i % REPLICAS + 1, node)
        })
    }

    /// Every node's HTTP URL, in the order of [`Cluster::nodes`].
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Runs `sql` on one node; panics with ClickHouse's error text.
    pub fn query(&self, shard: u32, replica: u32, sql: &str) -> String {
        self.node(shard, replica).query(sql)
    }

    /// Stops one node (SIGTERM, or SIGKILL as in a crash), keeping its
    /// data for [`Cluster::restart`].
    pub fn stop(&mut self, shard: u32, replica: u32, how: Stop) {
        self.node_mut(shard, replica).stop(how);
    }

    /// Stops several nodes at once: a clean stop of 18.16 takes about ten
    /// seconds, so they stop in parallel.
    pub fn stop_many(&mut self, which: &[(u32, u32)], how: Stop) {
        let chosen: Vec<usize> = which.iter().map(|&(s, r)| Self::index(s, r)).collect();
        std::thread::scope(|scope| {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if chosen.contains(&i) {
                    scope.spawn(move || node.stop(how));
                }
            }
        });
    }

    /// Starts a stopped node again (same ports, same data) and waits until
    /// it has its ZooKeeper session back.
    pub fn restart(&mut self, shard: u32, replica: u32) {
        let node = self.node_mut(shard, replica);
        node.restart();
        wait_zookeeper_session(node);
    }

    /// Restarts ZooKeeper after [`ZooKeeper::stop`], and waits until every
    /// running node reaches it again.
    pub fn restart_zookeeper(&mut self) {
        self.zookeeper.restart();
        for node in self.nodes.iter().filter(|n| n.is_up()) {
            wait_zookeeper_session(node);
        }
    }

    /// Waits until every running replica of `db.table` has fetched what
    /// its shard's other replicas hold (`SYSTEM SYNC REPLICA`, in 18.16).
    pub fn sync_replicas(&self, db: &str, table: &str) {
        for node in self.nodes.iter().filter(|n| n.is_up()) {
            node.query(&format!("SYSTEM SYNC REPLICA {db}.{table}"));
        }
    }

    /// Syncs `db.table` and runs `sql` on both replicas of each shard:
    /// panics unless they answer the same; returns each shard's answer.
    pub fn replicas_agree(&self, db: &str, table: &str, sql: &str) -> Vec<String> {
        self.sync_replicas(db, table);
        (1..=SHARDS)
            .map(|shard| {
                let answers: Vec<String> = (1..=REPLICAS)
                    .map(|replica| self.query(shard, replica, sql))
                    .collect();
                assert!(
                    answers.windows(2).all(|w| w[0] == w[1]),
                    "the replicas of shard {shard} disagree on {sql}: {answers:?}"
                );
                answers.into_iter().next().unwrap_or_default()
            })
            .collect()
    }

    /// A tamis config `text` made to use this cluster: its `[clickhouse]`
    /// section gains the cluster's name and every node's URL.
    pub fn with_cluster(&self, text: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        text.replacen(
            "[clickhouse]\n",
            &format!(
                "[clickhouse]\ncluster = \"{CLUSTER}\"\nurls = [{}]\n",
                urls.join(", ")
            ),
            1,
        )
    }
}

fn start_once() -> Result<Cluster, Failure> {
    let count = (SHARDS * REPLICAS) as usize;
    // ZooKeeper's port, then (HTTP, TCP, interserver) per node.
    let ports = free_port_list(1 + 3 * count)
        .map_err(|e| Failure::Fatal(format!("cluster: cannot pick free ports: {e}")))?;
    let zookeeper = ZooKeeper::start_on(ports[0])?;
    let node_ports: Vec<(u16, u16, u16)> =
        ports[1..].chunks(3).map(|p| (p[0], p[1], p[2])).collect();
    let shards: String = (0..SHARDS)
        .map(|s| {
            let replicas: String = (0..REPLICAS)
                .map(|r| {
                    let tcp = node_ports[(s * REPLICAS + r) as usize].1;
                    format!(
                        "                <replica><host>127.0.0.1</host><port>{tcp}</port></replica>\n"
                    )
                })
                .collect();
            format!(
                "            <shard>\n                <internal_replication>true</internal_replication>\n{replicas}            </shard>\n"
            )
        })
        .collect();
    // The nodes start in parallel: each waits for its own /ping.
    let started: Vec<Result<ClickHouse, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = node_ports
            .iter()
            .enumerate()
            .map(|(i, &(http, tcp, interserver))| {
                let (shard, replica) = (i as u32 / REPLICAS + 1, i as u32 % REPLICAS + 1);
                let config = CLUSTER_TEMPLATE
                    .replace("@INTERSERVER_PORT@", &interserver.to_string())
                    .replace("@SHARD@", &shard.to_string())
                    .replace("@REPLICA@", &format!("r{replica}"))
                    .replace("@CLUSTER@", CLUSTER)
                    .replace("@SHARDS@", shards.trim_end())
                    .replace("@ZOOKEEPER_PORT@", &zookeeper.port.to_string());
                scope.spawn(move || {
                    ClickHouse::start_on(http, tcp, &[("config.d/cluster.xml", config)])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::Fatal("a node's start panicked".into())))
            })
            .collect()
    });
    let mut nodes = Vec::with_capacity(count);
    let mut failure = None;
    for result in started {
        match result {
            Ok(node) => nodes.push(node),
            // A port taken by someone else meanwhile: the whole cluster
            // starts again on new ports (every node lists every port).
            Err(Failure::PortTaken(m)) => failure = Some(Failure::PortTaken(m)),
            Err(Failure::Fatal(m)) => {
                if !matches!(failure, Some(Failure::Fatal(_))) {
                    failure = Some(Failure::Fatal(m));
                }
            }
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    for node in &nodes {
        wait_zookeeper_session(node);
    }
    Ok(Cluster { nodes, zookeeper })
}

/// Waits until `node` reads ZooKeeper (its session is up): a replicated
/// table can be made or written only then.
fn wait_zookeeper_session(node: &ClickHouse) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match node.try_query("SELECT count() FROM system.zookeeper WHERE path = '/'") {
            Ok(_) => return,
            Err(error) if Instant::now() > deadline => panic!(
                "ClickHouse at {} has no ZooKeeper session after 60 s: {error}\n{}",
                node.url,
                node.error_log_tail(LOG_TAIL)
            ),
            Err(_) => sleep(Duration::from_millis(100)),
        }
    }
}

/// A running standalone ZooKeeper on a loopback port, with its data in a
/// temporary directory; stopped (and the directory removed) when dropped.
pub struct ZooKeeper {
    pub port: u16,
    /// `zoo.cfg`, `data/`, the watchdog's logs.
    pub dir: PathBuf,
    args: Vec<String>,
    tempdir: Option<tempfile::TempDir>,
    watchdog: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl ZooKeeper {
    fn start_on(port: u16) -> Result<ZooKeeper, Failure> {
        let fatal = |what: &str, e: io::Error| Failure::Fatal(format!("ZooKeeper: {what}: {e}"));
        let java = java().ok_or_else(|| Failure::Fatal(JAVA_NOT_FOUND.to_string()))?;
        let jar = std::env::var_os("TAMIS_TEST_ZOOKEEPER_JAR")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(ZOOKEEPER_JAR), PathBuf::from);
        if !jar.is_file() {
            return Err(Failure::Fatal(format!(
                "{ZOOKEEPER_NOT_FOUND} ({} is missing)",
                jar.display()
            )));
        }
        let tempdir = tempfile::Builder::new()
            .prefix("tamis-zookeeper-")
            .tempdir()
            .map_err(|e| fatal("cannot create a temporary directory", e))?;
        let dir = tempdir.path().to_path_buf();
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| fatal("cannot create its data directory", e))?;
        // Standalone; `srvr` (and `ruok`) answered on the client port for
        // the readiness check; no admin web server (it would take 8080).
        // A tick of one second allows sessions of 2 to 20 s.
        let config = format!(
            "tickTime=1000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n",
            data.display()
        );
        let config_path = dir.join("zoo.cfg");
        fs::write(&config_path, config).map_err(|e| fatal("cannot write zoo.cfg", e))?;
        let mut classpath = jar.display().to_string();
        if Path::new(SLF4J_SIMPLE).is_file() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE);
        }
        // A small heap and the quick JIT tier: the test machines have two
        // cores for four ClickHouse servers beside.
        let args = vec![
            java.display().to_string(),
            "-Xms32m".into(),
            "-Xmx256m".into(),
            "-XX:+UseSerialGC".into(),
            "-XX:TieredStopAtLevel=1".into(),
            "-Djava.net.preferIPv4Stack=true".into(),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn".into(),
            "-cp".into(),
            classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain".into(),
            config_path.display().to_string(),
        ];
        let (watchdog, stdin) =
            spawn_watched(&args, &dir).map_err(|e| fatal("cannot run `sh` to start it", e))?;
        let mut zookeeper = ZooKeeper {
            port,
            dir,
            args,
            tempdir: Some(tempdir),
            watchdog: Some(watchdog),
            stdin,
        };
        zookeeper.wait_serving()?;
        Ok(zookeeper)
    }

    /// Whether it serves now: `srvr` reports its mode. (`ruok` answers
    /// before it serves, and a ClickHouse whose DDL worker missed
    /// ZooKeeper at start-up can crash later.)
    pub fn is_serving(&self) -> bool {
        four_letter(self.port, "srvr").is_ok_and(|answer| answer.contains("Mode: standalone"))
    }

    fn wait_serving(&mut self) -> Result<(), Failure> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.watchdog.as_mut().map(|w| w.try_wait()) {
                let logs = self.logs();
                let message = format!("ZooKeeper exited during start-up ({status})\n{logs}");
                return Err(if logs.contains("Address already in use") {
                    Failure::PortTaken(message)
                } else {
                    Failure::Fatal(message)
                });
            }
            if self.is_serving() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Failure::Fatal(format!(
                    "ZooKeeper did not serve on 127.0.0.1:{} within 60 s\n{}",
                    self.port,
                    self.logs()
                )));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- last {LOG_TAIL} lines of ZooKeeper's stderr ({}):\n{}",
            self.args.join(" "),
            tail(&self.dir.join("stderr.log"), LOG_TAIL)
        )
    }

    /// ZooKeeper's process id, while it runs (for CPU accounting).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        super::clickhouse::pid_in(&self.dir)
    }

    /// Stops ZooKeeper (SIGTERM, or SIGKILL as in a crash), keeping its
    /// data for [`ZooKeeper::restart`]. Returns once the process is gone.
    pub fn stop(&mut self, how: Stop) {
        let Some(mut watchdog) = self.watchdog.take() else {
            panic!("ZooKeeper on port {} is already stopped", self.port);
        };
        let pid = fs::read_to_string(self.dir.join("server.pid")).unwrap_or_default();
        let signal = match how {
            Stop::Graceful => "-TERM",
            Stop::Kill => "-KILL",
        };
        let _ = Command::new("kill")
            .args([signal, pid.trim()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Without the "stopping" marker the watchdog leaves the directory.
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(watchdog.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        if matches!(watchdog.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = watchdog.wait();
        }
        drop(self.stdin.take());
        assert!(
            !self.is_serving(),
            "ZooKeeper on port {} still serves after being stopped",
            self.port
        );
    }

    /// Starts the stopped ZooKeeper again, same port and data, and waits
    /// until it serves.
    pub fn restart(&mut self) {
        assert!(
            self.watchdog.is_none(),
            "ZooKeeper is running; stop it first"
        );
        let _ = fs::remove_file(self.dir.join("server.pid"));
        let (watchdog, stdin) = spawn_watched(&self.args, &self.dir)
            .unwrap_or_else(|e| panic!("cannot run `sh` to restart ZooKeeper: {e}"));
        self.watchdog = Some(watchdog);
        self.stdin = stdin;
        if let Err(Failure::PortTaken(message) | Failure::Fatal(message)) = self.wait_serving() {
            panic!("ZooKeeper did not come back on its port: {message}");
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        // End of input: the watchdog kills ZooKeeper and removes the
        // directory.
        drop(self.stdin.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            stop(&mut watchdog, &self.dir);
        }
        drop(self.tempdir.take());
    }
}

fn java() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TAMIS_TEST_JAVA").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let fixed = PathBuf::from("/usr/bin/java");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("java"))
        .find(|p| p.is_file())
}

/// One of ZooKeeper's four-letter commands on its client port.
fn four_letter(port: u16, command: &str) -> io::Result<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(command.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
