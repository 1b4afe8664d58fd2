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
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::aggregate::feed::Feeder;
use crate::aggregate::handoff::Handoff;
use crate::aggregate::Intake;
use crate::backoff::Backoff;
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
use crate::web::Face;

/// What differs between production and tests.
pub struct Options {
    pub clock: Clock,
    /// How often salts are shared and expired ones destroyed, and the
    /// rounding secret checked against the earliest stored.
    pub salt_period: Duration,
    /// How long open requests may take to finish at shutdown.
    pub drain: Duration,
    /// How long to wait for ClickHouse at start-up before serving without
    /// it (hits then wait in the durable log).
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
            startup_wait: Duration::from_secs(10),
            rollup_period: Some(Duration::from_secs(60)),
        }
    }
}

/// Batches in flight between the flusher and the writer. Memory is bounded
/// by `server.queue_capacity` records in any case (see `aggregate::feed`).
const BATCH_QUEUE: usize = 64;

/// Records the configuration in the audit log if it changed since the last
/// record (`sink::audit::record_config_change`, which compares hashes, so a
/// retry never records it twice), retrying while ClickHouse cannot take it:
/// down at start-up, or not yet migrated.
async fn record_config_change_until_done(
    nodes: Arc<crate::sink::nodes::Nodes>,
    sections: Vec<(String, String)>,
    operator: String,
    at: chrono::DateTime<chrono::Utc>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    let mut warned = false;
    loop {
        match crate::sink::audit::record_config_change(&nodes, sections.clone(), &operator, at)
            .await
        {
            Ok(changed) => {
                if warned && changed.is_some() {
                    tracing::info!("configuration change recorded in the audit log");
                }
                return;
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(error = %error, "configuration change not recorded in the audit log yet; retrying until ClickHouse takes it");
                    warned = true;
                }
                backoff.wait().await;
            }
        }
    }
}

/// Builds every stage, serves HTTP until `shutdown` completes, then drains
/// (see [`Built::drain`]) within `server.shutdown_timeout` of the signal.
pub async fn serve(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> anyhow::Result<()> {
    let (_, reloads) = mpsc::channel(1);
    serve_reloading(settings, listeners, shutdown, reloads, options).await
}

/// A configuration file read again (SIGHUP): its settings, or why it was
/// refused (the error `tamis check` prints for it).
pub type Reloaded = anyhow::Result<Settings>;

/// [`serve`], applying each configuration that comes in `reloads` while it
/// serves (see `reload` for what changes at once).
pub async fn serve_reloading(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<Reloaded>,
    options: Options,
) -> anyhow::Result<()> {
    let timeout = settings.server.shutdown_timeout;
    let grace = settings.server.shutdown_grace;
    let drain = options.drain.min(timeout / 2);
    let built = build(settings, &options, reloads).await?;
    tracing::info!(
        listen = %listeners.public.local_addr()?,
        admin_listen = %listeners.admin.local_addr()?,
        "tamis is serving"
    );
    let signalled = accept(built.app.clone(), listeners, shutdown, grace, drain).await;
    built.drain(signalled + timeout).await;
    Ok(())
}

/// Where tamis is served: the public listener (hits, the beacon, the
/// dashboard, the stats API) and the operators' (`/metrics`, `/readyz`
/// with its details, `/api/v2/audit`), bound by the caller.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Everything `serve` runs, built from the settings before the first
/// connection is accepted. Dropping it aborts every task it owns.
struct Built {
    app: Arc<App>,
    journal: Journal,
    /// Turns true at shutdown: delivery feeds what is logged, hands over
    /// the last batch and writes it.
    stop_delivery: tokio::sync::watch::Sender<bool>,
    /// The delivery task alone; it ends true once every logged hit is in
    /// ClickHouse.
    delivery: JoinSet<bool>,
    /// The audit log writer, as `AuditLog::start` hands it over; it ends
    /// once every `AuditLog` handle (the app's) is gone and its queue is
    /// written.
    audit: JoinHandle<()>,
    /// Salt keeper, retention janitor, rollups and the configuration
    /// record: cut short at shutdown (each is safe to stop anywhere).
    background: JoinSet<()>,
}

/// Opens the journal (recovery, then start) and logs what recovery found.
/// Blocking file I/O: runs on a blocking thread.
async fn open_journal(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Journal> {
    let dir = settings.storage.log_dir.clone();
    let options = JournalOptions {
        max_bytes: settings.storage.log_max_bytes,
        fsync: settings.storage.fsync,
    };
    let opened = tokio::task::spawn_blocking(move || {
        let recovered = Journal::recover(&dir, options, metrics)?;
        let found = recovered.report();
        tracing::info!(
            dir = %dir.display(),
            segments = found.segments,
            records = found.records,
            torn_tails = found.torn_tails,
            corrupt = found.corrupt,
            "durable log open"
        );
        recovered.start()
    })
    .await
    .context("the durable log's start-up thread failed")?;
    opened.with_context(|| {
        format!(
            "opening the durable log in {} (storage.log_dir)",
            settings.storage.log_dir.display()
        )
    })
}

/// Migrates ClickHouse, waiting at most `wait` for it to answer. ClickHouse
/// may be down when tamis starts: hits are accepted into the log
/// meanwhile, and delivery starts once it answers (false). A ClickHouse
/// that answers with an error (bad credentials, …) stops start-up.
async fn connect(
    settings: &crate::config::ClickHouseSettings,
    wait: Duration,
) -> anyhow::Result<bool> {
    match tokio::time::timeout(wait, migrate_forever(settings)).await {
        Ok(result) => {
            result?;
            Ok(true)
        }
        Err(_) => {
            tracing::warn!(
                url = %settings.url,
                "ClickHouse not reachable; accepting hits into the durable log until it is"
            );
            Ok(false)
        }
    }
}

/// Builds the stages and starts their tasks, in start-up order: journal,
/// ClickHouse, privacy operations, salts, delivery, rollups, the app.
async fn build(
    mut settings: Settings,
    options: &Options,
    reloads: mpsc::Receiver<Reloaded>,
) -> anyhow::Result<Built> {
    let metrics = Arc::new(Metrics::default());
    metrics
        .log_max_bytes
        .store(settings.storage.log_max_bytes, Ordering::Relaxed);
    metrics
        .config_last_reload_successful
        .store(1, Ordering::Relaxed);
    let client = crate::sink::client(&settings.clickhouse);
    let journal = open_journal(&settings, metrics.clone()).await?;
    let connected = connect(&settings.clickhouse, options.startup_wait).await?;
    // Until an insert or a readiness probe says otherwise.
    metrics
        .clickhouse_up
        .store(u64::from(connected), Ordering::Relaxed);
    // Which replica of each shard this collector asks first: its own, so
    // that collectors spread their writes.
    let spread = u64::from_le_bytes(
        blake3::hash(journal.id().as_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let nodes = Arc::new(
        crate::sink::nodes::Nodes::new(&settings.clickhouse, spread).remembered_in(
            settings
                .storage
                .log_dir
                .join(crate::sink::nodes::REMEMBERED_FILE),
        ),
    );
    // The installation's rounding secret, read (or drawn and stored, by
    // the first collector) before the sites reach the stats API; without
    // ClickHouse, the reloader reads it once ClickHouse answers and the
    // stats API refuses protected answers until then (see `sink::rounding`).
    let mut rounding_secret = None;
    if connected && settings.needs_installation_secret() {
        match crate::sink::rounding::installation_secret(&nodes, &options.clock).await {
            Ok(found) => rounding_secret = found,
            Err(error) => crate::sink::rounding::log_failure(&error),
        }
    }
    if let Some(secret) = &rounding_secret {
        settings.use_installation_secret(secret);
    }
    // The sites every stage reads; a reload replaces them.
    let sites = crate::config::LiveSites::new(settings.sites.clone());
    let mut background = JoinSet::new();

    // Privacy operations: configuration change record, retention janitor
    // (at start-up, then daily), audit log writer. Each retries until
    // ClickHouse answers, so a start during an outage loses no record.
    // With ClickHouse up, the record is made before serving.
    let sections = crate::config::fingerprint::sections(&settings);
    let operator = crate::config::operator_name();
    let started = options.clock.now();
    let recorded = connected
        && crate::sink::audit::record_config_change(&nodes, sections.clone(), &operator, started)
            .await
            .is_ok();
    if !recorded {
        background.spawn(record_config_change_until_done(
            nodes.clone(),
            sections,
            operator,
            started,
        ));
    }
    background.spawn(
        crate::sink::retention::Janitor::new(
            nodes.clone(),
            sites.clone(),
            settings.audit_retention_months,
            options.clock.clone(),
        )
        .run(Duration::from_secs(24 * 3600)),
    );
    let (audit, audit_task) = crate::sink::audit::AuditLog::start(
        nodes.clone(),
        metrics.clone(),
        settings.clickhouse.timeout,
    );
    let published = crate::config::Live::new(crate::notice::Published::new(&settings));

    let salts = Arc::new(SaltStore::new());
    let keeper = SaltKeeper::new(
        nodes.clone(),
        sites.clone(),
        salts.clone(),
        options.clock.clone(),
    )
    .with_metrics(metrics.clone());
    if connected {
        keeper
            .tick()
            .await
            .context("sharing today's salts through ClickHouse")?;
    }
    // Without ClickHouse, salts are made locally and shared once it
    // answers (see `sink::salts`).
    let wake_keeper = Arc::new(tokio::sync::Notify::new());
    background.spawn(keeper.run(options.salt_period, wake_keeper.clone()));

    let privacy = Privacy::new(
        settings.sites.clone(),
        settings.geo.db.clone(),
        salts.clone(),
    )?;
    // Held beside the aggregator's own records: bounded the same way.
    let handoff = Arc::new(Handoff::new(
        settings
            .server
            .queue_capacity
            .min(crate::aggregate::handoff::CAPACITY),
    ));
    let (stop_delivery, delivery_stop) = tokio::sync::watch::channel(false);
    let mut delivery = JoinSet::new();
    delivery.spawn(
        Delivery {
            settings: &settings,
            client: client.clone(),
            nodes: nodes.clone(),
            journal: journal.clone(),
            handoff: handoff.clone(),
            sites: sites.clone(),
            metrics: metrics.clone(),
            clock: options.clock.clone(),
            connected,
        }
        .start(delivery_stop),
    );
    if let Some(period) = options.rollup_period {
        background.spawn(
            crate::sink::rollup::Rollup::new(nodes.clone(), sites.clone(), options.clock.clone())
                .run(period),
        );
    }

    let app = Arc::new(App {
        ingest: Ingest {
            privacy,
            journal: journal.clone(),
            handoff,
            metrics: metrics.clone(),
            clock: options.clock.clone(),
            trusted_proxies: settings.server.trusted_proxies.clone(),
        },
        api: Api {
            nodes: nodes.clone(),
            sites: sites.clone(),
            tokens: crate::config::Live::new(settings.tokens.clone()),
            clock: options.clock.clone(),
            metrics: metrics.clone(),
            audit,
            rollups: options.rollup_period.is_some(),
            limits: crate::query::limits::Limits::new(&settings.query),
        },
        privacy: published,
        metrics,
        nodes,
        journal: journal.clone(),
        accepting: AtomicBool::new(true),
        edge: crate::web::Edge::new(&settings.server),
        health: Default::default(),
    });
    background.spawn(
        Reloader {
            running: Some(settings),
            app: app.clone(),
            sites,
            rounding_secret,
            secret_recheck: options.salt_period,
            salts,
            wake_keeper,
            nodes: app.nodes.clone(),
            metrics: app.metrics.clone(),
            clock: options.clock.clone(),
        }
        .run(reloads),
    );
    Ok(Built {
        app,
        journal,
        stop_delivery,
        delivery,
        audit: audit_task,
        background,
    })
}

/// Applies reloaded configurations (see `reload`) to the running stages,
/// without a restart: connections, visits in memory and the durable log
/// stay as they are.
struct Reloader {
    /// What tamis runs with; `None` only while a reload is planned.
    running: Option<Settings>,
    app: Arc<App>,
    /// The sites the aggregator, the feeder, the salt keeper, the janitor,
    /// the rollups and the stats API read.
    sites: crate::config::LiveSites,
    /// The installation's rounding secret once read (see `sink::rounding`);
    /// `None` while unread or unused (a configured key).
    rounding_secret: Option<crate::config::RoundingSecret>,
    /// How often the secret is checked against the earliest stored
    /// (`Options::salt_period`; a read of one small table).
    secret_recheck: Duration,
    salts: Arc<SaltStore>,
    wake_keeper: Arc<tokio::sync::Notify>,
    nodes: Arc<crate::sink::nodes::Nodes>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// How long a reload waits for the salt keeper to share a new site's salt
/// before ingest counts its hits (past it, a salt made here is shared
/// later, as when ClickHouse is down).
const NEW_SALT_WAIT: Duration = Duration::from_secs(2);

impl Reloader {
    async fn run(mut self, mut reloads: mpsc::Receiver<Reloaded>) {
        // Audit records still being retried; cut short with this task.
        let mut recording = JoinSet::new();
        // The installation's rounding secret, read until it is when the
        // sites need it and start-up could not read it.
        let mut reading = JoinSet::new();
        self.read_secret_if_needed(&mut reading);
        // Once read, the secret is checked again now and then against the
        // earliest stored (see `sink::rounding::earliest_stored`).
        let mut checking = JoinSet::new();
        let mut recheck = tokio::time::interval(self.secret_recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reloads_open = true;
        loop {
            // Without reloads (no SIGHUP handler, as in tests), the secret
            // is still waited for.
            let reloaded = tokio::select! {
                reloaded = reloads.recv(), if reloads_open => match reloaded {
                    Some(reloaded) => reloaded,
                    None => {
                        reloads_open = false;
                        continue;
                    }
                },
                Some(Ok(secret)) = reading.join_next(), if !reading.is_empty() => {
                    self.use_installation_secret(secret);
                    continue;
                }
                _ = recheck.tick(), if self.rounding_secret.is_some() && checking.is_empty() => {
                    checking.spawn(crate::sink::rounding::earliest_stored(self.nodes.clone()));
                    continue;
                }
                Some(checked) = checking.join_next(), if !checking.is_empty() => {
                    match checked {
                        Ok(Ok(Some(earliest))) if Some(&earliest) != self.rounding_secret.as_ref() => {
                            tracing::warn!("another collector stored the installation's rounding secret first; rounding with that one from now on");
                            self.use_installation_secret(earliest);
                        }
                        Ok(Err(error)) => tracing::debug!(error = %crate::sink::rounding::describe(&error), "rounding secret check skipped"),
                        _ => {}
                    }
                    continue;
                }
                else => break,
            };
            match reloaded {
                Ok(settings) => {
                    if let Some(sections) = self.apply(settings).await {
                        recording.spawn(record_config_change_until_done(
                            self.nodes.clone(),
                            sections,
                            crate::config::operator_name(),
                            self.clock.now(),
                        ));
                    }
                }
                Err(error) => {
                    self.metrics
                        .config_last_reload_successful
                        .store(0, Ordering::Relaxed);
                    tracing::error!(error = %format!("{error:#}"), "configuration reload refused; the running configuration stays");
                }
            }
            self.read_secret_if_needed(&mut reading);
        }
        while recording.join_next().await.is_some() {}
    }

    /// Starts reading the installation's rounding secret when a running
    /// site needs it (no `query.rounding_key`) and it is neither read nor
    /// being read.
    fn read_secret_if_needed(&self, reading: &mut JoinSet<crate::config::RoundingSecret>) {
        let needed = self
            .running
            .as_ref()
            .is_some_and(Settings::needs_installation_secret);
        if needed && self.rounding_secret.is_none() && reading.is_empty() {
            reading.spawn(crate::sink::rounding::read_until_done(
                self.nodes.clone(),
                self.clock.clone(),
            ));
        }
    }

    /// Keys the running sites with the installation's rounding secret, read
    /// after start-up: from now on the stats API answers for them.
    fn use_installation_secret(&mut self, secret: crate::config::RoundingSecret) {
        if let Some(running) = &mut self.running {
            running.use_installation_secret(&secret);
            self.sites.store(running.sites.clone());
        }
        self.rounding_secret = Some(secret);
    }

    /// Puts `new` in place as far as it can change at runtime; returns the
    /// effective configuration's sections for the audit log when they
    /// changed.
    async fn apply(&mut self, new: Settings) -> Option<Vec<(String, String)>> {
        let running = self.running.take()?;
        let known = running.sites.len();
        let plan = crate::reload::plan(running, new);
        for setting in &plan.needs_restart {
            tracing::warn!(setting = %setting, "configuration reload: this change needs a restart; left as it was");
        }
        let mut settings = plan.settings;
        if let Some(secret) = &self.rounding_secret {
            settings.use_installation_secret(secret);
        }
        // Readers first, ingest last: by the time a hit names a new site,
        // the aggregator, the feeder and the salt keeper know it.
        self.sites.store(settings.sites.clone());
        if settings.sites.len() > known {
            self.wake_keeper.notify_one();
            let deadline = Instant::now() + NEW_SALT_WAIT;
            while (known..settings.sites.len()).any(|i| self.salts.days(i).is_empty())
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.app.api.tokens.store(settings.tokens.clone());
        self.app
            .privacy
            .store(crate::notice::Published::new(&settings));
        self.app
            .ingest
            .privacy
            .replace_sites(settings.sites.clone());
        self.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .config_last_reload_successful
            .store(1, Ordering::Relaxed);
        tracing::info!(
            changed = %plan.changed.join(", "),
            needs_restart = %plan.needs_restart.join(", "),
            sites = settings.sites.len(),
            "configuration reloaded"
        );
        let sections = crate::config::fingerprint::sections(&settings);
        self.running = Some(settings);
        // Nothing that runs changed: nothing to record (the audit log's
        // `at` is to the second, and cannot order records made within one).
        (!plan.changed.is_empty()).then_some(sections)
    }
}

/// Serves `app` until `shutdown` completes and open requests finished (or
/// `drain` passed); returns when the signal came, from which the shutdown
/// deadline runs.
async fn accept(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    drain: Duration,
) -> Instant {
    // One signal, both listeners: each waits for the same watch to turn.
    let (signal, signalled_rx) = tokio::sync::watch::channel(None::<Instant>);
    let stopped = |mut rx: tokio::sync::watch::Receiver<Option<Instant>>| async move {
        let _ = rx.wait_for(Option::is_some).await;
    };
    let public = crate::web::run(
        app.clone(),
        Face::Public,
        listeners.public,
        stopped(signalled_rx.clone()),
        grace,
        drain,
    );
    let admin = crate::web::run(
        app,
        Face::Admin,
        listeners.admin,
        stopped(signalled_rx.clone()),
        grace,
        drain,
    );
    let signal = async move {
        shutdown.await;
        signal.send_replace(Some(Instant::now()));
        // Keeps the sender alive until both listeners are done.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = async { tokio::join!(public, admin) } => {}
        _ = signal => {}
    }
    let at = *signalled_rx.borrow();
    at.unwrap_or_else(Instant::now)
}

impl Built {
    /// Once no request runs any more, within the deadline `stop_at`: feed
    /// what is logged, hand over the last batch and write it; then cut the
    /// background tasks short; then let queued audit rows use what is left
    /// of the deadline. What does not fit stays in the log and is written
    /// at the next start; whatever still runs is aborted when `self` is
    /// dropped on return.
    async fn drain(mut self, stop_at: Instant) {
        drop(self.app);
        let _ = self.stop_delivery.send(true);
        let flushed = tokio::time::timeout_at(stop_at, self.delivery.join_next()).await;
        // A computation cut short is never read (see sink::rollup).
        self.background.abort_all();
        let _ = tokio::time::timeout_at(stop_at, &mut self.audit).await;
        match flushed {
            Ok(Some(Ok(true))) => {
                tracing::info!("tamis stopped; every accepted hit is in ClickHouse")
            }
            _ => tracing::warn!(
                hits = self.journal.unconfirmed(),
                "shutdown deadline reached; hits not yet in ClickHouse stay in the durable log and are written at the next start"
            ),
        }
        // Not a JoinSet's: `AuditLog::start` hands over its own handle.
        self.audit.abort();
    }
}

/// Everything between the journal and ClickHouse: started once ClickHouse
/// answers, stopped (feeding what is logged, writing the last batch) when
/// `stop` turns true.
struct Delivery<'a> {
    settings: &'a Settings,
    client: clickhouse::Client,
    /// The servers by shard: where batches go.
    nodes: Arc<crate::sink::nodes::Nodes>,
    journal: Journal,
    /// What ingest hands the feeder from memory.
    handoff: Arc<Handoff>,
    sites: crate::config::LiveSites,
    metrics: Arc<Metrics>,
    clock: Clock,
    connected: bool,
}

impl Delivery<'_> {
    /// The delivery task; it ends true once every logged hit is written.
    fn start(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = bool> + Send + 'static {
        let settings = self.settings;
        let clickhouse = settings.clickhouse.clone();
        let capacity = settings.server.queue_capacity as u64;
        let Delivery {
            client,
            nodes,
            journal,
            handoff,
            sites,
            metrics,
            clock,
            connected,
            ..
        } = self;
        async move {
            if !connected {
                tokio::select! {
                    result = migrate_forever(&clickhouse) => {
                        if let Err(error) = result {
                            tracing::error!(error = %format!("{error:#}"), "ClickHouse refused the schema; hits stay in the durable log");
                            return false;
                        }
                    }
                    _ = stop.changed() => return false,
                }
            }
            // Records up to the last receipt are in ClickHouse already:
            // replay starts after them, so nothing is counted twice.
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
            let noted = crate::journal::in_flight::read(journal.dir());
            let receipts = loop {
                let read = if nodes.is_cluster() {
                    // On a cluster the receipts are spread over the
                    // shards; the note says where the last one may be.
                    let store = crate::sink::writer::ClickHouseStore {
                        nodes: nodes.clone(),
                        timeout: clickhouse.timeout,
                        journal_id: journal.id().to_string(),
                        metrics: metrics.clone(),
                    };
                    crate::sink::writer::store::noted_end(&store, noted.as_ref())
                        .await
                        .map_err(|e| match e {
                            crate::sink::refusal::Failure::Unclear(what) => what,
                            crate::sink::refusal::Failure::Refused(r) => r.to_string(),
                        })
                } else {
                    crate::sink::writer::confirmed_end(&client, journal.id())
                        .await
                        .map_err(|e| e.to_string())
                };
                match read {
                    Ok(end) => break end,
                    Err(error) => {
                        tracing::warn!(error = %error, retry_in = ?backoff.peek(), "cannot read batch receipts; retrying");
                        tokio::select! {
                            _ = backoff.wait() => {}
                            _ = stop.changed() => return false,
                        }
                    }
                }
            };
            let from = receipts.max(journal.confirmed_end()).max(1);
            // Deletes segments and writes the note: file I/O, off the
            // async threads.
            let confirming = journal.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || confirming.confirm(from)).await
            {
                tracing::error!(error = %error, "cannot confirm the durable log up to the last receipt");
                return false;
            }
            let replay = journal.durable_end().saturating_sub(from);
            if replay > 0 {
                tracing::info!(hits = replay, "writing logged hits not yet in ClickHouse");
            }
            // The batch the writer was applying when tamis stopped, if it
            // has no receipt: replay cuts its records into the same batch.
            let cut = noted
                .map(|n| (n.first, n.end))
                .filter(|(_, end)| *end > from)
                .map(|(first, end)| {
                    if first != from {
                        tracing::warn!(
                            first,
                            end,
                            from,
                            "the batch noted in flight does not start where replay starts"
                        );
                    }
                    end
                });

            let (batches_tx, batches_rx) = mpsc::channel(BATCH_QUEUE);
            let intake = Arc::new(Intake::new(
                sites.clone(),
                clickhouse.batch_rows,
                clickhouse.flush_interval,
                metrics.clone(),
                clock,
                cut,
            ));
            let stop_feeding = Arc::new(AtomicBool::new(false));
            let feeder = Feeder {
                journal: journal.clone(),
                from,
                intake: intake.clone(),
                handoff: handoff.clone(),
                sites,
                capacity,
                metrics: metrics.clone(),
                stop: stop_feeding.clone(),
            }
            .spawn();
            let feeder = match feeder {
                Ok(f) => f,
                Err(error) => {
                    tracing::error!(error = %error, "cannot start the log feeder");
                    return false;
                }
            };
            // Flusher and writer: aborted with this task when it is (past
            // the shutdown deadline).
            let mut stages = JoinSet::new();
            let (stop_flusher, flusher_stop) = tokio::sync::watch::channel(false);
            stages.spawn(intake.run(batches_tx, flusher_stop));
            let writer = Writer::new(nodes, clickhouse.timeout, metrics, journal.clone());
            stages.spawn(writer.run(batches_rx));

            let _ = stop.wait_for(|stopping| *stopping).await;
            stop_feeding.store(true, Ordering::Release);
            let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
            // The flusher hands over the last batch and returns, which
            // closes the writer's input; the writer returns once it is
            // written.
            let _ = stop_flusher.send(true);
            while stages.join_next().await.is_some() {}
            journal.unconfirmed() == 0
        }
    }
}

/// Runs migrations, waiting for ClickHouse for as long as it takes (it
/// often starts alongside tamis, or is being restarted). Only an answer
/// that refuses the schema is an error.
async fn migrate_forever(settings: &crate::config::ClickHouseSettings) -> anyhow::Result<()> {
    // A short ceiling: once ClickHouse answers, start-up (or delivery)
    // follows within two seconds.
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
    let mut warned = false;
    loop {
        match crate::sink::migrate::run(settings).await {
            Ok(applied) => {
                for node in applied.iter().filter(|a| !a.versions.is_empty()) {
                    tracing::info!(node = %node.node, applied = ?node.versions, "schema migrated");
                }
                return Ok(());
            }
            Err(error)
                if error.is_transport()
                    && settings.cluster.is_some()
                    && !error.applied.is_empty() =>
            {
                // Some nodes are migrated: delivery can start (a batch
                // waits for its shard if need be), and the nodes out of
                // reach get the schema as soon as they answer.
                for (node, why) in &error.failed {
                    tracing::warn!(node = %node, error = %why, "ClickHouse node not reachable; it gets the schema when it answers");
                }
                let settings = settings.clone();
                tokio::spawn(async move {
                    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
                    loop {
                        match crate::sink::migrate::run(&settings).await {
                            Ok(_) => {
                                tracing::info!(
                                    "every ClickHouse node of the cluster has the schema"
                                );
                                return;
                            }
                            Err(error) if error.is_transport() => backoff.wait().await,
                            Err(error) => {
                                tracing::error!(error = %error, "a ClickHouse node refused the schema");
                                return;
                            }
                        }
                    }
                });
                return Ok(());
            }
            Err(error) if error.is_transport() => {
                if !warned {
                    tracing::warn!(error = %error, url = %settings.url, "ClickHouse not reachable yet; retrying");
                    warned = true;
                }
                backoff.wait().await;
            }
            Err(error) => {
                return Err(anyhow::anyhow!(error)).with_context(|| {
                    format!(
                        "migrating ClickHouse at {} (database {})",
                        settings.url, settings.database
                    )
                });
            }
        }
    }
}
