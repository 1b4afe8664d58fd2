//! The sink: everything that writes to ClickHouse. Migrations ([`schema`],
//! [`migrate`]), the batch writer ([`writer`]), the shared daily salts
//! ([`salts`]), the installation's rounding secret ([`rounding`]), the daily
//! rollups of finished days ([`rollup`]) and the
//! privacy-operations records: retention ([`retention`]) and the audit log
//! ([`audit`]). What a failed request means is decided in one place
//! ([`refusal`]). Only this module and `query` use the `clickhouse` crate.

pub mod adopt;
pub mod audit;
pub mod imported;
pub mod migrate;
pub mod nodes;
pub mod refusal;
pub mod retention;
pub mod rollup;
pub mod rounding;
pub mod rows;
pub mod salts;
pub mod schema;
pub mod shares;
pub mod writer;

use crate::config::{ClickHouseSettings, ClickHouseUrl};

/// A client for the configured server (`url`). Validation is off: it
/// needs `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 does not
/// know.
pub fn client(settings: &ClickHouseSettings) -> clickhouse::Client {
    node_client(settings, &settings.url)
}

/// A client for one server of the configuration (`url` or a cluster's
/// node), with its user, password and database.
pub fn node_client(settings: &ClickHouseSettings, url: &ClickHouseUrl) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url.as_str())
        .with_user(&settings.user)
        .with_password(&settings.password)
        .with_database(&settings.database)
        .with_validation(false)
}

/// Whether an error means ClickHouse could not be reached (worth waiting
/// for), as opposed to an answer that refused the request.
pub fn is_transport_error(error: &clickhouse::error::Error) -> bool {
    matches!(
        error,
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
    )
}

/// An insert into one of tamis's records (`audit_log`, `retention_log`,
/// `salt_destructions`) with ClickHouse's deduplication of inserted blocks
/// off. A replicated table drops a block identical to a recent one, and
/// two records can be identical yet distinct events: two reads by one
/// token in one second, one partition dropped on two shards, one salt
/// forgotten by two collectors. Each is kept. (On a single server the
/// setting changes nothing: plain `MergeTree` does not deduplicate.)
pub async fn insert_record<T: clickhouse::Row>(
    client: &clickhouse::Client,
    table: &str,
) -> Result<clickhouse::insert::Insert<T>, clickhouse::error::Error> {
    Ok(client
        .insert::<T>(table)
        .await?
        .with_setting("insert_deduplicate", "0"))
}
