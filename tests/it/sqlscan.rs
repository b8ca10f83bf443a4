//! `dbops::sqlscan`: data-loss warnings read from migration SQL (table-driven).

use dualkey::dbops::sqlscan::{scan, DataLossKind, DataLossWarning};
use proptest::prelude::*;

/// The warnings as their display strings.
fn shown(sql: &str) -> Vec<String> {
    scan(sql).iter().map(ToString::to_string).collect()
}

#[test]
fn data_loss_statements_are_found_with_their_objects() {
    let cases: &[(&str, &[&str])] = &[
        // Prisma's own output.
        ("-- DropTable\nDROP TABLE \"Post\";", &["DROP TABLE \"Post\""]),
        (
            "/*\n  Warnings:\n  - You are about to drop the column `bio` on the `User` table.\n*/\n-- AlterTable\nALTER TABLE \"User\" DROP COLUMN \"bio\";",
            &["ALTER TABLE \"User\" DROP COLUMN \"bio\""],
        ),
        (
            "ALTER TABLE \"User\" DROP COLUMN \"bio\",\nADD COLUMN \"about\" TEXT,\nALTER COLUMN \"age\" SET DATA TYPE BIGINT;",
            &["ALTER TABLE \"User\" DROP COLUMN \"bio\"", "ALTER TABLE \"User\" ALTER COLUMN \"age\" TYPE"],
        ),
        ("ALTER TABLE \"Post\" ALTER COLUMN \"views\" TYPE integer USING views::integer;", &["ALTER TABLE \"Post\" ALTER COLUMN \"views\" TYPE"]),
        ("DROP SCHEMA IF EXISTS \"legacy\" CASCADE;", &["DROP SCHEMA \"legacy\""]),
        // Case, qualification, lists, options.
        ("drop table if exists public.users, \"Audit\" cascade;", &["DROP TABLE public.users", "DROP TABLE \"Audit\""]),
        ("DrOp TaBlE  \n  Posts ;", &["DROP TABLE Posts"]),
        ("TRUNCATE \"Post\";", &["TRUNCATE \"Post\""]),
        ("truncate table only a, b * restart identity;", &["TRUNCATE a", "TRUNCATE b"]),
        ("DELETE FROM \"Session\" WHERE expires < now();", &["DELETE FROM \"Session\""]),
        ("delete from only s.t;", &["DELETE FROM s.t"]),
        ("WITH gone AS (DELETE FROM logs RETURNING *) SELECT count(*) FROM gone;", &["DELETE FROM logs"]),
        ("ALTER TABLE t DROP c;", &["ALTER TABLE t DROP COLUMN c"]),
        ("ALTER TABLE IF EXISTS ONLY t DROP COLUMN IF EXISTS c;", &["ALTER TABLE t DROP COLUMN c"]),
        ("ALTER TABLE t ALTER c TYPE text;", &["ALTER TABLE t ALTER COLUMN c TYPE"]),
        ("ALTER TABLE \"weird \"\"name\"\"\" DROP COLUMN \"x\";", &["ALTER TABLE \"weird \"\"name\"\"\" DROP COLUMN \"x\""]),
        ("ALTER TABLE t ADD CONSTRAINT c CHECK (a IN (1, 2)), DROP COLUMN d;", &["ALTER TABLE t DROP COLUMN d"]),
        ("DROP TABLE \"Ünïcödé\";", &["DROP TABLE \"Ünïcödé\""]),
        // Several statements, in order.
        (
            "BEGIN;\nDELETE FROM a;\nDROP TABLE b;\nTRUNCATE c;\nCOMMIT;",
            &["DELETE FROM a", "DROP TABLE b", "TRUNCATE c"],
        ),
        // A name that cannot be read is still a warning.
        ("DROP TABLE;", &["DROP TABLE"]),
        ("TRUNCATE", &["TRUNCATE"]),
    ];
    for (sql, expected) in cases {
        assert_eq!(shown(sql), *expected, "SQL: {sql}");
    }
}

#[test]
fn harmless_look_alikes_are_not_warnings() {
    let cases: &[&str] = &[
        "-- DROP TABLE \"Post\";\nSELECT 1;",
        "/* DROP TABLE a; /* nested */ TRUNCATE b; */ SELECT 1;",
        "SELECT 'DROP TABLE a; DELETE FROM b';",
        "SELECT E'it\\'s DROP TABLE a';",
        "SELECT 'it''s; DROP TABLE a';",
        "CREATE FUNCTION f() RETURNS void AS $$ DELETE FROM a; $$ LANGUAGE sql;",
        "DO $body$ BEGIN TRUNCATE a; END $body$;",
        "SELECT $tag$ $$ DROP TABLE a $$ $tag$;",
        "CREATE TABLE \"DROP TABLE x\" (id int);",
        "ALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\") ON DELETE CASCADE ON UPDATE CASCADE;",
        "GRANT SELECT, DELETE ON t TO app;",
        "CREATE TRIGGER tr BEFORE DELETE ON t FOR EACH ROW EXECUTE FUNCTION f();",
        "ALTER TABLE t DROP CONSTRAINT t_pkey;",
        "ALTER TABLE t ALTER COLUMN c DROP DEFAULT, ALTER COLUMN d DROP NOT NULL, ALTER COLUMN e SET DEFAULT 1;",
        "DROP INDEX \"Post_title_key\";",
        "DROP TYPE \"Role\";",
        "CREATE TABLE truncate_log (id int);",
        "SELECT deleted_from FROM t;",
        "UPDATE t SET c = 1;",
    ];
    for sql in cases {
        assert_eq!(shown(sql), Vec::<String>::new(), "SQL: {sql}");
    }
}

#[test]
fn warnings_carry_kind_object_column_and_line() {
    let w = scan(
        "SELECT 1;\n\n-- AlterTable\nALTER TABLE \"User\"\n  DROP COLUMN \"bio\";\nDROP SCHEMA s;",
    );
    assert_eq!(
        w,
        vec![
            DataLossWarning {
                kind: DataLossKind::DropColumn,
                object: Some("\"User\"".into()),
                column: Some("\"bio\"".into()),
                line: 5
            },
            DataLossWarning {
                kind: DataLossKind::DropSchema,
                object: Some("s".into()),
                column: None,
                line: 6
            },
        ]
    );
    assert_eq!(
        DataLossKind::AlterColumnType.as_str(),
        "ALTER COLUMN ... TYPE"
    );
    assert_eq!(
        serde_json::to_string(&DataLossKind::DropTable).unwrap(),
        "\"drop-table\""
    );
}

#[test]
fn line_numbers_count_lines_inside_comments_strings_and_bodies() {
    let sql = "/* one\ntwo */\nSELECT 'a\nb';\nSELECT $$\n$$;\n\"x\ny\";\nTRUNCATE t;";
    assert_eq!(scan(sql)[0].line, 9);
}

#[test]
fn unterminated_input_does_not_hide_what_came_before() {
    for sql in [
        "DROP TABLE a; SELECT 'unterminated",
        "DROP TABLE a; /* open",
        "DROP TABLE a; SELECT $x$ open",
        "DROP TABLE a; SELECT \"open",
        "DROP TABLE a; SELECT E'\\",
    ] {
        assert_eq!(shown(sql), ["DROP TABLE a"], "SQL: {sql}");
    }
}

proptest! {
    #[test]
    fn scanning_never_panics(sql in "\\PC{0,200}") {
        let _ = scan(&sql);
    }

    #[test]
    fn scanning_sql_like_noise_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just("DROP"), Just("TABLE"), Just("ALTER"), Just("COLUMN"), Just("TYPE"), Just("DELETE"), Just("FROM"),
            Just("'"), Just("\""), Just("$$"), Just("$a$"), Just("/*"), Just("*/"), Just("--"), Just("\n"), Just(";"),
            Just(","), Just("("), Just(")"), Just("."), Just("E'"), Just("\\"), Just("é"), Just(" "), Just("x"),
        ],
        0..60,
    )) {
        let sql: String = parts.concat();
        let _ = scan(&sql);
    }
}
