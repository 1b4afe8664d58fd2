//! Imported history in ClickHouse: `imported_daily` (plain numbers per
//! site, report, day and dimension values, under an import's version) and
//! its ledger `imported_days` (which version of which file is current for
//! each (site, report, day)). Never mixed with collected traffic.
//!
//! An insert is atomic in ClickHouse only within one part, and a block
//! spanning several partitions becomes one part per partition. So the rows
//! go first, under a version no reader knows yet (a crash leaves rows that
//! are never read), and the import takes effect with one insert into
//! the ledger, partitioned by site alone: one part, all or nothing. Readers
//! take each (report, day)'s newest version in the ledger, so replacing
//! days is the same step.
//!
//! On a cluster the rows and the ledger live on the home shard
//! (`sink::nodes::Nodes::home`), read there (a re-import of a day is
//! refused whichever collector or operator runs it), written on one
//! replica, another taking over when it cannot be reached: a chunk sent
//! again is byte for byte the first, which a replicated table takes once.
//! The ledger is written only once every replica that answers holds every
//! row of the import, so that no replica shows an import whose rows it
//! lacks.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{wait_replicated, Error, Nodes};
use crate::import::ga4::{Counts, Parsed, COLUMNS};

/// Rows per insert into `imported_daily`: the progress bar moves between
/// them, and a block stays far below ClickHouse's `max_insert_block_size`.
const CHUNK: usize = 20_000;

/// How long the ledger waits for the home shard's other replicas to hold
/// the import's rows.
const REPLICATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Row, Serialize)]
struct DayRow<'a> {
    site_id: &'a str,
    /// Days since 1970-01-01 (ClickHouse `Date`).
    day: u16,
    version: u64,
    report: &'a str,
    page: &'a str,
    hostname: &'a str,
    entry_page: &'a str,
    source: &'a str,
    utm_medium: &'a str,
    utm_campaign: &'a str,
    utm_content: &'a str,
    utm_term: &'a str,
    country: &'a str,
    region: &'a str,
    device: &'a str,
    browser: &'a str,
    os: &'a str,
    os_version: &'a str,
    visitors: u64,
    visits: u64,
    pageviews: u64,
    bounces: u64,
    duration: u64,
}

#[derive(Row, Serialize)]
struct LedgerRow<'a> {
    site_id: &'a str,
    report: &'a str,
    day: u16,
    version: u64,
    file: &'a str,
    file_sha256: &'a str,
    rows: u64,
    imported_at: u32,
}

/// Which file's import is current for a (report, day).
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Current {
    pub report: String,
    pub day: String,
    pub file: String,
    pub file_sha256: String,
}

/// One file to write.
pub struct FileImport<'a> {
    pub file: &'a str,
    pub sha256: &'a str,
    pub parsed: &'a Parsed,
}

fn days_since_epoch(day: NaiveDate) -> u16 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((day - epoch).num_days()).unwrap_or(0)
}

/// The current import of every (report, day) of the site, from the home
/// shard's ledger.
pub async fn current(nodes: &Nodes, site_id: &str) -> Result<Vec<Current>, Error> {
    let home = nodes.home().await?;
    let current = nodes
        .on_shard(home, |client| async move {
            client
                .query(
                    "SELECT report, toString(day), argMax(file, version), argMax(file_sha256, version) \
                     FROM imported_days WHERE site_id = ? GROUP BY report, day ORDER BY report, day",
                )
                .bind(site_id)
                .fetch_all::<Current>()
                .await
        })
        .await?;
    Ok(current)
}

/// Writes `files` under `version` on the home shard: their rows, then
/// (one insert, one part) their ledger rows. `progress` hears the rows
/// written so far.
pub async fn write(
    nodes: &Nodes,
    site_id: &str,
    version: u64,
    files: &[FileImport<'_>],
    now: u32,
    progress: &dyn Fn(u64),
) -> Result<(), Error> {
    let home = nodes.home().await?;
    let mut written = 0u64;
    for f in files {
        let report = f.parsed.report.as_str();
        let rows: Vec<(&(NaiveDate, [String; COLUMNS.len()]), &Counts)> =
            f.parsed.rows.iter().collect();
        for chunk in rows.chunks(CHUNK) {
            nodes
                .on_shard(home, |client| {
                    write_chunk(client, site_id, version, report, chunk)
                })
                .await?;
            written += chunk.len() as u64;
            progress(written);
        }
    }
    let rows_of = |client: clickhouse::Client| async move {
        client
            .query("SELECT count() FROM imported_daily WHERE site_id = ? AND version = toUInt64(?)")
            .bind(site_id)
            .bind(version.to_string())
            .fetch_one::<u64>()
            .await
    };
    nodes
        .on_replica(home, |node| async move {
            if home.replicas.len() > 1 {
                // Rows reach the replicas that did not take them later (and
                // not while the one that took them cannot be reached): the
                // ledger waits until every replica that answers holds them.
                wait_replicated(home, written, REPLICATION_PATIENCE, rows_of).await?;
            }
            write_ledger(node.client, site_id, version, files, now).await
        })
        .await?;
    Ok(())
}

async fn write_chunk(
    client: clickhouse::Client,
    site_id: &str,
    version: u64,
    report: &str,
    chunk: &[(&(NaiveDate, [String; COLUMNS.len()]), &Counts)],
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<DayRow<'_>>("imported_daily").await?;
    for ((day, v), c) in chunk {
        insert
            .write(&DayRow {
                site_id,
                day: days_since_epoch(*day),
                version,
                report,
                page: &v[0],
                hostname: &v[1],
                entry_page: &v[2],
                source: &v[3],
                utm_medium: &v[4],
                utm_campaign: &v[5],
                utm_content: &v[6],
                utm_term: &v[7],
                country: &v[8],
                region: &v[9],
                device: &v[10],
                browser: &v[11],
                os: &v[12],
                os_version: &v[13],
                visitors: c.visitors,
                visits: c.visits,
                pageviews: c.pageviews,
                bounces: c.bounces,
                duration: c.duration,
            })
            .await?;
    }
    insert.end().await
}

async fn write_ledger(
    client: clickhouse::Client,
    site_id: &str,
    version: u64,
    files: &[FileImport<'_>],
    now: u32,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<LedgerRow<'_>>("imported_days").await?;
    for f in files {
        let mut per_day: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        for (day, _) in f.parsed.rows.keys() {
            *per_day.entry(*day).or_default() += 1;
        }
        for (day, rows) in per_day {
            insert
                .write(&LedgerRow {
                    site_id,
                    report: f.parsed.report.as_str(),
                    day: days_since_epoch(day),
                    version,
                    file: f.file,
                    file_sha256: f.sha256,
                    rows,
                    imported_at: now,
                })
                .await?;
        }
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_types_follow_the_table_columns() {
        // RowBinary is positional: DayRow's dimension fields must be
        // COLUMNS in order, between `report` and the counts.
        assert_eq!(
            COLUMNS,
            [
                "page",
                "hostname",
                "entry_page",
                "source",
                "utm_medium",
                "utm_campaign",
                "utm_content",
                "utm_term",
                "country",
                "region",
                "device",
                "browser",
                "os",
                "os_version"
            ]
        );
        assert_eq!(
            days_since_epoch(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()),
            20089
        );
    }
}
