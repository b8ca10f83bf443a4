//! One test per row of the rules table (the row's example statement, reviewed for a server of
//! the row's versions: its rule, lock, tables, effect, safer form and documentation section),
//! then the script-level behaviour (text, lines, transactions, parse errors).

use super::rules::{RuleId, RULES};
use super::*;

const AEL: Option<LockLevel> = Some(LockLevel::AccessExclusive);
const SRE: Option<LockLevel> = Some(LockLevel::ShareRowExclusive);
const SUE: Option<LockLevel> = Some(LockLevel::ShareUpdateExclusive);
const SHARE: Option<LockLevel> = Some(LockLevel::Share);
const ROWEX: Option<LockLevel> = Some(LockLevel::RowExclusive);

/// Reviews `sql` for `version` and checks its LAST statement against the row `id`.
#[allow(clippy::too_many_arguments)]
fn check(
    id: RuleId,
    version: u32,
    sql: &str,
    lock: Option<LockLevel>,
    tables: &[&str],
    effect: Effect,
    safer: bool,
    doc: &str,
) {
    let review = review_script(sql, version);
    assert_eq!(review.parse_error, None, "{sql}");
    let s = review.statements.last().expect("a statement");
    let rule = id.rule();
    assert_eq!(s.rule, rule.name, "{sql}");
    assert!(rule.versions.holds(version), "{} at {version}", rule.name);
    assert_eq!(s.lock, lock, "{sql}");
    assert_eq!(
        rule.lock.filter(|_| !tables.is_empty()),
        lock,
        "row lock of {}",
        rule.name
    );
    let names: Vec<String> = s.tables.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, tables, "{sql}");
    assert_eq!(s.effect, effect, "{sql}");
    assert_eq!(rule.effect, effect, "{}", rule.name);
    assert_eq!(s.safer.is_some(), safer, "{sql}: {:?}", s.safer);
    assert_eq!(s.doc, doc, "{sql}");
}

macro_rules! row {
    ($test:ident, $id:ident, $version:expr, $sql:expr, $lock:expr, [$($t:expr),*], $effect:ident, safer: $safer:expr, $doc:expr) => {
        #[test]
        fn $test() {
            check(RuleId::$id, $version, $sql, $lock, &[$($t),*], Effect::$effect, $safer, $doc);
        }
    };
}

const PG15: u32 = 150004;
const PG10: u32 = 100021;
const AT_NOTES: &str = "ALTER TABLE, Notes";
const AT_DESC: &str = "ALTER TABLE, Description";
const LOCKS: &str = "13.3.1 Table-Level Locks";
const CI: &str = "CREATE INDEX, Building Indexes Concurrently";

row!(add_column, AddColumn, PG15, "ALTER TABLE \"Task\" ADD COLUMN \"note\" TEXT", AEL, ["Task"], Metadata, safer: false, AT_NOTES);
row!(add_column_constant_default, AddColumnConstantDefault, PG15, "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 0", AEL, ["t"], Metadata, safer: false, AT_NOTES);
row!(add_column_now_default_is_not_volatile, AddColumnConstantDefault, PG15, "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()", AEL, ["t"], Metadata, safer: false, AT_NOTES);
row!(add_column_constant_default_pre11, AddColumnConstantDefaultPre11, PG10, "ALTER TABLE t ADD COLUMN c text DEFAULT 'x'", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_volatile_default, AddColumnVolatileDefault, PG15, "ALTER TABLE t ADD COLUMN c uuid DEFAULT gen_random_uuid()", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_volatile_in_expression, AddColumnVolatileDefault, PG15, "ALTER TABLE t ADD COLUMN c float8 DEFAULT (random() * 10)::float8", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_clock_timestamp, AddColumnVolatileDefault, PG15, "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT clock_timestamp()", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_nextval, AddColumnVolatileDefault, PG15, "ALTER TABLE t ADD COLUMN c int DEFAULT nextval('s')", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_serial, AddColumnGenerated, PG15, "ALTER TABLE t ADD COLUMN c serial", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_identity, AddColumnGenerated, PG15, "ALTER TABLE t ADD COLUMN c bigint GENERATED ALWAYS AS IDENTITY", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(add_column_generated_stored, AddColumnGenerated, PG15, "ALTER TABLE t ADD COLUMN c int GENERATED ALWAYS AS (a + 1) STORED", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(drop_column, DropColumn, PG15, "ALTER TABLE \"User\" DROP COLUMN \"bio\"", AEL, ["User"], Metadata, safer: false, AT_NOTES);
row!(alter_column_type, AlterColumnType, PG15, "ALTER TABLE t ALTER COLUMN c SET DATA TYPE BIGINT", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(alter_column_type_unknown_old_varchar, AlterColumnType, PG15, "ALTER TABLE t ALTER COLUMN c TYPE varchar(20)", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(alter_column_type_coercible, AlterColumnTypeCoercible, PG15, "CREATE TABLE IF NOT EXISTS t (c varchar(10));\nALTER TABLE t ALTER COLUMN c TYPE varchar(20)", AEL, ["t"], Metadata, safer: false, AT_NOTES);
row!(alter_column_type_to_text, AlterColumnTypeCoercible, PG15, "CREATE TABLE IF NOT EXISTS t (c character varying(10));\nALTER TABLE t ALTER COLUMN c TYPE text", AEL, ["t"], Metadata, safer: false, AT_NOTES);
row!(alter_column_type_narrowing, AlterColumnType, PG15, "CREATE TABLE IF NOT EXISTS t (c varchar(20));\nALTER TABLE t ALTER COLUMN c TYPE varchar(10)", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(alter_column_type_using, AlterColumnType, PG15, "CREATE TABLE IF NOT EXISTS t (c varchar(10));\nALTER TABLE t ALTER COLUMN c TYPE text USING upper(c)", AEL, ["t"], Rewrite, safer: true, AT_NOTES);
row!(set_not_null, SetNotNull, PG15, "ALTER TABLE t ALTER COLUMN c SET NOT NULL", AEL, ["t"], Scan, safer: true, AT_DESC);
row!(set_not_null_pre12, SetNotNullPre12, 110005, "ALTER TABLE t ALTER COLUMN c SET NOT NULL", AEL, ["t"], Scan, safer: false, AT_DESC);
row!(set_not_null_checked, SetNotNullChecked, PG15, "ALTER TABLE t ADD CONSTRAINT k CHECK (c IS NOT NULL) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT k;\nALTER TABLE t ALTER COLUMN c SET NOT NULL", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(set_not_null_after_unvalidated_check, SetNotNull, PG15, "ALTER TABLE t ADD CONSTRAINT k CHECK (c IS NOT NULL) NOT VALID;\nALTER TABLE t ALTER COLUMN c SET NOT NULL", AEL, ["t"], Scan, safer: true, AT_DESC);
row!(drop_not_null, DropNotNull, PG15, "ALTER TABLE t ALTER COLUMN c DROP NOT NULL", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(set_default, ColumnDefault, PG15, "ALTER TABLE t ALTER COLUMN c SET DEFAULT gen_random_uuid()", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(drop_default, ColumnDefault, PG15, "ALTER TABLE t ALTER COLUMN c DROP DEFAULT", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(add_check, AddCheck, PG15, "ALTER TABLE t ADD CONSTRAINT k CHECK (c > 0)", AEL, ["t"], Scan, safer: true, AT_DESC);
row!(add_check_not_valid, AddCheckNotValid, PG15, "ALTER TABLE t ADD CONSTRAINT k CHECK (c > 0) NOT VALID", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(add_foreign_key, AddForeignKey, PG15, "ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\") ON DELETE CASCADE ON UPDATE CASCADE", SRE, ["Post", "User"], Scan, safer: true, AT_DESC);
row!(add_foreign_key_not_valid, AddForeignKeyNotValid, PG15, "ALTER TABLE a ADD CONSTRAINT k FOREIGN KEY (b_id) REFERENCES b (id) NOT VALID", SRE, ["a", "b"], Metadata, safer: false, AT_DESC);
row!(validate_constraint, ValidateConstraint, PG15, "ALTER TABLE t VALIDATE CONSTRAINT k", SUE, ["t"], Scan, safer: false, AT_DESC);
row!(add_primary_key, AddUniqueOrPrimaryKey, PG15, "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY (id)", AEL, ["t"], Scan, safer: true, AT_DESC);
row!(add_unique, AddUniqueOrPrimaryKey, PG15, "ALTER TABLE t ADD UNIQUE (email)", AEL, ["t"], Scan, safer: true, AT_DESC);
row!(add_constraint_using_index, AddConstraintUsingIndex, PG15, "ALTER TABLE t ADD CONSTRAINT t_email_key UNIQUE USING INDEX t_email_idx", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(add_exclusion, AddExclusion, PG15, "ALTER TABLE t ADD CONSTRAINT k EXCLUDE USING gist (r WITH &&)", AEL, ["t"], Scan, safer: false, AT_DESC);
row!(drop_constraint, DropConstraint, PG15, "ALTER TABLE t DROP CONSTRAINT t_pkey", AEL, ["t"], Metadata, safer: false, AT_DESC);
row!(drop_foreign_key, DropForeignKey, PG15, "ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\");\nALTER TABLE \"Post\" DROP CONSTRAINT \"Post_authorId_fkey\"", AEL, ["Post", "User"], Metadata, safer: false, AT_DESC);
row!(drop_foreign_key_with_default_name, DropForeignKey, PG15, "CREATE TABLE IF NOT EXISTS p (id int, author_id int REFERENCES u (id));\nALTER TABLE p DROP CONSTRAINT p_author_id_fkey", AEL, ["p", "u"], Metadata, safer: false, AT_DESC);
row!(create_index, CreateIndex, PG15, "CREATE INDEX \"Post_title_idx\" ON \"Post\"(\"title\")", SHARE, ["Post"], Scan, safer: true, CI);
row!(create_index_concurrently, CreateIndexConcurrently, PG15, "CREATE INDEX CONCURRENTLY i ON t (c)", SUE, ["t"], Scan, safer: false, CI);
row!(create_unique_index, CreateUniqueIndex, PG15, "CREATE UNIQUE INDEX \"User_email_key\" ON \"User\"(\"email\")", SHARE, ["User"], Scan, safer: true, CI);
row!(create_unique_index_concurrently, CreateUniqueIndexConcurrently, PG15, "CREATE UNIQUE INDEX CONCURRENTLY i ON public.t (c)", SUE, ["t"], Scan, safer: false, CI);
row!(drop_index, DropIndex, PG15, "DROP INDEX \"Post_title_key\"", AEL, ["Post_title_key"], Metadata, safer: true, "DROP INDEX, Parameters (CONCURRENTLY)");
row!(drop_index_concurrently, DropIndexConcurrently, PG15, "DROP INDEX CONCURRENTLY IF EXISTS i", SUE, ["i"], Metadata, safer: false, "DROP INDEX, Parameters (CONCURRENTLY)");
row!(rename_column, RenameColumn, PG15, "ALTER TABLE \"User\" RENAME COLUMN \"name\" TO \"fullName\"", AEL, ["User"], Metadata, safer: true, AT_DESC);
row!(rename_table, RenameTable, PG15, "ALTER TABLE \"User\" RENAME TO \"Account\"", AEL, ["User"], Metadata, safer: true, AT_DESC);
row!(rename_index, RenameIndex, PG15, "ALTER INDEX \"Post_title_key\" RENAME TO \"Article_title_key\"", SUE, ["Post_title_key"], Metadata, safer: false, "ALTER INDEX, Description");
row!(rename_index_pre12, RenameIndexPre12, 110000, "ALTER INDEX i RENAME TO j", AEL, ["i"], Metadata, safer: false, "ALTER INDEX, Description");
row!(rename_constraint, RenameConstraint, PG15, "ALTER TABLE \"Article\" RENAME CONSTRAINT \"Post_pkey\" TO \"Article_pkey\"", AEL, ["Article"], Metadata, safer: false, AT_DESC);
row!(drop_table, DropTable, PG15, "DROP TABLE IF EXISTS public.users, \"Audit\" CASCADE", AEL, ["users", "Audit"], Metadata, safer: false, LOCKS);
row!(truncate, Truncate, PG15, "TRUNCATE \"Post\"", AEL, ["Post"], Metadata, safer: false, LOCKS);
row!(create_table, CreateTable, PG15, "CREATE TABLE \"User\" (\"id\" SERIAL NOT NULL, CONSTRAINT \"User_pkey\" PRIMARY KEY (\"id\"))", None, [], Metadata, safer: false, LOCKS);
row!(create_table_foreign_key, CreateTableForeignKey, PG15, "CREATE TABLE p (id int PRIMARY KEY, author int REFERENCES \"User\"(id), parent int REFERENCES p (id))", SRE, ["User"], Metadata, safer: false, "CREATE TABLE, Parameters (REFERENCES)");
row!(new_table_index, NewTable, PG15, "CREATE TABLE \"Tag\" (\"id\" TEXT NOT NULL, \"name\" TEXT NOT NULL);\nCREATE UNIQUE INDEX \"Tag_name_key\" ON \"Tag\"(\"name\")", None, [], Metadata, safer: false, LOCKS);
row!(new_table_foreign_key_locks_the_referenced_table, CreateTableForeignKey, PG15, "CREATE TABLE \"Tag\" (\"id\" TEXT NOT NULL, \"postId\" INTEGER);\nALTER TABLE \"Tag\" ADD CONSTRAINT \"Tag_postId_fkey\" FOREIGN KEY (\"postId\") REFERENCES \"Post\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE", SRE, ["Post"], Metadata, safer: false, "CREATE TABLE, Parameters (REFERENCES)");
row!(if_not_exists_table_is_not_taken_as_new, CreateIndex, PG15, "CREATE TABLE IF NOT EXISTS t (a int);\nCREATE INDEX i ON t (a)", SHARE, ["t"], Scan, safer: true, CI);
row!(alter_enum_add_value, AlterEnumAddValue, PG15, "ALTER TYPE \"Role\" ADD VALUE 'ADMIN'", None, [], Metadata, safer: false, "ALTER TYPE, Notes");
row!(alter_enum_add_value_pre12, AlterEnumAddValuePre12, 110000, "ALTER TYPE \"Role\" ADD VALUE 'ADMIN'", None, [], Metadata, safer: false, "ALTER TYPE, Notes");
row!(cluster, Cluster, PG15, "CLUSTER t USING t_pkey", AEL, ["t"], Rewrite, safer: false, "CLUSTER, Notes");
row!(vacuum_full, VacuumFull, PG15, "VACUUM (FULL, ANALYZE) t", AEL, ["t"], Rewrite, safer: true, "VACUUM, Parameters (FULL)");
row!(vacuum_full_old_syntax, VacuumFull, PG15, "VACUUM FULL t", AEL, ["t"], Rewrite, safer: true, "VACUUM, Parameters (FULL)");
row!(vacuum, Vacuum, PG15, "VACUUM ANALYZE t", SUE, ["t"], Scan, safer: false, "VACUUM, Notes");
row!(analyze, Analyze, PG15, "ANALYZE t", SUE, ["t"], Scan, safer: false, LOCKS);
row!(reindex, Reindex, PG15, "REINDEX TABLE t", SHARE, ["t"], Scan, safer: true, "REINDEX, Rebuilding Indexes Concurrently");
row!(reindex_pre12, ReindexPre12, 110000, "REINDEX TABLE t", SHARE, ["t"], Scan, safer: false, "REINDEX, Notes");
row!(reindex_concurrently, ReindexConcurrently, PG15, "REINDEX TABLE CONCURRENTLY t", SUE, ["t"], Scan, safer: false, "REINDEX, Rebuilding Indexes Concurrently");
row!(insert, Insert, PG15, "INSERT INTO t (a) VALUES (1)", ROWEX, ["t"], Metadata, safer: false, LOCKS);
row!(update, UpdateOrDelete, PG15, "UPDATE t SET a = 1", ROWEX, ["t"], Scan, safer: true, LOCKS);
row!(delete, UpdateOrDelete, PG15, "DELETE FROM \"Session\" WHERE expires < now()", ROWEX, ["Session"], Scan, safer: true, LOCKS);
row!(select, Select, PG15, "SELECT setval('s', (SELECT max(id) FROM t))", Some(LockLevel::AccessShare), ["t"], Scan, safer: false, LOCKS);
row!(create_enum, NoTableLock, PG15, "CREATE TYPE \"Role\" AS ENUM ('USER', 'ADMIN')", None, [], Metadata, safer: false, LOCKS);
row!(drop_type, NoTableLock, PG15, "DROP TYPE \"Role\"", None, [], Metadata, safer: false, LOCKS);
row!(rename_type, NoTableLock, PG15, "ALTER TYPE \"Role\" RENAME TO \"Role_old\"", None, [], Metadata, safer: false, LOCKS);
row!(create_database, NotInTransaction, PG15, "CREATE DATABASE x", None, [], Metadata, safer: false, "CREATE DATABASE, Notes");
row!(transaction_control, TransactionControl, PG15, "BEGIN", None, [], Metadata, safer: false, "3.4 Transactions");
row!(unknown, Unknown, PG15, "LOCK TABLE t IN SHARE MODE", AEL, ["t"], Metadata, safer: false, LOCKS);
row!(unknown_alter_table_form, Unknown, PG15, "ALTER TABLE t ENABLE ROW LEVEL SECURITY", AEL, ["t"], Metadata, safer: false, LOCKS);

#[test]
fn table_is_in_rule_id_order_with_unique_names_and_sections() {
    for (i, rule) in RULES.iter().enumerate() {
        assert_eq!(rule.id as usize, i, "{} out of order", rule.name);
        assert!(
            !rule.doc.is_empty() && !rule.shape.is_empty(),
            "{}",
            rule.name
        );
        assert_eq!(
            RULES.iter().filter(|r| r.name == rule.name).count(),
            1,
            "{}",
            rule.name
        );
    }
    assert_eq!(RuleId::Unknown.rule().name, "unknown");
    assert_eq!(
        super::rules::rule_named("create-index").map(|r| r.id),
        Some(RuleId::CreateIndex)
    );
}

#[test]
fn statements_keep_their_text_and_line() {
    let sql = "-- CreateTable\nCREATE TABLE a (id int);\n\n/* two\n lines */\n-- AlterTable\nALTER TABLE a\n  ADD COLUMN b int;\nDROP TABLE a";
    let r = review_script(sql, PG15);
    let got: Vec<(&str, usize)> = r
        .statements
        .iter()
        .map(|s| (s.sql.as_str(), s.line))
        .collect();
    assert_eq!(
        got,
        [
            ("CREATE TABLE a (id int)", 2),
            ("ALTER TABLE a\n  ADD COLUMN b int", 7),
            ("DROP TABLE a", 9)
        ]
    );
    assert!(r.transactional);
}

#[test]
fn multibyte_text_keeps_byte_offsets_right() {
    let r = review_script(
        "SELECT 'é' FROM \"Ünïcödé\";\nDROP TABLE \"Ünïcödé\";",
        PG15,
    );
    assert_eq!(r.statements[1].sql, "DROP TABLE \"Ünïcödé\"");
    assert_eq!(r.statements[1].line, 2);
    assert_eq!(r.statements[1].tables[0].name, "Ünïcödé");
}

#[test]
fn several_subcommands_take_the_worst_row() {
    let sql = "ALTER TABLE \"User\" DROP COLUMN \"bio\",\nADD COLUMN \"about\" TEXT,\nALTER COLUMN \"age\" SET DATA TYPE BIGINT;";
    let s = &review_script(sql, PG15).statements[0];
    assert_eq!(s.rule, "alter-column-type");
    assert_eq!(s.effect, Effect::Rewrite);
    assert_eq!(s.lock, AEL);
    assert!(s.safer.is_some());
    assert!(s.is_risky());
}

#[test]
fn transaction_control_and_concurrently_are_not_transactional() {
    for sql in [
        "BEGIN; ALTER TABLE t ADD COLUMN c int; COMMIT;",
        "CREATE INDEX CONCURRENTLY i ON t (c);",
        "CREATE TABLE t (c int); CREATE INDEX CONCURRENTLY i ON t (c);",
        "DROP INDEX CONCURRENTLY i;",
        "REINDEX INDEX CONCURRENTLY i;",
        "VACUUM t;",
        "SAVEPOINT a;",
        "ALTER SYSTEM SET work_mem = '8MB';",
        "CLUSTER;",
    ] {
        assert!(!review_script(sql, PG15).transactional, "{sql}");
    }
    assert!(!review_script("ALTER TYPE e ADD VALUE 'v';", 110000).transactional);
    assert!(review_script("ALTER TYPE e ADD VALUE 'v';", 120000).transactional);
    assert!(review_script("CREATE INDEX i ON t (c); ANALYZE t;", PG15).transactional);
}

#[test]
fn a_script_that_does_not_parse_says_so() {
    let r = review_script("ALTER TABLE t ADD COLUMN;\nDROP TABLE x;", PG15);
    assert!(
        r.parse_error
            .as_deref()
            .unwrap_or("")
            .contains("syntax error"),
        "{r:?}"
    );
    assert!(r.statements.is_empty());
    assert!(!r.transactional);
}

#[test]
fn comments_strings_and_bodies_are_not_statements() {
    let sql = "-- DROP TABLE a;\nSELECT 'DROP TABLE b';\nDO $$ BEGIN TRUNCATE c; END $$;";
    let r = review_script(sql, PG15);
    assert_eq!(r.statements.len(), 2);
    assert!(r
        .statements
        .iter()
        .all(|s| s.rule != "drop-table" && s.rule != "truncate"));
}

#[test]
fn known_columns_from_the_catalog_make_widening_catalog_only() {
    let mut known = KnownColumns::new();
    let ty = ColumnType::parse("character varying(10)").unwrap();
    known.insert(("Task".into(), "title".into()), ty);
    let sql = "ALTER TABLE \"Task\" ALTER COLUMN \"title\" TYPE VARCHAR(255)";
    assert_eq!(
        review_script_with(sql, PG15, &known).statements[0].effect,
        Effect::Metadata
    );
    assert_eq!(
        review_script(sql, PG15).statements[0].effect,
        Effect::Rewrite
    );
}

#[test]
fn binary_coercible_follows_the_documented_cases() {
    let t = |s: &str| ColumnType::parse(s).unwrap();
    assert!(binary_coercible(&t("varchar(10)"), &t("varchar(10)")));
    assert!(binary_coercible(&t("varchar(10)"), &t("character varying")));
    assert!(binary_coercible(&t("text"), &t("varchar")));
    assert!(!binary_coercible(&t("text"), &t("varchar(10)")));
    assert!(binary_coercible(&t("numeric(10,2)"), &t("numeric(12,2)")));
    assert!(!binary_coercible(&t("numeric(10,2)"), &t("numeric(12,3)")));
    assert!(!binary_coercible(&t("integer"), &t("bigint")));
    assert!(!binary_coercible(&t("integer"), &t("text")));
}

#[test]
fn the_readme_lists_every_row_with_its_lock_effect_and_section() {
    let readme = include_str!("../../../README.md");
    for rule in RULES {
        let prefix = format!("| `{}` |", rule.name);
        let line = readme.lines().find(|l| l.starts_with(&prefix));
        let line = line.unwrap_or_else(|| panic!("README has no row for {}", rule.name));
        let lock = rule.lock.map(LockLevel::as_str).unwrap_or("none");
        let effect = match rule.effect {
            Effect::Rewrite => "rewrite",
            Effect::Scan => "scan",
            Effect::Metadata => "catalog only",
        };
        for part in [lock, effect, rule.doc] {
            assert!(
                line.contains(&format!("| {part} |")),
                "{}: {part} not in {line}",
                rule.name
            );
        }
    }
}
