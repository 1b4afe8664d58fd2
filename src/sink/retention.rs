//! The retention janitor: drops the monthly partitions of each site's
//! aggregates once they fall outside the site's `retention_months`, and the
//! months of tamis's own records (audit log, deletion reports, salt
//! destructions) past `audit.retention_months`. Every drop is reported in
//! the log and in the `retention_log` table (site, table, month, rows).
//!
//! Aggregate tables are partitioned by (site, month), so one site's
//! retention only ever removes that site's partitions. Partitions of sites
//! that are no longer configured are left alone (another collector sharing
//! the database may serve them) and named in a warning. It must not touch
//! anything but whole partitions: no `ALTER … DELETE`, which would rewrite
//! parts and is not what operators audit.
//!
//! On a cluster every shard holds its own partitions: each shard's are
//! listed and dropped on one of its replicas (`ALTER … DROP PARTITION` on a
//! replicated table is replicated: the others drop it too, a replica that
//! was down when it returns), never with `ON CLUSTER`, which blocks while a
//! node is down. A shard that cannot be reached is skipped and named; the
//! pass is retried soon after, the other shards' drops done and reported.
//! The report of a pass is one insert into one shard, one row per (site,
//! table, month) with the rows of every shard: `retention_log` is read
//! through its `Distributed` table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{Error, Nodes, Shard};
use crate::clock::Clock;
use crate::config::LiveSites;

/// Aggregate tables partitioned by `(site_id, toYYYYMM(hour))` (the
/// rollups by `(site_id, toYYYYMM(day))`, the site's local day).
pub const SITE_TABLES: [&str; 8] = [
    "traffic_hourly",
    "props_hourly",
    "dropped_hourly",
    "funnel_hourly",
    "rollup_daily",
    "rollup_days",
    "rollup_goal_days",
    "imported_daily",
];
/// tamis's own records (and batch receipts), partitioned by `toYYYYMM(time)`.
pub const RECORD_TABLES: [&str; 4] = [
    "audit_log",
    "retention_log",
    "salt_destructions",
    "batch_receipts",
];

/// One dropped partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Empty for tamis's own records.
    pub site_id: String,
    pub table: &'static str,
    /// YYYYMM.
    pub period: u32,
    pub rows: u64,
}

#[derive(Row, Serialize)]
struct DeletionRow<'a> {
    deleted_at: u32,
    site_id: &'a str,
    table_name: &'a str,
    period: u32,
    rows: u64,
}

/// What a pass found: its drops, and the sites it left alone.
#[derive(Default)]
struct Found {
    deletions: Vec<Deletion>,
    unknown: Vec<String>,
}

#[derive(Row, Deserialize)]
struct PartRow {
    partition: String,
    rows: u64,
}

pub struct Janitor {
    nodes: Arc<Nodes>,
    sites: LiveSites,
    records_retention_months: u32,
    clock: Clock,
}

impl Janitor {
    /// The janitor of `sites`' partitions on every shard of `nodes`.
    pub fn new(
        nodes: Arc<Nodes>,
        sites: impl Into<LiveSites>,
        records_retention_months: u32,
        clock: Clock,
    ) -> Self {
        Janitor {
            nodes,
            sites: sites.into(),
            records_retention_months,
            clock,
        }
    }

    /// Runs at once, then every `period` (a day in production).
    pub async fn run(self, period: Duration) {
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(error = %error, "retention janitor could not reach ClickHouse; will retry");
                tokio::time::sleep(period.min(Duration::from_secs(300))).await;
                continue;
            }
            tokio::time::sleep(period).await;
        }
    }

    /// One pass over every table of every shard; returns what was
    /// dropped, reported in `retention_log`. A shard that could not be
    /// reached (or refused) fails the pass after the others are done and
    /// what they dropped is reported.
    pub async fn tick(&self) -> Result<Vec<Deletion>, Error> {
        let now = self.clock.now();
        let found = Mutex::new(Found::default());
        let mut failed = None;
        for shard in self.nodes.shards().await? {
            let done = self
                .nodes
                .on_shard(shard, |client| self.clean(client, now, &found))
                .await;
            if let Err(error) = done {
                tracing::warn!(shard = %shard_label(shard), error = %error, "retention: shard not cleaned; will retry");
                failed = Some(error);
            }
        }
        // A lock written in one step at a time (one push), so a poisoned one
        // holds whole entries.
        let Found { deletions, unknown } = found.into_inner().unwrap_or_else(|e| e.into_inner());
        let deletions = merge(deletions);
        if !unknown.is_empty() {
            tracing::warn!(sites = %unknown.join(","), "retention: data of sites not in this configuration is kept; configure them (or drop their partitions) to apply a retention");
        }
        self.report(&deletions, now).await;
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(deletions),
        }
    }

    /// Drops the expired partitions of every table on the replica `client`
    /// (of one shard, or the single server), adding each to `found`.
    /// Drops done before a failure stay in `found`; the replica that
    /// takes over finds the others.
    async fn clean(
        &self,
        client: clickhouse::Client,
        now: DateTime<Utc>,
        found: &Mutex<Found>,
    ) -> Result<(), clickhouse::error::Error> {
        // Taken for one push at a time, never across an `.await`.
        let found = || found.lock().unwrap_or_else(|e| e.into_inner());
        let sites = self.sites.load();
        for table in SITE_TABLES {
            for part in partitions(&client, table).await? {
                let Some((site_id, period)) = parse_site_partition(&part.partition) else {
                    tracing::warn!(table, partition = %part.partition, "retention: partition not understood; left alone");
                    continue;
                };
                let Some(site) = sites.iter().find(|s| s.id == site_id) else {
                    let mut found = found();
                    if !found.unknown.contains(&site_id) {
                        found.unknown.push(site_id);
                    }
                    continue;
                };
                let local_now = now.with_timezone(&site.timezone);
                if is_expired(
                    period,
                    yyyymm(local_now.year(), local_now.month()),
                    site.retention_months,
                ) {
                    client
                        .query(&format!(
                            "ALTER TABLE {table} DROP PARTITION ({}, {period})",
                            quote(&site_id)
                        ))
                        .execute()
                        .await?;
                    found().deletions.push(Deletion {
                        site_id,
                        table,
                        period,
                        rows: part.rows,
                    });
                }
            }
        }
        let current = yyyymm(now.year(), now.month());
        for table in RECORD_TABLES {
            for part in partitions(&client, table).await? {
                let Ok(period) = part.partition.trim().parse::<u32>() else {
                    continue;
                };
                if is_expired(period, current, self.records_retention_months) {
                    client
                        .query(&format!("ALTER TABLE {table} DROP PARTITION {period}"))
                        .execute()
                        .await?;
                    found().deletions.push(Deletion {
                        site_id: String::new(),
                        table,
                        period,
                        rows: part.rows,
                    });
                }
            }
        }
        Ok(())
    }

    /// The deletion report: one log line per site and month, one row per
    /// dropped partition in `retention_log`. A failed insert is logged, the
    /// log line stays.
    async fn report(&self, deletions: &[Deletion], now: DateTime<Utc>) {
        let mut groups: Vec<(&str, u32, Vec<&str>, u64)> = Vec::new();
        for d in deletions {
            match groups
                .iter_mut()
                .find(|g| g.0 == d.site_id && g.1 == d.period)
            {
                Some(g) => {
                    g.2.push(d.table);
                    g.3 += d.rows;
                }
                None => groups.push((&d.site_id, d.period, vec![d.table], d.rows)),
            }
        }
        for (site, period, tables, rows) in &groups {
            let site = if site.is_empty() {
                "(tamis records)"
            } else {
                site
            };
            tracing::info!(site, period, partitions = tables.len(), tables = %tables.join(","), rows, "retention: expired partitions dropped");
        }
        if deletions.is_empty() {
            return;
        }
        let result = self
            .nodes
            .on_some_shard(|client| async move {
                let mut insert =
                    super::insert_record::<DeletionRow<'_>>(&client, "retention_log").await?;
                for d in deletions {
                    insert
                        .write(&DeletionRow {
                            deleted_at: u32::try_from(now.timestamp()).unwrap_or(0),
                            site_id: &d.site_id,
                            table_name: d.table,
                            period: d.period,
                            rows: d.rows,
                        })
                        .await?;
                }
                insert.end().await
            })
            .await;
        if let Err(error) = result {
            tracing::error!(error = %error, deletions = deletions.len(), "retention: deletion report not written to retention_log (it is in this log)");
        }
    }
}

/// One deletion per (site, table, month): the same partition dropped on
/// several shards is reported once, with the rows of all of them.
fn merge(deletions: Vec<Deletion>) -> Vec<Deletion> {
    let mut merged: Vec<Deletion> = Vec::with_capacity(deletions.len());
    for d in deletions {
        match merged
            .iter_mut()
            .find(|m| m.site_id == d.site_id && m.table == d.table && m.period == d.period)
        {
            Some(m) => m.rows += d.rows,
            None => merged.push(d),
        }
    }
    merged
}

/// Active partitions of `table` on one server, with their stored rows.
async fn partitions(
    client: &clickhouse::Client,
    table: &str,
) -> Result<Vec<PartRow>, clickhouse::error::Error> {
    client
        .query("SELECT partition, toUInt64(sum(rows)) FROM system.parts WHERE database = currentDatabase() AND table = ? AND active GROUP BY partition ORDER BY partition")
        .bind(table)
        .fetch_all::<PartRow>()
        .await
}

/// A shard as logs name it: its name, or its only server's address.
fn shard_label(shard: &Shard) -> String {
    if shard.name.is_empty() {
        shard
            .replicas
            .iter()
            .map(|n| n.url.to_string())
            .collect::<Vec<_>>()
            .join(",")
    } else {
        shard.name.clone()
    }
}

fn yyyymm(year: i32, month: u32) -> u32 {
    u32::try_from(year).unwrap_or(0) * 100 + month
}

/// Whether month `period` (YYYYMM) is past a retention of `months` at
/// month `current`: the current month and the `months - 1` before it are
/// kept, so nothing older than `months` months is ever held.
pub fn is_expired(period: u32, current: u32, months: u32) -> bool {
    let index = |p: u32| i64::from(p / 100) * 12 + i64::from(p % 100) - 1;
    index(current) - index(period) >= i64::from(months)
}

/// `('example.org',202301)` → ("example.org", 202301), as `system.parts`
/// prints a (String, UInt32) partition.
pub fn parse_site_partition(partition: &str) -> Option<(String, u32)> {
    let inner = partition.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (quoted, period) = inner.rsplit_once(',')?;
    let period = period.trim().parse().ok()?;
    let quoted = quoted.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut site = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            site.push(chars.next()?);
        } else {
            site.push(c);
        }
    }
    Some((site, period))
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(period: u32, current: u32, months: u32, expected: bool) {
        assert_eq!(
            is_expired(period, current, months),
            expected,
            "{period} at {current}, {months} months"
        );
    }

    #[test]
    fn months_outside_the_retention_expire() {
        check(202611, 202611, 1, false);
        check(202610, 202611, 1, true);
        // 25 months at November 2026: November 2024 is the oldest kept.
        check(202411, 202611, 25, false);
        check(202410, 202611, 25, true);
        check(202312, 202401, 1, true);
        check(202312, 202401, 2, false);
        check(202312, 202611, 36, false);
        check(202311, 202611, 36, true);
    }

    #[test]
    fn a_partition_dropped_on_several_shards_is_reported_once() {
        let d = |site: &str, table, period, rows| Deletion {
            site_id: site.to_string(),
            table,
            period,
            rows,
        };
        assert_eq!(
            merge(vec![
                d("a.org", "traffic_hourly", 202601, 3),
                d("a.org", "rollup_daily", 202601, 1),
                d("a.org", "traffic_hourly", 202601, 4),
                d("", "audit_log", 202401, 2),
                d("b.org", "traffic_hourly", 202601, 5),
                d("", "audit_log", 202401, 6),
            ]),
            vec![
                d("a.org", "traffic_hourly", 202601, 7),
                d("a.org", "rollup_daily", 202601, 1),
                d("", "audit_log", 202401, 8),
                d("b.org", "traffic_hourly", 202601, 5),
            ]
        );
    }

    #[test]
    fn partitions_parse_as_clickhouse_prints_them() {
        assert_eq!(
            parse_site_partition("('example.org',202301)"),
            Some(("example.org".into(), 202301))
        );
        assert_eq!(
            parse_site_partition("('b\\'x,y.org',202301)"),
            Some(("b'x,y.org".into(), 202301))
        );
        assert_eq!(parse_site_partition("202301"), None);
        assert_eq!(parse_site_partition("('a.org')"), None);
    }
}
