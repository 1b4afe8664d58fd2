//! Applies the migrations of [`super::schema`] in order, once each. Safe to
//! run from several collectors at once: every step is idempotent (a
//! statement with `IF NOT EXISTS`, or columns added only when missing).

use clickhouse::Row;
use serde::Deserialize;

use super::schema::{migrations, Step, MIGRATIONS_TABLE};
use crate::config::ClickHouseSettings;

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
}

/// Applies what is missing; returns the versions applied now.
pub async fn run(settings: &ClickHouseSettings) -> Result<Vec<u32>, clickhouse::error::Error> {
    let db = &settings.database;
    // The database may not exist yet, so this client names none.
    let server = super::client(settings).with_database("default");
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
        .fetch_all::<Applied>()
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
            match step {
                Step::Sql(sql) => server.query(&sql.replace("{db}", db)).execute().await?,
                Step::AddColumns {
                    table,
                    columns,
                    then,
                } => {
                    let missing = missing_columns(&server, db, table, columns).await?;
                    if let Some(sql) = Step::add_columns_sql(db, table, &missing, then.as_deref()) {
                        if let Err(error) = server.query(&sql).execute().await {
                            // Another collector migrating at the same time
                            // may have added them first.
                            if !missing_columns(&server, db, table, columns)
                                .await?
                                .is_empty()
                            {
                                return Err(error);
                            }
                        }
                    }
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
