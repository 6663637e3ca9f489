//! The manifest's layers, merged with figment: the TOML file, then `HOST_<SECTION>__<KEY>`
//! environment variables over it, so every setting can come from the environment and one image
//! runs any component by environment alone.
//!
//! - `HOST_HTTP__LISTEN=0.0.0.0:8000` sets `http.listen`; `HOST_LIMITS__MEMORY_MIB=128` sets
//!   `limits.memory_mib`; the section and key are the manifest's, upper-cased, joined by `__`.
//! - `HOST_COMPONENTS__ORDERS__WASM=/app/orders.wasm` sets `wasm` of the component named
//!   `orders` (`-` in a name is `_` here), or adds a component of that name when the file has
//!   none: `[[components]]` is a list, so components are matched by name, not by position.
//! - Values are read as TOML-like scalars and lists: `true`, `8000`, `[orders.created, b]`.
//! - `HOST_` variables without `__` (`HOST_CONFIG`, `HOST_LISTEN`, `HOST_ADMIN_TOKEN`, ...)
//!   are the host's single-purpose variables, not settings of this scheme.

use figment::error::{Actual, Kind};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::Environment;
use super::component::ManifestComponent;

const PREFIX: &str = "HOST_";
const SEPARATOR: &str = "__";
const COMPONENTS: &str = "components";

/// The settings an environment holds, split into the manifest's sections and its components.
#[derive(Debug, Default)]
pub(super) struct EnvSettings {
    sections: Dict,
    /// Per component, by the name as the variable spells it (`ORDERS`), in name order.
    components: Map<String, Dict>,
}

impl EnvSettings {
    pub(super) fn read(env: &impl Environment) -> anyhow::Result<Self> {
        let mut settings = Self::default();
        let mut vars = env.vars();
        vars.sort();
        for (name, text) in vars {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            if !rest.contains(SEPARATOR) {
                continue;
            }
            let keys: Vec<String> = rest.split(SEPARATOR).map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                anyhow::bail!(
                    "{name}: a setting is named HOST_<SECTION>__<KEY>, with no empty part"
                );
            }
            let value: Value = text.parse().unwrap_or_else(|never| match never {});
            if keys[0] == COMPONENTS {
                let [_, component, key] = keys.as_slice() else {
                    anyhow::bail!(
                        "{name}: a component's setting is named HOST_COMPONENTS__<NAME>__<SETTING>"
                    );
                };
                let component = settings.components.entry(spelling(component)).or_default();
                component.insert(key.clone(), value);
            } else {
                insert(&mut settings.sections, &keys, value);
            }
        }
        Ok(settings)
    }

    /// The manifest's sections with these settings over them.
    pub(super) fn over(&self, manifest: toml::Table) -> Figment {
        Figment::from(Serialized::defaults(manifest)).merge(Sections(self.sections.clone()))
    }

    /// `components` with these settings applied by name; a name the list lacks is added.
    pub(super) fn apply_to(
        &self,
        mut components: Vec<ManifestComponent>,
    ) -> anyhow::Result<Vec<ManifestComponent>> {
        for (spelled, settings) in &self.components {
            let position = components
                .iter()
                .position(|c| spelling(&c.name) == spelling(spelled));
            let base = match position {
                Some(index) => Figment::from(Serialized::defaults(&components[index])),
                None => Figment::from(Serialized::default(
                    "name",
                    spelling(spelled).to_ascii_lowercase().replace('_', "-"),
                )),
            };
            let component: ManifestComponent = base
                .merge(Component {
                    name: spelled.clone(),
                    settings: settings.clone(),
                })
                .extract()
                .map_err(|err| explain(err, &format!("{PREFIX}COMPONENTS{SEPARATOR}{spelled}")))?;
            match position {
                Some(index) => components[index] = component,
                None => components.push(component),
            }
        }
        Ok(components)
    }
}

/// One line naming the setting at fault: the variable when the value came from the
/// environment, the manifest key otherwise. The value itself is described, never shown: it may
/// be a secret given to the wrong setting.
pub(super) fn explain(err: figment::Error, otherwise: &str) -> anyhow::Error {
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.name == ENVIRONMENT);
    let at = if err.path.is_empty() {
        otherwise.to_owned()
    } else if from_env {
        err.metadata
            .as_ref()
            .map(|m| m.interpolate(&Profile::Default, &err.path))
            .unwrap_or_default()
    } else {
        err.path.join(".")
    };
    let kind = match &err.kind {
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {}, expected {expected}", shape(actual))
        }
        Kind::InvalidValue(actual, expected) => format!(
            "invalid value: found {}, expected {expected}",
            shape(actual)
        ),
        other => other.to_string(),
    };
    if at.is_empty() {
        anyhow::anyhow!("{kind}")
    } else {
        anyhow::anyhow!("{at}: {kind}")
    }
}

/// What kind of value was found, without the value.
fn shape(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number with a fraction",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    }
}

const ENVIRONMENT: &str = "environment";

/// Figment data of the sections, named after their variables in errors.
struct Sections(Dict);

impl Provider for Sections {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENVIRONMENT).interpolater(|_, keys| variable(None, keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// Figment data of one component's settings.
struct Component {
    name: String,
    settings: Dict,
}

impl Provider for Component {
    fn metadata(&self) -> Metadata {
        let name = self.name.clone();
        Metadata::named(ENVIRONMENT).interpolater(move |_, keys| variable(Some(&name), keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.settings.clone()))
    }
}

/// A component name as variables spell it: upper-case, `-` as `_` (`billing-runs`, and the
/// `BILLING-RUNS` some platforms allow, are `BILLING_RUNS`).
fn spelling(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// `HOST_HTTP__LISTEN` for `http.listen`; `HOST_COMPONENTS__ORDERS__WASM` for a component's.
fn variable(component: Option<&str>, keys: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(component) = component {
        parts.extend([COMPONENTS.to_ascii_uppercase(), component.to_owned()]);
    }
    parts.extend(keys.iter().map(|key| key.to_ascii_uppercase()));
    format!("{PREFIX}{}", parts.join(SEPARATOR))
}

fn insert(dict: &mut Dict, keys: &[String], value: Value) {
    match keys {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Dict::new().into());
            if !matches!(entry, Value::Dict(..)) {
                *entry = Dict::new().into();
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}
