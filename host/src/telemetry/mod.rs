//! Logs, traces and metrics of the host.
//!
//! - Logs: `tracing` events to stderr, as text, or as one JSON object per line with
//!   `--log-json` / `HOST_LOG_JSON=true`. `RUST_LOG` filters them.
//! - Traces: configured only by the standard OpenTelemetry variables. With neither
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` nor `OTEL_EXPORTER_OTLP_ENDPOINT` set (or with
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`) nothing is exported and spans
//!   carry no trace context. Otherwise the host's spans go to the collector over OTLP:
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf` (the default) or `grpc`, `..._HEADERS`,
//!   `..._TIMEOUT`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` for the host's own
//!   spans, `OTEL_TRACES_SAMPLER`(`_ARG`), and `OTEL_BSP_*` for batching ([`export`]).
//!   Context crosses the host's edges as W3C trace context ([`propagation`]).
//! - Metrics: [`metrics::Metrics`], one per host, served by the admin listener.
//!
//! [`init`] is called once per process, inside the tokio runtime, before the host is built;
//! [`Telemetry::shutdown`] flushes the spans still queued.

use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_util::sync::CancellationToken;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

pub mod export;
pub mod labels;
pub mod metrics;
pub mod propagation;
pub mod snapshot;

/// What `RUST_LOG` is when unset.
const DEFAULT_LOG_FILTER: &str = "info,wasmtime_cranelift=warn,cranelift=warn,\
     tokio_postgres=warn,refinery_core=error,opentelemetry_sdk=warn";

/// Events kept per span (a guest's log lines among them); later ones are dropped.
const MAX_EVENTS_PER_SPAN: u32 = 16;

/// How long shutdown waits for queued spans to reach the collector.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);

/// The service name of the host's own spans when `OTEL_SERVICE_NAME` does not give one.
const HOST_SERVICE_NAME: &str = "host";

/// Log lines buffered for stderr at most; past that, lines are dropped (and counted) rather
/// than make the code that logs wait for the terminal or the container runtime.
const LOG_BUFFER_LINES: usize = 16 * 1024;

/// Counts the log lines the process's output dropped, once logging is set up.
static LOG_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped so far because the output could not keep up.
pub fn log_lines_dropped() -> u64 {
    LOG_DROPS
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// The process's telemetry, until [`Telemetry::shutdown`].
pub struct Telemetry {
    /// Present when spans are exported.
    export: Option<Running>,
    /// Writes the buffered log lines; flushed when dropped.
    _log_writer: tracing_appender::non_blocking::WorkerGuard,
}

struct Running {
    provider: SdkTracerProvider,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The OTLP settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC: the protocol variable says `grpc`.
    Grpc,
    /// OTLP over HTTP with protobuf bodies: `http/protobuf`, the default when none is named.
    HttpProtobuf,
}

/// Whether spans are to be exported, and how; an error names the variable at fault.
pub fn protocol_from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Protocol>> {
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match set("OTEL_TRACES_EXPORTER")
        .map(|value| value.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER: {other:?} is not supported; use otlp or none"),
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let (name, protocol) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(protocol) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            set("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
        ),
    };
    match protocol.trim() {
        "grpc" => Ok(Some(Protocol::Grpc)),
        "http/protobuf" => Ok(Some(Protocol::HttpProtobuf)),
        other => bail!("{name}: {other:?} is not supported; use http/protobuf or grpc"),
    }
}

/// The samplers `OTEL_TRACES_SAMPLER` may name (the SDK reads it, and `OTEL_TRACES_SAMPLER_ARG`,
/// itself); a `parentbased_` one follows the sampled flag of a request's or event's
/// `traceparent`, so a trace is kept or dropped whole across the services.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// Checks `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` before the SDK reads them: the
/// SDK would fall back to sampling everything on a value it does not know, where a host refuses
/// a setting it cannot follow.
pub fn check_sampler(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let Some(sampler) = var("OTEL_TRACES_SAMPLER").filter(|value| !value.trim().is_empty()) else {
        return Ok(());
    };
    let sampler = sampler.trim();
    if !SAMPLERS.contains(&sampler) {
        bail!(
            "OTEL_TRACES_SAMPLER: {sampler:?} is not supported; use one of {}",
            SAMPLERS.join(", ")
        );
    }
    if sampler.ends_with("traceidratio") {
        let ratio = var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_default();
        if !ratio
            .trim()
            .parse::<f64>()
            .is_ok_and(|ratio| (0.0..=1.0).contains(&ratio))
        {
            bail!(
                "OTEL_TRACES_SAMPLER_ARG: {sampler} needs the share of traces to keep, a number \
                 from 0 to 1 (found {ratio:?})"
            );
        }
    }
    Ok(())
}

/// Sets up logging and, when the environment asks for it, span export. Call inside the tokio
/// runtime, once.
pub fn init(log_json: bool) -> anyhow::Result<Telemetry> {
    let env = |name: &str| std::env::var(name).ok();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let (stderr, log_writer) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let _ = LOG_DROPS.set(stderr.error_counter());
    let logs = if log_json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(stderr)
            .boxed()
    } else {
        fmt::layer().with_writer(stderr).boxed()
    };
    let logs = logs.with_filter(filter);
    let Some(protocol) = protocol_from_env(env)? else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry {
            export: None,
            _log_writer: log_writer,
        });
    };
    check_sampler(env)?;
    let batch = export::BatchConfig::from_env(env)?;
    let exporter = match protocol {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => SpanExporter::builder().with_http().build(),
    }
    .context("cannot set up the OTLP span exporter")?;
    let host = host_resource(&env);
    let (queue, export) = export::pipeline(exporter, batch, host.clone());
    // A span's size is bounded too (statement text and log lines are cut short where they are
    // recorded), so the queue is bounded in bytes, not only in spans.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_resource(host)
        .with_max_events_per_span(MAX_EVENTS_PER_SPAN)
        .build();
    let tracer = provider.tracer("host");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(traced));
    tracing_subscriber::registry().with(logs).with(spans).init();
    let stop = CancellationToken::new();
    let task = tokio::spawn(export.run(stop.clone(), FLUSH_WITHIN));
    tracing::info!(?protocol, "exporting spans over OTLP");
    Ok(Telemetry {
        export: Some(Running {
            provider,
            stop,
            task,
        }),
        _log_writer: log_writer,
    })
}

/// Which `tracing` spans and events become OpenTelemetry spans and span events: the host's own
/// spans (SQL statements included, at debug) and its events at info and above, and the guests'
/// log lines, which land in the span of the request or delivery that wrote them.
fn traced(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let ours = target == "host" || target.starts_with("host::") || target == "component";
    let level = *metadata.level();
    ours && if metadata.is_span() {
        level <= Level::DEBUG
    } else {
        level <= Level::INFO
    }
}

/// The resource of the host's own spans: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service.name` "host" when neither names one.
fn host_resource(var: &impl Fn(&str) -> Option<String>) -> Resource {
    let named = var("OTEL_SERVICE_NAME").is_some_and(|name| !name.trim().is_empty())
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    let resource = Resource::builder();
    if named {
        resource.build()
    } else {
        resource.with_service_name(HOST_SERVICE_NAME).build()
    }
}

/// `text`, cut at a character boundary to at most `max` bytes: for guest- and client-made text
/// recorded on spans, which wait in the export queue while the collector is slow.
pub fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Telemetry {
    /// Exports the spans still queued (within a few seconds) and stops exporting.
    pub async fn shutdown(self) {
        let Some(running) = self.export else { return };
        // Spans ending from here on are dropped; the ones queued are sent.
        let _ = running.provider.shutdown();
        running.stop.cancel();
        let _ = running.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(truncated("SELECT 1", 2048), "SELECT 1");
        assert_eq!(truncated("SELECT 'é'", 9), "SELECT '");
        assert_eq!(truncated(&"x".repeat(10_000), 2048).len(), 2048);
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_set() {
        assert_eq!(protocol_from_env(vars(&[])).unwrap(), None);
        assert_eq!(
            protocol_from_env(vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            protocol_from_env(vars(&[endpoint])).unwrap(),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(
            protocol_from_env(vars(&[endpoint, ("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert_eq!(
            protocol_from_env(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).unwrap(),
            None
        );
    }

    #[test]
    fn the_protocol_is_grpc_or_http_protobuf_and_anything_else_is_named_as_the_fault() {
        let grpc = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        assert_eq!(
            protocol_from_env(vars(&grpc)).unwrap(),
            Some(Protocol::Grpc)
        );
        let json = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ];
        let error = protocol_from_env(vars(&json)).unwrap_err().to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") && error.contains("http/json"),
            "{error}"
        );
    }

    #[test]
    fn a_sampler_the_sdk_would_not_follow_is_refused_with_the_variable_at_fault() {
        assert!(check_sampler(vars(&[])).is_ok());
        assert!(check_sampler(vars(&[("OTEL_TRACES_SAMPLER", "parentbased_always_on")])).is_ok());
        let ratio = [
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ];
        assert!(check_sampler(vars(&ratio)).is_ok());
        let error = check_sampler(vars(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("OTEL_TRACES_SAMPLER: \"jaeger_remote\""),
            "{error}"
        );
        for arg in ["", "half", "1.5"] {
            let bad = [
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ];
            let error = check_sampler(vars(&bad)).unwrap_err().to_string();
            assert!(error.contains("OTEL_TRACES_SAMPLER_ARG"), "{arg}: {error}");
        }
    }

    #[test]
    fn the_hosts_spans_are_named_host_unless_the_environment_names_them() {
        let name = |resource: Resource| {
            resource
                .get(&"service.name".into())
                .map(|value| value.to_string())
        };
        assert_eq!(name(host_resource(&vars(&[]))), Some("host".into()));
    }

    #[test]
    fn sql_spans_are_traced_but_debug_events_and_other_crates_are_not() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level: Level, kind: Kind| {
            Metadata::new(
                "x",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                kind,
            )
        };
        assert!(traced(&meta(
            "host::capabilities::sql",
            Level::DEBUG,
            Kind::SPAN
        )));
        assert!(!traced(&meta(
            "host::capabilities::sql",
            Level::DEBUG,
            Kind::EVENT
        )));
        assert!(traced(&meta("component", Level::INFO, Kind::EVENT)));
        assert!(!traced(&meta("h2", Level::INFO, Kind::SPAN)));
    }
}
