CREATE TABLE chats (
    id                         BLOB PRIMARY KEY,
    session_id                 BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    account_id                 BLOB NOT NULL,
    title                      TEXT NOT NULL,
    model_id                   TEXT,
    active_stream_id           TEXT,
    last_assistant_message_at  INTEGER,
    message_count              INTEGER NOT NULL DEFAULT 0,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
);
CREATE INDEX chats_by_session ON chats(session_id, created_at);

CREATE TABLE chat_messages (
    chat_id     BLOB NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    parts       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (chat_id, seq),
    UNIQUE (chat_id, message_id)
);

-- Per-account read marks, for unread tracking.
CREATE TABLE chat_reads (
    chat_id     BLOB NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    account_id  BLOB NOT NULL,
    read_at     INTEGER NOT NULL,
    PRIMARY KEY (chat_id, account_id)
) WITHOUT ROWID;
