//! `kaws run`: connects to Kubernetes and AWS, starts one controller per kind and the HTTP
//! server, and stops all of them cleanly on SIGTERM.

use std::{io::IsTerminal, net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, Config, config::Kubeconfig};
use tokio_util::sync::CancellationToken;

use crate::{
    aws::{AwsSettings, load_sdk_config},
    cli::{LogFormat, RunArgs},
    core::{
        backoff::Backoffs,
        driver::{Connect, Shared},
        events::Events,
        registry::{self, Launch},
        runner::{Readiness, RunOptions},
    },
    fence::Fence,
    leader::{self, Elector, LeaderError, LeaseSettings},
    metrics::Metrics,
    resources::KINDS,
};

/// Why `kaws run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to load the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("failed to configure the Kubernetes client: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("failed to reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("no AWS region: set --aws-region (KAWS_AWS_REGION) or AWS_REGION")]
    NoRegion,
    #[error("{0}")]
    Settings(String),
    #[error("the kube-system namespace has no uid; set --cluster-id")]
    NoClusterId,
    #[error(
        "failed to listen on {addr} for /metrics, /healthz and /readyz (--metrics-addr, KAWS_METRICS_ADDR): {source}"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in files and pipes make logs unreadable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn kube_client(args: &RunArgs) -> Result<Client, StartError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn cluster_id(client: &Client, flag: Option<&String>) -> Result<String, StartError> {
    if let Some(id) = flag {
        return Ok(id.clone());
    }
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?;
    ns.metadata.uid.ok_or(StartError::NoClusterId)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(args: RunArgs) -> Result<(), StartError> {
    // Before anything else: a taken port must fail the start, not leave kaws running without
    // probes and metrics.
    let listener = crate::http::bind(args.metrics_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    let client = kube_client(&args).await?;
    let cluster_id = cluster_id(&client, args.cluster_id.as_ref()).await?;
    let sdk = load_sdk_config(&AwsSettings {
        region: args.aws_region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
    })
    .await;
    let default_region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or(StartError::NoRegion)?;
    // With leader election, AWS writes wait for the Lease (see fence.rs).
    let fence = if args.leader_election {
        Fence::lease()
    } else {
        Fence::open()
    };
    let metrics = Arc::new(Metrics::with_fence(fence));
    metrics.set_leading(!args.leader_election);
    let shared = Arc::new(Shared {
        client: client.clone(),
        cluster_id: cluster_id.clone(),
        default_region: default_region.clone(),
        default_deletion_policy: args.default_deletion_policy.into(),
        resync_period: args.resync_period,
        metrics: metrics.clone(),
        events: Events::new(client.clone(), args.instance.clone()),
        backoffs: Backoffs::new(Duration::from_secs(2), Duration::from_secs(300)),
        update_guard: Default::default(),
        status_writes: Default::default(),
        own_writes: Default::default(),
    });
    let kinds = registry::select(KINDS, &args.kinds);
    let names: Vec<&str> = kinds.iter().map(|k| k.kind()).collect();
    tracing::info!(kinds = ?names, %cluster_id, region = %default_region, "starting kaws");

    let shutdown = CancellationToken::new();
    // The HTTP server stops last, so /healthz and /metrics answer while reconciles drain.
    let http_stop = CancellationToken::new();
    let _stop_http = http_stop.clone().drop_guard();
    let readiness = Readiness::default();
    let http = tokio::spawn(crate::http::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        http_stop.clone(),
    ));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut elector = match leader_election(&args, &client, &metrics)? {
        None => None,
        Some(mut elector) => {
            // A standby has no caches to sync: ready. Once leading, /readyz waits for the
            // caches the controllers add below.
            readiness.expect(0);
            let acquired = tokio::select! {
                _ = elector.acquire() => true,
                _ = &mut signal => false,
            };
            if !acquired {
                tracing::info!("stopped while standing by");
                // In case a write of ours landed as the signal arrived.
                release(&mut elector).await;
                http_stop.cancel();
                return finish_http(http).await;
            }
            Some(elector)
        }
    };
    let options = RunOptions {
        namespaces: args.watch_namespaces.clone(),
        concurrency: args.concurrency,
        label_selector: args.label_selector.clone().filter(|s| !s.is_empty()),
    };
    let iam = crate::iam::Guard {
        path_prefix: args.iam_path_prefix.clone(),
        permissions_boundary: args.iam_permissions_boundary.clone(),
    };
    iam.validate().map_err(StartError::Settings)?;
    let connect = Connect {
        sdk: &sdk,
        iam: &iam,
        metrics: &metrics,
        client: &client,
        cluster_id: &cluster_id,
        resync_period: args.resync_period,
        full_read_every: args.full_read_every,
        own_writes: &shared.own_writes,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for kind in kinds {
        tasks.spawn(kind.start(Launch {
            shared: shared.clone(),
            connect: &connect,
            options: options.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        }));
    }

    let lost = async {
        match &mut elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut signal => {}
        lost = lost => {
            // The fence is closed already (no AWS write can start); another replica may be
            // reconciling: stop every worker at once, and exit so that the pod restarts as a
            // standby.
            tasks.abort_all();
            shutdown.cancel();
            tracing::error!(error = %lost, "stopped leading: stopped every worker, exiting");
            tasks.shutdown().await;
            http_stop.cancel();
            let _ = finish_http(http).await;
            return Err(lost.into());
        }
    }
    tracing::info!("shutting down: finishing reconciles in flight");
    shutdown.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    // Keep renewing while the reconciles in flight finish, so that no standby starts before.
    let drained = async {
        match &mut elector {
            Some(e) => tokio::select! {
                _ = drain => None,
                lost = e.hold() => Some(lost),
            },
            None => {
                drain.await;
                None
            }
        }
    };
    let lost = match tokio::time::timeout(DRAIN_TIMEOUT, drained).await {
        Ok(lost) => lost,
        Err(_) => {
            // A reconcile stuck on a slow AWS or Kubernetes call must not keep the pod past its
            // termination grace period (then SIGKILL, without releasing the lease).
            tracing::warn!(
                timeout = ?DRAIN_TIMEOUT,
                "reconciles still in flight after the drain timeout: abandoning them"
            );
            tasks.abort_all();
            tasks.shutdown().await;
            None
        }
    };
    if let Some(lost) = lost {
        tasks.abort_all();
        tracing::error!(error = %lost, "lost the lease while finishing reconciles");
        tasks.shutdown().await;
        http_stop.cancel();
        let _ = finish_http(http).await;
        return Err(lost.into());
    }
    // Only now, with nothing in flight, may a standby take over: it acts on the release at
    // once.
    if let Some(elector) = &mut elector {
        release(elector).await;
    }
    http_stop.cancel();
    finish_http(http).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM to exit stays within Kubernetes' default 30 s termination grace period: reconciles in
/// flight get this long, then are abandoned (an AWS call cut off is answered by the next
/// leader's observe, as after a crash) …
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// … releasing the Lease this long (the fence closes before the first request; a release that
/// does not get through leaves the Lease to expire) …
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// … and the HTTP server this long to finish answering (a scraper's keep-alive connection
/// would hold a graceful stop open without limit).
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

async fn release(elector: &mut Elector) {
    if tokio::time::timeout(RELEASE_TIMEOUT, elector.release())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?RELEASE_TIMEOUT, "could not release the lease in time: it expires instead");
    }
}

async fn finish_http(
    mut http: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), StartError> {
    match tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut http).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => {
            http.abort();
            tracing::warn!(timeout = ?HTTP_STOP_TIMEOUT, "HTTP server still had open connections: closed them");
        }
    }
    Ok(())
}

/// The Lease candidacy when `--leader-election` is on.
fn leader_election(
    args: &RunArgs,
    client: &Client,
    metrics: &Arc<Metrics>,
) -> Result<Option<Elector>, StartError> {
    if !args.leader_election {
        return Ok(None);
    }
    let settings = LeaseSettings {
        name: args.leader_election_lease_name.clone(),
        // In a pod the client's default namespace is the service account's.
        namespace: args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        duration: args.leader_election_lease_duration,
        identity: leader::identity(args.instance.as_deref()),
    };
    tracing::info!(
        lease = %format!("{}/{}", settings.namespace, settings.name),
        identity = %settings.identity,
        duration = ?settings.duration,
        "leader election on: waiting for the lease"
    );
    Ok(Some(Elector::new(
        client.clone(),
        &settings,
        metrics.clone(),
    )?))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[tokio::test]
    async fn a_taken_metrics_port_fails_the_start_before_anything_else() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        // A kubeconfig that does not exist: reaching it would fail differently.
        let cli = Cli::try_parse_from([
            "kaws",
            "run",
            "--metrics-addr",
            &addr,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("run subcommand");
        };
        let err = run(*args).await.expect_err("the port is taken");
        assert!(matches!(err, StartError::Bind { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("failed to listen on {addr} for /metrics")),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
    }
}
