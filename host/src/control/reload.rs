//! Replacing a component's code while it serves: from its file (the watcher, the admin reload
//! call) or from bytes (an upload).
//!
//! 1. Read the bytes; code with the digest already serving changes nothing.
//! 2. Compile (through the cache) and check it against the world and the component's manifest
//!    entry, off the async threads.
//! 3. Apply the component's migrations folder again: new files only, so migrations must be
//!    forward, expand-style (the old code keeps serving on the new schema until the swap).
//! 4. Swap: units of work already running finish on the old code, new ones get the new code.
//!
//! Any failure changes nothing: the old code keeps serving, the failure is recorded on the
//! service (the admin list shows it) and logged once. Reloads of one component never overlap.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Runtime;
use crate::migrations;
use crate::service::{Code, Service};

/// Where new code comes from.
pub enum Source {
    /// The component's `.wasm` as configured.
    File,
    /// Bytes sent to the admin API.
    Upload(bytes::Bytes),
}

/// What a reload did.
pub enum Reloaded {
    Swapped(Arc<Code>),
    /// The code serving already has this digest.
    Unchanged(Arc<Code>),
}

/// Loads new code for `service` from `source` and swaps it in; why not, when nothing changed.
pub async fn reload(runtime: &Arc<Runtime>, service: &Service, source: Source) -> Result<Reloaded, String> {
    let _one_at_a_time = service.reloading.lock().await;
    let (wasm, origin) = match source {
        Source::File => {
            let path = service.config.wasm.clone();
            match tokio::fs::read(&path).await {
                Ok(bytes) => (bytes::Bytes::from(bytes), path.display().to_string()),
                Err(err) => return Err(fail(service, path.display().to_string(), format!("cannot read it: {err}"))),
            }
        }
        Source::Upload(bytes) => (bytes, "upload".to_owned()),
    };
    let current = service.code();
    if crate::cache::digest(&wasm) == current.identity.sha256 {
        return Ok(Reloaded::Unchanged(current));
    }
    let (compiling, name, subscribes, label) =
        (runtime.clone(), service.name.clone(), !service.subscriptions.is_empty(), origin.clone());
    let compiled = tokio::task::spawn_blocking(move || Code::load(&compiling, &name, &wasm, label, subscribes)).await;
    let code = match compiled {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => return Err(fail(service, origin, format!("{err:#}"))),
        Err(err) => return Err(fail(service, origin, format!("the compile task failed: {err}"))),
    };
    match migrations::migrate(&service.config).await {
        Ok(applied) if !applied.is_empty() => {
            tracing::info!(component = %service.name, ?applied, "migrations applied before the swap");
        }
        Ok(_) => {}
        Err(err) => return Err(fail(service, origin, format!("{err:#}"))),
    }
    let code = service.swap(code);
    tracing::info!(
        component = %service.name,
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
    tracing::warn!(component = %service.name, %source, %reason, "new code refused; the old code keeps serving");
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
