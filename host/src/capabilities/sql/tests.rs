//! How a unit of work ends, against the fake database.

use std::sync::Arc;

use super::fake::{Call, FakeDatabase};
use super::*;

fn one_row() -> Result<RowSet, Error> {
    Ok(RowSet { columns: vec!["n".into()], rows: vec![vec![Value::Int32(1)]] })
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

async fn run(answer: fn() -> Result<RowSet, Error>, succeeded: bool) -> (Result<Outcome, FinishError>, Vec<Call>) {
    let database = FakeDatabase::new(move |_, _| answer());
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
    let mut sql = Sql::new(&mut ctx);
    let _ = wit::Host::query(&mut sql, "SELECT 1".into(), vec![]).await.expect("no trap");
    let outcome = ctx.finish(succeeded).await;
    (outcome, database.calls())
}

#[tokio::test]
async fn a_unit_of_work_without_statements_opens_no_transaction() {
    let database = FakeDatabase::new(|_, _| one_row());
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
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
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
    for statement in ["COMMIT", "  rollback;", "BEGIN ISOLATION LEVEL SERIALIZABLE", "-- note\nSAVEPOINT a",
                      "/* x */ set search_path = evil", "RESET ALL", "DISCARD ALL", "START TRANSACTION"] {
        let answer = ctx.execute(statement, vec![]).await;
        assert!(matches!(answer, Err(Error::Refused(_))), "{statement}: {answer:?}");
    }
    assert!(database.calls().is_empty(), "{:?}", database.calls());
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::NoStatements)));
}

#[tokio::test]
async fn ordinary_statements_and_set_local_go_through() {
    let database = FakeDatabase::new(|_, _| one_row());
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
    for statement in ["SET LOCAL statement_timeout = 1000", "SELECT 1", "  -- c\n update t set a = 1", "WITH x AS (SELECT 1) SELECT * FROM x"] {
        assert!(ctx.execute(statement, vec![]).await.is_ok(), "{statement}");
    }
    assert!(matches!(ctx.finish(true).await, Ok(Outcome::Committed)));
}

#[tokio::test]
async fn a_database_that_is_down_reports_unavailable_to_the_guest() {
    let database = FakeDatabase::new(|_, _| one_row());
    database.go_down("connection refused");
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
    let answer = wit::Host::execute(&mut Sql::new(&mut ctx), "DELETE FROM t".into(), vec![]).await.expect("no trap");
    assert!(matches!(answer, Err(Error::Unavailable(ref why)) if why == "connection refused"), "{answer:?}");
    assert_eq!(ctx.fault(), Some(Fault::Outage));
    // A handler that ignores the error and answers success is not believed: nothing was saved.
    assert!(matches!(ctx.finish(true).await, Err(FinishError::StatementFailed(_))));
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
    assert_eq!(Fault::of(&Error::Unavailable("connection reset".into())), Fault::Outage);
    assert_eq!(Fault::of(&database("40001")), Fault::Conflict);
    assert_eq!(Fault::of(&database("40P01")), Fault::Conflict);
    assert_eq!(Fault::of(&database("23505")), Fault::UnitOfWork);
    assert_eq!(Fault::of(&database("57014")), Fault::UnitOfWork, "a statement timeout is the work's own");
    assert_eq!(Fault::of(&Error::Refused("BEGIN".into())), Fault::UnitOfWork);
}

#[tokio::test]
async fn the_gravest_fault_of_a_unit_of_work_is_kept() {
    let database = FakeDatabase::new(|statement, _| match statement {
        "down" => Err(Error::Unavailable("terminating connection (SQLSTATE 57P01)".into())),
        _ => failing(),
    });
    let mut ctx = SqlCtx::new(Arc::new(database.clone()), far_deadline());
    assert_eq!(ctx.fault(), None);
    let _ = ctx.query("SELECT 1", vec![]).await;
    assert_eq!(ctx.fault(), Some(Fault::UnitOfWork));
    let _ = ctx.query("down", vec![]).await;
    let _ = ctx.query("SELECT 2", vec![]).await;
    assert_eq!(ctx.fault(), Some(Fault::Outage));
}
