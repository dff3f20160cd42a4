//! `cairn hash-password`: a password read from the terminal (twice) or from stdin when piped,
//! printed as the argon2id hash `[[auth.users]] password_hash` takes.

use std::process::ExitCode;

use super::output::{say, tell};

/// Reads the password and prints its hash; exit 1 when it cannot be read, is empty or differs.
pub fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ");
        let second = rpassword::prompt_password("again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                tell!("cairn: the two passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                tell!("cairn: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            tell!("cairn: cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        tell!("cairn: the password is empty");
        return ExitCode::FAILURE;
    }
    match cairn::auth::hash_password(&password) {
        Ok(h) => {
            say!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tell!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
