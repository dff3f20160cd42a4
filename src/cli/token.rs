//! `cairn token create|list|revoke`: robot tokens for CI/CD. Creating the first robot of an
//! open registry ends open mode, and says so; a secret is shown once, or the robot is named
//! for revoking when it cannot be.

use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell, write_line};
use crate::TokenCommand;

/// Runs `command`; exit 0 done, 1 failed (said on stderr).
pub async fn token(cfg: Config, command: TokenCommand) -> ExitCode {
    match token_command(cfg, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tell!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn token_command(cfg: Config, command: TokenCommand) -> anyhow::Result<()> {
    let users: Vec<String> = cfg.auth.users.iter().map(|u| u.name.clone()).collect();
    let config_open = cfg.auth.users.is_empty() && cfg.auth.grants.is_empty();
    let state = cairn::AppState::from_config(cfg).await?;
    let meta = state.meta.as_ref();
    match command {
        TokenCommand::Create { name, roles, grants, expires } => {
            let was_open = config_open && cairn::auth::list_robots(meta).await?.is_empty();
            let new = cairn::auth::NewRobot { name: name.clone(), roles, grants, expires_in: expires };
            let secret = cairn::auth::create_robot(meta, &new, &users).await?;
            if was_open {
                tracing::warn!(
                    robot = %name,
                    "open mode ended: the first robot token exists, so anonymous clients now get only what \
                     [[auth.grants]] for \"anonymous\" give them"
                );
                tell!(
                    "cairn: this registry was open (no users, grants or robots, so anyone could push, pull and \
                     delete). Robot {name:?} ends that for the running server (within a second) and every later \
                     start: anonymous clients now get only what an [[auth.grants]] entry with subjects = \
                     [\"anonymous\"] gives them. Sign in as the robot, or add such a grant (for example \
                     repositories = \"**\", actions = [\"pull\"]) to keep anonymous pulls."
                );
            }
            let shown = write_line(std::io::stdout().lock(), format_args!("robot: {name}\nsecret: {secret}"));
            if let Err(e) = shown {
                anyhow::bail!(
                    "robot {name:?} was created but its secret could not be printed ({e}); \
                     revoke it with `cairn token revoke {name}` and create another"
                );
            }
            tell!(
                "Store the secret now: it is not shown again. Log in with username {name:?} and the secret as password."
            );
        }
        TokenCommand::List => {
            let robots = cairn::auth::list_robots(meta).await?;
            if robots.is_empty() {
                say!("no robots");
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
                say!("{}\troles={}\tgrants={}\t{status}", r.name, r.roles.join(","), grants.join(" "));
            }
        }
        TokenCommand::Revoke { name } => {
            if !cairn::auth::revoke_robot(meta, &name).await? {
                anyhow::bail!("no live robot named {name:?}");
            }
            say!("revoked {name}");
        }
    }
    Ok(())
}
