//! The batch writer: applies each batch to ClickHouse exactly once, then
//! tells the journal the batch's records are in ClickHouse so their segment
//! can go.
//!
//! ClickHouse makes one insert atomic only within one part: one table, one
//! partition. A batch touches several tables and sites, so it is applied
//! as one insert per group of rows of one kind (traffic, property,
//! dropped), one site and one hour, and each such insert carries its own
//! proof: a delivery mark row ([`DELIVERY_MARK`]) in the same table, site
//! and hour, hence in the same part as the rows. A mark's counter adds up
//! to how far the journal's records are applied there (`end_seq <<`
//! [`SHIFT`]), so whether an insert took effect is one lookup, whatever
//! happened to the connection, to ClickHouse or to tamis meanwhile. When
//! every group is in, a receipt row goes to `batch_receipts`: replay after a
//! restart starts after the last one.
//!
//! Before the first insert of a batch its record range is noted in the
//! journal ([`in_flight`](crate::journal::in_flight)): after a crash the
//! aggregator cuts the replayed records into that same batch, and its
//! groups already applied are found by their marks and skipped.
//!
//! Every insert has a query id made of the journal id and what it applies,
//! the same on every attempt and after a restart: ClickHouse refuses a
//! second query with the id of one still running, and before a retry the
//! writer looks at the mark (or receipt) and at the running queries.
//! Transport failures are retried for as long as it takes — the records
//! wait safely in the journal. Data errors are not retried: the group is
//! split in halves until the refused rows are isolated; those go to the
//! dead-letter folder with ClickHouse's error code (never its text, which
//! can quote the refused value), the rest is inserted.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::rows::{Batch, BatchRow, Receipt, DELIVERY_MARK};
use crate::journal::Journal;
use crate::metrics::Metrics;

/// Bits below a mark's record number: the steps of a group split up
/// because ClickHouse refused some of its rows. `clickhouse.batch_rows` is
/// at most 1,000,000, below 2^20, so the steps of one group never reach
/// the next record number; and 2^44 records (over five years at 100,000
/// hits a second) fit above them.
pub const SHIFT: u32 = 20;

/// Marks remembered per process; past it the memory is cleared and
/// positions are looked up again (late hits of long-gone hours are rare).
const MARKS_REMEMBERED: usize = 100_000;

/// (kind, site, hour): one group of a batch, one mark.
type GroupKey = (&'static str, String, u32);

pub struct Writer {
    client: clickhouse::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
    journal: Journal,
    /// Where this process last moved each mark.
    marks: HashMap<GroupKey, u64>,
    /// The reason column of the marks in `dropped_hourly`.
    dropped_label: String,
}

/// How an insert attempt ended.
enum Attempt {
    Applied,
    /// ClickHouse refused the rows themselves, for this reason (its code,
    /// never its text).
    Refused(String),
}

/// What proves an insert took effect.
enum Proof<'k> {
    /// A group's rows, with its mark moved from `from` to `to`.
    Mark {
        key: &'k GroupKey,
        from: u64,
        to: u64,
    },
    /// A batch's receipt.
    Receipt(&'k Receipt),
}

impl Writer {
    pub fn new(
        client: clickhouse::Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
        journal: Journal,
    ) -> Self {
        let dropped_label = format!("{DELIVERY_MARK}:{}", journal.id());
        Writer {
            client,
            timeout,
            metrics,
            journal,
            marks: HashMap::new(),
            dropped_label,
        }
    }

    /// Writes batches until the aggregator is gone and the queue is empty.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            self.write(batch).await;
            self.metrics.batches_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn write(&mut self, batch: Batch) {
        let receipt = Receipt {
            journal_id: self.journal.id().to_string(),
            first_seq: batch.first_seq,
            end_seq: batch.end_seq,
            part: String::new(),
            hits: batch.hits,
        };
        let journal = self.journal.clone();
        let (first, end) = (batch.first_seq, batch.end_seq);
        let noted = tokio::task::spawn_blocking(move || {
            crate::journal::in_flight::note(journal.dir(), first, end)
        })
        .await;
        if !matches!(noted, Ok(Ok(()))) {
            tracing::error!(
                "cannot note the batch in flight in the log folder; a crash during its inserts could count part of it twice"
            );
        }
        let mut groups: BTreeMap<(&'static str, &str, u32), Vec<BatchRow<'_>>> = BTreeMap::new();
        let rows = batch
            .traffic
            .iter()
            .map(|d| ("traffic", BatchRow::traffic(d)))
            .chain(
                batch
                    .dropped
                    .iter()
                    .map(|d| ("dropped", BatchRow::dropped(d))),
            )
            .chain(batch.props.iter().map(|p| ("prop", BatchRow::prop(p))));
        for (kind, row) in rows {
            groups
                .entry((kind, row.site_id, row.hour))
                .or_default()
                .push(row);
        }
        let count: usize = groups.values().map(Vec::len).sum();
        let target = batch.end_seq << SHIFT;
        for ((kind, site, hour), rows) in &groups {
            let key = (*kind, site.to_string(), *hour);
            self.write_group(key, rows, target, &receipt).await;
        }
        let query_id = format!("tamis-{}-{}-receipt", receipt.journal_id, receipt.end_seq);
        if let Attempt::Refused(reason) = self.apply(&[], &query_id, Proof::Receipt(&receipt)).await
        {
            tracing::error!(error = %reason, "ClickHouse refused a batch receipt; the batch's records stay in the log");
            return;
        }
        self.metrics
            .rows_written
            .fetch_add(count as u64, Ordering::Relaxed);
        self.metrics
            .hits_written
            .fetch_add(batch.hits, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .fetch_sub(batch.end_seq - batch.first_seq, Ordering::AcqRel);
        self.journal.confirm(batch.end_seq);
    }

    /// Applies one group's rows, moving its mark to `target`; skipped when
    /// the mark is there already (applied before a crash or a restart).
    async fn write_group(
        &mut self,
        key: GroupKey,
        rows: &[BatchRow<'_>],
        target: u64,
        batch: &Receipt,
    ) {
        let mut at = self.position(&key).await;
        if at >= target {
            tracing::info!(kind = key.0, site = %key.1, hour = key.2, end_seq = batch.end_seq, "rows found applied before a restart; not sent again");
            self.remember(key, at);
            return;
        }
        if let Attempt::Refused(reason) = self.step(&key, rows, at, target, batch).await {
            tracing::error!(rows = rows.len(), error = %reason, "ClickHouse refused rows of a batch; isolating them");
            // Halves until each refused row is alone; each piece applied
            // moves the mark one step, below the next record number.
            let mut pending = vec![rows];
            while let Some(part) = pending.pop() {
                let half = part.len().div_ceil(2);
                for piece in [&part[..half], &part[half..]] {
                    if piece.is_empty() {
                        continue;
                    }
                    match self.step(&key, piece, at, at + 1, batch).await {
                        Attempt::Applied => at += 1,
                        Attempt::Refused(reason) if piece.len() == 1 => {
                            self.dead_letter(&piece[0], &reason, batch)
                        }
                        Attempt::Refused(_) => pending.push(piece),
                    }
                }
            }
            // The accepted pieces are in; now the mark alone.
            if let Attempt::Refused(reason) = self.step(&key, &[], at, target, batch).await {
                tracing::error!(error = %reason, "ClickHouse refused a delivery mark alone; the batch's records stay in the log");
                return;
            }
        }
        self.remember(key, target);
    }

    async fn step(
        &self,
        key: &GroupKey,
        rows: &[BatchRow<'_>],
        from: u64,
        to: u64,
        batch: &Receipt,
    ) -> Attempt {
        let query_id = format!(
            "tamis-{}-{}-{}-{}-{to}",
            batch.journal_id, key.0, key.1, key.2
        );
        self.apply(rows, &query_id, Proof::Mark { key, from, to })
            .await
    }

    fn remember(&mut self, key: GroupKey, at: u64) {
        if self.marks.len() >= MARKS_REMEMBERED {
            self.marks.clear();
        }
        self.marks.insert(key, at);
    }

    /// Where a group's mark stands: remembered, or looked up for as long as
    /// it takes.
    async fn position(&self, key: &GroupKey) -> u64 {
        if let Some(at) = self.marks.get(key) {
            return *at;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.look_up(key).await {
                Ok(at) => return at,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "cannot read a delivery mark; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn look_up(
        &self,
        (kind, site, hour): &GroupKey,
    ) -> Result<u64, clickhouse::error::Error> {
        let sql = match *kind {
            "dropped" => "SELECT sum(hits) FROM dropped_hourly WHERE site_id = ? AND hour = toDateTime(?) AND reason = ?",
            "traffic" => "SELECT sumMerge(events) FROM traffic_hourly WHERE site_id = ? AND hour = toDateTime(?) AND page = ? AND event = ?",
            _ => "SELECT sumMerge(events) FROM props_hourly WHERE site_id = ? AND hour = toDateTime(?) AND page = ? AND event = ?",
        };
        let mut query = self
            .client
            .query(sql)
            .bind(site)
            .bind(*hour)
            .bind(self.mark_label(kind));
        if *kind != "dropped" {
            query = query.bind(DELIVERY_MARK);
        }
        query.fetch_one::<u64>().await
    }

    /// What names this journal's mark among a table's rows: the page of
    /// traffic and property marks, the reason of dropped ones.
    fn mark_label(&self, kind: &str) -> &str {
        if kind == "dropped" {
            &self.dropped_label
        } else {
            self.journal.id()
        }
    }

    /// Applies `rows` plus their proof exactly once, however many attempts
    /// it takes; only a refusal of the data itself ends it otherwise.
    async fn apply(&self, rows: &[BatchRow<'_>], query_id: &str, mut proof: Proof<'_>) -> Attempt {
        let mut backoff = Duration::from_millis(100);
        // Whether an earlier attempt may have reached ClickHouse.
        let mut maybe_applied = false;
        loop {
            if maybe_applied {
                match self.state(&mut proof, query_id).await {
                    Ok(State::Applied) => {
                        tracing::info!(
                            query_id,
                            "insert found applied after an unclear failure; not sent again"
                        );
                        return Attempt::Applied;
                    }
                    Ok(State::Running) | Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Ok(State::Absent) => {}
                }
            }
            let started = Instant::now();
            match self.insert(rows, &proof, query_id).await {
                Ok(()) => {
                    self.metrics.observe_insert(started.elapsed());
                    self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    return Attempt::Applied;
                }
                Err(error) if super::is_data_error(&error) => {
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    return Attempt::Refused(super::data_error_reason(&error));
                }
                Err(error) => {
                    self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
                    if super::is_transport_error(&error) {
                        self.metrics.clickhouse_up.store(0, Ordering::Relaxed);
                    }
                    tracing::warn!(rows = rows.len(), error = %error, retry_in_ms = backoff.as_millis() as u64, "insert failed; checking whether it took effect before retrying");
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
        proof: &Proof<'_>,
        query_id: &str,
    ) -> Result<(), clickhouse::error::Error> {
        let last = match proof {
            Proof::Mark {
                key: (kind, site, hour),
                from,
                to,
            } => BatchRow::mark(kind, site, *hour, self.mark_label(kind), to - from),
            Proof::Receipt(receipt) => BatchRow::receipt(receipt),
        };
        let client = self.client.clone().with_setting("query_id", query_id);
        let mut insert = client
            .insert::<BatchRow<'_>>("batch_in")
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.write(&last).await?;
        insert.end().await
    }

    /// Whether an attempt took effect. A mark found short of its target but
    /// moved (never by another writer: the journal is locked to one
    /// process) makes the next attempt move it from there.
    async fn state(
        &self,
        proof: &mut Proof<'_>,
        query_id: &str,
    ) -> Result<State, clickhouse::error::Error> {
        let applied = match proof {
            Proof::Mark { key, from, to } => {
                let at = self.look_up(key).await?;
                if at < *to && at != *from {
                    tracing::warn!(
                        query_id,
                        expected = *from,
                        found = at,
                        "delivery mark not where this writer left it"
                    );
                    *from = at;
                }
                at >= *to
            }
            Proof::Receipt(receipt) => {
                let found: u64 = self
                    .client
                    .query("SELECT count() FROM batch_receipts WHERE journal_id = ? AND end_seq = ? AND part = ''")
                    .bind(&receipt.journal_id)
                    .bind(receipt.end_seq)
                    .fetch_one()
                    .await?;
                found > 0
            }
        };
        if applied {
            return Ok(State::Applied);
        }
        let running: u64 = self
            .client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(query_id)
            .fetch_one()
            .await?;
        Ok(if running > 0 {
            State::Running
        } else {
            State::Absent
        })
    }

    /// Keeps a refused row for an operator, with ClickHouse's error code and
    /// its meaning ([`super::data_error_reason`]). The
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

enum State {
    Applied,
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
