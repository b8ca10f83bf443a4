//! Golden tests: dualkey replays every step of `prisma-golden/scenario.sh` (the real Prisma CLI
//! 6.19.3 run that produced the goldens) with its own status / deploy / resolve, doing the
//! scenario's by-hand steps (file edits, `psql`) itself, and compares each step with the golden:
//! stdout body, stderr body, exit code and the `_prisma_migrations` dump (ids, timestamps and
//! logs text ignored; logs compared as NULL / empty / text).
//!
//! Tolerated, documented differences (prisma.md §7): whitespace-only lines (normalised to empty),
//! the P3009 timestamp (ms from the wasm engine vs µs; dualkey's must be chrono `Display` of the
//! row), the deploy-failure text (the wasm engine's `external connector error` vs the native
//! P3018 that dualkey prints), the span trace after the invariant-violation line, and the DEBUG
//! output of step 22 (its `diagnoseResult` JSON is compared with dualkey's diagnosis instead).

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{
    self, list_migrations, render_deploy, render_resolve, PrismaCliOutput, ResolveAction,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The `mig NAME <<'EOF' … EOF` heredocs of scenario.sh, byte for byte.
fn scenario_migrations() -> BTreeMap<String, String> {
    let script = golden_scenario();
    let mut out = BTreeMap::new();
    let mut lines = script.split_inclusive('\n');
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("mig ") {
            if let Some(name) = rest.strip_suffix(" <<'EOF'\n") {
                let mut body = String::new();
                for l in lines.by_ref() {
                    if l == "EOF\n" {
                        break;
                    }
                    body.push_str(l);
                }
                out.insert(name.to_string(), body);
            }
        }
    }
    assert!(
        out.len() >= 4,
        "scenario.sh heredocs not found: {:?}",
        out.keys()
    );
    out
}

enum Cmd<'a> {
    Status,
    Deploy,
    Resolve(ResolveAction, &'a str),
}

struct Replay {
    project: Project,
    url: String,
    failures: Vec<String>,
    steps: usize,
}

impl Replay {
    fn dir(&self) -> std::path::PathBuf {
        self.project.migrations()
    }

    async fn run(&mut self, label: &str, cmd: Cmd<'_>) {
        self.steps += 1;
        let dir = self.dir();
        let (out, diagnosis_json) = run_dualkey(&self.url, &dir, &cmd).await;
        let g_stdout = golden_stdout_body(&golden(label, "stdout"));
        let mut g_stderr = golden_stderr_body(&golden(label, "stderr"));
        let g_rc: i32 = golden(label, "rc").trim().parse().unwrap();
        let mut my_stderr = normalize(&out.stderr);

        // Step 22 ran with DEBUG=prisma:migrate:status: compare its diagnoseResult with ours.
        if g_stderr.contains("prisma:migrate:status {") {
            let (rest, debug) = split_debug(&g_stderr);
            let theirs: serde_json::Value = serde_json::from_str(&debug).unwrap();
            match diagnosis_json {
                Some(ours) if ours == theirs => {}
                ours => self.fail(
                    label,
                    "diagnoseResult",
                    &theirs.to_string(),
                    &format!("{ours:?}"),
                ),
            }
            g_stderr = rest;
        }
        if g_stderr.starts_with("Error: external connector error") {
            // The wasm engine's deploy failure; dualkey prints the native engine's P3018.
            let ok = my_stderr.starts_with("Error: P3018\n\nA migration failed to apply.")
                && my_stderr.contains("Migration name: 20240103000000_bad\n")
                && my_stderr.contains("Database error code: 42P01\n")
                && my_stderr.contains("ERROR: relation \"DoesNotExist\" does not exist")
                && g_stderr.contains("No such table: DoesNotExist");
            if !ok {
                self.fail(label, "stderr (P3018)", &g_stderr, &my_stderr);
            }
            my_stderr = g_stderr.clone();
        }
        if g_stderr.starts_with("Error: P3009") {
            let (g, g_ts) = mask_started_at(&g_stderr);
            let (m, m_ts) = mask_started_at(&my_stderr);
            g_stderr = g;
            my_stderr = m;
            let rows = prisma::read_migrations_table(&self.url)
                .await
                .unwrap()
                .unwrap();
            let expected: Vec<String> = rows
                .iter()
                .filter(|r| r.is_failed())
                .map(|r| r.started_at.to_string())
                .collect();
            if m_ts != expected
                || g_ts.len() != expected.len()
                || !g_ts.iter().all(|t| looks_like_chrono(t))
            {
                self.fail(
                    label,
                    "P3009 timestamps",
                    &format!("{g_ts:?} / {expected:?}"),
                    &format!("{m_ts:?}"),
                );
            }
        }
        if g_stderr.starts_with("Error: Invariant violation") {
            // Only the message line: the wasm engine appends a span trace.
            g_stderr = format!("{}\n", g_stderr.lines().next().unwrap());
        }
        if normalize(&out.stdout) != g_stdout {
            self.fail(label, "stdout", &g_stdout, &out.stdout);
        }
        if my_stderr != g_stderr {
            self.fail(label, "stderr", &g_stderr, &my_stderr);
        }
        if out.exit_code != g_rc {
            self.fail(
                label,
                "exit code",
                &g_rc.to_string(),
                &out.exit_code.to_string(),
            );
        }
        let g_table = golden_table(&golden(label, "table"));
        let my_table = table_dump(&self.url).await;
        if g_table != my_table {
            self.fail(
                label,
                "_prisma_migrations",
                &format!("{g_table:#?}"),
                &format!("{my_table:#?}"),
            );
        }
    }

    fn fail(&mut self, label: &str, what: &str, expected: &str, actual: &str) {
        self.failures.push(format!(
            "step {label}: {what} differs\n--- golden ---\n{expected}\n--- dualkey ---\n{actual}\n"
        ));
    }
}

async fn run_dualkey(
    url: &str,
    dir: &Path,
    cmd: &Cmd<'_>,
) -> (PrismaCliOutput, Option<serde_json::Value>) {
    match cmd {
        Cmd::Status => {
            let report = prisma::status(url, dir).await.expect("status");
            let json = report
                .prisma_diagnosis
                .as_ref()
                .map(|d| serde_json::to_value(d).unwrap());
            (report.render_prisma(), json)
        }
        Cmd::Deploy => {
            let found = list_migrations(dir).migrations.len();
            let result = prisma::deploy(url, dir, &mut prisma::NoProgress).await;
            (render_deploy(found, &result), None)
        }
        Cmd::Resolve(action, name) => {
            let result = prisma::resolve(url, dir, name, *action).await;
            (render_resolve(name, *action, &result), None)
        }
    }
}

/// Splits the DEBUG blocks off a stderr body; returns (rest, the diagnoseResult JSON text).
fn split_debug(stderr: &str) -> (String, String) {
    let mut rest = String::new();
    let mut diagnose = String::new();
    let mut block: Option<String> = None;
    for line in stderr.split_inclusive('\n') {
        if let Some(b) = block.as_mut() {
            if line.starts_with("} +") {
                b.push_str("}\n");
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                if let Some(s) = v.get("diagnoseResult").and_then(|s| s.as_str()) {
                    diagnose = s.to_string();
                }
                block = None;
            } else {
                b.push_str(line);
            }
        } else if line == "prisma:migrate:status {\n" {
            block = Some("{\n".to_string());
        } else {
            rest.push_str(line);
        }
    }
    assert!(!diagnose.is_empty(), "no diagnoseResult in {stderr}");
    (rest, diagnose)
}

/// Replaces each `started at <ts> UTC failed` timestamp with `<ts>`; returns the timestamps
/// (with their ` UTC` suffix, as chrono prints them).
fn mask_started_at(s: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut stamps = Vec::new();
    for line in s.split_inclusive('\n') {
        match (line.find(" migration started at "), line.rfind(" failed")) {
            (Some(a), Some(b)) if a < b => {
                let start = a + " migration started at ".len();
                stamps.push(line[start..b].to_string());
                out.push_str(&line[..start]);
                out.push_str("<ts>");
                out.push_str(&line[b..]);
            }
            _ => out.push_str(line),
        }
    }
    (out, stamps)
}

/// `YYYY-MM-DD HH:MM:SS[.fff|.ffffff|.fffffffff] UTC`, chrono's `Display` for `DateTime<Utc>`.
fn looks_like_chrono(t: &str) -> bool {
    let Some(t) = t.strip_suffix(" UTC") else {
        return false;
    };
    let (main, frac) = t.split_once('.').unwrap_or((t, ""));
    chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%d %H:%M:%S").is_ok()
        && (frac.is_empty()
            || ([3, 6, 9].contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit())))
}

fn write_migration(project: &Project, sqls: &BTreeMap<String, String>, name: &str) {
    project.add(name, &sqls[name]);
}

#[tokio::test]
async fn dualkey_replays_every_step_of_the_prisma_golden_scenario() {
    let sqls = scenario_migrations();
    let db = TestDb::create("golden").await;
    let mut r = Replay {
        project: Project::new(),
        url: db.url.clone(),
        failures: Vec::new(),
        steps: 0,
    };
    use Cmd::*;
    use ResolveAction::{Applied, RolledBack};

    write_migration(&r.project, &sqls, "20240101000000_init");
    r.run("01_status_no_table_one_pending", Status).await;
    r.run("02_deploy_init", Deploy).await;
    r.run("03_status_up_to_date", Status).await;
    write_migration(&r.project, &sqls, "20240102000000_add_post");
    r.run("04_status_pending", Status).await;
    r.run("05_deploy_add_post", Deploy).await;
    r.run("06_deploy_noop", Deploy).await;
    write_migration(&r.project, &sqls, "20240103000000_bad");
    r.run("07_deploy_fails", Deploy).await;
    r.run("08_status_failed", Status).await;
    r.run("09_deploy_blocked_P3009", Deploy).await;
    r.run(
        "10_resolve_rb_succeeded_P3012",
        Resolve(RolledBack, "20240101000000_init"),
    )
    .await;
    r.run(
        "11_resolve_rb_unknown_P3011",
        Resolve(RolledBack, "20991231000000_nope"),
    )
    .await;
    r.run(
        "12_resolve_applied_done_P3008",
        Resolve(Applied, "20240101000000_init"),
    )
    .await;
    r.run(
        "13_resolve_applied_nodir_P3017",
        Resolve(Applied, "20991231000000_nope"),
    )
    .await;
    r.run(
        "14_resolve_rb_failed",
        Resolve(RolledBack, "20240103000000_bad"),
    )
    .await;
    r.run("15_status_after_rolled_back", Status).await;
    r.run(
        "16_resolve_rb_again",
        Resolve(RolledBack, "20240103000000_bad"),
    )
    .await;
    r.run("17_deploy_fails_again", Deploy).await;
    r.run(
        "18_resolve_applied_failed",
        Resolve(Applied, "20240103000000_bad"),
    )
    .await;
    r.run("19_status_after_applied", Status).await;
    let mig = r.dir();
    let hold = r.project.root().join("hold");
    std::fs::rename(mig.join("20240102000000_add_post"), &hold).unwrap();
    r.run("20_status_db_has_unknown", Status).await;
    write_migration(&r.project, &sqls, "20240104000000_new");
    r.run("21_status_diverged", Status).await;
    std::fs::rename(&hold, mig.join("20240102000000_add_post")).unwrap();
    let init = mig.join("20240101000000_init/migration.sql");
    let mut text = std::fs::read_to_string(&init).unwrap();
    text.push_str("-- edited after apply\n");
    std::fs::write(&init, text).unwrap();
    r.run("22_status_edited_after_apply", Status).await;
    let lock = mig.join("migration_lock.toml");
    let lock_text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(&lock, lock_text.replace("postgresql", "mysql")).unwrap();
    r.run("23_status_lock_mismatch_P3019", Status).await;
    std::fs::write(&lock, &lock_text).unwrap();

    let db2 = TestDb::create("golden2").await;
    r.url = db2.url.clone();
    exec(&r.url, "create table legacy (id int)").await;
    r.run("24_deploy_nonempty_P3005", Deploy).await;
    r.run(
        "25_resolve_rb_no_table",
        Resolve(RolledBack, "20240101000000_init"),
    )
    .await;
    r.run(
        "26_resolve_applied_baseline",
        Resolve(Applied, "20240101000000_init"),
    )
    .await;
    r.run("27_status_after_baseline", Status).await;

    for e in std::fs::read_dir(&mig).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let db3 = TestDb::create("golden3").await;
    r.url = db3.url.clone();
    r.run("28_status_empty_db_no_migrations", Status).await;

    assert_eq!(r.steps, 28, "every scenario step is replayed");
    assert!(
        r.failures.is_empty(),
        "{} of {} steps differ from the Prisma goldens:\n{}",
        r.failures.len(),
        r.steps,
        r.failures.join("\n")
    );
}

/// Golden 29 comes from a separate run (failed and pending at once): only the pending block is
/// printed, the failure stays hidden, exit 1.
#[tokio::test]
async fn failed_plus_pending_prints_only_the_pending_block_like_golden_29() {
    let db = TestDb::create("golden29").await;
    let p = Project::new();
    let dir = p.migrations();
    p.add("20240101000000_init", "CREATE TABLE \"A\" (id int);\n");
    p.add("20240102000000_add_post", "CREATE TABLE \"B\" (id int);\n");
    p.add("20240103000000_tag", "CREATE TABLE \"C\" (id int);\n");
    p.add(
        "20240104000000_bad",
        "ALTER TABLE \"DoesNotExist\" ADD COLUMN x int;\n",
    );
    let o = prisma::deploy(&db.url, &dir, &mut prisma::NoProgress)
        .await
        .unwrap();
    assert!(o.stopped.is_some());
    p.add("20240109000000_later", "CREATE TABLE \"D\" (id int);\n");
    let out = prisma::status(&db.url, &dir).await.unwrap().render_prisma();
    assert_eq!(
        normalize(&out.stdout),
        golden_stdout_body(&golden("29_status_failed_and_pending", "stdout"))
    );
    assert_eq!(
        normalize(&out.stderr),
        golden_stderr_body(&golden("29_status_failed_and_pending", "stderr"))
    );
    assert_eq!(
        out.exit_code.to_string(),
        golden("29_status_failed_and_pending", "rc").trim()
    );
}

/// The in-repo copy of the goldens (what CI uses) must equal the shared one when it is present.
#[test]
fn in_repo_goldens_match_the_shared_goldens() {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/prisma-golden/outputs");
    let ours = fixture("prisma-golden/outputs");
    assert!(
        ours.is_dir(),
        "tests/fixtures/prisma-golden/outputs is missing"
    );
    if !shared.is_dir() {
        println!("skipped: {} not present", shared.display());
        return;
    }
    let mut n = 0;
    for e in std::fs::read_dir(&shared).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            let mine = std::fs::read(ours.join(e.file_name()))
                .unwrap_or_else(|_| panic!("{:?} missing from the in-repo goldens", e.file_name()));
            assert_eq!(
                mine,
                std::fs::read(e.path()).unwrap(),
                "{:?} differs",
                e.file_name()
            );
            n += 1;
        }
    }
    assert!(n >= 100, "only {n} golden files compared");
}

/// The body extraction itself: a golden with a known body.
#[test]
fn golden_body_extraction_strips_the_header_and_normalises_blank_lines() {
    let body = golden_stdout_body(&golden("02_deploy_init", "stdout"));
    assert!(body.starts_with("1 migration found in prisma/migrations\n\n\nThe following"));
    assert!(body.contains("migration.sql\n\nAll migrations"), "{body:?}");
    let err = golden_stderr_body(&golden("28_status_empty_db_no_migrations", "stderr"));
    assert_eq!(
        err,
        "The current database is not managed by Prisma Migrate.\n\nRead more about how to baseline an existing production database:\nhttps://pris.ly/d/migrate-baseline\n"
    );
}
