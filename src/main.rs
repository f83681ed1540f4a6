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
    /// Serve an emulated Kubernetes API (for tests and trials) until SIGINT/SIGTERM.
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
        /// Where to write a kubeconfig for kubectl and kube-rs.
        #[arg(long)]
        kubeconfig: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", ipledger::api::crds_yaml()?),
        Command::Version => println!("ipledger {}", env!("CARGO_PKG_VERSION")),
        Command::Emulator { listen, kubeconfig } => tokio::runtime::Runtime::new()?
            .block_on(ipledger::emulator::run(listen, &kubeconfig))?,
    }
    Ok(())
}
