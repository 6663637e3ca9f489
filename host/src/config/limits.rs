//! The `[limits]` section and each component's own limits: how much of the host a component's
//! units of work may take, so that what one component does on the host's side (its statements,
//! results, events, headers, log lines) cannot take what the others need.
//!
//! ```toml
//! [limits]                  # for the whole host, and the defaults of every component
//! memory_mib = 64           # linear memory of one instance
//! max_instances = 512       # instances alive at once, all components together
//! host_memory_mib = 64      # per component: see below
//!
//! [[components]]
//! name = "orders"
//! max_result_bytes = 4194304   # any per-component limit, over the [limits] default
//! ```
//!
//! Per component (each a key of `[limits]` for the default and of `[[components]]` for the
//! component; `HOST_COMPONENTS__<NAME>__<KEY>` from the environment):
//!
//! | key | default | what |
//! | --- | --- | --- |
//! | `host_memory_mib` | 64 | host memory its units of work hold at once: statements and parameters being sent, results on their way to the guest, events published until the commit, response bodies being collected |
//! | `max_result_bytes` | 16 MiB | one query's result |
//! | `max_statement_bytes` | 64 KiB | a statement's text |
//! | `max_parameters` / `max_parameter_bytes` | 4096 / 1 MiB | parameters of one statement, and their bytes together |
//! | `max_event_bytes` | 256 KiB | the `data` of one published event |
//! | `max_published_bytes` | 4 MiB | everything one unit of work publishes |
//! | `max_resources` | 256 | handles one instance holds at once (requests, streams, fields, pollables, ...) |
//! | `max_header_bytes` | 16 KiB | one set of HTTP fields a guest builds (as wasmtime counts them, a little above their size on the wire) |
//! | `log_lines_per_second` | 100 | lines of its stdout and stderr logged per second, with bursts of as many; the rest are dropped and counted |

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Limits that apply to the whole host, and the defaults of each component's [`GuestLimits`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one instance may grow to, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Instances alive at once across all components (the pooling allocator's size).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Whether a trap's message carries the guest's backtrace. Off, a trap costs little and
    /// logs one line; on (for debugging a component), it costs a walk of the guest's stack.
    #[serde(default)]
    pub wasm_backtraces: bool,
    /// The `[limits]` defaults of every component's own limits, written as keys of the same
    /// section; a component's setting wins over them (see [`GuestLimitSettings::over`]).
    #[serde(flatten)]
    pub guest: GuestLimitSettings,
}

/// The per-component limits as a manifest writes them, each optional: unset, the `[limits]`
/// value or the default applies.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GuestLimitSettings {
    /// Host memory the component's units of work may hold at once, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_memory_mib: Option<u64>,
    /// Bytes one query's result may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_bytes: Option<usize>,
    /// Bytes of one statement's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_statement_bytes: Option<usize>,
    /// Parameters one statement may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parameters: Option<usize>,
    /// Bytes of one statement's parameters together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parameter_bytes: Option<usize>,
    /// Bytes of the `data` of one event, published or delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    /// Bytes one unit of work may publish, all its events together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_published_bytes: Option<usize>,
    /// Resource handles one instance may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<usize>,
    /// Bytes of one set of HTTP fields a guest builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    /// Lines of stdout and stderr logged per second, with bursts of as many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines_per_second: Option<u32>,
}

/// What one component's units of work may take of the host (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Host memory the component's units of work hold at once, in bytes: statements and
    /// parameters being sent, results on their way to the guest, events published until the
    /// commit, response bodies being collected. When it is spent, what asks for more is
    /// refused (see [`crate::capabilities::memory`]).
    pub host_memory_bytes: usize,
    /// Bytes one query's result may take; a larger one fails with "54000".
    pub max_result_bytes: usize,
    /// Bytes of one statement's text; a longer one fails with "54000" and is not sent.
    pub max_statement_bytes: usize,
    /// Parameters one statement may have; more fail with "54000" and nothing is sent.
    pub max_parameters: usize,
    /// Bytes of one statement's parameters together; more fail with "54000".
    pub max_parameter_bytes: usize,
    /// Bytes of the `data` of one event, published or delivered.
    pub max_event_bytes: usize,
    /// Bytes one unit of work may publish, all its events together, held until the commit.
    pub max_published_bytes: usize,
    /// Resource handles one instance's table may hold at once (requests, streams, fields,
    /// pollables, ...).
    pub max_resources: usize,
    /// Bytes of one set of HTTP fields a guest builds, as wasmtime counts them.
    pub max_header_bytes: usize,
    /// Lines of the component's stdout and stderr logged per second, with bursts of as many;
    /// the rest are dropped and counted.
    pub log_lines_per_second: u32,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            host_memory_bytes: 64 << 20,
            max_result_bytes: 16 << 20,
            max_statement_bytes: 64 << 10,
            max_parameters: 4096,
            max_parameter_bytes: 1 << 20,
            max_event_bytes: 256 << 10,
            max_published_bytes: 4 << 20,
            max_resources: 256,
            max_header_bytes: 16 << 10,
            log_lines_per_second: 100,
        }
    }
}

impl GuestLimitSettings {
    /// `self` over `defaults`: what is set here wins.
    pub fn over(&self, defaults: &Self) -> Self {
        Self {
            host_memory_mib: self.host_memory_mib.or(defaults.host_memory_mib),
            max_result_bytes: self.max_result_bytes.or(defaults.max_result_bytes),
            max_statement_bytes: self.max_statement_bytes.or(defaults.max_statement_bytes),
            max_parameters: self.max_parameters.or(defaults.max_parameters),
            max_parameter_bytes: self.max_parameter_bytes.or(defaults.max_parameter_bytes),
            max_event_bytes: self.max_event_bytes.or(defaults.max_event_bytes),
            max_published_bytes: self.max_published_bytes.or(defaults.max_published_bytes),
            max_resources: self.max_resources.or(defaults.max_resources),
            max_header_bytes: self.max_header_bytes.or(defaults.max_header_bytes),
            log_lines_per_second: self.log_lines_per_second.or(defaults.log_lines_per_second),
        }
    }

    /// The limits, with the defaults for what is unset; `at` names where they were written
    /// (`limits`, or a component) in an error.
    pub fn resolve(&self, at: &str) -> anyhow::Result<GuestLimits> {
        let defaults = GuestLimits::default();
        let positive = |key: &str, value: Option<u64>| -> anyhow::Result<()> {
            if value == Some(0) {
                bail!("{at}.{key}: must be greater than 0");
            }
            Ok(())
        };
        positive("host_memory_mib", self.host_memory_mib)?;
        positive("max_result_bytes", self.max_result_bytes.map(|n| n as u64))?;
        positive(
            "max_statement_bytes",
            self.max_statement_bytes.map(|n| n as u64),
        )?;
        positive("max_parameters", self.max_parameters.map(|n| n as u64))?;
        positive(
            "max_parameter_bytes",
            self.max_parameter_bytes.map(|n| n as u64),
        )?;
        positive("max_event_bytes", self.max_event_bytes.map(|n| n as u64))?;
        positive(
            "max_published_bytes",
            self.max_published_bytes.map(|n| n as u64),
        )?;
        positive("max_resources", self.max_resources.map(|n| n as u64))?;
        positive("max_header_bytes", self.max_header_bytes.map(|n| n as u64))?;
        positive(
            "log_lines_per_second",
            self.log_lines_per_second.map(u64::from),
        )?;
        if let Some(mib) = self.host_memory_mib
            && mib > 64 * 1024
        {
            bail!(
                "{at}.host_memory_mib: {mib} is more than 64 GiB; give a component a share of this \
                 machine"
            );
        }
        let limits = GuestLimits {
            host_memory_bytes: self
                .host_memory_mib
                .map_or(defaults.host_memory_bytes, |mib| (mib as usize) << 20),
            max_result_bytes: self.max_result_bytes.unwrap_or(defaults.max_result_bytes),
            max_statement_bytes: self
                .max_statement_bytes
                .unwrap_or(defaults.max_statement_bytes),
            max_parameters: self.max_parameters.unwrap_or(defaults.max_parameters),
            max_parameter_bytes: self
                .max_parameter_bytes
                .unwrap_or(defaults.max_parameter_bytes),
            max_event_bytes: self.max_event_bytes.unwrap_or(defaults.max_event_bytes),
            max_published_bytes: self
                .max_published_bytes
                .unwrap_or(defaults.max_published_bytes),
            max_resources: self.max_resources.unwrap_or(defaults.max_resources),
            max_header_bytes: self.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            log_lines_per_second: self
                .log_lines_per_second
                .unwrap_or(defaults.log_lines_per_second),
        };
        for (key, value) in [
            ("max_result_bytes", limits.max_result_bytes),
            ("max_statement_bytes", limits.max_statement_bytes),
            ("max_parameter_bytes", limits.max_parameter_bytes),
            ("max_published_bytes", limits.max_published_bytes),
        ] {
            if value > limits.host_memory_bytes {
                bail!(
                    "{at}.{key}: {value} bytes is more than the component's whole share of host \
                     memory ({} bytes, host_memory_mib); lower it or raise host_memory_mib",
                    limits.host_memory_bytes
                );
            }
        }
        if limits.max_event_bytes > limits.max_published_bytes {
            bail!(
                "{at}.max_event_bytes: {} is more than max_published_bytes, so no such event could \
                 be published",
                limits.max_event_bytes
            );
        }
        Ok(limits)
    }
}

impl Limits {
    /// The defaults, for tests that build a runtime.
    pub fn for_tests() -> Self {
        default_limits()
    }
}

pub(super) fn default_limits() -> Limits {
    Limits {
        memory_mib: default_memory_mib(),
        max_instances: default_max_instances(),
        wasm_backtraces: false,
        guest: GuestLimitSettings::default(),
    }
}

fn default_memory_mib() -> u64 {
    64
}
fn default_max_instances() -> u32 {
    512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_components_own_limit_wins_over_the_hosts_and_unset_ones_are_the_defaults() {
        let host = GuestLimitSettings {
            max_result_bytes: Some(1 << 20),
            max_resources: Some(64),
            ..Default::default()
        };
        let component = GuestLimitSettings {
            max_resources: Some(32),
            ..Default::default()
        };
        let limits = component
            .over(&host)
            .resolve("components[0]")
            .expect("valid");
        assert_eq!(limits.max_result_bytes, 1 << 20);
        assert_eq!(limits.max_resources, 32);
        assert_eq!(limits.max_parameters, GuestLimits::default().max_parameters);
    }

    #[test]
    fn a_limit_the_memory_share_cannot_hold_is_refused_with_what_to_change() {
        let settings = GuestLimitSettings {
            host_memory_mib: Some(8),
            max_result_bytes: Some(16 << 20),
            ..Default::default()
        };
        let error = settings
            .resolve("components[1]")
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("components[1].max_result_bytes") && error.contains("host_memory_mib"),
            "{error}"
        );
        let zero = GuestLimitSettings {
            max_parameters: Some(0),
            ..Default::default()
        };
        assert!(
            zero.resolve("limits")
                .expect_err("refused")
                .to_string()
                .contains("limits.max_parameters")
        );
    }
}
