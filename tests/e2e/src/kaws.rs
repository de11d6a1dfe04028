//! Runs the real `kaws` binary as a child process and reads its logs and metrics.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::moto::{free_port, workspace_root};

/// The `kaws` binary cargo built for this workspace (debug), or `KAWS_BINARY` (the release
/// binary `make bench` measures).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("KAWS_BINARY") {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/kaws");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first with `cargo build -p kaws` (make test does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The log filter of the kaws the tests start unless `KAWS_E2E_LOG` says otherwise: a debug
/// line per reconcile, with its duration.
pub const DEBUG_LOG: &str = "info,kaws=debug";

/// A running `kaws run`.
pub struct Kaws {
    child: Child,
    pub metrics_url: String,
    pub log_path: PathBuf,
}

/// Where the e2e suite records what kaws used, for the IAM and RBAC least-privilege checks run
/// after it (tests/packaging/check-iam.py, check-rbac.py). Unset: nothing is recorded.
pub const RECORD_DIR_ENV: &str = "KAWS_E2E_RECORD_DIR";

/// The bearer token kaws' kubeconfig carries, so the test API server records kaws' requests
/// apart from the test's own.
pub const KAWS_TOKEN: &str = "kaws-e2e";

/// Settings for one `kaws run`.
pub struct KawsOptions<'a> {
    pub kubeconfig: &'a Path,
    pub aws_endpoint: &'a str,
    pub region: &'a str,
    pub cluster_id: &'a str,
    pub resync_period: &'a str,
    pub namespaces: Vec<String>,
    pub extra_env: BTreeMap<String, String>,
}

impl Kaws {
    pub async fn start(opts: KawsOptions<'_>, log_dir: &Path) -> anyhow::Result<Kaws> {
        let port = free_port()?;
        let log_path = log_dir.join(format!("kaws-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(binary()?);
        cmd.arg("run")
            .env("KAWS_KUBECONFIG", opts.kubeconfig)
            .env("KAWS_AWS_ENDPOINT_URL", opts.aws_endpoint)
            .env("KAWS_AWS_REGION", opts.region)
            .env("KAWS_CLUSTER_ID", opts.cluster_id)
            .env("KAWS_RESYNC_PERIOD", opts.resync_period)
            .env("KAWS_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("KAWS_LOG_FORMAT", "json")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // `KAWS_E2E_LOG`: another filter for the kaws under test (e.g. to trace its calls).
            .env(
                "RUST_LOG",
                std::env::var("KAWS_E2E_LOG").unwrap_or_else(|_| DEBUG_LOG.to_string()),
            )
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if !opts.namespaces.is_empty() {
            cmd.env("KAWS_WATCH_NAMESPACES", opts.namespaces.join(","));
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("failed to start kaws")?;
        let mut kaws = Kaws {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        kaws.wait_ready().await?;
        Ok(kaws)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("kaws exited early ({status}); log:\n{}", self.logs());
            }
            if let Ok((200, _)) = http_get(&format!("{}/readyz", self.metrics_url)).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("kaws was not ready within 60s; log:\n{}", self.logs())
    }

    /// Process id of the running kaws.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(&format!("{}/metrics", self.metrics_url)).await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// Sum of `kaws_aws_api_calls_total` samples whose labels contain every `(label, value)`.
    pub async fn aws_calls(&self, filter: impl Fn(&str) -> bool) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        Ok(sum_samples(&text, "kaws_aws_api_calls_total", filter))
    }

    /// Sum of `kaws_reconciles_total` for `kind`.
    pub async fn reconciles(&self, kind: &str) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        let needle = format!("kind=\"{kind}\"");
        Ok(sum_samples(&text, "kaws_reconciles_total", |labels| {
            labels.contains(&needle)
        }))
    }

    /// A scrape of `/metrics` taken just after a reconcile of `kind` ended. With one object of
    /// the kind and a resync period well above a reconcile's length, nothing of that kind is in
    /// flight then, so the counters of two such scrapes differ by whole reconciles only (a
    /// reconcile counts itself after its last AWS call and status write).
    pub async fn metrics_between_reconciles(&self, kind: &str) -> anyhow::Result<String> {
        let needle = format!("kind=\"{kind}\"");
        let count =
            |text: &str| sum_samples(text, "kaws_reconciles_total", |l| l.contains(&needle));
        let first = count(&self.metrics().await?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = self.metrics().await?;
            if count(&text) > first {
                return Ok(text);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("no {kind} reconcile ended within 30s")
    }

    /// Sends SIGKILL (no cleanup: the Lease is not released) and reaps the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.record_calls();
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Appends every (service, operation) this kaws called, from its /metrics, to a new file
    /// in `$KAWS_E2E_RECORD_DIR/aws-calls/`. Best effort: a kaws that is gone records nothing.
    pub fn record_calls(&mut self) {
        let Some(dir) = std::env::var_os(RECORD_DIR_ENV) else {
            return;
        };
        if !self.is_running() {
            return;
        }
        let Ok((200, text)) = http_get_blocking(&format!("{}/metrics", self.metrics_url)) else {
            return;
        };
        let mut lines = std::collections::BTreeSet::new();
        for line in text.lines() {
            let Some(labels) = line
                .strip_prefix("kaws_aws_api_calls_total{")
                .and_then(|r| r.split_once('}'))
                .map(|(l, _)| l)
            else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_string)
            };
            if let (Some(service), Some(op)) = (label("service"), label("operation")) {
                lines.insert(format!("{service} {op}"));
            }
        }
        let dir = PathBuf::from(dir).join("aws-calls");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}.txt", uuid::Uuid::new_v4().simple()));
        let body: String = lines.into_iter().map(|l| l + "\n").collect();
        let _ = std::fs::write(file, body);
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.record_calls();
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("kaws did not stop within 30s of SIGTERM")
    }
}

impl Drop for Kaws {
    fn drop(&mut self) {
        self.record_calls();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums the samples of metric `name` whose label set passes `filter`.
pub fn sum_samples(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once('}')?;
                    (labels, value)
                }
                None => ("", rest),
            };
            filter(labels).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

/// `http://host:port/path` → (`host:port`, `/path`).
pub(crate) fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Status code and body of a whole HTTP/1.1 response.
pub(crate) fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`http_get`] for `Drop`: blocking, with short timeouts.
pub fn http_get_blocking(url: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let (host, path) = split_url(url)?;
    let addr: std::net::SocketAddr = host.parse()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    parse_response(&buf)
}

/// A minimal HTTP/1.1 GET on loopback, so the tests need no HTTP client crate.
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = split_url(url)?;
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    parse_response(&buf)
}
