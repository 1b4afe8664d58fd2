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

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::SiteSettings;

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

#[derive(Row, Deserialize)]
struct PartRow {
    partition: String,
    rows: u64,
}

pub struct Janitor {
    client: clickhouse::Client,
    sites: Vec<Arc<SiteSettings>>,
    records_retention_months: u32,
    clock: Clock,
}

impl Janitor {
    pub fn new(
        client: clickhouse::Client,
        sites: Vec<Arc<SiteSettings>>,
        records_retention_months: u32,
        clock: Clock,
    ) -> Self {
        Janitor {
            client,
            sites,
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

    /// One pass over every table; returns what was dropped.
    pub async fn tick(&self) -> Result<Vec<Deletion>, clickhouse::error::Error> {
        let now = self.clock.now();
        let mut deletions = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for table in SITE_TABLES {
            for part in self.partitions(table).await? {
                let Some((site_id, period)) = parse_site_partition(&part.partition) else {
                    tracing::warn!(table, partition = %part.partition, "retention: partition not understood; left alone");
                    continue;
                };
                let Some(site) = self.sites.iter().find(|s| s.id == site_id) else {
                    if !unknown.contains(&site_id) {
                        unknown.push(site_id);
                    }
                    continue;
                };
                let local_now = now.with_timezone(&site.timezone);
                if is_expired(
                    period,
                    yyyymm(local_now.year(), local_now.month()),
                    site.retention_months,
                ) {
                    self.client
                        .query(&format!(
                            "ALTER TABLE {table} DROP PARTITION ({}, {period})",
                            quote(&site_id)
                        ))
                        .execute()
                        .await?;
                    deletions.push(Deletion {
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
            for part in self.partitions(table).await? {
                let Ok(period) = part.partition.trim().parse::<u32>() else {
                    continue;
                };
                if is_expired(period, current, self.records_retention_months) {
                    self.client
                        .query(&format!("ALTER TABLE {table} DROP PARTITION {period}"))
                        .execute()
                        .await?;
                    deletions.push(Deletion {
                        site_id: String::new(),
                        table,
                        period,
                        rows: part.rows,
                    });
                }
            }
        }
        if !unknown.is_empty() {
            tracing::warn!(sites = %unknown.join(","), "retention: data of sites not in this configuration is kept; configure them (or drop their partitions) to apply a retention");
        }
        self.report(&deletions, now).await;
        Ok(deletions)
    }

    /// Active partitions of `table` with their stored rows.
    async fn partitions(&self, table: &str) -> Result<Vec<PartRow>, clickhouse::error::Error> {
        self.client
            .query("SELECT partition, toUInt64(sum(rows)) FROM system.parts WHERE database = currentDatabase() AND table = ? AND active GROUP BY partition ORDER BY partition")
            .bind(table)
            .fetch_all::<PartRow>()
            .await
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
        let result = async {
            let mut insert = self
                .client
                .insert::<DeletionRow<'_>>("retention_log")
                .await?;
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
        }
        .await;
        if let Err(error) = result {
            tracing::error!(error = %error, deletions = deletions.len(), "retention: deletion report not written to retention_log (it is in this log)");
        }
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
