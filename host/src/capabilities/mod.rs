//! Imports: what a component may call on the host.
//!
//! Each capability has one shape: a context built per store (`SqlCtx`, `MessagingCtx`), a view
//! borrowing it (`Sql<'_>`), the generated `Host` trait implemented on the view, and one
//! `add_to_linker`.

use wasmtime::component::Linker;
use wasmtime::error::Context;

use crate::state::StoreState;

pub mod http;
pub mod logging;
pub mod memory;
pub mod messaging;
pub mod route;
pub mod sql;

/// Adds every platform capability to `linker`.
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    // A call that may wait (on the database, on a lock) hands back the guest's CPU turn first.
    sql::add_to_linker(linker, |state| {
        state.turn.release();
        sql::Sql::new(&mut state.sql, &state.metrics)
    })
    .context("cannot link platform:service/sql")?;
    messaging::add_to_linker(linker, |state| {
        state.turn.release();
        messaging::Messaging::new(&mut state.messaging, &mut state.sql)
    })
    .context("cannot link platform:service/messaging")?;
    route::add_to_linker(linker, |state| route::Route::new(&mut state.route))
        .context("cannot link platform:service/http-route")?;
    Ok(())
}
