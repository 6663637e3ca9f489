//! The `host` command: loads the components of a manifest and serves them until SIGINT or
//! SIGTERM. On bad configuration it prints one line saying what to fix and exits with status 2.
//!
//! Its other subcommands (see [`host::cli`]): `probe` asks a host on this machine whether it is
//! ready or alive (a container health check that needs no shell and no HTTP client in the
//! image), `check` validates a manifest and its components offline, `admin` calls a running
//! host's admin API, and `completions` prints a shell's completion script.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use host::Host;
use host::cli::admin::{self, Admin};
use host::cli::probe::{self, Check};
use host::config::{Config, ProcessEnv};
use host::telemetry;

const EXAMPLES: &str = "\
Examples:
  host --config host.toml                  serve the manifest's components
  host check --config host.toml            validate a manifest and its components offline (CI)
  host probe --live                        is the host on this machine alive? (exit 0 or 1)
  host admin components                    what a running host serves (HOST_ADMIN_TOKEN if set)
  host admin swap orders orders.wasm       swap a component's code with no failed request
  host completions bash > /etc/bash_completion.d/host";

/// Runs WebAssembly service components: HTTP, PostgreSQL and messaging for each.
#[derive(Debug, Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    /// The manifest naming the components to load.
    #[arg(
        long,
        short,
        global = true,
        env = "HOST_CONFIG",
        default_value = "host.toml"
    )]
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
    /// `GET /health` answers 200), or with --live alive (`GET /health/live`), 1 otherwise: for
    /// container health checks.
    #[command(after_help = "\
Examples:
  host probe                      ready: every component's database answers
  host probe --live               alive: the process serves (what restarts a container)
  host probe --url http://10.0.0.7:8000/health")]
    Probe {
        /// Ask liveness (`/health/live`): the process serves, whatever its database does.
        #[arg(long)]
        live: bool,
        /// Ask this URL instead of the configured port on loopback.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Validates the manifest and every component it names, offline (no database, no broker):
    /// the settings, routes, topics and limits; each .wasm against the host's world; each
    /// migrations folder's file names. Exits 0 when a host would accept it, 2 otherwise.
    #[command(after_help = "\
Examples:
  host check --config host.toml
  # A container manifest, with its image's paths pointed at this checkout (a relative
  # path is taken from the manifest's folder, so these are absolute):
  HOST_COMPONENTS__ORDERS__WASM=$PWD/target/wasm32-wasip2/component/orders.wasm \\
  HOST_COMPONENTS__ORDERS__MIGRATIONS=$PWD/components/orders/migrations \\
    host check --config deploy/manifests/orders.toml")]
    Check,
    /// Calls a running host's admin API: lists components, swaps code, reads and replays
    /// dead letters. The token comes from HOST_ADMIN_TOKEN.
    #[command(after_help = "\
Examples:
  host admin components
  host admin components orders --json
  host admin swap orders target/wasm32-wasip2/component/orders.wasm
  host admin dead-letters invoices --topic orders.created --limit 10
  host admin replay invoices --topic orders.created
  HOST_ADMIN_URL=http://10.0.0.7:9000 HOST_ADMIN_TOKEN=... host admin components")]
    Admin {
        /// The admin API's address.
        #[arg(long, env = "HOST_ADMIN_URL", default_value = "http://127.0.0.1:9000")]
        url: String,
        /// The bearer token the host was given.
        #[arg(long, env = "HOST_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON as it came, instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        call: AdminCall,
    },
    /// Prints the completion script of a shell (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "\
Examples:
  host completions bash > ~/.local/share/bash-completion/completions/host
  host completions zsh > \"${fpath[1]}/_host\"")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum AdminCall {
    /// Every component (or the one named): route, the code serving it, units of work in
    /// flight, the last failed load.
    Components { name: Option<String> },
    /// Replaces a component's code with a .wasm file, once it is checked and its migrations
    /// ran; requests in flight finish on the old code.
    Swap { name: String, wasm: PathBuf },
    /// Loads the component's .wasm file again, from the path in its manifest.
    Reload { name: String },
    /// Lists a subscription's dead letters, leaving them in place.
    DeadLetters {
        name: String,
        /// The subscription's topic; needed when the component has more than one.
        #[arg(long)]
        topic: Option<String>,
        /// How many to list (at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Puts one dead letter (--id) or all of them back on the subscription's queue.
    Replay {
        name: String,
        #[arg(long)]
        topic: Option<String>,
        /// The event id of the one to replay; without it, all are.
        #[arg(long)]
        id: Option<String>,
    },
    /// Lists outbox rows the relay set aside as unsendable, and why.
    Unsendable {
        name: String,
        #[arg(long)]
        limit: Option<usize>,
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
    match &cli.command {
        Some(Command::Probe { live, url, timeout }) => {
            let check = if *live { Check::Live } else { Check::Ready };
            let timeout = Duration::from_secs(*timeout);
            return runtime.block_on(run_probe(&cli.config, check, url.as_deref(), timeout));
        }
        Some(Command::Check) => return run_check(&cli.config),
        Some(Command::Admin {
            url,
            token,
            json,
            call,
        }) => {
            let admin = Admin::new(url, token.clone());
            return runtime.block_on(run_admin(&admin, call, *json));
        }
        Some(Command::Completions { shell }) => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "host", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Serve) | None => {}
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

/// `host probe`: 0 when the host answers 200 in time, 1 otherwise (a container health check
/// knows no other codes).
async fn run_probe(config: &Path, check: Check, url: Option<&str>, timeout: Duration) -> ExitCode {
    let url = match url {
        Some(url) => url.to_owned(),
        None => match Config::load(config, &ProcessEnv) {
            Ok(config) => probe::url(config.http.listen, check),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match probe::probe(&url, timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            let state = if check == Check::Live {
                "not alive"
            } else {
                "not ready"
            };
            eprintln!("{state}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `host check`: what was checked on stdout and 0, or what to fix on stderr and 2.
fn run_check(config: &Path) -> ExitCode {
    match host::cli::check::check(config, &ProcessEnv) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("{}: a host would accept it", config.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `host admin`: the answer on stdout and 0, or the refusal on stderr and 1.
async fn run_admin(admin: &Admin, call: &AdminCall, json: bool) -> ExitCode {
    let answered = match call {
        AdminCall::Components { name: None } => admin.components().await,
        AdminCall::Components { name: Some(name) } => admin.component(name).await,
        AdminCall::Swap { name, wasm } => match std::fs::read(wasm) {
            Ok(bytes) => admin.swap(name, bytes.into()).await,
            Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", wasm.display())),
        },
        AdminCall::Reload { name } => admin.reload(name).await,
        AdminCall::DeadLetters { name, topic, limit } => {
            admin.dead_letters(name, topic.as_deref(), *limit).await
        }
        AdminCall::Replay { name, topic, id } => {
            admin.replay(name, topic.as_deref(), id.as_deref()).await
        }
        AdminCall::Unsendable { name, limit } => admin.unsendable(name, *limit).await,
    };
    match answered {
        Ok(value) => {
            if !json && matches!(call, AdminCall::Components { name: None }) {
                print!("{}", admin::components_table(&value));
            } else {
                let text =
                    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
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
