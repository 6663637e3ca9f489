//! The host's Prometheus metrics, served by the admin listener at `/metrics` (OpenMetrics text).
//!
//! Names and units follow OpenTelemetry's semantic conventions as Prometheus spells them
//! (`http.server.request.duration` in seconds becomes `http_server_request_duration_seconds`).
//! Every label has a bounded set of values: component names come from the manifest, routes
//! from the component's own route table (see [`crate::capabilities::route`]), topics from the
//! manifest, SQL operations from a fixed list, status codes as classes.
//!
//! One [`Metrics`] per host, built with it; each service keeps a [`ComponentMetrics`] of
//! handles already labelled with its name. Counters and histograms are updated where things
//! happen; gauges of state (instances running, pool connections, the broker connection, the
//! outbox backlog) are read when `/metrics` is scraped ([`Metrics::encode`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::labels::status_class;
pub use super::labels::{Name, method_label};
pub use super::snapshot::{MessagingSample, ServiceSnapshot, Snapshot};

/// The content type of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds: OpenTelemetry's advice for HTTP durations, with finer ones below
/// 5 ms, where most of a service's requests and statements fall.
const SECONDS_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 10.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

type Seconds<L> = Family<L, Histogram, fn() -> Histogram>;
type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ComponentLabel {
    component: Name,
}

/// The labels of `http_server_request_duration_seconds`: one series per component, route,
/// method and status class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The component that served the request.
    pub component: Name,
    /// The route template, such as `/orders/orders/{id}`; empty when no route matched.
    pub http_route: Name,
    /// The request's method, or `_OTHER` for one that is not standard (see [`method_label`]).
    pub http_request_method: &'static str,
    /// `2xx`, `4xx`, `5xx`...
    pub http_response_status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UnitOfWorkLabels {
    component: Name,
    /// `http` or `message`.
    trigger: &'static str,
    /// The unit of work's verdict (see [`crate::service::unit_of_work::Verdict::label`]):
    /// `committed`, `empty` (no statement ran), `rolled_back`, `duplicate` (a delivery of an event
    /// handled before: rolled back, as it must be), `timed_out`, `trapped`, `busy`, `outage`,
    /// `conflict`, `outcome_unknown`, `failed` or `refused`.
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    component: Name,
    db_operation_name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TopicLabels {
    component: Name,
    topic: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    component: Name,
    topic: Name,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TrapLabels {
    component: Name,
    trigger: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    component: Name,
    state: &'static str,
}

/// Every metric of one host.
pub struct Metrics {
    registry: Registry,
    requests: Seconds<RequestLabels>,
    units_of_work: Family<UnitOfWorkLabels, Counter>,
    statements: Seconds<OperationLabels>,
    published: Family<TopicLabels, Counter>,
    relayed: Family<TopicLabels, Counter>,
    unsendable: Family<ComponentLabel, Counter>,
    outbox_unsendable: Family<ComponentLabel, Gauge>,
    dead_letters: Family<TopicLabels, Gauge>,
    dead_letter_limit: Family<TopicLabels, Gauge>,
    deliveries: Family<DeliveryLabels, Counter>,
    lag: Seconds<TopicLabels>,
    traps: Family<TrapLabels, Counter>,
    swaps: Family<ComponentLabel, Counter>,
    failed_loads: Family<ComponentLabel, Counter>,
    instances: Family<ComponentLabel, Gauge>,
    connections: Family<ConnectionLabels, Gauge>,
    connections_max: Family<ComponentLabel, Gauge>,
    outbox_backlog: Family<ComponentLabel, Gauge>,
    outbox_age: Family<ComponentLabel, F64Gauge>,
    inbox: Family<ComponentLabel, Gauge>,
    broker_connected: Family<ComponentLabel, Gauge>,
    spans_exported: Counter,
    spans_dropped: Counter,
    span_exports_failed: Counter,
    log_lines_dropped: Family<ComponentLabel, Counter>,
    host_log_lines_dropped: Counter,
    /// Held while a scrape sets the state gauges and encodes.
    scraping: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered and empty; built once per host and shared by `Arc`.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests =
            Seconds::<RequestLabels>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP requests served by components, from the first byte read to the \
             response, unit of work included",
            Unit::Seconds,
            requests.clone(),
        );
        let units_of_work = Family::default();
        registry.register(
            "units_of_work",
            "Units of work ended, by how",
            units_of_work.clone(),
        );
        let statements = Seconds::<OperationLabels>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "db_client_operation_duration",
            "Duration of components' SQL statements, by operation",
            Unit::Seconds,
            statements.clone(),
        );
        let published = Family::default();
        registry.register(
            "messaging_events_published",
            "Events written to the outbox by units of work that committed",
            published.clone(),
        );
        let relayed = Family::default();
        registry.register(
            "messaging_events_relayed",
            "Outbox events the broker confirmed",
            relayed.clone(),
        );
        let unsendable = Family::default();
        registry.register(
            "messaging_events_unsendable",
            "Outbox rows the relay set aside for good: a value out of bounds, a topic the \
             component may not publish, data that is not JSON",
            unsendable.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "messaging_dead_letters",
            "Messages in a subscription's dead-letter queue, read at the scrape",
            dead_letters.clone(),
        );
        let dead_letter_limit = Family::default();
        registry.register(
            "messaging_dead_letter_limit",
            "Messages a subscription's dead-letter queue holds at most (messaging.dead_letter_max)",
            dead_letter_limit.clone(),
        );
        let outbox_unsendable = Family::default();
        registry.register(
            "outbox_unsendable_events",
            "Outbox rows set aside as unsendable, still in the table",
            outbox_unsendable.clone(),
        );
        let deliveries = Family::default();
        registry.register(
            "messaging_deliveries",
            "Deliveries settled, by outcome: handled, duplicate, retried, dead_lettered, requeued \
             (database away)",
            deliveries.clone(),
        );
        let lag =
            Seconds::<TopicLabels>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "messaging_event_lag",
            "Time from the start of the unit of work that published an event to the commit of \
             its handling here",
            Unit::Seconds,
            lag.clone(),
        );
        let traps = Family::default();
        registry.register(
            "wasm_traps",
            "Calls into a component that trapped or ran out of time",
            traps.clone(),
        );
        let swaps = Family::default();
        registry.register(
            "component_swaps",
            "New code swapped in while running",
            swaps.clone(),
        );
        let failed_loads = Family::default();
        registry.register(
            "component_load_failures",
            "Loads of new code that failed and changed nothing",
            failed_loads.clone(),
        );
        let instances = Family::default();
        registry.register(
            "wasm_instances_running",
            "Units of work running now (one instance each)",
            instances.clone(),
        );
        let connections = Family::default();
        registry.register(
            "db_client_connection_count",
            "Pooled database connections, by state",
            connections.clone(),
        );
        let connections_max = Family::default();
        registry.register(
            "db_client_connection_max",
            "Most connections the pool opens",
            connections_max.clone(),
        );
        let outbox_backlog = Family::default();
        registry.register(
            "outbox_backlog_events",
            "Committed events not yet confirmed by the broker",
            outbox_backlog.clone(),
        );
        let outbox_age = Family::default();
        registry.register_with_unit(
            "outbox_oldest_unsent_age",
            "Age of the oldest event not yet confirmed by the broker; 0 when none waits",
            Unit::Seconds,
            outbox_age.clone(),
        );
        let inbox = Family::default();
        registry.register(
            "inbox_events",
            "Events recorded as handled (the inbox), estimated",
            inbox.clone(),
        );
        let broker_connected = Family::default();
        registry.register(
            "messaging_broker_connected",
            "1 while the component's broker connection is up",
            broker_connected.clone(),
        );
        let spans_exported = Counter::default();
        registry.register(
            "otel_spans_exported",
            "Spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "otel_spans_dropped",
            "Spans dropped because the export queue was full or the export failed",
            spans_dropped.clone(),
        );
        let span_exports_failed = Counter::default();
        registry.register(
            "otel_span_exports_failed",
            "Span exports that failed or timed out",
            span_exports_failed.clone(),
        );
        let log_lines_dropped = Family::default();
        registry.register(
            "component_log_lines_dropped",
            "Lines of a component's stdout and stderr not logged: over its log_lines_per_second",
            log_lines_dropped.clone(),
        );
        let host_log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines of the host dropped because its output could not keep up",
            host_log_lines_dropped.clone(),
        );
        Self {
            registry,
            requests,
            units_of_work,
            statements,
            published,
            relayed,
            unsendable,
            outbox_unsendable,
            dead_letters,
            dead_letter_limit,
            deliveries,
            lag,
            traps,
            swaps,
            failed_loads,
            instances,
            connections,
            connections_max,
            outbox_backlog,
            outbox_age,
            inbox,
            broker_connected,
            spans_exported,
            spans_dropped,
            span_exports_failed,
            log_lines_dropped,
            host_log_lines_dropped,
            scraping: std::sync::Mutex::new(()),
        }
    }

    /// The handles of one component.
    pub fn component(self: &Arc<Self>, name: &str) -> ComponentMetrics {
        ComponentMetrics {
            name: Name::from(name),
            metrics: self.clone(),
        }
    }

    /// Writes every metric, with the state gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        // One scrape at a time sets the state gauges and writes them out, so two scrapers at
        // once (a Prometheus pair) each see their own snapshot.
        let _scrape = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for service in &snapshot.services {
            let component = ComponentLabel {
                component: service.component.clone(),
            };
            self.instances
                .get_or_create(&component)
                .set(service.instances as i64);
            if let Some((used, idle, max)) = service.connections {
                for (state, count) in [("used", used), ("idle", idle)] {
                    let labels = ConnectionLabels {
                        component: service.component.clone(),
                        state,
                    };
                    self.connections.get_or_create(&labels).set(count as i64);
                }
                self.connections_max
                    .get_or_create(&component)
                    .set(max as i64);
            }
            for (topic, depth, limit) in &service.dead_letters {
                let labels = TopicLabels {
                    component: service.component.clone(),
                    topic: topic.as_str().into(),
                };
                self.dead_letters
                    .get_or_create(&labels)
                    .set(i64::from(*depth));
                self.dead_letter_limit
                    .get_or_create(&labels)
                    .set(i64::from(*limit));
            }
            if let Some(connected) = service.broker_connected {
                self.broker_connected
                    .get_or_create(&component)
                    .set(i64::from(connected));
            }
            match service.messaging {
                Some(sample) => {
                    self.outbox_backlog
                        .get_or_create(&component)
                        .set(sample.outbox_backlog);
                    self.outbox_age
                        .get_or_create(&component)
                        .set(sample.outbox_oldest_age_seconds);
                    self.inbox.get_or_create(&component).set(sample.inbox_rows);
                    self.outbox_unsendable
                        .get_or_create(&component)
                        .set(sample.outbox_unsendable);
                }
                // Not read this time (the database did not answer): no value rather than a stale
                // one.
                None => {
                    self.outbox_backlog.remove(&component);
                    self.outbox_age.remove(&component);
                    self.inbox.remove(&component);
                    self.outbox_unsendable.remove(&component);
                }
            }
        }

        let export = super::export::STATS.snapshot();
        set_counter(&self.spans_exported, export.exported);
        set_counter(&self.spans_dropped, export.dropped);
        set_counter(&self.span_exports_failed, export.failed);
        set_counter(&self.host_log_lines_dropped, super::log_lines_dropped());
        let mut text = String::new();
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Brings a counter that mirrors a process-wide count up to it.
fn set_counter(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// One component's metrics.
#[derive(Clone)]
pub struct ComponentMetrics {
    name: Name,
    metrics: Arc<Metrics>,
}

impl ComponentMetrics {
    /// The component's name, as its series are labelled.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// An HTTP request it served ended with `status` after `seconds`; `route` is the route the
    /// component named for it (under its prefix), if any.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        method: &http::Method,
        status: u16,
        seconds: f64,
    ) {
        let labels = RequestLabels {
            component: self.name.clone(),
            http_route: Name(route.cloned().unwrap_or_else(|| "".into())),
            http_request_method: method_label(method),
            http_response_status_class: status_class(status),
        };
        self.metrics
            .requests
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A unit of work ended, with its verdict's label.
    pub fn unit_of_work(&self, trigger: &'static str, outcome: &'static str) {
        let labels = UnitOfWorkLabels {
            component: self.name.clone(),
            trigger,
            outcome,
        };
        self.metrics.units_of_work.get_or_create(&labels).inc();
    }

    /// One of its SQL statements took `seconds`; `operation` is from a fixed list (`SELECT`,
    /// `INSERT`, ... or `OTHER`).
    pub fn statement(&self, operation: &'static str, seconds: f64) {
        let labels = OperationLabels {
            component: self.name.clone(),
            db_operation_name: operation,
        };
        self.metrics
            .statements
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A unit of work that committed wrote `events` events for `topic` to the outbox.
    pub fn published(&self, topic: &str, events: u64) {
        let labels = TopicLabels {
            component: self.name.clone(),
            topic: topic.into(),
        };
        self.metrics.published.get_or_create(&labels).inc_by(events);
    }

    /// The broker confirmed one outbox event for `topic` that the relay sent.
    pub fn relayed(&self, topic: &str) {
        let labels = TopicLabels {
            component: self.name.clone(),
            topic: topic.into(),
        };
        self.metrics.relayed.get_or_create(&labels).inc();
    }

    /// The relay set `rows` outbox rows aside as unsendable.
    pub fn unsendable(&self, rows: u64) {
        self.metrics
            .unsendable
            .get_or_create(&ComponentLabel {
                component: self.name.clone(),
            })
            .inc_by(rows);
    }

    /// A delivery settled: `handled`, `duplicate`, `retried`, `dead_lettered` or `requeued`.
    pub fn delivery(&self, topic: &str, outcome: &'static str) {
        let labels = DeliveryLabels {
            component: self.name.clone(),
            topic: topic.into(),
            outcome,
        };
        self.metrics.deliveries.get_or_create(&labels).inc();
    }

    /// An event was handled `seconds` after its publisher committed it.
    pub fn event_lag(&self, topic: &str, seconds: f64) {
        let labels = TopicLabels {
            component: self.name.clone(),
            topic: topic.into(),
        };
        self.metrics
            .lag
            .get_or_create(&labels)
            .observe(seconds.max(0.0));
    }

    /// A call into the component trapped or ran out of time; `trigger` is `http` or `message`.
    pub fn trap(&self, trigger: &'static str) {
        let labels = TrapLabels {
            component: self.name.clone(),
            trigger,
        };
        self.metrics.traps.get_or_create(&labels).inc();
    }

    /// New code for the component was swapped in while it ran.
    pub fn swapped(&self) {
        self.metrics
            .swaps
            .get_or_create(&ComponentLabel {
                component: self.name.clone(),
            })
            .inc();
    }

    /// One of its guests' log lines was dropped.
    pub fn log_line_dropped(&self) {
        self.metrics
            .log_lines_dropped
            .get_or_create(&ComponentLabel {
                component: self.name.clone(),
            })
            .inc();
    }

    /// A load of new code for the component failed and changed nothing.
    pub fn load_failed(&self) {
        self.metrics
            .failed_loads
            .get_or_create(&ComponentLabel {
                component: self.name.clone(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_metrics_with_their_units_and_ends_with_eof() {
        let metrics = Arc::new(Metrics::new());
        let orders = metrics.component("orders");
        orders.request(
            Some(&Arc::from("/orders/orders/{id}")),
            &http::Method::GET,
            200,
            0.002,
        );
        orders.unit_of_work("http", "committed");
        let orders_state = ServiceSnapshot {
            component: Name::from("orders"),
            instances: 0,
            connections: None,
            broker_connected: Some(true),
            dead_letters: Vec::new(),
            messaging: None,
        };
        let text = metrics.encode(&Snapshot {
            services: vec![orders_state],
        });
        assert!(
            text.contains(
                "http_server_request_duration_seconds_count{component=\"orders\",\
                 http_route=\"/orders/orders/{id}\",http_request_method=\"GET\",\
                 http_response_status_class=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "units_of_work_total{component=\"orders\",trigger=\"http\",outcome=\"committed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("messaging_broker_connected{component=\"orders\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
