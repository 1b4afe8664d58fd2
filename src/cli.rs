//! What each subcommand does, between argument parsing (in `main.rs`) and
//! the library. Start-up errors are `anyhow` with context naming what failed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{self, ConsentMode, OnDenied, OnOptOut, Settings};
use crate::server::{serve as run_server, Options};

/// Structured `key=value` logs to stderr; `TAMIS_LOG` sets the filter
/// (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAMIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn load(path: &Path) -> anyhow::Result<Settings> {
    Ok(config::load(path)?)
}

pub async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    for missing in &settings.geo.missing {
        tracing::warn!(file = %missing, "GeoIP database not found; run deploy/setup.sh to install DB-IP City Lite");
    }
    if settings.geo.db.is_enabled() {
        tracing::info!(database = %settings.geo.db.describe(), "geolocation on (country and region only)");
    } else {
        tracing::warn!("no GeoIP database configured: hits are stored without country or region");
    }
    let listener = TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen)",
                settings.server.listen
            )
        })?;
    run_server(settings, listener, shutdown_signal(), Options::production()).await?;
    Ok(ExitCode::SUCCESS)
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

pub async fn migrate(path: &Path, print: bool) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    if print {
        for statement in crate::sink::schema::script(&settings.clickhouse.database) {
            println!("{statement};\n");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let applied = crate::sink::migrate::run(&settings.clickhouse)
        .await
        .with_context(|| format!("migrating ClickHouse at {}", settings.clickhouse.url))?;
    if applied.is_empty() {
        println!("schema of `{}` is up to date", settings.clickhouse.database);
    } else {
        println!(
            "applied migrations {applied:?} to `{}`",
            settings.clickhouse.database
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let settings = load(path)?;
    println!("configuration {}: valid", path.display());
    println!("listen: {}", settings.server.listen);
    println!(
        "trusted proxies: {}",
        list(
            settings
                .server
                .trusted_proxies
                .iter()
                .map(|n| n.to_string())
        )
    );
    for missing in &settings.geo.missing {
        println!("geolocation: WARNING {missing} not found");
    }
    println!(
        "geolocation: {}",
        if settings.geo.db.is_enabled() {
            settings.geo.db.describe()
        } else {
            "off (no GeoIP database configured)".into()
        }
    );
    let client = crate::sink::client(&settings.clickhouse);
    let reachable = client.query("SELECT version()").fetch_one::<String>().await;
    let mut ok = true;
    match reachable {
        Ok(version) => println!(
            "clickhouse: {} reachable, version {version}, database `{}`",
            settings.clickhouse.url, settings.clickhouse.database
        ),
        Err(error) => {
            ok = false;
            println!(
                "clickhouse: {} NOT reachable: {error}",
                settings.clickhouse.url
            );
        }
    }
    for site in &settings.sites {
        println!("\nsite {}", site.id);
        println!(
            "  host names:            {}",
            list(site.hostnames.iter().cloned())
        );
        println!(
            "  time zone:             {} (daily key rotates at local midnight)",
            site.timezone.name()
        );
        println!(
            "  IP truncation:         IPv4 /{}, IPv6 /{} (before any other use)",
            site.ipv4_prefix, site.ipv6_prefix
        );
        println!("  geolocation level:     {:?}", site.geo_level);
        println!(
            "  consent mode:          {}",
            match site.consent_mode {
                ConsentMode::NotRequired =>
                    "not-required (daily visitor key without consent, CNIL-exempt style)",
                ConsentMode::Required => "required (no visitor key until consent is granted)",
            }
        );
        println!(
            "  on consent denied:     {}",
            match site.on_denied {
                OnDenied::Anonymous => "count pageviews anonymously",
                OnDenied::Drop => "drop",
            }
        );
        println!(
            "  on opt-out signal:     {} (GPC honoured: {}, DNT honoured: {})",
            match site.on_opt_out {
                OnOptOut::Drop => "drop before any processing",
                OnOptOut::Anonymous => "count anonymously",
            },
            yes_no(site.honour_gpc),
            yes_no(site.honour_dnt)
        );
        println!(
            "  query parameters kept: {}",
            list(site.query_params.iter().cloned())
        );
        println!(
            "  campaigns (utm_*):     {}",
            yes_no(site.collect_campaigns)
        );
        println!("  hash routing:          {}", yes_no(site.hash_routing));
        println!(
            "  custom events:         {}",
            list(sorted(&site.event_names))
        );
        println!("  event property keys:   {}", list(sorted(&site.prop_keys)));
        println!("  small-count threshold: k = {}", site.k_threshold);
        println!("  retention:             {} months", site.retention_months);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn sorted(set: &std::collections::HashSet<String>) -> impl Iterator<Item = String> {
    let mut v: Vec<String> = set.iter().cloned().collect();
    v.sort();
    v.into_iter()
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
