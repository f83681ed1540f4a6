//! `ipledger-cni`, installed as `/opt/cni/bin/ipledger`: the CNI IPAM plugin.
//!
//! Reads the CNI environment and stdin, lets `ipledger::cni` do the work, prints the
//! result or error on stdout and exits; logs go to stderr (`IPLEDGER_CNI_LOG`, default
//! `warn`).
use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("IPLEDGER_CNI_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let outcome = ipledger::cni::run(&|name| std::env::var_os(name), &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::error!(%error, "cannot write the result to stdout");
        return ExitCode::FAILURE;
    }
    ExitCode::from(outcome.exit_code)
}
