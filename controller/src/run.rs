//! `kaws run`: connects to Kubernetes and AWS, starts one controller per kind and the HTTP
//! server, and stops all of them cleanly on SIGTERM.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, Config, config::Kubeconfig};
use tokio_util::sync::CancellationToken;

use crate::{
    aws::{AwsSettings, load_sdk_config},
    cli::{KindName, LogFormat, RunArgs},
    core::{
        backoff::Backoffs,
        driver::Shared,
        events::Events,
        runner::{Readiness, RunOptions, run_kind},
    },
    metrics::Metrics,
    resources::{
        bucket::{Bucket, aws::S3},
        dbinstance::{DBInstance, aws::Rds},
        function::{Function, aws::Lambda},
        table::{Table, aws::DynamoDb},
    },
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
    #[error("the kube-system namespace has no uid; set --cluster-id")]
    NoClusterId,
    #[error("failed to serve HTTP: {0}")]
    Http(#[from] std::io::Error),
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        client: client.clone(),
        cluster_id: cluster_id.clone(),
        default_region: default_region.clone(),
        default_deletion_policy: args.default_deletion_policy.into(),
        resync_period: args.resync_period,
        metrics: metrics.clone(),
        events: Events::new(client.clone(), args.instance.clone()),
        backoffs: Backoffs::new(Duration::from_secs(2), Duration::from_secs(300)),
    });
    let kinds = if args.kinds.is_empty() {
        KindName::all()
    } else {
        args.kinds.clone()
    };
    tracing::info!(?kinds, %cluster_id, region = %default_region, "starting kaws");

    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    let options = RunOptions {
        namespaces: args.watch_namespaces.clone(),
        concurrency: args.concurrency,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for kind in kinds {
        match kind {
            KindName::Bucket => {
                tasks.spawn(run_kind::<Bucket, S3>(
                    shared.clone(),
                    S3::new(sdk.clone(), metrics.clone()),
                    options.clone(),
                    readiness.clone(),
                    shutdown.clone(),
                ));
            }
            KindName::DBInstance => {
                tasks.spawn(run_kind::<DBInstance, Rds>(
                    shared.clone(),
                    Rds::new(sdk.clone(), metrics.clone(), client.clone()),
                    options.clone(),
                    readiness.clone(),
                    shutdown.clone(),
                ));
            }
            KindName::Function => {
                tasks.spawn(run_kind::<Function, Lambda>(
                    shared.clone(),
                    Lambda::new(sdk.clone(), metrics.clone(), client.clone()),
                    options.clone(),
                    readiness.clone(),
                    shutdown.clone(),
                ));
            }
            KindName::Table => {
                tasks.spawn(run_kind::<Table, DynamoDb>(
                    shared.clone(),
                    DynamoDb::new(sdk.clone(), metrics.clone()),
                    options.clone(),
                    readiness.clone(),
                    shutdown.clone(),
                ));
            }
        }
    }
    let http = tokio::spawn(crate::http::serve(
        args.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: finishing reconciles in flight");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    match http.await {
        Ok(result) => result?,
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}
