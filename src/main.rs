//! `ipledger`: one binary for every long-running part and the operator commands.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ipledger",
    version,
    about = "IP address management for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (the content of `crds/`).
    Crds,
    /// Print the version of this build.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", ipledger::api::crds_yaml()?),
        Command::Version => println!("ipledger {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
