//! The rows the store port reads and writes.

use serde::{Deserialize, Serialize};

use crate::core::approval::RequestState;
use crate::core::operation::OperationState;

/// An approval request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRow {
    pub id: String,
    pub env: String,
    /// JSON of [`crate::core::operation::OperationKind`].
    pub kind_json: String,
    /// JSON of [`crate::core::operation::Plan`].
    pub plan_json: String,
    pub fingerprint: String,
    /// Operator id of the requester.
    pub requester: String,
    /// `platform:account` the request came from.
    pub requester_account: String,
    /// Stored as its name: `pending`, `approved`, `denied`, `cancelled`, `expired`.
    pub state: RequestState,
    pub required_votes: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    /// JSON of the [`crate::core::event::ChannelRef`] the request was made in.
    pub channel_json: String,
    /// JSON of the [`crate::core::event::MessageRef`] of its card, written by versions before
    /// card keys (`card_messages`); read only to edit such old cards.
    pub message_json: Option<String>,
}

/// A vote as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRow {
    pub request_id: String,
    pub voter: String,
    pub account: String,
    pub decision: String,
    pub at: i64,
}

/// An operation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    pub id: String,
    pub request_id: Option<String>,
    pub env: String,
    pub kind_json: String,
    pub plan_json: String,
    pub fingerprint: String,
    pub requester: String,
    /// Stored as its name ([`OperationState::as_str`]).
    pub state: OperationState,
    pub current_step: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub error: Option<String>,
    pub channel_json: String,
    pub message_json: Option<String>,
}

impl OperationRow {
    /// A queued operation for the plan recorded in `req`. With `linked` it is the operation the
    /// approved request became (and shows its progress on the request's card); without, `req`
    /// is only the draft of a kind that needs no approval and is never stored.
    pub fn queued(req: &RequestRow, linked: bool, now: i64) -> OperationRow {
        OperationRow {
            id: crate::core::human::new_id('o'),
            request_id: linked.then(|| req.id.clone()),
            env: req.env.clone(),
            kind_json: req.kind_json.clone(),
            plan_json: req.plan_json.clone(),
            fingerprint: req.fingerprint.clone(),
            requester: req.requester.clone(),
            state: OperationState::Queued,
            current_step: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            heartbeat_at: None,
            error: None,
            channel_json: req.channel_json.clone(),
            message_json: if linked {
                req.message_json.clone()
            } else {
                None
            },
        }
    }
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub operation_id: String,
    pub idx: i64,
    pub name: String,
    /// `running`, `succeeded`, `failed`.
    pub state: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub output: Option<String>,
}

/// A message waiting for (or done with) delivery to chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub platform: String,
    pub channel: String,
    /// `post` or `edit`.
    pub op: String,
    /// For `edit`: the message to edit.
    pub message_id: Option<String>,
    /// JSON of [`crate::core::reply::Reply`].
    pub payload: String,
    /// The card this row posts or edits (`request:<id>`), when it is a card.
    pub card_key: Option<String>,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    /// Delivery order inside a lane (a channel): 0 cards, their edits and ephemeral answers;
    /// 1 other messages; 2 audit lines and reports. See [`OutboxKind`].
    pub priority: i64,
    /// What the row is, as [`OutboxKind::as_str`] names it.
    pub kind: String,
    /// For an audit line: the event it carries (`None` for a chain head line).
    pub audit_seq: Option<i64>,
    /// The row whose message carried this one (a digest of audit lines carries several).
    pub carried_by: Option<i64>,
    /// The platform's id of that message.
    pub carrier_message: Option<String>,
}

/// What an outbox row is; it sets the row's priority in its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A card, or an edit of one.
    Card,
    /// An answer only one person sees.
    Ephemeral,
    /// Any other message (alerts, notices).
    Text,
    /// A report (status, scheduled reports).
    Report,
    /// An audit line or a chain head line.
    Audit,
}

impl OutboxKind {
    /// The name stored in `outbox.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Card => "card",
            OutboxKind::Ephemeral => "ephemeral",
            OutboxKind::Text => "text",
            OutboxKind::Report => "report",
            OutboxKind::Audit => "audit",
        }
    }

    /// Order inside a lane: lower goes first.
    pub fn priority(self) -> i64 {
        match self {
            OutboxKind::Card | OutboxKind::Ephemeral => 0,
            OutboxKind::Text => 1,
            OutboxKind::Report | OutboxKind::Audit => 2,
        }
    }
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    pub platform: String,
    pub channel: String,
    pub op: String,
    pub message_id: Option<String>,
    pub payload: String,
    /// The card this row posts or edits; see [`OutboxRow::card_key`].
    pub card_key: Option<String>,
}

impl NewOutbox {
    /// The kind of a message that is not an audit line (those are queued through
    /// [`Tx::enqueue_audit_line`](crate::core::ports::Tx::enqueue_audit_line)): a card by its key, else by the reply it carries.
    pub fn kind(&self) -> OutboxKind {
        use crate::core::reply::{Body, Reply, Visibility};
        if self.card_key.is_some() {
            return OutboxKind::Card;
        }
        match serde_json::from_str::<Reply>(&self.payload) {
            Ok(r) if r.visibility == Visibility::Ephemeral => OutboxKind::Ephemeral,
            Ok(Reply {
                body: Body::Report(_),
                ..
            }) => OutboxKind::Report,
            _ => OutboxKind::Text,
        }
    }
}

/// A backup catalog entry (SPEC section 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRow {
    /// `b` + 9 hex digits.
    pub id: String,
    pub env: String,
    /// `scheduled`, `manual`, `pre-deploy`, `pre-rollback`, `pre-restore`.
    pub kind: String,
    /// `running`, `ok`, `failed`.
    pub state: String,
    /// Final file path.
    pub path: String,
    pub database_name: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    /// Operator id, or `schedule`.
    pub requested_by: Option<String>,
    pub note: Option<String>,
    /// JSON array of the migrations applied when the backup was taken.
    pub migrations_json: String,
    pub verified_at: Option<i64>,
    pub verify_error: Option<String>,
    pub toc_entries: Option<i64>,
    pub operation_id: Option<String>,
    pub error: Option<String>,
    pub deleted_at: Option<i64>,
    /// The file's modification time (ms) when it was verified.
    pub file_mtime_ms: Option<i64>,
    /// The target's write counters just before the dump started (`WriteStats` of `dbops::stats`
    /// as JSON); `None` when they could not be read, and for backups from before they were recorded.
    pub write_stats_json: Option<String>,
}

/// A monitoring window (SPEC section 7): opened after a deploy, rollback, restore or emergency,
/// or by hand with `monitor`; closed by its last reminder, by `monitor-ok`, or by a newer window
/// of the same environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    /// `w` + 9 hex digits.
    pub id: String,
    pub env: String,
    pub opened_at: i64,
    /// Operator id, or `system` for a window the worker opened.
    pub opened_by: String,
    /// The operation that made the change, if any.
    pub operation_id: Option<String>,
    /// What changed: `deploy`, `rollback`, `restore`, `emergency`, or `manual`.
    pub kind: String,
    /// JSON array of the migrations the change applied or un-applied.
    pub migrations_json: String,
    /// The migration `monitor-rollback` asks to roll back (none after a rollback or restore).
    pub rollback_target: Option<String>,
    /// JSON of the [`crate::core::event::ChannelRef`] the change was asked for in.
    pub channel_json: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    pub closed_at: Option<i64>,
    /// Operator id, or `system`.
    pub closed_by: Option<String>,
    /// Why it closed (`ok`, `last reminder`, `superseded by w...`).
    pub close_reason: Option<String>,
    /// Health probes recorded, and how many of them failed.
    pub probes: i64,
    pub probe_failures: i64,
    /// When the last probe was claimed or recorded.
    pub last_probe_at: Option<i64>,
    /// The last probe's outcome as shown on cards.
    pub last_probe: Option<String>,
    /// 1 while the probes fail (a failing streak), 0 otherwise.
    pub failing: i64,
}

/// One reminder of a monitoring window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRow {
    pub window_id: String,
    /// 0-based; the last one closes the window.
    pub idx: i64,
    pub due_at: i64,
    /// Set once, by the process that posted it.
    pub posted_at: Option<i64>,
    /// JSON of the posted card ([`crate::core::reply::Reply`]), for edits after a click.
    pub card_json: Option<String>,
}

/// A restore drill (SPEC section 7): a backup restored into a scratch database and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRow {
    /// `d` + 9 hex digits.
    pub id: String,
    /// The backup restored.
    pub backup_id: String,
    pub env: String,
    /// `running`, `ok`, `failed`.
    pub state: String,
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    /// How long the restore itself took.
    pub restore_ms: Option<i64>,
    /// JSON of `DrillOutcome` (of `dbops::backup`) (migrations found, largest tables).
    pub details_json: Option<String>,
    pub error: Option<String>,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// (state, count) of approval requests.
    pub requests: Vec<(String, i64)>,
    /// (state, count) of operations.
    pub operations: Vec<(String, i64)>,
    /// (platform, count) of undelivered outbox messages.
    pub outbox_pending: Vec<(String, i64)>,
    /// (env, state, count) of catalog entries not deleted.
    pub backups: Vec<(String, String, i64)>,
    /// Sequence number of the newest audit event.
    pub audit_seq: i64,
    /// Outbox lanes with messages waiting to be sent (not given up after a permanent failure):
    /// (platform, channel, count, `created_at` of the oldest).
    pub lanes: Vec<(String, String, i64, i64)>,
    /// (env, count) of open monitoring windows.
    pub open_windows: Vec<(String, i64)>,
}

/// A rehearsal (issue 22): a deploy's pending migrations applied to a restored copy of the
/// newest verified backup, queued by a deploy request (`[deploy] rehearsal = "auto"`) or by
/// `rehearse [ENV]`, and run off the interaction path by the rehearsal runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RehearsalRow {
    /// `h` + 9 hex digits.
    pub id: String,
    pub env: String,
    /// The deploy request that queued it; `None` for `rehearse [ENV]`.
    pub request_id: Option<String>,
    /// SHA-256 (hex) over the pinned (migration, checksum) pairs, in order.
    pub set_digest: String,
    /// JSON list of `[migration, checksum]` pairs, as the engine takes them.
    pub pinned_json: String,
    /// `queued`, `running`, `passed`, `failed`, `superseded`, `error`.
    pub state: String,
    /// The operator who asked (the requester of the deploy).
    pub requested_by: String,
    /// Where `rehearse` was asked (JSON `ChannelRef`): the result is posted there.
    pub channel_json: Option<String>,
    /// The lease holder of the runner that runs it.
    pub runner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The one-line result, rendered by the engine when it finished.
    pub summary: Option<String>,
    /// JSON of the engine's outcome (per-migration durations, rewrites, locks, errors).
    pub outcome_json: Option<String>,
    /// Why it could not run (state `error`), or the failing migration's error.
    pub error: Option<String>,
}

impl RehearsalRow {
    /// The pinned `(migration, checksum)` pairs.
    pub fn pinned(&self) -> Vec<(String, String)> {
        serde_json::from_str(&self.pinned_json).unwrap_or_default()
    }

    /// Whether it is still to run or running.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running")
    }
}

/// How a rehearsal ended, as [`crate::core::ports::Tx::finish_rehearsal`] records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RehearsalEnd {
    /// `passed`, `failed` or `error`.
    pub state: String,
    pub summary: Option<String>,
    pub outcome_json: Option<String>,
    pub error: Option<String>,
}
