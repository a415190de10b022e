use clap::Parser;

use certus_assurance::cli::{explain_cli_error, Cli, Command};
use certus_assurance::config::OtlpExport;
use certus_assurance::{telemetry, App};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => explain_cli_error(err).exit(),
    };
    if matches!(cli.command, Some(Command::HashToken)) {
        return match certus_assurance::cli::hash_token(std::io::stdin().lock()) {
            Ok(hex) => {
                println!("{hex}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("certus-assurance: {err:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Osv(command)) = &cli.command {
        // Before the configuration: the sync creates the directory the service requires.
        return certus_assurance::cli::run_osv(command, &cli.config);
    }
    if let Some(Command::Baseline(args)) = &cli.command {
        return match certus_assurance::cli::run_baseline(args) {
            Ok(code) => std::process::ExitCode::from(code),
            Err(err) => {
                eprintln!("certus-assurance: {err:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let log_format = cli.config.telemetry.log_format;
    let log_level = cli.config.telemetry.log_level.clone();
    let config = match cli.config.validate() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("certus-assurance: invalid configuration: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let is_scan = matches!(cli.command, Some(Command::Scan(_)));
    let traces = match OtlpExport::from_env() {
        Ok(t) => t,
        Err(err) => {
            eprintln!("certus-assurance: invalid configuration: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("certus-assurance: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let telemetry = if is_scan {
        // The scan command's standard output is its result; its logs go to standard error.
        let level = if log_level == "info" {
            "warn"
        } else {
            log_level.as_str()
        };
        telemetry::init_stderr(level).map(|()| None)
    } else {
        // Inside the runtime: the gRPC exporter keeps its connection on it.
        runtime
            .block_on(async { telemetry::init_with_traces(log_format, &log_level, traces) })
            .map(Some)
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(err) => {
            eprintln!("certus-assurance: {err:#}");
            return std::process::ExitCode::from(2);
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
            Command::HashToken | Command::Baseline(_) | Command::Osv(_) => {
                unreachable!("answered before the configuration is read")
            }
        }
    });
    // A file a setting names that cannot be used is bad configuration, reported as such below.
    let invalid_config = result.as_ref().is_err_and(|err| {
        err.downcast_ref::<certus_assurance::app::InvalidConfig>()
            .is_some()
    });
    if let Err(err) = &result {
        if !invalid_config {
            tracing::error!(error = ?err, "certus-assurance stopped with an error");
        }
    }
    // Last: export the spans still buffered while the runtime still runs.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    // A clone blocked in a socket read holds a blocking thread until libgit2's stall timeout;
    // its scan is already recorded, so do not wait for it to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(err) => {
            eprintln!("certus-assurance: {err:#}");
            std::process::ExitCode::from(if is_scan || invalid_config { 2 } else { 1 })
        }
    }
}
