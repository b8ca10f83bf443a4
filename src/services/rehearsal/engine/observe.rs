//! What a rehearsal measures while each migration runs on the scratch database: the tables it
//! rewrote (`pg_class.relfilenode` before and after, from a connection of its own) and the locks
//! its session held (`pg_locks` of the session holding Prisma's advisory lock, sampled every
//! [`SAMPLE_EVERY`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::statement::failure;
use super::RehearsedMigration;
use crate::dbops::prisma::{DeployEvent, ProgressObserver, Target};

/// How often the migration's locks are sampled while it runs.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Every user table's `relfilenode` (`schema.table` -> node), `_prisma_migrations` aside.
const NODES: &str = "SELECT n.nspname || '.' || c.relname AS name, c.relfilenode::bigint AS node \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg_toast%' AND c.relname <> '_prisma_migrations'";

/// The relation locks (stronger than ACCESS SHARE) of the session that holds Prisma's advisory
/// lock 72707369 in this database: the migration's. Relations it created in its still open
/// transaction are not visible in `pg_class` here, so they are left out by the join.
const LOCKS: &str = "WITH m AS (SELECT pid FROM pg_locks WHERE locktype = 'advisory' \
     AND classid = 0 AND objid = 72707369 AND objsubid = 1 AND granted \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
     SELECT l.mode, n.nspname || '.' || c.relname AS name FROM pg_locks l JOIN m ON m.pid = l.pid \
     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE l.locktype = 'relation' AND c.relkind IN ('r', 'p', 'm') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND c.relname <> '_prisma_migrations' AND l.mode <> 'AccessShareLock'";

/// PostgreSQL's table lock modes, weakest first, with the names people read.
const MODES: [(&str, &str); 8] = [
    ("AccessShareLock", "ACCESS SHARE"),
    ("RowShareLock", "ROW SHARE"),
    ("RowExclusiveLock", "ROW EXCLUSIVE"),
    ("ShareUpdateExclusiveLock", "SHARE UPDATE EXCLUSIVE"),
    ("ShareLock", "SHARE"),
    ("ShareRowExclusiveLock", "SHARE ROW EXCLUSIVE"),
    ("ExclusiveLock", "EXCLUSIVE"),
    ("AccessExclusiveLock", "ACCESS EXCLUSIVE"),
];

fn rank(mode: &str) -> usize {
    MODES.iter().position(|(m, _)| *m == mode).unwrap_or(0)
}

/// `ACCESS EXCLUSIVE on public.Task`, strongest first, then by table.
pub fn render_locks(seen: &BTreeMap<String, usize>) -> Vec<String> {
    let mut v: Vec<(&String, &usize)> = seen.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .map(|(t, r)| format!("{} on {t}", MODES[*r].1))
        .collect()
}

/// The migration being applied.
struct Running {
    name: String,
    before: HashMap<String, i64>,
    started: Instant,
    stop: tokio::sync::oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<(Target, BTreeMap<String, usize>)>,
}

/// The deploy observer of a rehearsal: one [`RehearsedMigration`] per migration.
pub struct Observer {
    migrations_dir: std::path::PathBuf,
    /// Migrations applied only to bring the copy up to the target (not measured).
    skip: Vec<String>,
    snapshots: Target,
    sampler: Option<Target>,
    running: Option<Running>,
    /// What was measured, in order.
    pub done: Vec<RehearsedMigration>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.sampler.abort();
        }
    }
}

async fn nodes(t: &mut Target) -> Result<HashMap<String, i64>, String> {
    let rows = sqlx::query(NODES)
        .fetch_all(&mut t.conn)
        .await
        .map_err(|e| format!("reading relfilenodes on the rehearsal database: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>("name"), r.get::<i64, _>("node")))
        .collect())
}

async fn sample(conn: &mut PgConnection, seen: &mut BTreeMap<String, usize>) -> bool {
    let Ok(rows) = sqlx::query(LOCKS).fetch_all(&mut *conn).await else {
        return false;
    };
    for r in rows {
        let (mode, name): (String, String) = (r.get("mode"), r.get("name"));
        let e = seen.entry(name).or_insert(0);
        *e = (*e).max(rank(&mode));
    }
    true
}

/// Samples until `stop` fires (and once more then), handing the connection back.
async fn sampler(
    mut t: Target,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Target, BTreeMap<String, usize>) {
    let mut seen = BTreeMap::new();
    loop {
        if !sample(&mut t.conn, &mut seen).await {
            break;
        }
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
    (t, seen)
}

impl Observer {
    /// Opens its two connections to the scratch database (`scratch_url`).
    /// `skip`: the migrations applied first to bring the copy up to the target, not measured
    /// (a failure among them is still recorded).
    pub async fn open(
        scratch_url: &str,
        migrations_dir: &std::path::Path,
        skip: Vec<String>,
    ) -> Result<Self, String> {
        let connect = || async {
            Target::connect(scratch_url)
                .await
                .map_err(|e| format!("connecting to the rehearsal database: {e}"))
        };
        Ok(Observer {
            migrations_dir: migrations_dir.to_path_buf(),
            skip,
            snapshots: connect().await?,
            sampler: Some(connect().await?),
            running: None,
            done: Vec::new(),
        })
    }

    async fn starting(&mut self, name: &str) -> Result<(), String> {
        if self.skip.iter().any(|s| s == name) {
            return Ok(());
        }
        let before = nodes(&mut self.snapshots).await?;
        let conn = self
            .sampler
            .take()
            .ok_or("the lock sampler's connection was lost")?;
        let (stop, rx) = tokio::sync::oneshot::channel();
        self.running = Some(Running {
            name: name.to_string(),
            before,
            started: Instant::now(),
            stop,
            sampler: tokio::spawn(sampler(conn, rx)),
        });
        Ok(())
    }

    async fn ended(&mut self, name: &str, duration_ms: Option<u64>, error: Option<&str>) {
        let Some(r) = self.running.take() else {
            if error.is_none() {
                // A catch-up migration, applied.
                return;
            }
            // A catch-up migration that failed, or P3015: the script could not be read.
            let (error, statement) = failure(error.unwrap_or_default(), None);
            self.done.push(RehearsedMigration {
                name: name.to_string(),
                duration_ms: 0,
                rewrote: Vec::new(),
                locks: Vec::new(),
                error: Some(error),
                statement,
            });
            return;
        };
        let elapsed = r.started.elapsed().as_millis() as u64;
        let _ = r.stop.send(());
        let seen = match r.sampler.await {
            Ok((conn, seen)) => {
                self.sampler = Some(conn);
                seen
            }
            Err(_) => BTreeMap::new(),
        };
        let after = nodes(&mut self.snapshots).await.unwrap_or_default();
        let mut rewrote: Vec<String> = r
            .before
            .iter()
            .filter(|(t, n)| after.get(*t).is_some_and(|m| m != *n))
            .map(|(t, _)| t.clone())
            .collect();
        rewrote.sort();
        let (error, statement) = match error {
            None => (None, None),
            Some(e) => {
                let script = std::fs::read_to_string(
                    self.migrations_dir.join(&r.name).join("migration.sql"),
                )
                .ok();
                let (e, s) = failure(e, script.as_deref());
                (Some(e), s)
            }
        };
        self.done.push(RehearsedMigration {
            name: r.name,
            duration_ms: duration_ms.unwrap_or(elapsed),
            rewrote,
            locks: render_locks(&seen),
            error,
            statement,
        });
    }
}

#[async_trait::async_trait]
impl ProgressObserver<DeployEvent> for Observer {
    async fn on_event(&mut self, event: &DeployEvent) -> Result<(), String> {
        match event {
            DeployEvent::Starting { migration, .. } => self.starting(migration).await,
            DeployEvent::Applied {
                migration,
                duration_ms,
                ..
            } => {
                self.ended(migration, Some(*duration_ms), None).await;
                Ok(())
            }
            DeployEvent::Failed {
                migration, error, ..
            } => {
                self.ended(migration, None, Some(&error.message)).await;
                Ok(())
            }
            // Nobody else uses the scratch copy: a lock wait there is retried like on the target.
            DeployEvent::LockWait { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_render_strongest_first() {
        let mut seen = BTreeMap::new();
        seen.insert("public.User".to_string(), rank("ShareLock"));
        seen.insert("public.Task".to_string(), rank("AccessExclusiveLock"));
        assert_eq!(
            render_locks(&seen),
            ["ACCESS EXCLUSIVE on public.Task", "SHARE on public.User"]
        );
        assert_eq!(rank("nonsense"), 0);
    }
}
