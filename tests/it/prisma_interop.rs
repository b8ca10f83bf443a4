//! Interop with the real Prisma CLI (6.19.3, offline wasm engine, installed once into
//! `target/prisma-cli` by `tests/tools/install-prisma-cli.sh`): a database deployed and rolled
//! back (down strategy) by dualkey reads the same in `prisma migrate status` as in dualkey's
//! Prisma-format status, and the real `prisma migrate deploy` re-applies what dualkey rolled back.
//! The reverse direction too: what the real CLI wrote reads the same in dualkey.
//!
//! Skipped, with the reason printed, only when `npm`/`node` are missing.

use crate::prisma_helpers::*;
use crate::support::TestDb;
use dualkey::dbops::prisma::{self, NoProgress};

const INIT: &str = "20240101000000_init";
const POST: &str = "20240102000000_add_post";
const TAG: &str = "20240103000000_add_tag";

/// Compares `prisma migrate status` (real) with dualkey's rendering on the same database.
async fn assert_same_status(root: &std::path::Path, url: &str, dir: &std::path::Path, when: &str) {
    let real = run_prisma(root, url, &["migrate", "status"]).await;
    let ours = prisma::status(url, dir).await.unwrap().render_prisma();
    assert_eq!(
        golden_stdout_body(&real.stdout),
        ours.stdout,
        "{when}: stdout\nreal stderr: {}",
        real.stderr
    );
    assert_eq!(
        golden_stderr_body(&real.stderr),
        ours.stderr,
        "{when}: stderr"
    );
    assert_eq!(real.code, ours.exit_code, "{when}: exit code");
}

#[tokio::test]
async fn the_real_prisma_cli_agrees_with_dualkey_after_deploy_and_down_rollback() {
    let cli = match ensure_prisma_cli() {
        Ok(dir) => dir,
        Err(reason) if which("npm").is_none() => {
            println!("skipped: {reason}");
            return;
        }
        Err(reason) => panic!("cannot install the Prisma CLI: {reason}"),
    };
    let db = TestDb::create("interop").await;
    let p = Project::from_fixture("prisma/blog");
    write_prisma_project(p.root(), &cli);
    let dir = p.migrations();
    let url = &db.url;

    // Fresh database, 3 pending (no table).
    assert_same_status(p.root(), url, &dir, "fresh").await;

    // dualkey deploys; the real CLI sees it up to date.
    let out = prisma::deploy(url, &dir, &mut NoProgress).await.unwrap();
    assert_eq!(out.applied, vec![INIT, POST, TAG]);
    assert_same_status(p.root(), url, &dir, "after dualkey deploy").await;
    let real = run_prisma(p.root(), url, &["migrate", "deploy"]).await;
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert_eq!(
        golden_stdout_body(&real.stdout),
        prisma::render_deploy(
            3,
            &Ok(prisma::DeployOutcome {
                migrations_found: 3,
                applied: vec![],
                stopped: None
            })
        )
        .stdout
    );

    // dualkey rolls back add_post (and add_tag after it) with down.sql.
    let rb = prisma::rollback_down(url, &dir, POST, None, &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(rb.rolled_back, vec![TAG, POST]);
    assert!(!table_exists(url, "Post").await);
    assert_same_status(p.root(), url, &dir, "after dualkey rollback").await;

    // The real deploy re-applies exactly what dualkey rolled back.
    let real = run_prisma(p.root(), url, &["migrate", "deploy"]).await;
    assert_eq!(real.code, 0, "{}\n{}", real.stdout, real.stderr);
    let expected = prisma::render_deploy(
        3,
        &Ok(prisma::DeployOutcome {
            migrations_found: 3,
            applied: vec![POST.into(), TAG.into()],
            stopped: None,
        }),
    );
    assert_eq!(golden_stdout_body(&real.stdout), expected.stdout);
    assert!(table_exists(url, "Post").await && table_exists(url, "Tag").await);
    let dump = table_dump(url).await.unwrap();
    assert_eq!(dump.len(), 5);
    let report = prisma::status(url, &dir).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_same_status(p.root(), url, &dir, "after real re-deploy").await;

    // The reverse direction: a failure and a resolve written by the real CLI read the same.
    p.add(
        "20240104000000_bad",
        "CREATE TABLE \"X\" (id int);\nALTER TABLE \"DoesNotExist\" ADD COLUMN x int;\n",
    );
    let real = run_prisma(p.root(), url, &["migrate", "deploy"]).await;
    assert_eq!(real.code, 1);
    assert!(!table_exists(url, "X").await);
    assert_same_status(p.root(), url, &dir, "after the real CLI's failed deploy").await;
    let err = prisma::deploy(url, &dir, &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(prisma::PrismaCode::P3009));
    let real = run_prisma(
        p.root(),
        url,
        &["migrate", "resolve", "--rolled-back", "20240104000000_bad"],
    )
    .await;
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert_eq!(
        golden_stdout_body(&real.stdout),
        prisma::render_resolve(
            "20240104000000_bad",
            prisma::ResolveAction::RolledBack,
            &Ok(())
        )
        .stdout
    );
    assert_same_status(p.root(), url, &dir, "after the real CLI's resolve").await;
    let report = prisma::status(url, &dir).await.unwrap();
    assert_eq!(report.rolled_back, vec!["20240104000000_bad"]);
    assert_eq!(report.deploy_would_apply, vec!["20240104000000_bad"]);
}
