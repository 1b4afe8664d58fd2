//! Growing from one ClickHouse to a cluster: `tamis migrate --adopt URL`
//! copies a single server's data into the cluster's first shard, table by
//! table, as it is stored (aggregate states included, so every count,
//! visitor estimate and rollup stays what it was). Readers read every
//! shard through the `Distributed` tables, so data on one shard is read as
//! any other.
//!
//! Everything goes to the first shard because that is where a collector
//! looks for what it wrote before the move: its batch in flight, noted
//! without a shard on the single server, is looked for and finished there
//! (`writer::store`), and its delivery marks, copied with the rows, keep
//! their meaning. The salts go there too, where the salt keeper keeps them.
//!
//! The copy goes into an empty cluster: a data table of the first shard
//! that already holds rows stops it before anything is copied (a second
//! run, or a cluster already in use, would count twice). Inserts are made
//! with `insert_deduplicate = 0`: two identical blocks of the copy are two
//! blocks of the single server, not a resend.

use super::nodes::Nodes;
use crate::config::{ClickHouseSettings, ClickHouseUrl};

/// What was copied of one table.
#[derive(Debug)]
pub struct Copied {
    pub table: &'static str,
    pub rows: u64,
}

/// Copies every data table of the single server at `from` into the first
/// shard of the cluster of `settings`, migrated already.
pub async fn adopt(
    settings: &ClickHouseSettings,
    from: &ClickHouseUrl,
) -> anyhow::Result<Vec<Copied>> {
    anyhow::ensure!(
        settings.cluster.is_some(),
        "--adopt copies a single server into a cluster: set clickhouse.cluster and clickhouse.urls"
    );
    let nodes = Nodes::new(settings, 0);
    let shards = nodes.shards().await?;
    let first = &shards[0];
    let source = super::node_client(settings, from);
    let tables = super::schema::data_tables();

    // Nothing is copied unless every target is empty.
    for &table in &tables {
        let sql = format!("SELECT count() FROM {table}");
        let held = nodes
            .on_shard(first, |client| {
                let sql = sql.clone();
                async move { client.query(&sql).fetch_one::<u64>().await }
            })
            .await?;
        anyhow::ensure!(
            held == 0,
            "`{table}` on shard `{}` already holds {held} rows: --adopt copies into an empty cluster only (drop the database `{}` on every node to start again)",
            first.name,
            settings.database
        );
    }
    let mut copied = Vec::new();
    for table in tables {
        let rows = source
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one::<u64>()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading `{table}` on {from}: {e} (run `tamis migrate` against it first?)"
                )
            })?;
        if rows == 0 {
            copied.push(Copied { table, rows });
            continue;
        }
        let mut stream = source
            .query(&format!("SELECT * FROM {table}"))
            .fetch_bytes("Native")?;
        let node = &first.replicas[0];
        let mut insert = node
            .client
            .insert_formatted_with(format!("INSERT INTO {table} FORMAT Native"))
            .with_setting("insert_deduplicate", "0");
        while let Some(chunk) = stream.next().await? {
            insert.send(chunk).await?;
        }
        insert.end().await?;
        copied.push(Copied { table, rows });
        tracing::info!(table, rows, shard = %first.name, "copied");
    }
    Ok(copied)
}
