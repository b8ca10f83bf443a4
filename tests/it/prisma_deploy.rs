//! `deploy`: Prisma's writes, the whole-script simple query, failures that leave nothing behind,
//! P3005 / P3009 / P3015 / P3019, progress events and the `?schema=` parameter.

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{
    self, DeployEvent, DeployStopReason, NoProgress, PrismaCode, PrismaError,
};

#[tokio::test]
async fn deploy_writes_rows_exactly_like_prisma() {
    let db = TestDb::create("deprows").await;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    let mut events = Vec::new();
    let mut record = |e: &DeployEvent| events.push(e.clone());
    let out = prisma::deploy(&db.url, &dir, &mut record).await.unwrap();
    assert!(out.is_success());
    assert_eq!(out.migrations_found, 3);
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(
        matches!(&events[0], DeployEvent::Starting { index: 1, total: 3, migration, checksum }
        if migration == "20240101000000_init" && checksum.len() == 64)
    );
    assert!(
        matches!(&events[1], DeployEvent::Applied { migration, .. } if migration == "20240101000000_init")
    );

    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (row, local) in rows.iter().zip(prisma::list_migrations(&dir).migrations) {
        assert_eq!(row.migration_name, local.name);
        let id = uuid::Uuid::parse_str(&row.id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(row.id, id.hyphenated().to_string(), "lowercase hyphenated");
        let bytes = std::fs::read(local.path.join("migration.sql")).unwrap();
        assert_eq!(
            row.checksum,
            prisma::render_checksum(std::str::from_utf8(&bytes).unwrap())
        );
        assert_eq!(row.logs, None);
        assert_eq!(row.rolled_back_at, None);
        assert_eq!(row.applied_steps_count, 1);
        assert!(row.finished_at.unwrap() >= row.started_at);
    }
    // The exact DDL: 8 columns, only a primary key.
    assert!(query_bool(&db.url, "SELECT count(*) = 8 FROM information_schema.columns WHERE table_name = '_prisma_migrations'").await);
    assert!(
        query_bool(
            &db.url,
            "SELECT count(*) = 1 FROM pg_indexes WHERE tablename = '_prisma_migrations'"
        )
        .await
    );

    let again = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(
        again.render_prisma().stdout,
        "3 migrations found in prisma/migrations\n\n\nNo pending migrations to apply.\n"
    );
}

#[tokio::test]
async fn a_failing_script_leaves_nothing_of_itself_behind_and_blocks_the_next_deploy() {
    let db = TestDb::create("depfail").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240101000000_ok", "CREATE TABLE \"A\" (id int);\n");
    p.add(
        "20240102000000_bad",
        "CREATE TABLE \"Tag\" (id int);\nINSERT INTO \"A\" VALUES (1);\nINSERT INTO \"DoesNotExist\" VALUES (1);\n",
    );
    p.add("20240103000000_later", "CREATE TABLE \"C\" (id int);\n");
    let mut events = Vec::new();
    let mut record = |e: &DeployEvent| events.push(e.clone());
    let out = prisma::deploy(&db.url, &dir, &mut record).await.unwrap();
    assert_eq!(out.applied, vec!["20240101000000_ok"]);
    let stop = out.stopped.as_ref().unwrap();
    assert_eq!(stop.migration, "20240102000000_bad");
    let DeployStopReason::ScriptFailed { error } = &stop.reason else {
        panic!("{stop:?}")
    };
    assert_eq!(error.code, PrismaCode::P3018);
    assert!(error.message.contains("\n\nMigration name: 20240102000000_bad\n\nDatabase error code: 42P01\n\nDatabase error:\nERROR: relation \"DoesNotExist\" does not exist\n\nPosition:\n\x1b[1m  0\x1b[0m\n\x1b[1m  1\x1b[0m CREATE TABLE \"Tag\" (id int);\n\x1b[1m  2\x1b[0m INSERT INTO \"A\" VALUES (1);\n\x1b[1m  3\x1b[1;31m INSERT INTO \"DoesNotExist\" VALUES (1);\x1b[0m\n\nDbError { severity: \"ERROR\""), "{}", error.message);
    assert!(error.message.contains(
        "DbError { severity: \"ERROR\", parsed_severity: Some(Error), code: SqlState(E42P01)"
    ));
    assert!(matches!(events.last(), Some(DeployEvent::Failed { .. })));

    assert!(
        !table_exists(&db.url, "Tag").await,
        "the failed script ran as one implicit transaction"
    );
    assert!(query_bool(&db.url, "SELECT count(*) = 0 FROM \"A\"").await);
    assert!(
        !table_exists(&db.url, "C").await,
        "deploy stops at the failure"
    );
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    let bad = &rows[1];
    assert!(bad.is_failed());
    assert_eq!(bad.applied_steps_count, 0);
    assert_eq!(bad.logs.as_deref(), Some(error.message.as_str()));

    let cli = out.render_prisma();
    assert_eq!(cli.exit_code, 1);
    assert_eq!(cli.stdout, "3 migrations found in prisma/migrations\n\n");
    assert!(cli
        .stderr
        .starts_with("Error: P3018\n\nA migration failed to apply."));

    // P3009 names the failed row with chrono's Display of started_at.
    let err = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(PrismaCode::P3009));
    assert_eq!(
        err.cli_stderr(),
        format!(
            "Error: P3009\n\nmigrate found failed migrations in the target database, new migrations will not be applied. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\nThe `20240102000000_bad` migration started at {} failed\n\n\n",
            bad.started_at
        )
    );
    assert!(bad.started_at.to_string().ends_with(" UTC"));
}

#[tokio::test]
async fn each_script_is_one_simple_protocol_query() {
    let db = TestDb::create("depsimple").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add(
        "20240101000000_fn",
        "CREATE TABLE t (v text);\nINSERT INTO t VALUES ('a;b');\n\
         CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;\n",
    );
    p.add("20240102000000_comments_only", "-- nothing to do\n");
    p.add("20240103000000_empty", "");
    let out = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    assert!(out.is_success(), "{out:?}");
    assert_eq!(out.applied.len(), 3);
    assert!(query_bool(&db.url, "SELECT v = 'a;b' FROM t").await);
    assert!(query_bool(&db.url, "SELECT f() = 1").await);
}

#[tokio::test]
async fn a_script_that_leaves_an_aborted_transaction_still_gets_its_failure_recorded() {
    let db = TestDb::create("depbegin").await;
    let p = Project::new();
    p.add(
        "20240101000000_tx",
        "BEGIN;\nCREATE TABLE x (id int);\nSELECT 1/0;\nCOMMIT;\n",
    );
    let out = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert!(matches!(
        out.stopped.unwrap().reason,
        DeployStopReason::ScriptFailed { .. }
    ));
    assert!(!table_exists(&db.url, "x").await);
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    assert!(rows[0].is_failed());
    assert!(rows[0]
        .logs
        .as_deref()
        .unwrap()
        .contains("Database error code: 22012"));
}

#[tokio::test]
async fn deploy_refuses_a_non_empty_schema_with_p3005_but_ignores_postgis_tables() {
    let db = TestDb::create("dep3005").await;
    let p = Project::from_fixture("prisma/blog");
    exec(
        &db.url,
        "CREATE TABLE spatial_ref_sys (srid int); CREATE TABLE \"Geometry_Columns\" (x int);",
    )
    .await;
    let out = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 3);

    let db2 = TestDb::create("dep3005b").await;
    exec(
        &db2.url,
        "CREATE VIEW v AS SELECT 1 AS x; CREATE TABLE legacy (id int);",
    )
    .await;
    let err = prisma::deploy(&db2.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(PrismaCode::P3005));
    assert!(table_dump(&db2.url).await.is_none(), "nothing created");
    let cli = prisma::render_deploy(3, &Err(err));
    assert_eq!(cli.stdout, "3 migrations found in prisma/migrations\n\n");
    assert_eq!(
        cli.stderr,
        "Error: P3005\n\nThe database schema is not empty. Read more about how to baseline an existing production database: https://pris.ly/d/migrate-baseline\n\n"
    );
    assert_eq!(cli.exit_code, 1);
}

#[tokio::test]
async fn deploy_checks_the_lock_file_provider_before_touching_the_database() {
    let db = TestDb::create("dep3019").await;
    let p = Project::from_fixture("prisma/blog");
    std::fs::write(
        p.migrations().join("migration_lock.toml"),
        "provider = \"mysql\"\n",
    )
    .unwrap();
    let err = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(PrismaCode::P3019));
    assert!(err.to_string().contains("`postgresql` specified in your schema does not match the one specified in the migration_lock.toml, `mysql`"));
    assert!(table_dump(&db.url).await.is_none());
}

#[tokio::test]
async fn deploy_stops_with_p3015_when_a_pending_folder_has_no_migration_sql() {
    let db = TestDb::create("dep3015").await;
    let p = Project::new();
    p.add("20240101000000_a", "CREATE TABLE a (id int);\n");
    std::fs::create_dir_all(p.migrations().join("20240102000000_empty_dir")).unwrap();
    let out = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(out.migrations_found, 2);
    assert_eq!(out.applied, vec!["20240101000000_a"]);
    let stop = out.stopped.unwrap();
    let DeployStopReason::ScriptUnreadable { error } = &stop.reason else {
        panic!()
    };
    assert_eq!(
        error.cli_stderr(),
        "Error: P3015\n\nCould not find the migration file at migration.sql. Please delete the directory or restore the migration file.\n\n"
    );
    assert_eq!(
        prisma::read_migrations_table(&db.url)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_observer_error_stops_the_deploy_before_the_next_migration_is_touched() {
    struct StopBefore(&'static str);
    #[async_trait::async_trait]
    impl prisma::ProgressObserver<DeployEvent> for StopBefore {
        async fn on_event(&mut self, e: &DeployEvent) -> Result<(), String> {
            match e {
                DeployEvent::Starting { migration, .. } if migration == self.0 => {
                    Err("audit write failed".into())
                }
                _ => Ok(()),
            }
        }
    }
    let db = TestDb::create("depobs").await;
    let p = Project::from_fixture("prisma/blog");
    let out = prisma::deploy(
        &db.url,
        &p.migrations(),
        &mut StopBefore("20240102000000_add_post"),
    )
    .await
    .unwrap();
    assert_eq!(out.applied, vec!["20240101000000_init"]);
    let stop = out.stopped.unwrap();
    assert_eq!(stop.migration, "20240102000000_add_post");
    assert!(
        matches!(stop.reason, DeployStopReason::Observer { ref message } if message == "audit write failed")
    );
    assert_eq!(
        prisma::read_migrations_table(&db.url)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert!(!table_exists(&db.url, "Post").await);
}

#[tokio::test]
async fn the_schema_url_parameter_selects_the_schema_like_prisma() {
    let db = TestDb::create("depschema").await;
    exec(
        &db.url,
        "CREATE SCHEMA tenant; CREATE TABLE public.unrelated (id int);",
    )
    .await;
    let url = format!("{}?schema=tenant&connection_limit=1", db.url);
    let p = Project::from_fixture("prisma/blog");
    let out = prisma::deploy(&url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(
        out.applied.len(),
        3,
        "public's table does not count for P3005 in schema tenant"
    );
    assert!(query_bool(&db.url, "SELECT to_regclass('tenant._prisma_migrations') IS NOT NULL AND to_regclass('tenant.\"User\"') IS NOT NULL").await);
    assert!(table_dump(&db.url).await.is_none(), "nothing in public");
    let report = prisma::status(&url, &p.migrations()).await.unwrap();
    assert!(report.is_clean());
}

#[tokio::test]
async fn connection_errors_are_faults_and_never_show_the_url() {
    let url = "postgres://postgres:s3cret-pw@127.0.0.1:1/nope";
    let dir = std::path::Path::new("/nonexistent");
    let err = prisma::status(url, dir).await.unwrap_err();
    assert!(matches!(err, PrismaError::Connect(_)), "{err:?}");
    assert!(!err.is_user_error());
    for text in [err.to_string(), format!("{err:?}"), err.cli_stderr()] {
        assert!(
            !text.contains("s3cret-pw") && !text.contains("127.0.0.1:1/nope"),
            "{text}"
        );
    }
    let cli = prisma::deploy_prisma_cli(url, dir).await;
    assert_eq!(cli.exit_code, 1);
    assert!(!cli.stderr.contains("s3cret-pw"));
}
