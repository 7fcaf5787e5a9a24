//! `ritmo`: the command line of Ritmo GitOps. A thin adapter over `ritmo::workflow`: the
//! same steps the Lambda functions run, in this process.

mod args;
mod commands;
mod init;
mod ops;
mod progress;
mod render;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let output = cli.output;
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
        // `ritmo get jobs | head -1`: the reader has what it wanted.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            render::error(output, &format!("{error:#}"));
            ExitCode::from(2)
        }
    }
}

/// clap's own errors (a missing or malformed argument) as JSON when the command line asks
/// for JSON; help, version and text errors as clap prints them.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !asks_for_json(std::env::args().skip(1)) {
        error.exit();
    }
    let text = error.render().to_string();
    // clap's text without its usage and "--help" hint, on one line.
    let message: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let message = message.join(" ");
    render::error(args::Output::Json, message.trim_start_matches("error: "));
    ExitCode::from(2)
}

/// Whether the raw arguments say `-o json` in any of clap's spellings.
fn asks_for_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().any(|(i, arg)| {
        matches!(arg.as_str(), "-ojson" | "--output=json" | "-o=json")
            || (matches!(arg.as_str(), "-o" | "--output")
                && args.get(i + 1).is_some_and(|next| next == "json"))
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    ritmo::telemetry::init_logging(ritmo::telemetry::LogFormat::Text, level);
}
