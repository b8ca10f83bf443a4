//! The two store backends, generated from one macro so both run the same SQL.
//!
//! Differences, and why:
//! - **Write serialization.** SQLite has one writer; every transaction takes a process-wide
//!   async mutex and starts with `BEGIN IMMEDIATE`, so two transactions never deadlock on a lock
//!   upgrade. Other processes (`dualkey audit verify`) wait on `busy_timeout`.
//!   PostgreSQL runs READ COMMITTED and serializes what matters with row locks: `FOR UPDATE` on
//!   the request being voted on and on the audit chain head.
//! - **Migrations** live in `migrations/sqlite` and `migrations/postgres`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::*;
use crate::core::approval::RequestState;
use crate::core::audit::{chain_hash, redact_json};
use crate::core::operation::{OperationState, UnknownState};

const REQUEST_COLS: &str = "id, env, kind_json, plan_json, fingerprint, requester, requester_account, state, required_votes, created_at, expires_at, decided_at, decided_by, channel_json, message_json";
const OPERATION_COLS: &str = "id, request_id, env, kind_json, plan_json, fingerprint, requester, state, current_step, created_at, started_at, finished_at, worker, heartbeat_at, error, channel_json, message_json";
const AUDIT_COLS: &str = "seq, at, operator, account, env, action, details, prev_hash, hash";
const BACKUP_COLS: &str = "id, env, kind, state, path, database_name, size_bytes, sha256, started_at, duration_ms, requested_by, note, migrations_json, verified_at, verify_error, toc_entries, operation_id, error, deleted_at, file_mtime_ms, write_stats_json";
const WINDOW_COLS: &str = "id, env, opened_at, opened_by, operation_id, kind, migrations_json, rollback_target, channel_json, state, closed_at, closed_by, close_reason, probes, probe_failures, last_probe_at, last_probe, failing";
const REMINDER_COLS: &str = "window_id, idx, due_at, posted_at, card_json";
const DRILL_COLS: &str =
    "id, backup_id, env, state, started_at, duration_ms, restore_ms, details_json, error";
const OUTBOX_COLS: &str = "id, platform, channel, op, message_id, payload, card_key, created_at, attempts, next_attempt_at, delivered_at, last_error, priority, kind, audit_seq, carried_by, carrier_message";

macro_rules! sql_store {
    ($store:ident, $tx:ident, $db:ty, $backend:expr, $for_update:expr) => {
        /// The `state` column of a request or operation row, parsed once here. A name this
        /// version does not know (a row written by a newer replica during a rolling upgrade, or
        /// edited by hand) reads as `fallback`, a closed state, with a warning naming the row: as
        /// before the rows were typed, nobody can vote on such a request and its card shows
        /// failed, while listing requests and operations keeps working.
        fn typed_state<S: FromStr<Err = UnknownState>>(
            r: &<$db as sqlx::Database>::Row,
            fallback: S,
        ) -> StoreResult<S> {
            let text: String = r.try_get("state")?;
            Ok(text.parse().unwrap_or_else(|e: UnknownState| {
                let id: String = r.try_get("id").unwrap_or_default();
                tracing::warn!(row = %id, "{} {id} is in an {e}; read as closed", e.what);
                fallback
            }))
        }

        fn request_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<RequestRow> {
            Ok(RequestRow {
                id: r.try_get("id")?,
                env: r.try_get("env")?,
                kind_json: r.try_get("kind_json")?,
                plan_json: r.try_get("plan_json")?,
                fingerprint: r.try_get("fingerprint")?,
                requester: r.try_get("requester")?,
                requester_account: r.try_get("requester_account")?,
                state: typed_state(r, RequestState::Cancelled)?,
                required_votes: r.try_get("required_votes")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                decided_at: r.try_get("decided_at")?,
                decided_by: r.try_get("decided_by")?,
                channel_json: r.try_get("channel_json")?,
                message_json: r.try_get("message_json")?,
            })
        }

        fn operation_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<OperationRow> {
            Ok(OperationRow {
                id: r.try_get("id")?,
                request_id: r.try_get("request_id")?,
                env: r.try_get("env")?,
                kind_json: r.try_get("kind_json")?,
                plan_json: r.try_get("plan_json")?,
                fingerprint: r.try_get("fingerprint")?,
                requester: r.try_get("requester")?,
                state: typed_state(r, OperationState::Failed)?,
                current_step: r.try_get("current_step")?,
                created_at: r.try_get("created_at")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                worker: r.try_get("worker")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
                error: r.try_get("error")?,
                channel_json: r.try_get("channel_json")?,
                message_json: r.try_get("message_json")?,
            })
        }

        fn audit_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<AuditRecord> {
            Ok(AuditRecord {
                seq: r.try_get("seq")?,
                at_ms: r.try_get("at")?,
                operator: r.try_get("operator")?,
                account: r.try_get("account")?,
                env: r.try_get("env")?,
                action: r.try_get("action")?,
                details: r.try_get("details")?,
                prev_hash: r.try_get("prev_hash")?,
                hash: r.try_get("hash")?,
            })
        }

        fn outbox_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<OutboxRow> {
            Ok(OutboxRow {
                id: r.try_get("id")?,
                platform: r.try_get("platform")?,
                channel: r.try_get("channel")?,
                op: r.try_get("op")?,
                message_id: r.try_get("message_id")?,
                payload: r.try_get("payload")?,
                card_key: r.try_get("card_key")?,
                created_at: r.try_get("created_at")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                delivered_at: r.try_get("delivered_at")?,
                last_error: r.try_get("last_error")?,
                priority: r.try_get("priority")?,
                kind: r.try_get("kind")?,
                audit_seq: r.try_get("audit_seq")?,
                carried_by: r.try_get("carried_by")?,
                carrier_message: r.try_get("carrier_message")?,
            })
        }

        fn backup_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<BackupRow> {
            Ok(BackupRow {
                id: r.try_get("id")?,
                env: r.try_get("env")?,
                kind: r.try_get("kind")?,
                state: r.try_get("state")?,
                path: r.try_get("path")?,
                database_name: r.try_get("database_name")?,
                size_bytes: r.try_get("size_bytes")?,
                sha256: r.try_get("sha256")?,
                started_at: r.try_get("started_at")?,
                duration_ms: r.try_get("duration_ms")?,
                requested_by: r.try_get("requested_by")?,
                note: r.try_get("note")?,
                migrations_json: r.try_get("migrations_json")?,
                verified_at: r.try_get("verified_at")?,
                verify_error: r.try_get("verify_error")?,
                toc_entries: r.try_get("toc_entries")?,
                operation_id: r.try_get("operation_id")?,
                error: r.try_get("error")?,
                deleted_at: r.try_get("deleted_at")?,
                file_mtime_ms: r.try_get("file_mtime_ms")?,
                write_stats_json: r.try_get("write_stats_json")?,
            })
        }

        fn window_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<WindowRow> {
            Ok(WindowRow {
                id: r.try_get("id")?,
                env: r.try_get("env")?,
                opened_at: r.try_get("opened_at")?,
                opened_by: r.try_get("opened_by")?,
                operation_id: r.try_get("operation_id")?,
                kind: r.try_get("kind")?,
                migrations_json: r.try_get("migrations_json")?,
                rollback_target: r.try_get("rollback_target")?,
                channel_json: r.try_get("channel_json")?,
                state: r.try_get("state")?,
                closed_at: r.try_get("closed_at")?,
                closed_by: r.try_get("closed_by")?,
                close_reason: r.try_get("close_reason")?,
                probes: r.try_get("probes")?,
                probe_failures: r.try_get("probe_failures")?,
                last_probe_at: r.try_get("last_probe_at")?,
                last_probe: r.try_get("last_probe")?,
                failing: r.try_get("failing")?,
            })
        }

        fn reminder_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<ReminderRow> {
            Ok(ReminderRow {
                window_id: r.try_get("window_id")?,
                idx: r.try_get("idx")?,
                due_at: r.try_get("due_at")?,
                posted_at: r.try_get("posted_at")?,
                card_json: r.try_get("card_json")?,
            })
        }

        fn drill_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<DrillRow> {
            Ok(DrillRow {
                id: r.try_get("id")?,
                backup_id: r.try_get("backup_id")?,
                env: r.try_get("env")?,
                state: r.try_get("state")?,
                started_at: r.try_get("started_at")?,
                duration_ms: r.try_get("duration_ms")?,
                restore_ms: r.try_get("restore_ms")?,
                details_json: r.try_get("details_json")?,
                error: r.try_get("error")?,
            })
        }

        fn step_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<StepRow> {
            Ok(StepRow {
                operation_id: r.try_get("operation_id")?,
                idx: r.try_get("idx")?,
                name: r.try_get("name")?,
                state: r.try_get("state")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                output: r.try_get("output")?,
            })
        }

        /// A write transaction on this backend.
        pub struct $tx {
            tx: sqlx::Transaction<'static, $db>,
            _write_lock: Option<OwnedMutexGuard<()>>,
            /// The newest audit event appended here whose seq is a multiple of
            /// `HEAD_LOG_EVERY`: logged as the chain head once the transaction commits (a
            /// rolled-back event must never be logged as a head).
            head_to_log: Option<(i64, String)>,
        }

        impl $tx {
            async fn insert_outbox(&mut self, m: &NewOutbox, kind: OutboxKind, seq: Option<i64>, now: i64) -> StoreResult<i64> {
                let r = sqlx::query("INSERT INTO outbox (platform, channel, op, message_id, payload, created_at, next_attempt_at, card_key, priority, kind, audit_seq) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10) RETURNING id")
                    .bind(&m.platform)
                    .bind(&m.channel)
                    .bind(&m.op)
                    .bind(&m.message_id)
                    .bind(&m.payload)
                    .bind(now)
                    .bind(&m.card_key)
                    .bind(kind.priority())
                    .bind(kind.as_str())
                    .bind(seq)
                    .fetch_one(&mut *self.tx)
                    .await?;
                Ok(r.try_get("id")?)
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
                let (tx, guard) = self.begin_tx().await?;
                Ok(Box::new($tx {
                    tx,
                    _write_lock: guard,
                    head_to_log: None,
                }))
            }

            async fn get_request(&self, id: &str) -> StoreResult<Option<RequestRow>> {
                let q = format!("SELECT {REQUEST_COLS} FROM requests WHERE id = $1");
                let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(request_row).transpose()
            }

            async fn list_requests(&self, state: Option<RequestState>, limit: i64) -> StoreResult<Vec<RequestRow>> {
                let q = format!("SELECT {REQUEST_COLS} FROM requests WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC, id DESC LIMIT $2");
                let rows = sqlx::query(&q).bind(state.map(RequestState::as_str)).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(request_row).collect()
            }

            async fn votes(&self, request_id: &str) -> StoreResult<Vec<VoteRow>> {
                let rows = sqlx::query("SELECT request_id, voter, account, decision, at FROM votes WHERE request_id = $1 ORDER BY at, voter")
                    .bind(request_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(VoteRow {
                            request_id: r.try_get("request_id")?,
                            voter: r.try_get("voter")?,
                            account: r.try_get("account")?,
                            decision: r.try_get("decision")?,
                            at: r.try_get("at")?,
                        })
                    })
                    .collect()
            }

            async fn get_operation(&self, id: &str) -> StoreResult<Option<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations WHERE id = $1");
                let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(operation_row).transpose()
            }

            async fn operation_for_request(&self, request_id: &str) -> StoreResult<Option<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations WHERE request_id = $1");
                let row = sqlx::query(&q).bind(request_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(operation_row).transpose()
            }

            async fn active_operations(&self) -> StoreResult<Vec<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations WHERE state IN ('queued', 'running') ORDER BY created_at, id");
                let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
                rows.iter().map(operation_row).collect()
            }

            async fn recent_operations(&self, limit: i64) -> StoreResult<Vec<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations ORDER BY created_at DESC, id DESC LIMIT $1");
                let rows = sqlx::query(&q).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(operation_row).collect()
            }

            async fn steps(&self, operation_id: &str) -> StoreResult<Vec<StepRow>> {
                let rows = sqlx::query("SELECT operation_id, idx, name, state, started_at, finished_at, output FROM operation_steps WHERE operation_id = $1 ORDER BY idx")
                    .bind(operation_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(step_row).collect()
            }

            async fn audit_tail(&self, n: i64) -> StoreResult<Vec<AuditRecord>> {
                let q = format!("SELECT {AUDIT_COLS} FROM audit_events ORDER BY seq DESC LIMIT $1");
                let rows = sqlx::query(&q).bind(n).fetch_all(&self.pool).await?;
                let mut v: Vec<AuditRecord> = rows.iter().map(audit_row).collect::<StoreResult<_>>()?;
                v.reverse();
                Ok(v)
            }

            async fn audit_page(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditRecord>> {
                let q = format!("SELECT {AUDIT_COLS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2");
                let rows = sqlx::query(&q).bind(after).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(audit_row).collect()
            }

            async fn audit_head(&self) -> StoreResult<(i64, String)> {
                let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
                Ok((r.try_get("seq")?, r.try_get("hash")?))
            }

            async fn outbox_due(&self, platform: &str, now: i64, limit: i64) -> StoreResult<Vec<OutboxRow>> {
                // In order per channel: a row waits while an earlier row of its channel waits for a
                // retry. Dead letters (next_attempt_at = i64::MAX) do not block their channel.
                let q = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox o WHERE o.platform = $1 AND o.delivered_at IS NULL AND o.next_attempt_at <= $2 \
                     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.platform = o.platform AND p.channel = o.channel \
                       AND p.delivered_at IS NULL AND p.id < o.id AND p.next_attempt_at > $2 AND p.next_attempt_at < $4) \
                     ORDER BY o.id LIMIT $3"
                );
                let rows = sqlx::query(&q).bind(platform).bind(now).bind(limit).bind(i64::MAX).fetch_all(&self.pool).await?;
                rows.iter().map(outbox_row).collect()
            }

            async fn outbox_lanes(&self, platform: &str, now: i64) -> StoreResult<Vec<String>> {
                let rows = sqlx::query("SELECT DISTINCT channel FROM outbox WHERE platform = $1 AND delivered_at IS NULL AND next_attempt_at <= $2 ORDER BY channel")
                    .bind(platform).bind(now).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(r.try_get("channel")?)).collect()
            }

            async fn outbox_lane(&self, platform: &str, channel: &str, limit: i64) -> StoreResult<Vec<OutboxRow>> {
                let q = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE platform = $1 AND channel = $2 AND delivered_at IS NULL \
                     AND next_attempt_at < $3 ORDER BY priority, id LIMIT $4"
                );
                let rows = sqlx::query(&q).bind(platform).bind(channel).bind(i64::MAX).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(outbox_row).collect()
            }

            async fn outbox_hold_lane(&self, platform: &str, channel: &str, until: i64) -> StoreResult<()> {
                sqlx::query("UPDATE outbox SET next_attempt_at = $3 WHERE platform = $1 AND channel = $2 AND delivered_at IS NULL AND next_attempt_at < $3")
                    .bind(platform).bind(channel).bind(until)
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn outbox_carried(&self, ids: &[i64], carrier: i64, message_id: Option<&str>, now: i64) -> StoreResult<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 4)).collect();
                let q = format!(
                    "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, carried_by = $2, carrier_message = $3 WHERE delivered_at IS NULL AND id IN ({})",
                    marks.join(", ")
                );
                let mut query = sqlx::query(&q).bind(now).bind(carrier).bind(message_id);
                for id in ids {
                    query = query.bind(*id);
                }
                query.execute(&self.pool).await?;
                Ok(())
            }

            async fn set_card_post_error(&self, card_key: &str, platform: &str, channel: &str, error: &str) -> StoreResult<()> {
                sqlx::query("UPDATE card_messages SET post_error = $4 WHERE card_key = $1 AND platform = $2 AND channel = $3")
                    .bind(card_key).bind(platform).bind(channel).bind(error)
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn card_post_error(&self, card_key: &str, platform: &str, channel: &str) -> StoreResult<Option<String>> {
                let r = sqlx::query("SELECT post_error FROM card_messages WHERE card_key = $1 AND platform = $2 AND channel = $3 AND message_id IS NULL")
                    .bind(card_key).bind(platform).bind(channel)
                    .fetch_optional(&self.pool).await?;
                Ok(match r {
                    Some(r) => r.try_get("post_error")?,
                    None => None,
                })
            }

            async fn outbox_all(&self, platform: &str) -> StoreResult<Vec<OutboxRow>> {
                let q = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE platform = $1 ORDER BY id");
                let rows = sqlx::query(&q).bind(platform).fetch_all(&self.pool).await?;
                rows.iter().map(outbox_row).collect()
            }

            async fn outbox_delivered(&self, id: i64, now: i64) -> StoreResult<()> {
                sqlx::query("UPDATE outbox SET delivered_at = $2, attempts = attempts + 1 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn outbox_edit_superseded(&self, row: &OutboxRow) -> StoreResult<bool> {
                let Some(key) = &row.card_key else { return Ok(false) };
                let r = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE card_key = $1 AND platform = $2 AND channel = $3 AND op = 'edit' AND delivered_at IS NULL AND id > $4")
                    .bind(key).bind(&row.platform).bind(&row.channel).bind(row.id)
                    .fetch_one(&self.pool).await?;
                let n: i64 = r.try_get("n")?;
                Ok(n > 0)
            }

            async fn card_messages(&self, card_key: &str) -> StoreResult<Vec<(String, String, Option<String>)>> {
                let rows = sqlx::query("SELECT platform, channel, message_id FROM card_messages WHERE card_key = $1 ORDER BY platform, channel")
                    .bind(card_key).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok((r.try_get("platform")?, r.try_get("channel")?, r.try_get("message_id")?))).collect()
            }

            async fn set_card_message(&self, card_key: &str, platform: &str, channel: &str, message_id: &str) -> StoreResult<()> {
                sqlx::query("UPDATE card_messages SET message_id = $4 WHERE card_key = $1 AND platform = $2 AND channel = $3")
                    .bind(card_key).bind(platform).bind(channel).bind(message_id)
                    .execute(&self.pool).await?;
                Ok(())
            }

            async fn outbox_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> StoreResult<()> {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1")
                    .bind(id)
                    .bind(next_attempt_at)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_backup(&self, id: &str) -> StoreResult<Option<BackupRow>> {
                let q = format!("SELECT {BACKUP_COLS} FROM backups WHERE id = $1");
                let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(backup_row).transpose()
            }

            async fn list_backups(&self, env: &str) -> StoreResult<Vec<BackupRow>> {
                let q = format!("SELECT {BACKUP_COLS} FROM backups WHERE env = $1 ORDER BY started_at DESC, id DESC");
                let rows = sqlx::query(&q).bind(env).fetch_all(&self.pool).await?;
                rows.iter().map(backup_row).collect()
            }

            async fn refresh_backup_mtime(&self, id: &str, expected_sha256: &str, file_mtime_ms: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE backups SET file_mtime_ms = $3 WHERE id = $1 AND sha256 = $2 AND deleted_at IS NULL AND state = 'ok'")
                    .bind(id)
                    .bind(expected_sha256)
                    .bind(file_mtime_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn gauges(&self) -> StoreResult<Gauges> {
                let pairs = |rows: Vec<<$db as sqlx::Database>::Row>| -> StoreResult<Vec<(String, i64)>> {
                    rows.iter().map(|r| Ok((r.try_get("k")?, r.try_get("n")?))).collect()
                };
                let requests = pairs(sqlx::query("SELECT state AS k, COUNT(*) AS n FROM requests GROUP BY state ORDER BY state").fetch_all(&self.pool).await?)?;
                let operations = pairs(sqlx::query("SELECT state AS k, COUNT(*) AS n FROM operations GROUP BY state ORDER BY state").fetch_all(&self.pool).await?)?;
                let outbox_pending = pairs(sqlx::query("SELECT platform AS k, COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL GROUP BY platform ORDER BY platform").fetch_all(&self.pool).await?)?;
                let rows = sqlx::query("SELECT env, state, COUNT(*) AS n FROM backups WHERE deleted_at IS NULL GROUP BY env, state ORDER BY env, state").fetch_all(&self.pool).await?;
                let backups = rows.iter().map(|r| Ok((r.try_get("env")?, r.try_get("state")?, r.try_get("n")?))).collect::<StoreResult<_>>()?;
                let (audit_seq, _) = self.audit_head().await?;
                // Rows given up after a permanent failure wait at i64::MAX: not in a lane's depth.
                let rows = sqlx::query("SELECT platform, channel, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE delivered_at IS NULL AND next_attempt_at < $1 GROUP BY platform, channel ORDER BY platform, channel")
                    .bind(i64::MAX)
                    .fetch_all(&self.pool)
                    .await?;
                let lanes = rows.iter().map(|r| Ok((r.try_get("platform")?, r.try_get("channel")?, r.try_get("n")?, r.try_get("oldest")?))).collect::<StoreResult<_>>()?;
                let open_windows = pairs(sqlx::query("SELECT env AS k, COUNT(*) AS n FROM monitor_windows WHERE state = 'open' GROUP BY env ORDER BY env").fetch_all(&self.pool).await?)?;
                Ok(Gauges { requests, operations, outbox_pending, backups, audit_seq, lanes, open_windows })
            }

            async fn prune(&self, dedupe_before: i64, outbox_before: i64) -> StoreResult<u64> {
                let a = sqlx::query("DELETE FROM dedupe WHERE at < $1").bind(dedupe_before).execute(&self.pool).await?;
                let b = sqlx::query("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
                    .bind(outbox_before)
                    .execute(&self.pool)
                    .await?;
                Ok(a.rows_affected() + b.rows_affected())
            }

            async fn try_lease(&self, name: &str, holder: &str, now: i64, ttl_ms: i64) -> StoreResult<bool> {
                // One statement: insert a free lease, or take it over when it is ours or expired.
                let res = sqlx::query(
                    "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                     WHERE leases.holder = excluded.holder OR leases.until < $4",
                )
                .bind(name)
                .bind(holder)
                .bind(now + ttl_ms)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn last_run(&self, job: &str) -> StoreResult<Option<i64>> {
                let row = sqlx::query("SELECT MAX(slot) AS slot FROM schedule_runs WHERE job = $1")
                    .bind(job)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get::<Option<i64>, _>("slot")?)
            }

            async fn alert_since(&self, name: &str) -> StoreResult<Option<i64>> {
                let row = sqlx::query("SELECT since FROM schedule_alerts WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(r) => Some(r.try_get::<i64, _>("since")?),
                    None => None,
                })
            }

            async fn unfinished_runs(&self) -> StoreResult<Vec<(String, i64, String, i64)>> {
                let rows = sqlx::query("SELECT job, slot, holder, started_at FROM schedule_runs WHERE finished_at IS NULL ORDER BY started_at, job")
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::new();
                for r in &rows {
                    out.push((r.try_get("job")?, r.try_get("slot")?, r.try_get("holder")?, r.try_get("started_at")?));
                }
                Ok(out)
            }

            async fn drills(&self, env: &str) -> StoreResult<Vec<DrillRow>> {
                let q = format!("SELECT {DRILL_COLS} FROM backup_drills WHERE env = $1 ORDER BY started_at DESC, id DESC");
                let rows = sqlx::query(&q).bind(env).fetch_all(&self.pool).await?;
                rows.iter().map(drill_row).collect()
            }

            async fn heartbeat(&self, operation_id: &str, worker: &str, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE operations SET heartbeat_at = $3 WHERE id = $1 AND worker = $2 AND state = 'running'")
                    .bind(operation_id)
                    .bind(worker)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn get_window(&self, id: &str) -> StoreResult<Option<WindowRow>> {
                let q = format!("SELECT {WINDOW_COLS} FROM monitor_windows WHERE id = $1");
                let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(window_row).transpose()
            }

            async fn open_windows(&self) -> StoreResult<Vec<WindowRow>> {
                let q = format!("SELECT {WINDOW_COLS} FROM monitor_windows WHERE state = 'open' ORDER BY opened_at, id");
                let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
                rows.iter().map(window_row).collect()
            }

            async fn reminders(&self, window_id: &str) -> StoreResult<Vec<ReminderRow>> {
                let q = format!("SELECT {REMINDER_COLS} FROM monitor_reminders WHERE window_id = $1 ORDER BY idx");
                let rows = sqlx::query(&q).bind(window_id).fetch_all(&self.pool).await?;
                rows.iter().map(reminder_row).collect()
            }

            async fn get_rehearsal(&self, id: &str) -> StoreResult<Option<RehearsalRow>> {
                rehearsal_sql::get(&self.pool, id).await
            }

            async fn latest_rehearsal(&self, env: &str, set_digest: &str) -> StoreResult<Option<RehearsalRow>> {
                rehearsal_sql::latest(&self.pool, env, set_digest).await
            }

            async fn rehearsals_in(&self, state: &str) -> StoreResult<Vec<RehearsalRow>> {
                rehearsal_sql::in_state(&self.pool, state).await
            }
        }

        #[async_trait]
        impl Tx for $tx {
            async fn insert_window(&mut self, w: &WindowRow, reminders: &[ReminderRow]) -> StoreResult<()> {
                let q = format!("INSERT INTO monitor_windows ({WINDOW_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)");
                sqlx::query(&q)
                    .bind(&w.id)
                    .bind(&w.env)
                    .bind(w.opened_at)
                    .bind(&w.opened_by)
                    .bind(&w.operation_id)
                    .bind(&w.kind)
                    .bind(&w.migrations_json)
                    .bind(&w.rollback_target)
                    .bind(&w.channel_json)
                    .bind(&w.state)
                    .bind(w.closed_at)
                    .bind(&w.closed_by)
                    .bind(&w.close_reason)
                    .bind(w.probes)
                    .bind(w.probe_failures)
                    .bind(w.last_probe_at)
                    .bind(&w.last_probe)
                    .bind(w.failing)
                    .execute(&mut *self.tx)
                    .await?;
                let q = format!("INSERT INTO monitor_reminders ({REMINDER_COLS}) VALUES ($1, $2, $3, $4, $5)");
                for r in reminders {
                    sqlx::query(&q)
                        .bind(&r.window_id)
                        .bind(r.idx)
                        .bind(r.due_at)
                        .bind(r.posted_at)
                        .bind(&r.card_json)
                        .execute(&mut *self.tx)
                        .await?;
                }
                Ok(())
            }

            async fn insert_window_if_none_open(&mut self, w: &WindowRow, reminders: &[ReminderRow]) -> StoreResult<bool> {
                let q = format!("INSERT INTO monitor_windows ({WINDOW_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT (env) WHERE state = 'open' DO NOTHING");
                let res = sqlx::query(&q)
                    .bind(&w.id)
                    .bind(&w.env)
                    .bind(w.opened_at)
                    .bind(&w.opened_by)
                    .bind(&w.operation_id)
                    .bind(&w.kind)
                    .bind(&w.migrations_json)
                    .bind(&w.rollback_target)
                    .bind(&w.channel_json)
                    .bind(&w.state)
                    .bind(w.closed_at)
                    .bind(&w.closed_by)
                    .bind(&w.close_reason)
                    .bind(w.probes)
                    .bind(w.probe_failures)
                    .bind(w.last_probe_at)
                    .bind(&w.last_probe)
                    .bind(w.failing)
                    .execute(&mut *self.tx)
                    .await?;
                if res.rows_affected() == 0 {
                    return Ok(false);
                }
                let q = format!("INSERT INTO monitor_reminders ({REMINDER_COLS}) VALUES ($1, $2, $3, $4, $5)");
                for r in reminders {
                    sqlx::query(&q)
                        .bind(&r.window_id)
                        .bind(r.idx)
                        .bind(r.due_at)
                        .bind(r.posted_at)
                        .bind(&r.card_json)
                        .execute(&mut *self.tx)
                        .await?;
                }
                Ok(true)
            }

            async fn lock_window(&mut self, id: &str) -> StoreResult<Option<WindowRow>> {
                let q = format!("SELECT {WINDOW_COLS} FROM monitor_windows WHERE id = $1{}", $for_update);
                let row = sqlx::query(&q).bind(id).fetch_optional(&mut *self.tx).await?;
                row.as_ref().map(window_row).transpose()
            }

            async fn open_windows_for_env(&mut self, env: &str) -> StoreResult<Vec<WindowRow>> {
                let q = format!("SELECT {WINDOW_COLS} FROM monitor_windows WHERE env = $1 AND state = 'open' ORDER BY opened_at, id{}", $for_update);
                let rows = sqlx::query(&q).bind(env).fetch_all(&mut *self.tx).await?;
                rows.iter().map(window_row).collect()
            }

            async fn mark_reminder_posted(&mut self, window_id: &str, idx: i64, now: i64, card_json: &str) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE monitor_reminders SET posted_at = $3, card_json = $4 WHERE window_id = $1 AND idx = $2 AND posted_at IS NULL")
                    .bind(window_id)
                    .bind(idx)
                    .bind(now)
                    .bind(card_json)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn close_window(&mut self, id: &str, now: i64, by: &str, reason: &str) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE monitor_windows SET state = 'closed', closed_at = $2, closed_by = $3, close_reason = $4 WHERE id = $1 AND state = 'open'")
                    .bind(id)
                    .bind(now)
                    .bind(by)
                    .bind(reason)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn claim_probe(&mut self, id: &str, now: i64, gap_ms: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE monitor_windows SET last_probe_at = $2 WHERE id = $1 AND state = 'open' AND (last_probe_at IS NULL OR last_probe_at <= $3)")
                    .bind(id)
                    .bind(now)
                    .bind(now - gap_ms)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn record_probe(&mut self, id: &str, now: i64, ok: bool, summary: &str, failing_from: i64, failing_to: i64) -> StoreResult<bool> {
                sqlx::query("UPDATE monitor_windows SET probes = probes + 1, probe_failures = probe_failures + $2, last_probe_at = $3, last_probe = $4 WHERE id = $1")
                    .bind(id)
                    .bind(if ok { 0i64 } else { 1i64 })
                    .bind(now)
                    .bind(summary)
                    .execute(&mut *self.tx)
                    .await?;
                if failing_from == failing_to {
                    return Ok(false);
                }
                let res = sqlx::query("UPDATE monitor_windows SET failing = $3 WHERE id = $1 AND failing = $2")
                    .bind(id)
                    .bind(failing_from)
                    .bind(failing_to)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn lock_request(&mut self, id: &str) -> StoreResult<Option<RequestRow>> {
                let q = format!("SELECT {REQUEST_COLS} FROM requests WHERE id = $1{}", $for_update);
                let row = sqlx::query(&q).bind(id).fetch_optional(&mut *self.tx).await?;
                row.as_ref().map(request_row).transpose()
            }

            async fn insert_request(&mut self, r: &RequestRow) -> StoreResult<()> {
                let q = format!("INSERT INTO requests ({REQUEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)");
                sqlx::query(&q)
                    .bind(&r.id)
                    .bind(&r.env)
                    .bind(&r.kind_json)
                    .bind(&r.plan_json)
                    .bind(&r.fingerprint)
                    .bind(&r.requester)
                    .bind(&r.requester_account)
                    .bind(r.state.as_str())
                    .bind(r.required_votes)
                    .bind(r.created_at)
                    .bind(r.expires_at)
                    .bind(r.decided_at)
                    .bind(&r.decided_by)
                    .bind(&r.channel_json)
                    .bind(&r.message_json)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn insert_vote_if_open(&mut self, v: &VoteRow, now: i64) -> StoreResult<bool> {
                // The two-person rule in SQL: only a pending, unexpired request, only a voter who
                // is not the requester, only once per voter.
                let res = sqlx::query(
                    "INSERT INTO votes (request_id, voter, account, decision, at) \
                     SELECT r.id, $2, $3, $4, $5 FROM requests r \
                     WHERE r.id = $1 AND r.state = 'pending' AND r.expires_at > $5 AND r.requester <> $2 \
                     ON CONFLICT (request_id, voter) DO NOTHING",
                )
                .bind(&v.request_id)
                .bind(&v.voter)
                .bind(&v.account)
                .bind(&v.decision)
                .bind(now)
                .execute(&mut *self.tx)
                .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn has_voted(&mut self, request_id: &str, voter: &str) -> StoreResult<bool> {
                let r = sqlx::query("SELECT COUNT(*) AS n FROM votes WHERE request_id = $1 AND voter = $2")
                    .bind(request_id)
                    .bind(voter)
                    .fetch_one(&mut *self.tx)
                    .await?;
                Ok(r.try_get::<i64, _>("n")? > 0)
            }

            async fn count_votes(&mut self, request_id: &str, decision: &str) -> StoreResult<i64> {
                let r = sqlx::query("SELECT COUNT(*) AS n FROM votes WHERE request_id = $1 AND decision = $2")
                    .bind(request_id)
                    .bind(decision)
                    .fetch_one(&mut *self.tx)
                    .await?;
                Ok(r.try_get("n")?)
            }

            async fn transition_request(&mut self, id: &str, from: RequestState, to: RequestState, by: Option<&str>, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE requests SET state = $3, decided_at = $4, decided_by = $5 WHERE id = $1 AND state = $2")
                    .bind(id)
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(now)
                    .bind(by)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn due_expired_requests(&mut self, now: i64) -> StoreResult<Vec<RequestRow>> {
                let q = format!("SELECT {REQUEST_COLS} FROM requests WHERE state = 'pending' AND expires_at <= $1 ORDER BY id{}", $for_update);
                let rows = sqlx::query(&q).bind(now).fetch_all(&mut *self.tx).await?;
                rows.iter().map(request_row).collect()
            }

            async fn insert_operation(&mut self, o: &OperationRow) -> StoreResult<()> {
                let q = format!("INSERT INTO operations ({OPERATION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)");
                sqlx::query(&q)
                    .bind(&o.id)
                    .bind(&o.request_id)
                    .bind(&o.env)
                    .bind(&o.kind_json)
                    .bind(&o.plan_json)
                    .bind(&o.fingerprint)
                    .bind(&o.requester)
                    .bind(o.state.as_str())
                    .bind(o.current_step)
                    .bind(o.created_at)
                    .bind(o.started_at)
                    .bind(o.finished_at)
                    .bind(&o.worker)
                    .bind(o.heartbeat_at)
                    .bind(&o.error)
                    .bind(&o.channel_json)
                    .bind(&o.message_json)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn active_operation_for_env(&mut self, env: &str) -> StoreResult<Option<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations WHERE env = $1 AND state IN ('queued', 'running') ORDER BY created_at, id LIMIT 1");
                let row = sqlx::query(&q).bind(env).fetch_optional(&mut *self.tx).await?;
                row.as_ref().map(operation_row).transpose()
            }

            async fn claim_operation(&mut self, worker: &str, now: i64) -> StoreResult<Option<OperationRow>> {
                let q = format!(
                    "UPDATE operations SET state = 'running', worker = $1, started_at = $2, heartbeat_at = $2 \
                     WHERE state = 'queued' AND id = (SELECT o.id FROM operations o WHERE o.state = 'queued' \
                       AND NOT EXISTS (SELECT 1 FROM operations r WHERE r.env = o.env AND r.state = 'running') \
                       ORDER BY o.created_at, o.id LIMIT 1) \
                     RETURNING {OPERATION_COLS}"
                );
                match sqlx::query(&q).bind(worker).bind(now).fetch_optional(&mut *self.tx).await {
                    Ok(row) => row.as_ref().map(operation_row).transpose(),
                    // Another replica claimed an operation of the same environment first: the
                    // unique index refused ours. Nothing to claim now.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }

            async fn transition_operation(&mut self, id: &str, from: OperationState, to: OperationState, error: Option<&str>, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE operations SET state = $3, error = COALESCE($4, error), finished_at = CASE WHEN $3 IN ('succeeded', 'failed', 'cancelled', 'interrupted') THEN $5 ELSE finished_at END WHERE id = $1 AND state = $2")
                    .bind(id)
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(error)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn owns_operation(&mut self, id: &str, worker: &str) -> StoreResult<bool> {
                let q = format!("SELECT state, worker FROM operations WHERE id = $1{}", $for_update);
                let row = sqlx::query(&q).bind(id).fetch_optional(&mut *self.tx).await?;
                Ok(match row {
                    Some(r) => r.try_get::<String, _>("state")? == "running" && r.try_get::<Option<String>, _>("worker")?.as_deref() == Some(worker),
                    None => false,
                })
            }

            async fn running_operations(&mut self, stale_before: Option<i64>) -> StoreResult<Vec<OperationRow>> {
                let q = format!("SELECT {OPERATION_COLS} FROM operations WHERE state = 'running' AND ($1 IS NULL OR heartbeat_at < $1) ORDER BY id{}", $for_update);
                let rows = sqlx::query(&q).bind(stale_before).fetch_all(&mut *self.tx).await?;
                rows.iter().map(operation_row).collect()
            }

            async fn start_step(&mut self, operation_id: &str, idx: i64, name: &str, now: i64) -> StoreResult<()> {
                sqlx::query("INSERT INTO operation_steps (operation_id, idx, name, state, started_at) VALUES ($1, $2, $3, 'running', $4)")
                    .bind(operation_id)
                    .bind(idx)
                    .bind(name)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
                sqlx::query("UPDATE operations SET current_step = $2 WHERE id = $1")
                    .bind(operation_id)
                    .bind(idx)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn finish_step(&mut self, operation_id: &str, idx: i64, state: &str, output: &str, now: i64) -> StoreResult<()> {
                sqlx::query("UPDATE operation_steps SET state = $3, output = $4, finished_at = $5 WHERE operation_id = $1 AND idx = $2")
                    .bind(operation_id)
                    .bind(idx)
                    .bind(state)
                    .bind(output)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn put_backup(&mut self, b: &BackupRow) -> StoreResult<()> {
                sqlx::query("DELETE FROM backups WHERE id = $1").bind(&b.id).execute(&mut *self.tx).await?;
                let q = format!("INSERT INTO backups ({BACKUP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)");
                sqlx::query(&q)
                    .bind(&b.id)
                    .bind(&b.env)
                    .bind(&b.kind)
                    .bind(&b.state)
                    .bind(&b.path)
                    .bind(&b.database_name)
                    .bind(b.size_bytes)
                    .bind(&b.sha256)
                    .bind(b.started_at)
                    .bind(b.duration_ms)
                    .bind(&b.requested_by)
                    .bind(&b.note)
                    .bind(&b.migrations_json)
                    .bind(b.verified_at)
                    .bind(&b.verify_error)
                    .bind(b.toc_entries)
                    .bind(&b.operation_id)
                    .bind(&b.error)
                    .bind(b.deleted_at)
                    .bind(b.file_mtime_ms)
                    .bind(&b.write_stats_json)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn running_backups(&mut self) -> StoreResult<Vec<BackupRow>> {
                let q = format!("SELECT {BACKUP_COLS} FROM backups WHERE state = 'running' ORDER BY id{}", $for_update);
                let rows = sqlx::query(&q).fetch_all(&mut *self.tx).await?;
                rows.iter().map(backup_row).collect()
            }

            async fn append_audit(&mut self, e: &NewAudit, now: i64) -> StoreResult<AuditRecord> {
                let q = format!("SELECT seq, hash FROM audit_head WHERE id = 1{}", $for_update);
                let head = sqlx::query(&q).fetch_one(&mut *self.tx).await?;
                let (prev_seq, prev_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
                let seq = prev_seq + 1;
                let details = redact_json(&e.details).to_string();
                let hash = chain_hash(&prev_hash, seq, now, e.operator.as_deref(), e.account.as_deref(), e.env.as_deref(), &e.action, &details);
                let q = format!("INSERT INTO audit_events ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
                sqlx::query(&q)
                    .bind(seq)
                    .bind(now)
                    .bind(&e.operator)
                    .bind(&e.account)
                    .bind(&e.env)
                    .bind(&e.action)
                    .bind(&details)
                    .bind(&prev_hash)
                    .bind(&hash)
                    .execute(&mut *self.tx)
                    .await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(&hash)
                    .execute(&mut *self.tx)
                    .await?;
                if seq % crate::core::audit::HEAD_LOG_EVERY == 0 {
                    self.head_to_log = Some((seq, hash.clone()));
                }
                Ok(AuditRecord {
                    seq,
                    at_ms: now,
                    operator: e.operator.clone(),
                    account: e.account.clone(),
                    env: e.env.clone(),
                    action: e.action.clone(),
                    details,
                    prev_hash,
                    hash,
                })
            }

            async fn register_card(&mut self, card_key: &str, platform: &str, channel: &str) -> StoreResult<bool> {
                let r = sqlx::query("INSERT INTO card_messages (card_key, platform, channel) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(card_key).bind(platform).bind(channel)
                    .execute(&mut *self.tx).await?;
                Ok(r.rows_affected() == 1)
            }

            async fn card_channels(&mut self, card_key: &str) -> StoreResult<Vec<(String, String)>> {
                let rows = sqlx::query("SELECT platform, channel FROM card_messages WHERE card_key = $1 ORDER BY platform, channel")
                    .bind(card_key).fetch_all(&mut *self.tx).await?;
                rows.iter().map(|r| Ok((r.try_get("platform")?, r.try_get("channel")?))).collect()
            }

            async fn enqueue_outbox(&mut self, m: &NewOutbox, now: i64) -> StoreResult<i64> {
                self.insert_outbox(m, m.kind(), None, now).await
            }

            async fn enqueue_audit_line(&mut self, m: &NewOutbox, seq: Option<i64>, now: i64) -> StoreResult<i64> {
                self.insert_outbox(m, OutboxKind::Audit, seq, now).await
            }

            async fn claim_run(&mut self, job: &str, slot: i64, holder: &str, late: bool, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("INSERT INTO schedule_runs (job, slot, holder, started_at, late) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job, slot) DO NOTHING")
                    .bind(job)
                    .bind(slot)
                    .bind(holder)
                    .bind(now)
                    .bind(i64::from(late))
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn release_leases(&mut self, owner: &str) -> StoreResult<u64> {
                // The owner's name is matched literally: LIKE's wildcards in it are escaped.
                let literal = owner.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                let res = sqlx::query("DELETE FROM leases WHERE holder = $1 OR holder LIKE $2 ESCAPE '\\'")
                    .bind(owner)
                    .bind(format!("%@{literal}"))
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected())
            }

            async fn finish_run(&mut self, job: &str, slot: i64, outcome: &str, now: i64) -> StoreResult<()> {
                sqlx::query("UPDATE schedule_runs SET finished_at = $3, outcome = $4 WHERE job = $1 AND slot = $2")
                    .bind(job)
                    .bind(slot)
                    .bind(now)
                    .bind(outcome)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn interrupt_run(&mut self, job: &str, slot: i64, outcome: &str, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("UPDATE schedule_runs SET finished_at = $3, outcome = $4 WHERE job = $1 AND slot = $2 AND finished_at IS NULL")
                    .bind(job)
                    .bind(slot)
                    .bind(now)
                    .bind(outcome)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn raise_alert(&mut self, name: &str, detail: &str, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("INSERT INTO schedule_alerts (name, since, detail) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(now)
                    .bind(detail)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn clear_alert(&mut self, name: &str) -> StoreResult<bool> {
                let res = sqlx::query("DELETE FROM schedule_alerts WHERE name = $1")
                    .bind(name)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn put_drill(&mut self, d: &DrillRow) -> StoreResult<()> {
                sqlx::query("DELETE FROM backup_drills WHERE id = $1").bind(&d.id).execute(&mut *self.tx).await?;
                let q = format!("INSERT INTO backup_drills ({DRILL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
                sqlx::query(&q)
                    .bind(&d.id)
                    .bind(&d.backup_id)
                    .bind(&d.env)
                    .bind(&d.state)
                    .bind(d.started_at)
                    .bind(d.duration_ms)
                    .bind(d.restore_ms)
                    .bind(&d.details_json)
                    .bind(&d.error)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn first_delivery(&mut self, key: &str, now: i64) -> StoreResult<bool> {
                let res = sqlx::query("INSERT INTO dedupe (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn queue_rehearsal(&mut self, r: &RehearsalRow) -> StoreResult<Vec<String>> {
                rehearsal_sql::queue(&mut *self.tx, r).await
            }

            async fn start_rehearsal(&mut self, id: &str, runner: &str, now: i64) -> StoreResult<bool> {
                rehearsal_sql::start(&mut *self.tx, id, runner, now).await
            }

            async fn finish_rehearsal(&mut self, id: &str, end: &RehearsalEnd, now: i64) -> StoreResult<bool> {
                rehearsal_sql::finish(&mut *self.tx, id, end, now).await
            }

            async fn passed_rehearsal(&mut self, env: &str, set_digest: &str) -> StoreResult<bool> {
                rehearsal_sql::passed(&mut *self.tx, env, set_digest).await
            }

            async fn interrupt_rehearsals(&mut self, env: &str, reason: &str, now: i64) -> StoreResult<Vec<RehearsalRow>> {
                rehearsal_sql::interrupt(&mut *self.tx, env, reason, now).await
            }

            async fn commit(self: Box<Self>) -> StoreResult<()> {
                // The write lock stays bound (and held) until the commit is done.
                let $tx { tx, _write_lock, head_to_log } = *self;
                tx.commit().await?;
                if let Some((seq, hash)) = &head_to_log {
                    crate::core::audit::log_head(*seq, hash);
                }
                Ok(())
            }
        }
    };
}

/// SQLite store (the default): one file, one writer at a time.
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    write_lock: Arc<Mutex<()>>,
}

impl SqliteStore {
    /// Opens `sqlite://path`, creating the folder and file when missing, and migrates it.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(15))
            .foreign_keys(true);
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    async fn begin_tx(
        &self,
    ) -> StoreResult<(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        Option<OwnedMutexGuard<()>>,
    )> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((tx, Some(guard)))
    }
}

/// PostgreSQL store, for several replicas sharing the work.
pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    /// Connects to `postgres://...` and migrates. `sslmode` and `sslrootcert` work as for the
    /// target database (see [`crate::dbops::backup::PgUrl::apply_tls`]).
    ///
    /// One connection is made by hand before the pool: a pool that cannot connect reports only
    /// "pool timed out" after its acquire timeout, hiding the cause ("connection refused",
    /// "password authentication failed", a certificate error).
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        use sqlx::postgres::{PgConnectOptions, PgConnection};
        use sqlx::Connection;
        let tls = crate::dbops::backup::PgUrl::parse(url)
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        let opts = tls.apply_tls(
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Connect(e.to_string()))?,
        );
        const FIRST_CONNECT: Duration = Duration::from_secs(15);
        match tokio::time::timeout(FIRST_CONNECT, PgConnection::connect_with(&opts)).await {
            Ok(Ok(conn)) => {
                // Bounded: over TLS a graceful close may wait for the server.
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
            }
            Ok(Err(e)) => return Err(StoreError::Connect(e.to_string())),
            Err(_) => {
                return Err(StoreError::Connect(format!(
                    "no connection within {} s",
                    FIRST_CONNECT.as_secs()
                )))
            }
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn begin_tx(
        &self,
    ) -> StoreResult<(
        sqlx::Transaction<'static, sqlx::Postgres>,
        Option<OwnedMutexGuard<()>>,
    )> {
        Ok((self.pool.begin().await?, None))
    }
}

mod sqlite_impl {
    use super::*;
    super::super::rehearsals::rehearsal_sql!(sqlx::Sqlite);
    sql_store!(SqliteStore, SqliteTx, sqlx::Sqlite, Backend::Sqlite, "");
}

mod pg_impl {
    use super::*;
    super::super::rehearsals::rehearsal_sql!(sqlx::Postgres);
    sql_store!(
        PgStore,
        PgTx,
        sqlx::Postgres,
        Backend::Postgres,
        " FOR UPDATE"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> RequestRow {
        RequestRow {
            id: id.into(),
            env: "staging".into(),
            kind_json: "{}".into(),
            plan_json: "{}".into(),
            fingerprint: "f".into(),
            requester: "alice".into(),
            requester_account: "shell:alice".into(),
            state: RequestState::Pending,
            required_votes: 1,
            created_at: 1,
            expires_at: 2,
            decided_at: None,
            decided_by: None,
            channel_json: "{}".into(),
            message_json: None,
        }
    }

    #[tokio::test]
    async fn states_are_stored_as_their_names_and_an_unknown_one_reads_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.insert_request(&request("r1")).await.unwrap();
        tx.insert_request(&request("r2")).await.unwrap();
        let moved = RequestState::Approved;
        assert!(tx
            .transition_request("r1", RequestState::Pending, moved, None, 3)
            .await
            .unwrap());
        assert!(!tx
            .transition_request("r1", RequestState::Pending, moved, None, 3)
            .await
            .unwrap());
        tx.commit().await.unwrap();
        let text: String = sqlx::query_scalar("SELECT state FROM requests WHERE id = 'r1'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(text, "approved");
        let pending = store
            .list_requests(Some(RequestState::Pending), 10)
            .await
            .unwrap();
        assert_eq!(
            pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r2"]
        );

        sqlx::query("UPDATE requests SET state = 'lost' WHERE id = 'r2'")
            .execute(&store.pool)
            .await
            .unwrap();
        let r2 = store.get_request("r2").await.unwrap().unwrap();
        assert_eq!(r2.state, RequestState::Cancelled);
        assert_eq!(store.list_requests(None, 10).await.unwrap().len(), 2);
    }
}
