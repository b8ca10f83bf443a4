-- Post-deploy monitoring windows (SPEC section 7): a window opens after a successful deploy,
-- rollback, restore or emergency, or by hand (`monitor`). Each has one row per reminder with its
-- due time; `posted_at` is set by a conditional update (`WHERE posted_at IS NULL`) in the same
-- transaction as the reminder's outbox rows and audit event, so a reminder is posted once, also
-- after a restart and with several replicas. `last_probe_at` is claimed the same way before a
-- health probe between reminders; `failing` is the current probe streak (0 ok, 1 failing), moved
-- conditionally so a failure and its recovery are each posted once.
CREATE TABLE monitor_windows (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    opened_by TEXT NOT NULL,
    operation_id TEXT,
    kind TEXT NOT NULL,
    migrations_json TEXT NOT NULL,
    rollback_target TEXT,
    channel_json TEXT,
    state TEXT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT,
    close_reason TEXT,
    probes BIGINT NOT NULL DEFAULT 0,
    probe_failures BIGINT NOT NULL DEFAULT 0,
    last_probe_at BIGINT,
    last_probe TEXT,
    failing BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX monitor_windows_open ON monitor_windows (state, env);
CREATE TABLE monitor_reminders (
    window_id TEXT NOT NULL REFERENCES monitor_windows (id),
    idx BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    posted_at BIGINT,
    card_json TEXT,
    PRIMARY KEY (window_id, idx)
);
