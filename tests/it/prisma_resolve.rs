//! `resolve --applied | --rolled-back`: preconditions, exact writes and errors beyond the goldens.

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{self, NoProgress, PrismaCode, PrismaError, ResolveAction};

async fn failed_setup(prefix: &str) -> (TestDb, Project) {
    let db = TestDb::create(prefix).await;
    let p = Project::new();
    p.add("20240101000000_init", "CREATE TABLE a (id int);\n");
    p.add("20240102000000_bad", "ALTER TABLE nope ADD COLUMN x int;\n");
    let out = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert!(out.stopped.is_some());
    (db, p)
}

#[tokio::test]
async fn resolve_applied_on_a_failed_migration_marks_it_rolled_back_and_inserts_prismas_row() {
    let (db, p) = failed_setup("resapplied").await;
    let before = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    let out = prisma::resolve(
        &db.url,
        &p.migrations(),
        "20240102000000_bad",
        ResolveAction::Applied,
    )
    .await
    .unwrap();
    assert_eq!(out.rows_marked_rolled_back, vec![before[1].id.clone()]);
    assert!(!out.created_table);
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[1].rolled_back_at.is_some() && rows[1].finished_at.is_none());
    assert_eq!(
        rows[1].logs, before[1].logs,
        "the failed row stays as an audit trail"
    );
    let new = &rows[2];
    assert_eq!(Some(&new.id), out.inserted_row_id.as_ref());
    assert_eq!(uuid::Uuid::parse_str(&new.id).unwrap().get_version_num(), 4);
    assert_eq!(new.logs.as_deref(), Some(""));
    assert_eq!(
        new.finished_at,
        Some(new.started_at),
        "one timestamp for both"
    );
    assert_eq!(new.applied_steps_count, 0);
    assert_eq!(new.rolled_back_at, None);
    assert_eq!(
        new.checksum,
        prisma::render_checksum("ALTER TABLE nope ADD COLUMN x int;\n")
    );
    assert!(
        !table_exists(&db.url, "nope").await,
        "the script is not executed"
    );

    let cli = prisma::render_resolve("20240102000000_bad", ResolveAction::Applied, &Ok(()));
    assert_eq!(
        cli.stdout,
        "Migration 20240102000000_bad marked as applied.\n\n"
    );
    assert_eq!(cli.exit_code, 0);
}

#[tokio::test]
async fn resolve_rolled_back_only_touches_failed_rows_and_ignores_the_lock_file() {
    let (db, p) = failed_setup("resrb").await;
    // --rolled-back reads neither the folder nor migration_lock.toml.
    std::fs::write(
        p.migrations().join("migration_lock.toml"),
        "provider = \"mysql\"\n",
    )
    .unwrap();
    let before = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    let out = prisma::resolve(
        &db.url,
        std::path::Path::new("/nonexistent"),
        "20240102000000_bad",
        ResolveAction::RolledBack,
    )
    .await
    .unwrap();
    assert_eq!(out.rows_marked_rolled_back.len(), 1);
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows[0], before[0]);
    let mut expected = before[1].clone();
    expected.rolled_back_at = rows[1].rolled_back_at;
    assert!(expected.rolled_back_at.is_some());
    assert_eq!(rows[1], expected, "only rolled_back_at changed");

    // The lock file does matter for --applied.
    let err = prisma::resolve(
        &db.url,
        &p.migrations(),
        "20240102000000_bad",
        ResolveAction::Applied,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(PrismaCode::P3019));
}

#[tokio::test]
async fn resolve_errors_carry_prismas_codes_and_texts() {
    let (db, p) = failed_setup("reserr").await;
    let dir = p.migrations();
    std::fs::create_dir_all(dir.join("20240103000000_no_script")).unwrap();
    let cases = [
        (
            "20240103000000_no_script",
            ResolveAction::Applied,
            PrismaCode::P3017,
        ),
        (
            "20240101000000_init",
            ResolveAction::Applied,
            PrismaCode::P3008,
        ),
        (
            "20240101000000_init",
            ResolveAction::RolledBack,
            PrismaCode::P3012,
        ),
        ("2024", ResolveAction::RolledBack, PrismaCode::P3011),
        ("", ResolveAction::Applied, PrismaCode::P3017),
    ];
    for (name, action, code) in cases {
        let result = prisma::resolve(&db.url, &dir, name, action).await;
        let err = result.as_ref().unwrap_err();
        assert_eq!(err.code(), Some(code), "{name} {action:?}: {err:?}");
        assert!(err.is_user_error());
        let cli = prisma::render_resolve(name, action, &result);
        assert_eq!(cli.exit_code, 1);
        assert!(cli.stdout.is_empty());
        assert!(cli.stderr.starts_with(&format!("Error: {code}\n\n")));
        assert!(
            cli.stderr.ends_with(".\n\n") || cli.stderr.ends_with(")\n\n"),
            "{:?}",
            cli.stderr
        );
    }
}

#[tokio::test]
async fn resolve_rolled_back_without_a_table_is_prismas_invariant_violation() {
    let db = TestDb::create("resnotable").await;
    let err = prisma::resolve_rolled_back(&db.url, "x").await.unwrap_err();
    match &err {
        PrismaError::Engine(m) => assert_eq!(
            m,
            "Invariant violation: called markMigrationRolledBack on a database without migrations table."
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.cli_stderr(), "Error: Invariant violation: called markMigrationRolledBack on a database without migrations table.\n");
    assert!(table_dump(&db.url).await.is_none(), "nothing is created");
}

#[tokio::test]
async fn resolve_applied_baselines_a_database_without_the_table() {
    let db = TestDb::create("resbaseline").await;
    exec(&db.url, "CREATE TABLE legacy (id int);").await;
    let p = Project::new();
    p.add("20240101000000_init", "CREATE TABLE legacy (id int);\n");
    let out = prisma::resolve_applied(&db.url, &p.migrations(), "20240101000000_init")
        .await
        .unwrap();
    assert!(out.created_table);
    let report = prisma::status(&db.url, &p.migrations()).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.render_prisma().exit_code, 0);
}

#[tokio::test]
async fn resolve_gives_up_after_ten_seconds_when_the_advisory_lock_is_held() {
    use sqlx::{Connection, PgConnection};
    let (db, p) = failed_setup("reslock").await;
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(72707369)")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = prisma::resolve(
        &db.url,
        &p.migrations(),
        "20240102000000_bad",
        ResolveAction::RolledBack,
    )
    .await
    .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), Some(PrismaCode::P1002), "{err:?}");
    assert!(
        waited >= std::time::Duration::from_secs(10) && waited < std::time::Duration::from_secs(20),
        "{waited:?}"
    );
    assert!(err.cli_stderr().contains(
        "Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369))"
    ));
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    assert!(rows[1].is_failed(), "nothing written");
    holder.close().await.unwrap();
}
