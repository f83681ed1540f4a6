//! `ipledger-cni`, installed as `/opt/cni/bin/ipledger`: the CNI IPAM plugin.
//!
//! Reads the CNI environment and stdin, lets the library do the work, prints the
//! result or error on stdout and exits. Logs go to stderr only, at the level named by
//! `IPLEDGER_CNI_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default `warn`).
use std::io::Write;
use std::process::ExitCode;

use tracing::Level;

fn main() -> ExitCode {
    let level = std::env::var("IPLEDGER_CNI_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::WARN);
    // Plain text: runtimes copy plugin stderr into their own logs.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .init();
    let outcome = ipledger_cni::run(&|name| std::env::var_os(name), &mut std::io::stdin().lock());
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
