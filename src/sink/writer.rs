//! The batch writer: inserts each batch, with its receipt, as one RowBinary
//! insert into `batch_in`, then tells the journal the batch's records are
//! in ClickHouse so their segment can go.
//!
//! Exactly once: every insert carries a query id made of the journal id
//! and the batch's last record, and a receipt row that a materialized view
//! stores in `batch_receipts` as part of the same insert. When an attempt
//! fails without a clear answer (timeout, connection lost after sending),
//! the writer first looks for the receipt: found, the batch is applied; a
//! query with the same id still running, it waits; neither, it sends the
//! batch again. Transport failures are retried for as long as it takes —
//! the records wait safely in the journal. Data errors are not retried:
//! the batch is split in halves until the refused rows are isolated; those
//! go to the dead-letter folder with ClickHouse's reason, the rest is
//! inserted.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::rows::{Batch, BatchRow, Receipt};
use crate::journal::Journal;
use crate::metrics::Metrics;

pub struct Writer {
    client: clickhouse::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
    journal: Journal,
}

/// How an insert attempt ended.
enum Attempt {
    Applied,
    /// ClickHouse refused the rows themselves.
    Refused(String),
}

impl Writer {
    pub fn new(
        client: clickhouse::Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
        journal: Journal,
    ) -> Self {
        Writer {
            client,
            timeout,
            metrics,
            journal,
        }
    }

    /// Writes batches until the aggregator is gone and the queue is empty.
    pub async fn run(self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            self.write(batch).await;
            self.metrics.batches_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn write(&self, batch: Batch) {
        let receipt = Receipt {
            journal_id: self.journal.id().to_string(),
            first_seq: batch.first_seq,
            end_seq: batch.end_seq,
            part: String::new(),
            hits: batch.hits,
        };
        let rows: Vec<BatchRow<'_>> = batch
            .traffic
            .iter()
            .map(BatchRow::traffic)
            .chain(batch.dropped.iter().map(BatchRow::dropped))
            .chain(batch.props.iter().map(BatchRow::prop))
            .collect();
        if let Attempt::Refused(reason) = self.insert_once(&rows, &receipt).await {
            tracing::error!(rows = rows.len(), error = %reason, "ClickHouse refused rows of a batch; isolating them");
            self.bisect(&rows, 0, &receipt).await;
            // The parts are in; now the batch as a whole.
            let closing = self.insert_once(&[], &receipt).await;
            if let Attempt::Refused(reason) = closing {
                tracing::error!(error = %reason, "ClickHouse refused a batch receipt alone; the batch's records stay in the log");
                return;
            }
        }
        self.metrics
            .rows_written
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.metrics
            .hits_written
            .fetch_add(batch.hits, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .fetch_sub(batch.end_seq - batch.first_seq, Ordering::AcqRel);
        self.journal.confirm(batch.end_seq);
    }

    /// Inserts `rows` (positions from `offset` in the batch) in halves until
    /// each refused row is alone, and dead-letters those.
    async fn bisect(&self, rows: &[BatchRow<'_>], offset: usize, whole: &Receipt) {
        let mut pending = vec![(offset, rows)];
        while let Some((at, part)) = pending.pop() {
            let half = part.len().div_ceil(2);
            for (start, piece) in [(at, &part[..half]), (at + half, &part[half..])] {
                if piece.is_empty() {
                    continue;
                }
                let receipt = Receipt {
                    part: format!("{start}-{}", start + piece.len()),
                    ..whole.clone()
                };
                match self.insert_once(piece, &receipt).await {
                    Attempt::Applied => {}
                    Attempt::Refused(reason) if piece.len() == 1 => {
                        self.dead_letter(&piece[0], &reason, whole)
                    }
                    Attempt::Refused(_) => pending.push((start, piece)),
                }
            }
        }
    }

    /// Applies `rows` plus `receipt` exactly once, however many attempts it
    /// takes; only a refusal of the data itself ends it otherwise.
    async fn insert_once(&self, rows: &[BatchRow<'_>], receipt: &Receipt) -> Attempt {
        let query_id = format!(
            "tamis-{}-{}-{}",
            receipt.journal_id,
            receipt.end_seq,
            if receipt.part.is_empty() {
                "all"
            } else {
                &receipt.part
            }
        );
        let mut backoff = Duration::from_millis(100);
        // Whether an earlier attempt may have reached ClickHouse.
        let mut maybe_applied = false;
        loop {
            if maybe_applied {
                match self.receipt_state(receipt, &query_id).await {
                    Ok(ReceiptState::Found) => {
                        tracing::info!(
                            end_seq = receipt.end_seq,
                            "batch found applied after an unclear failure; not sent again"
                        );
                        return Attempt::Applied;
                    }
                    Ok(ReceiptState::Running) | Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Ok(ReceiptState::Absent) => {}
                }
            }
            let started = Instant::now();
            match self.insert(rows, receipt, &query_id).await {
                Ok(()) => {
                    self.metrics.observe_insert(started.elapsed());
                    self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    return Attempt::Applied;
                }
                Err(error) if super::is_data_error(&error) => {
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    return Attempt::Refused(error.to_string());
                }
                Err(error) => {
                    self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
                    if super::is_transport_error(&error) {
                        self.metrics.clickhouse_up.store(0, Ordering::Relaxed);
                    }
                    tracing::warn!(rows = rows.len(), error = %error, retry_in_ms = backoff.as_millis() as u64, "insert failed; checking its receipt before retrying");
                    maybe_applied = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn insert(
        &self,
        rows: &[BatchRow<'_>],
        receipt: &Receipt,
        query_id: &str,
    ) -> Result<(), clickhouse::error::Error> {
        let client = self.client.clone().with_setting("query_id", query_id);
        let mut insert = client
            .insert::<BatchRow<'_>>("batch_in")
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.write(&BatchRow::receipt(receipt)).await?;
        insert.end().await
    }

    async fn receipt_state(
        &self,
        receipt: &Receipt,
        query_id: &str,
    ) -> Result<ReceiptState, clickhouse::error::Error> {
        let found: u64 = self
            .client
            .query("SELECT count() FROM batch_receipts WHERE journal_id = ? AND end_seq = ? AND part = ?")
            .bind(&receipt.journal_id)
            .bind(receipt.end_seq)
            .bind(&receipt.part)
            .fetch_one()
            .await?;
        if found > 0 {
            return Ok(ReceiptState::Found);
        }
        let running: u64 = self
            .client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(query_id)
            .fetch_one()
            .await?;
        Ok(if running > 0 {
            ReceiptState::Running
        } else {
            ReceiptState::Absent
        })
    }

    /// Keeps a refused row for an operator, with ClickHouse's reason. The
    /// visitor value is left out: the row is for diagnosis, not counting.
    fn dead_letter(&self, row: &BatchRow<'_>, reason: &str, batch: &Receipt) {
        self.metrics
            .batches_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.rows_rejected.fetch_add(1, Ordering::Relaxed);
        let dir: PathBuf = self.journal.dir().join("dead-letter");
        let line = serde_json::json!({
            "reason": reason,
            "journal_id": batch.journal_id,
            "first_seq": batch.first_seq,
            "end_seq": batch.end_seq,
            "row": {
                "kind": row.kind, "site_id": row.site_id, "hour": row.hour, "event": row.event, "page": row.page,
                "entry_page": row.entry_page, "source": row.source, "referrer": row.referrer,
                "utm_source": row.utm_source, "utm_medium": row.utm_medium, "utm_campaign": row.utm_campaign,
                "country": row.country, "region": row.region, "browser": row.browser,
                "browser_version": row.browser_version, "os": row.os, "device": row.device,
                "language": row.language, "consent": row.consent, "has_visitor": row.visitor != 0,
                "pageviews": row.pageviews, "events": row.events, "visits": row.visits, "bounces": row.bounces,
                "duration": row.duration, "exits": row.exits, "reason": row.reason, "hits": row.hits,
                "prop_key": row.prop_key, "prop_value": row.prop_value,
            },
        });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(dir.join(format!("{}.jsonl", batch.journal_id)))?;
            writeln!(file, "{line}")?;
            file.sync_data()
        });
        match written {
            Ok(()) => {
                tracing::error!(kind = row.kind, error = %reason, folder = %dir.display(), "row refused by ClickHouse written to the dead-letter folder")
            }
            Err(e) => {
                tracing::error!(kind = row.kind, error = %reason, io_error = %e, "row refused by ClickHouse, and the dead-letter folder cannot be written")
            }
        }
    }
}

enum ReceiptState {
    Found,
    /// An attempt with the same query id is still running in ClickHouse.
    Running,
    Absent,
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
