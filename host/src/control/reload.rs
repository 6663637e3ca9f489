//! Replacing a component's code while it serves: from its file (the watcher, the admin reload
//! call) or from bytes (an upload).
//!
//! 1. Read the bytes; code with the digest already serving changes nothing.
//! 2. Compile (through the cache) and check it against the world and the component's manifest
//!    entry, off the async threads.
//! 3. Apply the component's migrations folder again: new files only, so migrations must be
//!    forward, expand-style (the old code keeps serving on the new schema until the swap). A
//!    migration that waits on a lock gives up after two seconds rather than stall the traffic.
//! 4. Swap: units of work already running finish on the old code, new ones get the new code.
//!
//! A failure swaps nothing: the old code keeps serving, the failure is recorded on the service
//! (the admin list shows it) and logged once. (Migrations applied before a later one failed stay
//! applied, as at start; being expand-style, they do not disturb the old code.) Reloads of one
//! component never overlap. The checks are of the code's shape, not its behaviour: code that
//! links but fails every request is swapped in like any other, and swapped out the same way.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Runtime;
use crate::migrations;
use crate::service::{Code, Service};

/// Where new code comes from.
pub enum Source {
    /// The component's `.wasm` as configured, asked for by the admin API.
    File,
    /// The same file, after the watcher saw it change. Bytes the file already held before
    /// (a `touch`, a rebuild to the same output) change nothing, even when code uploaded since
    /// serves: only new contents of the file replace an upload.
    Watched,
    /// Bytes sent to the admin API.
    Upload(bytes::Bytes),
}

/// What a reload did.
pub enum Reloaded {
    /// The new code passed every check and now serves new units of work.
    Swapped(Arc<Code>),
    /// The code serving already has this digest.
    Unchanged(Arc<Code>),
}

/// Loads new code for `service` from `source` and swaps it in; why not, when nothing changed.
pub async fn reload(
    runtime: &Arc<Runtime>,
    service: &Service,
    source: Source,
) -> Result<Reloaded, String> {
    let _one_at_a_time = service.reloading().lock().await;
    let from_file = !matches!(source, Source::Upload(_));
    let watched = matches!(source, Source::Watched);
    let (wasm, origin) = match source {
        Source::File | Source::Watched => {
            let path = service.config.wasm.clone();
            match tokio::fs::read(&path).await {
                Ok(bytes) => (bytes::Bytes::from(bytes), path.display().to_string()),
                Err(err) => {
                    return Err(fail(
                        service,
                        path.display().to_string(),
                        format!("cannot read it: {err}"),
                    ));
                }
            }
        }
        Source::Upload(bytes) => (bytes, "upload".to_owned()),
    };
    let digest = crate::cache::digest(&wasm);
    let current = service.code();
    let seen_in_file = watched && service.file_digest().as_deref() == Some(digest.as_str());
    if digest == current.identity.sha256 || seen_in_file {
        return Ok(Reloaded::Unchanged(current));
    }
    let (compiling, name, subscribes, label) = (
        runtime.clone(),
        service.name().to_owned(),
        !service.subscriptions().is_empty(),
        origin.clone(),
    );
    let hashed = digest.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        Code::load(&compiling, &name, &wasm, hashed, label, subscribes)
    })
    .await;
    let code = match compiled {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => return Err(fail(service, origin, format!("{err:#}"))),
        Err(err) => {
            return Err(fail(
                service,
                origin,
                format!("the compile task failed: {err}"),
            ));
        }
    };
    // Connections are reset after every unit of work while the schema may be changing, until the
    // database has been looked at again.
    let database = &service.reach.database;
    database.schema_changing();
    let migrated = migrations::migrate_when(&service.config, migrations::When::Reload).await;
    database.schema_changed().await;
    match migrated {
        Ok(applied) if !applied.is_empty() => {
            tracing::info!(
                component = %service.name(),
                ?applied,
                "migrations applied before the swap"
            );
        }
        Ok(_) => {}
        Err(err) => return Err(fail(service, origin, format!("{err:#}"))),
    }
    let code = service.swap(code);
    if from_file {
        service.set_file_digest(digest);
    }
    tracing::info!(
        component = %service.name(),
        source = %code.identity.source,
        sha256 = %code.identity.sha256,
        version = code.identity.version,
        from_cache = code.identity.from_cache,
        "component swapped; new units of work run the new code"
    );
    Ok(Reloaded::Swapped(code))
}

/// Records and logs a failed load; the reason.
fn fail(service: &Service, source: String, reason: String) -> String {
    tracing::warn!(
        component = %service.name(),
        %source,
        %reason,
        "new code refused; the old code keeps serving"
    );
    service.failed_load(source, reason.clone());
    reason
}

/// Whether `path` is the `.wasm` of `service`, comparing as the watcher sees paths.
pub fn is_wasm_of(service: &Service, path: &Path) -> bool {
    let configured = &service.config.wasm;
    path == configured.as_path()
        || (path.file_name() == configured.file_name()
            && path.parent().and_then(|dir| dir.canonicalize().ok())
                == configured.parent().and_then(|dir| dir.canonicalize().ok()))
}
