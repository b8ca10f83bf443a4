//! The `down` rollback strategy: plan, refusals, one-transaction execution, bookkeeping, and
//! re-application by the next deploy.

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{
    self, MigrationState, NoProgress, PrismaError, RollbackEvent, RollbackRefusal,
};

const INIT: &str = "20240101000000_init";
const POST: &str = "20240102000000_add_post";
const TAG: &str = "20240103000000_add_tag";

async fn deployed_blog(prefix: &str) -> (TestDb, Project) {
    let db = TestDb::create(prefix).await;
    let p = Project::from_fixture("prisma/blog");
    let o = prisma::deploy(&db.url, &p.migrations(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(o.applied, vec![INIT, POST, TAG]);
    (db, p)
}

async fn rows(url: &str) -> Vec<prisma::MigrationRow> {
    prisma::read_migrations_table(url).await.unwrap().unwrap()
}

#[tokio::test]
async fn rollback_down_undoes_newest_first_marks_rows_and_deploy_reapplies() {
    let (db, p) = deployed_blog("rbdown").await;
    let dir = p.migrations();

    let plan = prisma::plan_rollback(&db.url, &dir, POST).await.unwrap();
    assert_eq!(plan.names(), vec![TAG, POST], "newest first, target last");
    assert!(plan.steps.iter().all(|s| s.has_down_sql() && s.local));
    assert!(plan.steps[0]
        .down_sql
        .as_deref()
        .unwrap()
        .contains("DROP TABLE \"Tag\""));
    assert!(plan.refusal().is_none());
    assert_eq!(plan.fingerprint, plan.fingerprint());

    let mut events = Vec::new();
    let mut record = |e: &RollbackEvent| events.push(e.clone());
    let out = prisma::rollback_down(&db.url, &dir, POST, Some(&plan.fingerprint), &mut record)
        .await
        .unwrap();
    assert_eq!(out.rolled_back, vec![TAG, POST]);
    let seq: Vec<String> = events
        .iter()
        .map(|e| match e {
            RollbackEvent::Starting { migration, .. } => format!("start {migration}"),
            RollbackEvent::Ran { migration, .. } => format!("ran {migration}"),
            RollbackEvent::Failed { migration, .. } => format!("failed {migration}"),
        })
        .collect();
    assert_eq!(
        seq,
        vec![
            format!("start {TAG}"),
            format!("ran {TAG}"),
            format!("start {POST}"),
            format!("ran {POST}")
        ]
    );

    assert!(table_exists(&db.url, "User").await);
    assert!(!table_exists(&db.url, "Post").await);
    assert!(!table_exists(&db.url, "Tag").await);
    let after = rows(&db.url).await;
    assert_eq!(after.len(), 3);
    for r in &after {
        let rolled = r.rolled_back_at.is_some();
        assert_eq!(rolled, r.migration_name != INIT, "{r:?}");
        assert!(
            r.finished_at.is_some(),
            "the finished row keeps finished_at: {r:?}"
        );
    }
    assert_eq!(out.row_ids, vec![after[2].id.clone(), after[1].id.clone()]);

    // Prisma's status reads rolled-back rows as up to date; dualkey's report says more.
    let report = prisma::status(&db.url, &dir).await.unwrap();
    let cli = report.render_prisma();
    assert_eq!(cli.exit_code, 0);
    assert!(cli.stdout.ends_with("\nDatabase schema is up to date!\n"));
    assert_eq!(report.rolled_back, vec![POST, TAG]);
    assert_eq!(report.deploy_would_apply, vec![POST, TAG]);
    assert_eq!(report.applied, vec![INIT]);
    assert_eq!(report.migrations[1].state, MigrationState::RolledBack);
    assert!(!report.is_clean());

    let again = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(again.applied, vec![POST, TAG]);
    assert!(table_exists(&db.url, "Post").await && table_exists(&db.url, "Tag").await);
    let report = prisma::status(&db.url, &dir).await.unwrap();
    assert_eq!(report.applied, vec![INIT, POST, TAG]);
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(rows(&db.url).await.len(), 5);
}

#[tokio::test]
async fn rollback_is_refused_when_a_down_sql_is_missing_and_nothing_changes() {
    let (db, p) = deployed_blog("rbmissing").await;
    let dir = p.migrations();
    std::fs::remove_file(dir.join(TAG).join("down.sql")).unwrap();

    let plan = prisma::plan_rollback(&db.url, &dir, INIT).await.unwrap();
    assert_eq!(plan.names(), vec![TAG, POST, INIT]);
    assert_eq!(plan.missing_down_sql(), vec![TAG]);
    assert_eq!(
        plan.refusal(),
        Some(RollbackRefusal::MissingDownSql {
            migrations: vec![TAG.to_string()]
        })
    );

    let before = table_dump(&db.url).await;
    let err = prisma::rollback_down(&db.url, &dir, INIT, None, &mut NoProgress)
        .await
        .unwrap_err();
    match &err {
        PrismaError::Rollback(RollbackRefusal::MissingDownSql { migrations }) => {
            assert_eq!(migrations, &vec![TAG.to_string()])
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("reversing migration"), "{err}");
    assert!(err.is_user_error());
    assert_eq!(table_dump(&db.url).await, before);
    assert!(table_exists(&db.url, "Tag").await);
}

#[tokio::test]
async fn rollback_of_a_migration_that_is_not_applied_or_without_table_is_refused() {
    let db = TestDb::create("rbnot").await;
    let p = Project::from_fixture("prisma/blog");
    let dir = p.migrations();
    let err = prisma::plan_rollback(&db.url, &dir, INIT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PrismaError::Rollback(RollbackRefusal::NoMigrationsTable)
        ),
        "{err:?}"
    );

    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    let err = prisma::rollback_down(&db.url, &dir, "20991231000000_nope", None, &mut NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PrismaError::Rollback(RollbackRefusal::NotApplied { migration }) if migration == "20991231000000_nope"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_down_sql_rolls_back_the_whole_rollback() {
    let (db, p) = deployed_blog("rbfail").await;
    let dir = p.migrations();
    p.add_down(POST, "DROP TABLE \"Post\";\nDROP TABLE \"DoesNotExist\";\n");
    let before = table_dump(&db.url).await;

    let mut events = Vec::new();
    let mut record = |e: &RollbackEvent| events.push(e.clone());
    let err = prisma::rollback_down(&db.url, &dir, POST, None, &mut record)
        .await
        .unwrap_err();
    match &err {
        PrismaError::DownScriptFailed {
            migration,
            database_error_code,
            database_error,
        } => {
            assert_eq!(migration, POST);
            assert_eq!(database_error_code, "42P01");
            assert!(
                database_error.starts_with("ERROR: table \"DoesNotExist\" does not exist"),
                "{database_error}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(events.last(), Some(RollbackEvent::Failed { .. })));
    // add_tag's down.sql had run inside the same transaction: it is undone too.
    assert!(table_exists(&db.url, "Tag").await);
    assert!(table_exists(&db.url, "Post").await);
    assert!(query_bool(&db.url, "SELECT count(*) = 1 FROM information_schema.columns WHERE table_name = 'Post' AND column_name = 'tagId'").await);
    assert_eq!(table_dump(&db.url).await, before);
}

#[tokio::test]
async fn rollback_stops_before_its_first_step_when_the_plan_changed_since_approval() {
    let (db, p) = deployed_blog("rbchanged").await;
    let dir = p.migrations();
    let plan = prisma::plan_rollback(&db.url, &dir, TAG).await.unwrap();
    p.add("20240104000000_more", "CREATE TABLE \"More\" (id int);\n");
    p.add_down("20240104000000_more", "DROP TABLE \"More\";\n");
    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    let before = table_dump(&db.url).await;

    let err = prisma::rollback_down(&db.url, &dir, TAG, Some(&plan.fingerprint), &mut NoProgress)
        .await
        .unwrap_err();
    match err {
        PrismaError::Rollback(RollbackRefusal::PlanChanged { expected, actual }) => {
            assert_eq!(expected, plan.fingerprint);
            assert_ne!(actual, plan.fingerprint);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(table_dump(&db.url).await, before);
    assert!(table_exists(&db.url, "More").await);
}

#[tokio::test]
async fn rollback_follows_the_order_migrations_were_applied_not_their_names() {
    let db = TestDb::create("rborder").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240101000000_init", "CREATE TABLE \"A\" (id int);\n");
    p.add_down("20240101000000_init", "DROP TABLE \"A\";\n");
    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    // An older-named migration added later is applied later (deploy does not check order).
    p.add("20231231000000_early", "CREATE TABLE \"B\" (id int);\n");
    p.add_down("20231231000000_early", "DROP TABLE \"B\";\n");
    let o = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(o.applied, vec!["20231231000000_early"]);

    let plan = prisma::plan_rollback(&db.url, &dir, "20240101000000_init")
        .await
        .unwrap();
    assert_eq!(
        plan.names(),
        vec!["20231231000000_early", "20240101000000_init"]
    );
    let plan = prisma::plan_rollback(&db.url, &dir, "20231231000000_early")
        .await
        .unwrap();
    assert_eq!(
        plan.names(),
        vec!["20231231000000_early"],
        "init was applied before it"
    );
}

#[tokio::test]
async fn an_observer_can_stop_the_rollback_and_nothing_is_committed() {
    struct StopAtSecond(usize);
    #[async_trait::async_trait]
    impl prisma::ProgressObserver<RollbackEvent> for StopAtSecond {
        async fn on_event(&mut self, e: &RollbackEvent) -> Result<(), String> {
            if let RollbackEvent::Starting { index, .. } = e {
                self.0 = *index;
                if *index == 2 {
                    return Err("audit store unavailable".into());
                }
            }
            Ok(())
        }
    }
    let (db, p) = deployed_blog("rbobserver").await;
    let before = table_dump(&db.url).await;
    let err = prisma::rollback_down(&db.url, &p.migrations(), POST, None, &mut StopAtSecond(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PrismaError::Aborted(m) if m == "audit store unavailable"),
        "{err:?}"
    );
    assert!(
        table_exists(&db.url, "Tag").await,
        "the first step was rolled back with the rest"
    );
    assert_eq!(table_dump(&db.url).await, before);
}

#[tokio::test]
async fn rollback_is_refused_while_a_failed_migration_is_recorded() {
    let (db, p) = deployed_blog("rbfailedrow").await;
    let dir = p.migrations();
    p.add(
        "20240104000000_bad",
        "ALTER TABLE \"DoesNotExist\" ADD COLUMN x int;\n",
    );
    let o = prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    assert!(o.stopped.is_some());
    let err = prisma::rollback_down(&db.url, &dir, TAG, None, &mut NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PrismaError::Rollback(RollbackRefusal::FailedMigrationsPresent { migrations }) if migrations == &vec!["20240104000000_bad".to_string()]),
        "{err:?}"
    );
    assert!(table_exists(&db.url, "Tag").await);
}

#[tokio::test]
async fn rollback_waits_for_prismas_advisory_lock() {
    use sqlx::{Connection, PgConnection};
    let (db, p) = deployed_blog("rblock").await;
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(72707369)")
        .execute(&mut holder)
        .await
        .unwrap();
    let url = db.url.clone();
    let dir = p.migrations();
    let task =
        tokio::spawn(
            async move { prisma::rollback_down(&url, &dir, TAG, None, &mut NoProgress).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(!task.is_finished(), "rollback must wait for the lock");
    assert!(table_exists(&db.url, "Tag").await);
    holder.close().await.unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.rolled_back, vec![TAG]);
    assert!(!table_exists(&db.url, "Tag").await);
}
