//! Checks a component's database role (see [`role`]), then applies its SQL migrations
//! (`V<n>__<name>.sql` in its `migrations` folder) at host start, with refinery, after the
//! host's own (the outbox and inbox tables, for a component that uses messaging:
//! `host/migrations/`, built into the binary, with a history of their own in
//! `platform_host_schema_history`).
//!
//! Several replicas may start at once: each takes a PostgreSQL advisory lock on the component's
//! database first, so one applies the migrations and the others then find them applied. A
//! migration that was changed after it was applied stops the host (refinery's checksum check).

use anyhow::Context;

use crate::capabilities::sql::role;
use crate::config::{ComponentConfig, postgres_tls};

/// Advisory lock key shared by every host migrating the same database ("migrate" in ASCII).
const MIGRATION_LOCK: i64 = 0x006d_6967_7261_7465;

/// The table refinery keeps the component's migrations' history in.
const HISTORY_TABLE: &str = "platform_schema_history";

/// The table refinery keeps the history of the host's own migrations in.
const HOST_HISTORY_TABLE: &str = "platform_host_schema_history";

/// The host's own migrations, in every database of a component that uses messaging: its name
/// (`V<n>__<name>`) and its SQL. A change to the host's tables is a new one at the end, and one
/// an older host can run beside (an index, a column it does not read, with a default): an older
/// host starts on a database a newer one migrated, so a release can be rolled back.
const HOST_MIGRATIONS: [(&str, &str); 2] = [
    (
        "V1__messaging_tables",
        include_str!("../migrations/V1__messaging_tables.sql"),
    ),
    (
        "V2__outbox_pending_by_id",
        include_str!("../migrations/V2__outbox_pending_by_id.sql"),
    ),
];

/// When migrations run: at start, or before new code is swapped in while the old code serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Host start: the host's outbox and inbox tables are made first (for a component that
    /// uses messaging), and another host's migrations are waited for up to two minutes.
    Start,
    /// The host's own tables exist already (they were made at start), and a migration that
    /// waits for a lock gives up after [`RELOAD_LOCK_TIMEOUT`] rather than hold up the traffic
    /// queued behind it.
    Reload,
}

/// How long a migration run before a swap may wait for a table lock.
const RELOAD_LOCK_TIMEOUT: &str = "2s";

/// How long a host waits for another host's migrations (the advisory lock) before it gives up:
/// at start, and before a swap.
const START_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
const RELOAD_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies `component`'s migrations, and creates the host's outbox and inbox tables when it
/// uses messaging; the versions applied now (empty when all were there).
pub async fn migrate(component: &ComponentConfig) -> anyhow::Result<Vec<String>> {
    migrate_when(component, When::Start).await
}

/// [`migrate`], at `when`.
pub async fn migrate_when(component: &ComponentConfig, when: When) -> anyhow::Result<Vec<String>> {
    let url = &component.database.url;
    let mut client = connect(component).await?;
    role::check_least_privilege(&client, component)
        .await
        .with_context(|| {
            format!(
                "checking the database role of component `{}` on {url}",
                component.name
            )
        })?;
    if component.migrations.is_none() && !component.uses_messaging() {
        return Ok(Vec::new());
    }
    // A role's own timeouts (the deployments set some, as a backstop for the component's
    // sessions) are not for its migrations, which may rightly take long.
    client
        .batch_execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .await
        .with_context(|| format!("cannot set the migration session's timeouts on {url}"))?;
    let most = if when == When::Start {
        START_LOCK_WAIT
    } else {
        RELOAD_LOCK_WAIT
    };
    take_lock(&client, most)
        .await
        .with_context(|| format!("cannot take the migration lock on {url}"))?;
    if when == When::Reload {
        client
            .batch_execute(&format!("SET lock_timeout = '{RELOAD_LOCK_TIMEOUT}'"))
            .await
            .with_context(|| format!("cannot set a lock timeout on {url}"))?;
    }
    let applied = migrate_locked(component, &mut client, when).await;
    // Also released when the connection closes below; unlocking explicitly is just tidier.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    applied
}

/// Takes the migration lock, waiting at most `most` for another host to let it go.
async fn take_lock(
    client: &tokio_postgres::Client,
    most: std::time::Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?
            .get(0);
        if taken {
            return Ok(());
        }
        if started.elapsed() >= most {
            anyhow::bail!(
                "another session has held it for {most:?}: another host's migrations are still \
                 running, or stuck (look for an advisory lock in pg_locks, and end its session)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn migrate_locked(
    component: &ComponentConfig,
    client: &mut tokio_postgres::Client,
    when: When,
) -> anyhow::Result<Vec<String>> {
    let url = &component.database.url;
    if component.uses_messaging() && when == When::Start {
        host_tables(client)
            .await
            .with_context(|| format!("cannot create the outbox and inbox tables in {url}"))?;
    }
    let Some(folder) = &component.migrations else {
        return Ok(Vec::new());
    };
    let migrations = refinery::load_sql_migrations(folder)
        .with_context(|| format!("cannot read migrations from {}", folder.display()))?;
    let mut runner = refinery::Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner
        .run_async(client)
        .await
        .with_context(|| format!("migrating {url} for component `{}` failed", component.name))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// Brings the host's own tables up to date (see [`HOST_MIGRATIONS`]).
async fn host_tables(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let migrations = HOST_MIGRATIONS
        .iter()
        .map(|(name, sql)| refinery::Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()?;
    // A newer host's migrations in the history are not missing here: they are the next release's
    // (see HOST_MIGRATIONS), and this host runs beside them.
    let mut runner = refinery::Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(false);
    runner.set_migration_table_name(HOST_HISTORY_TABLE);
    runner.run_async(client).await?;
    Ok(())
}

/// Connects to the component's database, explaining the usual reasons it fails.
async fn connect(component: &ComponentConfig) -> anyhow::Result<tokio_postgres::Client> {
    let url = &component.database.url;
    let (client, connection) = match url.pg_config().connect(url.tls().connector().clone()).await {
        Ok(connected) => connected,
        Err(err) => {
            let hint = match err.as_db_error().map(|db| db.code().code()) {
                Some("3D000") => format!(
                    "the database does not exist; create it with `createdb {}`",
                    url.database_name()
                ),
                Some("28000") => format!(
                    "the role does not exist, or no pg_hba.conf rule admits this connection (a \
                     server may take TLS only, and sslmode is {})",
                    url.tls().mode()
                ),
                Some(_) => "check the user and password in the URL".to_owned(),
                None => postgres_tls::explain(&err, url.tls().mode()).unwrap_or_else(|| {
                    "is PostgreSQL running? Start it (on Debian: `pg_ctlcluster 15 main start`) \
                     or point the URL elsewhere"
                        .to_owned()
                }),
            };
            anyhow::bail!(
                "cannot reach PostgreSQL at {url} for component `{}`: {err}; {hint}",
                component.name
            );
        }
    };
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "migration connection ended");
        }
    });
    Ok(client)
}
