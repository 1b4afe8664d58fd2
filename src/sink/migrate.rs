//! Applies the migrations of [`super::schema`] in order, once each, on
//! every server tamis uses: the one server, or each node of a cluster in
//! turn, each node keeping its own record of what it applied (its
//! `schema_migrations`). Safe to run from several collectors at once, and
//! resumable: every step is idempotent (a statement with `IF NOT EXISTS`,
//! or columns added only when missing), so a node that was down, or a run
//! that died between two steps, gets what it lacks at the next run.

use clickhouse::Row;
use serde::Deserialize;

use super::schema::{migrations, Layout, Step, Then, MIGRATIONS_TABLE};
use crate::config::{ClickHouseSettings, ClickHouseUrl};

#[derive(Row, Deserialize)]
struct Version {
    version: u32,
}

/// What one server applied in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub node: ClickHouseUrl,
    /// The versions applied now, in order; empty when it was up to date.
    pub versions: Vec<u32>,
}

/// The servers a run could not migrate, each with its error, and what the
/// others applied all the same.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.failed))]
pub struct MigrateError {
    pub failed: Vec<(ClickHouseUrl, clickhouse::error::Error)>,
    pub applied: Vec<Applied>,
}

impl MigrateError {
    /// Whether every failure is ClickHouse out of reach (worth waiting
    /// for) rather than an answer refusing the schema.
    pub fn is_transport(&self) -> bool {
        self.failed
            .iter()
            .all(|(_, error)| super::is_transport_error(error))
    }
}

fn describe(failed: &[(ClickHouseUrl, clickhouse::error::Error)]) -> String {
    failed
        .iter()
        .map(|(node, error)| format!("ClickHouse at {node}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The servers the schema is made on, each with its [`Layout`]: the one
/// server at `url`, or every node of the cluster.
pub fn nodes(settings: &ClickHouseSettings) -> Vec<(&ClickHouseUrl, Layout<'_>)> {
    match &settings.cluster {
        None => vec![(&settings.url, Layout::Single)],
        Some(cluster) => cluster
            .nodes
            .iter()
            .map(|url| (url, Layout::Cluster(&cluster.name)))
            .collect(),
    }
}

/// Applies what is missing on every server; returns what each applied,
/// in the order of [`nodes`]. A server that fails does not stop the
/// others: the error names every one that failed.
pub async fn run(settings: &ClickHouseSettings) -> Result<Vec<Applied>, MigrateError> {
    let mut applied = Vec::new();
    let mut failed = Vec::new();
    for (url, layout) in nodes(settings) {
        // The database may not exist yet, so this client names none.
        let server = super::node_client(settings, url).with_database("default");
        match run_on(&server, &settings.database, layout).await {
            Ok(versions) => applied.push(Applied {
                node: url.clone(),
                versions,
            }),
            Err(error) => {
                tracing::warn!(node = %url, error = %error, "migration failed on this ClickHouse");
                failed.push((url.clone(), error));
            }
        }
    }
    if failed.is_empty() {
        Ok(applied)
    } else {
        Err(MigrateError { failed, applied })
    }
}

/// Applies what `server` lacks; returns the versions applied now.
async fn run_on(
    server: &clickhouse::Client,
    db: &str,
    layout: Layout<'_>,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    server
        .query(&MIGRATIONS_TABLE.replace("{db}", db))
        .execute()
        .await?;
    let applied: Vec<u32> = server
        .query(&format!("SELECT version FROM {db}.schema_migrations"))
        .fetch_all::<Version>()
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    let mut now = Vec::new();
    for m in migrations()
        .into_iter()
        .filter(|m| !applied.contains(&m.version))
    {
        for step in &m.statements {
            for sql in step.statements(db, layout) {
                server.query(&sql).execute().await?;
            }
            if let Step::AddColumns {
                table,
                columns,
                then,
            } = step
            {
                for (altered, with_then) in Step::altered_tables(table, layout) {
                    let then = (with_then == Then::Apply)
                        .then_some(then.as_deref())
                        .flatten();
                    add_missing_columns(server, db, &altered, columns, then).await?;
                }
            }
        }
        server
            .query(&format!("INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES (?, ?, now())"))
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        now.push(m.version);
    }
    Ok(now)
}

/// Adds the columns of `columns` that `db.table` lacks, with `then` in the
/// same statement when any was missing.
async fn add_missing_columns(
    server: &clickhouse::Client,
    db: &str,
    table: &str,
    columns: &[(String, String)],
    then: Option<&str>,
) -> Result<(), clickhouse::error::Error> {
    let missing = missing_columns(server, db, table, columns).await?;
    if let Some(sql) = Step::add_columns_sql(db, table, &missing, then) {
        if let Err(error) = server.query(&sql).execute().await {
            // Another collector migrating at the same time may have added
            // them first.
            if !missing_columns(server, db, table, columns)
                .await?
                .is_empty()
            {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The columns of `columns` that `db.table` does not have.
async fn missing_columns<'c>(
    server: &clickhouse::Client,
    db: &str,
    table: &str,
    columns: &'c [(String, String)],
) -> Result<Vec<&'c (String, String)>, clickhouse::error::Error> {
    let present: Vec<String> = server
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(db)
        .bind(table)
        .fetch_all::<String>()
        .await?;
    Ok(columns
        .iter()
        .filter(|(name, _)| !present.contains(name))
        .collect())
}
