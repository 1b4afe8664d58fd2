//! What each subcommand does, between argument parsing (in `main.rs`) and
//! the library. Start-up errors are `anyhow` with context naming what failed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{self, Settings};
use crate::server::Options;

/// Structured `key=value` logs to stderr; `TAMIS_LOG` sets the filter
/// (default `info`). Every field is written with its control characters
/// escaped (see [`escape_controls`]), so no value — an error text quoting
/// what a client sent, say — can start a forged log line.
pub fn init_logging() {
    use tracing_subscriber::field::MakeExt;
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("TAMIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries below tamis log what they carry at debug level (the
    // ClickHouse client, ClickHouse's error text quoting a client's
    // pattern; hyper, requests): capped at info whatever TAMIS_LOG says,
    // so that no client string reaches the log through them.
    for cap in ["clickhouse=info", "hyper=info", "hyper_util=info"] {
        if let Ok(directive) = cap.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Control characters as visible escapes (`\n`, `\r`, `\t`, `\u{1b}`):
/// one log event stays one line, and no terminal sequence passes through.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How an operator installs or updates the GeoIP database, named by every
/// warning about it.
const GEOIP_INSTALL: &str = "install DB-IP City Lite with `sudo tamis-geoip-update` (Debian package) or `deploy/debian/tamis-geoip-update --dir data/geoip` (from a clone)";

/// `tamis check`'s lines about the GeoIP files: each configured file that is
/// missing, and each loaded one older than `privacy::geo::MAX_AGE` at `now`.
fn geoip_warnings(geo: &crate::config::GeoSettings, now: std::time::SystemTime) -> Vec<String> {
    let missing = geo
        .missing
        .iter()
        .map(|m| format!("geolocation: WARNING {m} not found: {GEOIP_INSTALL}"));
    let stale = geo.db.builds().into_iter().filter_map(|build| {
        let days = build.stale_days(now)?;
        Some(format!(
            "geolocation: WARNING {} is {days} days old (more than {}): {GEOIP_INSTALL}, then restart tamis",
            build.label,
            crate::privacy::geo::MAX_AGE.as_secs() / 86_400
        ))
    });
    missing.chain(stale).collect()
}

fn load(path: &Path) -> anyhow::Result<Settings> {
    Ok(config::load(path)?)
}

pub async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    // Listened for from the start: SIGHUP's default action ends the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP (configuration reloads)")?;
    let settings = load(path)?;
    for missing in &settings.geo.missing {
        tracing::warn!(file = %missing, "GeoIP database not found; {GEOIP_INSTALL}");
    }
    if settings.geo.db.is_enabled() {
        tracing::info!(database = %settings.geo.db.describe(), "geolocation on (country and region only)");
    } else {
        tracing::warn!("no GeoIP database configured: hits are stored without country or region");
    }
    let public = TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen)",
                settings.server.listen
            )
        })?;
    let admin = TcpListener::bind(settings.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.admin_listen)",
                settings.server.admin_listen
            )
        })?;
    let listeners = crate::server::Listeners { public, admin };
    let (reloads, reloaded) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    let reloading = tokio::spawn(reload_on_hangup(hangups, path.to_path_buf(), reloads));
    #[cfg(not(unix))]
    let reloading = tokio::spawn(async move { drop(reloads) });
    let served = crate::server::serve_reloading(
        settings,
        listeners,
        shutdown_signal(),
        reloaded,
        Options::production(),
    )
    .await;
    reloading.abort();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// On each SIGHUP (`systemctl reload tamis`), reads the configuration file
/// again, as `tamis check` does, and hands the result to the server (which
/// applies it, or logs why it was refused).
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    path: std::path::PathBuf,
    reloads: tokio::sync::mpsc::Sender<crate::server::Reloaded>,
) {
    while hangups.recv().await.is_some() {
        tracing::info!(file = %path.display(), "SIGHUP: reading the configuration again");
        let read = path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&read))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the configuration: {e}")));
        if reloads.send(loaded).await.is_err() {
            return;
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: finishing open requests and flushing");
}

pub async fn migrate(path: &Path, print: bool, adopt: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::sink::schema::Layout;
    let settings = load(path)?;
    if let Some(url) = adopt {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--adopt takes the single server's HTTP URL (http://host:8123), not `{url}`"
        );
    }
    let adopt = adopt.map(crate::config::ClickHouseUrl::new);
    if adopt.is_some() && settings.clickhouse.cluster.is_none() {
        anyhow::bail!("--adopt copies a single server into a cluster: set clickhouse.cluster and clickhouse.urls");
    }
    let database = &settings.clickhouse.database;
    if print {
        let layout = match &settings.clickhouse.cluster {
            None => Layout::Single,
            Some(cluster) => {
                let nodes: Vec<String> = cluster.nodes.iter().map(|u| u.to_string()).collect();
                println!(
                    "-- On every node of cluster `{}` ({}), each node's macros filling in {{shard}} and {{replica}}:\n",
                    cluster.name,
                    nodes.join(", ")
                );
                Layout::Cluster(&cluster.name)
            }
        };
        for statement in crate::sink::schema::script(database, layout) {
            println!("{statement};\n");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let what = match &settings.clickhouse.cluster {
        None => format!("ClickHouse at {}", settings.clickhouse.url),
        Some(cluster) => format!("ClickHouse cluster `{}`", cluster.name),
    };
    let result = crate::sink::migrate::run(&settings.clickhouse).await;
    let applied = match &result {
        Ok(applied) => applied,
        // What the nodes that could be reached applied, before the error.
        Err(error) => &error.applied,
    };
    let single = settings.clickhouse.cluster.is_none();
    for node in applied {
        // A single server's lines name no node, as before clusters.
        let place = if single {
            String::new()
        } else {
            format!(" on {}", node.node)
        };
        if node.versions.is_empty() {
            println!("schema of `{database}` is up to date{place}");
        } else {
            println!(
                "applied migrations {:?} to `{database}`{place}",
                node.versions
            );
        }
    }
    result.with_context(|| format!("migrating {what}"))?;
    if let Some(from) = adopt {
        let copied = crate::sink::adopt::adopt(&settings.clickhouse, &from)
            .await
            .with_context(|| format!("copying `{database}` of {from} into {what}"))?;
        for table in copied {
            println!(
                "copied {} rows of `{}` from {from}",
                table.rows, table.table
            );
        }
        println!("`{database}` of {from} is in the cluster's first shard: point the collectors at the cluster");
    }
    Ok(ExitCode::SUCCESS)
}

/// The self-audit: validates the configuration, reaches ClickHouse, prints
/// every control of PRIVACY.md with its state (globally and per site), warns
/// with the reason for each setting that weakens a default, and shows what
/// ClickHouse actually holds (oldest month per site, salts, records).
pub async fn check(path: &Path) -> anyhow::Result<ExitCode> {
    use crate::notice::controls;
    let settings = load(path)?;
    println!("configuration {}: valid", path.display());
    println!("listen: {}", settings.server.listen);
    println!(
        "admin listen (/metrics, /readyz details, /api/v2/audit): {}",
        settings.server.admin_listen
    );
    let geoip = geoip_warnings(&settings.geo, std::time::SystemTime::now());
    geoip.iter().for_each(|w| println!("{w}"));
    // What is read of the data goes through the nodes as the stats API
    // reads: on a cluster, any node that answers, through its
    // `Distributed` tables.
    let nodes = crate::sink::nodes::Nodes::new(&settings.clickhouse, 0);
    let reachable = nodes
        .on_any(|client| client.query("SELECT version()").fetch_one::<String>())
        .await;
    let mut ok = true;
    let place = match &settings.clickhouse.cluster {
        None => settings.clickhouse.url.to_string(),
        Some(cluster) => format!("cluster `{}`", cluster.name),
    };
    match &reachable {
        Ok(version) => println!(
            "clickhouse: {place} reachable, version {version}, database `{}`",
            settings.clickhouse.database
        ),
        Err(error) => {
            ok = false;
            println!("clickhouse: {place} NOT reachable: {error}");
        }
    }
    if let Some(cluster) = &settings.clickhouse.cluster {
        println!(
            "clickhouse: cluster `{}`, {} node(s); reads go through its Distributed tables (`<table>_all`) on any node that answers, and need a replica of every shard",
            cluster.name,
            cluster.nodes.len(),
        );
        for node in &cluster.nodes {
            match cluster_node(&settings.clickhouse, node, &cluster.name).await {
                Ok(line) => println!("  node {node}: {line}"),
                Err(error) => {
                    ok = false;
                    println!("  node {node}: NOT reachable: {error}");
                }
            }
        }
    }
    let mut warnings = geoip.len();
    let mut print = |c: &controls::Control| {
        println!(
            "  {:<4} [{}] {}: {}",
            if c.warning.is_some() { "WARN" } else { "ok" },
            c.section,
            c.name,
            c.state
        );
        if let Some(w) = &c.warning {
            warnings += 1;
            println!("         WARNING: {w}");
        }
    };
    println!(
        "
privacy controls (PRIVACY.md), whole collector:"
    );
    for c in controls::global(&settings) {
        print(&c);
    }
    for site in &settings.sites {
        println!(
            "
privacy controls, site {}:",
            site.id
        );
        for c in controls::site(&settings, site) {
            print(&c);
        }
    }
    if reachable.is_ok() {
        println!(
            "
what ClickHouse holds:"
        );
        match stored_state(&nodes, &settings).await {
            Ok(lines) => lines.iter().for_each(|l| println!("  {l}")),
            Err(error) => {
                let shard_down = error
                    .downcast_ref::<clickhouse::error::Error>()
                    .is_some_and(|e| {
                        crate::query::limits::Failure::of(e).0
                            == crate::query::limits::Failure::ShardUnreachable
                    });
                if shard_down {
                    ok = false;
                    println!(
                        "  could not read: a shard of the cluster has no replica that answers"
                    );
                } else {
                    println!("  could not read: {error} (run `tamis migrate` first?)");
                }
            }
        }
    }
    println!(
        "
{warnings} warning(s)"
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One node of the cluster as it describes itself: version, the `shard`
/// and `replica` macros its replicated tables are made with, and whether
/// its `<remote_servers>` define the cluster, which its `Distributed`
/// tables read through.
async fn cluster_node(
    settings: &crate::config::ClickHouseSettings,
    node: &crate::config::ClickHouseUrl,
    cluster: &str,
) -> Result<String, clickhouse::error::Error> {
    let client = crate::sink::node_client(settings, node).with_database("default");
    let version = client
        .query("SELECT version()")
        .fetch_one::<String>()
        .await?;
    let macro_value = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .query("SELECT substitution FROM system.macros WHERE macro = ?")
                .bind(name)
                .fetch_optional::<String>()
                .await
        }
    };
    let shard = macro_value("shard").await?;
    let replica = macro_value("replica").await?;
    let replicas = client
        .query("SELECT count() FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_one::<u64>()
        .await?;
    let shown = |m: Option<String>| m.unwrap_or_else(|| "MISSING".to_string());
    Ok(format!(
        "reachable, version {version}, shard {}, replica {}, {}",
        shown(shard),
        shown(replica),
        if replicas == 0 {
            format!("WARNING `{cluster}` is not in its <remote_servers>")
        } else {
            format!("`{cluster}` has {replicas} replica(s) in its <remote_servers>")
        }
    ))
}

pub async fn demo(path: &Path, days: u32, seed: u64) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    println!(
        "writing {days} days of synthetic traffic to `{}` at {}…",
        settings.clickhouse.database, settings.clickhouse.url
    );
    for site in crate::demo::run(&settings, days, seed).await? {
        println!(
            "site {}: {} hits, {} pageviews counted, {} dropped (opt-out, bots)",
            site.site, site.hits, site.pageviews, site.dropped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every active partition of the site tables, as `(site, month)`, from
/// every node that answers: on a cluster each shard holds its own, and
/// once a `Distributed` read has answered, every shard has a replica among
/// them.
async fn site_partitions(
    nodes: &crate::sink::nodes::Nodes,
) -> Result<Vec<(String, u32)>, clickhouse::error::Error> {
    let mut out = Vec::new();
    for node in nodes.all() {
        for table in crate::sink::retention::SITE_TABLES {
            let parts = node
                .client
                .query("SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = ? AND active")
                .bind(table)
                .fetch_all::<String>()
                .await;
            let parts = match parts {
                Ok(parts) => parts,
                // Said on the node's own line; its shard's other replicas
                // hold the same partitions.
                Err(error) if nodes.is_cluster() && crate::sink::is_transport_error(&error) => {
                    break
                }
                Err(error) => return Err(error),
            };
            out.extend(
                parts
                    .iter()
                    .filter_map(|p| crate::sink::retention::parse_site_partition(p)),
            );
        }
    }
    Ok(out)
}

/// Facts read back from ClickHouse, to show rather than trust: the oldest
/// month kept per site against its retention, the salts held and their
/// age, the last deletions and destructions recorded. On a cluster,
/// through the `Distributed` tables (so every shard), read first: they
/// fail when a shard cannot be read.
/// A site's active shared links, as `tamis check` shows them: how many,
/// with a password, and expiring within a week; their ids are in
/// `tamis share list`.
fn shared_links_line(
    site: &str,
    links: &[crate::share::Link],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let active: Vec<&crate::share::Link> = links
        .iter()
        .filter(|l| l.site_id == site && l.state(now) == crate::share::State::Active)
        .collect();
    if active.is_empty() {
        return format!("site {site}: no active shared link");
    }
    let with_password = active.iter().filter(|l| l.has_password()).count();
    let soon = active
        .iter()
        .filter(|l| {
            l.expires_at
                .is_some_and(|t| t - now < chrono::Duration::days(7))
        })
        .count();
    format!(
        "site {site}: {} active shared link(s), {with_password} with a password, {soon} expiring within 7 days (`tamis share list --site {site}`)",
        active.len()
    )
}

async fn stored_state(
    nodes: &crate::sink::nodes::Nodes,
    settings: &Settings,
) -> anyhow::Result<Vec<String>> {
    use chrono::Datelike;
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct SaltDay {
        site_id: String,
        day: String,
        created_at: u32,
    }
    let sql = format!(
        "SELECT site_id, toString(day), toUInt32(min(created_at)) FROM {} GROUP BY site_id, day ORDER BY site_id, day",
        nodes.table("salts")
    );
    let salts: Vec<SaltDay> = nodes
        .on_any(|client| client.query(&sql).fetch_all::<SaltDay>())
        .await?;
    // Records of the last 30 days, `time` being the table's column.
    let count = |table: &str, time: &str| {
        let sql = format!(
            "SELECT count() FROM {} WHERE {time} > now() - 30 * 86400",
            nodes.table(table)
        );
        async move {
            nodes
                .on_any(|client| client.query(&sql).fetch_one::<u64>())
                .await
        }
    };
    let destructions = count("salt_destructions", "destroyed_at").await?;
    let deletions = count("retention_log", "deleted_at").await?;
    let audit_rows = count("audit_log", "at").await?;
    let partitions = site_partitions(nodes).await?;
    let share_events = crate::sink::shares::events(nodes, None).await?;
    let links = crate::share::Link::from_events(&share_events);

    let mut lines = Vec::new();
    let now = chrono::Utc::now();
    for site in &settings.sites {
        let oldest: Option<u32> = partitions
            .iter()
            .filter(|(id, _)| *id == site.id)
            .map(|(_, period)| *period)
            .min();
        let local = now.with_timezone(&site.timezone);
        let current = u32::try_from(local.year()).unwrap_or(0) * 100 + local.month();
        match oldest {
            None => lines.push(format!("site {}: no aggregates stored", site.id)),
            Some(p) if crate::sink::retention::is_expired(p, current, site.retention_months) => {
                lines.push(format!("site {}: WARNING oldest month {p} is past the {}-month retention (the janitor of a running `tamis serve` drops it)", site.id, site.retention_months))
            }
            Some(p) => lines.push(format!("site {}: oldest month stored {p}, within the {}-month retention", site.id, site.retention_months)),
        }
        lines.push(shared_links_line(&site.id, &links, now));
    }
    for s in &salts {
        let age_h = (now.timestamp() - i64::from(s.created_at)) / 3600;
        lines.push(format!(
            "salt of {} for {}: created {age_h} h ago{}",
            s.site_id,
            s.day,
            if age_h >= 48 {
                " — WARNING: older than 48 h"
            } else {
                ""
            }
        ));
    }
    if salts.is_empty() {
        lines.push("salts: none stored".to_string());
    }
    lines.push(format!(
        "salt destructions recorded (30 days): {destructions}"
    ));
    lines.push(format!(
        "partitions deleted by retention (30 days): {deletions}"
    ));
    lines.push(format!("audit rows (30 days): {audit_rows}"));
    Ok(lines)
}

/// `tamis notice`: the analytics section of the site's privacy policy.
pub fn notice(path: &Path, site: &str, lang: &str, format: &str) -> anyhow::Result<ExitCode> {
    use crate::notice::{blocks, missing, render, Facts, Format, Lang};
    let settings = load(path)?;
    let lang = Lang::parse(lang)
        .ok_or_else(|| anyhow::anyhow!("--lang must be fr or en, not `{lang}`"))?;
    let format = Format::parse(format)
        .ok_or_else(|| anyhow::anyhow!("--format must be md or html, not `{format}`"))?;
    let site = settings
        .site(&site.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{site}` is not a configured site id (configured: {})",
                list(settings.sites.iter().map(|s| s.id.clone()))
            )
        })?;
    let facts = Facts {
        org: &settings.organization,
        site,
    };
    for key in missing(&facts) {
        eprintln!("tamis: warning: config key `{key}` is not set; the notice says less without it");
    }
    print!("{}", render(&blocks(&facts, lang), format));
    Ok(ExitCode::SUCCESS)
}

/// `tamis audit`: prints the audit log since a date, and records that read.
pub async fn audit(
    path: &Path,
    since: &str,
    site: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    let now = chrono::Utc::now();
    let since = crate::query::audit::parse_since(since, now)
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    if let Some(site) = site {
        settings
            .site(site)
            .ok_or_else(|| anyhow::anyhow!("`{site}` is not a configured site id"))?;
    }
    let nodes = crate::sink::nodes::Nodes::new(&settings.clickhouse, 0);
    let table = nodes.table("audit_log");
    let rows = nodes
        .on_any(|client| {
            let table = table.clone();
            async move {
                crate::query::audit::read(
                    &client,
                    &table,
                    since,
                    site,
                    crate::query::audit::MAX_ROWS,
                )
                .await
            }
        })
        .await
        .with_context(|| match &settings.clickhouse.cluster {
            None => format!(
                "reading the audit log from ClickHouse at {}",
                settings.clickhouse.url
            ),
            Some(cluster) => format!(
                "reading the audit log from ClickHouse cluster `{}`",
                cluster.name
            ),
        })?;
    for r in &rows {
        if json {
            println!("{}", r.to_json());
        } else {
            println!(
                "{}  {:<13} {:<16} {:<9} {:<20} rows={:<6} {:<4} {}",
                r.time().format("%Y-%m-%d %H:%M:%S"),
                r.kind,
                r.actor,
                r.client,
                if r.site_id.is_empty() {
                    "-"
                } else {
                    &r.site_id
                },
                r.rows,
                r.format,
                r.summary
            );
        }
    }
    if !json {
        eprintln!("{} audit row(s) since {}", rows.len(), since.to_rfc3339());
    }
    let entry = crate::sink::audit::AuditEntry {
        at: now,
        kind: "audit_read",
        actor: config::operator_name(),
        client: "cli",
        site_id: site.unwrap_or_default().to_string(),
        summary: format!("since={} site={}", since.to_rfc3339(), site.unwrap_or("*")),
        rows: rows.len() as u64,
        format: if json { "json" } else { "text" },
        detail: String::new(),
    };
    let nodes = crate::sink::nodes::Nodes::new(&settings.clickhouse, 0);
    if let Err(error) = crate::sink::audit::insert(&nodes, &[entry]).await {
        eprintln!("tamis: warning: this read could not be recorded in the audit log: {error}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `tamis import ga4`: see [`crate::import`].
pub async fn import_ga4(path: &Path, options: crate::import::Options) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    crate::import::run(&settings, options).await
}

/// `tamis export`: see [`crate::export`].
pub async fn export(path: &Path, options: crate::export::Options) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    crate::export::run(settings, options).await?;
    Ok(ExitCode::SUCCESS)
}

/// What `tamis share create` is asked for.
pub struct ShareOptions {
    pub site: String,
    pub name: String,
    /// The link's password, already read (never from the command line).
    pub password: Option<String>,
    pub expires: Option<String>,
    /// The dashboard's public address, put before `/share/…`, when given
    /// on the command line (else `server.public_url`).
    pub base_url: Option<String>,
}

/// The ClickHouse nodes for the `share` commands, placed in their shards
/// as the collector last saw them when a node cannot be asked (the file
/// the collector keeps in its log directory), so that a revocation can be
/// written and checked while a replica is down.
fn share_nodes(settings: &Settings) -> crate::sink::nodes::Nodes {
    crate::sink::nodes::Nodes::new(&settings.clickhouse, 0).remembered_in(
        settings
            .storage
            .log_dir
            .join(crate::sink::nodes::REMEMBERED_FILE),
    )
}

/// Where a shared link points: `--base-url`, else `server.public_url`,
/// else the public listener when it is on loopback (a local run), said on
/// standard error; refused otherwise, since a link to an address only this
/// machine reaches would mislead whoever receives it.
fn share_base_url(settings: &Settings, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = given {
        return Ok(url.trim_end_matches('/').to_string());
    }
    if let Some(url) = &settings.server.public_url {
        return Ok(url.clone());
    }
    let listen = settings.server.listen;
    if listen.ip().is_loopback() {
        eprintln!(
            "tamis: server.public_url is not set: the link points at http://{listen}, \
             which only this machine reaches"
        );
        return Ok(format!("http://{listen}"));
    }
    anyhow::bail!(
        "set server.public_url (the address visitors reach tamis at, such as \
         https://stats.example.org) or pass --base-url"
    )
}

/// `tamis share create`: records a new link and prints its URL, the only
/// time its secret is shown.
pub async fn share_create(path: &Path, options: ShareOptions) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    let site = &options.site;
    settings
        .site(site)
        .ok_or_else(|| anyhow::anyhow!("`{site}` is not a configured site id"))?;
    let now = chrono::Utc::now();
    let expires_at = options
        .expires
        .as_deref()
        .map(|e| crate::share::parse_expiry(e, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
    let password_hash = match options.password.as_deref() {
        None => String::new(),
        Some(p) => {
            crate::share::hash_password(p).map_err(|e| anyhow::anyhow!("--password: {e}"))?
        }
    };
    let base_url = share_base_url(&settings, options.base_url.as_deref())?;
    let link = crate::share::NewLink::generate();
    let operator = config::operator_name();
    let event = crate::share::Event {
        at: now,
        kind: crate::share::EventKind::Create,
        link_id: link.id.clone(),
        site_id: site.clone(),
        name: options.name.clone(),
        secret_sha256: link.secret.digest(),
        password_hash,
        expires_at,
        actor: operator.clone(),
    };
    let nodes = share_nodes(&settings);
    crate::sink::shares::record(&nodes, &event)
        .await
        .context("recording the shared link in ClickHouse (has `tamis migrate` run?)")?;
    record_share_change(&nodes, &event, now).await;
    println!("{}", link.url(&base_url));
    eprintln!(
        "shared link {} for {site}{}{}: the URL above is shown only now",
        link.id,
        if options.password.is_some() {
            ", password protected"
        } else {
            ""
        },
        expires_at
            .map(|t| format!(", until {}", t.to_rfc3339()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tamis share list`: every link (of one site), with its state.
pub async fn share_list(path: &Path, site: Option<&str>) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    let nodes = share_nodes(&settings);
    let events = crate::sink::shares::events(&nodes, site)
        .await
        .context("reading the shared links from ClickHouse")?;
    let now = chrono::Utc::now();
    for link in crate::share::Link::from_events(&events) {
        let state = match link.state(now) {
            crate::share::State::Active => "active",
            crate::share::State::Expired => "expired",
            crate::share::State::Revoked => "revoked",
        };
        println!(
            "{}  {:<20} {:<8} created={} expires={} password={} name={}",
            link.id,
            link.site_id,
            state,
            link.created_at.format("%Y-%m-%d %H:%M"),
            link.expires_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            if link.has_password() { "yes" } else { "no" },
            escape_controls(&link.name),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `tamis share revoke` waits for each replica to fetch the
/// revocation (replication takes well under a second when all is well).
const REVOKE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// `tamis share revoke ID`: from the next request on, on every collector,
/// the link opens nothing.
pub async fn share_revoke(path: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    let nodes = share_nodes(&settings);
    let events = crate::sink::shares::link_events(&nodes, id)
        .await
        .context("reading the shared link from ClickHouse")?;
    let Some(link) = crate::share::Link::from_events(&events).into_iter().next() else {
        anyhow::bail!(
            "no shared link `{}` (see `tamis share list`)",
            escape_controls(id)
        );
    };
    let now = chrono::Utc::now();
    // Asked again for a link already revoked (after a replica was down),
    // the revocation is written again and confirmed again.
    let event = crate::share::Event {
        at: now,
        kind: crate::share::EventKind::Revoke,
        link_id: link.id.clone(),
        site_id: link.site_id.clone(),
        name: link.name.clone(),
        secret_sha256: String::new(),
        password_hash: String::new(),
        expires_at: None,
        actor: config::operator_name(),
    };
    crate::sink::shares::record_on_every_shard(&nodes, &event)
        .await
        .context("recording the revocation in ClickHouse")?;
    record_share_change(&nodes, &event, now).await;
    // Returns only once every replica a read may ask holds the revocation:
    // a collector reading through a replica that has not fetched it yet
    // would still open the link.
    if let Err(problems) =
        crate::sink::shares::confirm_revoked(&nodes, &link.id, REVOKE_PATIENCE).await
    {
        for p in &problems {
            eprintln!("tamis: ClickHouse at {} {}", p.url, p.why);
        }
        anyhow::bail!(
            "shared link {} is revoked where the revocation was written, but no shard \
             holds it on every replica yet: a read served by a replica above may still \
             open the link. Run `tamis share revoke {}` again once every replica is up.",
            link.id,
            link.id
        );
    }
    eprintln!(
        "shared link {} for {} revoked (confirmed on every replica that reads may ask)",
        link.id, link.site_id
    );
    Ok(ExitCode::SUCCESS)
}

/// The audit log's `share_change` row for a link created or revoked.
async fn record_share_change(
    nodes: &crate::sink::nodes::Nodes,
    event: &crate::share::Event,
    now: chrono::DateTime<chrono::Utc>,
) {
    let entry = crate::sink::audit::AuditEntry {
        at: now,
        kind: "share_change",
        actor: event.actor.clone(),
        client: "cli",
        site_id: event.site_id.clone(),
        summary: format!("{} link={}", event.kind.name(), event.link_id),
        rows: 0,
        format: "text",
        detail: String::new(),
    };
    if let Err(error) = crate::sink::audit::insert(nodes, &[entry]).await {
        eprintln!("tamis: warning: this change could not be recorded in the audit log: {error}");
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(escape_controls(input), expected, "{input:?}");
    }

    /// Issue 12, point 8: ClickHouse's error text quoting a client's
    /// pattern reached the log with a newline in it, forging a line.
    #[test]
    fn log_forging_control_characters_are_escaped() {
        check("plain text", "plain text");
        check(
            "bad regex `a\n2026-01-01T00:00:00Z ERROR forged`",
            "bad regex `a\\n2026-01-01T00:00:00Z ERROR forged`",
        );
        check("a\r\tb", "a\\r\\tb");
        check("\u{1b}[31mred", "\\u{1b}[31mred");
        check("\u{85}next line", "\\u{85}next line");
        check("é ü 日本", "é ü 日本");
    }
}
