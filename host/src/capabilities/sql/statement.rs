//! What the host reads in a guest's statement before it sends it: its operation (for span names
//! and metric labels) and whether it would step outside its unit of work.
//!
//! The statement is read by sqlparser's PostgreSQL tokenizer, the same way the server reads it:
//! `--` and nested `/* */` comments, quoted identifiers, standard, `E''` and dollar-quoted
//! strings. So `COMMIT--`, `SET/**/statement_timeout=0` or a keyword hidden in a string are
//! seen as PostgreSQL sees them. A statement the tokenizer cannot read is refused; PostgreSQL
//! would refuse it too.
//!
//! Refused, unsent:
//! - transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `PREPARE TRANSACTION`, ...):
//!   the host owns the unit of work's transaction;
//! - session state that would outlive the unit of work (`SET` without `LOCAL`, `RESET`,
//!   `DISCARD`, `LISTEN`, `DEALLOCATE`, `ALTER ROLE` / `DATABASE` / `SYSTEM`, `LOAD`);
//! - the limits the host sets for the unit of work (`SET LOCAL statement_timeout`, `work_mem`
//!   and the others in [`PROTECTED_SETTINGS`], quoted or not; `set_config` and `pg_settings`
//!   anywhere in a statement);
//! - code that runs dynamic SQL or carries settings of its own: `DO` blocks, and making or
//!   changing functions and procedures, which belong in migrations;
//! - `COPY`, which the interface does not carry; identifiers written with Unicode escapes;
//! - `currval` and `lastval`, which read the session's sequence state: on a pooled connection
//!   that may be an earlier unit of work's (`INSERT … RETURNING` or `nextval` give the value);
//! - more than one statement in one call.
//!
//! What a statement sent may leave behind its transaction is its [`Residue`]: the connection is
//! reset after a unit of work that ran one that may leave session state, and only then.
//!
//! This is one layer, not the last: dynamic SQL in a function a migration made can still change
//! a setting for its transaction, so the host does not rely on the settings alone (see
//! [`crate::capabilities::sql::postgres`]: it cancels a statement past its deadline and
//! terminates a session that outlives the cancel).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Operations named in spans and metrics; anything else is `OTHER`.
const OPERATIONS: [&str; 11] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "VALUES", "CREATE", "ALTER", "DROP",
    "TRUNCATE",
];

/// Settings the host sets for a unit of work, or that bound what it may take of the server.
pub const PROTECTED_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "client_connection_check_interval",
    "work_mem",
    "maintenance_work_mem",
    "hash_mem_multiplier",
    "temp_buffers",
    "temp_file_limit",
    "logical_decoding_work_mem",
    "max_parallel_workers_per_gather",
    "max_parallel_maintenance_workers",
    "search_path",
];

/// What a statement may leave behind once its transaction has ended, besides its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Residue {
    /// Nothing: what it set ends with the transaction.
    Nothing,
    /// State of the session: a cursor `WITH HOLD`, a temporary table, a session advisory lock,
    /// a `dblink` connection. The connection is reset after the unit of work.
    Session,
    /// Stored objects that later statements run (`CREATE` or `ALTER`: a view, a default, a
    /// rule, a policy), which could leave session state out of sight of the statements' text:
    /// every connection of the database is reset after each unit of work from then on.
    Schema,
}

/// A guest's statement the host will send: only [`inspect`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    text: &'a str,
    operation: &'static str,
    residue: Residue,
}

impl<'a> Statement<'a> {
    /// The statement as the guest wrote it: what is sent to the server, unchanged.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Its operation: `SELECT`, `INSERT`, ... or `OTHER`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// What it may leave behind its transaction.
    pub fn residue(&self) -> Residue {
        self.residue
    }
}

/// What [`inspect`] finds a statement to be, kept per text.
type Verdict = Result<(&'static str, Residue), Refusal>;

/// Why a statement is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Statements whose verdict is kept, per component: a component sends the same few texts over
/// and over, so most are read once.
const MAX_VERDICTS: usize = 256;

/// Longest statement whose verdict is kept, in bytes.
const MAX_KEPT_TEXT: usize = 4096;

/// What [`inspect`] found for a component's statements, kept: built once per component.
#[derive(Default)]
pub struct Verdicts {
    kept: Mutex<HashMap<Box<str>, Verdict>>,
}

impl Verdicts {
    /// [`inspect`], from what was kept when the same text was read before.
    pub fn inspect<'a>(&self, statement: &'a str) -> Result<Statement<'a>, Refusal> {
        let with = |verdict: Verdict| {
            verdict.map(|(operation, residue)| Statement {
                text: statement,
                operation,
                residue,
            })
        };
        if statement.len() > MAX_KEPT_TEXT {
            return inspect(statement);
        }
        if let Some(verdict) = self.lock().get(statement) {
            return with(verdict.clone());
        }
        let verdict = inspect(statement).map(|statement| (statement.operation, statement.residue));
        let mut kept = self.lock();
        if kept.len() >= MAX_VERDICTS {
            // A component that builds its statements' text must not grow this without bound.
            kept.clear();
        }
        kept.insert(statement.into(), verdict.clone());
        drop(kept);
        with(verdict)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verdict>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads `statement`: the statement to send, or why the host will not send it.
pub fn inspect(statement: &str) -> Result<Statement<'_>, Refusal> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, statement)
        .tokenize()
        .map_err(|err| Refusal(format!("the statement cannot be read: {err}")))?;
    let mut significant = tokens
        .iter()
        .filter(|token| !matches!(token, Token::Whitespace(_)));
    let words: Vec<&Token> = significant.by_ref().take(4).collect();
    // Keywords are plain words; a setting's name may be quoted too.
    let word = |index: usize, quoted: bool| match words.get(index) {
        Some(Token::Word(word)) if word.quote_style.is_none() => word.value.to_ascii_uppercase(),
        Some(Token::Word(word)) if quoted => word.value.clone(),
        _ => String::new(),
    };
    let first = word(0, false);
    let second = word(1, false);
    refuse_first(&first, &second, &word(2, true), &word(3, false))?;
    let mut residue = match first.as_str() {
        "CREATE" if matches!(second.as_str(), "TEMP" | "TEMPORARY" | "LOCAL" | "GLOBAL") => {
            Residue::Session
        }
        "CREATE" | "ALTER" => Residue::Schema,
        _ => Residue::Nothing,
    };
    let mut after_end = false;
    for token in &tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::SemiColon => after_end = true,
            _ if after_end => {
                return Err(Refusal(
                    "one statement per call: send the next one in a call of its own".into(),
                ));
            }
            Token::Word(word)
                if ["set_config", "pg_settings"]
                    .iter()
                    .any(|name| word.value.eq_ignore_ascii_case(name)) =>
            {
                return Err(Refusal(format!(
                    "{}: settings are changed with SET LOCAL, and the host's limits not at all",
                    word.value.to_ascii_lowercase()
                )));
            }
            Token::Word(word) if word.quote_style.is_some() && word.value.contains('\\') => {
                return Err(Refusal(
                    "identifiers with Unicode escapes are not carried; write them plainly".into(),
                ));
            }
            Token::Word(word) => {
                let name = word.value.to_ascii_lowercase();
                if matches!(name.as_str(), "currval" | "lastval") {
                    return Err(Refusal(format!(
                        "{name}: it reads the session's sequence state, which on a pooled \
                         connection may be an earlier unit of work's; take the value with \
                         INSERT … RETURNING, or from nextval() itself"
                    )));
                }
                if leaves_session_state(&name) {
                    residue = residue.max(Residue::Session);
                }
            }
            _ => {}
        }
    }
    let operation = OPERATIONS
        .into_iter()
        .find(|known| *known == first)
        .unwrap_or("OTHER");
    Ok(Statement {
        text: statement,
        operation,
        residue,
    })
}

/// Whether a word of a statement (lower-cased) names something that outlives the transaction
/// in the session: `WITH HOLD`, `TEMP` tables (and the `pg_temp` schema), the session-level
/// advisory locks (the `_xact_` ones end with the transaction), `dblink` connections. A column
/// of the same name costs only a reset.
fn leaves_session_state(word: &str) -> bool {
    matches!(
        word,
        "hold"
            | "temp"
            | "temporary"
            | "pg_advisory_lock"
            | "pg_advisory_lock_shared"
            | "pg_try_advisory_lock"
            | "pg_try_advisory_lock_shared"
    ) || word.starts_with("pg_temp")
        || word.starts_with("dblink")
}

/// Refuses a statement by its first words (keywords upper-cased, empty when not a plain word;
/// `third` as written when quoted).
fn refuse_first(first: &str, second: &str, third: &str, fourth: &str) -> Result<(), Refusal> {
    let routine = |word: &str| matches!(word, "FUNCTION" | "PROCEDURE");
    let why = match first {
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE"
        | "PREPARE" => "the host begins and ends the unit of work's transaction",
        "SET" if second != "LOCAL" => {
            "session settings would outlive the unit of work; use SET LOCAL"
        }
        "SET"
            if PROTECTED_SETTINGS
                .iter()
                .any(|setting| setting.eq_ignore_ascii_case(third)) =>
        {
            return Err(Refusal(format!(
                "SET LOCAL {}: the host sets this for the unit of work",
                third.to_ascii_lowercase()
            )));
        }
        "RESET" | "DISCARD" | "LISTEN" | "UNLISTEN" | "DEALLOCATE" | "LOAD" => {
            "session state would outlive the unit of work"
        }
        "ALTER" if matches!(second, "ROLE" | "USER" | "GROUP" | "DATABASE" | "SYSTEM") => {
            "settings of the role or database would outlive the unit of work"
        }
        "DO" => "anonymous code blocks run dynamic SQL; put such code in a migration",
        "CREATE" if routine(second) || (second == "OR" && routine(fourth)) => {
            "functions and procedures are made in migrations, not by a unit of work"
        }
        "ALTER" | "DROP" if routine(second) => {
            "functions and procedures are changed in migrations, not by a unit of work"
        }
        "COPY" => "COPY is not carried by the sql interface; use INSERT or SELECT",
        _ => return Ok(()),
    };
    let statement = if matches!(first, "ALTER" | "CREATE" | "DROP") {
        format!("{first} {second}")
    } else {
        first.to_owned()
    };
    Err(Refusal(format!("{statement}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(statement: &str) -> bool {
        inspect(statement).is_err()
    }

    #[test]
    fn transaction_control_is_refused_however_it_is_dressed() {
        for statement in [
            "COMMIT",
            "commit;",
            "COMMIT--",
            "/* hello */ COMMIT",
            "/* outer /* nested */ still a comment */ COMMIT",
            "-- line\nROLLBACK",
            "BEGIN",
            "start transaction",
            "SAVEPOINT a",
            "PREPARE TRANSACTION 'x'",
            "END",
        ] {
            assert!(refused(statement), "{statement:?} must be refused");
        }
    }

    #[test]
    fn the_hosts_limits_cannot_be_lifted() {
        for statement in [
            "SET statement_timeout = 0",
            "SET/**/statement_timeout=0",
            "SET LOCAL statement_timeout = 0",
            "set local WORK_MEM = '4GB'",
            "SET LOCAL/* x */lock_timeout TO 0",
            "SET LOCAL search_path = evil",
            "SELECT set_config('statement_timeout', '0', true)",
            "SELECT pg_catalog.set_config('work_mem', '4GB', true)",
            "SELECT \"set_config\"('work_mem', '4GB', true)",
            "SELECT 1 # length(set_config('work_mem', '4GB', true))",
            "SET LOCAL \"statement_timeout\" = 0",
            "SELECT U&\"set\\005fconfig\"('work_mem', '4GB', true)",
            "UPDATE pg_settings SET setting = '4GB' WHERE name = 'work_mem'",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET work_mem = '4GB' AS 'SELECT 1'",
            "create or replace procedure p() language sql as 'select 1'",
            "ALTER FUNCTION f() SET statement_timeout = 0",
            "DO $$ BEGIN EXECUTE 'SET LOCAL statement_timeout = 0'; END $$",
            "ALTER ROLE CURRENT_USER SET work_mem = '4GB'",
            "alter database x set statement_timeout = 0",
            "RESET ALL",
            "DISCARD ALL",
            "COPY t TO STDOUT",
        ] {
            assert!(refused(statement), "{statement:?} must be refused");
        }
    }

    #[test]
    fn a_keyword_inside_a_string_or_comment_is_not_a_statement() {
        for statement in [
            "SELECT 'COMMIT'",
            "SELECT $$ set_config $$",
            "SELECT $tag$ COMMIT; set_config( $tag$",
            "SELECT E'it\\'s; set_config'",
            "SELECT 1 -- set_config('work_mem', '4GB', true)",
            "SELECT 1 /* /* set_config */ */",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING",
            "SET LOCAL application_name = 'x'",
            "SET LOCAL ROLE NONE",
        ] {
            assert!(
                !refused(statement),
                "{statement:?} must be sent: {:?}",
                inspect(statement)
            );
        }
    }

    #[test]
    fn a_string_is_read_with_standard_quoting_as_the_server_reads_it() {
        // With standard_conforming_strings (PostgreSQL's default) a backslash is no escape: the
        // string ends at the second quote and set_config is a call.
        assert!(refused(
            "SELECT 'x\\', set_config('work_mem', '4GB', true) --'"
        ));
    }

    #[test]
    fn one_statement_per_call() {
        assert!(refused("SELECT 1; SELECT 2"));
        assert!(refused("SELECT 1; COMMIT"));
        assert!(!refused("SELECT 1;"));
        assert!(!refused("SELECT 1; -- trailing comment"));
    }

    #[test]
    fn an_unreadable_statement_is_refused() {
        assert!(refused("SELECT 'unterminated"));
        assert!(refused("SELECT 1 /* unterminated"));
    }

    #[test]
    fn the_operation_is_the_first_keyword() {
        let operation = |statement: &str| inspect(statement).expect("sent").operation();
        assert_eq!(operation("  -- find it\n select 1"), "SELECT");
        assert_eq!(operation("/* x */ INSERT INTO t VALUES (1)"), "INSERT");
        assert_eq!(operation("with x as (select 1) select * from x"), "WITH");
        assert_eq!(operation("vacuum"), "OTHER");
        assert_eq!(operation(""), "OTHER");
    }

    #[test]
    fn what_a_statement_leaves_behind_its_transaction() {
        let residue = |statement: &str| inspect(statement).expect("sent").residue();
        for statement in [
            "SELECT * FROM orders WHERE id = $1",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING a",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT nextval('s')",
            "SELECT 'temp', $$ pg_advisory_lock(1) $$ -- WITH HOLD",
            "DECLARE c CURSOR FOR SELECT 1",
            "SET LOCAL ROLE NONE",
        ] {
            assert_eq!(residue(statement), Residue::Nothing, "{statement}");
        }
        for statement in [
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMP TABLE x (a int)",
            "create temporary table x (a int) on commit drop",
            "SELECT * INTO TEMP x FROM t",
            "INSERT INTO pg_temp.x VALUES (1)",
            "SELECT pg_advisory_lock(1)",
            "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)",
            "SELECT \"pg_advisory_lock\"(1)",
            "SELECT dblink_connect('c', 'dbname=x')",
        ] {
            assert_eq!(residue(statement), Residue::Session, "{statement}");
        }
        for statement in [
            "CREATE VIEW v AS SELECT 1",
            "alter table t alter column a set default 1",
            "CREATE RULE r AS ON INSERT TO t DO NOTHING",
        ] {
            assert_eq!(residue(statement), Residue::Schema, "{statement}");
        }
    }

    #[test]
    fn sequence_state_of_the_session_is_not_read() {
        for statement in [
            "SELECT currval('s')",
            "SELECT lastval()",
            "INSERT INTO t (a) VALUES (pg_catalog.currval('s'))",
        ] {
            assert!(refused(statement), "{statement:?} must be refused");
        }
        assert!(!refused("SELECT 'currval'"));
    }

    #[test]
    fn a_kept_verdict_is_the_same_as_a_fresh_one() {
        let verdicts = Verdicts::default();
        for _ in 0..2 {
            assert_eq!(
                verdicts.inspect("SELECT 1").map(|s| s.operation()),
                Ok("SELECT")
            );
            assert!(verdicts.inspect("COMMIT").is_err());
        }
        for n in 0..(2 * MAX_VERDICTS) {
            assert!(verdicts.inspect(&format!("SELECT {n}")).is_ok());
        }
        assert!(verdicts.lock().len() <= MAX_VERDICTS, "bounded");
    }
}
