-- Each API key's secret, sealed (AES-256-GCM under a key derived from the server's token
-- secret), so that the server can verify tokens a client signed with its own key (trigger.dev's
-- public tokens). Removed with the key.
CREATE TABLE api_key_seals (
    key_id  uuid PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    sealed  bytea NOT NULL
);
