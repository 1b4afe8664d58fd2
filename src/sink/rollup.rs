//! Daily rollups: closes each site's finished local days into
//! `rollup_daily`, plain numbers per (day, dimension, value), so that ranges
//! of whole days are answered without merging a month of hourly sketches.
//! It reads `traffic_hourly` and writes only the rollup tables; it never
//! touches visitor keys (the day's visitors are already a count).
//!
//! Why plain numbers are exact: a visitor key is a keyed hash under the
//! site's salt of one local day, so no key appears in two local days, and
//! the visitors of whole days are the sum of each day's visitors.
//!
//! Safety with late data, crashes and several collectors:
//! - each computation of a (site, day) is one `INSERT … SELECT` under a
//!   fresh `version`, followed by a record in `rollup_days` (the day's
//!   totals as rolled) once the rows are in. Queries read only the newest
//!   recorded version of a day: rows of a computation that crashed before
//!   its record, or of a concurrent one that lost, are never counted;
//! - every pass compares, for the recent [`RECHECK_DAYS`] (at start-up and
//!   once an hour every day since the site's first traffic), the day's sums in
//!   `traffic_hourly` with the recorded ones; a day whose data changed (a
//!   collector replaying its log late) is computed again.
//!
//! Superseded versions stay in `rollup_daily` until retention drops their
//! month: they are rare (late data, concurrent passes) and cost only space.
//!
//! On a cluster a day's hourly rows are spread over every shard (the
//! writer picks a shard per batch), and one visitor's hits of a day may
//! land on several: per-shard visitor counts would not add up. So a day is
//! computed once for the cluster, from `traffic_hourly`'s `Distributed`
//! table (every shard's sketches merged), and written with its ledger
//! (`rollup_days`, `rollup_goal_days`) to the home shard
//! (`sink::nodes::Nodes::home`), one replica from the first statement to
//! the record; replication copies it to the others. The rules above hold
//! there as on one server: one ledger, fresh versions, the newest recorded
//! one read. A shard that cannot be reached fails the `Distributed` read
//! (ClickHouse's default, no `skip_unavailable_shards`), so no day is
//! rolled from part of its rows; the pass is retried. The record is
//! written only once every replica of the home shard that answers holds
//! the version's rows (`sink::nodes::wait_replicated`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use clickhouse::Row;
use serde::Deserialize;

use super::nodes::{wait_replicated, Error, Node, Nodes, Shard};
use super::rows::DELIVERY_MARK;
use super::schema::{GOAL_DIMENSION, ROLLUP_COUNTS, ROLLUP_DIMENSIONS};

/// `f(count)` for each of [`ROLLUP_COUNTS`], comma-separated: the column
/// names come from the schema's constant list, never from a request.
fn counts(f: impl Fn(&str) -> String) -> String {
    ROLLUP_COUNTS
        .iter()
        .map(|c| f(c))
        .collect::<Vec<_>>()
        .join(", ")
}
use crate::clock::Clock;
use crate::config::{LiveSites, SiteSettings};
use crate::query::request::local_midnight;

/// How long after a local day ends it is closed: the flusher's last batch
/// and the sessions' corrections of that day have long landed by then.
/// Anything later is late data, found by the next check.
pub const GRACE: chrono::Duration = chrono::Duration::minutes(30);

/// Closed days checked for late data on every pass (every day is checked
/// at start-up and once an hour, see [`Rollup::run`]).
pub const RECHECK_DAYS: i64 = 10;

/// Passes between two checks of every day (an hour at one a minute).
pub const FULL_CHECK_EVERY: u32 = 60;

/// The sums compared between `traffic_hourly` and `rollup_days`, in the
/// order of [`ROLLUP_COUNTS`].
type Sums = [i64; ROLLUP_COUNTS.len()];

#[derive(Row, Deserialize)]
struct DaySums {
    day: String,
    sums: Vec<i64>,
}

#[derive(Row, Deserialize)]
struct RolledDay {
    day: String,
    /// The newest version (named apart from the column: a ClickHouse
    /// alias would stand for it in the other aggregates).
    newest: u64,
    sums: Vec<i64>,
}

#[derive(Row, Deserialize)]
struct CoveredGoals {
    day: String,
    goals: Vec<String>,
}

#[derive(Row, Deserialize)]
struct FirstDay {
    rows: u64,
    day: String,
}

pub struct Rollup {
    nodes: Arc<Nodes>,
    sites: LiveSites,
    clock: Clock,
}

/// How long a computation waits for the home shard's other replicas to
/// hold its rows before recording it (see [`wait_replicated`]); past it,
/// the computation is left unrecorded and the next pass rolls the day
/// again.
const REPLICATION_PATIENCE: Duration = Duration::from_secs(30);

/// The last local day of `tz` that is closed at `now`.
pub fn last_closed_day(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    let yesterday = today.pred_opt().unwrap_or(today);
    if local_midnight(today, tz) + GRACE <= now {
        yesterday
    } else {
        yesterday.pred_opt().unwrap_or(yesterday)
    }
}

/// The first local day of the oldest month the site's retention keeps
/// (`sink::retention::is_expired`). Days before it are the janitor's to
/// drop: a pass that started before the janitor dropped their traffic
/// would otherwise roll them again, as empty days, into the months just
/// dropped.
pub fn first_kept_day(now: DateTime<Utc>, site: &SiteSettings) -> NaiveDate {
    let local = now.with_timezone(&site.timezone).date_naive();
    let index = local.year() * 12 + local.month0() as i32 - (site.retention_months as i32 - 1);
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
        .unwrap_or(NaiveDate::MIN)
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn to_sums(v: &[i64]) -> Sums {
    let mut out = [0; ROLLUP_COUNTS.len()];
    for (o, x) in out.iter_mut().zip(v) {
        *o = *x;
    }
    out
}

impl Rollup {
    /// The job over `sites`, on the servers of `nodes`: a single server, or
    /// a cluster whose home shard holds the rollups.
    pub fn new(nodes: Arc<Nodes>, sites: impl Into<LiveSites>, clock: Clock) -> Self {
        Rollup {
            nodes,
            sites: sites.into(),
            clock,
        }
    }

    /// Checks every day since each site's first traffic at start-up
    /// (retrying until that succeeds) and every [`FULL_CHECK_EVERY`] passes
    /// after that — a collector replaying its log after a long outage may
    /// finish after its own start-up check —, the recent days on the other
    /// passes, one every `period`. Errors are logged and the next pass
    /// tries again; it never stops on its own.
    pub async fn run(self, period: Duration) {
        let mut since_full: Option<u32> = None;
        loop {
            let full = since_full.is_none_or(|n| n + 1 >= FULL_CHECK_EVERY);
            let window = if full { None } else { Some(RECHECK_DAYS) };
            match self.pass(window).await {
                Ok(rolled) => {
                    since_full = Some(if full { 0 } else { since_full.unwrap_or(0) + 1 });
                    if rolled > 0 {
                        tracing::info!(days = rolled, "daily rollups computed");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "daily rollup pass failed; retrying later")
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// One pass over every site: the last `window` closed days, or with
    /// `None` every day since the site's first traffic, never before the
    /// oldest month its retention keeps ([`first_kept_day`]). Returns how
    /// many days were (re)computed.
    pub async fn pass(&self, window: Option<i64>) -> Result<usize, Error> {
        let now = self.clock.now();
        let home = self.nodes.home().await?;
        let mut rolled = 0;
        for site in self.sites.load().iter() {
            let last = last_closed_day(now, site.timezone);
            let first = match window {
                Some(n) => last - chrono::Duration::days(n - 1),
                None => match self.first_day(home, site).await? {
                    Some(day) => day,
                    None => continue,
                },
            };
            let first = first.max(first_kept_day(now, site));
            rolled += self.check(site, first, last).await?;
        }
        Ok(rolled)
    }

    /// The site's first local day with traffic, on any shard.
    async fn first_day(
        &self,
        home: &Shard,
        site: &SiteSettings,
    ) -> Result<Option<NaiveDate>, clickhouse::error::Error> {
        let sql = format!(
            "SELECT count() AS rows, toString(toDate(min(hour), ?)) AS day FROM {} WHERE site_id = ? AND event != ?",
            self.nodes.table("traffic_hourly")
        );
        let first = self
            .nodes
            .on_shard(home, |client| {
                let sql = &sql;
                async move {
                    client
                        .query(sql)
                        .bind(site.timezone.name())
                        .bind(&site.id)
                        .bind(DELIVERY_MARK)
                        .fetch_one::<FirstDay>()
                        .await
                }
            })
            .await?;
        Ok(if first.rows == 0 {
            None
        } else {
            parse_day(&first.day)
        })
    }

    /// Computes the days `first..=last` whose hourly sums differ from what
    /// was rolled (or that were never rolled). Returns how many.
    ///
    /// On a cluster the hourly sums are read through `traffic_hourly`'s
    /// `Distributed` table, every shard's rows merged: a day is compared
    /// (and rolled) only when every shard answers, never from some of them.
    pub async fn check(
        &self,
        site: &SiteSettings,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<usize, Error> {
        if first > last {
            return Ok(0);
        }
        let home = self.nodes.home().await?;
        let tz = site.timezone;
        let hourly_sql = format!(
            "SELECT toString(toDate(hour, ?)) AS day, [{}] AS sums \
             FROM {} WHERE site_id = ? AND hour >= toDateTime(?) AND hour < toDateTime(?) AND event != ? GROUP BY day",
            counts(|c| format!("toInt64(sumMerge({c}))")),
            self.nodes.table("traffic_hourly")
        );
        let (from, to) = (
            local_midnight(first, tz).timestamp(),
            local_midnight(last + chrono::Duration::days(1), tz).timestamp(),
        );
        let hourly = self
            .nodes
            .on_shard(home, |client| {
                let sql = &hourly_sql;
                async move {
                    client
                        .query(sql)
                        .bind(tz.name())
                        .bind(&site.id)
                        .bind(from)
                        .bind(to)
                        .bind(DELIVERY_MARK)
                        .fetch_all::<DaySums>()
                        .await
                }
            })
            .await?;
        let (first_text, last_text) = (first.to_string(), last.to_string());
        let rolled_sql = format!(
            "SELECT toString(day) AS d, max(version) AS newest, [{}] AS sums \
             FROM rollup_days WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?) GROUP BY d",
            counts(|c| format!("toInt64(argMax({c}, version))"))
        );
        let rolled = self
            .nodes
            .on_shard(home, |client| {
                let (sql, first, last) = (&rolled_sql, &first_text, &last_text);
                async move {
                    client
                        .query(sql)
                        .bind(&site.id)
                        .bind(first)
                        .bind(last)
                        .fetch_all::<RolledDay>()
                        .await
                }
            })
            .await?;
        let covered = if site.goals.is_empty() {
            Vec::new()
        } else {
            self.nodes
                .on_shard(home, |client| {
                    let (first, last) = (&first_text, &last_text);
                    async move {
                        client
                            .query(
                                "SELECT toString(day) AS d, groupArray(goal) AS goals FROM rollup_goal_days \
                                 WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?) AND (day, version) IN \
                                 (SELECT day, max(version) FROM rollup_days WHERE site_id = ? AND day >= toDate(?) AND day <= toDate(?) GROUP BY day) \
                                 GROUP BY d",
                            )
                            .bind(&site.id)
                            .bind(first)
                            .bind(last)
                            .bind(&site.id)
                            .bind(first)
                            .bind(last)
                            .fetch_all::<CoveredGoals>()
                            .await
                    }
                })
                .await?
        };
        let keys: Vec<String> = site.goals.iter().map(crate::goal::Goal::key).collect();
        let mut count = 0;
        let mut day = first;
        while day <= last {
            let want = hourly
                .iter()
                .find(|r| parse_day(&r.day) == Some(day))
                .map(|r| to_sums(&r.sums))
                .unwrap_or_default();
            let have = rolled.iter().find(|r| parse_day(&r.day) == Some(day));
            match have {
                Some(have) if to_sums(&have.sums) == want => {
                    let goals = covered
                        .iter()
                        .find(|c| parse_day(&c.day) == Some(day))
                        .map_or(&[][..], |c| &c.goals[..]);
                    if !keys.iter().all(|k| goals.contains(k)) {
                        self.add_goals(site, day, have.newest).await?;
                        count += 1;
                    }
                }
                _ => {
                    self.roll_day(site, day).await?;
                    count += 1;
                }
            }
            day += chrono::Duration::days(1);
        }
        Ok(count)
    }

    /// Computes one local day of one site from `traffic_hourly` (every
    /// shard's, on a cluster): every dimension's rows in one `INSERT …
    /// SELECT` under a new version, then the record that makes them
    /// visible to queries. The whole computation runs on one replica of
    /// the home shard; should that replica become unreachable midway,
    /// another computes the day anew under a version of its own (the
    /// unrecorded one is never read).
    pub async fn roll_day(&self, site: &SiteSettings, day: NaiveDate) -> Result<(), Error> {
        let home = self.nodes.home().await?;
        let version = self
            .nodes
            .on_replica(home, |node| self.roll_day_on(home, node, site, day))
            .await?;
        tracing::debug!(site = %site.id, day = %day, version, "day rolled up");
        Ok(())
    }

    async fn roll_day_on(
        &self,
        home: &Shard,
        node: Node,
        site: &SiteSettings,
        day: NaiveDate,
    ) -> Result<u64, clickhouse::error::Error> {
        let tz = site.timezone;
        let from = local_midnight(day, tz).timestamp();
        let to = local_midnight(day + chrono::Duration::days(1), tz).timestamp();
        let version = next_version_on(&node.client, site, day).await?;
        let names: Vec<String> = std::iter::once("''".to_string())
            .chain(ROLLUP_DIMENSIONS.iter().map(|d| format!("'{d}'")))
            .collect();
        let values: Vec<&str> = std::iter::once("''")
            .chain(ROLLUP_DIMENSIONS.iter().copied())
            .collect();
        // The dimension names and columns come from the schema's constant
        // list; only the site, day, version and hours are values.
        let sql = format!(
            "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, {}) \
             SELECT ?, toDate(?), toUInt64(?), dimension, value, uniqIfMerge(visitors), {} \
             FROM {} ARRAY JOIN [{}] AS dimension, [{}] AS value \
             WHERE site_id = ? AND hour >= toDateTime(?) AND hour < toDateTime(?) AND event != ? GROUP BY dimension, value",
            counts(str::to_string),
            counts(|c| format!("sumMerge({c})")),
            self.nodes.table("traffic_hourly"),
            names.join(", "),
            values.join(", ")
        );
        node.client
            .query(&sql)
            .bind(&site.id)
            .bind(day.to_string())
            .bind(version.to_string())
            .bind(&site.id)
            .bind(from)
            .bind(to)
            .bind(DELIVERY_MARK)
            .execute()
            .await?;
        self.finish(home, &node, site, day, version).await?;
        Ok(version)
    }

    /// Adds the site's goals to a day rolled without some of them (goals
    /// added since) whose data has not changed: a new version holding
    /// the rolled rows of `version` as they are, plus every goal's rows,
    /// without computing the day's other dimensions again. Should the
    /// hourly data change meanwhile, the new record keeps the old sums and
    /// the next check rolls the whole day again.
    pub async fn add_goals(
        &self,
        site: &SiteSettings,
        day: NaiveDate,
        version: u64,
    ) -> Result<(), Error> {
        let home = self.nodes.home().await?;
        let new = self
            .nodes
            .on_replica(home, |node| {
                self.add_goals_on(home, node, site, day, version)
            })
            .await?;
        tracing::debug!(site = %site.id, day = %day, version = new, "goals added to a rolled day");
        Ok(())
    }

    async fn add_goals_on(
        &self,
        home: &Shard,
        node: Node,
        site: &SiteSettings,
        day: NaiveDate,
        version: u64,
    ) -> Result<u64, clickhouse::error::Error> {
        let new = next_version_on(&node.client, site, day).await?;
        node.client
            .query(&format!(
                "INSERT INTO rollup_daily (site_id, day, version, dimension, value, visitors, {0}) \
                 SELECT site_id, day, toUInt64(?), dimension, value, visitors, {0} \
                 FROM rollup_daily WHERE site_id = ? AND day = toDate(?) AND version = toUInt64(?) AND dimension != ?",
                counts(str::to_string)
            ))
            .bind(new.to_string())
            .bind(&site.id)
            .bind(day.to_string())
            .bind(version.to_string())
            .bind(GOAL_DIMENSION)
            .execute()
            .await?;
        self.finish(home, &node, site, day, new).await?;
        Ok(new)
    }

    /// Completes a computation whose dimensions are written under
    /// `version` on `node`: the rows of the site's goals and the goals
    /// covered, then, once every other replica of the home shard that
    /// answers holds the version's rows, the record that makes the version
    /// visible to queries.
    async fn finish(
        &self,
        home: &Shard,
        node: &Node,
        site: &SiteSettings,
        day: NaiveDate,
        version: u64,
    ) -> Result<(), clickhouse::error::Error> {
        let client = &node.client;
        let tz = site.timezone;
        if !site.goals.is_empty() {
            let from = local_midnight(day, tz).timestamp();
            let to = local_midnight(day + chrono::Duration::days(1), tz).timestamp();
            let rows = crate::query::sql::goal_rollup(
                &site.id,
                &day.to_string(),
                version,
                &site.goals,
                from,
                to,
                &self.nodes.table("traffic_hourly"),
            );
            let mut q = client.query(&rows.sql);
            for p in &rows.params {
                q = q.bind(p.as_str());
            }
            q.execute().await?;
            let keys = vec!["?"; site.goals.len()].join(", ");
            let mut q = client
                .query(&format!(
                    "INSERT INTO rollup_goal_days (site_id, day, version, goal) \
                     SELECT ?, toDate(?), toUInt64(?), arrayJoin([{keys}])"
                ))
                .bind(&site.id)
                .bind(day.to_string())
                .bind(version.to_string());
            for goal in &site.goals {
                q = q.bind(goal.key());
            }
            q.execute().await?;
        }
        // A replica may fetch the record before the rows (each table has
        // its own replication queue): the record waits until the rows are
        // on every replica that answers.
        let day_text = day.to_string();
        let rows_of = |client: clickhouse::Client| {
            let day = &day_text;
            async move {
                client
                    .query("SELECT count() FROM rollup_daily WHERE site_id = ? AND day = toDate(?) AND version = toUInt64(?)")
                    .bind(&site.id)
                    .bind(day)
                    .bind(version.to_string())
                    .fetch_one::<u64>()
                    .await
            }
        };
        if home.replicas.len() > 1 {
            let written = rows_of(client.clone()).await?;
            wait_replicated(home, written, REPLICATION_PATIENCE, rows_of).await?;
        }
        // Summed from the rows just written, so the record describes exactly
        // what was rolled even if more data landed meanwhile (the next
        // check then sees the difference).
        client
            .query(&format!(
                "INSERT INTO rollup_days (site_id, day, version, {}, rolled_at) \
                 SELECT ?, toDate(?), toUInt64(?), {}, now() \
                 FROM rollup_daily WHERE site_id = ? AND dimension = '' AND day = toDate(?) AND version = toUInt64(?)",
                counts(str::to_string),
                counts(|c| format!("sum({c})"))
            ))
            .bind(&site.id)
            .bind(day.to_string())
            .bind(version.to_string())
            .bind(&site.id)
            .bind(day.to_string())
            .bind(version.to_string())
            .execute()
            .await?;
        Ok(())
    }
}

/// A version for a new computation of the day, newer than any recorded on
/// the replica asked.
async fn next_version_on(
    client: &clickhouse::Client,
    site: &SiteSettings,
    day: NaiveDate,
) -> Result<u64, clickhouse::error::Error> {
    let latest = client
        .query("SELECT max(version) FROM rollup_days WHERE site_id = ? AND day = toDate(?)")
        .bind(&site.id)
        .bind(day.to_string())
        .fetch_one::<u64>()
        .await?;
    Ok(next_version(latest))
}

/// A version newer than `latest`: wall-clock milliseconds (never below
/// `latest`'s plus one, so a collector whose clock lags still supersedes)
/// in the high bits, 20 random bits below so that two collectors rolling
/// the same day in the same millisecond write distinct versions. Wall
/// time, not the injected clock: it orders computations, not days.
fn next_version(latest: u64) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ms = wall.max((latest >> 20) + 1);
    (ms << 20) | (u64::from(rand::random::<u32>()) & 0xF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(now: &str, tz: Tz, expected: &str) {
        let now: DateTime<Utc> = now.parse().unwrap();
        assert_eq!(
            last_closed_day(now, tz).to_string(),
            expected,
            "{now} in {tz}"
        );
    }

    #[test]
    fn days_close_after_their_local_midnight_and_the_grace() {
        let toronto = chrono_tz::America::Toronto;
        // 2026-11-23 00:29 and 00:31 in Toronto (UTC-5).
        check("2026-11-23T05:29:00Z", toronto, "2026-11-21");
        check("2026-11-23T05:31:00Z", toronto, "2026-11-22");
        // Spring forward (2026-03-08 is 23 hours long) and fall back
        // (2026-11-01 is 25 hours long): the next midnight is what counts.
        check("2026-03-09T04:29:00Z", toronto, "2026-03-07");
        check("2026-03-09T04:31:00Z", toronto, "2026-03-08");
        check("2026-11-02T05:31:00Z", toronto, "2026-11-01");
        check("2026-11-02T05:29:00Z", toronto, "2026-10-31");
        check("2026-11-23T00:31:00Z", chrono_tz::UTC, "2026-11-22");
    }

    #[test]
    fn passes_start_no_earlier_than_the_oldest_month_retention_keeps() {
        let config: crate::config::Config = toml::from_str(
            "[clickhouse]\nurl = \"http://127.0.0.1:1\"\n[[site]]\nid = \"a.org\"\ntimezone = \"America/Toronto\"\nretention_months = 3\n",
        )
        .unwrap();
        let settings =
            crate::config::Settings::from_config(config, std::path::Path::new(".")).unwrap();
        let site = &settings.sites[0];
        let check = |now: &str, expected: &str| {
            let now: DateTime<Utc> = now.parse().unwrap();
            assert_eq!(first_kept_day(now, site).to_string(), expected, "{now}");
        };
        // The current month and the two before it, by the local date.
        check("2026-03-10T12:00:00Z", "2026-01-01");
        check("2026-01-31T12:00:00Z", "2025-11-01");
        // 2026-03-01 02:00 UTC is still February in Toronto.
        check("2026-03-01T02:00:00Z", "2025-12-01");
        // The retention's test of a month agrees.
        let first: DateTime<Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
        let kept = first_kept_day(first, site);
        let period = |d: NaiveDate| d.year() as u32 * 100 + d.month();
        assert!(!crate::sink::retention::is_expired(period(kept), 202603, 3));
        assert!(crate::sink::retention::is_expired(
            period(kept.pred_opt().unwrap()),
            202603,
            3
        ));
    }

    #[test]
    fn versions_grow_past_the_latest() {
        let a = next_version(0);
        assert!(next_version(a) > a);
        let future = (u64::MAX >> 21) << 20;
        assert!(next_version(future) >> 20 == (future >> 20) + 1);
    }
}
