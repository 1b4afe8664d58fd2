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
//!
//! On a cluster the salts live on the home shard alone
//! (`sink::nodes::Nodes::home`), whose replicas copy each other's inserts
//! asynchronously. The rule stays "the earliest salt stored", read from
//! every replica of that shard and merged ([`Seen`]), so that two
//! collectors writing through different replicas converge on the same
//! salt. When a replica cannot be reached, what the others hold is the
//! whole truth only if one of them has nothing left to fetch
//! (`system.replicas`: every entry of the shared log taken into its queue,
//! no insert in it); otherwise the salt it would fetch may be the earliest,
//! so no new salt is published until it can be read (hits keep this
//! collector's local salt meanwhile, as with ClickHouse down). Destruction
//! drops the (site, day) partition on one replica; replication drops it on
//! the others, a replica that was down when it comes back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{Error, Nodes, Shard};
use crate::clock::Clock;
use crate::config::{LiveSites, SiteSettings};
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

/// A salt read back to agree on it.
#[derive(Row, Deserialize)]
struct Candidate {
    created_at: u32,
    salt: String,
}

/// What the replicas of the home shard hold for one (site, day).
struct Seen {
    /// The earliest salt (by creation time, then text) any of them holds.
    earliest: Option<DailySalt>,
    /// Whether that is everything stored: every replica answered, or one
    /// that answered has nothing left to fetch.
    complete: bool,
}

/// A replica's progress in copying `salts` from the others.
#[derive(Row, Deserialize)]
struct ReplicaProgress {
    inserts_in_queue: u32,
    log_pointer: u64,
    log_max_index: u64,
    zookeeper_path: String,
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
    nodes: Arc<Nodes>,
    sites: LiveSites,
    store: Arc<SaltStore>,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
}

impl SaltKeeper {
    /// The keeper of `sites`' salts in `store`, shared through the home
    /// shard of `nodes`.
    pub fn new(
        nodes: Arc<Nodes>,
        sites: impl Into<LiveSites>,
        store: Arc<SaltStore>,
        clock: Clock,
    ) -> Self {
        SaltKeeper {
            nodes,
            sites: sites.into(),
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
    pub async fn tick(&self) -> Result<(), Error> {
        let now = self.clock.now();
        // Memory first, for every site, whether or not ClickHouse answers.
        let mut destroyed = Vec::new();
        for (index, site) in self.sites.load().iter().enumerate() {
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
        let home = match self.nodes.home().await {
            Ok(home) => home,
            Err(error) => {
                self.record(&destroyed, now).await;
                return Err(error.into());
            }
        };
        let mut result = self.destroy_expired(home, now, &mut destroyed).await;
        self.record(&destroyed, now).await;
        for (index, site) in self.sites.load().iter().enumerate() {
            for day in days_needed(site, now) {
                result = result.and(self.share(home, index, site, day).await);
            }
        }
        self.publish_gauges();
        result
    }

    fn publish_gauges(&self) {
        let Some(metrics) = &self.metrics else { return };
        let mut held = 0u64;
        let mut oldest: Option<i64> = None;
        for (index, site) in self.sites.load().iter().enumerate() {
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
    /// collector at once (on every replica of the home shard).
    async fn destroy_expired(
        &self,
        home: &Shard,
        now: DateTime<Utc>,
        destroyed: &mut Vec<Destroyed>,
    ) -> Result<(), Error> {
        // Every replica's, so that a salt one has not fetched yet is
        // committed to all the same.
        let (stored, _) = on_every_replica(home, "salts", |client| async move {
            client
                .query("SELECT site_id, day, salt FROM salts ORDER BY site_id, day, created_at")
                .fetch_all::<StoredSalt>()
                .await
        })
        .await?;
        // Each expired (site, day) with a commitment to each of its salts
        // (one per salt, however many replicas hold it).
        let mut expired: Vec<(String, NaiveDate, Vec<String>)> = Vec::new();
        for row in &stored {
            let day = from_days(row.day);
            let is_expired = match self.sites.load().iter().find(|s| s.id == row.site_id) {
                Some(site) => day < first_kept(site, now),
                // Unknown time zone: wait until the day is over everywhere.
                None => day
                    .checked_add_days(Days::new(2))
                    .is_some_and(|d| d <= (now - GRACE).date_naive()),
            };
            if !is_expired {
                continue;
            }
            let index = match expired
                .iter()
                .position(|(s, d, _)| *s == row.site_id && *d == day)
            {
                Some(index) => index,
                None => {
                    expired.push((row.site_id.clone(), day, Vec::new()));
                    expired.len() - 1
                }
            };
            if let Some(mut bytes) = parse_hex(&row.salt) {
                let commitment = commitment(&bytes);
                wipe(&mut bytes);
                if !expired[index].2.contains(&commitment) {
                    expired[index].2.push(commitment);
                }
            }
        }
        stored.into_iter().for_each(|row| wipe_string(row.salt));
        // Recorded once dropped: a drop that fails (a replica's leader
        // changing, the shard out of reach) is tried again, and recorded,
        // by the next pass.
        for (site_id, day, commitments) in expired {
            let yyyymmdd = day.format("%Y%m%d").to_string();
            let sql = format!(
                "ALTER TABLE salts DROP PARTITION ({}, {yyyymmdd})",
                quote(&site_id)
            );
            self.nodes
                .on_shard(home, |client| {
                    let sql = &sql;
                    async move { client.query(sql).execute().await }
                })
                .await?;
            tracing::info!(site = %site_id, %day, "daily salt destroyed in ClickHouse");
            for commitment in commitments {
                destroyed.push(Destroyed {
                    site_id: site_id.clone(),
                    day,
                    place: "clickhouse",
                    commitment,
                });
            }
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
        let result = self
            .nodes
            .on_some_shard(|client| async move {
                let mut insert =
                    super::insert_record::<DestructionRow<'_>>(&client, "salt_destructions")
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
            })
            .await;
        if let Err(error) = result {
            tracing::error!(error = %error, records = destroyed.len(), "salt destruction records not written (the destructions happened)");
        }
    }

    /// Agrees on the salt of (site, day): adopts the earliest one stored,
    /// or publishes this collector's and then adopts the earliest (another
    /// collector may have raced it). Publishes nothing while a replica that
    /// cannot be reached may hold an earlier salt (see the module's
    /// comment).
    async fn share(
        &self,
        home: &Shard,
        index: usize,
        site: &SiteSettings,
        day: NaiveDate,
    ) -> Result<(), Error> {
        match self.read_shared(home, site, day).await? {
            Seen {
                earliest: Some(salt),
                ..
            } => {
                self.store.set_shared(index, day, salt);
                return Ok(());
            }
            Seen {
                earliest: None,
                complete: false,
            } => {
                tracing::warn!(site = %site.id, %day, "a replica of the salts' shard cannot be reached and the others have not fetched everything from it: this collector keeps its local salt until it can read every salt stored");
                return Ok(());
            }
            Seen { earliest: None, .. } => {}
        }
        // Publish ours (the local one if hits already used it), then adopt
        // whichever was written first, in case another collector raced us.
        let candidate = self.store.get_or_create(index, day);
        let salt = hex(candidate.as_bytes());
        let created_at = u32::try_from(self.clock.now().timestamp()).unwrap_or(0);
        let written = self
            .nodes
            .on_shard(home, |client| {
                let salt = &salt;
                async move {
                    let mut insert = client.insert::<SaltRow<'_>>("salts").await?;
                    insert
                        .write(&SaltRow {
                            site_id: &site.id,
                            day: to_days(day),
                            salt,
                            created_at,
                        })
                        .await?;
                    insert.end().await
                }
            })
            .await;
        wipe_string(salt);
        written?;
        if let Some(salt) = self.read_shared(home, site, day).await?.earliest {
            self.store.set_shared(index, day, salt);
        }
        Ok(())
    }

    /// The salts of (site, day) on every replica of the home shard that
    /// answers, merged: the earliest by creation time, then by text, the
    /// same rule every collector applies to the same rows.
    async fn read_shared(
        &self,
        home: &Shard,
        site: &SiteSettings,
        day: NaiveDate,
    ) -> Result<Seen, Error> {
        let day_text = day.to_string();
        let (rows, complete) = on_every_replica(home, "salts", |client| {
            let day = &day_text;
            async move {
                client
                    .query(
                        "SELECT created_at, salt FROM salts WHERE site_id = ? AND day = toDate(?)",
                    )
                    .bind(&site.id)
                    .bind(day)
                    .fetch_all::<Candidate>()
                    .await
            }
        })
        .await?;
        let earliest = rows
            .iter()
            .min_by(|a, b| (a.created_at, &a.salt).cmp(&(b.created_at, &b.salt)))
            .and_then(|c| parse_hex(&c.salt))
            .map(DailySalt::from_bytes);
        rows.into_iter().for_each(|c| wipe_string(c.salt));
        Ok(Seen { earliest, complete })
    }
}

/// `read` (of `table`) on every replica of `shard`, the rows of those that
/// answer put
/// together, with whether they are all there is: every replica answered,
/// or one that answered has fetched everything the others took
/// ([`has_fetched_everything`], and then read again after that check, so
/// that nothing taken before it is missed). Fails when none answers.
pub(super) async fn on_every_replica<T, F, Fut>(
    shard: &Shard,
    table: &str,
    mut read: F,
) -> Result<(Vec<T>, bool), Error>
where
    F: FnMut(clickhouse::Client) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, clickhouse::error::Error>>,
{
    let mut rows = Vec::new();
    let mut answered = Vec::new();
    let mut last = None;
    for node in &shard.replicas {
        match read(node.client.clone()).await {
            Ok(mut more) => {
                rows.append(&mut more);
                answered.push(node);
            }
            Err(error) if super::is_transport_error(&error) => last = Some(error),
            Err(error) => return Err(error.into()),
        }
    }
    let Some(unreachable) = last else {
        return Ok((rows, true));
    };
    if answered.is_empty() {
        return Err(unreachable.into());
    }
    for node in answered {
        match has_fetched_everything(&node.client, table).await {
            Ok(true) => {
                rows.append(&mut read(node.client.clone()).await?);
                return Ok((rows, true));
            }
            Ok(false) => {}
            Err(error) if super::is_transport_error(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok((rows, false))
}

/// Whether this replica of `table` has fetched every insert its shard took:
/// every entry of the shared replication log taken into its queue, and no
/// insert left in that queue (`system.replicas`). An insert is acknowledged
/// only once its entry is in that log, so what it lacks then is what was
/// inserted after.
async fn has_fetched_everything(
    client: &clickhouse::Client,
    table: &str,
) -> Result<bool, clickhouse::error::Error> {
    let progress = client
        .query(
            "SELECT inserts_in_queue, log_pointer, log_max_index, zookeeper_path \
             FROM system.replicas WHERE database = currentDatabase() AND table = ?",
        )
        .bind(table)
        .fetch_all::<ReplicaProgress>()
        .await?;
    let Some(p) = progress.first() else {
        return Ok(false);
    };
    if p.inserts_in_queue > 0 {
        return Ok(false);
    }
    if p.log_pointer > p.log_max_index {
        return Ok(true);
    }
    // Both 0: a log with no entry (a table never written, or whose entries
    // were all cleaned up), or one entry not yet taken.
    if p.log_max_index == 0 {
        let entries = client
            .query("SELECT count() FROM system.zookeeper WHERE path = ?")
            .bind(format!("{}/log", p.zookeeper_path))
            .fetch_one::<u64>()
            .await?;
        return Ok(entries == 0);
    }
    Ok(false)
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

/// Overwrites a secret's hex text (a salt's, the rounding secret's) before
/// its memory is freed.
pub(super) fn wipe_string(s: String) {
    let mut bytes = s.into_bytes();
    wipe(&mut bytes);
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn parse_hex(s: &str) -> Option<[u8; 32]> {
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
