-- Rehearsals (issue 22): the pending migrations of a deploy applied to a restored copy of the
-- newest verified backup. One row per rehearsal asked for; a newer one of the same environment
-- supersedes the queued or running one. `set_digest` is the SHA-256 over the pinned
-- (migration, checksum) pairs: `require_rehearsal` looks for a `passed` row with the request's.
-- state: queued | running | passed | failed | superseded | error.
CREATE TABLE rehearsals (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    request_id TEXT,
    set_digest TEXT NOT NULL,
    pinned_json TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    channel_json TEXT,
    runner TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    summary TEXT,
    outcome_json TEXT,
    error TEXT
);
CREATE INDEX rehearsals_by_set ON rehearsals (env, set_digest, created_at);
CREATE INDEX rehearsals_by_state ON rehearsals (state, created_at);
