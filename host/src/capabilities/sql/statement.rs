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
//!   and the others in [`PROTECTED_SETTINGS`], and `set_config` anywhere in a statement);
//! - `DO` blocks, which run dynamic SQL, and `COPY`, which the interface does not carry;
//! - more than one statement in one call.
//!
//! Dynamic SQL in a function a migration created can still change a setting; the host does not
//! rely on the settings alone (see [`crate::capabilities::sql::postgres`]: it cancels a
//! statement past its deadline and terminates a session that outlives the cancel).

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Operations named in spans and metrics; anything else is `OTHER`.
const OPERATIONS: [&str; 11] =
    ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "VALUES", "CREATE", "ALTER", "DROP", "TRUNCATE"];

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

/// A guest's statement the host will send: only [`inspect`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    text: &'a str,
    operation: &'static str,
}

impl<'a> Statement<'a> {
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Its operation: `SELECT`, `INSERT`, ... or `OTHER`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

/// Why a statement is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Reads `statement`: the statement to send, or why the host will not send it.
pub fn inspect(statement: &str) -> Result<Statement<'_>, Refusal> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, statement)
        .tokenize()
        .map_err(|err| Refusal(format!("the statement cannot be read: {err}")))?;
    let mut significant = tokens.iter().filter(|token| !matches!(token, Token::Whitespace(_)));
    let words: Vec<&Token> = significant.by_ref().take(3).collect();
    let word = |index: usize| match words.get(index) {
        Some(Token::Word(word)) if word.quote_style.is_none() => word.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let first = word(0);
    refuse_first(&first, &word(1), &word(2))?;
    let mut after_end = false;
    for token in &tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::SemiColon => after_end = true,
            _ if after_end => {
                return Err(Refusal("one statement per call: send the next one in a call of its own".into()));
            }
            Token::Word(word) if word.value.eq_ignore_ascii_case("set_config") => {
                return Err(Refusal(
                    "set_config: settings are changed with SET LOCAL, and the host's limits not at all".into(),
                ));
            }
            _ => {}
        }
    }
    let operation = OPERATIONS.into_iter().find(|known| *known == first).unwrap_or("OTHER");
    Ok(Statement { text: statement, operation })
}

/// Refuses a statement by its first words (upper-cased; empty when not a plain word).
fn refuse_first(first: &str, second: &str, third: &str) -> Result<(), Refusal> {
    let why = match first {
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" | "PREPARE" => {
            "the host begins and ends the unit of work's transaction"
        }
        "SET" if second != "LOCAL" => "session settings would outlive the unit of work; use SET LOCAL",
        "SET" if PROTECTED_SETTINGS.iter().any(|setting| setting.eq_ignore_ascii_case(third)) => {
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
        "COPY" => "COPY is not carried by the sql interface; use INSERT or SELECT",
        _ => return Ok(()),
    };
    let statement = if first == "ALTER" { format!("{first} {second}") } else { first.to_owned() };
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
            assert!(!refused(statement), "{statement:?} must be sent: {:?}", inspect(statement));
        }
    }

    #[test]
    fn a_string_is_read_with_standard_quoting_as_the_server_reads_it() {
        // With standard_conforming_strings (PostgreSQL's default) a backslash is no escape: the
        // string ends at the second quote and set_config is a call.
        assert!(refused("SELECT 'x\\', set_config('work_mem', '4GB', true) --'"));
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
}
