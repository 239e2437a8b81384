CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    -- Insertion order: the tie-break of the queue (SQLite's rowid).
    qseq              bigint GENERATED ALWAYS AS IDENTITY,
    account_id        uuid NOT NULL,
    session_id        uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    type              text NOT NULL,
    input             json NOT NULL,
    input_hash        text NOT NULL,
    result            json,
    error             json,
    progress          json,
    attempts          bigint NOT NULL,
    max_attempts      bigint NOT NULL,
    reused_from       uuid,
    output_key        text,
    lease_id          uuid,
    lease_seconds     bigint NOT NULL DEFAULT 0,
    lease_expires_at  bigint,
    worker_id         text,
    status            text NOT NULL,
    created_at        bigint NOT NULL,
    started_at        bigint,
    finished_at       bigint,
    updated_at        bigint NOT NULL
);
CREATE INDEX jobs_by_session ON jobs(session_id, created_at, qseq);
-- The queue: oldest queued job of a type first (per account, and across accounts).
CREATE INDEX jobs_queued ON jobs(account_id, type, created_at, qseq) WHERE status = 'queued';
CREATE INDEX jobs_queued_any ON jobs(type, created_at, qseq) WHERE status = 'queued';
-- Reuse: the newest success with the same normalized input.
CREATE INDEX jobs_reuse ON jobs(account_id, type, input_hash, finished_at) WHERE status = 'succeeded';
CREATE INDEX jobs_leases ON jobs(lease_expires_at) WHERE status = 'running';
