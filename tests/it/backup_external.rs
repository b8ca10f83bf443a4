//! External plain-SQL backups (the runbook's `pg_dump > backup_pre_migration_<ts>.sql`): listing,
//! restore through psql, and psql scripts that try to run commands on the bot's machine.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use dualkey::dbops::backup::{
    cleanup_partials, list_dumps, list_external, restore, restore_with, BackupKind, DumpFormat,
    RestoreError, RestoreOptions,
};

use crate::backup_common::*;
use crate::support::TestDb;

fn touch(path: &Path, age: Duration, bytes: usize) {
    std::fs::write(path, vec![b'-'; bytes]).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

/// `pg_dump` in plain format, as the runbook does it.
fn plain_dump(db: &TestDb, to: &Path) {
    let url = dualkey::dbops::backup::PgUrl::parse(&db.url).unwrap();
    let out = Command::new("pg_dump")
        .args(url.connection_args())
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(to, out.stdout).unwrap();
}

#[test]
fn external_backups_are_the_plain_sql_files_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    touch(
        &d.join("backup_pre_migration_20240101.sql"),
        Duration::from_secs(3 * 86400),
        10,
    );
    touch(&d.join("BACKUP_UPPER.SQL"), Duration::from_secs(86400), 20);
    touch(
        &d.join("backup_pre_migration_20240301.sql"),
        Duration::from_secs(60),
        30,
    );
    touch(
        &d.join("taskflow_20240101T020000Z_scheduled.dump"),
        Duration::from_secs(60),
        40,
    );
    touch(&d.join("notes.txt"), Duration::from_secs(60), 1);
    touch(&d.join("old.sql.gz"), Duration::from_secs(60), 1);
    touch(&d.join(".sql"), Duration::from_secs(60), 1);
    std::fs::create_dir(d.join("folder.sql")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("link.sql")).unwrap();

    let found = list_external(d).unwrap();

    let names: Vec<&str> = found.iter().map(|e| e.file_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "backup_pre_migration_20240301.sql",
            "BACKUP_UPPER.SQL",
            "backup_pre_migration_20240101.sql"
        ]
    );
    assert_eq!(found[0].size_bytes, 30);
    assert_eq!(found[0].path, d.join("backup_pre_migration_20240301.sql"));
    let age = chrono::Utc::now() - found[2].modified;
    assert!((age.num_seconds() - 3 * 86400).abs() < 60, "{age}");

    let dumps = list_dumps(d).unwrap();
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].name.kind, BackupKind::Scheduled);

    assert!(list_external(&d.join("no-such-env")).unwrap().is_empty());
}

#[test]
fn stale_partial_files_are_cleaned_up_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    touch(
        &d.join("db_20240101T000000Z_manual.dump.partial"),
        Duration::from_secs(3600),
        5,
    );
    touch(
        &d.join("db_20240101T000001Z_manual.dump.partial"),
        Duration::from_secs(1),
        5,
    );
    touch(
        &d.join("db_20240101T000002Z_manual.dump"),
        Duration::from_secs(3600),
        5,
    );
    touch(&d.join("other.partial"), Duration::from_secs(3600), 5);

    let removed = cleanup_partials(d, Duration::from_secs(600)).unwrap();

    assert_eq!(
        removed,
        vec![d.join("db_20240101T000000Z_manual.dump.partial")]
    );
    let left: Vec<String> = all_files(d)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        left,
        [
            "db_20240101T000001Z_manual.dump.partial",
            "db_20240101T000002Z_manual.dump",
            "other.partial"
        ]
    );
}

#[tokio::test]
async fn a_runbook_plain_dump_restores_through_psql() {
    let src = TestDb::create("bk_plain_src").await;
    seed(&src.url, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup_pre_migration_20240101_020000.sql");
    plain_dump(&src, &file);
    // Modern pg_dump guards its plain output with \restrict; dualkey must cope with it.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\\restrict "),
        "expected a pg_dump with \\restrict"
    );

    let dst = TestDb::create("bk_plain_dst").await;
    let r = restore(&url_with_password(&dst.url), &file, None)
        .await
        .unwrap();

    assert_eq!(r.format, DumpFormat::PlainSql);
    assert_eq!(
        fingerprint(&dst.url, "items").await,
        fingerprint(&src.url, "items").await
    );
    assert_eq!(
        fingerprint(&dst.url, "notes").await,
        fingerprint(&src.url, "notes").await
    );

    // Over the same database, changed since: the app schema is replaced by the backup's.
    exec(
        &dst.url,
        "UPDATE items SET qty = 0; CREATE TABLE later (id int REFERENCES items(id));",
    )
    .await;
    restore(&dst.url, &file, None).await.unwrap();
    assert_eq!(
        fingerprint(&dst.url, "items").await,
        fingerprint(&src.url, "items").await
    );
    assert_eq!(fingerprint(&dst.url, "later").await, None);

    // Without replacing the schema, a plain dump (no DROPs in it) fails over existing tables and
    // changes nothing.
    exec(&dst.url, "UPDATE items SET qty = 0").await;
    let before = fingerprint(&dst.url, "items").await;
    let opts = RestoreOptions {
        replace_schema: false,
        ..RestoreOptions::default()
    };
    let err = restore_with(&dst.url, &file, &opts).await.unwrap_err();
    let RestoreError::Failed { tool, stderr, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*tool, "psql");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(fingerprint(&dst.url, "items").await, before);
}

#[tokio::test]
async fn a_failing_plain_script_is_rolled_back_as_a_whole() {
    let db = TestDb::create("bk_plain_fail").await;
    seed(&db.url, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partial.sql");
    std::fs::write(
        &file,
        "CREATE TABLE fresh (id int);\nINSERT INTO fresh VALUES (1);\nDELETE FROM notes;\nSELECT * FROM no_such_table;\nCREATE TABLE after_error (id int);\n",
    )
    .unwrap();
    let notes = fingerprint(&db.url, "notes").await;

    let err = restore(&url_with_password(&db.url), &file, None)
        .await
        .unwrap_err();

    assert!(
        matches!(&err, RestoreError::Failed { tool: "psql", .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(FAKE_PASSWORD));
    assert_eq!(fingerprint(&db.url, "fresh").await, None);
    assert_eq!(fingerprint(&db.url, "after_error").await, None);
    assert_eq!(fingerprint(&db.url, "notes").await, notes);
}

#[tokio::test]
async fn psql_backslash_commands_in_a_plain_backup_are_refused_and_nothing_runs() {
    let db = TestDb::create("bk_plain_evil").await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let m = marker.display();
    let scripts = [
        format!("CREATE TABLE t (id int);\n\\! touch {m}\n"),
        format!("CREATE TABLE t (id int); \\! touch {m}\n"),
        format!("CREATE TABLE t (id int);\n\\echo `touch {m}`\n"),
        format!("CREATE TABLE t (id int);\nSELECT 1 \\g |touch {m}\n"),
        format!("CREATE TABLE t (id int);\n\\o |touch {m}\nSELECT 1;\n"),
        format!("CREATE TABLE t (id int);\n\\copy (select 1) to program 'touch {m}'\n"),
        // Pretending to be pg_dump's own guard, then lifting a guessed key.
        format!("--\n\\restrict abc\nCREATE TABLE t (id int);\n\\unrestrict abc\n\\! touch {m}\n\\unrestrict abc\n"),
        format!("\\unrestrict abc\n\\! touch {m}\n"),
        // Hidden behind a string that psql reads differently when standard_conforming_strings is off.
        format!("SET standard_conforming_strings = off;\nCREATE TABLE t (id int);\nSELECT 'a\\' ' \\! touch {m}\n';\n"),
        // In COPY data psql runs nothing, but after the end marker it would.
        format!("CREATE TABLE t (id int);\nCOPY t FROM stdin;\n1\n\\.\n\\! touch {m}\n"),
    ];
    for (n, script) in scripts.iter().enumerate() {
        let file = dir.path().join(format!("evil{n}.sql"));
        std::fs::write(&file, script).unwrap();

        let err = restore(&db.url, &file, None).await.unwrap_err();

        assert!(
            matches!(&err, RestoreError::Failed { tool: "psql", .. }),
            "script {n}: {err:?}"
        );
        assert!(!marker.exists(), "script {n} ran a shell command: {script}");
        assert_eq!(
            fingerprint(&db.url, "t").await,
            None,
            "script {n} changed the database"
        );
    }
}
