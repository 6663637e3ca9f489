//! How a unit of work ends, against the fake database.

use std::sync::Arc;

use super::fake::{Call, FakeDatabase};
use super::*;
use crate::bindings::sql as wit;
use crate::capabilities::memory::HostMemory;

fn one_row() -> Result<RowSet, Error> {
    Ok(RowSet {
        columns: vec!["n".into()],
        rows: vec![vec![Value::Int32(1)]],
    })
}

fn failing() -> Result<RowSet, Error> {
    Err(Error::Database(DatabaseError {
        code: "23505".into(),
        message: "duplicate key".into(),
        constraint: Some("orders_pkey".into()),
        column: None,
        detail: None,
    }))
}

fn far_deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(60)
}

const LIMITS: SqlLimits = SqlLimits {
    max_statement_bytes: 4096,
    max_parameters: 8,
    max_parameter_bytes: 4096,
    max_result_bytes: 64 * 1024,
};

fn context(database: &FakeDatabase) -> SqlCtx {
    context_with(database, LIMITS, HostMemory::new(1 << 20))
}

fn context_with(database: &FakeDatabase, limits: SqlLimits, memory: Arc<HostMemory>) -> SqlCtx {
    let component = SqlComponent {
        database: Arc::new(database.clone()),
        limits,
        memory,
        turns: Arc::new(Semaphore::new(1)),
        verdicts: Verdicts::default(),
    };
    SqlCtx::new(Arc::new(component), far_deadline())
}

fn stmt(text: &str) -> Statement<'_> {
    inspect(text).expect("a statement the host sends")
}

fn program_limit(answer: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(answer, Err(Error::Database(db)) if db.code == "54000")
}

fn names(calls: &[Call]) -> Vec<&'static str> {
    calls
        .iter()
        .map(|call| match call {
            Call::Begin => "begin",
            Call::Query(..) => "query",
            Call::Execute(..) => "execute",
            Call::Commit => "commit",
            Call::Rollback => "rollback",
        })
        .collect()
}

async fn run(
    answer: fn() -> Result<RowSet, Error>,
    succeeded: bool,
) -> (Result<Outcome, FinishError>, Vec<Call>) {
    let database = FakeDatabase::new(move |_, _| answer());
    let mut ctx = context(&database);
    let metrics = test_metrics();
    let mut sql = Sql::new(&mut ctx, &metrics);
    let _ = wit::Host::query(&mut sql, "SELECT 1".into(), vec![])
        .await
        .expect("no trap");
    let outcome = ctx.finish(succeeded).await;
    (outcome, database.calls())
}

#[tokio::test]
async fn a_unit_of_work_without_statements_opens_no_transaction() {
    let database = FakeDatabase::new(|_, _| one_row());
    let mut ctx = context(&database);
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::NoStatements)));
    assert!(database.calls().is_empty());
}

#[tokio::test]
async fn a_successful_handler_commits() {
    let (outcome, calls) = run(one_row, true).await;
    assert!(matches!(outcome, Ok(Outcome::Committed)));
    assert_eq!(names(&calls), ["begin", "query", "commit"]);
}

#[tokio::test]
async fn a_failed_handler_rolls_back() {
    let (outcome, calls) = run(one_row, false).await;
    assert!(matches!(outcome, Ok(Outcome::RolledBack)));
    assert_eq!(names(&calls), ["begin", "query", "rollback"]);
}

#[tokio::test]
async fn success_after_a_failed_statement_rolls_back_and_says_why() {
    let (outcome, calls) = run(failing, true).await;
    match outcome {
        Err(FinishError::StatementFailed(why)) => assert!(why.contains("23505"), "{why}"),
        other => panic!("expected StatementFailed, got {other:?}"),
    }
    assert_eq!(names(&calls), ["begin", "query", "rollback"]);
}

#[tokio::test]
async fn transaction_control_and_session_settings_are_refused_before_anything_is_sent() {
    let database = FakeDatabase::new(|_, _| one_row());
    let mut ctx = context(&database);
    for statement in [
        "COMMIT",
        "  rollback;",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "-- note\nSAVEPOINT a",
        "/* x */ set search_path = evil",
        "RESET ALL",
        "DISCARD ALL",
        "START TRANSACTION",
    ] {
        let answer = wit::Host::execute(
            &mut Sql::new(&mut ctx, &test_metrics()),
            statement.into(),
            vec![],
        )
        .await
        .expect("no trap");
        assert!(
            matches!(answer, Err(Error::Refused(_))),
            "{statement}: {answer:?}"
        );
    }
    assert!(database.calls().is_empty(), "{:?}", database.calls());
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::NoStatements)));
}

#[tokio::test]
async fn ordinary_statements_and_set_local_go_through() {
    let database = FakeDatabase::new(|_, _| one_row());
    let mut ctx = context(&database);
    for statement in [
        "SET LOCAL application_name = 'x'",
        "SELECT 1",
        "  -- c\n update t set a = 1",
        "WITH x AS (SELECT 1) SELECT * FROM x",
    ] {
        assert!(
            ctx.execute(stmt(statement), vec![]).await.is_ok(),
            "{statement}"
        );
    }
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::Committed)));
}

#[tokio::test]
async fn a_database_that_is_down_reports_unavailable_to_the_guest() {
    let database = FakeDatabase::new(|_, _| one_row());
    database.go_down("connection refused");
    let mut ctx = context(&database);
    let answer = wit::Host::execute(
        &mut Sql::new(&mut ctx, &test_metrics()),
        "DELETE FROM t".into(),
        vec![],
    )
    .await
    .expect("no trap");
    assert!(
        matches!(answer, Err(Error::Unavailable(ref why)) if why == "connection refused"),
        "{answer:?}"
    );
    assert_eq!(ctx.fault(), Some(Fault::Outage));
    // A handler that ignores the error and answers success is not believed: nothing was saved.
    assert!(matches!(
        ctx.finish(true).await,
        Err(FinishError::StatementFailed(_))
    ));
}

#[test]
fn an_unreachable_database_is_an_outage_and_a_deadlock_a_conflict() {
    let database = |code: &str| {
        Error::Database(DatabaseError {
            code: code.into(),
            message: String::new(),
            constraint: None,
            column: None,
            detail: None,
        })
    };
    assert_eq!(
        Fault::of(&Error::Unavailable("connection reset".into())),
        Fault::Outage
    );
    assert_eq!(Fault::of(&database("40001")), Fault::Conflict);
    assert_eq!(Fault::of(&database("40P01")), Fault::Conflict);
    assert_eq!(Fault::of(&database("23505")), Fault::UnitOfWork);
    assert_eq!(
        Fault::of(&database("57014")),
        Fault::UnitOfWork,
        "a statement timeout is the work's own"
    );
    assert_eq!(
        Fault::of(&Error::Refused("BEGIN".into())),
        Fault::UnitOfWork
    );
}

#[tokio::test]
async fn the_gravest_fault_of_a_unit_of_work_is_kept() {
    let database = FakeDatabase::new(|statement, _| match statement {
        "down" => Err(Error::Unavailable(
            "terminating connection (SQLSTATE 57P01)".into(),
        )),
        _ => failing(),
    });
    let mut ctx = context(&database);
    assert_eq!(ctx.fault(), None);
    let _ = ctx.query(stmt("down"), vec![]).await;
    assert_eq!(ctx.fault(), Some(Fault::Outage));
    let _ = ctx.query(stmt("SELECT 2"), vec![]).await;
    assert_eq!(ctx.fault(), Some(Fault::Outage));
}

const GUARD: &str = "INSERT INTO platform_inbox VALUES ($1)";

/// A context whose database changes `guard_rows` rows for the guard and one for anything else.
fn guarded(guard_rows: usize) -> (SqlCtx, FakeDatabase) {
    let database = FakeDatabase::new(move |statement, _| {
        let rows = if statement == GUARD { guard_rows } else { 1 };
        Ok(RowSet {
            columns: vec![],
            rows: vec![vec![]; rows],
        })
    });
    let mut ctx = context(&database);
    ctx.guard(
        "record the event",
        GUARD,
        vec![Value::Text("event-1".into())],
    );
    (ctx, database)
}

#[tokio::test]
async fn a_guard_that_passes_goes_ahead_of_the_first_statement_and_lets_the_work_commit() {
    let (mut ctx, database) = guarded(1);
    assert_eq!(
        ctx.execute(stmt("UPDATE orders SET status = 'x'"), vec![])
            .await
            .ok(),
        Some(1)
    );
    assert!(matches!(ctx.guarded(), Some(Guard::Passed)));
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::Committed)));
    assert_eq!(
        names(&database.calls()),
        ["begin", "execute", "execute", "commit"]
    );
    assert!(matches!(&database.calls()[1], Call::Execute(statement, _) if statement == GUARD));
}

#[tokio::test]
async fn a_guard_that_changes_no_row_refuses_the_work_and_rolls_it_back() {
    let (mut ctx, database) = guarded(0);
    assert!(matches!(
        ctx.execute(stmt("UPDATE orders SET status = 'x'"), vec![])
            .await,
        Err(Error::Refused(_))
    ));
    // Later statements, and statements deferred to the commit, are refused without reaching
    // the database.
    assert!(matches!(
        ctx.query(stmt("SELECT 1"), vec![]).await,
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        ctx.defer("INSERT INTO platform_outbox VALUES (1)", vec![])
            .await,
        Err(Error::Refused(_))
    ));
    assert!(matches!(ctx.guarded(), Some(Guard::NoRow)));
    assert!(matches!(
        ctx.finish(true).await,
        Err(FinishError::StatementFailed(_))
    ));
    assert_eq!(
        names(&database.calls()),
        ["begin", "execute", "execute", "rollback"]
    );
}

#[tokio::test]
async fn a_guard_is_sent_alone_before_a_commit_without_statements_and_not_at_all_before_a_rollback()
{
    let (mut ctx, database) = guarded(1);
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::Committed)));
    assert_eq!(names(&database.calls()), ["begin", "execute", "commit"]);

    let (mut ctx, database) = guarded(0);
    assert!(matches!(
        ctx.finish(true).await,
        Err(FinishError::StatementFailed(_))
    ));
    assert!(matches!(ctx.guarded(), Some(Guard::NoRow)));
    assert_eq!(names(&database.calls()), ["begin", "execute", "rollback"]);

    let (mut ctx, database) = guarded(1);
    assert!(matches!(ctx.finish(false).await, Ok(Outcome::NoStatements)));
    assert!(database.calls().is_empty());
}

fn test_metrics() -> crate::telemetry::metrics::ComponentMetrics {
    Arc::new(crate::telemetry::metrics::Metrics::new()).component("test")
}

#[tokio::test]
async fn a_statement_over_the_limits_is_refused_unsent_and_fails_the_unit_of_work() {
    let database = FakeDatabase::new(|_, _| one_row());
    let metrics = test_metrics();
    let long = format!("SELECT '{}'", "x".repeat(5000));
    let cases = [
        (long, vec![]),
        ("SELECT $1".to_owned(), vec![Value::Int32(1); 9]),
        ("SELECT $1".to_owned(), vec![Value::Text("y".repeat(5000))]),
    ];
    for (statement, params) in cases {
        let mut ctx = context(&database);
        let answer = wit::Host::query(&mut Sql::new(&mut ctx, &metrics), statement, params)
            .await
            .expect("no trap");
        assert!(program_limit(&answer), "{answer:?}");
        assert!(matches!(
            ctx.finish(true).await,
            Err(FinishError::StatementFailed(_))
        ));
    }
    assert!(
        database.calls().is_empty(),
        "nothing was sent: {:?}",
        database.calls()
    );
}

#[tokio::test]
async fn after_a_failed_statement_later_ones_are_refused_unsent_as_postgresql_would() {
    let database = FakeDatabase::new(|statement, _| {
        if statement.contains("bad") {
            failing()
        } else {
            one_row()
        }
    });
    let mut ctx = context(&database);
    assert!(ctx.query(stmt("SELECT bad"), vec![]).await.is_err());
    let next = ctx.query(stmt("SELECT 1"), vec![]).await;
    assert!(
        matches!(&next, Err(Error::Database(db))
            if db.code == "25P02" && db.message.contains("23505")),
        "{next:?}"
    );
    assert_eq!(names(&database.calls()), ["begin", "query"]);
}

#[tokio::test]
async fn a_result_over_its_limit_or_the_components_memory_is_refused() {
    let big = |_: &str, _: &[Value]| {
        Ok(RowSet {
            columns: vec!["t".into()],
            rows: vec![vec![Value::Text("z".repeat(10_000))]; 10],
        })
    };
    let database = FakeDatabase::new(big);
    let mut ctx = context(&database);
    let answer = ctx.query(stmt("SELECT t FROM big"), vec![]).await;
    assert!(
        matches!(&answer, Err(Error::Database(db)) if db.message.contains("max_result_bytes")),
        "{answer:?}"
    );

    // Within its own limit, but the component's share of memory is held by another unit of work.
    let memory = HostMemory::new(200 * 1024);
    let other = memory.reserve(150 * 1024).expect("fits");
    let generous = SqlLimits {
        max_result_bytes: 150 * 1024,
        ..LIMITS
    };
    let mut ctx = context_with(&database, generous, memory.clone());
    let answer = ctx.query(stmt("SELECT t FROM big"), vec![]).await;
    assert!(
        matches!(&answer, Err(Error::Database(db))
            if db.code == "53200" && db.message.contains("host_memory_mib")),
        "{answer:?}"
    );
    assert_eq!(
        ctx.fault(),
        Some(Fault::Conflict),
        "it may pass: a retry, not the work's own fault"
    );
    drop(other);
    let mut ctx = context_with(&database, generous, memory.clone());
    assert_eq!(
        ctx.query(stmt("SELECT t FROM big"), vec![])
            .await
            .expect("fits now")
            .rows
            .len(),
        10
    );
    assert!(
        memory.available() < 200 * 1024,
        "the rows on their way to the guest are held"
    );
    drop(ctx);
    assert_eq!(
        memory.available(),
        200 * 1024,
        "and given back with the unit of work"
    );
}
