//! Imports: what a component may call on the host.
//!
//! Each capability has one shape: a context built per store (`SqlCtx`, `MessagingCtx`), a view
//! borrowing it (`Sql<'_>`), the generated `Host` trait implemented on the view, and one
//! `add_to_linker`. [`crate::state`] composes them: each one's context in the store's data, and
//! its `add_to_linker` with the view of that data.

pub mod http;
pub mod logging;
pub mod memory;
pub mod messaging;
pub mod route;
pub mod sql;
