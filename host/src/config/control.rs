//! The `[admin]` and `[cache]` sections: the admin listener, watching component files, and the
//! compile cache.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:9000"   # loopback by default; elsewhere HOST_ADMIN_TOKEN is required
//! watch = true                # reload a component when its .wasm file changes
//!
//! [cache]
//! dir = "/var/cache/wasm-host" # default: $XDG_CACHE_HOME/wasm-host or ~/.cache/wasm-host;
//!                              # none (compile every start) when neither is set
//! ```
//!
//! Environment: `HOST_ADMIN_LISTEN` overrides `admin.listen`, `HOST_ADMIN_TOKEN` is the bearer
//! token every admin call must carry (never written in the manifest), `HOST_CACHE_DIR`
//! overrides `cache.dir`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Environment;

/// The `[admin]` section, checked: the admin API's listener and token, and the file watcher.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where the admin API listens: `admin.listen` or `HOST_ADMIN_LISTEN`, 127.0.0.1:9000 by
    /// default.
    pub listen: SocketAddr,
    /// Required of every call when set; required to be set when `listen` is not loopback.
    pub token: Option<Token>,
    /// Whether component files are watched and reloaded when they change.
    pub watch: bool,
}

/// A bearer token; prints masked.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Whether `offered` is this token, compared in time independent of where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The `[cache]` section, checked: where the compile cache lives.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Where compiled components are kept, keyed by the digest of their `.wasm` and the engine;
    /// `None` when no folder is named and there is no home folder to default to.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestAdmin {
    #[serde(default = "default_admin_listen")]
    listen: SocketAddr,
    #[serde(default = "default_watch")]
    watch: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestCache {
    dir: Option<PathBuf>,
}

impl Default for ManifestAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            watch: default_watch(),
        }
    }
}

pub(super) fn check_admin(
    raw: ManifestAdmin,
    env: &impl Environment,
) -> anyhow::Result<AdminConfig> {
    let listen = match env.var("HOST_ADMIN_LISTEN") {
        Some(listen) => listen.parse().with_context(|| {
            format!("HOST_ADMIN_LISTEN={listen:?} is not an address such as 127.0.0.1:9000")
        })?,
        None => raw.listen,
    };
    let token = env.var("HOST_ADMIN_TOKEN").map(Token);
    if token.as_ref().is_some_and(|token| token.0.len() < 16) {
        bail!(
            "HOST_ADMIN_TOKEN: must be at least 16 characters; make one with `openssl rand -hex 32`"
        );
    }
    if !listen.ip().is_loopback() && token.is_none() {
        bail!(
            "admin.listen: {listen} is reachable from other machines, so the admin API needs a \
             token: set HOST_ADMIN_TOKEN (such as `openssl rand -hex 32`), or listen on 127.0.0.1"
        );
    }
    Ok(AdminConfig {
        listen,
        token,
        watch: raw.watch,
    })
}

pub(super) fn check_cache(
    raw: ManifestCache,
    base: &Path,
    env: &impl Environment,
) -> anyhow::Result<CacheConfig> {
    let named = env
        .var("HOST_CACHE_DIR")
        .map(PathBuf::from)
        .or(raw.dir.map(|dir| base.join(dir)));
    if named.as_ref().is_some_and(|dir| dir.as_os_str().is_empty()) {
        bail!("cache.dir: must name a folder");
    }
    Ok(CacheConfig {
        dir: named.or_else(|| default_cache_dir(env)),
    })
}

/// `$XDG_CACHE_HOME/wasm-host`, else `~/.cache/wasm-host`: never inside the source tree, and
/// never a shared folder such as `/tmp`, where another user could plant code.
fn default_cache_dir(env: &impl Environment) -> Option<PathBuf> {
    match (env.var("XDG_CACHE_HOME"), env.var("HOME")) {
        (Some(cache), _) => Some(PathBuf::from(cache).join("wasm-host")),
        (None, Some(home)) => Some(PathBuf::from(home).join(".cache").join("wasm-host")),
        (None, None) => None,
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}
fn default_watch() -> bool {
    true
}
