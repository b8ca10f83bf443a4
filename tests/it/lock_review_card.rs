//! The lock review as approvers see it (issue 22, part 1), on real PostgreSQL through the bot:
//! every deploy and rollback card names, per risky statement, the lock, the rewrite or scan,
//! the table's size read from the target and the safer form; severity follows size (a warning on
//! a 1.5M-row table, a note on a 100-row one, thresholds from `[deploy]`); transactions open on
//! the target for longer than `[deploy] long_transaction` are warnings; and the sizes are not
//! pinned, so a table that grows while a request waits does not make the vote stale.

use std::path::Path;
use std::time::{Duration, Instant};

use dualkey::core::operation::Plan;
use dualkey::core::reply::Severity;
use dualkey::dbops::prisma::{self, NoProgress};
use dualkey::dbops::sessions::{human_bytes, human_rows};
use sqlx::Connection;

use crate::support::{own_production, spawn_app_with, Backend, TestDb};
use crate::taskflow::{Db, TASKFLOW};

const INIT: &str = "20250101000000_init";
const INIT_SQL: &str = r#"-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    "email" TEXT NOT NULL,
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Task" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "done" BOOLEAN NOT NULL DEFAULT false,
    "code" VARCHAR(10),
    "ownerId" INTEGER NOT NULL,
    CONSTRAINT "Task_pkey" PRIMARY KEY ("id")
);
"#;

const UID: &str = "20250201000000_task_uid";
const INDEX: &str = "20250202000000_task_title_index";
const FK: &str = "20250203000000_task_owner_fk";
const RENAME: &str = "20250204000000_rename_done";
const TAGS: &str = "20250205000000_tags";
const TAG_INDEX: &str = "20250206000000_tag_name_index";

/// The pending migrations of every deploy here: the four statements of the issue, then a new
/// table indexed in the same script (not flagged: nobody waits on a new table) and again in a
/// later migration of the same deploy (a note: the table has no size yet).
const PENDING: [(&str, &str); 6] = [
    (
        UID,
        "-- AlterTable\nALTER TABLE \"Task\" ADD COLUMN \"uid\" uuid DEFAULT gen_random_uuid();\n",
    ),
    (
        INDEX,
        "-- CreateIndex\nCREATE INDEX \"Task_title_idx\" ON \"Task\"(\"title\");\n",
    ),
    (
        FK,
        "-- AddForeignKey\nALTER TABLE \"Task\" ADD CONSTRAINT \"Task_ownerId_fkey\" FOREIGN KEY (\"ownerId\") REFERENCES \"User\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE;\n",
    ),
    (
        RENAME,
        "-- AlterTable\nALTER TABLE \"Task\" RENAME COLUMN \"done\" TO \"completed\";\n",
    ),
    (
        TAGS,
        "-- CreateTable\nCREATE TABLE \"Tag\" (\n    \"id\" SERIAL NOT NULL,\n    \"name\" TEXT NOT NULL,\n    CONSTRAINT \"Tag_pkey\" PRIMARY KEY (\"id\")\n);\n\n-- CreateIndex\nCREATE INDEX \"Tag_id_name_idx\" ON \"Tag\"(\"id\", \"name\");\n",
    ),
    (
        TAG_INDEX,
        "-- CreateIndex\nCREATE INDEX \"Tag_name_idx\" ON \"Tag\"(\"name\");\n",
    ),
];

fn write_migration(dir: &Path, name: &str, sql: &str, down: Option<&str>) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("migration.sql"), sql).unwrap();
    if let Some(down) = down {
        std::fs::write(d.join("down.sql"), down).unwrap();
    }
}

/// A bot whose `production` target has `INIT` applied, 100 users and `tasks` rows in "Task"
/// (one `INSERT ... SELECT generate_series`, then `ANALYZE`); `deploy` is added to the config as
/// its `[deploy]` section.
async fn setup(prefix: &str, tasks: u64, deploy: &str) -> Db {
    let target = TestDb::create(prefix).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &target.url);
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        format!(
            "{}\n[deploy]\n{deploy}\n",
            own_production(&t, &var, "{dir}", "")
        )
    })
    .await;
    let migrations = app.dir.path().join("migrations");
    std::fs::copy(
        Path::new(TASKFLOW).join("prisma/migrations/migration_lock.toml"),
        migrations.join("migration_lock.toml"),
    )
    .unwrap();
    write_migration(&migrations, INIT, INIT_SQL, None);
    prisma::deploy(&target.url, &migrations, &mut NoProgress)
        .await
        .unwrap();
    let db = Db {
        app,
        target,
        migrations,
    };
    db.exec(&format!(
        "INSERT INTO \"User\" (\"email\") SELECT 'u' || g || '@example.com' FROM generate_series(1, 100) g; \
         INSERT INTO \"Task\" (\"title\", \"ownerId\") SELECT 'task ' || g, 1 + g % 100 FROM generate_series(1, {tasks}) g; \
         ANALYZE \"User\"; ANALYZE \"Task\";"
    ))
    .await;
    db
}

impl Db {
    /// `about 1.5M rows, 63 MB`: what the card should say of `table`, from the target's catalog.
    async fn size_text(&self, table: &str) -> String {
        let mut c = sqlx::PgConnection::connect(&self.target.url).await.unwrap();
        let (rows, bytes): (f64, i64) = sqlx::query_as(
            "SELECT reltuples::float8, pg_total_relation_size(oid) FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(format!("\"{table}\""))
        .fetch_one(&mut c)
        .await
        .unwrap();
        format!(
            "about {} rows, {}",
            human_rows(rows as u64),
            human_bytes(bytes as u64)
        )
    }

    /// The plan stored with the newest request.
    async fn last_plan(&self) -> Plan {
        let r = self
            .app
            .core
            .store
            .list_requests(None, 1)
            .await
            .unwrap()
            .remove(0);
        serde_json::from_str(&r.plan_json).unwrap()
    }
}

/// The card's line that contains `needle` (exactly one).
fn line<'a>(card: &'a str, needle: &str) -> &'a str {
    let found: Vec<&str> = card.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one line with {needle:?} expected:\n{card}");
    found[0]
}

/// The lines the deploy of [`PENDING`] should show, with `label` (`WARNING: ` or `NOTE: `) and
/// the sizes of "Task" and "User" as the card writes them.
fn expected_lines(label: &str, task: &str, user: &str) -> Vec<String> {
    vec![
        format!("{label}{UID} line 2: `ALTER TABLE \"Task\" ADD COLUMN \"uid\" uuid DEFAULT gen_random_uuid()` rewrites \"Task\" ({task}) under ACCESS EXCLUSIVE: reads and writes wait. Safer: add the column without a default, backfill it in batches, then SET DEFAULT (and SET NOT NULL the checked way)."),
        format!("{label}{INDEX} line 2: `CREATE INDEX \"Task_title_idx\" ON \"Task\"(\"title\")` scans \"Task\" ({task}) under SHARE: writes wait, reads go on. Safer: CREATE INDEX CONCURRENTLY (outside a transaction: its own migration)."),
        format!("{label}{FK} line 2: `ALTER TABLE \"Task\" ADD CONSTRAINT \"Task_ownerId_fkey\" FOREIGN KEY (\"ownerId\") REFERENCES \"User\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE` scans \"Task\" ({task}) and \"User\" ({user}) under SHARE ROW EXCLUSIVE: writes wait, reads go on. Safer: ADD CONSTRAINT ... NOT VALID (catalog only), then VALIDATE CONSTRAINT in its own transaction (reads and writes go on)."),
        format!("{label}{RENAME} line 2: `ALTER TABLE \"Task\" RENAME COLUMN \"done\" TO \"completed\"` changes only the catalog of \"Task\" ({task}) under ACCESS EXCLUSIVE: reads and writes wait. Safer: queries that use the old name fail the moment this commits: add the new column (or a view with the new name), backfill, switch the app, then drop the old."),
    ]
}

/// The severities the plan gives its lock-review lines (those naming a lock).
fn lock_severities(plan: &Plan) -> Vec<(Severity, String)> {
    plan.warnings
        .iter()
        .filter(|w| w.text.contains(" under "))
        .map(|w| (w.severity, w.text.chars().take(40).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deploy_card_on_a_1_5m_row_table_names_the_lock_the_rewrite_or_scan_the_size_and_the_safer_form(
) {
    let db = setup("lrc_big", 1_500_000, "").await;
    for (name, sql) in PENDING {
        write_migration(&db.migrations, name, sql, None);
    }
    let task = db.size_text("Task").await;
    assert!(task.starts_with("about 1.5M rows, "), "{task}");
    let user = db.size_text("User").await;

    let began = Instant::now();
    let card = db.app.cmd("alice", "deploy").await;
    let took = began.elapsed();
    assert!(card.contains("[approve:"), "{card}");
    for want in expected_lines("WARNING: ", &task, &user) {
        let needle = want.split('`').nth(1).unwrap();
        assert_eq!(line(&card, needle), want);
    }
    // A table the same deploy creates has no size and is only a note; in its own script it is
    // not flagged at all.
    assert_eq!(
        line(&card, "Tag_name_idx"),
        format!("NOTE: {TAG_INDEX} line 2: `CREATE INDEX \"Tag_name_idx\" ON \"Tag\"(\"name\")` scans \"Tag\" (created earlier in this plan) under SHARE: writes wait, reads go on. Safer: CREATE INDEX CONCURRENTLY (outside a transaction: its own migration).")
    );
    assert!(!card.contains("Tag_id_name_idx"), "{card}");
    let plan = db.last_plan().await;
    let sev: Vec<Severity> = lock_severities(&plan).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sev,
        vec![
            Severity::Caution,
            Severity::Caution,
            Severity::Caution,
            Severity::Caution,
            Severity::Info
        ],
        "{:?}",
        lock_severities(&plan)
    );
    // The checklist shows the same review.
    let checklist = db.app.cmd("alice", "checklist").await;
    assert!(
        checklist.contains(&format!("[ ] no pending statement blocks reads or writes of a large table ({UID} line 2 (rewrites \"Task\"), {INDEX} line 2 (scans \"Task\"), {FK} line 2 (scans \"Task\"), {RENAME} line 2 (changes only the catalog of \"Task\"))")),
        "{checklist}"
    );
    // Generous for a debug build on a shared machine; benches/lock_review.sh measures it.
    assert!(
        took < Duration::from_secs(5),
        "the card took {took:?} (sizes included)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_card_on_a_100_row_table_shows_notes_and_a_table_grown_before_the_vote_is_not_stale(
) {
    let db = setup("lrc_small", 100, "").await;
    for (name, sql) in PENDING {
        write_migration(&db.migrations, name, sql, None);
    }
    let task = db.size_text("Task").await;
    assert!(task.starts_with("about 100 rows, "), "{task}");
    let user = db.size_text("User").await;
    let card = db.app.cmd("alice", "deploy").await;
    assert!(card.contains("[approve:"), "{card}");
    for want in expected_lines("NOTE: ", &task, &user) {
        let needle = want.split('`').nth(1).unwrap();
        assert_eq!(line(&card, needle), want);
    }
    let checklist = db.app.cmd("alice", "checklist").await;
    assert!(
        checklist
            .contains("[x] no pending statement blocks reads or writes of a large table (none)")
            && checklist.contains("[x] no transaction open on the target for over 1m (none)"),
        "{checklist}"
    );
    let plan = db.last_plan().await;
    let severities = lock_severities(&plan);
    assert_eq!(severities.len(), 5, "{severities:?}");
    assert!(
        severities.iter().all(|(s, _)| *s == Severity::Info),
        "{severities:?}"
    );

    // The table grows past review_warn_rows while the request waits: the vote still counts
    // (sizes are not pinned) and the deploy runs.
    db.exec("INSERT INTO \"Task\" (\"title\", \"ownerId\") SELECT 'more ' || g, 1 FROM generate_series(1, 20000) g; ANALYZE \"Task\";")
        .await;
    let id = db.app.last_request().await;
    let r = db.app.click("bob", &format!("approve:{id}")).await;
    assert!(r.contains("Approved"), "{r}");
    db.app.drain_worker().await;
    let op = db
        .app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(
        db.sql("SELECT count(*)::text FROM \"Task\" WHERE \"uid\" IS NOT NULL")
            .await
            .as_deref(),
        Some("20100")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_open_longer_than_long_transaction_is_a_warning_naming_pid_application_state_age_and_query(
) {
    let db = setup("lrc_xact", 100, "long_transaction = \"1s\"").await;
    write_migration(&db.migrations, INDEX, PENDING[1].1, None);
    // The review knows the column's type on the target: widening it is catalog-only.
    let widen = "20250207000000_widen_code";
    write_migration(
        &db.migrations,
        widen,
        "ALTER TABLE \"Task\" ALTER COLUMN \"code\" TYPE VARCHAR(20);\n",
        None,
    );
    let mut holder =
        sqlx::PgConnection::connect(&format!("{}?application_name=lrc-holder", db.target.url))
            .await
            .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    for sql in [
        "BEGIN",
        "UPDATE \"Task\" SET \"title\" = \"title\" WHERE \"id\" = 1",
    ] {
        sqlx::raw_sql(sql).execute(&mut holder).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let card = db.app.cmd("alice", "deploy").await;
    assert!(
        line(&card, "TYPE VARCHAR(20)").contains(&format!(
            "{widen} line 1: `ALTER TABLE \"Task\" ALTER COLUMN \"code\" TYPE VARCHAR(20)` changes only the catalog of \"Task\" (about 100 rows, "
        )),
        "{card}"
    );
    let l = line(&card, "a transaction open on the target");
    let head = format!(
        "WARNING: a transaction open on the target for over 1s (a migration would wait for it, and the app's queries behind the migration): pid {pid} (lrc-holder, idle in transaction, in a transaction for "
    );
    assert!(l.starts_with(&head), "{l}");
    assert!(
        l.ends_with("): UPDATE \"Task\" SET \"title\" = \"title\" WHERE \"id\" = 1"),
        "{l}"
    );
    let plan = db.last_plan().await;
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.severity == Severity::Caution && w.text.contains(&format!("pid {pid} "))));

    let checklist = db.app.cmd("alice", "checklist").await;
    assert!(
        checklist.contains(&format!(
            "[ ] no transaction open on the target for over 1s (pid {pid} (lrc-holder, idle in transaction"
        )),
        "{checklist}"
    );

    // Once it ends, the next card has no such line.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    let id = db.app.last_request().await;
    db.app.cmd("alice", &format!("cancel {id}")).await;
    let card = db.app.cmd("alice", "deploy").await;
    assert!(card.contains("[approve:"), "{card}");
    assert!(!card.contains("a transaction open on the target"), "{card}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rollback_card_reviews_each_down_sql_with_thresholds_from_the_config() {
    // 100 rows are large here: the thresholds come from [deploy].
    let db = setup("lrc_down", 100, "review_warn_rows = 50").await;
    let name = "20250210000000_add_priority";
    write_migration(
        &db.migrations,
        name,
        "ALTER TABLE \"Task\" ADD COLUMN \"priority\" INTEGER NOT NULL DEFAULT 0;\n",
        Some("CREATE INDEX \"Task_done_idx\" ON \"Task\"(\"done\");\nALTER TABLE \"Task\" DROP COLUMN \"priority\";\n"),
    );
    prisma::deploy(&db.target.url, &db.migrations, &mut NoProgress)
        .await
        .unwrap();
    db.exec("ANALYZE \"Task\";").await;
    let task = db.size_text("Task").await;

    let card = db.app.cmd("alice", &format!("rollback {name}")).await;
    assert!(card.contains("[approve:"), "{card}");
    assert!(card.contains("with down.sql"), "{card}");
    assert_eq!(
        line(&card, "Task_done_idx"),
        format!("WARNING: {name} down.sql line 1: `CREATE INDEX \"Task_done_idx\" ON \"Task\"(\"done\")` scans \"Task\" ({task}) under SHARE: writes wait, reads go on. Safer: CREATE INDEX CONCURRENTLY (outside a transaction: its own migration).")
    );
    assert_eq!(
        line(&card, "DROP COLUMN \"priority\"` "),
        format!("WARNING: {name} down.sql line 2: `ALTER TABLE \"Task\" DROP COLUMN \"priority\"` changes only the catalog of \"Task\" ({task}) under ACCESS EXCLUSIVE: reads and writes wait.")
    );
    let plan = db.last_plan().await;
    let severities = lock_severities(&plan);
    assert_eq!(severities.len(), 2, "{severities:?}");
    assert!(
        severities.iter().all(|(s, _)| *s == Severity::Caution),
        "{severities:?}"
    );
}
