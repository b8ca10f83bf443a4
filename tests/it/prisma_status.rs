//! Folder listing, sort order, checksums, lock file, and the rich status report.

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{
    self, compare_migration_names, list_migrations, render_checksum, render_checksum_legacy,
    script_matches_checksum, MigrationState, NoProgress, PrismaCode,
};

#[test]
fn listing_counts_subdirectories_only_without_symlinks_in_prisma_order() {
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240102000000_b", "SELECT 1;\n");
    p.add("20240101000000_a", "SELECT 1;\n");
    p.add("1_x", "SELECT 1;\n");
    p.add("10_x", "SELECT 1;\n");
    std::fs::create_dir_all(dir.join("20240103000000_no_script")).unwrap();
    std::fs::write(dir.join("README.md"), "not a migration").unwrap();
    std::os::unix::fs::symlink(
        dir.join("20240101000000_a"),
        dir.join("20240104000000_link"),
    )
    .unwrap();
    let f = list_migrations(&dir);
    assert!(f.dir_exists);
    assert_eq!(
        f.names(),
        vec![
            "1_x",
            "10_x",
            "20240101000000_a",
            "20240102000000_b",
            "20240103000000_no_script"
        ]
    );
    let no_script = f.get("20240103000000_no_script").unwrap();
    assert!(no_script.script.is_none());
    assert_eq!(
        no_script.script_or_p3015().unwrap_err().code,
        PrismaCode::P3015
    );
    assert_eq!(f.lock_provider().as_deref(), Some("postgresql"));
    assert!(f.check_provider().is_ok());

    let missing = list_migrations(&dir.join("nope"));
    assert!(!missing.dir_exists && missing.migrations.is_empty() && missing.lock_file.is_none());
}

#[test]
fn the_sort_order_is_javascript_locale_compare_for_ascii_names() {
    use std::cmp::Ordering::*;
    assert_eq!(compare_migration_names("1_a", "10_a"), Less);
    assert_eq!(
        compare_migration_names("a_b", "a-b"),
        Less,
        "ICU puts _ before -"
    );
    assert_eq!(compare_migration_names("add", "Add"), Less);
    assert_eq!(
        compare_migration_names("Add", "adz"),
        Less,
        "case is only a tie-breaker"
    );
    assert_eq!(
        compare_migration_names("20240101000000_init", "20240102000000_a"),
        Less
    );
    assert_eq!(compare_migration_names("a", "a"), Equal);
}

/// Checks the collation against Node's `localeCompare` on a few thousand random ASCII names.
#[test]
fn the_sort_order_matches_node_on_random_ascii_names() {
    let Some(node) = which("node") else {
        println!("skipped: node not found");
        return;
    };
    let alphabet: Vec<char> = (0x20u8..0x7f).map(|b| b as char).chain(['\t']).collect();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut names: Vec<String> = (0..3000)
        .map(|i| {
            let len = 1 + (next() % 12) as usize;
            let pool: &[char] = if i % 2 == 0 {
                &alphabet
            } else {
                &['0', '1', '_', '-', 'a', 'A', 'b', 'B', '.']
            };
            (0..len)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    let json = serde_json::to_string(&names).unwrap();
    let out = std::process::Command::new(node)
        .arg("-e")
        .arg("const a=JSON.parse(require('fs').readFileSync(0,'utf8'));a.sort((x,y)=>x.localeCompare(y)||(x<y?-1:x>y?1:0));process.stdout.write(JSON.stringify(a))")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(json.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ours = names.clone();
    ours.sort_by(|a, b| compare_migration_names(a, b));
    assert_eq!(ours.len(), theirs.len());
    let first_diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none(),
        "differs at {first_diff:?}: ours {:?} node {:?}",
        &ours[first_diff.unwrap()..][..3.min(ours.len() - first_diff.unwrap())],
        &theirs[first_diff.unwrap()..][..3.min(theirs.len() - first_diff.unwrap())]
    );
}

#[test]
fn checksums_match_prismas_rules() {
    // render_checksum = sha256 hex of the text; line endings are tolerated both ways.
    assert_eq!(
        render_checksum("hello"),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let lf = "CREATE TABLE a (id int);\nSELECT 1;\n";
    let crlf = lf.replace('\n', "\r\n");
    assert!(script_matches_checksum(&crlf, &render_checksum(lf)));
    assert!(script_matches_checksum(lf, &render_checksum(&crlf)));
    assert!(!script_matches_checksum("abc\n", &render_checksum("abc")));
    // Legacy, non-zero-padded stored checksums.
    let legacy = render_checksum_legacy(lf);
    if legacy.len() != 64 {
        assert!(script_matches_checksum(lf, &legacy));
        assert!(!script_matches_checksum("other", &legacy));
    }
    let padded_zero = (0..)
        .map(|i| format!("s{i}"))
        .find(|s| render_checksum_legacy(s).len() < 64)
        .unwrap();
    assert!(script_matches_checksum(
        &padded_zero,
        &render_checksum_legacy(&padded_zero)
    ));
    assert!(script_matches_checksum(
        &padded_zero,
        &render_checksum(&padded_zero)
    ));
}

#[tokio::test]
async fn checksums_use_utf8_lossy_text_and_keep_the_bom() {
    let db = TestDb::create("stlossy").await;
    let p = Project::new();
    let dir = p.migrations();
    let raw: &[u8] = b"\xEF\xBB\xBFSELECT 1; -- caf\xE9\n";
    std::fs::create_dir_all(dir.join("20240101000000_bytes")).unwrap();
    std::fs::write(dir.join("20240101000000_bytes/migration.sql"), raw).unwrap();
    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    let rows = prisma::read_migrations_table(&db.url)
        .await
        .unwrap()
        .unwrap();
    let lossy = String::from_utf8_lossy(raw);
    assert!(lossy.starts_with('\u{feff}') && lossy.contains('\u{fffd}'));
    assert_eq!(rows[0].checksum, render_checksum(&lossy));
}

#[test]
fn the_lock_file_provider_is_read_like_the_schema_engine() {
    let p = Project::new();
    let dir = p.migrations();
    let lock = dir.join("migration_lock.toml");
    for (content, expected, ok) in [
        ("# Please do not edit this file manually\n# It should be added in your version-control system (i.e. Git)\nprovider = \"postgresql\"", "postgresql", true),
        ("provider = \"mysql\"\n", "mysql", false),
        ("# nothing here\n", "<PROVIDER NOT FOUND>", false),
        ("  provider = \"postgresql\"\n", "<PROVIDER NOT FOUND>", false),
        ("provider=\"postgres\"\n", "provider=\"postgres", false),
    ] {
        std::fs::write(&lock, content).unwrap();
        let f = list_migrations(&dir);
        assert_eq!(f.lock_provider().as_deref(), Some(expected), "{content:?}");
        assert_eq!(f.check_provider().is_ok(), ok, "{content:?}");
    }
    std::fs::remove_file(&lock).unwrap();
    let f = list_migrations(&dir);
    assert_eq!(f.lock_provider(), None);
    assert!(f.check_provider().is_ok());
}

#[tokio::test]
async fn the_report_shows_what_prismas_status_hides() {
    let db = TestDb::create("streport").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240101000000_init", "CREATE TABLE a (id int);\n");
    p.add_down("20240101000000_init", "DROP TABLE a;\n");
    p.add("20240102000000_two", "CREATE TABLE b (id int);\n");
    p.add("20240103000000_three", "CREATE TABLE c (id int);\n");
    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    // edited after apply
    p.add(
        "20240101000000_init",
        "CREATE TABLE a (id int); -- edited\n",
    );
    // rolled back (resolve after a hand-made failed row for `three`)
    exec(&db.url, "UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = '20240103000000_three'").await;
    // only in the database
    std::fs::remove_dir_all(dir.join("20240102000000_two")).unwrap();
    // pending
    p.add("20240104000000_four", "CREATE TABLE d (id int);\n");

    let r = prisma::status(&db.url, &dir).await.unwrap();
    assert!(r
        .server_version
        .as_deref()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert!(r.has_migrations_table);
    assert_eq!(r.local_count, 3);
    assert_eq!(r.applied, vec!["20240101000000_init", "20240102000000_two"]);
    assert_eq!(r.pending, vec!["20240104000000_four"]);
    assert_eq!(r.rolled_back, vec!["20240103000000_three"]);
    assert_eq!(r.edited_after_apply, vec!["20240101000000_init"]);
    assert_eq!(r.only_in_database, vec!["20240102000000_two"]);
    assert_eq!(
        r.deploy_would_apply,
        vec!["20240103000000_three", "20240104000000_four"]
    );
    let d = r.diverged.as_ref().unwrap();
    assert_eq!(d.last_common.as_deref(), Some("20240103000000_three"));
    assert_eq!(d.not_in_database, vec!["20240104000000_four"]);
    assert_eq!(d.not_in_folder, vec!["20240102000000_two"]);
    let init = &r.migrations[0];
    assert_eq!(init.state, MigrationState::Applied);
    assert!(init.has_down_sql && init.local && init.finished_at.is_some());
    assert_eq!(r.migrations.last().unwrap().name, "20240102000000_two");
    assert!(!r.migrations.last().unwrap().local);

    let cli = r.render_prisma();
    assert_eq!(cli.exit_code, 1);
    assert_eq!(cli.stdout, "3 migrations found in prisma/migrations\n");
    assert_eq!(
        cli.stderr,
        "Your local migration history and the migrations table from your database are different:\n\nThe last common migration is: 20240103000000_three\n\nThe migration have not yet been applied:\n20240104000000_four\n\nThe migration from the database are not found locally in prisma/migrations:\n20240102000000_two\n"
    );
    // The report serialises for the chat layer.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["migrations"][1]["state"], "rolled_back");
    assert_eq!(json["prisma_exit_code"], 1);
}

#[tokio::test]
async fn status_raises_p3015_when_an_applied_migration_lost_its_script() {
    let db = TestDb::create("st3015").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240101000000_init", "CREATE TABLE a (id int);\n");
    prisma::deploy(&db.url, &dir, &mut NoProgress)
        .await
        .unwrap();
    std::fs::remove_file(dir.join("20240101000000_init/migration.sql")).unwrap();
    let r = prisma::status(&db.url, &dir).await.unwrap();
    assert_eq!(r.prisma_error.as_ref().unwrap().code, PrismaCode::P3015);
    assert_eq!(r.missing_script, vec!["20240101000000_init"]);
    let cli = r.render_prisma();
    assert_eq!(cli.stdout, "");
    assert_eq!(
        cli.stderr,
        "Error: P3015\n\nCould not find the migration file at migration.sql. Please delete the directory or restore the migration file.\n\n"
    );
    assert_eq!(cli.exit_code, 1);
}

#[tokio::test]
async fn status_of_an_empty_database_with_no_migrations_is_not_managed() {
    let db = TestDb::create("stempty").await;
    let p = Project::new();
    let out = prisma::status_prisma_cli(&db.url, &p.migrations()).await;
    assert_eq!(out.stdout, "No migration found in prisma/migrations\n");
    assert!(out
        .stderr
        .starts_with("The current database is not managed by Prisma Migrate.\n\nRead more"));
    assert_eq!(out.exit_code, 1);
}

/// The operations' futures are `Send`, so the worker can spawn them.
#[test]
fn the_operation_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = std::path::Path::new("/x");
    let mut np = NoProgress;
    let f = prisma::status("u", dir);
    assert_send(&f);
    let f = prisma::deploy("u", dir, &mut np);
    assert_send(&f);
    let mut np2 = NoProgress;
    let f = prisma::rollback_down("u", dir, "m", None, &mut np2);
    assert_send(&f);
    let f = prisma::resolve("u", dir, "m", prisma::ResolveAction::Applied);
    assert_send(&f);
    let f = prisma::plan_rollback("u", dir, "m");
    assert_send(&f);
}
