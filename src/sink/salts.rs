//! Shares the daily salts through ClickHouse and destroys them. Every
//! collector on the same database converges on one salt per site and local
//! day: the earliest one written. A salt is published at most two hours
//! before its day starts and dropped (its partition removed) ten minutes
//! after the day ends, so none lives 48 hours.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use clickhouse::Row;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::SiteSettings;
use crate::privacy::pipeline::local_day;
use crate::privacy::salt::{DailySalt, SaltStore};

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

pub struct SaltKeeper {
    client: clickhouse::Client,
    sites: Vec<Arc<SiteSettings>>,
    store: Arc<SaltStore>,
    clock: Clock,
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
        }
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
        for (index, site) in self.sites.iter().enumerate() {
            for (day, salt) in self.store.destroy_before(index, first_kept(site, now)) {
                tracing::info!(site = %site.id, %day, commitment = %salt.commitment(), "daily salt destroyed in memory");
            }
        }
        let mut result = Ok(());
        for (index, site) in self.sites.iter().enumerate() {
            let mut shared = self.destroy_expired(site, now).await;
            for day in days_needed(site, now) {
                shared = shared.and(self.share(index, site, day).await);
            }
            result = result.and(shared);
        }
        result
    }

    async fn destroy_expired(
        &self,
        site: &SiteSettings,
        now: DateTime<Utc>,
    ) -> Result<(), clickhouse::error::Error> {
        let first_kept = first_kept(site, now);
        // Partitions are (site, day): dropping one removes exactly that
        // site's salt of that day, on every collector at once.
        let days: Vec<u32> = self
            .client
            .query("SELECT DISTINCT toUInt32(toYYYYMMDD(day)) FROM salts WHERE site_id = ? AND day < toDate(?)")
            .bind(&site.id)
            .bind(first_kept.to_string())
            .fetch_all::<u32>()
            .await?;
        for yyyymmdd in days {
            self.client
                .query(&format!(
                    "ALTER TABLE salts DROP PARTITION ({}, {yyyymmdd})",
                    quote(&site.id)
                ))
                .execute()
                .await?;
            tracing::info!(site = %site.id, day = yyyymmdd, "daily salt destroyed in ClickHouse");
        }
        Ok(())
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
        let days = day
            .signed_duration_since(DateTime::UNIX_EPOCH.date_naive())
            .num_days();
        let mut insert = self.client.insert::<SaltRow<'_>>("salts").await?;
        insert
            .write(&SaltRow {
                site_id: &site.id,
                day: u16::try_from(days).unwrap_or(0),
                salt: &salt,
                created_at: u32::try_from(self.clock.now().timestamp()).unwrap_or(0),
            })
            .await?;
        insert.end().await?;
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
        Ok(rows
            .first()
            .and_then(|s| parse_hex(s))
            .map(DailySalt::from_bytes))
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
