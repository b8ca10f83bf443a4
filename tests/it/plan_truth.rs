//! The loss shown to approvers is the real loss (issue 11, item 3): every plan that restores
//! names exactly the migrations the restore un-applies (applied now minus applied in the
//! backup), rollback by restore prefers a backup that undoes nothing earlier (and says so first
//! when it must), the card estimates the rows written since the backup from PostgreSQL's write
//! counters (or says why it cannot), and an emergency on a healthy database says so first.
//!
//! Real parts only: a real PostgreSQL target with the TaskFlow fixture, real `pg_dump` backups,
//! the in-process bot with a SQLite store driven through chat.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::taskflow::{copy_migration, Db, COMMENTS, INIT, LEGACY, PRIORITY, TASKFLOW};

/// A bot whose `production` is a fresh target database with `names` in its migrations folder.
async fn setup(names: &[&str]) -> Db {
    crate::taskflow::setup("plantruth", names, "").await
}

/// One table's write counters as PostgreSQL reports them.
async fn counters(c: &mut sqlx::PgConnection, table: &str) -> (i64, i64, i64) {
    sqlx::query_as("SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = $1")
        .bind(table)
        .fetch_one(c)
        .await
        .unwrap()
}

impl Db {
    /// Runs `sql` and makes its write counters visible before returning: the session's pending
    /// statistics are flushed when it goes idle after `pg_stat_force_next_flush()` (PostgreSQL
    /// 15+; otherwise at most once a second). `expect` (table, inserted, updated, deleted since
    /// before `sql`) is then awaited with a bounded poll, never a blind sleep.
    async fn write(&self, sql: &str, expect: &[(&str, i64, i64, i64)]) {
        let mut c = sqlx::PgConnection::connect(&self.target.url).await.unwrap();
        let mut before = Vec::new();
        for (t, ..) in expect {
            before.push(counters(&mut c, t).await);
        }
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut c)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for ((t, i, u, d), b) in expect.iter().zip(before) {
            loop {
                let now = counters(&mut c, t).await;
                if now == (b.0 + i, b.1 + u, b.2 + d) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{t}: counters {now:?}, expected {before:?} + ({i}, {u}, {d})",
                    before = b
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The fixture's seed rows (500 tasks), with their counters flushed (so that a backup taken
    /// next does not count them as written after it).
    async fn seed_counted(&self) {
        let sql = std::fs::read_to_string(Path::new(TASKFLOW).join("seed.sql")).unwrap();
        self.write(&sql, &[("Task", 500, 0, 0)]).await;
    }

    /// [`Db::approved`], and the operation must have succeeded.
    async fn succeeded(&self, text: &str) -> dualkey::store::OperationRow {
        let op = self.approved(text).await;
        assert_eq!(op.state, "succeeded", "`{text}`: {:?}", op.error);
        op
    }

    /// Alice's request card for `text` (an approval card: nothing runs until a vote).
    async fn card(&self, text: &str) -> String {
        let card = self.app.cmd("alice", text).await;
        assert!(card.contains("[approve:"), "`{text}`: {card}");
        card
    }

    /// A manual backup; returns its catalog id.
    async fn backup(&self) -> String {
        let r = self.app.cmd("alice", "backup").await;
        assert!(r.contains("Operation"), "{r}");
        self.app.drain_worker().await;
        self.newest_backup().await.id
    }

    async fn newest_backup(&self) -> dualkey::store::BackupRow {
        let b = self
            .app
            .core
            .store
            .list_backups("production")
            .await
            .unwrap()
            .remove(0);
        assert_eq!(b.state, "ok", "{b:?}");
        b
    }
}

/// The card's warnings, in order.
fn warnings(card: &str) -> Vec<&str> {
    card.lines()
        .filter_map(|l| l.trim().strip_prefix("WARNING: "))
        .collect()
}

/// The migrations the card says the restore un-applies (newest first), from the line
/// `restoring B un-applies N migration(s), newest first: a, b`.
fn unapplied(card: &str) -> Vec<String> {
    let w = warnings(card);
    let line = w
        .iter()
        .find(|w| w.starts_with("restoring ") && w.contains(" un-applies "))
        .unwrap_or_else(|| panic!("no un-applies line on the card: {card}"));
    if line.contains("un-applies no migration") {
        return Vec::new();
    }
    let list = line
        .split("newest first: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    let list = list.split(';').next().unwrap();
    list.split(", ").map(str::to_string).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn rollback_by_restore_of_a_four_migration_deploy_names_all_four_and_warns_first_about_the_earlier_ones(
) {
    // The reproduced defect: four migrations deployed at once, so the only backup before the
    // third is the pre-deploy one with nothing applied.
    let db = setup(&[INIT, PRIORITY, COMMENTS, LEGACY]).await;
    db.succeeded("deploy").await;
    let pre_deploy = db.newest_backup().await;
    assert_eq!(pre_deploy.migrations_json, "[]");
    let card = db.card(&format!("rollback {COMMENTS}")).await;
    assert_eq!(
        unapplied(&card),
        names(&[LEGACY, COMMENTS, PRIORITY, INIT]),
        "{card}"
    );
    let first = warnings(&card)[0];
    assert!(
        first.contains("also undoes")
            && first.contains(&format!("{PRIORITY}, {INIT}"))
            && first.contains(&pre_deploy.id),
        "the first warning names the earlier migrations the restore undoes too: {card}"
    );
}

#[tokio::test]
async fn rollback_by_restore_prefers_the_backup_with_exactly_the_migrations_before_the_target() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.succeeded("deploy").await;
    // Roll PRIORITY back with its down.sql: the pre-rollback backup has INIT and PRIORITY.
    db.succeeded(&format!("rollback {PRIORITY}")).await;
    let exact = db.newest_backup().await;
    assert_eq!(exact.kind, "pre-rollback");
    assert_eq!(db.applied().await, names(&[INIT]));
    // Deploy PRIORITY again with two more: the pre-deploy backup (newer) has only INIT.
    copy_migration(COMMENTS, &db.migrations);
    copy_migration(LEGACY, &db.migrations);
    db.succeeded("deploy").await;
    let newer = db.newest_backup().await;
    assert_eq!(newer.kind, "pre-deploy");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&newer.migrations_json).unwrap(),
        names(&[INIT])
    );
    // LEGACY has no down.sql: the rollback of COMMENTS restores a backup.
    let card = db.card(&format!("rollback {COMMENTS}")).await;
    assert!(
        card.contains(&exact.id) && !card.contains(&newer.id),
        "the backup with exactly {INIT}, {PRIORITY} is preferred: {card}"
    );
    assert_eq!(unapplied(&card), names(&[LEGACY, COMMENTS]), "{card}");
    assert!(!card.contains("also undoes"), "{card}");
    db.succeeded(&format!("rollback {COMMENTS}")).await;
    assert_eq!(db.applied().await, names(&[INIT, PRIORITY]));
}

#[tokio::test]
async fn restore_and_emergency_cards_list_applied_now_minus_applied_in_the_backup() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.succeeded("deploy").await;
    let empty = db.newest_backup().await.id;
    let two = db.backup().await;
    copy_migration(COMMENTS, &db.migrations);
    copy_migration(LEGACY, &db.migrations);
    db.succeeded("deploy").await;
    let pre_deploy = db.newest_backup().await.id;

    let card = db.card(&format!("restore {empty}")).await;
    assert_eq!(
        unapplied(&card),
        names(&[LEGACY, COMMENTS, PRIORITY, INIT]),
        "{card}"
    );
    let card = db.card(&format!("restore {two}")).await;
    assert_eq!(unapplied(&card), names(&[LEGACY, COMMENTS]), "{card}");
    // Emergency restores the newest backup taken before the newest migration: the pre-deploy one.
    let card = db.card("emergency").await;
    assert!(card.contains(&pre_deploy), "{card}");
    assert_eq!(unapplied(&card), names(&[LEGACY, COMMENTS]), "{card}");
    // Nothing is un-applied by a backup of the current state.
    let now = db.backup().await;
    let card = db.card(&format!("restore {now}")).await;
    assert_eq!(unapplied(&card), Vec::<String>::new(), "{card}");
}

#[tokio::test]
async fn restoring_cards_estimate_the_rows_written_since_the_backup_and_say_when_they_cannot() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.succeeded("deploy").await;
    db.seed_counted().await;
    let b = db.backup().await;
    assert!(
        db.newest_backup().await.write_stats_json.is_some(),
        "the backup recorded the write counters"
    );
    db.write(
        "INSERT INTO \"Task\" (\"title\", \"projectId\", \"ownerId\") SELECT 'new ' || g, 1, 1 FROM generate_series(1, 40) g; \
         UPDATE \"Task\" SET done = true WHERE id <= 25; \
         DELETE FROM \"Task\" WHERE id > 490 AND id <= 500; \
         INSERT INTO \"Project\" (\"name\") VALUES ('late');",
        &[("Task", 40, 25, 10), ("Project", 1, 0, 0)],
    )
    .await;
    let card = db.card(&format!("restore {b}")).await;
    let loss = warnings(&card)
        .into_iter()
        .find(|w| w.contains("rows written since"))
        .unwrap_or_else(|| panic!("no write estimate on the card: {card}"))
        .to_string();
    assert!(
        loss.contains("rows written since: about 76 rows (public.Task: 75 = 40 inserted, 25 updated, 10 deleted; public.Project: 1 = 1 inserted, 0 updated, 0 deleted)"),
        "{loss}"
    );

    // The same backup as an old catalog entry without counters.
    let mut old = db.app.core.store.get_backup(&b).await.unwrap().unwrap();
    old.write_stats_json = None;
    let mut tx = db.app.core.store.begin().await.unwrap();
    tx.put_backup(&old).await.unwrap();
    tx.commit().await.unwrap();
    let card = db.card(&format!("restore {b}")).await;
    assert!(
        card.contains(
            "rows written since: unknown (backup taken before dualkey recorded write counters"
        ),
        "{card}"
    );

    // Counters reset after a fresh backup: the estimate is unknown, and says why.
    let fresh = db.backup().await;
    db.write("SELECT pg_stat_reset()", &[]).await;
    let card = db.card(&format!("restore {fresh}")).await;
    assert!(
        card.contains("rows written since: unknown (")
            && card.contains("statistics were reset since the backup"),
        "{card}"
    );
}

#[tokio::test]
async fn emergency_on_a_healthy_database_says_so_first_with_the_number_of_migrations_it_undoes() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.succeeded("deploy").await;
    let card = db.card("emergency").await;
    let first = warnings(&card)[0];
    assert!(
        first.contains("looks healthy") && first.contains("undoes 2 applied migration(s)"),
        "{card}"
    );
    // With a failed migration it is an emergency: no such warning.
    let bad = db.migrations.join("20250401000000_bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("migration.sql"), "SELECT * FROM does_not_exist;\n").unwrap();
    let r = db.app.cmd("alice", "deploy").await;
    assert!(r.contains("[approve:"), "{r}");
    let id = db.app.last_request().await;
    db.app.click("bob", &format!("approve:{id}")).await;
    db.app.drain_worker().await;
    let card = db.card("emergency").await;
    assert!(!card.contains("looks healthy"), "{card}");
}

#[tokio::test]
async fn a_migration_applied_after_the_restore_was_requested_stops_it_before_anything_runs() {
    let db = setup(&[INIT, PRIORITY]).await;
    db.succeeded("deploy").await;
    let b = db.backup().await;
    let card = db.card(&format!("restore {b}")).await;
    assert_eq!(unapplied(&card), Vec::<String>::new(), "{card}");
    let id = db.app.last_request().await;
    // Deployed outside dualkey while the request waits: the restore would now un-apply COMMENTS,
    // which the approvers were never shown.
    copy_migration(COMMENTS, &db.migrations);
    let out = dualkey::dbops::prisma::deploy(
        &db.target.url,
        &db.migrations,
        &mut dualkey::dbops::prisma::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(out.applied, names(&[COMMENTS]));
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
        .expect("operation");
    assert_eq!(op.state, "failed");
    let err = op.error.unwrap_or_default();
    assert!(
        err.contains("the plan changed") && err.contains(COMMENTS),
        "{err}"
    );
    assert_eq!(db.applied().await, names(&[INIT, PRIORITY, COMMENTS]));
    assert!(db.app.marker_lines().is_empty(), "nothing ran");
}
