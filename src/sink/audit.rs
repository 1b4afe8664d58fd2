//! Writes the audit log: every answered read of statistics (stats API,
//! dashboard, CSV export, audit reads) and every configuration change, into
//! the append-only `audit_log` table. tamis only ever inserts there; whole
//! months past `audit.retention_months` are dropped by the janitor.
//!
//! Recording never slows or fails a read: entries go through a bounded
//! queue to a background writer, which retries a failed insert a few times
//! and then gives up, counting and logging what was lost. Entries carry
//! allow-listed names and numbers only, never raw client strings.
//!
//! On a cluster an insert goes to one replica of the home shard, another
//! replica or the next shard taking over when it cannot be reached
//! (`sink::nodes::Nodes::on_some_shard`); the log is read through its
//! `Distributed` table. Replicated tables drop an inserted block identical
//! to a recent one, and two reads by one token in one second can make
//! identical entries: audit inserts turn that deduplication off
//! (`sink::insert_record`), so that no read goes unrecorded (an insert cut
//! after ClickHouse took it and sent again may then be recorded twice, as
//! on a single server).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::nodes::{Error, Nodes};
use crate::backoff::Backoff;
use crate::config::fingerprint;
use crate::metrics::Metrics;

/// Entries waiting to be written; beyond this they are counted as lost.
const QUEUE: usize = 10_000;
/// Entries per insert.
const BATCH: usize = 1_000;
const ATTEMPTS: u32 = 3;
/// Longest summary kept.
pub const MAX_TEXT: usize = 1_000;
/// Longest detail kept (a configuration's section hashes).
const MAX_DETAIL: usize = 64 * 1024;

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `stats_read`, `audit_read`, `config_change`, `share_view` (a shared
    /// link's session opened) or `share_change` (a link created or revoked).
    pub kind: &'static str,
    /// The token's name, or the operator's.
    pub actor: String,
    /// `api`, `dashboard` (the dashboard sends `X-Tamis-Client: dashboard`),
    /// `share` (a shared link's session) or `cli`.
    pub client: &'static str,
    pub site_id: String,
    pub summary: String,
    pub rows: u64,
    /// `json`, `csv` or `text`.
    pub format: &'static str,
    pub detail: String,
}

#[derive(Row, Serialize)]
struct AuditRow<'a> {
    at: u32,
    kind: &'a str,
    actor: &'a str,
    client: &'a str,
    site_id: &'a str,
    summary: &'a str,
    rows: u64,
    format: &'a str,
    detail: &'a str,
}

impl<'a> From<&'a AuditEntry> for AuditRow<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        AuditRow {
            at: u32::try_from(e.at.timestamp()).unwrap_or(0),
            kind: e.kind,
            actor: &e.actor,
            client: e.client,
            site_id: &e.site_id,
            summary: bounded(&e.summary, MAX_TEXT),
            rows: e.rows,
            format: e.format,
            detail: bounded(&e.detail, MAX_DETAIL),
        }
    }
}

fn bounded(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The handle readers record through. Cloning shares the queue.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEntry>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// Starts the background writer; it ends once every handle is dropped
    /// and the queue is written.
    pub fn start(
        nodes: Arc<Nodes>,
        metrics: Arc<Metrics>,
        timeout: Duration,
    ) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(nodes, rx, metrics.clone(), timeout));
        (AuditLog { tx, metrics }, task)
    }

    /// Queues `entry` without waiting.
    pub fn record(&self, entry: AuditEntry) {
        if self.tx.try_send(entry).is_err() {
            self.metrics.audit_rows_lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "audit log queue full or closed: one audit row lost (tamis_audit_rows_lost_total)"
            );
        }
    }
}

async fn write_loop(
    nodes: Arc<Nodes>,
    mut rx: mpsc::Receiver<AuditEntry>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(1));
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(timeout, insert(&nodes, &batch)).await {
                Ok(Ok(())) => {
                    metrics
                        .audit_rows_written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                outcome => {
                    metrics.audit_failures.fetch_add(1, Ordering::Relaxed);
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    if attempt == ATTEMPTS {
                        metrics
                            .audit_rows_lost
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::error!(error = %error, rows = batch.len(), "audit rows could not be written and are lost (tamis_audit_rows_lost_total)");
                    } else {
                        tracing::warn!(error = %error, rows = batch.len(), attempt, "audit insert failed; retrying");
                        backoff.wait().await;
                    }
                }
            }
        }
    }
}

/// Writes entries at once (for the CLI, which has no background writer),
/// into one shard.
pub async fn insert(nodes: &Nodes, entries: &[AuditEntry]) -> Result<(), Error> {
    nodes
        .on_some_shard(|client| async move {
            let mut insert = super::insert_record::<AuditRow<'_>>(&client, "audit_log").await?;
            for e in entries {
                insert.write(&AuditRow::from(e)).await?;
            }
            insert.end().await
        })
        .await
}

/// What a `config_change` row keeps in `detail`: the whole hash and each
/// section's, to name the sections that change next time.
#[derive(Serialize, Deserialize)]
struct ConfigDetail {
    hash: String,
    sections: Vec<(String, String)>,
}

/// Compares the effective configuration (its
/// [`fingerprint::sections`]) with the last one recorded and, when it
/// differs (or none was), records a `config_change` row naming `operator`
/// and the sections that changed. Returns those sections, or `None` when
/// nothing changed.
///
/// On a cluster the last record is read through `audit_log`'s
/// `Distributed` table (records may be on any shard), so it waits for
/// every shard to answer.
pub async fn record_config_change(
    nodes: &Nodes,
    sections: Vec<(String, String)>,
    operator: &str,
    now: DateTime<Utc>,
) -> Result<Option<Vec<String>>, Error> {
    let hash = fingerprint::config_hash(&sections);
    // Every record of the last second: a reload (SIGHUP) may follow the
    // start-up within the same second, and `at` does not order them. When
    // they differ, which one is the last is unknown: the configuration is
    // recorded again rather than a change missed.
    let sql = format!(
        "SELECT toUInt32(at), detail FROM {} WHERE kind = 'config_change' ORDER BY at DESC LIMIT 20",
        nodes.table("audit_log")
    );
    let last: Vec<(u32, String)> = nodes
        .on_any(|client| {
            let sql = &sql;
            async move { client.query(sql).fetch_all::<(u32, String)>().await }
        })
        .await?;
    let newest = last.first().map(|(at, _)| *at);
    let previous: Vec<ConfigDetail> = last
        .iter()
        .filter(|(at, _)| Some(*at) == newest)
        .filter_map(|(_, d)| serde_json::from_str::<ConfigDetail>(d).ok())
        .collect();
    if !previous.is_empty() && previous.iter().all(|p| p.hash == hash) {
        return Ok(None);
    }
    let previous = previous.into_iter().find(|p| p.hash != hash);
    let changed = match &previous {
        Some(p) => fingerprint::changed_sections(&p.sections, &sections),
        None => sections.iter().map(|(name, _)| name.clone()).collect(),
    };
    let summary = match previous {
        Some(_) => format!("configuration {hash} changed: {}", changed.join(", ")),
        None => format!(
            "configuration {hash} recorded for the first time: {}",
            changed.join(", ")
        ),
    };
    let detail = serde_json::to_string(&ConfigDetail { hash, sections }).unwrap_or_default();
    let entry = AuditEntry {
        at: now,
        kind: "config_change",
        actor: operator.to_string(),
        client: "cli",
        site_id: String::new(),
        summary,
        rows: 0,
        format: "text",
        detail,
    };
    insert(nodes, &[entry]).await?;
    Ok(Some(changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT + 10);
        assert_eq!(bounded(&long, MAX_TEXT).chars().count(), MAX_TEXT);
        assert_eq!(bounded("court", MAX_TEXT), "court");
    }
}
