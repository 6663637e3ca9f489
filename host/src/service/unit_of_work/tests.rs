//! The one classification of how a unit of work ended, against the fake database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::*;
use crate::capabilities::memory::HostMemory;
use crate::capabilities::sql::fake::FakeDatabase;
use crate::capabilities::sql::{
    DatabaseError, Error, RowSet, SqlComponent, SqlLimits, Value, Verdicts, inspect,
};

const INBOX: &str = "INSERT INTO platform_inbox (source, event_id, topic) VALUES ($1, $2, $3)";

fn database_error(code: &str) -> Error {
    Error::Database(DatabaseError {
        code: code.into(),
        message: format!("failed with {code}"),
        constraint: None,
        column: None,
        detail: None,
    })
}

fn rows(n: usize) -> Result<RowSet, Error> {
    Ok(RowSet {
        columns: vec!["n".into()],
        rows: vec![vec![Value::Int32(1)]; n],
    })
}

/// The SQL side of a unit of work on `database`.
fn sql(database: &FakeDatabase) -> SqlCtx {
    let component = SqlComponent {
        database: Arc::new(database.clone()),
        limits: SqlLimits {
            max_statement_bytes: 4096,
            max_parameters: 8,
            max_parameter_bytes: 4096,
            max_result_bytes: 64 * 1024,
        },
        memory: HostMemory::new(1 << 20),
        turns: Arc::new(Semaphore::new(1)),
        verdicts: Verdicts::default(),
    };
    SqlCtx::new(
        Arc::new(component),
        Instant::now() + Duration::from_secs(60),
    )
}

/// Runs one statement (whose outcome the database's answer decides), then ends the unit of work
/// as a guest answering `answer` would have it end: its verdict.
async fn verdict(
    database: &FakeDatabase,
    guarded: bool,
    answer: Result<bool, GuestFailure>,
) -> Verdict {
    let mut sql = sql(database);
    if guarded {
        sql.guard("record the event", INBOX, vec![Value::Text("e-1".into())]);
    }
    let statement = inspect("UPDATE orders SET status = 'invoiced'").expect("a statement");
    let _ = sql.execute(statement, vec![]).await;
    let commits = matches!(answer, Ok(true));
    let finished = sql.finish(commits).await;
    classify(&answer, commits, finished, &sql)
}

fn answering(answer: fn(&str) -> Result<RowSet, Error>) -> FakeDatabase {
    FakeDatabase::new(move |statement, _| answer(statement))
}

#[tokio::test]
async fn a_guest_that_succeeded_and_wrote_is_committed() {
    let database = answering(|_| rows(1));
    assert_eq!(
        verdict(&database, false, Ok(true)).await,
        Verdict::Committed
    );
}

#[tokio::test]
async fn a_guest_that_succeeded_without_a_statement_is_empty() {
    let database = answering(|_| rows(1));
    let mut sql = sql(&database);
    let finished = sql.finish(true).await;
    assert_eq!(classify(&Ok(()), true, finished, &sql), Verdict::Empty);
}

#[tokio::test]
async fn a_guest_that_declined_is_rolled_back() {
    let database = answering(|_| rows(1));
    assert_eq!(
        verdict(&database, false, Ok(false)).await,
        Verdict::RolledBack
    );
}

#[tokio::test]
async fn a_statement_that_failed_for_its_own_reasons_fails_a_guest_that_asked_to_commit() {
    let database = answering(|_| Err(database_error("23505")));
    assert!(matches!(
        verdict(&database, false, Ok(true)).await,
        Verdict::Failed { reason, at_commit: false } if reason.contains("23505")
    ));
}

#[tokio::test]
async fn an_outage_is_the_databases_whatever_the_guest_made_of_it() {
    for answer in [
        Ok(true),
        Ok(false),
        Err(GuestFailure::Trapped("panic".into())),
    ] {
        let database = answering(|_| rows(1));
        database.go_down("the server is restarting");
        assert!(
            matches!(
                verdict(&database, false, answer.clone()).await,
                Verdict::Outage(_)
            ),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn a_deadlock_or_a_serialization_failure_is_a_conflict() {
    for code in ["40P01", "40001"] {
        let database = FakeDatabase::new(move |_, _| Err(database_error(code)));
        assert!(
            matches!(
                verdict(&database, false, Ok(false)).await,
                Verdict::Conflict(_)
            ),
            "{code}"
        );
    }
}

#[tokio::test]
async fn a_trap_is_trapped_and_a_guest_with_no_free_instance_is_busy() {
    let database = answering(|_| rows(1));
    let trapped = Err(GuestFailure::Trapped("unreachable".into()));
    assert!(matches!(
        verdict(&database, false, trapped).await,
        Verdict::Trapped(_)
    ));
    let busy = Err(GuestFailure::Busy("has no free instance".into()));
    assert!(matches!(
        verdict(&database, false, busy).await,
        Verdict::Busy(_)
    ));
}

#[tokio::test]
async fn a_guest_past_its_deadline_timed_out_whatever_else_happened() {
    let database = answering(|_| Err(database_error("40P01")));
    assert_eq!(
        verdict(&database, false, Err(GuestFailure::TimedOut)).await,
        Verdict::TimedOut
    );
}

#[tokio::test]
async fn work_done_before_is_a_duplicate_even_when_its_guest_trapped() {
    let database = answering(|statement| match statement {
        INBOX => rows(0),
        _ => rows(1),
    });
    for answer in [Ok(true), Err(GuestFailure::Trapped("panic".into()))] {
        assert_eq!(
            verdict(&database, true, answer.clone()).await,
            Verdict::Duplicate,
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn a_guard_the_database_refuses_for_good_is_refused_and_one_it_waited_on_a_conflict() {
    let refused = answering(|statement| match statement {
        // An event id with a byte PostgreSQL refuses: it always will.
        INBOX => Err(database_error("22021")),
        _ => rows(1),
    });
    assert!(matches!(
        verdict(&refused, true, Ok(true)).await,
        Verdict::Refused(why) if why.starts_with("cannot record the event")
    ));
    let waited = answering(|statement| match statement {
        INBOX => Err(database_error("55P03")),
        _ => rows(1),
    });
    assert!(matches!(
        verdict(&waited, true, Ok(true)).await,
        Verdict::Conflict(_)
    ));
}

#[test]
fn every_verdict_has_a_label_of_its_own() {
    let verdicts = [
        Verdict::Committed,
        Verdict::Empty,
        Verdict::RolledBack,
        Verdict::Duplicate,
        Verdict::TimedOut,
        Verdict::Trapped(String::new()),
        Verdict::Busy(String::new()),
        Verdict::Outage(String::new()),
        Verdict::Conflict(String::new()),
        Verdict::OutcomeUnknown(String::new()),
        Verdict::Failed {
            reason: String::new(),
            at_commit: false,
        },
        Verdict::Refused(String::new()),
    ];
    let labels: std::collections::HashSet<_> = verdicts.iter().map(Verdict::label).collect();
    assert_eq!(labels.len(), verdicts.len());
    let successes: Vec<_> = verdicts.iter().filter(|v| v.is_success()).collect();
    assert_eq!(successes, [&Verdict::Committed, &Verdict::Empty]);
}

#[tokio::test]
async fn work_cut_off_at_its_deadline_is_judged_by_what_its_statements_met_first() {
    let statement = || inspect("UPDATE orders SET status = 'invoiced'").expect("a statement");
    let duplicate = answering(|statement| match statement {
        INBOX => rows(0),
        _ => rows(1),
    });
    let mut first = sql(&duplicate);
    first.guard("record the event", INBOX, vec![Value::Text("e-1".into())]);
    let _ = first.execute(statement(), vec![]).await;
    assert_eq!(timed_out(&first), Verdict::Duplicate);

    let away = answering(|_| rows(1));
    away.go_down("the server is restarting");
    let mut second = sql(&away);
    let _ = second.execute(statement(), vec![]).await;
    assert!(matches!(timed_out(&second), Verdict::Outage(_)));

    let slow = answering(|_| rows(1));
    let mut third = sql(&slow);
    let _ = third.execute(statement(), vec![]).await;
    assert_eq!(timed_out(&third), Verdict::TimedOut);
}
