use super::*;

fn outcome(migrations: Vec<RehearsedMigration>) -> RehearsalOutcome {
    RehearsalOutcome {
        backup_id: "b0123456789".into(),
        backup_created_at_ms: 0,
        fresh_backup: false,
        largest_table: Some(("public.Task".into(), 1_500_000)),
        restore_ms: 20_000,
        pinned: migrations
            .iter()
            .map(|m| (m.name.clone(), "sum".into()))
            .collect(),
        migrations,
        total_ms: 61_000,
        caught_up: vec![],
    }
}

fn m(name: &str, ms: u64, rewrote: &[&str]) -> RehearsedMigration {
    RehearsedMigration {
        name: name.into(),
        duration_ms: ms,
        rewrote: rewrote.iter().map(|s| s.to_string()).collect(),
        locks: vec![],
        error: None,
        statement: None,
    }
}

#[test]
fn a_passed_rehearsal_names_the_rewrites() {
    let o = outcome(vec![
        m("20250301_add_uid", 38_000, &["public.Task"]),
        m("20250302_idx", 2_600, &[]),
        m("20250303_col", 400, &[]),
    ]);
    assert!(o.passed());
    assert_eq!(
        o.summary(2 * 3600 * 1000),
        "Rehearsed on backup b0123456789 (2h old, 1.5M rows in Task): 3 migrations in 41 s; 20250301_add_uid rewrote Task (38 s)"
    );
}

#[test]
fn a_failed_rehearsal_leads_with_the_error_and_statement() {
    let mut f = m("20250301_uniq", 120, &[]);
    f.error = Some(
        "ERROR: could not create unique index \"T_key\"\nDETAIL: Key (a)=(1) is duplicated.".into(),
    );
    f.statement = Some("CREATE UNIQUE INDEX \"T_key\"\n  ON \"T\"(\"a\")".into());
    let mut o = outcome(vec![m("20250228_ok", 10, &[]), f]);
    o.pinned.push(("20250302_never".into(), "sum".into()));
    assert!(!o.passed());
    assert_eq!(
        o.summary(90_000),
        "Rehearsal FAILED on backup b0123456789 (1m old, 1.5M rows in Task): 20250301_uniq failed: ERROR: could not create unique index \"T_key\" DETAIL: Key (a)=(1) is duplicated. (statement: CREATE UNIQUE INDEX \"T_key\" ON \"T\"(\"a\"))"
    );
}

#[test]
fn a_rehearsal_that_applied_less_than_pinned_did_not_pass() {
    let mut o = outcome(vec![m("1_a", 10, &[])]);
    o.pinned.push(("2_b".into(), "sum".into()));
    assert!(!o.passed());
    assert!(
        o.summary(0).starts_with("Rehearsal FAILED"),
        "{}",
        o.summary(0)
    );
}
