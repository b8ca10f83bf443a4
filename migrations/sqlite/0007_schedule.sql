-- The scheduler's state (SPEC section 7).
--
-- schedule_runs: one row per cron run taken (job name + the scheduled instant, ms). The primary key
-- is the exactly-once guarantee: the replica whose INSERT creates the row runs the slot; a second
-- replica, or the same process after a restart, finds it taken.
CREATE TABLE schedule_runs (
    job TEXT NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    late BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT,
    outcome TEXT,
    PRIMARY KEY (job, slot)
);
-- Open alerts (`backup-age:<env>`): a row exists while the condition holds, so each breach is
-- posted once when the row is created and once more when it is deleted.
CREATE TABLE schedule_alerts (
    name TEXT PRIMARY KEY,
    since BIGINT NOT NULL,
    detail TEXT NOT NULL
);
-- Restore drills: the newest verified backup restored into a scratch database, one row per drill.
CREATE TABLE backup_drills (
    id TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT,
    restore_ms BIGINT,
    details_json TEXT,
    error TEXT
);
CREATE INDEX backup_drills_by_backup ON backup_drills (backup_id, started_at);
CREATE INDEX backup_drills_by_env ON backup_drills (env, started_at);
