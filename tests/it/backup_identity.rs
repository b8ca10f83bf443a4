//! Backup identity: the SHA-256 decides, the modification time is only a hint to hash again. A
//! byte-identical copy of a backup with a new mtime (a `cp` without `-p`, a copy back from offsite
//! storage) is still that backup: listed ok, offered for restore, restored, and counted by
//! retention as healthy. Other bytes of the same size are refused.

use std::path::Path;
use std::time::Duration;

use dualkey::dbops::backup::BackupKind;
use dualkey::store::BackupRow;

use crate::backup_common::*;
use crate::both_backends;
use crate::support::{spawn_app_with, Backend, TestApp, TestDb};

/// An app whose `production` environment targets a fresh database with a few tables, with
/// `extra` keys for the environment.
async fn setup(extra: &str) -> (TestApp, TestDb) {
    setup_on(Backend::Sqlite, extra).await
}

/// [`setup`] with the catalog on `backend`.
async fn setup_on(backend: Backend, extra: &str) -> (TestApp, TestDb) {
    let db = TestDb::create("bk_ident").await;
    seed(&db.url, 2_000).await;
    let var = format!("DK_TEST_URL_{}", uuid::Uuid::new_v4().simple());
    // Each test names its own variable; nextest runs every test in its own process.
    std::env::set_var(&var, &db.url);
    let app = spawn_app_with(backend, 1, 0, |t| {
        crate::support::own_production(&t, &var, "{dir}", extra)
    })
    .await;
    std::fs::create_dir_all(app.dir.path().join("migrations")).unwrap();
    (app, db)
}

async fn backup(app: &TestApp) -> BackupRow {
    dualkey::services::backups::take::take_backup(
        &app.core,
        "production",
        BackupKind::Manual,
        Some("alice"),
        None,
        None,
    )
    .await
    .unwrap()
}

/// Writes `bytes` over the backup's file the way `cp` without `-p` does (same inode, truncated
/// and rewritten), then moves its modification time `later` past the one recorded at
/// verification, so that the test does not depend on the clock's resolution.
fn copy_over(b: &BackupRow, bytes: &[u8], later: Duration) {
    let src = Path::new(&b.path).with_extension("copy");
    std::fs::write(&src, bytes).unwrap();
    let st = std::process::Command::new("cp")
        .arg(&src)
        .arg(&b.path)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(&src).unwrap();
    let recorded = std::time::UNIX_EPOCH + Duration::from_millis(b.file_mtime_ms.unwrap() as u64);
    std::fs::File::options()
        .write(true)
        .open(&b.path)
        .unwrap()
        .set_modified(recorded + later)
        .unwrap();
}

fn listing_line<'a>(listing: &'a str, id: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} not listed: {listing}"))
}

#[tokio::test]
async fn a_byte_identical_copy_with_a_new_mtime_is_still_the_backup_and_restores() {
    let (app, db) = setup("").await;
    let b = backup(&app).await;
    let before = fingerprint(&db.url, "items").await.unwrap();
    let bytes = std::fs::read(&b.path).unwrap();
    copy_over(&b, &bytes, Duration::from_secs(90));

    let listing = app.cmd("carol", "backups").await;
    let line = listing_line(&listing, &b.id);
    assert!(
        line.contains(" ok ") && !line.contains("changed"),
        "{listing}"
    );
    let status = app.cmd("carol", "status").await;
    assert!(
        status.contains(&format!("newest backup: {}", b.id)),
        "{status}"
    );

    exec(&db.url, "DELETE FROM items WHERE id > 1000").await;
    let card = app.cmd("alice", &format!("restore {}", b.id)).await;
    assert!(card.contains("[approve:"), "the restore is planned: {card}");
    let id = app.last_request().await;
    let r = app.click("bob", &format!("approve:{id}")).await;
    assert!(r.contains("Approved"), "{r}");
    app.drain_worker().await;
    let op = app
        .core
        .store
        .operation_for_request(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.state, "succeeded", "{:?}", op.error);
    assert_eq!(fingerprint(&db.url, "items").await.unwrap(), before);
}

#[tokio::test]
async fn other_bytes_of_the_same_size_are_refused_whatever_the_mtime() {
    let (app, _db) = setup("").await;
    let b = backup(&app).await;
    let mut bytes = std::fs::read(&b.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;

    for later in [Duration::from_secs(90), Duration::ZERO] {
        copy_over(&b, &bytes, later);

        let listing = app.cmd("carol", "backups").await;
        let line = listing_line(&listing, &b.id);
        if later.is_zero() {
            // Same size and same mtime: the cheap listing cannot tell, the restore check can.
            assert!(line.contains(" ok "), "{listing}");
        } else {
            assert!(line.contains("changed"), "{listing}");
        }
        let r = app.cmd("alice", &format!("restore {}", b.id)).await;
        assert!(
            !r.contains("[approve:") && r.contains("cannot be restored"),
            "{r}"
        );
    }
}

#[tokio::test]
async fn retention_counts_an_identical_copy_as_healthy_and_a_changed_one_as_not() {
    // Keep one backup; both are past retention when it runs.
    let (app, _db) = setup("retention_days = 1\nmin_keep = 1").await;
    let older = backup(&app).await;
    app.clock.advance(60_000);
    let newer = backup(&app).await;
    let bytes = std::fs::read(&newer.path).unwrap();
    copy_over(&newer, &bytes, Duration::from_secs(90));
    app.clock.advance(3 * 86_400_000);

    let deleted = dualkey::services::backups::take::apply_retention(&app.core, "production")
        .await
        .unwrap();

    // The identical copy is the newest healthy backup: it is kept, the older one goes.
    assert_eq!(deleted, vec![older.id.clone()]);
    assert!(Path::new(&newer.path).exists());
    assert!(!Path::new(&older.path).exists());

    // Changed bytes, same size: no longer healthy, so nothing protects it.
    let mut changed = bytes.clone();
    changed[0] ^= 0x01;
    copy_over(&newer, &changed, Duration::from_secs(120));
    let deleted = dualkey::services::backups::take::apply_retention(&app.core, "production")
        .await
        .unwrap();
    assert_eq!(deleted, vec![newer.id.clone()]);
}

/// The file's modification time (ms), as the catalog records it.
fn mtime_ms(path: &str) -> i64 {
    let t = std::fs::metadata(path).unwrap().modified().unwrap();
    chrono::DateTime::<chrono::Utc>::from(t).timestamp_millis()
}

/// Once a touched file's SHA-256 matched, its new modification time is the catalog's: the next
/// listing (and `status`, checklist, retention) says ok from size and mtime alone, without reading
/// the file again. The update is targeted: a row that retention deleted, or whose SHA-256 is
/// another, is left alone.
async fn a_matching_hash_records_the_new_mtime(backend: Backend) {
    let (app, _db) = setup_on(backend, "").await;
    let store = &app.core.store;
    let b = backup(&app).await;
    let bytes = std::fs::read(&b.path).unwrap();
    copy_over(&b, &bytes, Duration::from_secs(90));
    let new_mtime = mtime_ms(&b.path);
    assert_ne!(Some(new_mtime), b.file_mtime_ms);
    let row = store.get_backup(&b.id).await.unwrap().unwrap();
    assert_eq!(
        dualkey::services::backups::health::backup_health(&row),
        "touched"
    );

    let listing = app.cmd("carol", "backups").await;
    assert!(listing_line(&listing, &b.id).contains(" ok "), "{listing}");

    let row = store.get_backup(&b.id).await.unwrap().unwrap();
    assert_eq!(row.file_mtime_ms, Some(new_mtime));
    assert_eq!(
        dualkey::services::backups::health::backup_health(&row),
        "ok",
        "no hashing needed any more"
    );
    // Nothing else in the row changed.
    assert_eq!(
        BackupRow {
            file_mtime_ms: b.file_mtime_ms,
            ..row.clone()
        },
        b
    );
    let listing = app.cmd("carol", "backups").await;
    assert!(listing_line(&listing, &b.id).contains(" ok "), "{listing}");

    // The update names the SHA-256 the file was found to have: another one changes nothing.
    let sha = b.sha256.clone().unwrap();
    assert!(!store
        .refresh_backup_mtime(&b.id, &"0".repeat(64), new_mtime + 1)
        .await
        .unwrap());
    assert!(!store
        .refresh_backup_mtime("b000000000", &sha, new_mtime + 1)
        .await
        .unwrap());
    assert_eq!(store.get_backup(&b.id).await.unwrap().unwrap(), row);

    // Retention deleted the entry while a listing was hashing its file: the listing's update
    // does not bring it back, nor touch it.
    let mut deleted = row.clone();
    deleted.deleted_at = Some(app.core.clock.now_ms());
    let mut tx = store.begin().await.unwrap();
    tx.put_backup(&deleted).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!store
        .refresh_backup_mtime(&b.id, &sha, new_mtime + 1)
        .await
        .unwrap());
    assert_eq!(store.get_backup(&b.id).await.unwrap().unwrap(), deleted);

    // Nor a failed one.
    let mut failed = row.clone();
    failed.state = "failed".into();
    let mut tx = store.begin().await.unwrap();
    tx.put_backup(&failed).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!store
        .refresh_backup_mtime(&b.id, &sha, new_mtime + 1)
        .await
        .unwrap());
    assert_eq!(store.get_backup(&b.id).await.unwrap().unwrap(), failed);
}
both_backends!(a_matching_hash_records_the_new_mtime);

/// Changed bytes of the same size are never recorded as the backup's: the listing says changed,
/// and keeps saying it (the catalog's modification time stays the one verified).
#[tokio::test]
async fn a_changed_file_keeps_its_recorded_mtime() {
    let (app, _db) = setup("").await;
    let b = backup(&app).await;
    let mut bytes = std::fs::read(&b.path).unwrap();
    bytes[0] ^= 0x01;
    copy_over(&b, &bytes, Duration::from_secs(90));
    for _ in 0..2 {
        let listing = app.cmd("carol", "backups").await;
        assert!(
            listing_line(&listing, &b.id).contains("changed"),
            "{listing}"
        );
        let row = app.core.store.get_backup(&b.id).await.unwrap().unwrap();
        assert_eq!(row, b);
    }
}
