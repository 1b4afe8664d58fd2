//! The `shared_links` table: writes a link's `create` and `revoke` events
//! and reads them back (`crate::share` makes links of them). Only digests
//! and password hashes are written, never a link's secret.
//!
//! Reads go through the cluster (`Nodes::on_any`, the `Distributed`
//! table), so a revocation written on any shard is seen by every
//! collector's next read. Inserts turn deduplication off like the audit
//! log's, so that two events alike are both kept.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{Error, Node, Nodes};
use crate::share::{Event, EventKind};

#[derive(Debug, Row, Serialize, Deserialize)]
struct LinkRow {
    at: u32,
    kind: String,
    link_id: String,
    site_id: String,
    name: String,
    secret_sha256: String,
    password_hash: String,
    /// 0: never.
    expires_at: u32,
    actor: String,
}

fn seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

fn time(s: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(s), 0).unwrap_or_default()
}

impl From<&Event> for LinkRow {
    fn from(e: &Event) -> Self {
        LinkRow {
            at: seconds(e.at),
            kind: e.kind.name().to_string(),
            link_id: e.link_id.clone(),
            site_id: e.site_id.clone(),
            name: e.name.clone(),
            secret_sha256: e.secret_sha256.clone(),
            password_hash: e.password_hash.clone(),
            expires_at: e.expires_at.map_or(0, seconds),
            actor: e.actor.clone(),
        }
    }
}

impl LinkRow {
    fn event(self) -> Option<Event> {
        Some(Event {
            at: time(self.at),
            kind: EventKind::parse(&self.kind)?,
            link_id: self.link_id,
            site_id: self.site_id,
            name: self.name,
            secret_sha256: self.secret_sha256,
            password_hash: self.password_hash,
            expires_at: (self.expires_at != 0).then(|| time(self.expires_at)),
            actor: self.actor,
        })
    }
}

/// Writes `event` into one shard.
pub async fn record(nodes: &Nodes, event: &Event) -> Result<(), Error> {
    let row = LinkRow::from(event);
    nodes
        .on_some_shard(|client| {
            let row = &row;
            async move {
                let mut insert = super::insert_record::<LinkRow>(&client, "shared_links").await?;
                insert.write(row).await?;
                insert.end().await
            }
        })
        .await
}

/// Writes `event` into every shard that can be reached (one replica of
/// each), for a revocation: a shard whose replicas all hold it is enough
/// for every `Distributed` read to see it, whichever replica of each shard
/// the read asks, so one shard with a replica down cannot keep a revoked
/// link open. Returns how many shards took it; an error when none did.
pub async fn record_on_every_shard(nodes: &Nodes, event: &Event) -> Result<usize, Error> {
    let row = LinkRow::from(event);
    let mut written = 0;
    let mut last = None;
    for shard in nodes.shards().await? {
        let outcome = nodes
            .on_shard(shard, |client| {
                let row = &row;
                async move {
                    let mut insert =
                        super::insert_record::<LinkRow>(&client, "shared_links").await?;
                    insert.write(row).await?;
                    insert.end().await
                }
            })
            .await;
        match outcome {
            Ok(()) => written += 1,
            Err(error) if super::is_transport_error(&error) => last = Some(error),
            Err(error) => return Err(error.into()),
        }
    }
    match last {
        Some(error) if written == 0 => Err(error.into()),
        _ => Ok(written),
    }
}

/// A replica that did not show a revocation in time, or could not be
/// asked.
#[derive(Debug)]
pub struct Unconfirmed {
    pub url: String,
    pub why: String,
}

/// How often [`confirm_revoked`] asks a replica again.
const CONFIRM_POLL: Duration = Duration::from_millis(100);

/// Waits until every replica of at least one shard holds a revocation of
/// `link_id` in its own `shared_links` table, at most `patience` for each
/// replica. Then every read, through whichever replica of each shard,
/// finds the link revoked. When no shard gets there, returns each replica
/// that lagged or could not be asked.
pub async fn confirm_revoked(
    nodes: &Nodes,
    link_id: &str,
    patience: Duration,
) -> Result<(), Vec<Unconfirmed>> {
    let shards = nodes.shards().await.map_err(|error| {
        vec![Unconfirmed {
            url: "the cluster".into(),
            why: error.to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    for shard in shards {
        let mut holds = true;
        for node in &shard.replicas {
            if let Err(why) = wait_for_revoke(node, link_id, patience).await {
                problems.push(Unconfirmed {
                    url: node.url.to_string(),
                    why,
                });
                holds = false;
            }
        }
        if holds {
            return Ok(());
        }
    }
    Err(problems)
}

async fn wait_for_revoke(node: &Node, link_id: &str, patience: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let count = node
            .client
            .query("SELECT count() FROM shared_links WHERE link_id = ? AND kind = 'revoke'")
            .bind(link_id)
            .fetch_one::<u64>()
            .await;
        match count {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) if started.elapsed() >= patience => {
                return Err(format!(
                    "has not fetched the revocation after {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
            Ok(_) => tokio::time::sleep(CONFIRM_POLL).await,
            Err(error) => return Err(format!("could not be asked: {error}")),
        }
    }
}

/// Every event of every link (for `tamis share list`), or of one site.
pub async fn events(nodes: &Nodes, site: Option<&str>) -> Result<Vec<Event>, Error> {
    let sql = format!(
        "SELECT ?fields FROM {} WHERE (? = '' OR site_id = ?) ORDER BY at, link_id",
        nodes.table("shared_links")
    );
    let site = site.unwrap_or_default();
    let rows = nodes
        .on_any(|client| {
            let sql = &sql;
            async move {
                client
                    .query(sql)
                    .bind(site)
                    .bind(site)
                    .fetch_all::<LinkRow>()
                    .await
            }
        })
        .await?;
    Ok(rows.into_iter().filter_map(LinkRow::event).collect())
}

/// The events of the link `link_id`: read on every request made with a
/// shared link, so that a revocation takes effect at once. Read from one
/// server, whichever answers: its only failure is ClickHouse's.
pub async fn link_events(
    nodes: &Nodes,
    link_id: &str,
) -> Result<Vec<Event>, clickhouse::error::Error> {
    let sql = format!(
        "SELECT ?fields FROM {} WHERE link_id = ? ORDER BY at",
        nodes.table("shared_links")
    );
    let rows = nodes
        .on_any(|client| {
            let sql = &sql;
            async move { client.query(sql).bind(link_id).fetch_all::<LinkRow>().await }
        })
        .await?;
    Ok(rows.into_iter().filter_map(LinkRow::event).collect())
}
