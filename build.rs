//! Records the git commit the binary is built from, for `ferry_build_info{git="…"}`, and makes
//! cargo rebuild when a migration is added.
//!
//! `FERRY_GIT_COMMIT` wins when set (a packaging pipeline building from a source tarball);
//! otherwise `git rev-parse` in the source tree; `unknown` when neither is available (a build
//! from crates.io). Reruns when HEAD moves (its reflog changes with every commit and checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    // sqlx::migrate! embeds migrations/ at compile time but cannot tell cargo to rebuild when a
    // migration is added; this does (sqlx's documented remedy).
    println!("cargo:rerun-if-changed=migrations");
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("FERRY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FERRY_GIT_COMMIT={commit}");
}
