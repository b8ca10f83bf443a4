//! The lock review: for each statement of a migration script, the lock PostgreSQL takes, on
//! which tables, whether the table is rewritten, scanned or only its catalog entry changes, what
//! waits behind it, and the safer form when one exists. Parsed with PostgreSQL's own grammar
//! (`pg_query`, libpg_query), never with a lexer; the rules follow the PostgreSQL documentation
//! for the server's version and live in one table (`rules.rs`), each row naming its section.
//!
//! Layout: `parse.rs` walks the parse tree and picks rows (`alter.rs` for `ALTER TABLE`,
//! `types.rs` for type changes); `rules.rs` is the table; `catalog.rs` reads the target's version
//! and column types ([`review_on_target`]).
//!
//! Where `sqlscan`'s lexer stays, because the parser cannot serve:
//! - a script `pg_query` does not parse (its grammar is PostgreSQL 17's: syntax only a newer
//!   server knows, or a script that is simply broken): `parse_error` is set, `statements` is
//!   empty, and callers fall back to `sqlscan` for the data-loss warnings;
//! - the data-loss warnings themselves: the card shows object names as written (`"Post"`,
//!   `Posts`, `public.users`), which the parse tree does not keep (unquoted names are folded to
//!   lower case, quotes are dropped, and `DROP`'s object names carry no source position), so
//!   they are still read by `sqlscan::scan`.

use std::fmt;

use serde::{Deserialize, Serialize};

mod alter;
mod catalog;
mod context;
mod nodes;
mod parse;
pub mod rules;
mod types;

pub use catalog::{known_columns, review_on_target};
pub use rules::{Rule, RuleId, Versions, RULES};
pub use types::{binary_coercible, ColumnType, KnownColumns};

/// PostgreSQL's table-level lock modes (documentation: 13.3.1 "Table-Level Locks"), weakest
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockLevel {
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl LockLevel {
    /// `ACCESS EXCLUSIVE`, as the documentation writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LockLevel::AccessShare => "ACCESS SHARE",
            LockLevel::RowShare => "ROW SHARE",
            LockLevel::RowExclusive => "ROW EXCLUSIVE",
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockLevel::Share => "SHARE",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockLevel::Exclusive => "EXCLUSIVE",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// What ordinary traffic waits behind this lock (Table 13.2, "Conflicting Lock Modes":
    /// `SELECT` takes ACCESS SHARE, `INSERT`/`UPDATE`/`DELETE` take ROW EXCLUSIVE).
    pub fn blocks(self) -> Blocks {
        match self {
            LockLevel::AccessExclusive => Blocks::ReadsAndWrites,
            LockLevel::Share | LockLevel::ShareRowExclusive | LockLevel::Exclusive => {
                Blocks::Writes
            }
            _ => Blocks::Nothing,
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What ordinary reads and writes of the table do while the lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blocks {
    /// Neither reads nor writes wait.
    Nothing,
    /// Writes (`INSERT`, `UPDATE`, `DELETE`) wait; reads go on.
    Writes,
    /// Reads and writes wait.
    ReadsAndWrites,
}

impl Blocks {
    /// `reads and writes wait`, `writes wait`, `reads and writes go on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocks::Nothing => "reads and writes go on",
            Blocks::Writes => "writes wait, reads go on",
            Blocks::ReadsAndWrites => "reads and writes wait",
        }
    }
}

/// How much of the table the statement touches while it holds its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// The whole table (and its indexes) is written again: time grows with the table.
    Rewrite,
    /// The whole table is read (a constraint checked, an index built): time grows with the
    /// table, nothing is rewritten.
    Scan,
    /// Only the catalog changes: fast whatever the size, once the lock is granted.
    Metadata,
}

impl Effect {
    /// `rewrites`, `scans`, `changes only the catalog of`.
    pub fn verb(self) -> &'static str {
        match self {
            Effect::Rewrite => "rewrites",
            Effect::Scan => "scans",
            Effect::Metadata => "changes only the catalog of",
        }
    }
}

/// A table a statement locks, as the SQL names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableRef {
    /// The schema when the SQL gives one.
    pub schema: Option<String>,
    /// The table's name (unquoted: `Task`).
    pub name: String,
}

impl TableRef {
    /// The name as `regclass` text for the catalog (`"Task"`, `"public"."Task"`), resolved in
    /// the connection's `search_path` when no schema is given.
    pub fn regclass(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        match &self.schema {
            Some(s) => format!("{}.{}", q(s), q(&self.name)),
            None => q(&self.name),
        }
    }
}

impl fmt::Display for TableRef {
    /// `"Task"`, `"public"."Task"`: quoted, as on the card.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.regclass())
    }
}

/// The review of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementReview {
    /// The statement's text as written (trimmed, without the final `;`).
    pub sql: String,
    /// 1-based line of the statement's start in the script.
    pub line: usize,
    /// The strongest lock it takes on `tables`; `None` when it locks no existing table (a
    /// `CREATE TABLE`, a `CREATE TYPE`, ...).
    pub lock: Option<LockLevel>,
    /// The existing tables it locks with `lock`.
    pub tables: Vec<TableRef>,
    /// Rewrite, scan or metadata only.
    pub effect: Effect,
    /// The rule that matched (its id in the rules table, e.g. `add-column-volatile-default`).
    pub rule: &'static str,
    /// The PostgreSQL documentation section the rule comes from.
    pub doc: &'static str,
    /// The safer form, when one exists ("CREATE INDEX CONCURRENTLY (outside a transaction)").
    pub safer: Option<String>,
}

impl StatementReview {
    /// What waits behind it: from the lock, or nothing without one.
    pub fn blocks(&self) -> Blocks {
        self.lock.map(LockLevel::blocks).unwrap_or(Blocks::Nothing)
    }

    /// Whether it belongs on a card: it holds a lock that blocks reads or writes while it
    /// rewrites or scans, or blocks reads and writes at all (an ACCESS EXCLUSIVE queue is what
    /// hangs an app behind a long transaction), or has a safer form.
    pub fn is_risky(&self) -> bool {
        !self.tables.is_empty()
            && (self.blocks() == Blocks::ReadsAndWrites
                || (self.blocks() != Blocks::Nothing && self.effect != Effect::Metadata)
                || self.safer.is_some())
    }
}

/// The review of one script.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ScriptReview {
    /// One per statement, in order.
    pub statements: Vec<StatementReview>,
    /// Whether the script can run inside one transaction with its `_prisma_migrations` row: no
    /// transaction control (`BEGIN`, `COMMIT`, ...) and nothing PostgreSQL refuses in a
    /// transaction block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, `ALTER TYPE ... ADD VALUE`
    /// before 12, ...).
    pub transactional: bool,
    /// The parser's error when the script does not parse (then `statements` is empty and
    /// `transactional` false).
    pub parse_error: Option<String>,
}

/// Reviews a migration script for a server of `server_version_num` (`150004`, `180000`).
pub fn review_script(sql: &str, server_version_num: u32) -> ScriptReview {
    parse::review(sql, server_version_num, &KnownColumns::new())
}

/// [`review_script`], knowing the types of columns that exist before the script runs (from the
/// target's catalog: `(table, column) -> format_type(...)` read with [`ColumnType::parse`]), so
/// that a binary-coercible `ALTER COLUMN ... TYPE` (`varchar(10)` to `varchar(20)`) is reported
/// as catalog-only rather than as a rewrite.
pub fn review_script_with(
    sql: &str,
    server_version_num: u32,
    known: &KnownColumns,
) -> ScriptReview {
    parse::review(sql, server_version_num, known)
}

#[cfg(test)]
mod tests;
