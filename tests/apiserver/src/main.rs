//! `kaws-testserver`: runs the test API server until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use kaws_testserver::{Options, TestServer};

/// A Kubernetes API server stand-in for tests and the local sandbox.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Write a kubeconfig for this server to PATH.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Install every CRD in DIR at start (repeatable).
    #[arg(long = "crds", value_name = "DIR")]
    crds: Vec<PathBuf>,
    /// Watch events kept per resource before older resourceVersions expire.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 2)]
    bookmark_secs: u64,
    /// Latency in milliseconds added to every request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = TestServer::start_with(Options {
        addr: args.addr,
        kubeconfig_path: args.kubeconfig,
        crd_dirs: args.crds,
        watch_history: args.watch_history,
        bookmark_interval: std::time::Duration::from_secs(args.bookmark_secs.max(1)),
    })
    .await?;
    server
        .faults()
        .set_latency(std::time::Duration::from_millis(args.latency_ms));
    println!("listening on {}", server.url());
    println!("kubeconfig {}", server.kubeconfig_path().display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(server);
    Ok(())
}
