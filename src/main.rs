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
    if let Err(err) = telemetry::init(cli.settings.log_format, &cli.settings.log_level) {
        eprintln!("certus-assurance: {err:#}");
        return std::process::ExitCode::from(2);
    }
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
            }
        }
    });
    // A clone blocked in a socket read holds a blocking thread until libgit2's stall timeout;
    // its scan is already recorded, so do not wait for it to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = ?err, "certus-assurance stopped with an error");
            eprintln!("certus-assurance: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
