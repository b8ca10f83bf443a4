//! The lock review on deploy and rollback cards (issue 22, part 1). Gathering reads, on one
//! connection to the target, the size of every existing table a risky statement locks
//! (`pg_class.reltuples`, `pg_total_relation_size`, the time of its statistics) and the
//! sessions in a transaction for longer than `[deploy] long_transaction`; [`lock_warnings`]
//! turns the scripts' reviews and those [`LiveFacts`] into card lines, purely.
//!
//! Severity follows size: a risky statement on a table at or over `review_warn_rows` rows or
//! `review_warn_mb` MiB is a caution, on a smaller table (or one the same deploy creates) a note.
//! When the sizes cannot be read the plan is still made: the card says why, and every risky
//! statement is a caution (its table may be large).
//!
//! Nothing here is pinned: sizes and sessions change while a request waits for its votes, and a
//! vote must not be refused as stale for that. They reach the warnings only, which the plan's
//! fingerprint leaves out; what is pinned is the scripts' bytes (the checksums and the rollback
//! plan), from which the reviews are computed.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{DeploySettings, EnvironmentSettings};
use crate::core::human;
use crate::core::reply::Warning;
use crate::dbops::lockreview::{
    known_columns, KnownColumns, ScriptReview, StatementReview, TableRef,
};
use crate::dbops::prisma::Target;
use crate::dbops::sessions::{self, human_bytes, human_rows, SessionInfo, TableSize};
use crate::services::environment::database_url;

/// How long reading the sizes and sessions may take before the card goes without them.
const LIVE_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many statement lines on a card; the rest are counted in one line.
const MAX_STATEMENT_LINES: usize = 20;
/// At most this many long-transaction lines on a card.
const MAX_SESSION_LINES: usize = 5;
/// Statements longer than this are cut on the card.
const SQL_CHARS: usize = 160;
/// Statistics older than this are dated on the card.
const STALE_STATS_MS: i64 = 24 * 3_600_000;

/// The lock reviews of a plan's scripts, each with its label, in the order they run.
pub type ReviewedScripts = Vec<(String, ScriptReview)>;

/// What the target looks like right now, for the lock review: read while gathering, shown on
/// the card, never pinned (see the module doc).
#[derive(Debug, Clone)]
pub struct LiveFacts {
    /// The sizes of the existing tables the risky statements lock, or why they could not be
    /// read.
    pub sizes: Result<Vec<TableSize>, String>,
    /// The sessions in a transaction for longer than `thresholds.long_transaction`, oldest
    /// first, or why they could not be read.
    pub long_transactions: Result<Vec<SessionInfo>, String>,
    /// `[deploy]`: the size thresholds and `long_transaction`.
    pub thresholds: DeploySettings,
}

/// Connects to the target the way every target connection does (TLS, `search_path`), with a
/// short `lock_timeout`: reading a table's size takes ACCESS SHARE on it, which must not queue
/// behind a migration's ACCESS EXCLUSIVE (and hold up every query behind the review).
pub(crate) async fn connect(e: &EnvironmentSettings) -> Result<Target, String> {
    let url = database_url(e).map_err(|err| err.0)?;
    let mut t = Target::connect(url.expose_secret())
        .await
        .map_err(|err| err.to_string())?;
    sqlx::query("SET lock_timeout = '500ms'")
        .execute(&mut t.conn)
        .await
        .map_err(|err| err.to_string())?;
    Ok(t)
}

/// The current types of the columns of every table `scripts` name, for a second review that
/// knows them ([`crate::dbops::lockreview::review_script_with`]); `None` when there is nothing
/// to learn or the read failed (the first review stands: it assumes a rewrite).
pub(crate) async fn columns_on_target(
    target: &mut Result<Target, String>,
    scripts: &[(String, ScriptReview)],
) -> Option<KnownColumns> {
    let t = target.as_mut().ok()?;
    let mut tables: Vec<TableRef> = Vec::new();
    for s in scripts.iter().flat_map(|(_, r)| r.statements.iter()) {
        for t in &s.tables {
            if !tables.contains(t) {
                tables.push(t.clone());
            }
        }
    }
    if tables.is_empty() {
        return None;
    }
    let read = known_columns(&mut t.conn, &tables);
    match tokio::time::timeout(LIVE_READ_TIMEOUT, read).await {
        Ok(Ok(known)) if !known.is_empty() => Some(known),
        _ => None,
    }
}

/// Reads the sizes of the tables `scripts` lock in risky statements and the long transactions,
/// on `target` (or records why not, for both). Never fails: the plan is made without them.
pub(crate) async fn read_live(
    target: Result<Target, String>,
    thresholds: &DeploySettings,
    scripts: &[(String, ScriptReview)],
) -> LiveFacts {
    let tables = tables_to_size(scripts);
    let (sizes, long_transactions) = match target {
        Err(why) => (Err(why.clone()), Err(why)),
        Ok(mut t) => {
            let read = async {
                let sizes = if tables.is_empty() {
                    Ok(Vec::new())
                } else {
                    sessions::table_sizes(&mut t.conn, &tables).await
                };
                let long =
                    sessions::long_transactions(&mut t.conn, thresholds.long_transaction.0).await;
                (
                    sizes.map_err(|e| e.to_string()),
                    long.map_err(|e| e.to_string()),
                )
            };
            match tokio::time::timeout(LIVE_READ_TIMEOUT, read).await {
                Ok(pair) => pair,
                Err(_) => {
                    let why = format!(
                        "no answer from the target within {}s",
                        LIVE_READ_TIMEOUT.as_secs()
                    );
                    (Err(why.clone()), Err(why))
                }
            }
        }
    };
    LiveFacts {
        sizes,
        long_transactions,
        thresholds: thresholds.clone(),
    }
}

/// The `regclass` names of the tables risky statements lock that the scripts did not create
/// earlier, each once, in order of first use.
pub fn tables_to_size(scripts: &[(String, ScriptReview)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    walk(scripts, |_, s, created| {
        for t in &s.tables {
            let name = t.regclass();
            if !created_earlier(created, t) && !out.contains(&name) {
                out.push(name);
            }
        }
    });
    out
}

/// Calls `f` for every risky statement, with its script's label and the tables created before
/// it (in this script or an earlier one of the same plan).
fn walk(
    scripts: &[(String, ScriptReview)],
    mut f: impl FnMut(&str, &StatementReview, &[TableRef]),
) {
    let mut created: Vec<TableRef> = Vec::new();
    for (label, review) in scripts {
        for s in &review.statements {
            if s.is_risky() {
                f(label, s, &created);
            }
            created.extend(created_table(&s.sql));
        }
    }
}

/// The table a `CREATE TABLE` (or `CREATE TABLE ... AS`) statement creates.
fn created_table(sql: &str) -> Option<TableRef> {
    // Cheap filter first: most statements are not CREATEs.
    if !sql.to_ascii_uppercase().contains("CREATE") {
        return None;
    }
    use pg_query::NodeEnum;
    let parsed = pg_query::parse(sql).ok()?;
    let node = parsed
        .protobuf
        .stmts
        .first()?
        .stmt
        .as_ref()?
        .node
        .as_ref()?;
    let rv = match node {
        NodeEnum::CreateStmt(c) => c.relation.as_ref()?,
        NodeEnum::CreateTableAsStmt(c) => c.into.as_ref()?.rel.as_ref()?,
        _ => return None,
    };
    Some(TableRef {
        schema: (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone()),
        name: rv.relname.clone(),
    })
}

/// Whether `t` was created earlier: same name, and the same schema when both name one.
fn created_earlier(created: &[TableRef], t: &TableRef) -> bool {
    created.iter().any(|c| {
        c.name == t.name
            && match (&c.schema, &t.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}

/// What the card says about one table a statement locks.
enum Sized<'a> {
    /// Its size from the catalog.
    Known(&'a TableSize),
    /// Created earlier by the same plan.
    New,
    /// Not in the target (the sizes were read and it was not there).
    Absent,
    /// The sizes could not be read.
    Unknown,
}

/// The card lines of the lock review of `scripts` (labelled: `20250301000000_add_uid`,
/// `20250301000000_add_uid down.sql`), with the long transactions on the target. Pure.
pub fn lock_warnings(
    scripts: &[(String, ScriptReview)],
    live: &LiveFacts,
    now: i64,
) -> Vec<Warning> {
    let mut out = Vec::new();
    for (label, review) in scripts {
        if let Some(err) = &review.parse_error {
            out.push(Warning::caution(format!(
                "{label}: the lock review could not parse the script ({err}); read its locks yourself before approving"
            )));
        }
    }
    let mut lines = Vec::new();
    walk(scripts, |label, s, created| {
        lines.push(statement_warning(label, s, created, live, now));
    });
    let flagged = lines.len();
    out.extend(lines.into_iter().take(MAX_STATEMENT_LINES));
    if flagged > MAX_STATEMENT_LINES {
        out.push(Warning::caution(format!(
            "the lock review flags {} more statement(s) not shown here: read the scripts before approving",
            flagged - MAX_STATEMENT_LINES
        )));
    }
    let statements: usize = scripts.iter().map(|(_, r)| r.statements.len()).sum();
    if flagged == 0 && statements > 0 {
        out.push(Warning::info(format!(
            "lock review: none of the {statements} statement(s) blocks reads or writes of an existing table"
        )));
    }
    if let Err(why) = &live.sizes {
        if flagged > 0 {
            out.push(Warning::caution(format!(
                "the table sizes could not be read from the target ({why}): the lock review shows none, and each flagged statement is a warning"
            )));
        }
    }
    out.extend(session_warnings(live));
    out
}

/// One line per long transaction (a caution: a migration would wait for it).
fn session_warnings(live: &LiveFacts) -> Vec<Warning> {
    let over = crate::config::format_duration(live.thresholds.long_transaction.0);
    match &live.long_transactions {
        Err(why) => vec![Warning::caution(format!(
            "the target's open transactions could not be read ({why}): a migration may wait behind one"
        ))],
        Ok(list) => {
            let mut out: Vec<Warning> = list
                .iter()
                .take(MAX_SESSION_LINES)
                .map(|s| {
                    Warning::caution(format!(
                        "a transaction open on the target for over {over} (a migration would wait for it, and the app's queries behind the migration): {s}"
                    ))
                })
                .collect();
            if list.len() > MAX_SESSION_LINES {
                out.push(Warning::caution(format!(
                    "{} more transaction(s) open on the target for over {over}",
                    list.len() - MAX_SESSION_LINES
                )));
            }
            out
        }
    }
}

/// The line of one risky statement: what it does to which table of what size, under which
/// lock, what waits, and the safer form; a caution when a table is large (or of unknown size),
/// else a note.
fn statement_warning(
    label: &str,
    s: &StatementReview,
    created: &[TableRef],
    live: &LiveFacts,
    now: i64,
) -> Warning {
    let sized: Vec<(&TableRef, Sized)> = s
        .tables
        .iter()
        .map(|t| (t, size_of(t, created, live)))
        .collect();
    let large = sized.iter().any(|(_, z)| z.is_large(&live.thresholds));
    let tables = sized
        .iter()
        .map(|(t, z)| format!("{t} ({})", describe(z, now)))
        .collect::<Vec<_>>()
        .join(" and ");
    let lock = match s.lock {
        Some(l) => format!("under {l}"),
        None => "under no table lock".into(),
    };
    let mut text = format!(
        "{label} line {}: `{}` {} {tables} {lock}: {}.",
        s.line,
        one_line(&s.sql),
        s.effect.verb(),
        s.blocks().as_str()
    );
    if let Some(safer) = &s.safer {
        text.push_str(&format!(" Safer: {}", safer.trim()));
        if !text.ends_with(['.', '!', '?']) {
            text.push('.');
        }
    }
    if large {
        Warning::caution(text)
    } else {
        Warning::info(text)
    }
}

impl Sized<'_> {
    /// Large by the `[deploy]` thresholds, or of unknown size (it may be).
    fn is_large(&self, thresholds: &DeploySettings) -> bool {
        match self {
            Sized::Known(ts) => thresholds.is_large(ts.rows.unwrap_or(0), ts.bytes),
            Sized::Unknown => true,
            Sized::New | Sized::Absent => false,
        }
    }
}

/// The flagged statements of `scripts` on a large table (or one of unknown size), as
/// `20250201000000_task_uid line 2 (rewrites "Task")`: what the card shows as warnings.
pub fn flagged_on_large_tables(
    scripts: &[(String, ScriptReview)],
    live: &LiveFacts,
) -> Vec<String> {
    let mut out = Vec::new();
    walk(scripts, |label, s, created| {
        let large: Vec<String> = s
            .tables
            .iter()
            .filter(|t| size_of(t, created, live).is_large(&live.thresholds))
            .map(|t| t.to_string())
            .collect();
        if !large.is_empty() {
            out.push(format!(
                "{label} line {} ({} {})",
                s.line,
                s.effect.verb(),
                large.join(", ")
            ));
        }
    });
    out
}

fn size_of<'a>(t: &TableRef, created: &[TableRef], live: &'a LiveFacts) -> Sized<'a> {
    if created_earlier(created, t) {
        return Sized::New;
    }
    match &live.sizes {
        Err(_) => Sized::Unknown,
        Ok(sizes) => {
            let name = t.regclass();
            sizes
                .iter()
                .find(|z| z.table == name)
                .map_or(Sized::Absent, Sized::Known)
        }
    }
}

/// `about 1.5M rows, 420 MB`; dated when the statistics are old; `created by this plan`.
fn describe(z: &Sized, now: i64) -> String {
    match z {
        Sized::New => "created earlier in this plan".into(),
        Sized::Absent => "not in the target".into(),
        Sized::Unknown => "size unknown".into(),
        Sized::Known(ts) => {
            let bytes = human_bytes(ts.bytes);
            match (ts.rows, ts.stats_at) {
                (None, _) => format!("row count unknown: never analyzed; {bytes}"),
                (Some(r), Some(at)) if now - at.timestamp_millis() > STALE_STATS_MS => format!(
                    "about {} rows by statistics {} old, {bytes}",
                    human_rows(r),
                    human::age(now - at.timestamp_millis())
                ),
                (Some(r), _) => format!("about {} rows, {bytes}", human_rows(r)),
            }
        }
    }
}

/// The statement on one line, cut to [`SQL_CHARS`] characters.
fn one_line(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SQL_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(SQL_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    //! Card lines from reviews and sizes built by hand: no database.

    use super::*;
    use crate::config::HumanDuration;
    use crate::core::reply::Severity;
    use crate::dbops::lockreview::{Effect, LockLevel};
    use chrono::DateTime;

    const NOW: i64 = 1_700_000_000_000;

    fn table(name: &str) -> TableRef {
        TableRef {
            schema: None,
            name: name.into(),
        }
    }

    fn stmt(
        sql: &str,
        line: usize,
        lock: Option<LockLevel>,
        tables: &[&str],
        effect: Effect,
        safer: Option<&str>,
    ) -> StatementReview {
        StatementReview {
            sql: sql.into(),
            line,
            lock,
            tables: tables.iter().map(|t| table(t)).collect(),
            effect,
            rule: "test",
            doc: "test",
            safer: safer.map(str::to_string),
        }
    }

    fn add_uid() -> StatementReview {
        stmt(
            "ALTER TABLE \"Task\"\n  ADD COLUMN \"uid\" uuid DEFAULT gen_random_uuid()",
            3,
            Some(LockLevel::AccessExclusive),
            &["Task"],
            Effect::Rewrite,
            Some("add the column without a default, then set the default and backfill in batches"),
        )
    }

    fn script(label: &str, statements: Vec<StatementReview>) -> (String, ScriptReview) {
        (
            label.into(),
            ScriptReview {
                statements,
                transactional: true,
                parse_error: None,
            },
        )
    }

    fn size(table: &str, rows: Option<u64>, bytes: u64, stats_age_ms: Option<i64>) -> TableSize {
        TableSize {
            table: format!("\"{table}\""),
            rows,
            bytes,
            stats_at: stats_age_ms.map(|a| DateTime::from_timestamp_millis(NOW - a).unwrap()),
        }
    }

    fn live(sizes: Result<Vec<TableSize>, String>) -> LiveFacts {
        LiveFacts {
            sizes,
            long_transactions: Ok(vec![]),
            thresholds: DeploySettings::default(),
        }
    }

    fn texts(w: &[Warning]) -> Vec<(Severity, &str)> {
        w.iter().map(|w| (w.severity, w.text.as_str())).collect()
    }

    #[test]
    fn a_rewrite_of_a_large_table_is_a_warning_with_size_lock_and_safer_form() {
        let scripts = vec![script("m2", vec![add_uid()])];
        let big = live(Ok(vec![size(
            "Task",
            Some(1_500_000),
            420 << 20,
            Some(60_000),
        )]));
        let w = lock_warnings(&scripts, &big, NOW);
        assert_eq!(
            texts(&w),
            vec![(
                Severity::Caution,
                "m2 line 3: `ALTER TABLE \"Task\" ADD COLUMN \"uid\" uuid DEFAULT gen_random_uuid()` rewrites \"Task\" (about 1.5M rows, 420 MB) under ACCESS EXCLUSIVE: reads and writes wait. Safer: add the column without a default, then set the default and backfill in batches."
            )]
        );
        // The same statement on a few hundred rows is a note.
        let small = live(Ok(vec![size("Task", Some(300), 64 << 10, Some(60_000))]));
        let w = lock_warnings(&scripts, &small, NOW);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].severity, Severity::Info);
        assert!(
            w[0].text.contains("(about 300 rows, 64 kB)"),
            "{}",
            w[0].text
        );
        // Large by bytes alone; and old statistics are dated.
        let wide = live(Ok(vec![size(
            "Task",
            Some(500),
            100 << 20,
            Some(3 * 86_400_000),
        )]));
        let w = lock_warnings(&scripts, &wide, NOW);
        assert_eq!(w[0].severity, Severity::Caution);
        assert!(
            w[0].text
                .contains("(about 500 rows by statistics 72h old, 100 MB)"),
            "{}",
            w[0].text
        );
    }

    #[test]
    fn a_table_created_earlier_in_the_plan_has_no_size_and_is_a_note() {
        let create = stmt(
            "-- CreateTable\nCREATE TABLE \"Tag\" (\"id\" SERIAL NOT NULL)",
            1,
            None,
            &[],
            Effect::Metadata,
            None,
        );
        let index = stmt(
            "CREATE INDEX \"Tag_id_idx\" ON \"Tag\"(\"id\")",
            1,
            Some(LockLevel::Share),
            &["Tag"],
            Effect::Scan,
            Some("CREATE INDEX CONCURRENTLY (outside a transaction)"),
        );
        let scripts = vec![script("m2", vec![create]), script("m3", vec![index])];
        assert!(tables_to_size(&scripts).is_empty());
        let w = lock_warnings(&scripts, &live(Ok(vec![])), NOW);
        assert_eq!(
            texts(&w),
            vec![(
                Severity::Info,
                "m3 line 1: `CREATE INDEX \"Tag_id_idx\" ON \"Tag\"(\"id\")` scans \"Tag\" (created earlier in this plan) under SHARE: writes wait, reads go on. Safer: CREATE INDEX CONCURRENTLY (outside a transaction)."
            )]
        );
    }

    #[test]
    fn unreadable_sizes_do_not_block_the_plan_and_make_every_flagged_statement_a_warning() {
        let scripts = vec![script("m2", vec![add_uid()])];
        let w = lock_warnings(&scripts, &live(Err("connection refused".into())), NOW);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].severity, Severity::Caution);
        assert!(
            w[0].text
                .contains("rewrites \"Task\" (size unknown) under ACCESS EXCLUSIVE"),
            "{}",
            w[0].text
        );
        assert_eq!(
            texts(&w[1..]),
            vec![(Severity::Caution, "the table sizes could not be read from the target (connection refused): the lock review shows none, and each flagged statement is a warning")]
        );
    }

    #[test]
    fn a_script_without_risky_statements_gets_one_note_and_long_transactions_a_warning_each() {
        let select = stmt("SELECT 1", 1, None, &[], Effect::Metadata, None);
        let scripts = vec![script("m2", vec![select])];
        let mut l = live(Ok(vec![]));
        l.thresholds.long_transaction = HumanDuration(Duration::from_secs(60));
        l.long_transactions = Ok(vec![SessionInfo {
            pid: 4242,
            application: "psql".into(),
            state: "idle in transaction".into(),
            xact_age_s: 192,
            query: "UPDATE \"Task\" SET done = true".into(),
        }]);
        let w = lock_warnings(&scripts, &l, NOW);
        assert_eq!(
            texts(&w),
            vec![
                (Severity::Info, "lock review: none of the 1 statement(s) blocks reads or writes of an existing table"),
                (Severity::Caution, "a transaction open on the target for over 1m (a migration would wait for it, and the app's queries behind the migration): pid 4242 (psql, idle in transaction, in a transaction for 3m12s): UPDATE \"Task\" SET done = true"),
            ]
        );
        l.long_transactions = Err("permission denied".into());
        let w = lock_warnings(&scripts, &l, NOW);
        assert_eq!(w[1].text, "the target's open transactions could not be read (permission denied): a migration may wait behind one");
    }

    #[test]
    fn a_parse_error_is_a_warning_and_long_statements_are_cut() {
        let mut bad = script("m2", vec![]);
        bad.1.parse_error = Some("syntax error at or near \"TABL\"".into());
        let w = lock_warnings(&[bad], &live(Ok(vec![])), NOW);
        assert_eq!(
            texts(&w),
            vec![(Severity::Caution, "m2: the lock review could not parse the script (syntax error at or near \"TABL\"); read its locks yourself before approving")]
        );
        let long = "x ".repeat(200);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), SQL_CHARS);
        assert!(cut.ends_with('…'));
    }
}
