#![forbid(unsafe_code)]

use clap::Parser;
use kaws::{
    cli::{Cli, Command},
    core::registry,
    resources::KINDS,
};

/// Tokio workers unless `TOKIO_WORKER_THREADS` says otherwise. kaws mostly waits on AWS and
/// the API server: with a worker per core, every wake-up handed a task between threads, and
/// one worker took 14 % less CPU per reconcile on 2 cores (docs/performance.md). Blocking work
/// (DNS, files) still has tokio's blocking pool.
const WORKER_THREADS: usize = 1;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Tokio reads the variable only when no count is set here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(WORKER_THREADS);
    }
    runtime.enable_all().build()?.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => {
            let kinds = registry::select(KINDS, &args.kinds);
            match args.out_dir {
                Some(dir) => {
                    for kind in kinds {
                        let yaml = kaws::crds::to_yaml(&kaws::crds::crd(kind))?;
                        std::fs::write(dir.join(kaws::crds::file_name(kind)), yaml)?;
                    }
                }
                None => print!("{}", kaws::crds::all_yaml(&kinds)?),
            }
        }
        Command::Kinds => print!("{}", registry::chart_data(KINDS)),
        Command::Run(args) => {
            kaws::run::init_logging(args.log_format);
            kaws::run::run(*args).await?;
        }
    }
    Ok(())
}
