//! Where the writer's requests go: the seam between the delivery state
//! machine and ClickHouse. In production it is ClickHouse
//! ([`ClickHouseStore`]); the writer's model test puts an in-memory model
//! with injected faults behind the same four requests. Nothing here
//! decides what to do about a failure: it only says what happened
//! ([`Failure`]).

use std::future::Future;
use std::time::{Duration, Instant};

use super::Group;
use crate::metrics::Metrics;
use crate::sink::refusal::{classify, Failure};
use crate::sink::rows::{mark_label, BatchRow, RowKind, DELIVERY_MARK};

/// The requests delivery makes.
pub trait Store {
    /// Inserts `rows` and then `last` (a delivery mark or a receipt) as one
    /// insert into `batch_in`, with a fixed query id.
    fn insert(
        &self,
        rows: &[BatchRow<'_>],
        last: &BatchRow<'_>,
        query_id: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Where this journal's mark for `group` stands: the sum of its steps.
    fn mark(&self, group: &Group) -> impl Future<Output = Result<u64, Failure>> + Send;

    /// Whether the receipt of the batch ending at `end_seq` is in.
    fn has_receipt(&self, end_seq: u64) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Whether a query with this id is still running.
    fn running(&self, query_id: &str) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Queries of this journal still running (those of a process that
    /// stopped while ClickHouse held them).
    fn running_for_journal(&self) -> impl Future<Output = Result<u64, Failure>> + Send;
}

/// ClickHouse over HTTP, with the journal whose marks and receipts it
/// reads.
pub struct ClickHouseStore {
    pub client: clickhouse::Client,
    pub timeout: Duration,
    pub journal_id: String,
    pub metrics: std::sync::Arc<Metrics>,
}

impl Store for ClickHouseStore {
    async fn insert(
        &self,
        rows: &[BatchRow<'_>],
        last: &BatchRow<'_>,
        query_id: &str,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        // One Native block: a body cut short is refused whole (see
        // `BatchRow::native_block`), so the mark and its rows go in
        // together or not at all, whatever the connection does.
        let mut body = Vec::new();
        crate::sink::rows::native_block(
            rows.iter().chain(std::iter::once(last)),
            rows.len() + 1,
            &mut body,
        );
        let mut insert = self
            .client
            .insert_formatted_with("INSERT INTO batch_in FORMAT Native")
            .with_setting("query_id", query_id)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let sent = async {
            insert.send(bytes::Bytes::from(body)).await?;
            insert.end().await
        }
        .await;
        match sent {
            Ok(()) => {
                self.metrics.observe_insert(started.elapsed());
                Ok(())
            }
            Err(error) => Err(classify(&error)),
        }
    }

    async fn mark(&self, group: &Group) -> Result<u64, Failure> {
        let label = mark_label(group.kind, &self.journal_id);
        let query = match group.kind {
            RowKind::Dropped => self
                .client
                .query("SELECT sum(hits) FROM dropped_hourly WHERE site_id = ? AND hour = toDateTime(?) AND reason = ?")
                .bind(&group.site)
                .bind(group.hour)
                .bind(label.as_ref()),
            RowKind::Funnel => self
                .client
                .query("SELECT sum(visits) FROM funnel_hourly WHERE site_id = ? AND hour = toDateTime(?) AND funnel = ? AND step = 0")
                .bind(&group.site)
                .bind(group.hour)
                .bind(label.as_ref()),
            kind => self
                .client
                .query(if kind == RowKind::Prop {
                    "SELECT sumMerge(events) FROM props_hourly WHERE site_id = ? AND hour = toDateTime(?) AND page = ? AND event = ?"
                } else {
                    "SELECT sumMerge(events) FROM traffic_hourly WHERE site_id = ? AND hour = toDateTime(?) AND page = ? AND event = ?"
                })
                .bind(&group.site)
                .bind(group.hour)
                .bind(label.as_ref())
                .bind(DELIVERY_MARK),
        };
        query.fetch_one::<u64>().await.map_err(|e| classify(&e))
    }

    async fn has_receipt(&self, end_seq: u64) -> Result<bool, Failure> {
        self.client
            .query("SELECT count() FROM batch_receipts WHERE journal_id = ? AND end_seq = ? AND part = ''")
            .bind(&self.journal_id)
            .bind(end_seq)
            .fetch_one::<u64>()
            .await
            .map(|n| n > 0)
            .map_err(|e| classify(&e))
    }

    async fn running(&self, query_id: &str) -> Result<bool, Failure> {
        self.client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(query_id)
            .fetch_one::<u64>()
            .await
            .map(|n| n > 0)
            .map_err(|e| classify(&e))
    }

    async fn running_for_journal(&self) -> Result<u64, Failure> {
        self.client
            .query("SELECT count() FROM system.processes WHERE query_id LIKE ?")
            .bind(self.query_prefix())
            .fetch_one::<u64>()
            .await
            .map_err(|e| classify(&e))
    }
}

impl ClickHouseStore {
    /// Query ids of this journal start so (see `step_id`).
    fn query_prefix(&self) -> String {
        format!("tamis-{}-%", self.journal_id)
    }
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
