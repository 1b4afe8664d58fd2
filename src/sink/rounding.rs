//! Shares the installation's rounding secret through ClickHouse: the key
//! material of every site's consistent random rounding when
//! `query.rounding_key` is not set (see `config::RoundingSecret`). The
//! first collector that needs it draws 256 random bits and stores them in
//! `rounding_secret`; every collector then takes the earliest row, by
//! (creation time, text), so two collectors that raced agree on one, and
//! every restart, reload and token change finds the same one again.
//!
//! It follows the daily salts (`sink::salts`): on a cluster the table
//! lives on the home shard, read from every replica and merged, and no new
//! secret is written while a replica out of reach could hold an earlier one
//! (nothing would be published with a secret the others may not take).
//! The secret travels only as RowBinary in request and response bodies,
//! never in SQL text (which ClickHouse logs), and is never logged: errors
//! on its statements are logged by ClickHouse's code, not their text.
//! It is never destroyed: a new one would draw every rounding anew, which
//! is what it exists to prevent.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::nodes::{Error, Nodes, Shard};
use super::salts::{hex, on_every_replica, parse_hex, wipe_string};
use crate::clock::Clock;
use crate::config::RoundingSecret;

/// A secret written (RowBinary in the request body).
#[derive(Row, Serialize)]
struct SecretRow<'a> {
    created_at: u32,
    secret: &'a str,
}

/// A secret read back (RowBinary in the response body).
#[derive(Row, Deserialize)]
struct StoredSecret {
    created_at: u32,
    secret: String,
}

/// The installation's rounding secret: the earliest one stored, or a new
/// one written and then the earliest (another collector may have raced
/// this one). `None` when a replica of the home shard is out of reach and
/// the others may lack a secret it holds: nothing is written then.
pub async fn installation_secret(
    nodes: &Nodes,
    clock: &Clock,
) -> Result<Option<RoundingSecret>, Error> {
    let home = nodes.home().await?;
    match read(home).await? {
        (Some(secret), _) => return Ok(Some(secret)),
        (None, false) => return Ok(None),
        (None, true) => {}
    }
    let text = hex(RoundingSecret::generate().as_bytes());
    let created_at = u32::try_from(clock.now().timestamp()).unwrap_or(0);
    let written = nodes
        .on_shard(home, |client| {
            let text = &text;
            async move {
                let mut insert = client.insert::<SecretRow<'_>>("rounding_secret").await?;
                insert
                    .write(&SecretRow {
                        created_at,
                        secret: text,
                    })
                    .await?;
                insert.end().await
            }
        })
        .await;
    wipe_string(text);
    written?;
    // Another collector that found no secret either may be writing its
    // own right now, within the same second: its row may sort first. Read
    // back once its insert has surely landed, so that both take the same.
    tokio::time::sleep(SETTLE).await;
    Ok(read(home).await?.0)
}

/// How long a collector that wrote a secret waits before reading back the
/// earliest: far longer than an insert of one row takes. Paid once per
/// installation.
const SETTLE: Duration = Duration::from_secs(2);

/// The earliest secret stored, when every replica of the home shard
/// answered (`None` otherwise, or when none is stored): for the periodic
/// check that a collector still uses the one every collector takes. Two
/// collectors that drew theirs at once each read back after [`SETTLE`];
/// should a rival's row land later than that, this check brings both to
/// the earliest.
pub async fn earliest_stored(nodes: Arc<Nodes>) -> Result<Option<RoundingSecret>, Error> {
    let home = nodes.home().await?;
    match read(home).await? {
        (found, true) => Ok(found),
        (_, false) => Ok(None),
    }
}

/// The earliest secret the replicas of `home` hold, and whether that is
/// everything stored (see `salts::on_every_replica`).
async fn read(home: &Shard) -> Result<(Option<RoundingSecret>, bool), Error> {
    let (rows, complete) = on_every_replica(home, "rounding_secret", |client| async move {
        client
            .query("SELECT created_at, secret FROM rounding_secret")
            .fetch_all::<StoredSecret>()
            .await
    })
    .await?;
    let earliest = earliest(&rows);
    rows.into_iter().for_each(|r| wipe_string(r.secret));
    Ok((earliest, complete))
}

/// The rule every collector applies to the same rows: the earliest by
/// creation time, then by text. A row that is not 64 hex digits is not a
/// secret tamis wrote and is passed over.
fn earliest(rows: &[StoredSecret]) -> Option<RoundingSecret> {
    rows.iter()
        .filter_map(|r| parse_hex(&r.secret).map(|bytes| (r.created_at, &r.secret, bytes)))
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, bytes)| RoundingSecret::from_bytes(bytes))
}

/// [`installation_secret`] until it is read, waiting longer after each
/// failure (ClickHouse down at start-up, a replica of the home shard out
/// of reach). Logs why it waits, never the secret nor ClickHouse's text.
pub async fn read_until_done(nodes: Arc<Nodes>, clock: Clock) -> RoundingSecret {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut warned = false;
    loop {
        match installation_secret(&nodes, &clock).await {
            Ok(Some(secret)) => {
                if warned {
                    tracing::info!(
                        "installation rounding secret read from ClickHouse; the stats API answers"
                    );
                }
                return secret;
            }
            Ok(None) if !warned => {
                tracing::warn!("the rounding secret's shard has a replica out of reach and the others have not fetched everything from it; the stats API answers once the secret can be read");
                warned = true;
            }
            Err(error) if !warned => {
                log_failure(&error);
                warned = true;
            }
            _ => {}
        }
        backoff.wait().await;
    }
}

/// Why the secret could not be read, without ClickHouse's text (which
/// might quote a row): out of reach, or ClickHouse's error code.
pub fn describe(error: &Error) -> String {
    if error.is_transport() {
        return "ClickHouse cannot be reached".into();
    }
    match error {
        Error::ClickHouse(e) => match super::refusal::clickhouse_code(e) {
            Some(code) => format!("ClickHouse refused it (code {code})"),
            None => "ClickHouse's answer could not be read".into(),
        },
        // Names nodes and macros only, never a row.
        Error::Topology(e) => e.to_string(),
    }
}

/// Logs why the secret is not read yet (see [`describe`]).
pub fn log_failure(error: &Error) {
    tracing::warn!(
        reason = %describe(error),
        "installation rounding secret not read from ClickHouse yet; the stats API answers once it is"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(created_at: u32, byte: u8) -> StoredSecret {
        StoredSecret {
            created_at,
            secret: hex(&[byte; 32]),
        }
    }

    fn check(rows: &[StoredSecret], expected: Option<u8>) {
        let got = earliest(rows).map(|s| s.as_bytes()[0]);
        assert_eq!(got, expected);
    }

    /// Every collector picks the same row whatever order the replicas
    /// answered in: the earliest, then the smallest text; rows that are
    /// not secrets are passed over.
    #[test]
    fn the_earliest_secret_wins_in_any_order() {
        check(&[], None);
        check(&[row(20, 1), row(10, 2)], Some(2));
        check(&[row(10, 2), row(20, 1)], Some(2));
        check(&[row(10, 0xbb), row(10, 0xaa)], Some(0xaa));
        check(&[row(10, 0xaa), row(10, 0xbb)], Some(0xaa));
        let broken = StoredSecret {
            created_at: 1,
            secret: "not hex".into(),
        };
        check(&[broken, row(5, 7)], Some(7));
    }
}
