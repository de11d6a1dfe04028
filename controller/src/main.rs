#![forbid(unsafe_code)]

use clap::Parser;
use kaws::{
    cli::{Cli, Command},
    core::registry,
    resources::KINDS,
};

/// Tokio workers unless `TOKIO_WORKER_THREADS` says otherwise. kaws mostly waits on AWS and
/// the API server (~0.06 core for 14,000 objects at the default resync), so one worker is
/// enough instead of one per core of the node; on 2 cores it cost 14 % less CPU per reconcile in
/// the quick bench and the same as two, within noise, in the full one (docs/performance.md).
/// Blocking work (DNS, files) still has tokio's blocking pool.
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
