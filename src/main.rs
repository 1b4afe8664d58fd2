//! The `tamis` binary: parses the command line, loads the configuration,
//! starts logging and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    },
    /// Validate the configuration, reach ClickHouse and show each site's
    /// effective privacy settings.
    Check {
        #[arg(long, default_value = "config/tamis.toml")]
        config: PathBuf,
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
            Command::Migrate { config, print } => tamis::cli::migrate(&config, print).await,
            Command::Check { config } => tamis::cli::check(&config).await,
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
