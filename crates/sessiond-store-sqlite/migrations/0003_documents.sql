CREATE TABLE documents (
    id              BLOB PRIMARY KEY,
    account_id      BLOB NOT NULL,
    session_id      BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    filename        TEXT,
    content_type    TEXT,
    size_bytes      INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    chunk_count     INTEGER NOT NULL,
    token_count     INTEGER NOT NULL,
    chunk_tokens    INTEGER NOT NULL,
    overlap_tokens  INTEGER NOT NULL,
    job_id          BLOB,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX documents_by_session ON documents(session_id, created_at);
CREATE INDEX documents_reuse ON documents(account_id, sha256, chunk_tokens, overlap_tokens)
    WHERE status = 'ready';

-- The uploaded bytes, kept so that processing can run (or be retried) on any node.
CREATE TABLE document_content (
    document_id  BLOB PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    bytes        BLOB NOT NULL
);

CREATE TABLE chunks (
    id           BLOB NOT NULL UNIQUE,
    document_id  BLOB NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    session_id   BLOB NOT NULL,
    idx          INTEGER NOT NULL,
    content      TEXT NOT NULL,
    token_count  INTEGER NOT NULL,
    char_count   INTEGER NOT NULL,
    metadata     TEXT NOT NULL,
    UNIQUE (document_id, idx)
);
CREATE INDEX chunks_by_session ON chunks(session_id);

-- Full-text search over chunk content, kept in step by triggers (external content table).
CREATE VIRTUAL TABLE chunks_fts USING fts5(content, content='chunks', content_rowid='rowid');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
