//! Spans to the OTLP collector, in batches, off the request path.
//!
//! [`Queue`] is the SDK's span processor: a finished span goes into a bounded channel with
//! `try_send` and nothing else, so a collector that is down, slow, or accepting and never
//! answering costs a request nothing. When the channel is full the span is dropped and
//! counted (`otel_spans_dropped_total`). [`Export::run`] takes spans off the channel in batches
//! (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, at least every `OTEL_BSP_SCHEDULE_DELAY`), and sends each
//! within `OTEL_BSP_EXPORT_TIMEOUT`; a failure is logged once, then counted until an export
//! works again. On shutdown it exports what is queued, within a bound, and stops.
//!
//! Spans are exported under the service they belong to: a span with a `component` attribute
//! under that component's name (`service.name`), the host's own work (the relay, the broker
//! connection) under the host's. So one trace shows `orders` and `invoices` as two services,
//! though one host may run both.
//!
//! Written here rather than taken from the SDK's `BatchSpanProcessor` for three reasons: its
//! drops are not countable from outside, it runs its own thread while the tonic exporter needs
//! the host's tokio runtime, and it exports under one resource.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The span attribute that names the component a span belongs to.
pub const COMPONENT: &str = "component";

/// Counts kept for the process: the exporter is the process's, like the `tracing` subscriber.
pub static STATS: ExportStats = ExportStats {
    exported: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// Running counts of what became of finished spans, bumped by [`Queue`] and [`Export`] and
/// read at every metrics scrape.
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// [`ExportStats`] read at one moment, for the `otel_*` metrics.
#[derive(Debug, Clone, Copy)]
pub struct ExportCounts {
    /// Spans the collector accepted since the process started.
    pub exported: u64,
    /// Spans dropped: the queue was full, or the export that carried them failed or was cut
    /// short at shutdown.
    pub dropped: u64,
    /// Exports that failed or got no answer within the export timeout.
    pub failed: u64,
}

impl ExportStats {
    /// The counts now, each read on its own: a span may be counted in one and not yet in another.
    pub fn snapshot(&self) -> ExportCounts {
        ExportCounts {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The batch settings, from the standard `OTEL_BSP_*` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans the queue holds before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub max_queue_size: usize,
    /// Spans sent in one export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512), never more
    /// than the queue holds.
    pub max_export_batch_size: usize,
    /// How long queued spans may wait for a batch to fill before they are sent anyway
    /// (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub schedule_delay: Duration,
    /// How long one export may take before it counts as failed (`OTEL_BSP_EXPORT_TIMEOUT`,
    /// 30 s).
    pub export_timeout: Duration,
}

impl BatchConfig {
    /// Reads the `OTEL_BSP_*` variables through `var`, each a positive whole number (of
    /// milliseconds for the durations), with the specification's defaults for those unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(text) => text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!("{name}: {text:?} is not a positive whole number")
                    }),
            }
        };
        let max_queue_size = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)? as usize;
        let max_export_batch_size =
            (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)? as usize).min(max_queue_size);
        Ok(Self {
            max_queue_size,
            max_export_batch_size,
            schedule_delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            export_timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30000)?),
        })
    }
}

/// The span processor: hands finished, sampled spans to [`Export`] without waiting.
#[derive(Debug)]
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            STATS.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Flushing happens when [`Export::run`] stops; nothing waits here.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The task that sends batches to the collector.
pub struct Export<E> {
    exporter: E,
    spans: mpsc::Receiver<SpanData>,
    config: BatchConfig,
    /// The resource of the host's own spans (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
    host: Resource,
    /// One per component seen, the host's with `service.name` replaced.
    components: HashMap<String, Resource>,
    /// Whether the last export worked, so a failing collector is logged once, not per batch.
    healthy: bool,
}

/// Builds the processor and its export task.
pub fn pipeline<E: SpanExporter>(
    exporter: E,
    config: BatchConfig,
    host: Resource,
) -> (Queue, Export<E>) {
    let (sender, receiver) = mpsc::channel(config.max_queue_size);
    let export = Export {
        exporter,
        spans: receiver,
        config,
        host,
        components: HashMap::new(),
        healthy: true,
    };
    (Queue { spans: sender }, export)
}

impl<E: SpanExporter> Export<E> {
    /// Exports until `stop`, then exports what is queued (within `flush_within`, whatever the
    /// collector does) and returns.
    pub async fn run(mut self, stop: CancellationToken, flush_within: Duration) {
        let mut batch = Vec::with_capacity(self.config.max_export_batch_size);
        // Set when the stop comes: everything after it must be over by then.
        let mut flush_deadline: Option<tokio::time::Instant> = None;
        loop {
            // Wait for a first span, then for the batch to fill or the delay to pass.
            tokio::select! {
                received = self.spans.recv_many(&mut batch, self.config.max_export_batch_size) => {
                    if received == 0 {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
            let due = tokio::time::Instant::now() + self.config.schedule_delay;
            while batch.len() < self.config.max_export_batch_size {
                let room = self.config.max_export_batch_size - batch.len();
                tokio::select! {
                    received = self.spans.recv_many(&mut batch, room) => if received == 0 { break },
                    () = tokio::time::sleep_until(due) => break,
                    () = stop.cancelled() => break,
                }
            }
            if stop.is_cancelled() {
                // What was collected goes out with the flush below.
                break;
            }
            let count = batch.len() as u64;
            let export = self.export(std::mem::take(&mut batch));
            tokio::pin!(export);
            tokio::select! {
                () = &mut export => {}
                () = stop.cancelled() => {
                    // The export in flight gets the flush's time, no more.
                    let deadline = flush_deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + flush_within);
                    if tokio::time::timeout_at(*deadline, &mut export).await.is_err() {
                        STATS.dropped.fetch_add(count, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
        let flushing = async {
            self.spans.close();
            loop {
                let room = self.config.max_export_batch_size - batch.len();
                if self.spans.recv_many(&mut batch, room).await == 0 && batch.is_empty() {
                    break;
                }
                self.export(std::mem::take(&mut batch)).await;
            }
        };
        let deadline = flush_deadline.unwrap_or_else(|| tokio::time::Instant::now() + flush_within);
        if tokio::time::timeout_at(deadline, flushing).await.is_err() {
            tracing::warn!(
                within = ?flush_within,
                "spans still queued at shutdown were not all exported"
            );
        }
        let _ = self.exporter.shutdown();
    }

    /// Sends one batch, a request per service it holds spans of.
    async fn export(&mut self, batch: Vec<SpanData>) {
        let mut by_service: HashMap<Option<String>, Vec<SpanData>> = HashMap::new();
        for span in batch {
            let component = span
                .attributes
                .iter()
                .find(|attribute| attribute.key.as_str() == COMPONENT)
                .map(|attribute| attribute.value.as_str().into_owned());
            by_service.entry(component).or_default().push(span);
        }
        for (component, spans) in by_service {
            let resource = match component {
                Some(name) => self
                    .components
                    .entry(name)
                    .or_insert_with_key(|name| component_resource(&self.host, name))
                    .clone(),
                None => self.host.clone(),
            };
            self.exporter.set_resource(&resource);
            let count = spans.len() as u64;
            let outcome =
                tokio::time::timeout(self.config.export_timeout, self.exporter.export(spans)).await;
            match outcome {
                Ok(Ok(())) => {
                    STATS.exported.fetch_add(count, Ordering::Relaxed);
                    if !self.healthy {
                        tracing::info!("exporting spans to the OTLP collector again");
                        self.healthy = true;
                    }
                }
                Ok(Err(err)) => self.failed(count, &err.to_string()),
                Err(_) => self.failed(
                    count,
                    &format!("no answer within {:?}", self.config.export_timeout),
                ),
            }
        }
    }

    fn failed(&mut self, count: u64, why: &str) {
        STATS.failed.fetch_add(1, Ordering::Relaxed);
        STATS.dropped.fetch_add(count, Ordering::Relaxed);
        if self.healthy {
            tracing::warn!(
                error = %why,
                "cannot export spans to the OTLP collector; dropping them and counting in \
                 otel_spans_dropped_total until it works again (logged once)"
            );
            self.healthy = false;
        }
    }
}

/// The host's resource, with `service.name` the component's.
fn component_resource(host: &Resource, component: &str) -> Resource {
    let attributes = host
        .iter()
        .filter(|(key, _)| key.as_str() != "service.name")
        .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
        .chain([KeyValue::new("service.name", component.to_owned())]);
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_settings_come_from_the_standard_variables_and_bad_ones_are_refused() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        let config = BatchConfig::from_env(vars(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ]))
        .unwrap();
        assert_eq!(config.schedule_delay, Duration::from_millis(200));
        assert_eq!(config.max_queue_size, 100);
        assert_eq!(
            config.max_export_batch_size, 100,
            "a batch is never larger than the queue"
        );
        let error =
            BatchConfig::from_env(vars(&[("OTEL_BSP_EXPORT_TIMEOUT", "soon")])).unwrap_err();
        assert!(
            error.to_string().contains("OTEL_BSP_EXPORT_TIMEOUT"),
            "{error}"
        );
    }

    #[test]
    fn a_components_resource_is_the_hosts_with_its_own_service_name() {
        let host = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "host"),
                KeyValue::new("deployment.environment.name", "dev"),
            ])
            .build();
        let orders = component_resource(&host, "orders");
        assert_eq!(
            orders.get(&"service.name".into()).map(|v| v.to_string()),
            Some("orders".into())
        );
        assert_eq!(
            orders
                .get(&"deployment.environment.name".into())
                .map(|v| v.to_string()),
            Some("dev".into())
        );
    }
}
