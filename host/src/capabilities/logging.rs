//! Guest logs: what a component writes to stdout or stderr becomes `tracing` events of the host,
//! one per line, carrying the component's name (and, when spans are exported, the trace and
//! span ids), inside the span of the request or delivery being handled (writes happen during
//! the guest's call, on its task), so they also land in the trace as span events. Stderr lines are
//! warnings, stdout lines information.
//!
//! A component's guests together log at most `log_lines_per_second` lines a second, with bursts
//! of as many ([`LogRate`], one per component): the rest are dropped, counted in
//! `component_log_lines_dropped_total`, and said once a second in a line of the host's. Writing
//! never blocks the guest: lines go to the host's log, whose output is buffered and drops (and
//! counts) what does not fit rather than wait (see [`crate::telemetry`]).
//!
//! Created per store by [`crate::state::StoreState::new`]; a partial last line is logged when
//! the store is dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::telemetry::metrics::ComponentMetrics;

/// A line longer than this is logged in pieces rather than buffered without bound (each piece is
/// also an event of the span, which waits in the export queue while the collector is slow).
const MAX_LINE: usize = 2 * 1024;

/// Which of the guest's streams a log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout: its lines are logged at level INFO.
    Stdout,
    /// The guest's stderr: its lines are logged at level WARN.
    Stderr,
}

/// How many lines a component's guests may log, shared by all of them.
pub struct LogRate {
    component: Arc<str>,
    per_second: u32,
    bucket: Mutex<Bucket>,
    metrics: ComponentMetrics,
}

struct Bucket {
    /// Lines that may be logged now, up to `per_second`.
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the host last said so, and when it did.
    dropped: u64,
    reported: Instant,
}

/// Whether a line may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The line may be logged, and nothing dropped is left to be said.
    Yes,
    /// Yes, and this many lines were dropped before it, which should be said first.
    AfterDropping(u64),
    /// The component has used its lines for now: the line is dropped and counted.
    No,
}

impl LogRate {
    /// The rate of one component, its bucket full: built once with its service and shared by
    /// `Arc` with every store's [`GuestLog`]s.
    pub fn new(component: &str, per_second: u32, metrics: ComponentMetrics) -> Arc<Self> {
        let now = Instant::now();
        let bucket = Bucket {
            tokens: f64::from(per_second),
            refilled: now,
            dropped: 0,
            reported: now,
        };
        Arc::new(Self {
            component: component.into(),
            per_second,
            bucket: Mutex::new(bucket),
            metrics,
        })
    }

    /// Takes one line's turn, if there is one now.
    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = f64::from(self.per_second);
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(rate);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            bucket.dropped += 1;
            drop(bucket);
            self.metrics.log_line_dropped();
            return Admit::No;
        }
        bucket.tokens -= 1.0;
        if bucket.dropped > 0 && now.duration_since(bucket.reported) >= Duration::from_secs(1) {
            let dropped = std::mem::take(&mut bucket.dropped);
            bucket.reported = now;
            return Admit::AfterDropping(dropped);
        }
        Admit::Yes
    }

    /// Whether a line may be logged, saying first (in a line of the host's) how many were dropped.
    pub fn allows_line(&self) -> bool {
        match self.admit() {
            Admit::Yes => true,
            Admit::No => false,
            Admit::AfterDropping(dropped) => {
                tracing::warn!(
                    component = %self.component,
                    dropped,
                    per_second = self.per_second,
                    "log lines of the component dropped: it logged more than log_lines_per_second"
                );
                true
            }
        }
    }
}

/// A guest output stream that logs.
#[derive(Clone)]
pub struct GuestLog {
    component: Arc<str>,
    stream: Stream,
    rate: Arc<LogRate>,
}

impl GuestLog {
    /// The log of one of a store's streams, for `component`, sharing the component's `rate`.
    pub fn new(component: Arc<str>, stream: Stream, rate: Arc<LogRate>) -> Self {
        Self {
            component,
            stream,
            rate,
        }
    }

    fn lines(&self) -> Lines {
        Lines {
            log: self.clone(),
            pending: Vec::new(),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.lines())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.lines())
    }
}

/// Splits written bytes into lines and logs each.
struct Lines {
    log: GuestLog,
    /// Bytes after the last newline.
    pending: Vec<u8>,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        if self.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }

    /// Logs `line`, in pieces of at most [`MAX_LINE`] bytes.
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut rest = text.trim_end();
        while !rest.is_empty() {
            let piece = crate::telemetry::truncated(rest, MAX_LINE);
            self.emit_piece(piece);
            rest = &rest[piece.len()..];
        }
    }

    fn emit_piece(&self, text: &str) {
        if !self.log.rate.allows_line() {
            return;
        }
        let component = &*self.log.component;
        // The ids of the request's or delivery's trace, when spans are exported.
        let (trace_id, span_id) = crate::telemetry::propagation::current_ids().unzip();
        let (trace_id, span_id) = (trace_id.as_deref(), span_id.as_deref());
        match self.log.stream {
            Stream::Stderr => {
                tracing::warn!(target: "component", component, trace_id, span_id, "{text}")
            }
            Stream::Stdout => {
                tracing::info!(target: "component", component, trace_id, span_id, "{text}")
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
    }
}

impl OutputStream for Lines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for Lines {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Runs `write` with a subscriber that records formatted events, and returns them.
    fn logged(write: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, write);
        let bytes = buffer.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    fn rate(per_second: u32) -> Arc<LogRate> {
        LogRate::new(
            "orders",
            per_second,
            Arc::new(crate::telemetry::metrics::Metrics::new()).component("orders"),
        )
    }

    fn guest_log(stream: Stream) -> GuestLog {
        GuestLog::new("orders".into(), stream, rate(1000))
    }

    #[test]
    fn each_line_is_one_event_tagged_with_the_component() {
        let log = logged(|| {
            let mut lines = guest_log(Stream::Stderr).lines();
            lines.push(b"first line\nsecond ");
            lines.push(b"line\n");
        });
        let events: Vec<&str> = log.lines().collect();
        assert_eq!(events.len(), 2, "{log}");
        assert!(
            events[0].contains("WARN") && events[0].contains("component=\"orders\""),
            "{log}"
        );
        assert!(events[0].contains("component: first line "), "{log}");
        assert!(events[1].contains("component: second line "), "{log}");
    }

    #[test]
    fn an_unfinished_last_line_is_logged_when_the_stream_goes() {
        let log = logged(|| {
            let mut lines = guest_log(Stream::Stdout).lines();
            lines.push(b"no newline");
        });
        assert!(
            log.contains("INFO") && log.contains("component: no newline "),
            "{log}"
        );
    }

    #[test]
    fn a_very_long_line_is_logged_in_pieces_instead_of_buffered_forever() {
        let log = logged(|| {
            let mut lines = guest_log(Stream::Stdout).lines();
            lines.push(&vec![b'x'; MAX_LINE + 10]);
            assert!(lines.pending.is_empty());
            // One write may hold a line many times the limit.
            lines.push(&[vec![b'y'; 3 * MAX_LINE].as_slice(), b"\n"].concat());
        });
        assert_eq!(log.lines().count(), 2 + 3, "{log}");
    }

    #[test]
    fn lines_past_the_rate_are_dropped_counted_and_said_once() {
        let rate = rate(10);
        let admitted: Vec<Admit> = (0..25).map(|_| rate.admit()).collect();
        assert_eq!(
            admitted
                .iter()
                .filter(|admit| **admit == Admit::Yes)
                .count(),
            10,
            "a burst of the rate"
        );
        assert_eq!(
            admitted.iter().filter(|admit| **admit == Admit::No).count(),
            15
        );
        {
            let mut bucket = rate.bucket.lock().expect("lock");
            bucket.refilled -= Duration::from_secs(2);
            bucket.reported -= Duration::from_secs(2);
        }
        assert_eq!(rate.admit(), Admit::AfterDropping(15));
        assert_eq!(rate.admit(), Admit::Yes, "said once");
        let log = logged(|| {
            let mut lines = GuestLog::new(
                "orders".into(),
                Stream::Stdout,
                LogRate::new(
                    "orders",
                    2,
                    Arc::new(crate::telemetry::metrics::Metrics::new()).component("orders"),
                ),
            )
            .lines();
            lines.push(b"1\n2\n3\n4\n");
        });
        assert_eq!(log.lines().count(), 2, "{log}");
    }
}
