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
    /// Read a password (from the terminal, or stdin when piped) and print its argon2id hash
    /// for `[[auth.users]] password_hash`.
    HashPassword,
    /// Robot tokens for CI/CD: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a robot and print its secret (shown only this once).
    Create {
        /// Login name of the robot.
        #[arg(long)]
        name: String,
        /// A role: admin, writer, reader, auditor (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A grant GLOB=ACTIONS, for example 'apps/**=pull,push' (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Lifetime, for example 30d or 12h; without it the robot does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List robots (never their secrets).
    List,
    /// Revoke a robot: its secret stops working at once.
    Revoke {
        /// The robot's name.
        name: String,
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
                println!("  database: {}", cfg.database_url_redacted());
                println!("  storage:  {:?} {}", cfg.storage.kind, cfg.storage_path().display());
                print_rules(&cfg);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::HashPassword => hash_password(),
        Command::Token { command, config, data_dir } => {
            let cfg = match load(&Sources { file: config, data_dir, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match token_command(cfg, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cairn: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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

fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ");
        let second = rpassword::prompt_password("again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("cairn: the two passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cairn: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("cairn: cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        eprintln!("cairn: the password is empty");
        return ExitCode::FAILURE;
    }
    match cairn::auth::hash_password(&password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn token_command(cfg: Config, command: TokenCommand) -> anyhow::Result<()> {
    let users: Vec<String> = cfg.auth.users.iter().map(|u| u.name.clone()).collect();
    let state = cairn::AppState::from_config(cfg).await?;
    let meta = state.meta.as_ref();
    match command {
        TokenCommand::Create { name, roles, grants, expires } => {
            let new = cairn::auth::NewRobot { name: name.clone(), roles, grants, expires_in: expires };
            let secret = cairn::auth::create_robot(meta, &new, &users).await?;
            println!("robot: {name}");
            println!("secret: {secret}");
            eprintln!(
                "Store the secret now: it is not shown again. Log in with username {name:?} and the secret as password."
            );
        }
        TokenCommand::List => {
            let robots = cairn::auth::list_robots(meta).await?;
            if robots.is_empty() {
                println!("no robots");
            }
            for r in robots {
                let grants: Vec<String> =
                    r.grants.iter().map(|g| format!("{}={}", g.repositories, g.actions.join(","))).collect();
                let status = match (r.revoked_at, r.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(t)) if t <= std::time::SystemTime::now() => "expired".to_string(),
                    (None, Some(t)) => format!("expires {}", humantime::format_rfc3339_seconds(t)),
                    (None, None) => "no expiry".to_string(),
                };
                println!("{}\troles={}\tgrants={}\t{status}", r.name, r.roles.join(","), grants.join(" "));
            }
        }
        TokenCommand::Revoke { name } => {
            if !cairn::auth::revoke_robot(meta, &name).await? {
                anyhow::bail!("no live robot named {name:?}");
            }
            println!("revoked {name}");
        }
    }
    Ok(())
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
    if !addr.ip().is_loopback() && cfg.auth.users.is_empty() && !cfg.auth.allow_anonymous_write {
        anyhow::bail!(
            "refusing to listen on {addr} with no users configured: anyone on the network could push and delete. \
             Add [[auth.users]] to the config, listen on 127.0.0.1, or set auth.allow_anonymous_write = true"
        );
    }
    let state = cairn::AppState::from_config(cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = cairn::shutdown_signal();
    state.auth.refresh().await?;
    if state.auth.is_open() {
        tracing::warn!(
            "no users or grants configured: ANYONE who can reach {bound} can push, pull and delete. \
             Add [[auth.users]] (see `cairn hash-password`) to restrict access."
        );
    }
    tracing::info!(
        data_dir = %state.config.server.data_dir.display(),
        database = %state.config.database_url_redacted(),
        "cairn listening on http://{bound}"
    );
    println!("cairn listening on http://{bound}");
    cairn::serve(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
