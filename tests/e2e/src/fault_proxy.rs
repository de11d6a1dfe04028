//! Starts `tests/e2e/fault_proxy.py` (an AWS fault proxy) in front of moto, and reads and
//! changes its fault rates and counters through its admin endpoint. Stopped when dropped.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    kaws::{parse_response, split_url},
    moto::{ensure_installed, free_port, workspace_root},
};

/// Fault rates of one service (or the default for all); each rate is a probability per request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// The service's throttling answer (S3 503 SlowDown, DynamoDB 400 ThrottlingException,
    /// Lambda 429 TooManyRequestsException, EC2 503 RequestLimitExceeded, RDS 400 Throttling).
    pub throttle: f64,
    /// The service's plain 500.
    pub error: f64,
    /// Connection reset before the request reaches moto.
    pub reset: f64,
    /// Connection reset after moto applied the request (the answer is lost).
    pub reset_after: f64,
    /// Added to every request of the service.
    pub latency_ms: f64,
    /// Up to this much more, uniformly drawn.
    pub jitter_ms: f64,
}

impl Faults {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn throttle_and_errors(throttle: f64, error: f64) -> Self {
        Self {
            throttle,
            error,
            ..Self::default()
        }
    }
}

/// What the proxy did for one (service, operation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Counts {
    #[serde(default)]
    pub forwarded: u64,
    #[serde(default)]
    pub throttled: u64,
    #[serde(default)]
    pub error: u64,
    #[serde(default)]
    pub reset: u64,
    #[serde(default)]
    pub reset_after: u64,
    #[serde(default)]
    pub upstream_failed: u64,
    /// Answered with a plain success without reaching moto (see [`FaultProxy::ignore`]).
    #[serde(default)]
    pub ignored: u64,
}

impl Counts {
    /// Every request the client made (each SDK attempt is one).
    pub fn attempts(&self) -> u64 {
        self.forwarded
            + self.throttled
            + self.error
            + self.reset
            + self.upstream_failed
            + self.ignored
    }

    pub fn injected(&self) -> u64 {
        self.throttled + self.error + self.reset + self.reset_after
    }

    fn add(&mut self, other: &Counts) {
        self.forwarded += other.forwarded;
        self.throttled += other.throttled;
        self.error += other.error;
        self.reset += other.reset;
        self.reset_after += other.reset_after;
        self.upstream_failed += other.upstream_failed;
        self.ignored += other.ignored;
    }
}

/// The proxy's counters: service → operation → counts.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Stats {
    pub counts: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Service → the most of its requests held in their added latency at once (since the last
    /// reset): with latency set, how many calls the client had outstanding.
    #[serde(default)]
    pub peak_in_flight: BTreeMap<String, u64>,
}

/// Whether an AWS operation name is a write (anything but Get/Describe/List/Head).
pub fn is_write(operation: &str) -> bool {
    !["Get", "Describe", "List", "Head"]
        .iter()
        .any(|p| operation.starts_with(p))
}

impl Stats {
    /// Sum over the (service, operation) pairs `filter` accepts.
    pub fn sum(&self, filter: impl Fn(&str, &str) -> bool) -> Counts {
        let mut total = Counts::default();
        for (service, ops) in &self.counts {
            for (op, counts) in ops {
                if filter(service, op) {
                    total.add(counts);
                }
            }
        }
        total
    }

    pub fn total(&self) -> Counts {
        self.sum(|_, _| true)
    }

    /// Write operations forwarded to moto (i.e. that reached AWS).
    pub fn writes_forwarded(&self) -> u64 {
        self.sum(|_, op| is_write(op)).forwarded
    }

    /// `self - earlier`, per (service, operation), for counts taken from one proxy.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut out = self.clone();
        for (service, ops) in &mut out.counts {
            for (op, counts) in ops {
                if let Some(before) = earlier.counts.get(service).and_then(|o| o.get(op)) {
                    counts.forwarded -= before.forwarded.min(counts.forwarded);
                    counts.throttled -= before.throttled.min(counts.throttled);
                    counts.error -= before.error.min(counts.error);
                    counts.reset -= before.reset.min(counts.reset);
                    counts.reset_after -= before.reset_after.min(counts.reset_after);
                    counts.upstream_failed -= before.upstream_failed.min(counts.upstream_failed);
                    counts.ignored -= before.ignored.min(counts.ignored);
                }
            }
        }
        out
    }
}

/// One write the proxy forwarded to moto, recorded while recording is on.
#[derive(Clone, Debug, Deserialize)]
pub struct Write {
    pub service: String,
    pub operation: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: String,
}

/// A running fault proxy.
pub struct FaultProxy {
    child: Child,
    /// Where clients send AWS requests instead of moto.
    pub endpoint: String,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` with `faults` for every service, `seed` for its draws,
    /// recording forwarded writes when `record` is set.
    pub async fn start(
        upstream: &str,
        log_dir: &Path,
        faults: &Faults,
        seed: u64,
        record: bool,
    ) -> anyhow::Result<FaultProxy> {
        let python = ensure_installed()?;
        let script = workspace_root().join("tests/e2e/fault_proxy.py");
        let mut last_err = None;
        // A port picked free can be taken before the proxy binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(log_dir.join(format!("fault-proxy-{port}.log")))?;
            let mut cmd = Command::new(&python);
            cmd.arg(&script)
                .args(["--upstream", upstream, "--port", &port.to_string()])
                .args(["--throttle", &faults.throttle.to_string()])
                .args(["--error", &faults.error.to_string()])
                .args(["--reset", &faults.reset.to_string()])
                .args(["--reset-after", &faults.reset_after.to_string()])
                .args(["--latency-ms", &faults.latency_ms.to_string()])
                .args(["--jitter-ms", &faults.jitter_ms.to_string()])
                .args(["--seed", &seed.to_string()])
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            if record {
                cmd.arg("--record");
            }
            let child = cmd.spawn().context("failed to start fault_proxy.py")?;
            let mut proxy = FaultProxy {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            match proxy.wait_ready().await {
                Ok(()) => return Ok(proxy),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("fault proxy did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("fault_proxy.py exited early: {status}");
            }
            if self.admin("GET", "/__faults", None).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("fault proxy did not answer on {} within 30s", self.endpoint)
    }

    /// Sets the default fault rates (every service without its own).
    pub async fn set(&self, faults: &Faults) -> anyhow::Result<()> {
        self.post(&serde_json::json!({ "default": faults })).await
    }

    /// Sets per-service rates (replacing earlier per-service rates); others use the default.
    pub async fn set_services(&self, services: &BTreeMap<String, Faults>) -> anyhow::Result<()> {
        self.post(&serde_json::json!({ "services": services }))
            .await
    }

    /// Answers these operations (`service:Operation`, e.g. `s3:PutBucketVersioning`) with a
    /// plain success without forwarding them: an AWS that accepts a write and never shows it.
    /// Replaces the earlier list; an empty one ends it.
    pub async fn ignore(&self, operations: &[&str]) -> anyhow::Result<()> {
        self.post(&serde_json::json!({ "ignore": operations }))
            .await
    }

    /// Turns recording of forwarded writes on or off.
    pub async fn record(&self, on: bool) -> anyhow::Result<()> {
        self.post(&serde_json::json!({ "record": on })).await
    }

    /// Clears the counters and the recorded writes.
    pub async fn reset_counts(&self) -> anyhow::Result<()> {
        self.post(&serde_json::json!({ "reset_counts": true }))
            .await
    }

    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let body = self.admin("GET", "/__faults", None).await?;
        serde_json::from_str(&body).context("fault proxy stats")
    }

    /// The writes forwarded since recording started, oldest first.
    pub async fn writes(&self) -> anyhow::Result<Vec<Write>> {
        #[derive(Deserialize)]
        struct Writes {
            writes: Vec<Write>,
        }
        let body = self.admin("GET", "/__faults/writes", None).await?;
        Ok(serde_json::from_str::<Writes>(&body)
            .context("fault proxy writes")?
            .writes)
    }

    async fn post(&self, body: &Value) -> anyhow::Result<()> {
        self.admin("POST", "/__faults", Some(body.to_string()))
            .await
            .map(|_| ())
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (host, _) = split_url(&self.endpoint)?;
        let body = body.unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .context("fault proxy admin timed out")??;
        let (status, text) = parse_response(&buf)?;
        if status != 200 {
            bail!("fault proxy {method} {path}: {status} {text}");
        }
        Ok(text)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
