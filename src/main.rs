//! `ipledger`: one binary for every long-running part and the operator commands.
use std::io::IsTerminal;

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
    /// Run the node agent: serve the CNI plugin on a unix socket and allocate addresses.
    Agent(ipledger::agent::AgentArgs),
    /// Run the controller: leader-elected pool status, leak GC and deletion guards.
    Controller(ipledger::controller::ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML (the content of `crds/`).
    Crds,
    /// Try ipledger on this machine: an API emulator, pools and an agent, until Ctrl-C.
    #[cfg(feature = "emulator")]
    Sandbox {
        /// Directory for the kubeconfig, the agent socket and the CNI network config.
        #[arg(long, default_value = "ipledger-sandbox")]
        dir: std::path::PathBuf,
        /// Instead of serving until Ctrl-C, play N pods on two nodes through the plugin
        /// (attach, detach, leak and GC), print the pools after each phase and exit.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        demo: Option<u32>,
    },
    /// Measure: simulated nodes attach and detach pods through the plugin, against an
    /// emulator of its own or a cluster; verdicts on duplicates and leaks (exit 1 when one
    /// fails).
    #[cfg(feature = "emulator")]
    Bench(Box<ipledger::bench::BenchArgs>),
    /// The agents of several simulated nodes in one process (for `bench --nodes-per-process`).
    #[cfg(feature = "emulator")]
    #[command(hide = true)]
    BenchAgents(ipledger::bench::parts::HostArgs),
    /// Print the version of this build.
    Version,
    /// Serve an emulated Kubernetes API (for tests and trials) until SIGINT/SIGTERM.
    #[cfg(feature = "emulator")]
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
        /// Where to write a kubeconfig for kubectl and kube-rs.
        #[arg(long)]
        kubeconfig: std::path::PathBuf,
        /// How long each write waits before it is applied, as etcd's durable write delays
        /// a real server's (about 3ms); a humantime duration (`3ms`, `500us`, `0.5ms`).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        write_latency: std::time::Duration,
        /// How long each get and list waits before it is answered (a real server's: about
        /// 0.5ms); watches never wait.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        read_latency: std::time::Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IPLEDGER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a pipe (a container log, journald) would
        // store them as escape garbage around every level and field.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Agent(args) => ipledger::agent::run(args, ipledger::agent::termination()).await?,
        Command::Controller(args) => {
            ipledger::controller::run(args, ipledger::agent::termination()).await?
        }
        Command::Crds => print!("{}", ipledger::api::crds_yaml()?),
        #[cfg(feature = "emulator")]
        Command::Sandbox { dir, demo } => match demo {
            None => ipledger::sandbox::run(&dir, ipledger::agent::termination()).await?,
            Some(pods) => ipledger::sandbox::demo::run(&dir, pods).await?,
        },
        #[cfg(feature = "emulator")]
        Command::Bench(args) => {
            // 0: the verdicts passed; 1: one failed; 2: the run could not be made.
            match ipledger::bench::run(*args).await {
                Ok(report) => {
                    print!("{}", report.summary());
                    if !report.passed {
                        return Ok(std::process::ExitCode::from(1));
                    }
                }
                Err(error) => {
                    eprintln!("Error: {error}");
                    return Ok(std::process::ExitCode::from(2));
                }
            }
        }
        #[cfg(feature = "emulator")]
        Command::BenchAgents(args) => ipledger::bench::parts::host(args).await?,
        Command::Version => println!("ipledger {}", env!("CARGO_PKG_VERSION")),
        #[cfg(feature = "emulator")]
        Command::Emulator {
            listen,
            kubeconfig,
            write_latency,
            read_latency,
        } => {
            let config = kube_emulator::Config {
                listen,
                write_latency,
                read_latency,
                ..Default::default()
            };
            kube_emulator::run(config, &kubeconfig).await?
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
