//! Watches each component's `.wasm` and reloads the component when the file changes.
//!
//! The folder holding the file is watched, not the file itself, so every way of replacing it
//! works: written in place, renamed over, or removed and hard-linked anew (as cargo does).
//! Events are debounced ([`DEBOUNCE`]), so a file written in several steps loads once it is
//! whole; a half-written one that slips through fails to load and changes nothing, and the
//! write that completes it loads it.
//!
//! Started by the host when `admin.watch` is on; runs in the background phase.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, DebouncedEventKind, new_debouncer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::reload::{self, Source};
use crate::registry::Registry;

/// Quiet time after the last change to a file before it is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts watching; the returned future reloads components as their files change, until `stop`.
pub fn watch(
    registry: Arc<Registry>,
) -> anyhow::Result<impl FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, ()>> {
    let (changed, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| match events {
        Ok(events) => {
            // `AnyContinuous` fires while a long write is still going on; wait for its end.
            for event in events
                .into_iter()
                .filter(|event| event.kind == DebouncedEventKind::Any)
            {
                let _ = changed.send(event.path);
            }
        }
        Err(err) => tracing::warn!(error = %err, "watching component files failed"),
    })
    .context("cannot watch component files")?;
    let folders: BTreeSet<PathBuf> = registry
        .services()
        .iter()
        .filter_map(|service| service.config.wasm.parent())
        .map(|folder| {
            if folder.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                folder.to_owned()
            }
        })
        .collect();
    for folder in &folders {
        debouncer
            .watcher()
            .watch(folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", folder.display()))?;
    }
    tracing::info!(
        folders = ?folders,
        "watching component files; a changed .wasm is loaded and swapped in"
    );
    Ok(
        move |stop: CancellationToken| -> futures::future::BoxFuture<'static, ()> {
            Box::pin(async move {
                // Lives as long as the watching.
                let _debouncer = debouncer;
                loop {
                    let path = tokio::select! {
                        path = changes.recv() => match path {
                            Some(path) => path,
                            None => return,
                        },
                        () = stop.cancelled() => return,
                    };
                    for service in registry
                        .services()
                        .iter()
                        .filter(|service| reload::is_wasm_of(service, &path))
                    {
                        if !path.is_file() {
                            // Removed, about to be replaced: its replacement brings an event of
                            // its own.
                            continue;
                        }
                        // A failure is recorded on the service and logged by `reload`.
                        let _ = reload::reload(registry.runtime(), service, Source::Watched).await;
                    }
                }
            })
        },
    )
}
