//! A bot whose `production` is a fresh PostgreSQL target with a chosen set of the TaskFlow
//! fixture's migrations, driven through chat: shared by the runbook, plan-truth and deploy-pinning
//! tests.

use std::path::{Path, PathBuf};

use sqlx::Connection;

use crate::support::{spawn_app_with, Backend, TestApp, TestDb};

pub const TASKFLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taskflow");
pub const INIT: &str = "20250101000000_init";
pub const PRIORITY: &str = "20250115000000_add_task_priority";
pub const COMMENTS: &str = "20250201000000_add_comments";
pub const LEGACY: &str = "20250301000000_drop_legacy_flag";

/// The bot, its target database and its migrations folder.
pub struct Db {
    pub app: TestApp,
    pub target: TestDb,
    pub migrations: PathBuf,
}

/// Copies one fixture migration folder into `to`.
pub fn copy_migration(name: &str, to: &Path) {
    let src = Path::new(TASKFLOW).join("prisma/migrations").join(name);
    let dst = to.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
    }
}

/// A bot (SQLite store) whose `production` is a fresh target database (named after `prefix`) with
/// `names` in its migrations folder; `extra` is added to `[environments.production]`.
pub async fn setup(prefix: &str, names: &[&str], extra: &str) -> Db {
    let target = TestDb::create(prefix).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    // Each test names its own variable; nextest runs every test in its own process.
    std::env::set_var(&var, &target.url);
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        crate::support::own_production(&t, &var, "{dir}", extra)
    })
    .await;
    let migrations = app.dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::copy(
        Path::new(TASKFLOW).join("prisma/migrations/migration_lock.toml"),
        migrations.join("migration_lock.toml"),
    )
    .unwrap();
    for n in names {
        copy_migration(n, &migrations);
    }
    Db {
        app,
        target,
        migrations,
    }
}

impl Db {
    /// The first column of the first row of `sql` on the target, if any.
    pub async fn sql(&self, sql: &str) -> Option<String> {
        let mut c = sqlx::PgConnection::connect(&self.target.url).await.unwrap();
        sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_optional(&mut c)
            .await
            .unwrap()
            .flatten()
    }

    /// Runs `sql` (one or more statements) on the target.
    pub async fn exec(&self, sql: &str) {
        let mut c = sqlx::PgConnection::connect(&self.target.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }

    /// The migrations applied in the target, oldest first.
    pub async fn applied(&self) -> Vec<String> {
        let mut c = sqlx::PgConnection::connect(&self.target.url).await.unwrap();
        sqlx::query_scalar("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY started_at")
            .fetch_all(&mut c)
            .await
            .unwrap()
    }

    /// Alice asks, Bob approves, the worker runs it; returns the request's operation.
    pub async fn approved(&self, text: &str) -> dualkey::store::OperationRow {
        let card = self.app.cmd("alice", text).await;
        assert!(
            card.contains("[approve:"),
            "`{text}` should post an approval card: {card}"
        );
        let id = self.app.last_request().await;
        let r = self.app.click("bob", &format!("approve:{id}")).await;
        assert!(r.contains("Approved"), "{r}");
        self.app.drain_worker().await;
        self.app
            .core
            .store
            .operation_for_request(&id)
            .await
            .unwrap()
            .expect("operation")
    }
}
