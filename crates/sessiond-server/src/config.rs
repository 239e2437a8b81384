//! `sessiond serve` configuration: flags, each with a `SESSIOND_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Off when bound to loopback with no admin key configured, else on.
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SESSIOND_LISTEN", default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,

    /// Directory for the embedded database, the admin key and the token secret.
    #[arg(long, env = "SESSIOND_DATA_DIR", default_value = "./sessiond-data")]
    pub data_dir: PathBuf,

    /// Use PostgreSQL (`postgres://user:password@host:5432/db`) instead of the embedded SQLite
    /// database. Several nodes may share one database.
    #[arg(long, env = "SESSIOND_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL connections per node (the LISTEN connection is extra). Default: 4 per CPU
    /// core, from 4 to 32; more connections than the database's cores can run only add
    /// contention.
    #[arg(long, env = "SESSIOND_DATABASE_POOL", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool: Option<u32>,

    /// Whether requests must carry credentials. `off` is only allowed on a loopback address
    /// (unless --insecure-no-auth).
    #[arg(long, env = "SESSIOND_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub auth: AuthMode,

    /// The admin key that manages accounts and keys. Generated into the data dir when unset.
    #[arg(long, env = "SESSIOND_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// The secret that signs session tokens (at least 32 characters). Generated into the data
    /// dir when unset; every node of a cluster needs the same one.
    #[arg(long, env = "SESSIOND_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Allow `--auth off` on a non-loopback address.
    #[arg(long, env = "SESSIOND_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "SESSIOND_MAX_BODY_BYTES", default_value_t = sessiond_core::limits::JSON_BODY_DEFAULT_BYTES)]
    pub max_body_bytes: usize,

    /// Largest document upload, in bytes.
    #[arg(long, env = "SESSIOND_MAX_UPLOAD_BYTES", default_value_t = sessiond_core::limits::UPLOAD_DEFAULT_BYTES)]
    pub max_upload_bytes: usize,

    /// Documents processed at once on this node (0 leaves processing to other nodes).
    #[arg(long, env = "SESSIOND_DOCUMENT_PROCESSORS", default_value_t = 2)]
    pub document_processors: usize,

    /// Number of SQLite read connections.
    #[arg(long, env = "SESSIOND_SQLITE_READERS", default_value_t = 4)]
    pub sqlite_readers: usize,

    /// How far back `reuse: true` jobs look for an earlier success: seconds, or a number with
    /// s, m, h or d (e.g. `28d`).
    #[arg(long, env = "SESSIOND_JOB_REUSE_WINDOW", default_value = "28d", value_parser = parse_duration_secs)]
    pub job_reuse_window: i64,

    /// Log format on stderr.
    #[arg(long, env = "SESSIOND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    /// Whether authentication is required, after resolving `auto`; an error when the
    /// combination is unsafe.
    pub fn auth_required(&self) -> Result<bool, String> {
        let loopback = self.listen.ip().is_loopback();
        match self.auth {
            AuthMode::On => Ok(true),
            AuthMode::Auto => Ok(!loopback || self.admin_key.is_some()),
            AuthMode::Off if loopback || self.insecure_no_auth => Ok(false),
            AuthMode::Off => Err(format!(
                "refusing to start with --auth off on {} (not a loopback address): anyone who can reach it \
                 could read and change every session; use --auth on, bind 127.0.0.1, or pass --insecure-no-auth",
                self.listen
            )),
        }
    }
}

/// `url` with the password (if any) replaced by `***`, for banners and logs.
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// `90`, `90s`, `15m`, `12h`, `28d` → seconds.
pub fn parse_duration_secs(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 3600, 90m, 12h or 28d"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("28d"), Ok(28 * 86_400));
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert!(parse_duration_secs("1w").is_err());
        assert!(parse_duration_secs("abc").is_err());
    }

    #[test]
    fn masks_the_password() {
        assert_eq!(
            mask_password("postgres://u:secret@h:5432/db?sslmode=disable"),
            "postgres://u:***@h:5432/db?sslmode=disable"
        );
        assert_eq!(mask_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_password("postgres://h/db"), "postgres://h/db");
        assert_eq!(mask_password("not a url"), "not a url");
        assert_eq!(
            mask_password("postgres://u:p@w@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
