//! The `host` command: loads the components of a manifest and serves them until SIGINT or
//! SIGTERM. On bad configuration it prints one line saying what to fix and exits with status 2.
//!
//! `host probe` asks a host on this machine whether it is ready (`GET /health` on loopback, at
//! the port the same configuration listens on) and exits 0 if so: a container health check that
//! needs no shell and no HTTP client in the image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use host::Host;
use host::config::{Config, ProcessEnv};
use host::telemetry;

/// Runs WebAssembly service components: HTTP, PostgreSQL and messaging for each.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The manifest naming the components to load.
    #[arg(long, short, env = "HOST_CONFIG", default_value = "host.toml")]
    config: PathBuf,
    /// Log as JSON lines instead of text: one object per line with `timestamp`, `level`,
    /// `target`, the event's fields (a guest's lines carry `component`, `trace_id` and
    /// `span_id`) and the current `span`.
    /// From the environment, `HOST_LOG_JSON=1` (or `true`, `yes`, `on`) turns it on; `0`,
    /// `false`, `no`, `off` or empty leave it off.
    #[arg(long, env = "HOST_LOG_JSON", value_parser = clap::builder::FalseyValueParser::new())]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the manifest's components (what `host` alone does).
    Serve,
    /// Exits 0 when the host serving this configuration on this machine is ready (its
    /// `GET /health` answers 200), 1 otherwise: for container health checks.
    Probe {
        /// Ask this URL instead of `/health` at the configured port on loopback.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    keep_backtraces_to_panics();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Probe { url, timeout }) = &cli.command {
        return runtime.block_on(probe(
            &cli.config,
            url.as_deref(),
            Duration::from_secs(*timeout),
        ));
    }
    runtime.block_on(async {
        // The OTLP exporter runs on the runtime, so telemetry starts inside it.
        let telemetry = match telemetry::init(cli.log_json) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(2);
            }
        };
        let config = match Config::load(&cli.config, &ProcessEnv) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(2);
            }
        };
        let served = serve(config).await;
        telemetry.shutdown().await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `host probe`: 0 when `/health` answers 200 in time, 1 otherwise (a container health check
/// knows no other codes).
async fn probe(config: &std::path::Path, url: Option<&str>, timeout: Duration) -> ExitCode {
    let url = match url {
        Some(url) => url.to_owned(),
        None => match Config::load(config, &ProcessEnv) {
            Ok(config) => host::probe::health_url(config.http.listen),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match tokio::time::timeout(timeout, host::probe::status_of(&url)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("not ready: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            eprintln!("not ready: {url}: {err:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("not ready: {url} did not answer within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let host = Host::build(config).await?;
    host.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}

/// `RUST_BACKTRACE=1` asks for panic backtraces, but it also makes every `anyhow` error capture
/// one, and the request path makes and drops errors as a matter of course (a guest's failed
/// statement, a closed body). Unless `RUST_LIB_BACKTRACE` says otherwise, errors do not capture
/// backtraces; panics still print theirs.
#[allow(unsafe_code)]
fn keep_backtraces_to_panics() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists that could read
        // the environment at the same time.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}
