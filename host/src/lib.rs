//! A generic wasmtime host for service components.
//!
//! It loads the components named in a manifest, serves HTTP to them (`wasi:http`), and gives each
//! one its own PostgreSQL database (`platform:service/sql`), one transaction per request.
//!
//! # Layout
//! - [`config`]: the manifest and its environment overrides, checked once at start.
//! - [`engine`]: the wasmtime `Engine` and `Linker`, built once per process.
//! - [`cache`]: compiled components kept on disk, keyed by the `.wasm`'s digest and the engine.
//! - [`service`]: one loaded component: its compiled code (swappable), its route and its database.
//! - [`registry`]: what the host runs, reachable from everywhere after start.
//! - [`supervisor`]: the background tasks and the phases they stop in.
//! - [`control`]: the admin API, hot swap, the file watcher, dead-letter replay.
//! - [`state`]: what one `Store` holds, created per request and dropped after it.
//! - [`turns`]: fair turns on the CPU for guests, decided at epoch ticks.
//! - [`capabilities`]: imports, where the guest calls the host (`sql`, `messaging`,
//!   `http-route`), and the one place they are composed: per component, per store, the linker.
//! - [`triggers`]: exports, where the host calls the guest (the HTTP listener, the consumer),
//!   each an adapter of [`service::unit_of_work`].
//! - [`migrations`]: each component's SQL migrations, applied at start under an advisory lock.
//! - [`telemetry`]: logs, OpenTelemetry traces (OTLP, W3C context across HTTP and AMQP),
//!   Prometheus metrics.
//! - [`cli`]: the `host` command's other subcommands: `probe` (liveness and readiness for
//!   containers), `check` (a manifest validated offline), `admin` (the admin API).
//! - [`problem`]: RFC 9457 problem responses the host itself sends.
//! - [`rfc3339`]: times in the admin API's JSON.
//! - [`startup`]: `Host::build` binds and loads everything; `run_until_stopped` serves.
//!
//! # Lifetimes
//! The `Engine`, `Linker` and each component's `InstancePre` live as long as the process (or until
//! a component is swapped); database pools are per component and shared by `Arc`; a `Store`, its
//! `ResourceTable` and its transaction live for one request.

// One function may load precompiled code, which wasmtime marks unsafe: see `cache::deserialize`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod bindings;
pub mod cache;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod migrations;
pub mod problem;
pub mod registry;
pub mod rfc3339;
pub mod service;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod triggers;
pub mod turns;

pub use bindings::sql;
pub use startup::Host;
