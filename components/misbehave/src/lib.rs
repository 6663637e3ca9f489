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
//! | `GET /huge-value?bytes=N` | selects one value of N bytes, made by the server |
//! | `GET /long-statement?bytes=N` | sends a statement of N bytes (a long comment) |
//! | `GET /many-parameters?count=N` | sends a statement with N parameters |
//! | `GET /big-parameter?bytes=N` | sends a statement with one text parameter of N bytes |
//! | `GET /publish?field=F&bytes=N&count=C` | publishes C events to `misbehave.flood`, each with one string of N bytes as field F (`data-schema`, `content-type`, `id`, `topic` or `data`), reusing the one string |
//! | `GET /resources?count=N` | creates N `wasi:http` fields resources and keeps them |
//! | `GET /big-header?bytes=N` | answers with a header of N bytes |
//! | `GET /log-flood?lines=N` | writes N lines to stderr |
//! | `POST /sql` | runs the body as one SQL query and answers its rows as JSON (200), or the SQL error (422) |
//!
//! Each of the pushing paths answers 200 with what the host allowed and `{"code", "message"}`
//! of the error that stopped it. Its `message-handler` rejects every event.

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
        Err(HandleError::Reject(format!(
            "misbehave consumes nothing, not {}",
            event.topic
        )))
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
            run(&format!(
                "SELECT repeat('x', 1048576) FROM generate_series(1, {rows})"
            ))
        }
        "/huge-value" => {
            let bytes = number(query, "bytes").unwrap_or(300_000_000);
            run(&format!("SELECT repeat('x', {bytes})"))
        }
        "/long-statement" => {
            let bytes = number(query, "bytes").unwrap_or(2 << 20) as usize;
            run(&format!("SELECT 1 /* {} */", "x".repeat(bytes)))
        }
        "/many-parameters" => {
            let count = number(query, "count").unwrap_or(100_000) as usize;
            outcome(sql::query("SELECT 1", &vec![Value::Int32(1); count]).map(drop))
        }
        "/big-parameter" => {
            let bytes = number(query, "bytes").unwrap_or(2 << 20) as usize;
            outcome(sql::query("SELECT length($1)", &[Value::Text("x".repeat(bytes))]).map(drop))
        }
        "/publish" => publish_flood(query),
        "/resources" => {
            let count = number(query, "count").unwrap_or(1_000_000);
            let mut kept = Vec::new();
            for _ in 0..count {
                kept.push(spin_sdk::http::Fields::new());
            }
            text(200, &format!("{} resources", kept.len()))
        }
        "/big-header" => {
            let bytes = number(query, "bytes").unwrap_or(1 << 20) as usize;
            Response::builder()
                .status(200)
                .header("x-big", "x".repeat(bytes))
                .body("big header")
                .build()
        }
        "/log-flood" => {
            for line in 0..number(query, "lines").unwrap_or(100_000) {
                eprintln!("flooding the log, line {line}");
            }
            text(200, "flooded")
        }
        "/sql" => run(&String::from_utf8_lossy(request.body())),
        _ => text(404, "no such misbehaviour"),
    }
}

/// Publishes `count` events with one string of `bytes` bytes in `field`, reusing the string:
/// what the host keeps of them is its own memory, the guest's stays one string.
fn publish_flood(query: &str) -> Response {
    use service_guest::messaging::{OutgoingEvent, publish};
    let bytes = number(query, "bytes").unwrap_or(40 << 20) as usize;
    let count = number(query, "count").unwrap_or(30);
    let field = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("field="))
        .unwrap_or("data-schema");
    // JSON (a string) so that only the size could be refused for `data`.
    let long = format!("\"{}\"", "x".repeat(bytes.saturating_sub(2)));
    let mut published = 0;
    for n in 0..count {
        let mut event = OutgoingEvent {
            id: format!("flood-{n}"),
            topic: "misbehave.flood".into(),
            content_type: "application/json".into(),
            data_schema: None,
            data: b"{}".to_vec(),
        };
        match field {
            "data" => event.data = long.clone().into_bytes(),
            "id" => event.id = long.clone(),
            "topic" => event.topic = long.clone(),
            "content-type" => event.content_type = long.clone(),
            _ => event.data_schema = Some(long.clone()),
        }
        if let Err(err) = publish(&event) {
            let body = serde_json::json!({
                "published": published,
                "code": "publish",
                "message": format!("{err:?}"),
            });
            return json_response(200, &body);
        }
        published += 1;
    }
    json_response(200, &serde_json::json!({ "published": published }))
}

/// 200 with `{"code","message"}` of the error that stopped a pushing path, or `{"code": null}`.
fn outcome(result: Result<(), sql::Error>) -> Response {
    let (code, message) = match result {
        Ok(()) => (None, String::new()),
        Err(sql::Error::Database(db)) => (Some(db.code), db.message),
        Err(other) => (Some("other".to_owned()), format!("{other:?}")),
    };
    json_response(
        200,
        &serde_json::json!({ "code": code, "message": message }),
    )
}

fn json_response(status: u16, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
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
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs `statement` and answers its rows, or its error.
fn run(statement: &str) -> Response {
    match sql::query(statement, &[]) {
        Ok(rows) => {
            let rows: Vec<Vec<serde_json::Value>> = rows
                .rows
                .iter()
                .map(|row| row.iter().map(json).collect())
                .collect();
            let body = serde_json::json!({ "rows": rows });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(body.to_string())
                .build()
        }
        Err(err) => {
            let (code, message) = match &err {
                sql::Error::Database(db) => (db.code.clone(), db.message.clone()),
                sql::Error::Unavailable(why) => ("unavailable".to_owned(), why.clone()),
                other => ("other".to_owned(), format!("{other:?}")),
            };
            let status = if code == "unavailable" { 503 } else { 422 };
            let body = serde_json::json!({ "code": code, "message": message });
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body.to_string())
                .build()
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
        Value::Text(text) | Value::Uuid(text) | Value::Numeric(text) | Value::Json(text) => {
            text.as_str().into()
        }
        Value::Bytes(bytes) => bytes.len().into(),
        Value::Timestamp(micros) => (*micros).into(),
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .build()
}
