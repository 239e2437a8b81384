-- Ids are 16-byte UUID blobs, timestamps integer milliseconds since the epoch (UTC), JSON as text.

CREATE TABLE accounts (
    id          BLOB PRIMARY KEY,
    name        TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          BLOB PRIMARY KEY,
    account_id  BLOB NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT,
    prefix      TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY,
    account_id    BLOB NOT NULL REFERENCES accounts(id),
    external_id   TEXT,
    type          TEXT,
    title         TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    metadata      TEXT NOT NULL DEFAULT '{}',
    data          TEXT NOT NULL DEFAULT '{}',
    closed_at     INTEGER,
    closed_reason TEXT,
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL
);
CREATE UNIQUE INDEX sessions_external_id ON sessions(account_id, external_id)
    WHERE external_id IS NOT NULL;
-- Keyset listing: createdAt desc, id desc, per account; and the same within one type.
CREATE INDEX sessions_by_created ON sessions(account_id, created_at DESC, id DESC);
CREATE INDEX sessions_by_type ON sessions(account_id, type, created_at DESC, id DESC);

CREATE TABLE channels (
    session_id    BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    last_seq      INTEGER NOT NULL,
    record_count  INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, name)
) WITHOUT ROWID;

CREATE TABLE records (
    session_id  BLOB NOT NULL,
    channel     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    record_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    headers     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (session_id, channel, seq),
    FOREIGN KEY (session_id, channel) REFERENCES channels(session_id, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX records_by_id ON records(session_id, channel, record_id);
