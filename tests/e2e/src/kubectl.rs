//! Runs the real `kubectl` against the environment's kubeconfig.

use std::{
    path::Path,
    process::{Command, Output},
};

/// The kubectl binary: `KUBECTL` if set, else the one on PATH.
pub fn binary() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

pub fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    match Command::new(binary())
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "failed to run kubectl ({e}); install it (Debian package kubernetes-client, or `make tools`)"
        ),
    }
}

/// Runs kubectl and returns stdout; panics with stderr when it fails.
pub fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = run(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
