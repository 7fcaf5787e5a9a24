//! `ritmo`: the command line of Ritmo GitOps. A thin adapter over `ritmo::workflow`: the
//! same steps the Lambda functions run, in this process.

mod args;
mod commands;
mod init;
mod ops;
mod render;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // People at a terminal keep credentials in profiles and SSO, which the functions'
    // environment-only configuration does not read.
    ritmo::aws::use_loader(|| {
        Box::pin(aws_config::defaults(aws_config::BehaviorVersion::latest()).load())
    });
    if matches!(cli.command, Command::Serve(_)) {
        serve::init_logging(cli.verbose);
    } else {
        init_tracing(cli.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    ritmo::telemetry::init_logging(ritmo::telemetry::LogFormat::Text, level);
}
