-- Backup catalog (SPEC section 6): one row per backup attempt. A row is `running` while pg_dump
-- runs, then `ok` (file written, synced, renamed, SHA-256 recorded) or `failed`; deleted files
-- keep their row with `deleted_at` for the audit trail.
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    path TEXT NOT NULL,
    database_name TEXT NOT NULL,
    size_bytes BIGINT,
    sha256 TEXT,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT,
    requested_by TEXT,
    note TEXT,
    migrations_json TEXT NOT NULL,
    verified_at BIGINT,
    verify_error TEXT,
    toc_entries BIGINT,
    operation_id TEXT,
    error TEXT,
    deleted_at BIGINT
);
CREATE INDEX backups_by_env ON backups (env, started_at);
