//! Applies the migrations of [`super::schema`] in order, once each. Safe to
//! run from several collectors at once: every statement is idempotent.

use clickhouse::Row;
use serde::Deserialize;

use super::schema::{migrations, MIGRATIONS_TABLE};
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
        for sql in &m.statements {
            server.query(&sql.replace("{db}", db)).execute().await?;
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
