//! The batch writer: applies each batch to ClickHouse exactly once, then
//! tells the journal the batch's records are in ClickHouse so their segment
//! can go. Batches are applied one after the other, each to its receipt:
//! no batch is confirmed while an earlier one is not wholly in.
//!
//! ClickHouse makes one insert atomic only within one part: one table, one
//! partition. A batch touches several tables and sites, so it is applied
//! as one insert per [`Group`] of rows of one kind ([`RowKind`]), one site
//! and one hour, and each such insert carries its own proof: a delivery
//! mark row ([`DELIVERY_MARK`](super::rows::DELIVERY_MARK)) in the same table, site and hour, hence in
//! the same part as the rows. A mark's counter adds up to how far the
//! journal's records are applied there (`end_seq <<` [`SHIFT`]), so
//! whether an insert took effect is one lookup, whatever happened to the
//! connection, to ClickHouse or to tamis meanwhile. When every group is
//! in, a receipt row goes to `batch_receipts`: replay after a restart
//! starts after the last one.
//!
//! Before the first insert of a batch its record range is noted in the
//! journal ([`in_flight`](crate::journal::in_flight)); no insert is sent
//! until that note is durable. After a crash the aggregator cuts the
//! replayed records into that same batch, and its groups already applied
//! are found by their marks and skipped.
//!
//! On a ClickHouse cluster a batch goes whole to one shard, chosen in turn
//! for each batch (so that even one site's hour is spread over every
//! shard) and named in the in-flight note, so that after a restart the
//! batch is looked for and finished on the same shard. Marks count per
//! shard: a group's position is where its mark stands in that shard.
//! Its inserts go to the shard's local `batch_in` (never through a
//! `Distributed` table, whose inserts are forwarded later and not atomic),
//! on one replica, the next taking over when it cannot be reached. An
//! insert whose fate is unclear is sent again as it was, byte for byte:
//! replicated tables keep the hashes of recent blocks in ZooKeeper and
//! drop a block already in, whichever replica took it. What proves an
//! insert is read only on a replica that holds every insert its shard
//! acknowledged (see `ClickHouseStore::vouched`); after a restart the
//! batch in flight is re-formed from the log, perhaps not byte for byte,
//! so it is resolved that way before anything of it is sent again.
//!
//! Every insert has a query id made of the journal id and what it applies,
//! the same on every attempt and after a restart: ClickHouse refuses a
//! second query with the id of one still running, and before a retry the
//! writer looks at the mark (or receipt) and at the running queries.
//!
//! What a failure means is decided from ClickHouse's error code
//! ([`crate::sink::refusal`]): no answer, or a passing refusal (timeouts,
//! limits), is retried for as long as it takes — the records wait safely
//! in the journal. A refusal about the data, or the same other refusal
//! three times, starts the isolation of the refused rows
//! ([`isolation`]): first a delivery mark alone (the control); if
//! ClickHouse refuses even that, the cause is not the rows and delivery
//! waits, exposed as blocked (metric, `/readyz`, one log line naming the
//! code), dead-lettering nothing. Otherwise the group is split until the
//! refused rows are alone; those go to the dead-letter folder with
//! ClickHouse's code and its meaning (never its text, which can quote the
//! refused value), the rest is inserted.

mod isolation;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::refusal::{Category, Failure, Refusal};
use super::rows::{Batch, BatchRow, Receipt, RowKind};
use crate::backoff::Backoff;
use crate::journal::Journal;
use crate::metrics::Metrics;
use isolation::{Action, Isolation, Outcome};
pub use store::{confirmed_end, ClickHouseStore, Store};

/// Bits below a mark's record number: the steps of a group split up
/// because ClickHouse refused some of its rows. `clickhouse.batch_rows` is
/// at most 1,000,000, below 2^20, so the steps of one group (a control,
/// at most one per row, one per dead row) never reach the next record
/// number; and 2^44 records (over five years at 100,000 hits a second)
/// fit above them.
pub const SHIFT: u32 = 20;

/// Marks remembered per process; past it the memory is cleared and
/// positions are looked up again (late hits of long-gone hours are rare).
const MARKS_REMEMBERED: usize = 100_000;

/// Refusals of the same rows, with a code neither about data nor passing,
/// before the writer checks whether ClickHouse takes anything at all.
const REFUSALS_BEFORE_CONTROL: u32 = 3;

/// One group of a batch: the rows of one insert, proven by one mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Group {
    pub kind: RowKind,
    pub site: String,
    pub hour: u32,
}

impl Group {
    fn of(row: &BatchRow<'_>) -> Group {
        Group {
            kind: row.kind,
            site: row.site_id.to_string(),
            hour: row.hour,
        }
    }
}

pub struct Writer<S = ClickHouseStore> {
    store: S,
    journal: Journal,
    metrics: Arc<Metrics>,
    /// Where this process last moved each mark, per shard.
    marks: HashMap<(String, Group), u64>,
    /// The shards, once known; batches go to each in turn.
    shards: Vec<String>,
    turn: usize,
    /// The shard of the batch being written.
    shard: String,
    /// Whether the next batch is the first of this process (it may be the
    /// one noted in flight before a restart).
    first_batch: bool,
    /// First and longest wait between attempts.
    waits: (Duration, Duration),
    /// Why delivery is held up, while ClickHouse refuses tamis's own rows.
    blocked: Option<Refusal>,
}

/// What proves an insert took effect.
enum Proof<'k> {
    /// A group's rows, with its mark moved from `from` to `to`.
    Mark {
        group: &'k Group,
        from: u64,
        to: u64,
    },
    /// A batch's receipt.
    Receipt(&'k Receipt),
}

enum State {
    Applied,
    /// An attempt with the same query id is still running in ClickHouse.
    Running,
    Absent,
}

impl Writer<ClickHouseStore> {
    pub fn new(
        nodes: Arc<crate::sink::nodes::Nodes>,
        timeout: Duration,
        metrics: Arc<Metrics>,
        journal: Journal,
    ) -> Self {
        let store = ClickHouseStore {
            nodes,
            timeout,
            journal_id: journal.id().to_string(),
            metrics: metrics.clone(),
        };
        Writer::with_store(store, metrics, journal)
    }
}

impl<S: Store> Writer<S> {
    pub fn with_store(store: S, metrics: Arc<Metrics>, journal: Journal) -> Self {
        Writer {
            store,
            journal,
            metrics,
            marks: HashMap::new(),
            shards: Vec::new(),
            turn: 0,
            shard: String::new(),
            first_batch: true,
            waits: (Duration::from_millis(100), Duration::from_secs(5)),
            blocked: None,
        }
    }

    /// Shorter waits between attempts (tests).
    pub fn with_waits(mut self, first: Duration, max: Duration) -> Self {
        self.waits = (first, max);
        self
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.waits.0, self.waits.1)
    }

    /// Writes batches until the aggregator is gone and the queue is empty.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            self.write(batch).await;
            self.metrics.batches_pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits until no insert of this journal runs in ClickHouse. A process
    /// killed while ClickHouse held its insert leaves that insert running
    /// (and landing) after it died; marks are read only once it is done,
    /// so the new process never sends the same rows beside it.
    async fn wait_for_earlier_inserts(&self, shard: &str) {
        let mut backoff = self.backoff();
        let mut said = false;
        loop {
            match self.store.running_for_journal(shard).await {
                Ok(0) => return,
                Ok(running) => {
                    if !said {
                        tracing::info!(running, "inserts of an earlier run still in ClickHouse; waiting for them before delivering");
                        said = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %failure_text(&error), "cannot read ClickHouse's running queries; retrying")
                }
            }
            backoff.wait().await;
        }
    }

    /// Applies one batch wholly, receipt included, then confirms its
    /// records to the journal. Returns only once that is done.
    pub async fn write(&mut self, batch: Batch) {
        let receipt = Receipt {
            journal_id: self.journal.id().to_string(),
            first_seq: batch.first_seq,
            end_seq: batch.end_seq,
            part: String::new(),
            hits: batch.hits,
        };
        self.shard = self.choose_shard(&batch).await;
        self.note_in_flight(batch.first_seq, batch.end_seq).await;
        let mut groups: BTreeMap<Group, Vec<BatchRow<'_>>> = BTreeMap::new();
        let rows = batch
            .traffic
            .iter()
            .map(BatchRow::traffic)
            .chain(batch.dropped.iter().map(BatchRow::dropped))
            .chain(batch.props.iter().map(BatchRow::prop))
            .chain(batch.funnels.iter().map(BatchRow::funnel));
        for row in rows {
            groups.entry(Group::of(&row)).or_default().push(row);
        }
        let count: usize = groups.values().map(Vec::len).sum();
        // A group whose isolation a crash interrupted is finished from the
        // rows it was started with, not from the replayed ones.
        if let Some(group) = self.resume_isolation(&receipt).await {
            groups.remove(&group);
        }
        let target = batch.end_seq << SHIFT;
        for (group, rows) in &groups {
            self.write_group(group, rows, target, &receipt).await;
        }
        self.write_receipt(&receipt).await;
        self.metrics
            .rows_written
            .fetch_add(count as u64, Ordering::Relaxed);
        self.metrics
            .hits_written
            .fetch_add(batch.hits, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .fetch_sub(batch.end_seq - batch.first_seq, Ordering::AcqRel);
        // Deleting segments is file I/O: off the async workers.
        let journal = self.journal.clone();
        let (first, end) = (batch.first_seq, batch.end_seq);
        match tokio::task::spawn_blocking(move || journal.confirm_range(first, end)).await {
            Ok(Ok(())) => {}
            // Never deletes anything: the records stay in the log, which
            // is safe (they are in ClickHouse, and replay finds them so).
            Ok(Err(error)) => {
                tracing::error!(error = %error, "the journal refused to confirm a batch ClickHouse holds; its records stay in the log")
            }
            Err(error) => {
                tracing::error!(error = %error, "confirming the batch to the durable log failed")
            }
        }
    }

    /// The shard `batch` goes to: the one noted for it before a restart,
    /// or the next in turn. The first batch of a process also waits for
    /// the inserts a stopped process left running in the noted shard.
    async fn choose_shard(&mut self, batch: &Batch) -> String {
        if self.shards.is_empty() {
            let mut backoff = self.backoff();
            loop {
                match self.store.shards().await {
                    Ok(shards) if !shards.is_empty() => {
                        self.shards = shards;
                        break;
                    }
                    Ok(_) => tracing::error!("ClickHouse has no shard to write to; retrying"),
                    Err(error) => {
                        tracing::warn!(error = %failure_text(&error), retry_in_ms = backoff.peek().as_millis() as u64, "cannot learn the cluster's shards; hits wait in the durable log")
                    }
                }
                backoff.wait().await;
            }
        }
        if std::mem::take(&mut self.first_batch) {
            // Only a batch noted and not confirmed can have an insert still
            // running: one with a receipt had every insert acknowledged,
            // and a process restarted while a replica is away need not
            // wait for it.
            if let Some(noted) = crate::journal::in_flight::read(self.journal.dir())
                .filter(|n| n.end > batch.first_seq)
            {
                self.wait_for_earlier_inserts(&noted.shard).await;
                if (noted.first, noted.end) == (batch.first_seq, batch.end_seq) {
                    return noted.shard;
                }
            }
        }
        let shard = self.shards[self.turn % self.shards.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        shard
    }

    /// Notes the batch in flight, durably, before anything of it is sent:
    /// without the note a crash during its inserts could count part of it
    /// twice, so nothing is sent until the note is written.
    async fn note_in_flight(&self, first: u64, end: u64) {
        let mut backoff = self.backoff();
        loop {
            let dir = self.journal.dir().to_path_buf();
            let shard = self.shard.clone();
            let noted = tokio::task::spawn_blocking(move || {
                crate::journal::in_flight::note(&dir, first, end, &shard)
            })
            .await;
            match noted {
                Ok(Ok(())) => return,
                Ok(Err(error)) => {
                    tracing::error!(error = %error, retry_in_ms = backoff.peek().as_millis() as u64, "cannot note the batch in flight in the log folder; nothing of it is sent until it is noted")
                }
                Err(error) => {
                    tracing::error!(error = %error, "noting the batch in flight failed; retrying")
                }
            }
            backoff.wait().await;
        }
    }

    /// Applies one group's rows, moving its mark to `target`; skipped when
    /// the mark is there already (applied before a crash or a restart).
    async fn write_group(
        &mut self,
        group: &Group,
        rows: &[BatchRow<'_>],
        target: u64,
        batch: &Receipt,
    ) {
        let mut at = self.position(group).await;
        if at >= target {
            tracing::info!(kind = group.kind.as_str(), site = %group.site, hour = group.hour, shard = %self.shard, end_seq = batch.end_seq, "rows found applied before a restart; not sent again");
            self.remember(group.clone(), at);
            return;
        }
        let mut refusals = 0;
        let mut backoff = self.backoff();
        loop {
            let mut proof = Proof::Mark {
                group,
                from: at,
                to: target,
            };
            let refusal = match self
                .apply(rows, &mut proof, &step_id(batch, group, target))
                .await
            {
                Ok(()) => break,
                Err(refusal) => refusal,
            };
            if let Proof::Mark { from, .. } = proof {
                at = from;
            }
            refusals += 1;
            tracing::warn!(kind = group.kind.as_str(), rows = rows.len(), code = refusal.code(), error = %refusal, "ClickHouse refused rows of a batch");
            if refusal.category() == Category::Data || refusals >= REFUSALS_BEFORE_CONTROL {
                match self.isolate(group, rows, at, target, batch).await {
                    Ok(()) => break,
                    Err(systemic) => {
                        self.block(systemic);
                        refusals = 0;
                        at = self.look_up_until_done(group).await;
                    }
                }
            }
            backoff.wait().await;
        }
        self.remember(group.clone(), target);
    }

    /// Starts isolating the refused rows of a group: a control first (a
    /// mark step alone). Returns the control's refusal when ClickHouse
    /// refuses that too: then nothing is the rows' fault.
    async fn isolate(
        &mut self,
        group: &Group,
        rows: &[BatchRow<'_>],
        from: u64,
        target: u64,
        batch: &Receipt,
    ) -> Result<(), Refusal> {
        let mut proof = Proof::Mark {
            group,
            from,
            to: from + 1,
        };
        let id = format!("{}-control", step_id(batch, group, from + 1));
        self.apply(&[], &mut proof, &id).await?;
        self.metrics.groups_isolated.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            kind = group.kind.as_str(),
            rows = rows.len(),
            "ClickHouse takes other rows: isolating the refused ones"
        );
        // A crash before this is written leaves the mark one step on and
        // no note: the whole group is sent again from there, which counts
        // nothing twice (the step carried no rows).
        let isolation = Isolation {
            group: group.clone(),
            first_seq: batch.first_seq,
            end_seq: batch.end_seq,
            base: from + 1,
            target,
            rows: rows.iter().cloned().map(BatchRow::into_owned).collect(),
            outcomes: Vec::new(),
        };
        self.durably(|dir| isolation.begin(dir)).await;
        self.walk(isolation, false).await;
        Ok(())
    }

    /// The isolation a crash interrupted, if any, finished. Returns its
    /// group when it belongs to `batch` (the group is then done).
    async fn resume_isolation(&mut self, batch: &Receipt) -> Option<Group> {
        let dir = self.journal.dir().to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || Isolation::load(&dir)).await;
        let isolation = match loaded {
            Ok(Ok(found)) => found?,
            Ok(Err(error)) => {
                // Only a damaged note, which the fsync'd rename makes all
                // but impossible: its group is sent again from the mark.
                tracing::error!(error = %error, "cannot read the note of an isolation in progress; its group is sent again from its mark");
                self.durably(Isolation::end).await;
                return None;
            }
            Err(_) => return None,
        };
        let group = isolation.group.clone();
        let same_batch = isolation.end_seq == batch.end_seq;
        // An isolation belongs to the batch noted in flight, whose shard
        // this batch has when it is that batch.
        if !same_batch {
            tracing::warn!(end_seq = isolation.end_seq, "an isolation of another batch than the one in flight; finishing it on this batch's shard");
        }
        let at = self.look_up_until_done(&group).await;
        if at >= isolation.target {
            self.durably(Isolation::end).await;
        } else {
            tracing::info!(kind = group.kind.as_str(), site = %group.site, hour = group.hour, rows = isolation.rows.len(), done = isolation.outcomes.len(), "resuming the isolation of refused rows interrupted by a restart");
            let target = isolation.target;
            self.walk(isolation, true).await;
            self.remember(group.clone(), target);
        }
        same_batch.then_some(group)
    }

    /// Walks an isolation to its end, noting each outcome before acting on
    /// it. `resumed`: the next action may have happened unnoted (the mark
    /// says).
    async fn walk(&mut self, mut isolation: Isolation, resumed: bool) {
        let mut walk = isolation.walk();
        let mut unsure = resumed;
        let mut backoff = self.backoff();
        let group = isolation.group.clone();
        let batch = Receipt {
            journal_id: self.journal.id().to_string(),
            first_seq: isolation.first_seq,
            end_seq: isolation.end_seq,
            part: String::new(),
            hits: 0,
        };
        loop {
            let at = isolation.base + walk.steps;
            let outcome = match walk.next() {
                Action::Finish => {
                    let mut proof = Proof::Mark {
                        group: &group,
                        from: at,
                        to: isolation.target,
                    };
                    let id = step_id(&batch, &group, isolation.target);
                    match self.apply_unsure(&[], &mut proof, &id, unsure).await {
                        Ok(()) => break,
                        Err(refusal) => {
                            self.block(refusal);
                            unsure = true;
                            backoff.wait().await;
                            continue;
                        }
                    }
                }
                Action::Insert(range) => {
                    let mut proof = Proof::Mark {
                        group: &group,
                        from: at,
                        to: at + 1,
                    };
                    let id = step_id(&batch, &group, at + 1);
                    let rows = &isolation.rows[range.clone()];
                    match self.apply_unsure(rows, &mut proof, &id, unsure).await {
                        Ok(()) => Outcome::Applied,
                        Err(_) if range.len() > 1 => Outcome::Split,
                        Err(refusal) => Outcome::Refused(refusal),
                    }
                }
                Action::Control(row, refusal) => {
                    let mut proof = Proof::Mark {
                        group: &group,
                        from: at,
                        to: at + 1,
                    };
                    let id = format!("{}-control", step_id(&batch, &group, at + 1));
                    match self.apply_unsure(&[], &mut proof, &id, unsure).await {
                        Ok(()) => {
                            // Written before the outcome is noted: a crash
                            // between the two writes the line again, never
                            // loses it.
                            if walk.control_condemns() {
                                self.dead_letter(&isolation.rows[row], refusal, &isolation, at + 1);
                            }
                            Outcome::ControlPassed
                        }
                        Err(systemic) => {
                            self.block(systemic);
                            backoff.wait().await;
                            Outcome::ControlRefused
                        }
                    }
                }
            };
            self.durably(|dir| isolation.note(dir, outcome)).await;
            walk.record(outcome);
            unsure = false;
        }
        self.durably(Isolation::end).await;
        if !walk.dead.is_empty() {
            tracing::warn!(kind = group.kind.as_str(), site = %group.site, hour = group.hour, dead = walk.dead.len(), applied_pieces = walk.steps as usize - walk.dead.len(), "refused rows isolated; the rest of the group is in");
        }
    }

    /// Runs a file operation in the log folder until it succeeds: what it
    /// writes must be durable before delivery goes on.
    async fn durably<F>(&self, mut op: F)
    where
        F: FnMut(&std::path::Path) -> std::io::Result<()>,
    {
        let mut backoff = self.backoff();
        loop {
            match op(self.journal.dir()) {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(error = %error, retry_in_ms = backoff.peek().as_millis() as u64, "cannot write delivery notes in the log folder; delivery waits");
                    backoff.wait().await;
                }
            }
        }
    }

    /// The receipt, which tamis alone makes: a refusal is never about
    /// data, so it is retried until ClickHouse takes it, and the batch's
    /// records stay unconfirmed meanwhile.
    async fn write_receipt(&mut self, receipt: &Receipt) {
        let id = format!("tamis-{}-{}-receipt", receipt.journal_id, receipt.end_seq);
        let mut backoff = self.backoff();
        loop {
            let mut proof = Proof::Receipt(receipt);
            match self.apply(&[], &mut proof, &id).await {
                Ok(()) => return,
                Err(refusal) => {
                    self.block(refusal);
                    backoff.wait().await;
                }
            }
        }
    }

    fn remember(&mut self, group: Group, at: u64) {
        if self.marks.len() >= MARKS_REMEMBERED {
            self.marks.clear();
        }
        self.marks.insert((self.shard.clone(), group), at);
    }

    /// Where a group's mark stands in this batch's shard: remembered, or
    /// looked up.
    async fn position(&self, group: &Group) -> u64 {
        match self.marks.get(&(self.shard.clone(), group.clone())) {
            Some(at) => *at,
            None => self.look_up_until_done(group).await,
        }
    }

    /// A group's mark, looked up for as long as it takes.
    async fn look_up_until_done(&self, group: &Group) -> u64 {
        let mut backoff = self.backoff();
        loop {
            match self.store.mark(&self.shard, group).await {
                Ok(at) => return at,
                Err(error) => {
                    tracing::warn!(error = %failure_text(&error), retry_in_ms = backoff.peek().as_millis() as u64, "cannot read a delivery mark; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn apply(
        &mut self,
        rows: &[BatchRow<'_>],
        proof: &mut Proof<'_>,
        query_id: &str,
    ) -> Result<(), Refusal> {
        self.apply_unsure(rows, proof, query_id, false).await
    }

    /// Applies `rows` plus their proof exactly once, however many attempts
    /// it takes; returns a refusal that is not passing, once the proof
    /// shows nothing of the attempt went in. `unsure`: an earlier attempt
    /// (before a restart) may have gone in: look first.
    async fn apply_unsure(
        &mut self,
        rows: &[BatchRow<'_>],
        proof: &mut Proof<'_>,
        query_id: &str,
        unsure: bool,
    ) -> Result<(), Refusal> {
        let mut backoff = self.backoff();
        let mut maybe_applied = unsure;
        let mut passing = 0;
        loop {
            if maybe_applied {
                match self.state(proof, query_id).await {
                    Ok(State::Applied) => {
                        tracing::info!(
                            query_id,
                            "insert found applied after an unclear failure; not sent again"
                        );
                        self.unblock();
                        return Ok(());
                    }
                    Ok(State::Running) | Err(_) => {
                        backoff.wait().await;
                        continue;
                    }
                    Ok(State::Absent) => {}
                }
            }
            let name = self.mark_name(proof);
            let last = self.proof_row(proof, &name);
            match self.store.insert(&self.shard, rows, &last, query_id).await {
                Ok(()) => {
                    self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    self.unblock();
                    return Ok(());
                }
                Err(Failure::Unclear(what)) => {
                    self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(0, Ordering::Relaxed);
                    if self.store.deduplicates() {
                        // Sent again byte for byte: if the first one went
                        // in, ClickHouse drops this one.
                        tracing::warn!(rows = rows.len(), shard = %self.shard, error = %what, retry_in_ms = backoff.peek().as_millis() as u64, "insert failed; sending the same block again (ClickHouse drops it if the first went in)");
                    } else {
                        tracing::warn!(rows = rows.len(), error = %what, retry_in_ms = backoff.peek().as_millis() as u64, "insert failed; checking whether it took effect before retrying");
                        maybe_applied = true;
                    }
                    backoff.wait().await;
                }
                Err(Failure::Refused(refusal)) => {
                    self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
                    self.metrics.clickhouse_up.store(1, Ordering::Relaxed);
                    // A refusal can come after part of the insert went in
                    // (a view that throws after another wrote its part):
                    // the mark says what did. On a cluster a passing
                    // refusal (ZooKeeper away, "unknown status of insert")
                    // is answered as ClickHouse asks: the same block again,
                    // which it drops if the first went in; a part seen on
                    // the replica may yet be dropped if ZooKeeper never
                    // took it, so looking would not settle it.
                    maybe_applied =
                        !(self.store.deduplicates() && refusal.category() == Category::Passing);
                    if refusal.category() == Category::Passing {
                        passing += 1;
                        if passing >= REFUSALS_BEFORE_CONTROL {
                            self.block(refusal);
                        }
                        tracing::warn!(rows = rows.len(), code = refusal.code(), error = %refusal, retry_in_ms = backoff.peek().as_millis() as u64, "ClickHouse refused an insert for now; retrying");
                        backoff.wait().await;
                        continue;
                    }
                    match self.state(proof, query_id).await {
                        Ok(State::Applied) => {
                            self.unblock();
                            return Ok(());
                        }
                        Ok(State::Absent) => return Err(refusal),
                        Ok(State::Running) | Err(_) => backoff.wait().await,
                    }
                }
            }
        }
    }

    /// What names this journal's marks: its id; on a cluster its id and
    /// the step's end (see [`marked`]).
    fn mark_name(&self, proof: &Proof<'_>) -> String {
        match proof {
            Proof::Mark { to, .. } if self.store.deduplicates() => marked(self.journal.id(), *to),
            _ => self.journal.id().to_string(),
        }
    }

    /// The row that proves an insert: its mark step, or the receipt.
    fn proof_row<'p>(&'p self, proof: &'p Proof<'_>, name: &'p str) -> BatchRow<'p> {
        match proof {
            Proof::Mark { group, from, to } => {
                BatchRow::mark(group.kind, &group.site, group.hour, name, to - from)
            }
            Proof::Receipt(receipt) => BatchRow::receipt(receipt),
        }
    }

    /// Whether an attempt took effect. A mark found short of its target but
    /// moved (never by another writer: the journal is locked to one
    /// process) makes the next attempt move it from there.
    ///
    /// ClickHouse is asked whether the attempt still runs *before* the
    /// proof is read: read the other way round, an insert that commits
    /// between the two reads looks absent (no proof yet, no longer
    /// running) and would be sent again, counting its rows twice. An
    /// insert's parts, its views' included, are committed before it
    /// leaves `system.processes`, so not running and no proof means it
    /// never took effect.
    async fn state(&self, proof: &mut Proof<'_>, query_id: &str) -> Result<State, Failure> {
        if self.store.running(&self.shard, query_id).await? {
            return Ok(State::Running);
        }
        let applied = match proof {
            Proof::Mark { group, from, to } => {
                let at = self.store.mark(&self.shard, group).await?;
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
            Proof::Receipt(receipt) => self.store.has_receipt(&self.shard, receipt.end_seq).await?,
        };
        Ok(if applied {
            State::Applied
        } else {
            State::Absent
        })
    }

    /// Delivery is held up by a refusal that is not the rows' fault.
    fn block(&mut self, refusal: Refusal) {
        if self.blocked != Some(refusal) {
            tracing::error!(code = refusal.code(), error = %refusal, "delivery blocked: ClickHouse refuses tamis's own rows, not only bad data; hits wait in the durable log, nothing is dead-lettered");
        }
        self.blocked = Some(refusal);
        self.metrics.delivery_blocked.store(1, Ordering::Relaxed);
        self.metrics
            .delivery_blocked_code
            .store(u64::from(refusal.code()), Ordering::Relaxed);
    }

    fn unblock(&mut self) {
        if let Some(refusal) = self.blocked.take() {
            tracing::info!(
                code = refusal.code(),
                "delivery resumed: ClickHouse takes rows again"
            );
            self.metrics.delivery_blocked.store(0, Ordering::Relaxed);
            self.metrics
                .delivery_blocked_code
                .store(0, Ordering::Relaxed);
        }
    }

    /// Keeps a refused row for an operator, with ClickHouse's error code and
    /// its meaning, never its text. `step`: the mark step that proved
    /// ClickHouse took other rows right after (a resumed isolation may
    /// write the same line twice; the step tells them apart).
    fn dead_letter(&self, row: &BatchRow<'_>, refusal: Refusal, isolation: &Isolation, step: u64) {
        self.metrics
            .rows_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.rows_rejected.fetch_add(1, Ordering::Relaxed);
        let dir = self.journal.dir().join("dead-letter");
        let line = serde_json::json!({
            "reason": refusal.to_string(),
            "code": refusal.code(),
            "journal_id": self.journal.id(),
            "first_seq": isolation.first_seq,
            "end_seq": isolation.end_seq,
            "step": step,
            "row": row.diagnosis(),
        });
        let written = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(dir.join(format!("{}.jsonl", self.journal.id())))?;
                writeln!(file, "{line}")?;
                file.sync_data()
            });
        match written {
            Ok(()) => {
                tracing::error!(kind = row.kind.as_str(), code = refusal.code(), error = %refusal, folder = %dir.display(), "row refused by ClickHouse written to the dead-letter folder")
            }
            Err(e) => {
                tracing::error!(kind = row.kind.as_str(), code = refusal.code(), error = %refusal, io_error = %e, "row refused by ClickHouse, and the dead-letter folder cannot be written")
            }
        }
    }
}

/// The name of a mark step on a cluster: the journal id and the step's
/// end, which no other step of the journal has. A replicated table drops a
/// block identical to a recent one; the step's end in its mark keeps two
/// different inserts (two batches of the same rows and the same size, two
/// controls of an isolation) from ever being one block, while a resend of
/// the same step is the same block. Readers of the mark sum every step
/// whose name starts with the journal id and a colon.
pub fn marked(journal_id: &str, to: u64) -> String {
    format!("{journal_id}:{to:020}")
}

/// The query id of a mark step: the same on every attempt and after a
/// restart.
fn step_id(batch: &Receipt, group: &Group, to: u64) -> String {
    format!(
        "tamis-{}-{}-{}-{}-{to}",
        batch.journal_id,
        group.kind.as_str(),
        group.site,
        group.hour
    )
}

fn failure_text(failure: &Failure) -> String {
    match failure {
        Failure::Unclear(what) => what.clone(),
        Failure::Refused(refusal) => refusal.to_string(),
    }
}
