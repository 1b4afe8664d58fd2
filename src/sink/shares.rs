//! The `shared_links` table: writes a link's `create` and `revoke` events
//! and reads them back (`crate::share` makes links of them). Only digests
//! and password hashes are written, never a link's secret.
//!
//! Reads go through the cluster (`Nodes::on_any`, the `Distributed`
//! table), so a revocation written on any shard is seen by every
//! collector's next read. Inserts turn deduplication off like the audit
//! log's, so that two events alike are both kept.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{Error, Nodes};
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
/// shared link, so that a revocation takes effect at once.
pub async fn link_events(nodes: &Nodes, link_id: &str) -> Result<Vec<Event>, Error> {
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
