//! `eni-ipam-operator`: wiring only. Parses flags, sets up logging and the
//! runtime, and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use eni_ipam_operator::cli::{Cli, Command, SimulateArgs};
use eni_ipam_operator::simulate;
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// Exit code for bad flags and impossible settings.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return usage_error(first_line(&e.render().to_string())),
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => simulate_command(&args),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn usage_error(message: String) -> ExitCode {
    eprintln!("error: {message} (see --help)");
    ExitCode::from(USAGE)
}

fn simulate_command(args: &SimulateArgs) -> ExitCode {
    if args.endpoint.is_some() {
        return usage_error(
            "--endpoint needs the AWS / Alibaba wire clients, which are not built yet; leave it out to use the built-in fake cloud"
                .into(),
        );
    }
    let config = args.config();
    if let Err(e) = config.validate() {
        return usage_error(e.to_string());
    }
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_all();
    if !args.real_time {
        runtime.start_paused(true);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(config.nodes))
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} nodes ready")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("simulating {} on {}", config.nodes, config.cloud));
    let result = runtime.block_on(simulate::run(&config, !args.real_time, &|ready| bar.set_position(ready)));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: simulation failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write the JSON report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
