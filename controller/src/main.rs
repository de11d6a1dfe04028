#![forbid(unsafe_code)]

use clap::Parser;
use kaws::{
    cli::{Cli, Command},
    core::registry,
    resources::KINDS,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
