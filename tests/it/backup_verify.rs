//! `dbops::backup::verify` and restores of damaged dumps.

use std::io::Write;

use dualkey::dbops::backup::{
    dump, restore, restore_with, verify, BackupKind, RestoreError, RestoreOptions, VerifyError,
};

use crate::backup_common::*;
use crate::support::TestDb;

#[tokio::test]
async fn a_truncated_dump_fails_verification_and_its_restore_changes_nothing() {
    let db = TestDb::create("bk_trunc").await;
    seed(&db.url, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&db.url, dir.path(), BackupKind::Scheduled), |_| {})
        .await
        .unwrap();
    verify(&out.path, Some(&out.sha256), None).await.unwrap();

    // Cut the file in the middle of its data.
    let bytes = std::fs::read(&out.path).unwrap();
    let cut = dir.path().join("test").join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    // With the recorded checksum: the change is seen first.
    let err = verify(&cut, Some(&out.sha256), None).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::ChecksumMismatch { expected, .. } if *expected == out.sha256),
        "{err:?}"
    );
    // Without one: pg_restore cannot read it to the end (its table of contents alone is intact).
    let err = verify(&cut, None, None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Unreadable { .. }), "{err:?}");

    // The database changed since; restoring the damaged dump fails and leaves it as it is now.
    exec(&db.url, "UPDATE items SET qty = -1 WHERE id < 100; CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (1);").await;
    let items_now = fingerprint(&db.url, "items").await.unwrap();
    let notes_now = fingerprint(&db.url, "notes").await.unwrap();
    let later_now = fingerprint(&db.url, "later").await.unwrap();

    let err = restore(&db.url, &cut, None).await.unwrap_err();

    assert!(
        matches!(
            &err,
            RestoreError::Failed {
                tool: "pg_restore",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), items_now);
    assert_eq!(fingerprint(&db.url, "notes").await.unwrap(), notes_now);
    assert_eq!(fingerprint(&db.url, "later").await.unwrap(), later_now);
}

#[tokio::test]
async fn verify_tells_a_missing_file_a_changed_file_and_a_file_that_is_not_a_dump() {
    let db = TestDb::create("bk_verify").await;
    seed(&db.url, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&db.url, dir.path(), BackupKind::Manual), |_| {})
        .await
        .unwrap();

    let ok = verify(&out.path, Some(&out.sha256.to_uppercase()), None)
        .await
        .unwrap();
    assert_eq!(ok.sha256, out.sha256);
    assert_eq!(ok.size_bytes, out.size_bytes);

    // One byte flipped at the end: same size, other checksum.
    let mut bytes = std::fs::read(&out.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let changed = dir.path().join("changed.dump");
    std::fs::write(&changed, &bytes).unwrap();
    let err = verify(&changed, Some(&out.sha256), None).await.unwrap_err();
    let VerifyError::ChecksumMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(expected, &out.sha256);
    assert_ne!(actual, &out.sha256);

    // Gone from disk.
    std::fs::remove_file(&out.path).unwrap();
    let err = verify(&out.path, Some(&out.sha256), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Missing(ref p) if *p == out.path),
        "{err:?}"
    );
    let err = restore(&db.url, &out.path, None).await.unwrap_err();
    assert!(matches!(err, RestoreError::Missing(_)), "{err:?}");

    // Not a dump at all.
    let text = dir.path().join("notes.dump");
    std::fs::File::create(&text)
        .unwrap()
        .write_all(b"hello, not a dump\n")
        .unwrap();
    let err = verify(&text, None, None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Unreadable { .. }), "{err:?}");
    let err = restore(&db.url, &text, None).await.unwrap_err();
    assert!(matches!(err, RestoreError::UnsupportedFormat(_)), "{err:?}");

    // A dump whose table of contents is damaged.
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes.truncate(40);
    std::fs::write(&changed, &bytes).unwrap();
    let err = verify(&changed, None, None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Unreadable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_restore_that_fails_at_its_very_end_rolls_back_everything() {
    let db = TestDb::create("bk_rollback").await;
    seed(&db.url, 1_000).await;
    // A grant to a role that will be gone by restore time: the restore fails on its last
    // statements, after the schema was emptied and every table reloaded.
    let role = format!("dk_role_{}", uuid::Uuid::new_v4().simple());
    exec(
        &db.url,
        &format!("CREATE ROLE {role}; GRANT SELECT ON items TO {role};"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&db.url, dir.path(), BackupKind::PreDeploy), |_| {})
        .await
        .unwrap();
    exec(
        &db.url,
        &format!("REVOKE ALL ON items FROM {role}; DROP ROLE {role};"),
    )
    .await;
    exec(
        &db.url,
        "DELETE FROM notes; UPDATE items SET name = 'after'; CREATE TABLE later (id int);",
    )
    .await;
    let items_now = fingerprint(&db.url, "items").await.unwrap();
    let notes_now = fingerprint(&db.url, "notes").await.unwrap();

    let err = restore(&db.url, &out.path, None).await.unwrap_err();

    let RestoreError::Failed { tool, stderr, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*tool, "psql");
    assert!(
        stderr.contains(&role) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), items_now);
    assert_eq!(fingerprint(&db.url, "notes").await.unwrap(), notes_now);
    assert!(fingerprint(&db.url, "later").await.is_some());
}

#[tokio::test]
async fn without_replacing_the_schema_a_dependent_object_blocks_the_restore_and_nothing_changes() {
    let db = TestDb::create("bk_noreplace").await;
    seed(&db.url, 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dump(&request(&db.url, dir.path(), BackupKind::PreDeploy), |_| {})
        .await
        .unwrap();
    // A view added after the backup depends on `items`: pg_restore --clean's DROP TABLE items
    // fails after other objects were already dropped and recreated in the same transaction.
    exec(&db.url, "DELETE FROM notes; UPDATE items SET name = 'after'; CREATE VIEW v AS SELECT name FROM items;").await;
    let items_now = fingerprint(&db.url, "items").await.unwrap();
    let notes_now = fingerprint(&db.url, "notes").await.unwrap();
    let opts = RestoreOptions {
        replace_schema: false,
        ..RestoreOptions::default()
    };

    let err = restore_with(&db.url, &out.path, &opts).await.unwrap_err();

    let RestoreError::Failed { stderr, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(stderr.contains("depend"), "{stderr}");
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), items_now);
    assert_eq!(fingerprint(&db.url, "notes").await.unwrap(), notes_now);

    // The default restore replaces the schema, the view included.
    restore(&db.url, &out.path, None).await.unwrap();
    assert_ne!(fingerprint(&db.url, "items").await.unwrap(), items_now);
    assert_eq!(columns(&db.url, "v").await, Vec::<String>::new());
}
