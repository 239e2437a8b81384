CREATE TABLE documents (
    id              uuid PRIMARY KEY,
    -- Insertion order: the tie-break of listings (SQLite's rowid).
    qseq            bigint GENERATED ALWAYS AS IDENTITY,
    account_id      uuid NOT NULL,
    session_id      uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    filename        text,
    content_type    text,
    size_bytes      bigint NOT NULL,
    sha256          text NOT NULL,
    status          text NOT NULL,
    error           json,
    chunk_count     bigint NOT NULL,
    token_count     bigint NOT NULL,
    chunk_tokens    bigint NOT NULL,
    overlap_tokens  bigint NOT NULL,
    job_id          uuid,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL
);
CREATE INDEX documents_by_session ON documents(session_id, created_at, qseq);
CREATE INDEX documents_reuse ON documents(account_id, sha256, chunk_tokens, overlap_tokens)
    WHERE status = 'ready';

-- The uploaded bytes, kept so that processing can run (or be retried) on any node.
CREATE TABLE document_content (
    document_id  uuid PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    bytes        bytea NOT NULL
);

CREATE TABLE chunks (
    id           uuid NOT NULL UNIQUE,
    document_id  uuid NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    session_id   uuid NOT NULL,
    idx          bigint NOT NULL,
    content      text NOT NULL,
    token_count  bigint NOT NULL,
    char_count   bigint NOT NULL,
    metadata     json NOT NULL,
    -- Full-text search: words lower-cased, no stemming (like FTS5's unicode61 tokenizer).
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    UNIQUE (document_id, idx)
);
CREATE INDEX chunks_by_session ON chunks(session_id);
CREATE INDEX chunks_fts ON chunks USING gin (tsv);
