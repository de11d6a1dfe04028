//! Starts moto in server mode on a free loopback port, installing it into `.tools/venv` first
//! when it is missing. Stopped when dropped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The moto version the tests are written against (its known gaps are documented in README).
pub const MOTO_VERSION: &str = "5.2.5";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv() -> PathBuf {
    workspace_root().join(".tools/venv")
}

/// The venv's Python, which runs moto through `tests/e2e/moto_server.py`, installing moto into the workspace venv if needed.
/// `scripts/install-tools.sh` does the same; this is the fallback for `cargo test` alone.
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let server = venv().join("bin/moto_server");
    if server.exists() {
        return Ok(venv().join("bin/python"));
    }
    let script = workspace_root().join("scripts/install-tools.sh");
    // flock serialises parallel test binaries that all find moto missing.
    let status = Command::new("flock")
        .arg(workspace_root().join(".tools.lock"))
        .arg(&script)
        .status()
        .with_context(|| format!("failed to run {}", script.display()))?;
    if !status.success() || !server.exists() {
        bail!("failed to install moto with {}", script.display());
    }
    Ok(venv().join("bin/python"))
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start(log_dir: &Path) -> anyhow::Result<Moto> {
        Self::start_with(log_dir, false).await
    }

    /// `keep_alive`: moto keeps connections open instead of closing each after one answer (its
    /// default), as AWS does; `make bench` measures kaws' CPU that way.
    pub async fn start_with(log_dir: &Path, keep_alive: bool) -> anyhow::Result<Moto> {
        let python = ensure_installed()?;
        let launcher = workspace_root().join("tests/e2e/moto_server.py");
        let mut last_err = None;
        // A port picked free can be taken before moto binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(log_dir.join(format!("moto-{port}.log")))?;
            let child = Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
                .env("KAWS_MOTO_KEEP_ALIVE", if keep_alive { "1" } else { "0" })
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .context("failed to start moto_server")?;
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            match moto.wait_ready().await {
                Ok(()) => return Ok(moto),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto_server exited early: {status}");
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("moto_server did not listen on {addr} within 60s")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
