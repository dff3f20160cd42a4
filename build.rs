//! Build script: names the commit Cairn is built from, for `cairn --version` and the
//! `cairn_build_info` metric. `CAIRN_COMMIT` in the environment wins (a Docker build has no
//! `.git`); else `git rev-parse --short=12 HEAD`; else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CAIRN_COMMIT");
    let commit = std::env::var("CAIRN_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=CAIRN_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // Built again when HEAD moves (a commit, a checkout); paths that do not exist are left
    // out, or cargo would run this script on every build.
    if let Ok(out) = Command::new("git").args(["rev-parse", "--git-dir"]).output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        for p in ["HEAD", "refs/heads", "packed-refs"] {
            let path = Path::new(&dir).join(p);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
