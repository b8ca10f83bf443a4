//! Retention: which backups `select_for_deletion` picks (table-driven) and `delete_backup_files`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use dualkey::dbops::backup::{
    delete_backup_files, select_for_deletion, BackupKind, DeletedFile, RetentionEntry,
    RetentionPolicy,
};

use BackupKind::{
    Manual as M, PreDeploy as PD, PreRestore as PR, PreRollback as PB, Scheduled as S,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 30, 2, 0, 0).unwrap()
}

/// (id, kind, age in hours, verified, exists)
type Row = (&'static str, BackupKind, i64, bool, bool);

fn entries(rows: &[Row]) -> Vec<RetentionEntry<&'static str>> {
    rows.iter()
        .map(|&(id, kind, hours, verified, exists)| RetentionEntry {
            id,
            kind,
            created_at: now() - Duration::hours(hours),
            verified,
            exists,
        })
        .collect()
}

const D: i64 = 24;

#[test]
fn retention_selects_old_scheduled_and_manual_backups_beyond_the_newest_verified_ones() {
    let default = RetentionPolicy::default();
    let cases: Vec<(&str, Vec<Row>, RetentionPolicy, Vec<&str>)> = vec![
        ("nothing to do", vec![], default, vec![]),
        (
            "a daily schedule keeps 7 days; exactly 7 days old is not older",
            (0..10)
                .map(|d| {
                    (
                        ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"][d],
                        S,
                        d as i64 * D,
                        true,
                        true,
                    )
                })
                .collect(),
            default,
            vec!["d9", "d8"],
        ),
        (
            "one hour past the limit is older",
            vec![
                ("new", S, 0, true, true),
                ("a", S, 1, true, true),
                ("b", S, 2, true, true),
                ("old", S, 7 * D + 1, true, true),
            ],
            default,
            vec!["old"],
        ),
        (
            "min_keep protects the newest verified even when all are old",
            vec![
                ("a", S, 30 * D, true, true),
                ("b", S, 31 * D, true, true),
                ("c", M, 32 * D, true, true),
            ],
            default,
            vec![],
        ),
        (
            "beyond min_keep the oldest go, oldest first",
            vec![
                ("a", S, 30 * D, true, true),
                ("e", S, 34 * D, true, true),
                ("b", S, 31 * D, true, true),
                ("d", M, 33 * D, true, true),
                ("c", S, 32 * D, true, true),
            ],
            default,
            vec!["e", "d"],
        ),
        (
            "unverified backups do not count toward min_keep",
            vec![
                ("u1", S, 0, false, true),
                ("u2", S, D, false, true),
                ("u3", S, 2 * D, false, true),
                ("v1", S, 10 * D, true, true),
                ("v2", S, 11 * D, true, true),
                ("v3", S, 12 * D, true, true),
                ("v4", S, 13 * D, true, true),
            ],
            default,
            vec!["v4"],
        ),
        (
            "old unverified ones are deleted even when newer than kept ones",
            vec![
                ("v1", S, 10 * D, true, true),
                ("bad", S, 11 * D, false, true),
                ("v2", S, 12 * D, true, true),
                ("v3", S, 13 * D, true, true),
            ],
            default,
            vec!["bad"],
        ),
        (
            "a backup whose file is gone does not count and is selected when old",
            vec![
                ("gone", S, 8 * D, true, false),
                ("v1", S, 9 * D, true, true),
                ("v2", S, 10 * D, true, true),
                ("v3", S, 11 * D, true, true),
                ("v4", S, 12 * D, true, true),
            ],
            default,
            vec!["v4", "gone"],
        ),
        (
            "a recent backup whose file is gone is not selected",
            vec![
                ("gone", S, D, true, false),
                ("v1", S, 9 * D, true, true),
                ("v2", S, 10 * D, true, true),
                ("v3", S, 11 * D, true, true),
            ],
            default,
            vec![],
        ),
        (
            "safety backups are never selected, however old",
            vec![
                ("pd", PD, 100 * D, true, true),
                ("pb", PB, 101 * D, false, true),
                ("pr", PR, 102 * D, true, false),
                ("s", S, 0, true, true),
            ],
            RetentionPolicy {
                retention_days: 1,
                min_keep: 0,
            },
            vec![],
        ),
        (
            "safety backups count toward min_keep",
            vec![
                ("pd1", PD, 8 * D, true, true),
                ("pd2", PD, 9 * D, true, true),
                ("pr", PR, 10 * D, true, true),
                ("s1", S, 11 * D, true, true),
                ("m1", M, 12 * D, true, true),
            ],
            default,
            vec!["m1", "s1"],
        ),
        (
            "min_keep 0 keeps nothing extra",
            vec![
                ("a", S, 8 * D, true, true),
                ("b", M, 9 * D, true, true),
                ("c", S, 1, true, true),
            ],
            RetentionPolicy {
                retention_days: 7,
                min_keep: 0,
            },
            vec!["b", "a"],
        ),
        (
            "retention_days 0 selects everything older than now beyond min_keep",
            vec![
                ("a", S, 1, true, true),
                ("b", S, 2, true, true),
                ("c", S, 3, true, true),
            ],
            RetentionPolicy {
                retention_days: 0,
                min_keep: 1,
            },
            vec!["c", "b"],
        ),
        (
            "a backup dated in the future (clock skew) is never older",
            vec![("future", S, -48, true, true)],
            RetentionPolicy {
                retention_days: 0,
                min_keep: 0,
            },
            vec![],
        ),
        (
            "equal times: input order decides, both for keeping and for deleting",
            vec![
                ("x", S, 20 * D, true, true),
                ("y", S, 20 * D, true, true),
                ("z", S, 20 * D, true, true),
            ],
            RetentionPolicy {
                retention_days: 7,
                min_keep: 1,
            },
            vec!["y", "z"],
        ),
    ];
    for (name, rows, policy, expected) in cases {
        let got = select_for_deletion(&entries(&rows), now(), policy);
        assert_eq!(got, expected, "case: {name}");
    }
}

#[test]
fn the_default_policy_is_seven_days_and_three_kept() {
    assert_eq!(
        RetentionPolicy::default(),
        RetentionPolicy {
            retention_days: 7,
            min_keep: 3
        }
    );
}

#[test]
fn deleting_backup_files_removes_them_and_their_partial_twins() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("db_20240101T000000Z_scheduled.dump");
    let b = dir.path().join("db_20240102T000000Z_scheduled.dump");
    let keep = dir.path().join("db_20240103T000000Z_scheduled.dump");
    std::fs::write(&a, "a").unwrap();
    std::fs::write(
        dir.path()
            .join("db_20240101T000000Z_scheduled.dump.partial"),
        "p",
    )
    .unwrap();
    std::fs::write(&keep, "k").unwrap();

    let results = delete_backup_files(&[a.clone(), b.clone()]);

    let results: Vec<DeletedFile> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, [DeletedFile::Removed, DeletedFile::AlreadyGone]);
    assert_eq!(
        crate::backup_common::all_files(dir.path()),
        [std::path::PathBuf::from(
            "db_20240103T000000Z_scheduled.dump"
        )]
    );
}
