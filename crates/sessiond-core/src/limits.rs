//! Every limit the API enforces, in one place (the README and the OpenAPI spec quote these).

pub const EXTERNAL_ID_MAX_CHARS: usize = 256;
pub const TYPE_MAX_CHARS: usize = 64;
pub const TITLE_MAX_CHARS: usize = 256;
pub const TAGS_MAX: usize = 32;
pub const TAG_MAX_CHARS: usize = 128;
pub const METADATA_MAX_BYTES: usize = 16 * 1024;
pub const METADATA_KEY_MAX_CHARS: usize = 256;
pub const CLOSE_REASON_MAX_CHARS: usize = 256;
/// Longest `ttlSeconds` accepted (ten years).
pub const TTL_MAX_SECONDS: i64 = 10 * 365 * 24 * 3600;
pub const LIST_LIMIT_DEFAULT: usize = 20;
pub const LIST_LIMIT_MAX: usize = 100;
/// Longest substring accepted by the `q` list filter.
pub const QUERY_MAX_CHARS: usize = 256;
/// How many `tag`, `status` or `metadata.*` filter values one list request may carry.
pub const FILTER_VALUES_MAX: usize = 32;
pub const ACCOUNT_NAME_MAX_CHARS: usize = 128;
pub const KEY_NAME_MAX_CHARS: usize = 128;
/// Caller-supplied API key secrets (e.g. to register an existing key) must be this long at least.
pub const KEY_SECRET_MIN_CHARS: usize = 20;
pub const KEY_SECRET_MAX_CHARS: usize = 256;
/// Default JSON body limit (configurable with `--max-body-bytes`).
pub const JSON_BODY_DEFAULT_BYTES: usize = 1024 * 1024;
