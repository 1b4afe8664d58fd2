//! Shares the daily salts through ClickHouse and destroys them. Every
//! collector on the same database converges on one salt per site and local
//! day: the earliest one written. A salt is published at most two hours
//! before its day starts and dropped (its partition removed) ten minutes
//! after the day ends, so none lives 48 hours. Salts of sites no longer
//! configured are dropped once their day is over everywhere on Earth.
//!
//! Each destruction, in memory and in ClickHouse, is recorded in
//! `salt_destructions` with a commitment (a domain-separated hash of the
//! salt, see [`crate::privacy::salt::commitment`]), never the salt itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::SiteSettings;
use crate::metrics::Metrics;
use crate::privacy::pipeline::local_day;
use crate::privacy::salt::{commitment, wipe, DailySalt, SaltStore};

/// How long before its local day a salt may be created.
pub const AHEAD: chrono::Duration = chrono::Duration::hours(2);
/// How long after its local day a salt is kept, for clock skew between
/// collectors.
pub const GRACE: chrono::Duration = chrono::Duration::minutes(10);

/// A salt travels to ClickHouse only as RowBinary in a request body: bound
/// into SQL text, it would be kept in ClickHouse's query log and server log
/// long after its day.
#[derive(Row, Serialize)]
struct SaltRow<'a> {
    site_id: &'a str,
    /// Days since the epoch (ClickHouse `Date`).
    day: u16,
    salt: &'a str,
    created_at: u32,
}

/// A salt read back for destruction (in a response body, never in SQL).
#[derive(Row, Deserialize)]
struct StoredSalt {
    site_id: String,
    day: u16,
    salt: String,
}

#[derive(Row, Serialize)]
struct DestructionRow<'a> {
    destroyed_at: u32,
    site_id: &'a str,
    day: u16,
    /// `memory` (this collector's store) or `clickhouse` (the shared table).
    place: &'a str,
    commitment: &'a str,
}

/// One recorded destruction.
struct Destroyed {
    site_id: String,
    day: NaiveDate,
    place: &'static str,
    commitment: String,
}

pub struct SaltKeeper {
    client: clickhouse::Client,
    sites: Vec<Arc<SiteSettings>>,
    store: Arc<SaltStore>,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
}

impl SaltKeeper {
    pub fn new(
        client: clickhouse::Client,
        sites: Vec<Arc<SiteSettings>>,
        store: Arc<SaltStore>,
        clock: Clock,
    ) -> Self {
        SaltKeeper {
            client,
            sites,
            store,
            clock,
            metrics: None,
        }
    }

    /// Publishes the salts held in memory (count, oldest day) as gauges.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Keeps salts in step every `period` (and at once when `wake` fires).
    pub async fn run(self, period: Duration, wake: Arc<tokio::sync::Notify>) {
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(error = %error, "salt keeper could not reach ClickHouse; will retry");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// One pass: destroy expired salts, then make sure today's (and, close
    /// to midnight, tomorrow's) salt is shared.
    pub async fn tick(&self) -> Result<(), clickhouse::error::Error> {
        let now = self.clock.now();
        // Memory first, for every site, whether or not ClickHouse answers.
        let mut destroyed = Vec::new();
        for (index, site) in self.sites.iter().enumerate() {
            for (day, salt) in self.store.destroy_before(index, first_kept(site, now)) {
                let commitment = salt.commitment();
                tracing::info!(site = %site.id, %day, %commitment, "daily salt destroyed in memory");
                destroyed.push(Destroyed {
                    site_id: site.id.clone(),
                    day,
                    place: "memory",
                    commitment,
                });
            }
        }
        self.publish_gauges();
        let mut result = self.destroy_expired(now, &mut destroyed).await;
        self.record(&destroyed, now).await;
        for (index, site) in self.sites.iter().enumerate() {
            for day in days_needed(site, now) {
                result = result.and(self.share(index, site, day).await);
            }
        }
        self.publish_gauges();
        result
    }

    fn publish_gauges(&self) {
        let Some(metrics) = &self.metrics else { return };
        let mut held = 0u64;
        let mut oldest: Option<i64> = None;
        for (index, site) in self.sites.iter().enumerate() {
            let days = self.store.days(index);
            held += days.len() as u64;
            if let Some(first) = days.first() {
                let start = day_start(*first, site.timezone).timestamp();
                oldest = Some(oldest.map_or(start, |o| o.min(start)));
            }
        }
        metrics.salts_in_memory.store(held, Ordering::Relaxed);
        metrics.salt_oldest_day_start.store(
            oldest.map_or(0, |o| u64::try_from(o).unwrap_or(0)),
            Ordering::Relaxed,
        );
    }

    /// Drops every expired (site, day) partition of the shared table, after
    /// reading its salt to commit to it. Partitions are (site, day):
    /// dropping one removes exactly that site's salt of that day, on every
    /// collector at once.
    async fn destroy_expired(
        &self,
        now: DateTime<Utc>,
        destroyed: &mut Vec<Destroyed>,
    ) -> Result<(), clickhouse::error::Error> {
        let stored = self
            .client
            .query("SELECT site_id, day, salt FROM salts ORDER BY site_id, day, created_at")
            .fetch_all::<StoredSalt>()
            .await?;
        let mut dropped: Vec<(String, NaiveDate)> = Vec::new();
        for row in &stored {
            let day = from_days(row.day);
            let expired = match self.sites.iter().find(|s| s.id == row.site_id) {
                Some(site) => day < first_kept(site, now),
                // Unknown time zone: wait until the day is over everywhere.
                None => day
                    .checked_add_days(Days::new(2))
                    .is_some_and(|d| d <= (now - GRACE).date_naive()),
            };
            if !expired {
                continue;
            }
            if let Some(mut bytes) = parse_hex(&row.salt) {
                destroyed.push(Destroyed {
                    site_id: row.site_id.clone(),
                    day,
                    place: "clickhouse",
                    commitment: commitment(&bytes),
                });
                wipe(&mut bytes);
            }
            if !dropped.iter().any(|(s, d)| *s == row.site_id && *d == day) {
                dropped.push((row.site_id.clone(), day));
            }
        }
        stored.into_iter().for_each(|row| wipe_string(row.salt));
        for (site_id, day) in dropped {
            let yyyymmdd = day.format("%Y%m%d").to_string();
            self.client
                .query(&format!(
                    "ALTER TABLE salts DROP PARTITION ({}, {yyyymmdd})",
                    quote(&site_id)
                ))
                .execute()
                .await?;
            tracing::info!(site = %site_id, %day, "daily salt destroyed in ClickHouse");
        }
        Ok(())
    }

    /// Records destructions in `salt_destructions`. A failure is logged
    /// (the log line above holds the same facts) and never delays a
    /// destruction.
    async fn record(&self, destroyed: &[Destroyed], now: DateTime<Utc>) {
        if destroyed.is_empty() {
            return;
        }
        let result = async {
            let mut insert = self
                .client
                .insert::<DestructionRow<'_>>("salt_destructions")
                .await?;
            for d in destroyed {
                insert
                    .write(&DestructionRow {
                        destroyed_at: u32::try_from(now.timestamp()).unwrap_or(0),
                        site_id: &d.site_id,
                        day: to_days(d.day),
                        place: d.place,
                        commitment: &d.commitment,
                    })
                    .await?;
            }
            insert.end().await
        }
        .await;
        if let Err(error) = result {
            tracing::error!(error = %error, records = destroyed.len(), "salt destruction records not written (the destructions happened)");
        }
    }

    async fn share(
        &self,
        index: usize,
        site: &SiteSettings,
        day: NaiveDate,
    ) -> Result<(), clickhouse::error::Error> {
        if let Some(salt) = self.read_shared(site, day).await? {
            self.store.set_shared(index, day, salt);
            return Ok(());
        }
        // Publish ours (the local one if hits already used it), then adopt
        // whichever was written first, in case another collector raced us.
        let candidate = self.store.get_or_create(index, day);
        let salt = hex(candidate.as_bytes());
        let written = async {
            let mut insert = self.client.insert::<SaltRow<'_>>("salts").await?;
            insert
                .write(&SaltRow {
                    site_id: &site.id,
                    day: to_days(day),
                    salt: &salt,
                    created_at: u32::try_from(self.clock.now().timestamp()).unwrap_or(0),
                })
                .await?;
            insert.end().await
        }
        .await;
        wipe_string(salt);
        written?;
        if let Some(salt) = self.read_shared(site, day).await? {
            self.store.set_shared(index, day, salt);
        }
        Ok(())
    }

    async fn read_shared(
        &self,
        site: &SiteSettings,
        day: NaiveDate,
    ) -> Result<Option<DailySalt>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT salt FROM salts WHERE site_id = ? AND day = toDate(?) ORDER BY created_at, salt LIMIT 1")
            .bind(&site.id)
            .bind(day.to_string())
            .fetch_all::<String>()
            .await?;
        let salt = rows
            .first()
            .and_then(|s| parse_hex(s))
            .map(DailySalt::from_bytes);
        rows.into_iter().for_each(wipe_string);
        Ok(salt)
    }
}

/// The first local day whose salt is still kept at `now`.
fn first_kept(site: &SiteSettings, now: DateTime<Utc>) -> NaiveDate {
    local_day(site, now - GRACE)
}

/// The local days whose salt must exist at `now`.
pub fn days_needed(site: &SiteSettings, now: DateTime<Utc>) -> Vec<NaiveDate> {
    let today = local_day(site, now);
    let mut days = vec![today];
    let soon = local_day(site, now + AHEAD);
    if soon != today {
        days.push(soon);
    }
    days.retain(|d| *d <= today.checked_add_days(Days::new(1)).unwrap_or(*d));
    days
}

/// The instant a local day begins (midnight, or the first hour after it
/// where a DST change skips midnight).
fn day_start(day: NaiveDate, tz: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::TimeZone;
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

fn to_days(day: NaiveDate) -> u16 {
    u16::try_from(
        day.signed_duration_since(DateTime::UNIX_EPOCH.date_naive())
            .num_days(),
    )
    .unwrap_or(0)
}

fn from_days(days: u16) -> NaiveDate {
    DateTime::UNIX_EPOCH.date_naive() + chrono::Duration::days(i64::from(days))
}

/// Overwrites a salt's hex text before its memory is freed.
fn wipe_string(s: String) {
    let mut bytes = s.into_bytes();
    wipe(&mut bytes);
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::pipeline::test_site;

    fn check(now: &str, expected: &[&str]) {
        let site = test_site("example.org");
        let got: Vec<String> = days_needed(&site, now.parse().unwrap())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(got, expected, "{now}");
    }

    #[test]
    fn tomorrow_is_prepared_only_near_midnight() {
        // Toronto is UTC-5 in November.
        check("2026-11-23T15:00:00Z", &["2026-11-23"]);
        check("2026-11-24T02:59:59Z", &["2026-11-23"]);
        check("2026-11-24T03:00:00Z", &["2026-11-23", "2026-11-24"]);
        check("2026-11-24T05:00:00Z", &["2026-11-24"]);
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0xab; 32];
        assert_eq!(parse_hex(&hex(&bytes)), Some(bytes));
        assert_eq!(parse_hex("zz"), None);
    }
}
