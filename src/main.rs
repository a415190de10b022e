use clap::Parser;

use certus_assurance::config::{explain_cli_error, Cli, Command};
use certus_assurance::{telemetry, App, Config};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => explain_cli_error(err).exit(),
    };
    let config = match Config::from_settings(&cli.settings) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("certus-assurance: invalid configuration: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let logs = if matches!(cli.command, Some(Command::Scan(_))) {
        // The scan command's standard output is its result; its logs go to standard error.
        let level = if cli.settings.log_level == "info" {
            "warn"
        } else {
            cli.settings.log_level.as_str()
        };
        telemetry::init_stderr(level)
    } else {
        telemetry::init(cli.settings.log_format, &cli.settings.log_level)
    };
    if let Err(err) = logs {
        eprintln!("certus-assurance: {err:#}");
        return std::process::ExitCode::from(2);
    }
    let is_scan = matches!(cli.command, Some(Command::Scan(_)));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("certus-assurance: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let app = App::build(config).await?;
                app.run_until_stopped(certus_assurance::shutdown::signal())
                    .await
                    .map(|()| 0)
            }
            Command::Scan(args) => certus_assurance::cli::run_scan(&args, &config).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(err) if is_scan => {
            eprintln!("certus-assurance: {err:#}");
            std::process::ExitCode::from(2)
        }
        Err(err) => {
            tracing::error!(error = ?err, "certus-assurance stopped with an error");
            eprintln!("certus-assurance: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
