CREATE TABLE chats (
    id                         uuid PRIMARY KEY,
    -- Insertion order: the tie-break of listings (SQLite's rowid).
    qseq                       bigint GENERATED ALWAYS AS IDENTITY,
    session_id                 uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    account_id                 uuid NOT NULL,
    title                      text NOT NULL,
    model_id                   text,
    active_stream_id           text,
    last_assistant_message_at  bigint,
    message_count              bigint NOT NULL DEFAULT 0,
    created_at                 bigint NOT NULL,
    updated_at                 bigint NOT NULL
);
CREATE INDEX chats_by_session ON chats(session_id, created_at, qseq);

CREATE TABLE chat_messages (
    chat_id     uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    message_id  text NOT NULL,
    role        text NOT NULL,
    -- Stored as written (json keeps key order).
    parts       json NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (chat_id, seq),
    UNIQUE (chat_id, message_id)
);

-- Per-account read marks, for unread tracking.
CREATE TABLE chat_reads (
    chat_id     uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    account_id  uuid NOT NULL,
    read_at     bigint NOT NULL,
    PRIMARY KEY (chat_id, account_id)
);
