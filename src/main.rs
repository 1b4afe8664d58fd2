//! The `tamis` binary: parses the command line, loads the configuration,
//! starts logging and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc. A hit's messages are made on a
/// request thread and freed on the aggregator's; under glibc those frees
/// took other threads' arena locks, and malloc and free were a fifth of the
/// collector's CPU under load with their futex wake-ups. With jemalloc a
/// hit costs about 12 % less CPU at the same memory (README, "Benchmarks").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tamis",
    version,
    about = "Web analytics with privacy built in: aggregates only, in ClickHouse."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector, stats API and operational endpoints.
    Serve {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
    },
    /// Create or upgrade the ClickHouse schema.
    Migrate {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// Print the SQL instead of running it.
        #[arg(long)]
        print: bool,
        /// With a cluster configured: after migrating it, copy the data of
        /// the single server at this URL (same database, user and password)
        /// into the cluster's first shard. The cluster must be empty.
        #[arg(long, value_name = "URL")]
        adopt: Option<String>,
    },
    /// Self-audit: validate the configuration, reach ClickHouse, show every
    /// privacy control per site and warn about weakened defaults.
    Check {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
    },
    /// Write synthetic traffic for every configured site (past weeks, through
    /// the real privacy pipeline and aggregator) so the dashboard has data.
    Demo {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// Days of history, ending now.
        #[arg(long, default_value_t = 56, value_parser = clap::value_parser!(u32).range(1..=400))]
        days: u32,
        /// Seed of the made-up traffic (same seed, same visits).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print the analytics section of a site's privacy policy, generated
    /// from its configuration.
    Notice {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// The site id.
        #[arg(long)]
        site: String,
        /// fr or en.
        #[arg(long, default_value = "fr")]
        lang: String,
        /// md or html.
        #[arg(long, default_value = "md")]
        format: String,
    },
    /// Print the audit log: statistics reads and configuration changes.
    Audit {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// A date (2026-11-01), an RFC 3339 time, or a duration back from
        /// now (24h, 7d).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Only this site's rows (and those about no site).
        #[arg(long)]
        site: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write one site's month as an open-data package: CSV tables and a
    /// CSVW metadata file, in the protected disclosure mode (see README,
    /// "Sharing and open data").
    Export {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// The site id.
        #[arg(long)]
        site: String,
        /// The month, YYYY-MM, in the site's time zone.
        #[arg(long)]
        month: String,
        /// fr or en: headers and descriptions.
        #[arg(long, default_value = "fr")]
        lang: String,
        /// The folder the package is written to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The licence stated in the metadata: an SPDX id or a URL.
        #[arg(long, alias = "license", default_value = tamis::export::DEFAULT_LICENCE)]
        licence: String,
    },
    /// Shared links: a read-only dashboard of one site behind an
    /// unguessable URL, in the protected disclosure mode.
    Share {
        #[command(subcommand)]
        action: ShareAction,
    },
    /// Import history exported from another analytics tool.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

#[derive(Subcommand)]
enum ShareAction {
    /// Create a link and print its URL (shown only once).
    Create {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// The site id.
        #[arg(long)]
        site: String,
        /// A name to recognise the link by in `tamis share list`.
        #[arg(long, default_value = "")]
        name: String,
        /// Ask for a password: read from TAMIS_SHARE_PASSWORD, else one
        /// line of standard input (never from the command line).
        #[arg(long)]
        password: bool,
        /// When the link stops working: a duration (12h, 30d), a date or
        /// an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// The dashboard's public address, put before /share/…; default:
        /// `server.public_url` (or TAMIS_PUBLIC_URL).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// List the links, their state and expiry (never their secrets).
    List {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// Only this site's links.
        #[arg(long)]
        site: Option<String>,
    },
    /// Revoke a link: every collector refuses it from its next request.
    Revoke {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// The link's id, as `tamis share list` shows it.
        id: String,
    },
}

/// A shared link's password: from TAMIS_SHARE_PASSWORD; else, on a
/// terminal, asked twice without echo; else the first line of standard
/// input (for scripts).
fn read_share_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("TAMIS_SHARE_PASSWORD") {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let first = rpassword::prompt_password("password for the shared link: ")?;
        let again = rpassword::prompt_password("the same password again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing was created");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Google Analytics 4 reports saved as Data API runReport JSON
    /// responses or GA4 CSV exports (see the README). Every file is
    /// validated before anything is written.
    Ga4 {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
        /// The site id the history belongs to.
        #[arg(long)]
        site: String,
        /// Replace days another file imported before.
        #[arg(long)]
        replace: bool,
        /// Print what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tamis::cli::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("tamis: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => tamis::cli::serve(&config).await,
            Command::Migrate {
                config,
                print,
                adopt,
            } => tamis::cli::migrate(&config, print, adopt.as_deref()).await,
            Command::Check { config } => tamis::cli::check(&config).await,
            Command::Demo { config, days, seed } => tamis::cli::demo(&config, days, seed).await,
            Command::Notice {
                config,
                site,
                lang,
                format,
            } => tamis::cli::notice(&config, &site, &lang, &format),
            Command::Audit {
                config,
                since,
                site,
                json,
            } => tamis::cli::audit(&config, &since, site.as_deref(), json).await,
            Command::Export {
                config,
                site,
                month,
                lang,
                out,
                licence,
            } => match tamis::export::Lang::parse(&lang) {
                Ok(lang) => {
                    let options = tamis::export::Options {
                        site,
                        month,
                        lang,
                        out,
                        licence,
                    };
                    tamis::cli::export(&config, options).await
                }
                Err(error) => Err(error),
            },
            Command::Share {
                action:
                    ShareAction::Create {
                        config,
                        site,
                        name,
                        password,
                        expires,
                        base_url,
                    },
            } => {
                let password = if password {
                    match read_share_password() {
                        Ok(p) => Some(p),
                        Err(error) => return Err(error),
                    }
                } else {
                    None
                };
                tamis::cli::share_create(
                    &config,
                    tamis::cli::ShareOptions {
                        site,
                        name,
                        password,
                        expires,
                        base_url,
                    },
                )
                .await
            }
            Command::Share {
                action: ShareAction::List { config, site },
            } => tamis::cli::share_list(&config, site.as_deref()).await,
            Command::Share {
                action: ShareAction::Revoke { config, id },
            } => tamis::cli::share_revoke(&config, &id).await,
            Command::Import {
                from:
                    ImportFrom::Ga4 {
                        config,
                        site,
                        replace,
                        dry_run,
                        files,
                    },
            } => {
                tamis::cli::import_ga4(
                    &config,
                    tamis::import::Options {
                        site,
                        files,
                        replace,
                        dry_run,
                    },
                )
                .await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tamis: {error:#}");
            ExitCode::FAILURE
        }
    }
}
