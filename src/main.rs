//! The `cairn` command line. No logic here: parse arguments, load config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cairn::config::{Config, Sources};

#[derive(Parser)]
#[command(name = "cairn", version, about = "An OCI registry where a pushed tag never silently moves")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (for example 0.0.0.0:5000).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the configuration and print every problem found.
    CheckConfig {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load(sources: &Sources) -> Result<Config, ExitCode> {
    Config::load(sources).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen, data_dir } => {
            let cfg = match load(&Sources { file: config, listen, data_dir }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            cairn::telemetry::init(&cfg.log);
            match run_server(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("cairn: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match load(&Sources { file: config, ..Default::default() }) {
            Ok(cfg) => {
                println!("configuration is valid");
                println!("  listen:   {}", cfg.server.listen);
                println!("  data dir: {}", cfg.server.data_dir.display());
                println!("  database: {}", cfg.database_url());
                println!("  storage:  {:?} {}", cfg.storage.kind, cfg.storage_path().display());
                print_rules(&cfg);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Migrate { config } => {
            let cfg = match load(&Sources { file: config, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            cairn::telemetry::init(&cfg.log);
            match cairn::AppState::from_config(cfg).await {
                Ok(_) => {
                    println!("database schema is up to date");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cairn: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print_rules(cfg: &Config) {
    println!("  immutability rules (first match wins; unmatched tags are immutable):");
    for (i, r) in cfg.immutability.rules.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        println!("    {name}: repositories {:?} tags {:?} -> {:?}", r.repositories, r.tags, r.mode);
    }
    if cfg.immutability.rules.is_empty() {
        println!("    (none: every tag is immutable)");
    }
    let referrer = if cfg.immutability.include_referrer_tags { "follow the rules" } else { "are exempt" };
    println!("    referrer fallback tags (sha256-<hex>[.sig|.att|.sbom]) {referrer}");
}

async fn run_server(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.listen_addr();
    let state = cairn::AppState::from_config(cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = cairn::shutdown_signal();
    if bound.ip().is_loopback() {
        tracing::warn!(
            "anonymous access: anyone who can reach {bound} can push and pull (access control is not built yet)"
        );
    } else {
        tracing::warn!(
            "listening on a non-loopback address {bound} with anonymous push and pull: access control is not built yet"
        );
    }
    tracing::info!(
        data_dir = %state.config.server.data_dir.display(),
        database = %state.config.database_url(),
        "cairn listening on http://{bound}"
    );
    println!("cairn listening on http://{bound}");
    cairn::serve(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
