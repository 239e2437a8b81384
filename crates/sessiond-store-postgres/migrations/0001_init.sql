-- Ids are uuid, timestamps bigint milliseconds since the epoch (UTC), exactly as in the SQLite
-- backend. JSON that is handed back to clients is stored as `json` (or `text`), never `jsonb`:
-- both keep the text as written, so key order and record bytes round-trip unchanged.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text,
    created_at  bigint NOT NULL
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        text,
    prefix      text NOT NULL,
    hash        bytea NOT NULL UNIQUE,
    created_at  bigint NOT NULL,
    revoked_at  bigint
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts(id),
    external_id   text,
    type          text,
    title         text,
    tags          text[] NOT NULL DEFAULT '{}',
    metadata      json NOT NULL DEFAULT '{}',
    -- The same metadata as jsonb, only for indexed `metadata.k = v` filters.
    metadata_idx  jsonb GENERATED ALWAYS AS (metadata::jsonb) STORED,
    data          json NOT NULL DEFAULT '{}',
    closed_at     bigint,
    closed_reason text,
    expires_at    bigint,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    version       bigint NOT NULL
);
CREATE UNIQUE INDEX sessions_external_id ON sessions(account_id, external_id)
    WHERE external_id IS NOT NULL;
-- Keyset listing: createdAt desc, id desc, per account; and the same within one type.
CREATE INDEX sessions_by_created ON sessions(account_id, created_at DESC, id DESC);
CREATE INDEX sessions_by_type ON sessions(account_id, type, created_at DESC, id DESC);
CREATE INDEX sessions_tags ON sessions USING gin (tags);
CREATE INDEX sessions_metadata ON sessions USING gin (metadata_idx jsonb_path_ops);

-- One row per channel; appends lock it, which serialises seq assignment per channel.
CREATE TABLE channels (
    session_id    uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name          text NOT NULL,
    last_seq      bigint NOT NULL,
    record_count  bigint NOT NULL,
    updated_at    bigint NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE records (
    session_id  uuid NOT NULL,
    channel     text NOT NULL,
    seq         bigint NOT NULL,
    record_id   text NOT NULL,
    -- Raw JSON, returned byte for byte as appended.
    data        text NOT NULL,
    headers     text NOT NULL DEFAULT '{}',
    created_at  bigint NOT NULL,
    PRIMARY KEY (session_id, channel, seq),
    FOREIGN KEY (session_id, channel) REFERENCES channels(session_id, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX records_by_id ON records(session_id, channel, record_id);
