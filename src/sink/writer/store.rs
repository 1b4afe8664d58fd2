//! Where the writer's requests go: the seam between the delivery state
//! machine and ClickHouse. In production it is ClickHouse
//! ([`ClickHouseStore`]): one server, or the shards of a cluster; the
//! writer's model test puts an in-memory model with injected faults behind
//! the same requests. Nothing here decides what to do about a failure: it
//! only says what happened ([`Failure`]).
//!
//! Every request names the shard it is about ("" on a single server). On a
//! cluster an insert goes to one replica of the shard, the next one taking
//! over when it cannot be reached; and what proves an insert (a mark, a
//! receipt) is read only where it is sure to be seen, see
//! [`ClickHouseStore::vouched`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Group;
use crate::metrics::Metrics;
use crate::sink::nodes::{Nodes, Shard};
use crate::sink::refusal::{classify, Failure};
use crate::sink::rows::{mark_label, BatchRow, RowKind, DELIVERY_MARK};

/// The requests delivery makes.
pub trait Store {
    /// The shards to spread batches over, in a fixed order (one, named "",
    /// for a single server). Waits until they are known.
    fn shards(&self) -> impl Future<Output = Result<Vec<String>, Failure>> + Send;

    /// Whether ClickHouse drops an insert identical to a recent one
    /// (replicated tables): then an insert whose fate is unclear is sent
    /// again as it was, without looking first.
    fn deduplicates(&self) -> bool;

    /// Inserts `rows` and then `last` (a delivery mark or a receipt) as one
    /// insert into `shard`'s `batch_in`, with a fixed query id.
    fn insert(
        &self,
        shard: &str,
        rows: &[BatchRow<'_>],
        last: &BatchRow<'_>,
        query_id: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Where this journal's mark for `group` stands in `shard`: the sum of
    /// its steps, counting every insert the shard acknowledged.
    fn mark(&self, shard: &str, group: &Group)
        -> impl Future<Output = Result<u64, Failure>> + Send;

    /// Whether the receipt of the batch ending at `end_seq` is in `shard`.
    fn has_receipt(
        &self,
        shard: &str,
        end_seq: u64,
    ) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Whether a query with this id is still running on any replica of
    /// `shard` (an error when one cannot say).
    fn running(
        &self,
        shard: &str,
        query_id: &str,
    ) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Queries of this journal still running on any replica of `shard`
    /// (those of a process that stopped while ClickHouse held them).
    fn running_for_journal(&self, shard: &str)
        -> impl Future<Output = Result<u64, Failure>> + Send;
}

/// ClickHouse over HTTP, with the journal whose marks and receipts it
/// reads.
pub struct ClickHouseStore {
    pub nodes: Arc<Nodes>,
    pub timeout: Duration,
    pub journal_id: String,
    pub metrics: Arc<Metrics>,
}

impl Store for ClickHouseStore {
    async fn shards(&self) -> Result<Vec<String>, Failure> {
        match self.nodes.shards().await {
            Ok(shards) => Ok(shards.iter().map(|s| s.name.clone()).collect()),
            Err(error) => Err(Failure::Unclear(error.to_string())),
        }
    }

    fn deduplicates(&self) -> bool {
        self.nodes.is_cluster()
    }

    async fn insert(
        &self,
        shard: &str,
        rows: &[BatchRow<'_>],
        last: &BatchRow<'_>,
        query_id: &str,
    ) -> Result<(), Failure> {
        let shard = self.shard(shard).await?;
        let started = Instant::now();
        // One Native block: a body cut short is refused whole (see
        // `BatchRow::native_block`), so the mark and its rows go in
        // together or not at all, whatever the connection does. The same
        // bytes on every attempt: a replicated table drops a resent block
        // that is already in.
        let mut body = Vec::new();
        crate::sink::rows::native_block(
            rows.iter().chain(std::iter::once(last)),
            rows.len() + 1,
            &mut body,
        );
        let body = bytes::Bytes::from(body);
        let sent = self
            .nodes
            .on_shard(shard, |client| {
                let body = body.clone();
                async move {
                    let mut insert = client
                        .insert_formatted_with("INSERT INTO batch_in FORMAT Native")
                        .with_setting("query_id", query_id)
                        .with_timeouts(Some(self.timeout), Some(self.timeout));
                    insert.send(body).await?;
                    insert.end().await
                }
            })
            .await;
        match sent {
            Ok(()) => {
                self.metrics.observe_insert(started.elapsed());
                Ok(())
            }
            Err(error) => Err(classify(&error)),
        }
    }

    async fn mark(&self, shard: &str, group: &Group) -> Result<u64, Failure> {
        let shard = self.shard(shard).await?;
        let label = mark_label(group.kind, &self.journal_id);
        // On a cluster each step names itself (`super::marked`): the mark is
        // the sum of the rows named `<label>:…`, the names between
        // `<label>:` and `<label>;` (the next character).
        let cluster = self.nodes.is_cluster();
        let (low, high) = (format!("{label}:"), format!("{label};"));
        // A single server's mark (copied by `sink::adopt`) counts as well.
        let named = |column: &str| {
            if cluster {
                format!("({column} = ? OR ({column} >= ? AND {column} < ?))")
            } else {
                format!("{column} = ?")
            }
        };
        let sql = match group.kind {
            RowKind::Dropped => format!("SELECT sum(hits) FROM dropped_hourly WHERE site_id = ? AND hour = toDateTime(?) AND {}", named("reason")),
            RowKind::Funnel => format!("SELECT sum(visits) FROM funnel_hourly WHERE site_id = ? AND hour = toDateTime(?) AND {} AND step = 0", named("funnel")),
            kind => format!(
                "SELECT sumMerge(events) FROM {} WHERE site_id = ? AND hour = toDateTime(?) AND {} AND event = '{DELIVERY_MARK}'",
                kind.table(),
                named("page")
            ),
        };
        let read = |client: clickhouse::Client| {
            let query = client.query(&sql).bind(&group.site).bind(group.hour);
            let query = if cluster {
                query.bind(label.as_ref()).bind(&low).bind(&high)
            } else {
                query.bind(label.as_ref())
            };
            async move { query.fetch_one::<u64>().await }
        };
        self.vouched(shard, group.kind.table(), read).await
    }

    async fn has_receipt(&self, shard: &str, end_seq: u64) -> Result<bool, Failure> {
        let shard = self.shard(shard).await?;
        let read = |client: clickhouse::Client| async move {
            client
                .query("SELECT count() FROM batch_receipts WHERE journal_id = ? AND end_seq = ? AND part = ''")
                .bind(&self.journal_id)
                .bind(end_seq)
                .fetch_one::<u64>()
                .await
        };
        Ok(self.vouched(shard, "batch_receipts", read).await? > 0)
    }

    async fn running(&self, shard: &str, query_id: &str) -> Result<bool, Failure> {
        let shard = self.shard(shard).await?;
        let count = |client: clickhouse::Client| async move {
            client
                .query("SELECT count() FROM system.processes WHERE query_id = ?")
                .bind(query_id)
                .fetch_one::<u64>()
                .await
        };
        Ok(on_every_replica(shard, count).await? > 0)
    }

    async fn running_for_journal(&self, shard: &str) -> Result<u64, Failure> {
        let shard = self.shard(shard).await?;
        let prefix = self.query_prefix();
        let count = |client: clickhouse::Client| {
            let prefix = prefix.clone();
            async move {
                client
                    .query("SELECT count() FROM system.processes WHERE query_id LIKE ?")
                    .bind(prefix)
                    .fetch_one::<u64>()
                    .await
            }
        };
        on_every_replica(shard, count).await
    }
}

impl ClickHouseStore {
    /// Query ids of this journal start so (see `step_id`).
    fn query_prefix(&self) -> String {
        format!("tamis-{}-%", self.journal_id)
    }

    /// The shard named `name`; on a cluster, a batch noted without a
    /// shard (by the single server the cluster adopted, see `sink::adopt`)
    /// is in the first shard.
    async fn shard(&self, name: &str) -> Result<&Shard, Failure> {
        let found = if name.is_empty() && self.nodes.is_cluster() {
            self.nodes.shards().await.map(|s| s.first())
        } else {
            self.nodes.shard(name).await
        };
        match found {
            Ok(Some(shard)) => Ok(shard),
            Ok(None) => Err(Failure::Unclear(format!(
                "no node of the cluster is shard `{name}` any more; the batch noted for it waits for it"
            ))),
            Err(error) => Err(Failure::Unclear(error.to_string())),
        }
    }

    /// `read` (a sum of marks, a count of receipts) answered by a replica
    /// of `shard` that is sure to hold every insert the shard acknowledged.
    ///
    /// An insert is acknowledged by the replica that took it, before the
    /// others copy it; a replica killed in between holds a part its twin
    /// lacks, and a read of the twin would say "not in" of an insert that
    /// is in: sent again it would count twice once the first replica is
    /// back. So a replica's answer is taken only when its `system.replicas`
    /// row shows it has copied everything: the shared log all read
    /// (`log_pointer > log_max_index`) and no part left to fetch
    /// (`inserts_in_queue = 0`); the check comes before the read, and parts
    /// only ever add up. Otherwise the largest answer of all the replicas
    /// is taken, once every one answered (each holds what it
    /// acknowledged). A single server's answer is always whole.
    async fn vouched<F, Fut>(&self, shard: &Shard, table: &str, read: F) -> Result<u64, Failure>
    where
        F: Fn(clickhouse::Client) -> Fut,
        Fut: Future<Output = Result<u64, clickhouse::error::Error>>,
    {
        if !self.nodes.is_cluster() {
            let node = &shard.replicas[0];
            return read(node.client.clone()).await.map_err(|e| classify(&e));
        }
        let mut most = 0;
        let mut silent = Vec::new();
        for (index, node) in shard.in_order() {
            let asked = async {
                let whole = node
                    .client
                    .query("SELECT inserts_in_queue = 0 AND log_pointer > log_max_index FROM system.replicas WHERE database = currentDatabase() AND table = ?")
                    .bind(table)
                    .fetch_one::<u8>()
                    .await?;
                Ok::<_, clickhouse::error::Error>((whole == 1, read(node.client.clone()).await?))
            }
            .await;
            match asked {
                Ok((true, value)) => {
                    shard.prefer(index);
                    return Ok(value);
                }
                Ok((false, value)) => most = most.max(value),
                Err(error) => match classify(&error) {
                    Failure::Unclear(_) => silent.push(node.url.to_string()),
                    refused => return Err(refused),
                },
            }
        }
        if silent.is_empty() {
            Ok(most)
        } else {
            Err(Failure::Unclear(format!(
                "shard `{}`: {} not reachable and no other replica has copied all of `{table}` yet; what it acknowledged cannot be ruled out",
                shard.name,
                silent.join(", ")
            )))
        }
    }
}

/// The sum of `count` over every replica of `shard`; an error unless all
/// answered (a replica out of reach may be running anything).
async fn on_every_replica<F, Fut>(shard: &Shard, count: F) -> Result<u64, Failure>
where
    F: Fn(clickhouse::Client) -> Fut,
    Fut: Future<Output = Result<u64, clickhouse::error::Error>>,
{
    let mut total = 0;
    for node in &shard.replicas {
        total += count(node.client.clone()).await.map_err(|e| classify(&e))?;
    }
    Ok(total)
}

/// On a cluster, the end of the log records ClickHouse holds for this
/// journal, from the batch noted in flight: a batch is noted only once the
/// one before it has its receipt, so its first record is confirmed, and
/// its own receipt, looked for on its shard, says whether its end is too.
pub async fn noted_end<S: Store>(
    store: &S,
    noted: Option<&crate::journal::in_flight::InFlight>,
) -> Result<u64, Failure> {
    let Some(noted) = noted else { return Ok(0) };
    Ok(if store.has_receipt(&noted.shard, noted.end).await? {
        noted.end
    } else {
        noted.first
    })
}

/// The end of the log records ClickHouse already holds for `journal_id`:
/// where replay starts after a restart.
pub async fn confirmed_end(
    client: &clickhouse::Client,
    journal_id: &str,
) -> Result<u64, clickhouse::error::Error> {
    client
        .query("SELECT max(end_seq) FROM batch_receipts WHERE journal_id = ? AND part = ''")
        .bind(journal_id)
        .fetch_one::<u64>()
        .await
}
