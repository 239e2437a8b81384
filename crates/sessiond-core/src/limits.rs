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

/// Records per append request.
pub const RECORD_BATCH_MAX: usize = 1000;
/// One record's `data` and `headers`, as JSON.
pub const RECORD_MAX_BYTES: usize = 1024 * 1024;
/// All records of one append request, as JSON.
pub const RECORD_BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;
pub const RECORD_ID_MAX_CHARS: usize = 256;
/// Records per JSON read.
pub const READ_LIMIT_DEFAULT: usize = 100;
pub const READ_LIMIT_MAX: usize = 1000;
/// Longest long-poll `wait`, in seconds.
pub const WAIT_MAX_SECONDS: u64 = 60;
/// Session tokens: default and longest lifetime, in seconds.
pub const TOKEN_TTL_DEFAULT_SECONDS: i64 = 3600;
pub const TOKEN_TTL_MAX_SECONDS: i64 = 24 * 3600;

pub const JOB_TYPE_MAX_CHARS: usize = 128;
pub const OUTPUT_KEY_MAX_CHARS: usize = 256;
/// A job's `input`, as JSON.
pub const JOB_INPUT_MAX_BYTES: usize = 1024 * 1024;
pub const JOB_MAX_ATTEMPTS_DEFAULT: i64 = 3;
pub const JOB_MAX_ATTEMPTS_MAX: i64 = 100;
pub const LEASE_SECONDS_MIN: i64 = 5;
pub const LEASE_SECONDS_MAX: i64 = 3600;
pub const LEASE_SECONDS_DEFAULT: i64 = 60;
/// Default reuse window (`--job-reuse-window`), in seconds: 28 days.
pub const JOB_REUSE_WINDOW_DEFAULT_SECONDS: i64 = 28 * 24 * 3600;
pub const JOB_CLAIM_TYPES_MAX: usize = 64;

/// Default upload limit (`--max-upload-bytes`).
pub const UPLOAD_DEFAULT_BYTES: usize = 64 * 1024 * 1024;
pub const CHUNK_TOKENS_DEFAULT: i64 = 10_000;
pub const CHUNK_TOKENS_MIN: i64 = 100;
pub const CHUNK_TOKENS_MAX: i64 = 100_000;
pub const OVERLAP_TOKENS_DEFAULT: i64 = 500;
pub const FILENAME_MAX_CHARS: usize = 256;
pub const SEARCH_LIMIT_DEFAULT: usize = 10;
pub const SEARCH_LIMIT_MAX: usize = 100;
pub const SEARCH_QUERY_MAX_CHARS: usize = 512;
