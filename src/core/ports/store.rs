//! The store port: the bot's own state behind one trait, implemented in `crate::store` for
//! SQLite and PostgreSQL. State changes happen in a [`Tx`]: the core locks what it decides on,
//! writes the change and its audit event, and commits them together.

use async_trait::async_trait;

use crate::core::approval::RequestState;
use crate::core::audit::{AuditRecord, NewAudit};
use crate::core::operation::OperationState;
use crate::core::ports::rows::*;

/// Store failures.
///
/// The driver error is part of the message and deliberately not a `source()`: `{:#}` of an
/// `anyhow` chain prints every source after the message, which printed the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("state store: {0}")]
    Db(sqlx::Error),
    /// Schema migrations failed.
    #[error("state store migration: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The first connection to a PostgreSQL store failed; the text says why and what to check.
    #[error("cannot connect to the PostgreSQL state store: {0}; check that the server runs and accepts connections there, and that store.url (or DUALKEY_STORE_URL) is right")]
    Connect(String),
    /// A stored value could not be read back.
    #[error("state store holds an unreadable value: {0}")]
    Corrupt(String),
    /// The URL is not sqlite:// or postgres://.
    #[error("store.url must start with sqlite:// or postgres://")]
    BadUrl,
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The state store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Starts a write transaction (SQLite: `BEGIN IMMEDIATE` behind a process-wide write lock;
    /// PostgreSQL: READ COMMITTED with explicit row locks).
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;

    /// A request by id.
    async fn get_request(&self, id: &str) -> StoreResult<Option<RequestRow>>;
    /// Requests in `state` (all when `None`), newest first.
    async fn list_requests(
        &self,
        state: Option<RequestState>,
        limit: i64,
    ) -> StoreResult<Vec<RequestRow>>;
    /// Votes on a request, oldest first.
    async fn votes(&self, request_id: &str) -> StoreResult<Vec<VoteRow>>;
    /// An operation by id.
    async fn get_operation(&self, id: &str) -> StoreResult<Option<OperationRow>>;
    /// The operation an approved request became.
    async fn operation_for_request(&self, request_id: &str) -> StoreResult<Option<OperationRow>>;
    /// Queued and running operations, oldest first.
    async fn active_operations(&self) -> StoreResult<Vec<OperationRow>>;
    /// Operations, newest first.
    async fn recent_operations(&self, limit: i64) -> StoreResult<Vec<OperationRow>>;
    /// Steps of an operation in order.
    async fn steps(&self, operation_id: &str) -> StoreResult<Vec<StepRow>>;
    /// The last `n` audit events, oldest first.
    async fn audit_tail(&self, n: i64) -> StoreResult<Vec<AuditRecord>>;
    /// Audit events with `seq > after`, up to `limit`, in order.
    async fn audit_page(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditRecord>>;
    /// The recorded head of the chain: (seq, hash).
    async fn audit_head(&self) -> StoreResult<(i64, String)>;
    /// Undelivered outbox rows of a platform that are due, oldest first.
    async fn outbox_due(&self, platform: &str, now: i64, limit: i64)
        -> StoreResult<Vec<OutboxRow>>;
    /// The channels (lanes) of a platform with an undelivered row that is due.
    async fn outbox_lanes(&self, platform: &str, now: i64) -> StoreResult<Vec<String>>;
    /// The first `limit` undelivered rows of one lane in delivery order (priority, then id),
    /// dead letters left out. The first row may still wait for its retry.
    async fn outbox_lane(
        &self,
        platform: &str,
        channel: &str,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Holds back a lane: no undelivered row of it is due before `until` (dead letters stay).
    async fn outbox_hold_lane(&self, platform: &str, channel: &str, until: i64) -> StoreResult<()>;
    /// Marks rows `ids` delivered, carried by the message of row `carrier` (platform id
    /// `message_id`), in one statement; a row already delivered keeps its first carrier.
    async fn outbox_carried(
        &self,
        ids: &[i64],
        carrier: i64,
        message_id: Option<&str>,
        now: i64,
    ) -> StoreResult<()>;
    /// Records why the copy of card `card_key` in a channel could not be posted.
    async fn set_card_post_error(
        &self,
        card_key: &str,
        platform: &str,
        channel: &str,
        error: &str,
    ) -> StoreResult<()>;
    /// Why the copy of card `card_key` in a channel could not be posted, if it could not.
    async fn card_post_error(
        &self,
        card_key: &str,
        platform: &str,
        channel: &str,
    ) -> StoreResult<Option<String>>;
    /// Outbox rows of a platform (delivered or not), oldest first (for tests and status).
    async fn outbox_all(&self, platform: &str) -> StoreResult<Vec<OutboxRow>>;
    /// Marks an outbox row delivered.
    async fn outbox_delivered(&self, id: i64, now: i64) -> StoreResult<()>;
    /// Records a failed delivery attempt and when to try again.
    async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()>;
    /// True when a newer undelivered edit of the same card in the same channel waits behind
    /// outbox row `row` (which is then superseded: edits collapse to the newest).
    async fn outbox_edit_superseded(&self, row: &OutboxRow) -> StoreResult<bool>;
    /// The channels a card was posted to, with the platform message id once posted:
    /// `(platform, channel, message_id)`.
    async fn card_messages(
        &self,
        card_key: &str,
    ) -> StoreResult<Vec<(String, String, Option<String>)>>;
    /// Records the platform message id of a card's copy in a channel.
    async fn set_card_message(
        &self,
        card_key: &str,
        platform: &str,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<()>;
    /// A backup catalog entry by id.
    async fn get_backup(&self, id: &str) -> StoreResult<Option<BackupRow>>;
    /// Catalog entries of an environment, newest first (deleted ones included).
    async fn list_backups(&self, env: &str) -> StoreResult<Vec<BackupRow>>;
    /// Records `file_mtime_ms` as the modification time of backup `id`'s file, and nothing else,
    /// only while the entry is a live (`ok`, not deleted) backup with SHA-256 `expected_sha256`:
    /// for a file whose modification time changed but whose bytes were hashed and found to be the
    /// catalog's. A targeted update, so an entry that retention deleted meanwhile stays deleted.
    /// True when the entry was updated.
    async fn refresh_backup_mtime(
        &self,
        id: &str,
        expected_sha256: &str,
        file_mtime_ms: i64,
    ) -> StoreResult<bool>;
    /// Counts for `/metrics`.
    async fn gauges(&self) -> StoreResult<Gauges>;
    /// Deletes delivery dedupe keys older than `dedupe_before` and delivered outbox rows older
    /// than `outbox_before`; returns how many rows went.
    async fn prune(&self, dedupe_before: i64, outbox_before: i64) -> StoreResult<u64>;
    /// Takes or renews the named lease for `holder` until `now + ttl_ms`; false while another
    /// holder's lease is still valid.
    async fn try_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64)
        -> StoreResult<bool>;
    /// The newest slot (scheduled instant, ms) of a cron job that some process took, if any.
    async fn last_run(&self, job: &str) -> StoreResult<Option<i64>>;
    /// Restore drills of an environment, newest first.
    async fn drills(&self, env: &str) -> StoreResult<Vec<DrillRow>>;
    /// When the row `name` of `schedule_alerts` was created, if it exists.
    async fn alert_since(&self, name: &str) -> StoreResult<Option<i64>>;
    /// Cron runs taken and never finished (their process stopped, or they still run), oldest
    /// first: `(job, slot, holder, started_at)`.
    async fn unfinished_runs(&self) -> StoreResult<Vec<(String, i64, String, i64)>>;
    /// Refreshes a running operation's heartbeat; false when `worker` no longer owns it (another
    /// replica marked it interrupted).
    async fn heartbeat(&self, operation_id: &str, worker: &str, now: i64) -> StoreResult<bool>;
    /// A monitoring window by id.
    async fn get_window(&self, id: &str) -> StoreResult<Option<WindowRow>>;
    /// Open monitoring windows, oldest first.
    async fn open_windows(&self) -> StoreResult<Vec<WindowRow>>;
    /// The reminders of a window, in order.
    async fn reminders(&self, window_id: &str) -> StoreResult<Vec<ReminderRow>>;
    /// A rehearsal by id.
    async fn get_rehearsal(&self, id: &str) -> StoreResult<Option<RehearsalRow>>;
    /// The newest rehearsal of exactly the set `set_digest` in `env` (a superseded one only when
    /// there is no other).
    async fn latest_rehearsal(
        &self,
        env: &str,
        set_digest: &str,
    ) -> StoreResult<Option<RehearsalRow>>;
    /// Rehearsals in `state`, oldest first.
    async fn rehearsals_in(&self, state: &str) -> StoreResult<Vec<RehearsalRow>>;
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls it back.
#[async_trait]
pub trait Tx: Send {
    /// Reads a request and locks it until commit (PostgreSQL `FOR UPDATE`).
    async fn lock_request(&mut self, id: &str) -> StoreResult<Option<RequestRow>>;
    /// Inserts a new request.
    async fn insert_request(&mut self, r: &RequestRow) -> StoreResult<()>;
    /// The conditional vote write: inserts the vote only if the request is pending, unexpired
    /// at `now`, the voter is not the requester and has not voted yet. True when inserted.
    async fn insert_vote_if_open(&mut self, v: &VoteRow, now: i64) -> StoreResult<bool>;
    /// Whether `voter` already voted on `request_id`.
    async fn has_voted(&mut self, request_id: &str, voter: &str) -> StoreResult<bool>;
    /// Number of votes with `decision`.
    async fn count_votes(&mut self, request_id: &str, decision: &str) -> StoreResult<i64>;
    /// Moves a request from `from` to `to`; true when it was in `from`.
    async fn transition_request(
        &mut self,
        id: &str,
        from: RequestState,
        to: RequestState,
        by: Option<&str>,
        now: i64,
    ) -> StoreResult<bool>;
    /// Pending requests whose expiry has passed, locked.
    async fn due_expired_requests(&mut self, now: i64) -> StoreResult<Vec<RequestRow>>;
    /// Inserts an operation.
    async fn insert_operation(&mut self, o: &OperationRow) -> StoreResult<()>;
    /// The queued or running operation of an environment, if any.
    async fn active_operation_for_env(&mut self, env: &str) -> StoreResult<Option<OperationRow>>;
    /// Claims the oldest queued operation whose environment has none running; it becomes
    /// `running`, owned by `worker`.
    async fn claim_operation(
        &mut self,
        worker: &str,
        now: i64,
    ) -> StoreResult<Option<OperationRow>>;
    /// Moves an operation between states; true when it was in `from`.
    async fn transition_operation(
        &mut self,
        id: &str,
        from: OperationState,
        to: OperationState,
        error: Option<&str>,
        now: i64,
    ) -> StoreResult<bool>;
    /// Locks an operation and tells whether it is `running` and owned by `worker`.
    async fn owns_operation(&mut self, id: &str, worker: &str) -> StoreResult<bool>;
    /// Running operations whose heartbeat is older than `stale_before` (all running ones when
    /// `None`), locked.
    async fn running_operations(
        &mut self,
        stale_before: Option<i64>,
    ) -> StoreResult<Vec<OperationRow>>;
    /// Records the start of step `idx` (and sets `current_step`).
    async fn start_step(
        &mut self,
        operation_id: &str,
        idx: i64,
        name: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Records the end of step `idx`.
    async fn finish_step(
        &mut self,
        operation_id: &str,
        idx: i64,
        state: &str,
        output: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Inserts or replaces a backup catalog entry.
    async fn put_backup(&mut self, b: &BackupRow) -> StoreResult<()>;
    /// Backups still `running` (left behind by a killed process), locked.
    async fn running_backups(&mut self) -> StoreResult<Vec<BackupRow>>;
    /// Appends an audit event to the hash chain (locks the chain head until commit).
    async fn append_audit(&mut self, e: &NewAudit, now: i64) -> StoreResult<AuditRecord>;
    /// Puts a message in the outbox.
    async fn enqueue_outbox(&mut self, m: &NewOutbox, now: i64) -> StoreResult<i64>;
    /// Puts an audit line (`seq` = the event it carries) or a chain head line (`seq` = None)
    /// in the outbox: behind cards in its lane, and sent in digests when several wait.
    async fn enqueue_audit_line(
        &mut self,
        m: &NewOutbox,
        seq: Option<i64>,
        now: i64,
    ) -> StoreResult<i64>;
    /// Records that card `card_key` is (to be) posted in `channel` of `platform`; false when it
    /// already was.
    async fn register_card(
        &mut self,
        card_key: &str,
        platform: &str,
        channel: &str,
    ) -> StoreResult<bool>;
    /// The channels card `card_key` was posted to: `(platform, channel)`.
    async fn card_channels(&mut self, card_key: &str) -> StoreResult<Vec<(String, String)>>;
    /// Inserts a monitoring window and its reminders.
    async fn insert_window(&mut self, w: &WindowRow, reminders: &[ReminderRow]) -> StoreResult<()>;
    /// Inserts a monitoring window and its reminders unless its environment has an open window
    /// (the partial unique index of migration 0009); false, and nothing inserted, when it has.
    /// On PostgreSQL it waits for a transaction that is inserting one to finish first.
    async fn insert_window_if_none_open(
        &mut self,
        w: &WindowRow,
        reminders: &[ReminderRow],
    ) -> StoreResult<bool>;
    /// Reads a monitoring window and locks it until commit (PostgreSQL `FOR UPDATE`).
    async fn lock_window(&mut self, id: &str) -> StoreResult<Option<WindowRow>>;
    /// The open windows of an environment, locked.
    async fn open_windows_for_env(&mut self, env: &str) -> StoreResult<Vec<WindowRow>>;
    /// Marks reminder `idx` of a window posted at `now` with its card, only if it was not
    /// posted yet (`WHERE posted_at IS NULL`); true for the one caller that wins.
    async fn mark_reminder_posted(
        &mut self,
        window_id: &str,
        idx: i64,
        now: i64,
        card_json: &str,
    ) -> StoreResult<bool>;
    /// Closes an open window; true when it was open.
    async fn close_window(
        &mut self,
        id: &str,
        now: i64,
        by: &str,
        reason: &str,
    ) -> StoreResult<bool>;
    /// Claims the next health probe of an open window: sets `last_probe_at = now` only when the
    /// last one is at least `gap_ms` old (or there was none). True for the one caller that wins.
    async fn claim_probe(&mut self, id: &str, now: i64, gap_ms: i64) -> StoreResult<bool>;
    /// Records a probe's outcome: counts it (and its failure), sets `last_probe_at` and
    /// `last_probe`, and moves `failing` to `failing_to` only if it was `failing_from`. True
    /// when `failing` moved (the caller then posts the failure or the recovery, once).
    async fn record_probe(
        &mut self,
        id: &str,
        now: i64,
        ok: bool,
        summary: &str,
        failing_from: i64,
        failing_to: i64,
    ) -> StoreResult<bool>;
    /// Takes the run of cron job `job` scheduled at `slot` for `holder`: true when this call
    /// created the row (then this process runs it), false when it was taken before (by another
    /// replica, or before a restart). `late` marks a run made up at start-up.
    async fn claim_run(
        &mut self,
        job: &str,
        slot: i64,
        holder: &str,
        late: bool,
        now: i64,
    ) -> StoreResult<bool>;
    /// Releases every lease that `owner` holds, named `owner` or `ROLE@owner` (see
    /// [`crate::core::context::Core::lease_holder`]), by deleting it: another process takes
    /// the job at once instead of waiting for the lease to expire. Returns how many went.
    async fn release_leases(&mut self, owner: &str) -> StoreResult<u64>;
    /// Records how a taken run ended.
    async fn finish_run(
        &mut self,
        job: &str,
        slot: i64,
        outcome: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Finishes an unfinished run as `outcome`; true when this call finished it (it was still
    /// unfinished), so only one process reports it.
    async fn interrupt_run(
        &mut self,
        job: &str,
        slot: i64,
        outcome: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Opens alert `name`; true when it was not open yet (post it), false when it already was.
    async fn raise_alert(&mut self, name: &str, detail: &str, now: i64) -> StoreResult<bool>;
    /// Closes alert `name`; true when it was open (post the resolution).
    async fn clear_alert(&mut self, name: &str) -> StoreResult<bool>;
    /// Inserts or replaces a restore drill.
    async fn put_drill(&mut self, d: &DrillRow) -> StoreResult<()>;
    /// Queues a rehearsal, marking the queued or running ones of its environment `superseded`
    /// (a running one sees it and stops); returns the ids superseded.
    async fn queue_rehearsal(&mut self, r: &RehearsalRow) -> StoreResult<Vec<String>>;
    /// Starts a queued rehearsal for `runner`; true when it was still queued.
    async fn start_rehearsal(&mut self, id: &str, runner: &str, now: i64) -> StoreResult<bool>;
    /// Finishes a running rehearsal as `state` (`passed`, `failed`, `error`) with its summary,
    /// outcome JSON and error; true when it was still running (not superseded meanwhile).
    async fn finish_rehearsal(
        &mut self,
        id: &str,
        end: &RehearsalEnd,
        now: i64,
    ) -> StoreResult<bool>;
    /// Whether a `passed` rehearsal of exactly the set `set_digest` exists in `env`.
    async fn passed_rehearsal(&mut self, env: &str, set_digest: &str) -> StoreResult<bool>;
    /// Marks the rehearsals of `env` still `running` as `error` with `reason` (a process that
    /// stopped left them) and returns them as they were.
    async fn interrupt_rehearsals(
        &mut self,
        env: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<RehearsalRow>>;
    /// Records a delivery key; false when it was seen before.
    async fn first_delivery(&mut self, key: &str, now: i64) -> StoreResult<bool>;
    /// Commits.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}
