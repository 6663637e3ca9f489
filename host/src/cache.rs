//! The compile cache: components compiled once are kept on disk, so a restart or a swap back to
//! code seen before skips Cranelift (milliseconds instead of hundreds of them).
//!
//! An entry is wasmtime's own precompiled form (`Engine::precompile_component`), named after the
//! sha256 of the `.wasm` and a digest of the engine's compatibility hash (wasmtime's version,
//! target and settings), so code compiled by another engine is never looked up. Each file starts
//! with the sha256 of the rest; one that is truncated, corrupt or otherwise foreign fails that
//! check (or wasmtime's own) and is compiled again and replaced: never trusted blindly, never
//! fatal. Entries are written to a temporary file and renamed, so replicas sharing the folder
//! never read half a file.
//!
//! Loading precompiled code runs it as native code, so the folder must be writable by the host
//! alone: it is created with mode 0700, and one that is a symlink, belongs to another user, or
//! lets a group or others write is not used (the host compiles every time, with a warning).
//!
//! Built once per process, with the [`crate::engine::Runtime`].

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components of one engine are kept.
pub struct CompileCache {
    /// `None` when there is no folder the host may trust: every load compiles.
    dir: Option<PathBuf>,
    /// Hex digest of the engine's compatibility hash, part of every entry's name.
    engine: String,
}

/// A compiled component and where it came from.
pub struct Compiled {
    /// The compiled code, ready for the linker to pre-instantiate.
    pub component: Component,
    /// Whether it came from the cache rather than from Cranelift.
    pub cached: bool,
}

impl CompileCache {
    /// A cache in `dir` (none when `dir` is `None`, or a folder only the host may write cannot
    /// be had there).
    pub fn new(dir: Option<&Path>, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = dir.and_then(|dir| match private_folder(dir) {
            Ok(()) => Some(dir.to_owned()),
            Err(why) => {
                tracing::warn!(
                    folder = %dir.display(),
                    %why,
                    "not using the compile cache; every start compiles"
                );
                None
            }
        });
        Self {
            dir,
            engine: hex(&hasher.0.finalize()[..12]),
        }
    }

    /// The component for `wasm` (whose sha256 is `digest`): from the cache when a sound entry
    /// is there, compiled (and stored) otherwise. CPU-heavy: run it off the async threads.
    pub fn load(&self, engine: &Engine, digest: &str, wasm: &[u8]) -> wasmtime::Result<Compiled> {
        let Some(dir) = &self.dir else {
            return Ok(Compiled {
                component: Component::new(engine, wasm)?,
                cached: false,
            });
        };
        let entry = dir.join(format!("{digest}-{}.cwasm", self.engine));
        if let Some(component) = self.read(engine, &entry) {
            return Ok(Compiled {
                component,
                cached: true,
            });
        }
        let precompiled = engine.precompile_component(wasm)?;
        let component = deserialize(engine, &precompiled)?;
        if let Err(err) = Self::write(&entry, &precompiled) {
            tracing::warn!(
                entry = %entry.display(),
                error = %err,
                "cannot write to the compile cache; going on without it"
            );
        }
        Ok(Compiled {
            component,
            cached: false,
        })
    }

    fn read(&self, engine: &Engine, entry: &Path) -> Option<Component> {
        let bytes = match std::fs::read(entry) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(
                    entry = %entry.display(),
                    error = %err,
                    "cannot read a compile cache entry; compiling"
                );
                return None;
            }
        };
        let sound = bytes.len() > 32 && Sha256::digest(&bytes[32..])[..] == bytes[..32];
        if !sound {
            tracing::warn!(
                entry = %entry.display(),
                "a compile cache entry is corrupt; compiling again"
            );
            return None;
        }
        match deserialize(engine, &bytes[32..]) {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(
                    entry = %entry.display(),
                    error = %err,
                    "a compile cache entry does not load; compiling again"
                );
                None
            }
        }
    }

    fn write(entry: &Path, precompiled: &[u8]) -> std::io::Result<()> {
        let partial = entry.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        let mut contents = Sha256::digest(precompiled).to_vec();
        contents.extend_from_slice(precompiled);
        std::fs::write(&partial, contents)
            .and_then(|()| std::fs::rename(&partial, entry))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })
    }
}

/// Makes sure `dir` is a folder only this process's user may write: created with mode 0700 if
/// missing; otherwise not a symlink, owned by the user, and not writable by group or others.
fn private_folder(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| format!("cannot create it: {err}"))?;
    let metadata =
        std::fs::symlink_metadata(dir).map_err(|err| format!("cannot look at it: {err}"))?;
    if !metadata.file_type().is_dir() {
        return Err("it is a symlink or not a folder".into());
    }
    if metadata.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!(
            "it belongs to user {}, not to the host's",
            metadata.uid()
        ));
    }
    if metadata.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "its group or others may write to it (mode {:o}); chmod go-w it",
            metadata.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

/// The sha256 of `bytes`, in hex: a component's identity.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, precompiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `precompiled` is wasmtime's own output: made by `precompile_component` just now,
    // or read from an entry named after this engine's compatibility hash, written by this host
    // into its own folder, and checked against the sha256 stored with it. wasmtime checks the
    // format and the engine's settings again as it loads it.
    unsafe { Component::deserialize(engine, precompiled) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Feeds `Hash` into sha256, for a digest that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: `(component)` in the binary format.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cache() -> (tempdir::Dir, CompileCache, Engine) {
        let dir = tempdir::Dir::new();
        let engine = Engine::default();
        let cache = CompileCache::new(Some(&dir.0), &engine);
        (dir, cache, engine)
    }

    fn entry_of(dir: &tempdir::Dir) -> PathBuf {
        std::fs::read_dir(&dir.0)
            .expect("dir")
            .next()
            .expect("an entry")
            .expect("entry")
            .path()
    }

    #[test]
    fn a_component_compiled_once_comes_from_the_cache_the_next_time() {
        let (_dir, cache, engine) = cache();
        let digest = digest(EMPTY_COMPONENT);
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles")
                .cached
        );
        assert!(
            cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("loads")
                .cached
        );
    }

    #[test]
    fn a_corrupt_or_foreign_entry_is_compiled_again_and_replaced() {
        let (dir, cache, engine) = cache();
        let digest = digest(EMPTY_COMPONENT);
        cache
            .load(&engine, &digest, EMPTY_COMPONENT)
            .expect("compiles");
        let entry = entry_of(&dir);

        let mut bytes = std::fs::read(&entry).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&entry, &bytes).expect("corrupt it");
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles again")
                .cached
        );
        assert!(
            cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("replaced")
                .cached
        );

        std::fs::write(&entry, b"not a compiled component at all").expect("overwrite");
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles again")
                .cached
        );

        // Sound by its digest, but compiled by an engine with other settings: wasmtime refuses it.
        let mut other = wasmtime::Config::new();
        other.consume_fuel(true);
        let foreign = Engine::new(&other)
            .expect("engine")
            .precompile_component(EMPTY_COMPONENT)
            .expect("precompiles");
        CompileCache::write(&entry, &foreign).expect("plant it");
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles again")
                .cached
        );
        assert!(
            cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("replaced")
                .cached
        );
    }

    #[test]
    fn a_folder_others_may_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempdir::Dir::new();
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let engine = Engine::default();
        let cache = CompileCache::new(Some(&dir.0), &engine);
        let digest = digest(EMPTY_COMPONENT);
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles")
                .cached
        );
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles")
                .cached
        );
        assert_eq!(
            std::fs::read_dir(&dir.0).expect("dir").count(),
            0,
            "nothing was written there"
        );
    }

    #[test]
    fn an_unwritable_folder_only_means_compiling_every_time() {
        let engine = Engine::default();
        let cache = CompileCache::new(Some(Path::new("/proc/no-such-folder")), &engine);
        let digest = digest(EMPTY_COMPONENT);
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles")
                .cached
        );
        assert!(
            !cache
                .load(&engine, &digest, EMPTY_COMPONENT)
                .expect("compiles")
                .cached
        );
    }

    /// A temporary folder, removed when dropped.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Self {
                use std::os::unix::fs::DirBuilderExt;

                let path = std::env::temp_dir().join(format!(
                    "compile-cache-test-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .expect("temp dir");
                Self(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
