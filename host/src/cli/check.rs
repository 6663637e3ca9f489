//! `host check`: a manifest and its components validated offline — no PostgreSQL, no broker,
//! no network — so that CI refuses what a host would refuse at start.
//!
//! What it checks, in the order a host would meet it:
//! - the manifest, with the environment's `HOST_<SECTION>__<KEY>` settings over it, exactly as
//!   the host reads it: every setting, unique names, routes that do not shadow one another,
//!   topics, limits, the broker logins;
//! - each component's `.wasm`: a component that compiles, imports only what the host provides
//!   (the `platform:service/service` world), exports `wasi:http/incoming-handler`, and exports
//!   `platform:service/message-handler` when it subscribes;
//! - each migrations folder: only `V<n>__<name>.sql` files, each version once, which refinery
//!   reads.
//!
//! Secrets a deployment passes at run time need not be here: without `HOST_ADMIN_TOKEN` an
//! admin listener beyond loopback is checked as if one were set, and that is said.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

use crate::cache;
use crate::config::{ComponentConfig, Config, Environment};
use crate::engine::Runtime;
use crate::service::Code;

/// Stands in for `HOST_ADMIN_TOKEN` when the environment has none.
const PLACEHOLDER_TOKEN: &str = "placeholder-admin-token-for-host-check";

/// The environment as the check sees it: the real one, with a placeholder admin token when it
/// has none.
struct Offline<'a, E> {
    env: &'a E,
}

impl<E: Environment> Environment for Offline<'_, E> {
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .var(name)
            .or_else(|| (name == "HOST_ADMIN_TOKEN").then(|| PLACEHOLDER_TOKEN.to_owned()))
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.env.vars()
    }
}

/// Checks the manifest at `path` and everything it names; one line per component saying what
/// was checked, then notes. The error says what to fix.
pub fn check(path: &Path, env: &impl Environment) -> anyhow::Result<Vec<String>> {
    let config = Config::load(path, &Offline { env })?;
    let runtime = Runtime::new(&config.limits, config.cache.dir.as_deref())
        .context("cannot set up the engine the components are compiled with")?;
    let mut lines = Vec::new();
    for component in &config.components {
        let line = check_component(&runtime, component)
            .with_context(|| format!("component `{}`", component.name))?;
        lines.push(line);
    }
    if env.var("HOST_ADMIN_TOKEN").is_none() && !config.admin.listen.ip().is_loopback() {
        lines.push(format!(
            "note: admin.listen {} needs HOST_ADMIN_TOKEN at run time (not set here)",
            config.admin.listen
        ));
    }
    Ok(lines)
}

fn check_component(runtime: &Runtime, component: &ComponentConfig) -> anyhow::Result<String> {
    let wasm = std::fs::read(&component.wasm)
        .with_context(|| format!("cannot read {}", component.wasm.display()))?;
    let sha256 = cache::digest(&wasm);
    let subscribes = !component.subscriptions.is_empty();
    Code::load(
        runtime,
        &component.name,
        &wasm,
        sha256.clone(),
        component.wasm.display().to_string(),
        subscribes,
    )?;
    let mut line = format!(
        "ok  {} at {}: {} ({} KiB, sha256 {}), exports HTTP{}",
        component.name,
        component.route,
        component.wasm.display(),
        wasm.len().div_ceil(1024),
        &sha256[..12],
        if subscribes {
            " and a message handler"
        } else {
            ""
        },
    );
    if let Some(folder) = &component.migrations {
        let versions = check_migrations(folder)?;
        line.push_str(&format!(", {} migration(s)", versions.len()));
        if let Some((last, name)) = versions.last_key_value() {
            line.push_str(&format!(" up to V{last}__{name}"));
        }
    }
    Ok(line)
}

/// The migrations in `folder` by version, when every file is one refinery applies; otherwise
/// which file is not, and its fix. (refinery passes over a file whose name it does not read,
/// so a misnamed migration would silently never run.)
pub fn check_migrations(folder: &Path) -> anyhow::Result<BTreeMap<u64, String>> {
    let entries = std::fs::read_dir(folder)
        .with_context(|| format!("migrations: cannot read {}", folder.display()))?;
    let mut versions = BTreeMap::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("migrations: cannot read {}", folder.display()))?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with('.') {
            continue;
        }
        if !entry.path().is_file() {
            bail!(
                "migrations: {} is not a file; the folder holds only V<n>__<name>.sql files",
                entry.path().display()
            );
        }
        let Some((version, name)) = migration_name(&file) else {
            bail!(
                "migrations: {} is not named V<n>__<name>.sql (such as V4__add_discounts.sql), \
                 so it would never be applied; rename it",
                entry.path().display()
            );
        };
        if let Some(other) = versions.insert(version, name.to_owned()) {
            bail!(
                "migrations: version {version} is used twice in {} (V{version}__{other}.sql and \
                 {file}); give the newer one the next free version",
                folder.display()
            );
        }
    }
    refinery::load_sql_migrations(folder)
        .with_context(|| format!("migrations: refinery cannot read {}", folder.display()))?;
    Ok(versions)
}

/// `V12__add_index.sql` is `(12, "add_index")`.
fn migration_name(file: &str) -> Option<(u64, &str)> {
    let stem = file.strip_suffix(".sql")?.strip_prefix('V')?;
    let (version, name) = stem.split_once("__")?;
    let version_ok = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !(version_ok && name_ok) {
        return None;
    }
    Some((version.parse().ok()?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_names_are_read_as_refinery_applies_them() {
        assert_eq!(
            migration_name("V1__create_orders.sql"),
            Some((1, "create_orders"))
        );
        assert_eq!(migration_name("V12__a.sql"), Some((12, "a")));
        for wrong in [
            "v1__lower.sql",
            "V1_one_underscore.sql",
            "V1__dash-name.sql",
            "V__no_version.sql",
            "V1__.sql",
            "V1__create.SQL",
            "README.md",
            "1__no_prefix.sql",
        ] {
            assert_eq!(migration_name(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn a_misnamed_or_repeated_migration_is_refused_with_its_fix() {
        let folder = std::env::temp_dir().join(format!("host-check-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("V1__create.sql"), "CREATE TABLE t (id int);").expect("file");
        assert_eq!(check_migrations(&folder).expect("fine").len(), 1);

        std::fs::write(folder.join("V2_typo.sql"), "SELECT 1;").expect("file");
        let error = format!("{:#}", check_migrations(&folder).expect_err("misnamed"));
        assert!(
            error.contains("V2_typo.sql is not named V<n>__<name>.sql"),
            "{error}"
        );
        std::fs::remove_file(folder.join("V2_typo.sql")).expect("removed");

        std::fs::write(folder.join("V1__again.sql"), "SELECT 1;").expect("file");
        let error = format!("{:#}", check_migrations(&folder).expect_err("repeated"));
        assert!(error.contains("version 1 is used twice"), "{error}");
        std::fs::remove_dir_all(&folder).expect("cleaned");
    }
}
