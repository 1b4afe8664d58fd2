//! Wiring: builds the stages from validated settings, connects them with
//! bounded channels and runs them until shutdown. Takes its listener and
//! shutdown future as arguments so tests run real servers on port 0.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::aggregate::feed::Feeder;
use crate::aggregate::Intake;
use crate::clock::Clock;
use crate::config::Settings;
use crate::ingest::handler::Ingest;
use crate::journal::{Journal, Options as JournalOptions};
use crate::metrics::Metrics;
use crate::privacy::pipeline::Privacy;
use crate::privacy::salt::SaltStore;
use crate::query::Api;
use crate::sink::salts::SaltKeeper;
use crate::sink::writer::Writer;
use crate::web::App;

/// What differs between production and tests.
pub struct Options {
    pub clock: Clock,
    /// How often salts are shared and expired ones destroyed.
    pub salt_period: Duration,
    /// How long open requests may take to finish at shutdown.
    pub drain: Duration,
    /// How long to wait for ClickHouse at start-up.
    pub startup_wait: Duration,
}

impl Options {
    pub fn production() -> Self {
        Options {
            clock: Clock::system(),
            salt_period: Duration::from_secs(60),
            drain: Duration::from_secs(10),
            startup_wait: Duration::from_secs(60),
        }
    }
}

/// Batches in flight between the flusher and the writer. Memory is bounded
/// by `server.queue_capacity` records in any case (see `aggregate::feed`).
const BATCH_QUEUE: usize = 64;

pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = crate::sink::client(&settings.clickhouse);

    let log_dir = &settings.storage.log_dir;
    let (journal, recovery) = Journal::open(
        log_dir,
        JournalOptions {
            max_bytes: settings.storage.log_max_bytes,
            fsync: settings.storage.fsync,
        },
        metrics.clone(),
    )
    .with_context(|| {
        format!(
            "opening the durable log in {} (storage.log_dir)",
            log_dir.display()
        )
    })?;
    tracing::info!(
        dir = %log_dir.display(),
        segments = recovery.segments,
        records = recovery.records,
        torn_tails = recovery.torn_tails,
        corrupt = recovery.corrupt,
        "durable log open"
    );

    migrate_when_reachable(&settings, options.startup_wait).await?;
    // Records up to the last receipt are in ClickHouse already: replay
    // starts after them, so nothing is counted twice.
    let from = crate::sink::writer::confirmed_end(&client, journal.id())
        .await
        .context("reading the last batch receipt from ClickHouse")?
        .max(journal.confirmed_end())
        .max(1);
    journal.confirm(from);
    let replay = journal.durable_end().saturating_sub(from);
    if replay > 0 {
        tracing::info!(hits = replay, "replaying logged hits not yet in ClickHouse");
    }

    let salts = Arc::new(SaltStore::new());
    let keeper = SaltKeeper::new(
        client.clone(),
        settings.sites.clone(),
        salts.clone(),
        options.clock.clone(),
    );
    keeper
        .tick()
        .await
        .context("sharing today's salts through ClickHouse")?;
    let keeper_task =
        tokio::spawn(keeper.run(options.salt_period, Arc::new(tokio::sync::Notify::new())));

    let privacy = Privacy::new(settings.sites.clone(), settings.geo.db.clone(), salts)?;
    let site_ids: Vec<Arc<str>> = settings
        .sites
        .iter()
        .map(|s| Arc::from(s.id.as_str()))
        .collect();
    let (batches_tx, batches_rx) = mpsc::channel(BATCH_QUEUE);
    let intake = Arc::new(Intake::new(
        settings.sites.clone(),
        settings.clickhouse.batch_rows,
        settings.clickhouse.flush_interval,
        metrics.clone(),
        options.clock.clone(),
    ));
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = Feeder {
        journal: journal.clone(),
        from,
        intake: intake.clone(),
        sites: site_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect(),
        capacity: settings.server.queue_capacity as u64,
        metrics: metrics.clone(),
        stop: stop_feeding.clone(),
    }
    .spawn()
    .context("starting the log feeder")?;
    let (stop_flusher, flusher_stop) = tokio::sync::watch::channel(false);
    let flusher_task = tokio::spawn(intake.clone().run(batches_tx, flusher_stop));
    let writer = Writer::new(
        client.clone(),
        settings.clickhouse.timeout,
        metrics.clone(),
        journal.clone(),
    );
    let writer_task = tokio::spawn(writer.run(batches_rx));

    let app = Arc::new(App {
        ingest: Ingest {
            privacy,
            journal: journal.clone(),
            site_ids,
            metrics: metrics.clone(),
            clock: options.clock.clone(),
            trusted_proxies: settings.server.trusted_proxies.clone(),
        },
        api: Api {
            client: client.clone(),
            sites: settings.sites.clone(),
            tokens: settings.tokens,
            clock: options.clock.clone(),
            metrics: metrics.clone(),
        },
        metrics: metrics.clone(),
        clickhouse: client,
        journal: journal.clone(),
        accepting: AtomicBool::new(true),
    });
    tracing::info!(listen = %listener.local_addr()?, "tamis is serving");
    // The shutdown deadline runs from the signal.
    let signalled = Arc::new(std::sync::OnceLock::new());
    let mark = signalled.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = mark.set(tokio::time::Instant::now());
    };
    let timeout = settings.server.shutdown_timeout;
    crate::web::run(
        app.clone(),
        listener,
        shutdown,
        options.drain.min(timeout / 2),
    )
    .await;

    // No request is running any more. Within the deadline: feed what is
    // logged, hand over the last batch, write it. What does not fit stays
    // in the log and is written at the next start.
    let stop_at = signalled
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + timeout;
    drop(app);
    let flushed = tokio::time::timeout_at(stop_at, async {
        stop_feeding.store(true, Ordering::Release);
        let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
        let _ = stop_flusher.send(true);
        let _ = flusher_task.await;
        let _ = writer_task.await;
    })
    .await;
    keeper_task.abort();
    match flushed {
        Ok(()) => tracing::info!("tamis stopped; every accepted hit is in ClickHouse"),
        Err(_) => tracing::warn!(
            hits = journal.unconfirmed(),
            "shutdown deadline reached; hits not yet in ClickHouse stay in the durable log and are written at the next start"
        ),
    }
    Ok(())
}

/// Runs migrations, waiting for ClickHouse to come up (it often starts
/// alongside tamis).
async fn migrate_when_reachable(settings: &Settings, wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match crate::sink::migrate::run(&settings.clickhouse).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "schema migrated");
                }
                return Ok(());
            }
            Err(error)
                if tokio::time::Instant::now() < deadline
                    && crate::sink::is_transport_error(&error) =>
            {
                tracing::warn!(error = %error, url = %settings.clickhouse.url, "ClickHouse not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                return Err(anyhow::anyhow!(error)).with_context(|| {
                    format!(
                        "migrating ClickHouse at {} (database {})",
                        settings.clickhouse.url, settings.clickhouse.database
                    )
                });
            }
        }
    }
}
