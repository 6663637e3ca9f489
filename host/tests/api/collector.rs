//! Span export when the collector is in trouble or the host stops: a collector that never
//! answers or is unreachable costs requests nothing and is logged once; spans still queued at
//! shutdown are flushed; shutdown never waits long on the collector. The host runs as its own
//! process (see [`crate::process`]).

use std::time::{Duration, Instant};

use crate::helpers;
use crate::otlp::{self, Receiver, Silent};
use crate::process::HostProcess;
use crate::telemetry::{client_context, exporting_to, metric, start, wait_for_metric_above};

#[tokio::test]
async fn a_collector_that_never_answers_drops_spans_counts_them_and_is_logged_once() {
    let silent = Silent::start().await;
    let mut otel = exporting_to(format!("http://{}", silent.address));
    otel.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "300".into()));
    otel.push(("OTEL_BSP_MAX_QUEUE_SIZE", "64".into()));
    let traced = start(|_| helpers::amqp_base(), &otel).await;

    // Every request is answered (its latency is bench/otel.sh's to measure).
    for _ in 0..40 {
        traced.post_order(&client_context().2).await;
    }
    let metrics = wait_for_metric_above(&traced.host, "otel_span_exports_failed_total", 1.0).await;
    assert!(
        metric(&metrics, "otel_spans_dropped_total").is_some_and(|dropped| dropped > 0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "otel_spans_exported_total"),
        Some(0.0),
        "{metrics}"
    );
    let complaints = complaints(&traced.host);
    assert_eq!(
        complaints, 1,
        "the export problem is logged once, not per span or batch"
    );
}

#[tokio::test]
async fn spans_still_queued_at_shutdown_reach_the_collector() {
    let receiver = Receiver::start().await;
    let otel = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        // No batch is due before the host stops.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
    ];
    let traced = start(|_| helpers::amqp_base(), &otel).await;
    let (trace_id, client_span, traceparent) = client_context();

    traced.post_order(&traceparent).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.trace(&trace_id).is_empty(), "nothing was due yet");
    assert!(traced.host.stop().await.success());

    let spans = receiver.trace(&trace_id);
    let server = spans.iter().find(|span| span.name == "POST /orders/orders");
    assert!(
        server.is_some_and(|server| server.parent_span_id == client_span),
        "flushed on shutdown:\n{}",
        otlp::tree(&spans)
    );
}

#[tokio::test]
async fn the_host_stops_promptly_while_an_export_hangs() {
    let silent = Silent::start().await;
    let mut otel = exporting_to(format!("http://{}", silent.address));
    otel.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "120000".into()));
    otel.push(("OTEL_BSP_EXPORT_TIMEOUT", "120000".into()));
    let traced = start(|_| helpers::amqp_base(), &otel).await;
    for _ in 0..5 {
        traced.post_order(&client_context().2).await;
    }
    // An export is under way by now (one every 100 ms), and will never be answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    assert!(traced.host.stop().await.success());
    // The flush gives up after 5 s; the rest of shutdown takes well under a second here.
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "shutdown waited on the collector: {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_collector_is_logged_once() {
    // A port nothing listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    let traced = start(
        |_| helpers::amqp_base(),
        &exporting_to(format!("http://{unused}")),
    )
    .await;
    for _ in 0..10 {
        traced.post_order(&client_context().2).await;
    }
    wait_for_metric_above(&traced.host, "otel_span_exports_failed_total", 1.0).await;
    assert_eq!(complaints(&traced.host), 1);
    assert!(traced.host.stop().await.success());
}

/// How many times the host logged that it cannot export.
fn complaints(host: &HostProcess) -> usize {
    host.log()
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot export spans"))
        })
        .count()
}
