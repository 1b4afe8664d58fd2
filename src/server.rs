//! Wiring: builds the stages from validated settings, connects them with
//! bounded channels and runs them until shutdown. Takes its listener and
//! shutdown future as arguments so tests run real servers on port 0.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::aggregate::Intake;
use crate::clock::Clock;
use crate::config::Settings;
use crate::ingest::handler::Ingest;
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
    /// How often finished days are rolled up and checked for late data;
    /// `None` neither rolls up nor reads rollups (answers come from the
    /// hourly aggregates alone, as tests compare).
    pub rollup_period: Option<Duration>,
}

impl Options {
    pub fn production() -> Self {
        Options {
            clock: Clock::system(),
            salt_period: Duration::from_secs(60),
            drain: Duration::from_secs(10),
            startup_wait: Duration::from_secs(60),
            rollup_period: Some(Duration::from_secs(60)),
        }
    }
}

/// Batches in flight between the flusher and the writer. Memory is bounded
/// by `server.queue_capacity` hits in any case (see `aggregate::Intake`).
const BATCH_QUEUE: usize = 64;

pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = crate::sink::client(&settings.clickhouse);
    migrate_when_reachable(&settings, options.startup_wait).await?;

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
    let (batches_tx, batches_rx) = mpsc::channel(BATCH_QUEUE);
    let intake = Arc::new(Intake::new(
        settings.sites.clone(),
        settings.server.queue_capacity,
        settings.clickhouse.batch_rows,
        settings.clickhouse.flush_interval,
        metrics.clone(),
        options.clock.clone(),
    ));
    let (stop_flusher, flusher_stop) = tokio::sync::watch::channel(false);
    let flusher_task = tokio::spawn(intake.clone().run(batches_tx, flusher_stop));
    let writer = Writer::new(client.clone(), settings.clickhouse.timeout, metrics.clone());
    let writer_task = tokio::spawn(writer.run(batches_rx));
    let rollup_task = options.rollup_period.map(|period| {
        tokio::spawn(
            crate::sink::rollup::Rollup::new(
                client.clone(),
                settings.sites.clone(),
                options.clock.clone(),
            )
            .run(period),
        )
    });

    let app = Arc::new(App {
        ingest: Ingest {
            privacy,
            intake,
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
            rollups: options.rollup_period.is_some(),
        },
        metrics,
        clickhouse: client,
        accepting: AtomicBool::new(true),
    });
    tracing::info!(listen = %listener.local_addr()?, "tamis is serving");
    crate::web::run(app.clone(), listener, shutdown, options.drain).await;

    // No request is running any more: the flusher hands over the last
    // batch and closes the writer's input; the writer drains every batch
    // before we return.
    drop(app);
    let _ = stop_flusher.send(true);
    flusher_task.await.context("flusher stopped abnormally")?;
    writer_task.await.context("writer stopped abnormally")?;
    keeper_task.abort();
    // A computation cut short is never read (see sink::rollup).
    if let Some(task) = rollup_task {
        task.abort();
    }
    tracing::info!("tamis stopped; every accepted hit was handed to ClickHouse");
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
