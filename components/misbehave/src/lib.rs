//! A component that misbehaves on request, for the host's tests; never deployed.
//!
//! It is built against the same world as the services (`wasi:http` plus `platform:service`)
//! and shows what a buggy or hostile component can do to a host, one path each:
//!
//! | request | what it does |
//! | --- | --- |
//! | `GET /ok` | answers 200 at once: the baseline |
//! | `GET /log` | writes a line to stdout and one to stderr, then answers 200 |
//! | `GET /panic` | panics (a trap, since components build with `panic = "abort"`) |
//! | `GET /unreachable` | executes `unreachable` |
//! | `GET /loop` | spins forever without calling the host |
//! | `GET /busy-host` | spins forever, calling the host (the clock) at every turn |
//! | `GET /alloc` | allocates until linear memory runs out |
//! | `GET /recurse` | recurses until the stack overflows |
//! | `GET /slow-sql?seconds=N` | runs `SELECT pg_sleep(N)` |
//! | `GET /huge-sql?rows=N` | selects N rows of 1 MB each |
//! | `POST /sql` | runs the body as one SQL query and answers its rows as JSON (200), or the SQL error (422) |
//!
//! Its `message-handler` rejects every event.

use std::hint::black_box;

use service_guest::sql::{self, Value};
use service_guest::{HandleError, IncomingEvent, MessageHandler};
use spin_sdk::http::{Request, Response};

/// The exports; their generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
        crate::dispatch(&request)
    }

    use crate::Handler;
    service_guest::export!(Handler);
}

pub struct Handler;

impl MessageHandler for Handler {
    fn handle(event: IncomingEvent) -> Result<(), HandleError> {
        Err(HandleError::Reject(format!("misbehave consumes nothing, not {}", event.topic)))
    }
}

fn dispatch(request: &Request) -> Response {
    let path = request.path();
    let query = request.query();
    match path {
        "/ok" => text(200, "ok"),
        "/log" => {
            println!("a line on stdout");
            eprintln!("a line on stderr");
            text(200, "logged")
        }
        "/panic" => panic!("asked to panic"),
        "/unreachable" => core::arch::wasm32::unreachable(),
        "/loop" => spin(),
        "/busy-host" => spin_calling_host(),
        "/alloc" => text(200, &format!("{}", allocate_forever())),
        "/recurse" => text(200, &format!("{}", recurse(black_box(1)))),
        "/slow-sql" => {
            let seconds = number(query, "seconds").unwrap_or(60);
            run(&format!("SELECT pg_sleep({seconds})::text"))
        }
        "/huge-sql" => {
            let rows = number(query, "rows").unwrap_or(100);
            run(&format!("SELECT repeat('x', 1048576) FROM generate_series(1, {rows})"))
        }
        "/sql" => run(&String::from_utf8_lossy(request.body())),
        _ => text(404, "no such misbehaviour"),
    }
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn spin_calling_host() -> ! {
    loop {
        black_box(std::time::Instant::now());
    }
}

fn allocate_forever() -> usize {
    let mut chunks = Vec::new();
    loop {
        chunks.push(black_box(vec![1u8; 1 << 20]));
        black_box(&chunks);
    }
}

#[allow(unconditional_recursion)] // on purpose: it ends in a stack overflow
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(black_box(frame[0] + 1)) + frame[63]
}

fn number(query: &str, key: &str) -> Option<u64> {
    query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs `statement` and answers its rows, or its error.
fn run(statement: &str) -> Response {
    match sql::query(statement, &[]) {
        Ok(rows) => {
            let rows: Vec<Vec<serde_json::Value>> =
                rows.rows.iter().map(|row| row.iter().map(json).collect()).collect();
            let body = serde_json::json!({ "rows": rows });
            Response::builder().status(200).header("content-type", "application/json").body(body.to_string()).build()
        }
        Err(err) => {
            let (code, message) = match &err {
                sql::Error::Database(db) => (db.code.clone(), db.message.clone()),
                sql::Error::Unavailable(why) => ("unavailable".to_owned(), why.clone()),
                other => ("other".to_owned(), format!("{other:?}")),
            };
            let status = if code == "unavailable" { 503 } else { 422 };
            let body = serde_json::json!({ "code": code, "message": message });
            Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
        }
    }
}

fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Int32(n) => (*n).into(),
        Value::Int64(n) => (*n).into(),
        Value::Float64(x) => (*x).into(),
        Value::Text(text) | Value::Uuid(text) | Value::Numeric(text) | Value::Json(text) => text.as_str().into(),
        Value::Bytes(bytes) => bytes.len().into(),
        Value::Timestamp(micros) => (*micros).into(),
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::builder().status(status).header("content-type", "text/plain").body(body.to_owned()).build()
}
