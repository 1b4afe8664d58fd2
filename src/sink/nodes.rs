//! The ClickHouse servers tamis talks to, as shards of replicas: one shard
//! of one replica for a single server, or a cluster's nodes grouped by the
//! `shard` macro each node's replicated tables are made with (asked of
//! each node: `clickhouse.urls` is a flat list, and its order may change
//! without changing which node holds what).
//!
//! A shard is named by its macro's value, never by a position in the
//! configuration, so that what a collector notes about a shard (the batch
//! in flight) still names the same shard after the configuration is
//! reordered.
//!
//! What is asked of one shard goes to one of its replicas, the others
//! taking over when it cannot be reached ([`Nodes::on_shard`]); what reads
//! the whole cluster goes through the `Distributed` tables of any node
//! ([`Nodes::on_any`], [`Nodes::table`]).
//!
//! What must exist once per cluster (the daily salts, the rollups, the
//! imported history and their ledgers) lives on the *home* shard
//! ([`Nodes::home`]): the first shard by name, the same for every
//! collector. tamis's own records (audit log, deletion reports, salt
//! destruction records), read through their `Distributed` tables, go to
//! the first shard that can be reached ([`Nodes::on_some_shard`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{ClickHouseSettings, ClickHouseUrl};

/// One node: its address (for messages) and a client for it.
#[derive(Clone)]
pub struct Node {
    pub url: ClickHouseUrl,
    pub client: clickhouse::Client,
    /// Its `replica` macro ("" for a single server).
    pub replica: String,
}

/// The replicas of one shard.
pub struct Shard {
    /// The `shard` macro of its nodes ("" for a single server).
    pub name: String,
    pub replicas: Vec<Node>,
    /// The replica asked first: the last one that answered.
    preferred: AtomicUsize,
}

impl Shard {
    /// The replicas in the order to ask them: the one that answered last,
    /// then the others.
    pub fn in_order(&self) -> impl Iterator<Item = (usize, &Node)> {
        let first = self.preferred.load(Ordering::Relaxed) % self.replicas.len();
        (0..self.replicas.len())
            .map(move |i| (first + i) % self.replicas.len())
            .map(|i| (i, &self.replicas[i]))
    }

    /// Remembers the replica that answered, to ask it first next time.
    pub fn prefer(&self, index: usize) {
        self.preferred.store(index, Ordering::Relaxed);
    }
}

/// How a read names the tables it reads: on a single server the tables
/// themselves; on a cluster the `Distributed` table over each (which reads
/// one live replica of every shard and merges their aggregate states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    Own,
    Distributed,
}

impl Tables {
    /// The table to read `name` through.
    pub fn name(self, name: &str) -> String {
        match self {
            Tables::Own => name.to_string(),
            Tables::Distributed => format!("{name}{}", super::schema::DISTRIBUTED_SUFFIX),
        }
    }

    /// The operator filtering a read by a subquery's rows. Through
    /// `Distributed` tables, `GLOBAL IN`: the subquery runs once, through
    /// the cluster, and its answer goes to every shard. A plain `IN` would
    /// run it on each shard against that shard's rows alone (and with a
    /// `Distributed` table inside it ClickHouse refuses it, under its
    /// default `distributed_product_mode`), while the row a subquery looks
    /// for (the newest version of a day) may be on another shard than the
    /// rows it selects.
    pub fn in_subquery(self) -> &'static str {
        match self {
            Tables::Own => "IN",
            Tables::Distributed => "GLOBAL IN",
        }
    }
}

/// The file in the log directory where what was learnt of the cluster is
/// kept ([`Nodes::remembered_in`]).
pub const REMEMBERED_FILE: &str = "cluster-nodes";

/// Every server; by shard once learnt.
pub struct Nodes {
    settings: ClickHouseSettings,
    /// Where what was learnt of the cluster is kept, for a start while a
    /// node is down.
    remembered: Option<std::path::PathBuf>,
    /// Which replica of each shard is asked first.
    spread: u64,
    /// Learnt from the nodes the first time it is needed.
    shards: tokio::sync::OnceCell<Vec<Shard>>,
    /// The cluster's name, or none for a single server.
    cluster: Option<String>,
    /// Every node, for reads through `Distributed` tables.
    all: Vec<Node>,
    next_reader: AtomicUsize,
}

/// Why the topology could not be learnt.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("ClickHouse at {0}: {1}")]
    Node(ClickHouseUrl, clickhouse::error::Error),
    #[error("ClickHouse at {0} has no `shard` macro: its replicated tables cannot be placed (see the README, Running on a cluster)")]
    NoShardMacro(ClickHouseUrl),
    #[error("ClickHouse at {0} and {1} both say they are replica `{2}` of shard `{3}`")]
    SameReplica(ClickHouseUrl, ClickHouseUrl, String, String),
}

/// Why a job could not do its work on the cluster: the shards could not be
/// learnt, or a node refused or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
}

impl Error {
    /// Whether the failure is a node out of reach (worth waiting for).
    pub fn is_transport(&self) -> bool {
        match self {
            Error::Topology(e) => e.is_transport(),
            Error::ClickHouse(e) => super::is_transport_error(e),
        }
    }
}

impl TopologyError {
    /// Whether the failure is a node out of reach (worth waiting for).
    pub fn is_transport(&self) -> bool {
        matches!(self, TopologyError::Node(_, e) if super::is_transport_error(e))
    }
}

impl Nodes {
    /// The servers of the configuration, their shards not learnt yet.
    /// `spread`: which replica of each shard is asked first (collectors
    /// pass something of their own, so that several collectors do not all
    /// write to the same replicas).
    pub fn new(settings: &ClickHouseSettings, spread: u64) -> Nodes {
        let all = match &settings.cluster {
            None => vec![Node {
                url: settings.url.clone(),
                client: super::client(settings),
                replica: String::new(),
            }],
            Some(cluster) => cluster
                .nodes
                .iter()
                .map(|url| Node {
                    url: url.clone(),
                    client: super::node_client(settings, url),
                    replica: String::new(),
                })
                .collect(),
        };
        Nodes {
            settings: settings.clone(),
            remembered: None,
            spread,
            shards: tokio::sync::OnceCell::new(),
            cluster: settings.cluster.as_ref().map(|c| c.name.clone()),
            all,
            next_reader: AtomicUsize::new(0),
        }
    }

    /// Keeps what is learnt of the cluster in `file` (each node's address
    /// without credentials, its shard and replica), so that a collector
    /// restarted while a node is down still knows where that node stands.
    pub fn remembered_in(mut self, file: std::path::PathBuf) -> Nodes {
        self.remembered = Some(file);
        self
    }

    /// The shards: one of one replica for a single server; for a cluster,
    /// each node is asked (once) for its `shard` and `replica` macros; a
    /// node that does not answer is placed as it was when last learnt.
    pub async fn shards(&self) -> Result<&[Shard], TopologyError> {
        self.shards
            .get_or_try_init(|| {
                learn(
                    &self.settings,
                    &self.all,
                    self.spread,
                    self.remembered.as_deref(),
                )
            })
            .await
            .map(Vec::as_slice)
    }

    /// The shard named `name`.
    pub async fn shard(&self, name: &str) -> Result<Option<&Shard>, TopologyError> {
        Ok(self.shards().await?.iter().find(|s| s.name == name))
    }

    /// Every node, in the configuration's order (the one server of a
    /// single-server configuration).
    pub fn all(&self) -> &[Node] {
        &self.all
    }

    /// The home shard: the first shard in the natural order of their
    /// names (a single server's only one). What must be one per cluster
    /// lives there, so that every collector finds it in the same place
    /// whatever the order of its `clickhouse.urls`.
    pub async fn home(&self) -> Result<&Shard, TopologyError> {
        let shards = self.shards().await?;
        // `learn` makes one shard per node at least, and a configuration
        // has one node at least.
        Ok(&shards[0])
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// How reads name the tables here (see [`Tables`]).
    pub fn tables(&self) -> Tables {
        if self.is_cluster() {
            Tables::Distributed
        } else {
            Tables::Own
        }
    }

    /// The table to read `name` through: itself on a single server, its
    /// `Distributed` table on a cluster.
    pub fn table(&self, name: &str) -> String {
        self.tables().name(name)
    }

    /// Runs `request` on one replica of `shard`, the next one taking over
    /// when a replica cannot be reached. Returns the last error when none
    /// answered; an answer that refuses the request is returned as is
    /// (another replica would refuse it too).
    pub async fn on_shard<T, F, Fut>(
        &self,
        shard: &Shard,
        mut request: F,
    ) -> Result<T, clickhouse::error::Error>
    where
        F: FnMut(clickhouse::Client) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        self.on_replica(shard, |node| request(node.client)).await
    }

    /// Like [`Nodes::on_shard`], handing `request` the replica itself, for
    /// work that must stay on one replica from its first statement to its
    /// last.
    pub async fn on_replica<T, F, Fut>(
        &self,
        shard: &Shard,
        mut request: F,
    ) -> Result<T, clickhouse::error::Error>
    where
        F: FnMut(Node) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut last = None;
        for (index, node) in shard.in_order() {
            match request(node.clone()).await {
                Ok(answer) => {
                    shard.prefer(index);
                    return Ok(answer);
                }
                Err(error) if super::is_transport_error(&error) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.expect("a shard has at least one replica"))
    }

    /// Runs `request` on one replica of the home shard, or of the next
    /// shard when no replica of the home shard can be reached, and so on:
    /// for tamis's records, which are read through their `Distributed`
    /// tables and may live on any shard. An insert is sent again only to
    /// another replica or shard after a failure to reach one, so a record
    /// whose insert was cut after ClickHouse took it may be written twice
    /// (never lost for that).
    pub async fn on_some_shard<T, F, Fut>(&self, mut request: F) -> Result<T, Error>
    where
        F: FnMut(clickhouse::Client) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut last = None;
        for shard in self.shards().await? {
            match self.on_shard(shard, &mut request).await {
                Ok(answer) => return Ok(answer),
                Err(error) if super::is_transport_error(&error) => last = Some(error),
                Err(error) => return Err(error.into()),
            }
        }
        Err(last.expect("there is at least one shard").into())
    }

    /// Runs `request` on any node (reads through `Distributed` tables),
    /// the next one taking over when a node cannot be reached.
    pub async fn on_any<T, F, Fut>(&self, mut request: F) -> Result<T, clickhouse::error::Error>
    where
        F: FnMut(clickhouse::Client) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let first = self.next_reader.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.all.len() {
            let index = (first + i) % self.all.len();
            match request(self.all[index].client.clone()).await {
                Ok(answer) => {
                    self.next_reader.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(error) if super::is_transport_error(&error) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.expect("there is at least one node"))
    }
}

/// A replica that did not show what another replica of its shard took.
#[derive(Debug, thiserror::Error)]
#[error(
    "ClickHouse at {url} has not fetched what its shard's other replicas took (after {waited:?})"
)]
pub struct Lagging {
    pub url: ClickHouseUrl,
    pub waited: Duration,
}

/// How often [`wait_replicated`] asks again.
const REPLICATION_POLL: Duration = Duration::from_millis(50);

/// Waits until every replica of `shard` that can be reached counts at
/// least `expected` with `count` (what was just written there), at most
/// `patience` for each. Replication copies a shard's tables each on its own
/// queue, so a replica may fetch a ledger's row before the rows it
/// describes: work that writes rows and then a ledger row making them
/// visible waits here in between, so that a ledger row is written only
/// once every replica that answers holds its rows. A replica that cannot
/// be reached is passed over: it fetches everything when it returns, and
/// `Distributed` reads pass over a replica that lags by more than
/// `max_replica_delay_for_distributed_queries` (300 s).
pub async fn wait_replicated<F, Fut>(
    shard: &Shard,
    expected: u64,
    patience: Duration,
    mut count: F,
) -> Result<(), clickhouse::error::Error>
where
    F: FnMut(clickhouse::Client) -> Fut,
    Fut: Future<Output = Result<u64, clickhouse::error::Error>>,
{
    for node in &shard.replicas {
        let started = Instant::now();
        loop {
            match count(node.client.clone()).await {
                Ok(n) if n >= expected => break,
                Ok(_) if started.elapsed() >= patience => {
                    let lagging = Lagging {
                        url: node.url.clone(),
                        waited: started.elapsed(),
                    };
                    return Err(clickhouse::error::Error::Other(Box::new(lagging)));
                }
                Ok(_) => tokio::time::sleep(REPLICATION_POLL).await,
                Err(error) if super::is_transport_error(&error) => break,
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

async fn learn(
    settings: &ClickHouseSettings,
    all: &[Node],
    spread: u64,
    remembered: Option<&std::path::Path>,
) -> Result<Vec<Shard>, TopologyError> {
    if settings.cluster.is_none() {
        return Ok(vec![Shard {
            name: String::new(),
            replicas: all.to_vec(),
            preferred: AtomicUsize::new(0),
        }]);
    }
    let mut shards: Vec<Shard> = Vec::new();
    let known: HashMap<String, (String, String)> = remembered
        .and_then(|file| std::fs::read_to_string(file).ok())
        .map(|text| {
            text.lines()
                .filter_map(|line| {
                    let mut cols = line.split('\t');
                    let url = cols.next()?.to_string();
                    Some((url, (cols.next()?.to_string(), cols.next()?.to_string())))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut all_answered = true;
    let mut learnt = String::new();
    for node in all {
        let (shard, replica) = match macros(&node.client).await {
            Ok(found) => found,
            Err(error) if super::is_transport_error(&error) => {
                match known.get(&node.url.to_string()) {
                    Some((shard, replica)) => {
                        tracing::warn!(node = %node.url, shard, replica, "ClickHouse node not reachable; placed as when last seen");
                        all_answered = false;
                        (Some(shard.clone()), Some(replica.clone()))
                    }
                    None => return Err(TopologyError::Node(node.url.clone(), error)),
                }
            }
            Err(error) => return Err(TopologyError::Node(node.url.clone(), error)),
        };
        let shard = shard.ok_or_else(|| TopologyError::NoShardMacro(node.url.clone()))?;
        let replica = replica.unwrap_or_else(|| node.url.to_string());
        learnt.push_str(&format!("{}\t{shard}\t{replica}\n", node.url));
        let node = Node {
            replica: replica.clone(),
            ..node.clone()
        };
        match shards.iter_mut().find(|s| s.name == shard) {
            Some(existing) => {
                if let Some(twin) = existing.replicas.iter().find(|n| n.replica == replica) {
                    return Err(TopologyError::SameReplica(
                        twin.url.clone(),
                        node.url,
                        replica,
                        shard,
                    ));
                }
                existing.replicas.push(node);
            }
            None => shards.push(Shard {
                name: shard,
                replicas: vec![node],
                preferred: AtomicUsize::new(0),
            }),
        }
    }
    if let (true, Some(file)) = (all_answered, remembered) {
        if let Err(error) = crate::journal::replace_file_in(file, learnt.as_bytes()) {
            tracing::warn!(error = %error, "cannot keep what was learnt of the cluster");
        }
    }
    // The same order for every collector whatever the configuration's.
    shards.sort_by(|a, b| natural(&a.name).cmp(&natural(&b.name)));
    for shard in &mut shards {
        shard.replicas.sort_by(|a, b| a.replica.cmp(&b.replica));
        let first = (spread % shard.replicas.len() as u64) as usize;
        shard.preferred.store(first, Ordering::Relaxed);
    }
    Ok(shards)
}

/// A node's `shard` and `replica` macros.
async fn macros(
    client: &clickhouse::Client,
) -> Result<(Option<String>, Option<String>), clickhouse::error::Error> {
    let mut shard = None;
    let mut replica = None;
    let rows = client
        .query("SELECT macro, substitution FROM system.macros WHERE macro IN ('shard', 'replica')")
        .fetch_all::<(String, String)>()
        .await?;
    for (name, value) in rows {
        match name.as_str() {
            "shard" => shard = Some(value),
            _ => replica = Some(value),
        }
    }
    Ok((shard, replica))
}

/// Orders shard names as numbers when they are ("2" before "10").
fn natural(name: &str) -> (u64, &str) {
    (name.parse().unwrap_or(u64::MAX), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(clickhouse: &str) -> Nodes {
        let text = format!("[clickhouse]\n{clickhouse}\n[[site]]\nid = 'a.org'");
        let settings = crate::config::Settings::from_config(
            toml::from_str(&text).expect("parses"),
            std::path::Path::new("."),
        )
        .expect("valid");
        Nodes::new(&settings.clickhouse, 0)
    }

    #[test]
    fn reads_name_the_tables_on_one_server_and_their_distributed_tables_on_a_cluster() {
        let single = nodes("url = 'http://127.0.0.1:8123'");
        assert_eq!(single.tables(), Tables::Own);
        assert_eq!(single.table("traffic_hourly"), "traffic_hourly");
        assert_eq!(single.tables().in_subquery(), "IN");
        let cluster = nodes("cluster = 'tamis'\nurls = ['http://ch1:8123', 'http://ch2:8123']");
        assert_eq!(cluster.tables(), Tables::Distributed);
        assert_eq!(cluster.table("traffic_hourly"), "traffic_hourly_all");
        assert_eq!(cluster.tables().in_subquery(), "GLOBAL IN");
    }
}
