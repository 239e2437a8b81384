CREATE TABLE jobs (
    id                BLOB PRIMARY KEY,
    account_id        BLOB NOT NULL,
    session_id        BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    type              TEXT NOT NULL,
    input             TEXT NOT NULL,
    input_hash        TEXT NOT NULL,
    result            TEXT,
    error             TEXT,
    progress          TEXT,
    attempts          INTEGER NOT NULL,
    max_attempts      INTEGER NOT NULL,
    reused_from       BLOB,
    output_key        TEXT,
    lease_id          BLOB,
    lease_seconds     INTEGER NOT NULL DEFAULT 0,
    lease_expires_at  INTEGER,
    worker_id         TEXT,
    status            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX jobs_by_session ON jobs(session_id, created_at);
-- The queue: oldest queued job of a type first.
CREATE INDEX jobs_queued ON jobs(account_id, type, created_at) WHERE status = 'queued';
-- Reuse: the newest success with the same normalized input.
CREATE INDEX jobs_reuse ON jobs(account_id, type, input_hash, finished_at) WHERE status = 'succeeded';
CREATE INDEX jobs_leases ON jobs(lease_expires_at) WHERE status = 'running';
