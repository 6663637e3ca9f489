//! A generic wasmtime host for service components.
//!
//! It loads the components named in a manifest, serves HTTP to them (`wasi:http`), and gives each
//! one its own PostgreSQL database (`platform:service/sql`), one transaction per request.
//!
//! # Layout
//! - [`config`]: the manifest and its environment overrides, checked once at start.
//! - [`engine`]: the wasmtime `Engine` and `Linker`, built once per process.
//! - [`service`]: one loaded component: its compiled code (swappable), its route and its database.
//! - [`state`]: what one `Store` holds, created per request and dropped after it.
//! - [`capabilities`]: imports, where the guest calls the host (`sql`).
//! - [`triggers`]: exports, where the host calls the guest (the HTTP listener).
//! - [`migrations`]: each component's SQL migrations, applied at start under an advisory lock.
//! - [`problem`]: RFC 9457 problem responses the host itself sends.
//! - [`startup`]: `Host::build` binds and loads everything; `run_until_stopped` serves.
//!
//! # Lifetimes
//! The `Engine`, `Linker` and each component's `InstancePre` live as long as the process (or until a
//! component is swapped); database pools are per component and shared by `Arc`; a `Store`, its
//! `ResourceTable` and its transaction live for one request.

#![forbid(unsafe_code)]

mod bindings;
pub mod capabilities;
pub mod config;
pub mod engine;
pub mod migrations;
pub mod problem;
pub mod service;
pub mod startup;
pub mod state;
pub mod triggers;

pub use bindings::sql;
pub use startup::Host;
