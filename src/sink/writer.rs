//! The batch writer: inserts each batch into ClickHouse as RowBinary,
//! retrying transport failures with backoff for as long as it takes (an
//! accepted hit is not given up because ClickHouse is restarting). Data
//! errors are not retried: the rows are counted as rejected and logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::rows::{Batch, TrafficRow};
use crate::metrics::Metrics;

pub struct Writer {
    client: clickhouse::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Writer {
    pub fn new(client: clickhouse::Client, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Writer {
            client,
            timeout,
            metrics,
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
        let Batch {
            traffic,
            dropped,
            props,
            hits,
        } = batch;
        if !traffic.is_empty() {
            let rows = traffic.len();
            self.with_retries("traffic_in", rows, || self.insert_traffic(&traffic))
                .await;
        }
        if !dropped.is_empty() {
            let rows = dropped.len();
            self.with_retries("dropped_hourly", rows, || {
                self.insert_rows("dropped_hourly", &dropped)
            })
            .await;
        }
        if !props.is_empty() {
            let rows = props.len();
            self.with_retries("props_in", rows, || self.insert_rows("props_in", &props))
                .await;
        }
        self.metrics.hits_written.fetch_add(hits, Ordering::Relaxed);
        self.metrics.queue_depth.fetch_sub(hits, Ordering::AcqRel);
    }

    async fn with_retries<F, Fut>(&self, table: &'static str, rows: usize, mut attempt: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match attempt().await {
                Ok(()) => {
                    self.metrics.observe_insert(started.elapsed());
                    self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .rows_written
                        .fetch_add(rows as u64, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    return;
                }
                Err(error) if super::is_data_error(&error) => {
                    self.metrics
                        .rows_rejected
                        .fetch_add(rows as u64, Ordering::Relaxed);
                    tracing::error!(table, rows, error = %error, "ClickHouse refused the batch's data; not retried");
                    return;
                }
                Err(error) => {
                    self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(0, Ordering::Relaxed);
                    tracing::warn!(table, rows, error = %error, retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn insert_traffic(
        &self,
        deltas: &[super::rows::TrafficDelta],
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = self
            .client
            .insert::<TrafficRow<'_>>("traffic_in")
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for delta in deltas {
            insert.write(&delta.as_row()).await?;
        }
        insert.end().await
    }

    async fn insert_rows<R>(&self, table: &str, rows: &[R]) -> Result<(), clickhouse::error::Error>
    where
        R: clickhouse::Row + clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = R>,
    {
        let mut insert = self
            .client
            .insert::<R>(table)
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }
}
