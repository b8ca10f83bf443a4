-- dualkey state store, version 1 (the SQLite and PostgreSQL files differ only in the outbox id column).
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    kind_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    requester TEXT NOT NULL,
    requester_account TEXT NOT NULL,
    state TEXT NOT NULL,
    required_votes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    channel_json TEXT NOT NULL,
    message_json TEXT
);
CREATE INDEX requests_by_state ON requests (state, expires_at);

CREATE TABLE votes (
    request_id TEXT NOT NULL REFERENCES requests (id),
    voter TEXT NOT NULL,
    account TEXT NOT NULL,
    decision TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, voter)
);

CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE REFERENCES requests (id),
    env TEXT NOT NULL,
    kind_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    requester TEXT NOT NULL,
    state TEXT NOT NULL,
    current_step BIGINT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    worker TEXT,
    heartbeat_at BIGINT,
    error TEXT,
    channel_json TEXT NOT NULL,
    message_json TEXT
);
-- One mutating operation per environment, enforced by the database itself.
CREATE UNIQUE INDEX operations_one_running_per_env ON operations (env) WHERE state = 'running';
CREATE INDEX operations_by_state ON operations (state, created_at);

CREATE TABLE operation_steps (
    operation_id TEXT NOT NULL REFERENCES operations (id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    output TEXT,
    PRIMARY KEY (operation_id, idx)
);

-- The head of the audit hash chain: one row, locked by every audit append.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    operator TEXT,
    account TEXT,
    env TEXT,
    action TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    op TEXT NOT NULL,
    message_id TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (platform, delivered_at, next_attempt_at);

CREATE TABLE dedupe (
    key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
