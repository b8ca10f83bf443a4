//! The lock review's rules: ONE table, one row per statement shape, each naming the PostgreSQL
//! documentation section it comes from (the documentation of the server's major version; the
//! section names are those of PostgreSQL 15, whose numbering the others share).
//!
//! A row is chosen by `parse.rs` from the parse tree and the server's version; the row then
//! says everything the card shows: the lock, the effect, whether the statement may run inside a
//! transaction block, the documentation section and the safer form. `RULES[id as usize]` is the
//! row of `id` (a test keeps the order).

use super::{Effect, LockLevel};

/// Which server versions a row applies to (`server_version_num`: `110000` is PostgreSQL 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Every supported version.
    All,
    /// This version and later.
    From(u32),
    /// Versions before this one.
    Before(u32),
}

impl Versions {
    /// Whether a server of `version` is covered.
    pub fn holds(self, version: u32) -> bool {
        match self {
            Versions::All => true,
            Versions::From(v) => version >= v,
            Versions::Before(v) => version < v,
        }
    }

    /// `all versions`, `PostgreSQL 11+`, `before PostgreSQL 12`.
    pub fn describe(self) -> String {
        match self {
            Versions::All => "all versions".into(),
            Versions::From(v) => format!("PostgreSQL {}+", v / 10000),
            Versions::Before(v) => format!("before PostgreSQL {}", v / 10000),
        }
    }
}

/// The rules' identities, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId {
    AddColumn,
    AddColumnConstantDefault,
    AddColumnConstantDefaultPre11,
    AddColumnVolatileDefault,
    AddColumnGenerated,
    DropColumn,
    AlterColumnType,
    AlterColumnTypeCoercible,
    SetNotNull,
    SetNotNullPre12,
    SetNotNullChecked,
    DropNotNull,
    ColumnDefault,
    AddCheck,
    AddCheckNotValid,
    AddForeignKey,
    AddForeignKeyNotValid,
    ValidateConstraint,
    AddUniqueOrPrimaryKey,
    AddConstraintUsingIndex,
    AddExclusion,
    DropConstraint,
    DropForeignKey,
    CreateIndex,
    CreateIndexConcurrently,
    CreateUniqueIndex,
    CreateUniqueIndexConcurrently,
    DropIndex,
    DropIndexConcurrently,
    RenameColumn,
    RenameTable,
    RenameIndex,
    RenameIndexPre12,
    RenameConstraint,
    DropTable,
    Truncate,
    CreateTable,
    CreateTableForeignKey,
    NewTable,
    AlterEnumAddValue,
    AlterEnumAddValuePre12,
    Cluster,
    VacuumFull,
    Vacuum,
    Analyze,
    Reindex,
    ReindexPre12,
    ReindexConcurrently,
    Insert,
    UpdateOrDelete,
    Select,
    NoTableLock,
    NotInTransaction,
    TransactionControl,
    Unknown,
}

impl RuleId {
    /// The row of this rule.
    pub fn rule(self) -> &'static Rule {
        &RULES[self as usize]
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Which rule.
    pub id: RuleId,
    /// Its name on the card (`add-column-volatile-default`).
    pub name: &'static str,
    /// The statement shape it matches.
    pub shape: &'static str,
    /// The lock it takes on the tables it names; `None` when it locks no existing table.
    pub lock: Option<LockLevel>,
    /// Rewrite, scan or catalog only.
    pub effect: Effect,
    /// The server versions the row applies to.
    pub versions: Versions,
    /// Whether PostgreSQL accepts it inside a transaction block.
    pub transactional: bool,
    /// The documentation section the row comes from.
    pub doc: &'static str,
    /// What else to know (a condition the script alone cannot show).
    pub note: &'static str,
    /// The safer form, when one exists.
    pub safer: Option<&'static str>,
}

use Effect::{Metadata, Rewrite, Scan};
use LockLevel::{
    AccessExclusive as AEL, AccessShare, RowExclusive, Share, ShareRowExclusive as SRE,
    ShareUpdateExclusive as SUE,
};
use Versions::{All, Before, From};

const AT_NOTES: &str = "ALTER TABLE, Notes";
const AT_DESC: &str = "ALTER TABLE, Description";
const LOCKS: &str = "13.3.1 Table-Level Locks";
const BACKFILL: &str = "add the column without a default, backfill it in batches, then SET DEFAULT (and SET NOT NULL the checked way)";
const NOT_VALID: &str = "ADD CONSTRAINT ... NOT VALID (catalog only), then VALIDATE CONSTRAINT in its own transaction (reads and writes go on)";
const CONCURRENTLY: &str = "CREATE INDEX CONCURRENTLY (outside a transaction: its own migration)";
const NEW_COLUMN: &str =
    "add a new column, backfill it in batches, switch the app to it, then drop the old one";
const RENAME: &str = "queries that use the old name fail the moment this commits: add the new column (or a view with the new name), backfill, switch the app, then drop the old";

/// The table. `RULES[id as usize].id == id` (tested).
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { id: RuleId::AddColumn, name: "add-column", shape: "ALTER TABLE t ADD COLUMN c type (no default)", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_NOTES, note: "", safer: None },
    Rule { id: RuleId::AddColumnConstantDefault, name: "add-column-constant-default", shape: "ALTER TABLE t ADD COLUMN c type DEFAULT constant or non-volatile expression", lock: Some(AEL), effect: Metadata, versions: From(110000), transactional: true, doc: AT_NOTES, note: "the default is stored once in the catalog (no rewrite since PostgreSQL 11)", safer: None },
    Rule { id: RuleId::AddColumnConstantDefaultPre11, name: "add-column-constant-default-pre11", shape: "ALTER TABLE t ADD COLUMN c type DEFAULT constant", lock: Some(AEL), effect: Rewrite, versions: Before(110000), transactional: true, doc: AT_NOTES, note: "before PostgreSQL 11 every row is written with the default", safer: Some(BACKFILL) },
    Rule { id: RuleId::AddColumnVolatileDefault, name: "add-column-volatile-default", shape: "ALTER TABLE t ADD COLUMN c type DEFAULT volatile() (gen_random_uuid(), random(), clock_timestamp(), nextval(), an unknown function)", lock: Some(AEL), effect: Rewrite, versions: All, transactional: true, doc: AT_NOTES, note: "a volatile default is computed for every existing row", safer: Some(BACKFILL) },
    Rule { id: RuleId::AddColumnGenerated, name: "add-column-serial-identity-generated", shape: "ALTER TABLE t ADD COLUMN c serial | GENERATED ... AS IDENTITY | GENERATED ALWAYS AS (...) STORED", lock: Some(AEL), effect: Rewrite, versions: All, transactional: true, doc: AT_NOTES, note: "every existing row gets a value", safer: Some(BACKFILL) },
    Rule { id: RuleId::DropColumn, name: "drop-column", shape: "ALTER TABLE t DROP COLUMN c", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_NOTES, note: "the column is hidden, its space reclaimed by later updates", safer: None },
    Rule { id: RuleId::AlterColumnType, name: "alter-column-type", shape: "ALTER TABLE t ALTER COLUMN c TYPE new_type [USING ...]", lock: Some(AEL), effect: Rewrite, versions: All, transactional: true, doc: AT_NOTES, note: "no rewrite only when the old type is binary coercible to the new one (varchar(n) to varchar(m >= n) or text) and there is no USING: the old type is not in the script", safer: Some(NEW_COLUMN) },
    Rule { id: RuleId::AlterColumnTypeCoercible, name: "alter-column-type-coercible", shape: "ALTER TABLE t ALTER COLUMN c TYPE varchar(m >= n) | text | numeric(p' >= p, s), old type known, no USING", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_NOTES, note: "binary coercible: indexes on the column may still be rebuilt", safer: None },
    Rule { id: RuleId::SetNotNull, name: "set-not-null", shape: "ALTER TABLE t ALTER COLUMN c SET NOT NULL", lock: Some(AEL), effect: Scan, versions: From(120000), transactional: true, doc: AT_DESC, note: "scans unless a validated CHECK (c IS NOT NULL) exists", safer: Some("ADD CONSTRAINT c_not_null CHECK (c IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT c_not_null, then SET NOT NULL (no scan since PostgreSQL 12), then DROP CONSTRAINT c_not_null") },
    Rule { id: RuleId::SetNotNullPre12, name: "set-not-null-pre12", shape: "ALTER TABLE t ALTER COLUMN c SET NOT NULL", lock: Some(AEL), effect: Scan, versions: Before(120000), transactional: true, doc: AT_DESC, note: "always scans before PostgreSQL 12", safer: None },
    Rule { id: RuleId::SetNotNullChecked, name: "set-not-null-checked", shape: "ALTER TABLE t ALTER COLUMN c SET NOT NULL after the script added a validated CHECK (c IS NOT NULL)", lock: Some(AEL), effect: Metadata, versions: From(120000), transactional: true, doc: AT_DESC, note: "the validated CHECK proves there is no NULL: the scan is skipped", safer: None },
    Rule { id: RuleId::DropNotNull, name: "drop-not-null", shape: "ALTER TABLE t ALTER COLUMN c DROP NOT NULL", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "", safer: None },
    Rule { id: RuleId::ColumnDefault, name: "set-or-drop-default", shape: "ALTER TABLE t ALTER COLUMN c SET DEFAULT expr | DROP DEFAULT", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "applies to later inserts only", safer: None },
    Rule { id: RuleId::AddCheck, name: "add-check", shape: "ALTER TABLE t ADD [CONSTRAINT k] CHECK (...)", lock: Some(AEL), effect: Scan, versions: All, transactional: true, doc: AT_DESC, note: "every row is checked while reads and writes wait", safer: Some(NOT_VALID) },
    Rule { id: RuleId::AddCheckNotValid, name: "add-check-not-valid", shape: "ALTER TABLE t ADD CONSTRAINT k CHECK (...) NOT VALID", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "new rows are checked; old rows when VALIDATE runs", safer: None },
    Rule { id: RuleId::AddForeignKey, name: "add-foreign-key", shape: "ALTER TABLE t ADD [CONSTRAINT k] FOREIGN KEY (...) REFERENCES r", lock: Some(SRE), effect: Scan, versions: All, transactional: true, doc: AT_DESC, note: "SHARE ROW EXCLUSIVE on both t and the referenced table r while t is scanned", safer: Some(NOT_VALID) },
    Rule { id: RuleId::AddForeignKeyNotValid, name: "add-foreign-key-not-valid", shape: "ALTER TABLE t ADD CONSTRAINT k FOREIGN KEY (...) REFERENCES r NOT VALID", lock: Some(SRE), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "SHARE ROW EXCLUSIVE on t and r, briefly", safer: None },
    Rule { id: RuleId::ValidateConstraint, name: "validate-constraint", shape: "ALTER TABLE t VALIDATE CONSTRAINT k", lock: Some(SUE), effect: Scan, versions: All, transactional: true, doc: AT_DESC, note: "scans with reads and writes going on (a foreign key also takes ROW SHARE on the referenced table)", safer: None },
    Rule { id: RuleId::AddUniqueOrPrimaryKey, name: "add-unique-or-primary-key", shape: "ALTER TABLE t ADD [CONSTRAINT k] PRIMARY KEY | UNIQUE (...)", lock: Some(AEL), effect: Scan, versions: All, transactional: true, doc: AT_DESC, note: "builds the index while reads and writes wait", safer: Some("CREATE UNIQUE INDEX CONCURRENTLY k ON t (...) (outside a transaction), then ALTER TABLE t ADD CONSTRAINT k PRIMARY KEY | UNIQUE USING INDEX k") },
    Rule { id: RuleId::AddConstraintUsingIndex, name: "add-constraint-using-index", shape: "ALTER TABLE t ADD CONSTRAINT k PRIMARY KEY | UNIQUE USING INDEX i", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "a PRIMARY KEY on a nullable column still checks NOT NULL (a scan)", safer: None },
    Rule { id: RuleId::AddExclusion, name: "add-exclusion", shape: "ALTER TABLE t ADD CONSTRAINT k EXCLUDE (...)", lock: Some(AEL), effect: Scan, versions: All, transactional: true, doc: AT_DESC, note: "builds the index while reads and writes wait", safer: None },
    Rule { id: RuleId::DropConstraint, name: "drop-constraint", shape: "ALTER TABLE t DROP CONSTRAINT k", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "dropping a foreign key also takes ACCESS EXCLUSIVE on the table it references, which the script does not show unless it added the key", safer: None },
    Rule { id: RuleId::DropForeignKey, name: "drop-foreign-key", shape: "ALTER TABLE t DROP CONSTRAINT k, k a foreign key to r that the script added", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "ACCESS EXCLUSIVE on t and on the referenced table r (its triggers are dropped)", safer: None },
    Rule { id: RuleId::CreateIndex, name: "create-index", shape: "CREATE INDEX i ON t (...)", lock: Some(Share), effect: Scan, versions: All, transactional: true, doc: "CREATE INDEX, Building Indexes Concurrently", note: "writes wait while the index is built; reads go on", safer: Some(CONCURRENTLY) },
    Rule { id: RuleId::CreateIndexConcurrently, name: "create-index-concurrently", shape: "CREATE INDEX CONCURRENTLY i ON t (...)", lock: Some(SUE), effect: Scan, versions: All, transactional: false, doc: "CREATE INDEX, Building Indexes Concurrently", note: "two scans, reads and writes go on; cannot run in a transaction block; a failure leaves an INVALID index to drop", safer: None },
    Rule { id: RuleId::CreateUniqueIndex, name: "create-unique-index", shape: "CREATE UNIQUE INDEX i ON t (...)", lock: Some(Share), effect: Scan, versions: All, transactional: true, doc: "CREATE INDEX, Building Indexes Concurrently", note: "writes wait while the index is built; reads go on", safer: Some("CREATE UNIQUE INDEX CONCURRENTLY (outside a transaction: its own migration)") },
    Rule { id: RuleId::CreateUniqueIndexConcurrently, name: "create-unique-index-concurrently", shape: "CREATE UNIQUE INDEX CONCURRENTLY i ON t (...)", lock: Some(SUE), effect: Scan, versions: All, transactional: false, doc: "CREATE INDEX, Building Indexes Concurrently", note: "cannot run in a transaction block; a duplicate leaves an INVALID index to drop", safer: None },
    Rule { id: RuleId::DropIndex, name: "drop-index", shape: "DROP INDEX i", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: "DROP INDEX, Parameters (CONCURRENTLY)", note: "the lock is on the index's table; the review names the index", safer: Some("DROP INDEX CONCURRENTLY (outside a transaction: its own migration)") },
    Rule { id: RuleId::DropIndexConcurrently, name: "drop-index-concurrently", shape: "DROP INDEX CONCURRENTLY i", lock: Some(SUE), effect: Metadata, versions: All, transactional: false, doc: "DROP INDEX, Parameters (CONCURRENTLY)", note: "waits for transactions using the index; cannot run in a transaction block", safer: None },
    Rule { id: RuleId::RenameColumn, name: "rename-column", shape: "ALTER TABLE t RENAME COLUMN c TO d", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "the running app's queries that name the old column break", safer: Some(RENAME) },
    Rule { id: RuleId::RenameTable, name: "rename-table", shape: "ALTER TABLE t RENAME TO u", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "the running app's queries that name the old table break", safer: Some(RENAME) },
    Rule { id: RuleId::RenameIndex, name: "rename-index", shape: "ALTER INDEX i RENAME TO j", lock: Some(SUE), effect: Metadata, versions: From(120000), transactional: true, doc: "ALTER INDEX, Description", note: "locks the index only; its table's reads and writes go on", safer: None },
    Rule { id: RuleId::RenameIndexPre12, name: "rename-index-pre12", shape: "ALTER INDEX i RENAME TO j", lock: Some(AEL), effect: Metadata, versions: Before(120000), transactional: true, doc: "ALTER INDEX, Description", note: "ACCESS EXCLUSIVE on the index before PostgreSQL 12", safer: None },
    Rule { id: RuleId::RenameConstraint, name: "rename-constraint", shape: "ALTER TABLE t RENAME CONSTRAINT k TO l", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: AT_DESC, note: "a constraint's index is renamed with it", safer: None },
    Rule { id: RuleId::DropTable, name: "drop-table", shape: "DROP TABLE t | DROP VIEW | DROP SEQUENCE ...", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "", safer: None },
    Rule { id: RuleId::Truncate, name: "truncate", shape: "TRUNCATE t", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "gives the table a new empty file: fast whatever the size", safer: None },
    Rule { id: RuleId::CreateTable, name: "create-table", shape: "CREATE TABLE t (...)", lock: None, effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "a new table: nobody waits", safer: None },
    Rule { id: RuleId::CreateTableForeignKey, name: "create-table-foreign-key", shape: "CREATE TABLE t (... REFERENCES r ...)", lock: Some(SRE), effect: Metadata, versions: All, transactional: true, doc: "CREATE TABLE, Parameters (REFERENCES)", note: "the referenced table r gets SHARE ROW EXCLUSIVE (its trigger is added)", safer: None },
    Rule { id: RuleId::NewTable, name: "new-table", shape: "any statement on a table the same script created (CREATE INDEX, ALTER TABLE, INSERT ...)", lock: None, effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "the table is new and empty and the running app does not use it yet: nobody waits", safer: None },
    Rule { id: RuleId::AlterEnumAddValue, name: "alter-type-add-value", shape: "ALTER TYPE e ADD VALUE 'v'", lock: None, effect: Metadata, versions: From(120000), transactional: true, doc: "ALTER TYPE, Notes", note: "inside a transaction block the new value cannot be used until it commits", safer: None },
    Rule { id: RuleId::AlterEnumAddValuePre12, name: "alter-type-add-value-pre12", shape: "ALTER TYPE e ADD VALUE 'v'", lock: None, effect: Metadata, versions: Before(120000), transactional: false, doc: "ALTER TYPE, Notes", note: "cannot run in a transaction block before PostgreSQL 12", safer: None },
    Rule { id: RuleId::Cluster, name: "cluster", shape: "CLUSTER t [USING i]", lock: Some(AEL), effect: Rewrite, versions: All, transactional: true, doc: "CLUSTER, Notes", note: "without a table it cannot run in a transaction block", safer: None },
    Rule { id: RuleId::VacuumFull, name: "vacuum-full", shape: "VACUUM FULL t", lock: Some(AEL), effect: Rewrite, versions: All, transactional: false, doc: "VACUUM, Parameters (FULL)", note: "cannot run in a transaction block", safer: Some("plain VACUUM (reads and writes go on)") },
    Rule { id: RuleId::Vacuum, name: "vacuum", shape: "VACUUM [ANALYZE] t", lock: Some(SUE), effect: Scan, versions: All, transactional: false, doc: "VACUUM, Notes", note: "cannot run in a transaction block", safer: None },
    Rule { id: RuleId::Analyze, name: "analyze", shape: "ANALYZE t", lock: Some(SUE), effect: Scan, versions: All, transactional: true, doc: LOCKS, note: "reads a sample", safer: None },
    Rule { id: RuleId::Reindex, name: "reindex", shape: "REINDEX TABLE t | INDEX i", lock: Some(Share), effect: Scan, versions: From(120000), transactional: true, doc: "REINDEX, Rebuilding Indexes Concurrently", note: "writes wait; reads that would use the index wait too", safer: Some("REINDEX CONCURRENTLY (outside a transaction: its own migration)") },
    Rule { id: RuleId::ReindexPre12, name: "reindex-pre12", shape: "REINDEX TABLE t | INDEX i", lock: Some(Share), effect: Scan, versions: Before(120000), transactional: true, doc: "REINDEX, Notes", note: "writes wait; reads that would use the index wait too", safer: None },
    Rule { id: RuleId::ReindexConcurrently, name: "reindex-concurrently", shape: "REINDEX ... CONCURRENTLY", lock: Some(SUE), effect: Scan, versions: From(120000), transactional: false, doc: "REINDEX, Rebuilding Indexes Concurrently", note: "cannot run in a transaction block", safer: None },
    Rule { id: RuleId::Insert, name: "insert", shape: "INSERT INTO t ...", lock: Some(RowExclusive), effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "row locks only: time grows with the rows written", safer: None },
    Rule { id: RuleId::UpdateOrDelete, name: "update-or-delete", shape: "UPDATE t ... | DELETE FROM t ...", lock: Some(RowExclusive), effect: Scan, versions: All, transactional: true, doc: LOCKS, note: "the rows it changes stay locked until commit: writers to those rows wait", safer: Some("batches of a few thousand rows, each in its own transaction") },
    Rule { id: RuleId::Select, name: "select", shape: "SELECT ...", lock: Some(AccessShare), effect: Scan, versions: All, transactional: true, doc: LOCKS, note: "", safer: None },
    Rule { id: RuleId::NoTableLock, name: "no-table-lock", shape: "CREATE TYPE | SCHEMA | EXTENSION | FUNCTION | SEQUENCE | VIEW, DROP TYPE, SET, COMMENT ON ...", lock: None, effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "locks no existing table", safer: None },
    Rule { id: RuleId::NotInTransaction, name: "not-in-transaction", shape: "CREATE | DROP DATABASE, ALTER SYSTEM, CREATE | DROP TABLESPACE", lock: None, effect: Metadata, versions: All, transactional: false, doc: "CREATE DATABASE, Notes", note: "cannot run in a transaction block", safer: None },
    Rule { id: RuleId::TransactionControl, name: "transaction-control", shape: "BEGIN | START TRANSACTION | COMMIT | ROLLBACK | SAVEPOINT | ...", lock: None, effect: Metadata, versions: All, transactional: false, doc: "3.4 Transactions", note: "the script manages its own transaction: it cannot run inside dualkey's", safer: None },
    Rule { id: RuleId::Unknown, name: "unknown", shape: "anything else", lock: Some(AEL), effect: Metadata, versions: All, transactional: true, doc: LOCKS, note: "not in the rules table: assumed to take ACCESS EXCLUSIVE on every table it names", safer: None },
];

/// Every row, in table order (for the README and the card's legend).
pub fn rules() -> &'static [Rule] {
    RULES
}

/// The row named `name` (a [`super::StatementReview::rule`]), for its note and versions.
pub fn rule_named(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}
