//! Where the load goes: URL checks, the optional child server, and its memory readings.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper::header::HeaderValue;
use hyper::Uri;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a started server may take to print its listening line (migrations run first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of server stderr kept to explain a failed start.
const STDERR_TAIL: usize = 40;

/// A resolved HTTP endpoint plus the headers every request carries.
pub struct Target {
    pub addr: SocketAddr,
    pub host_header: HeaderValue,
    pub auth: Option<HeaderValue>,
    /// Path prefix from `--url` (empty or `/something`, no trailing slash).
    pub prefix: String,
    /// For the report.
    pub display: String,
}

impl Target {
    pub fn new(addr: SocketAddr, host: &str, prefix: String, key: Option<&str>) -> Result<Self> {
        let host_header =
            HeaderValue::from_str(host).context("host is not a valid header value")?;
        let auth = key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .context("--key is not a valid header value")?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        Ok(Self {
            addr,
            host_header,
            auth,
            display: format!("http://{host}{prefix}"),
            prefix,
        })
    }

    /// Origin-form URI (what HTTP/1.1 sends on the request line) for `path`.
    pub fn uri(&self, path: &str) -> Result<Uri> {
        let full = format!("{}{}", self.prefix, path);
        full.parse::<Uri>()
            .with_context(|| format!("bad request path {full:?}"))
    }
}

/// Parts of a `--url` we use.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlParts {
    /// Host without IPv6 brackets, for resolution.
    pub host: String,
    pub port: u16,
    /// Value for the `Host` header (`127.0.0.1:8080`, `[::1]:8080`).
    pub authority: String,
    pub prefix: String,
}

pub fn parse_url(url: &str, allow_remote: bool) -> Result<UrlParts> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("cannot parse --url {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--url scheme {other:?} is not supported (plain http only)"),
        None => bail!("--url needs a scheme, e.g. http://127.0.0.1:8080"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--url has no host"))?
        .as_str()
        .to_string();
    let raw_host = uri.host().ok_or_else(|| anyhow!("--url has no host"))?;
    let host = raw_host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !allow_remote && !is_loopback_host(&host) {
        bail!("refusing non-loopback target {host:?}; pass --allow-remote if you really mean it");
    }
    let port = uri.port_u16().unwrap_or(80);
    let prefix = uri.path().trim_end_matches('/').to_string();
    Ok(UrlParts {
        host,
        port,
        authority,
        prefix,
    })
}

pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Resolve once up front; re-checking the resolved address catches a `localhost` that /etc/hosts
/// points elsewhere.
pub async fn resolve(parts: &UrlParts, allow_remote: bool) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((parts.host.as_str(), parts.port))
        .await
        .with_context(|| format!("cannot resolve {}", parts.host))?;
    let addr = addrs
        .next()
        .ok_or_else(|| anyhow!("{} resolved to no address", parts.host))?;
    if !allow_remote && !addr.ip().is_loopback() {
        bail!(
            "{} resolved to non-loopback {addr}; pass --allow-remote",
            parts.host
        );
    }
    Ok(addr)
}

/// Parses the server's readiness line, `listening on http://127.0.0.1:PORT`. Tolerates a log
/// prefix before it and a trailing slash or words after it.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let idx = line.find("listening on http://")?;
    let rest = &line[idx + "listening on http://".len()..];
    let addr = rest.split_whitespace().next()?.trim_end_matches('/');
    addr.parse().ok()
}

/// A `sessiond serve` child with its own throwaway data dir.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub version: Option<String>,
    // Dropped (and removed) after the child is killed in `shutdown`.
    data_dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(bin: &Path, extra_args: &[String], log_level: &str) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "server binary {} not found; build it (cargo build --release -p sessiond) or pass --server-bin / --url",
                bin.display()
            );
        }
        let version = server_version(bin).await;
        let data_dir = tempfile::Builder::new()
            .prefix("sessiond-bench-")
            .tempdir()
            .context("cannot create a temp data dir")?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra_args)
            // Per-request logging to a pipe would be measured as server cost; keep it quiet.
            // sessiond reads SESSIOND_LOG; RUST_LOG covers builds that use the usual name.
            .env("SESSIOND_LOG", log_level)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("server exited immediately"))?;

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_tail(stderr, Arc::clone(&tail)));
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("server stdout not captured"))?;
        let mut lines = BufReader::new(stdout).lines();

        let wait_ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = parse_listening_line(&line) {
                    return anyhow::Ok(Some(addr));
                }
            }
            Ok(None)
        };
        let ready = tokio::time::timeout(STARTUP_TIMEOUT, wait_ready).await;
        let addr = match ready {
            Ok(Ok(Some(addr))) => addr,
            other => {
                let why = match other {
                    Err(_) => format!("no listening line within {}s", STARTUP_TIMEOUT.as_secs()),
                    Ok(Err(e)) => format!("reading its stdout failed: {e}"),
                    _ => "it closed stdout without a listening line".to_string(),
                };
                let _ = child.start_kill();
                let _ = child.wait().await;
                // Let the stderr task catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                bail!(
                    "server did not start: {why}\n--- server stderr (tail) ---\n{}",
                    tail_text(&tail)
                );
            }
        };
        // Keep draining so a chatty server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        Ok(Self {
            child,
            pid,
            addr,
            version,
            data_dir: Some(data_dir),
        })
    }

    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Has the child died under us (crash, OOM)?
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub async fn shutdown(mut self) -> Result<()> {
        // The data dir is throwaway, so there is nothing a graceful stop would save.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(dir) = self.data_dir.take() {
            dir.close().context("cannot remove the temp data dir")?;
        }
        Ok(())
    }
}

async fn server_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!v.is_empty()).then_some(v)
}

async fn keep_tail(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL {
            t.pop_front();
        }
        t.push_back(line);
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.is_empty() {
        return "(empty)".to_string();
    }
    t.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Bytes of the files under `path` (the store's on-disk footprint); unreadable entries count 0.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn read_memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(Memory {
        rss_kib: status_kib(&text, "VmRSS").ok_or_else(|| anyhow!("no VmRSS in {path}"))?,
        hwm_kib: status_kib(&text, "VmHWM").unwrap_or(0),
    })
}

/// `VmRSS:\t  12345 kB` → 12345.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `(soft, hard)` limit on open files of this process (and so of a server it starts), from
/// `/proc/self/limits`; `None` when unreadable. `u64::MAX` stands for `unlimited`.
///
/// Raising the soft limit needs `setrlimit`, which safe Rust cannot call without a libc binding
/// and the workspace forbids `unsafe`; so the bench checks and explains instead.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

pub fn parse_open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace().map(|w| {
        if w == "unlimited" {
            Some(u64::MAX)
        } else {
            w.parse().ok()
        }
    });
    Some((nums.next()??, nums.next()??))
}

/// The kernel's clock ticks per second for `/proc/<pid>/stat` times (`USER_HZ`). It is 100 on
/// every Linux architecture the bench targets; reading it properly needs `sysconf` (libc).
pub const USER_HZ: f64 = 100.0;

/// User + system CPU time of a process in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text)
}

pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy clock ticks of the whole machine (every CPU: user, nice, system, irq, softirq, steal;
/// not idle or iowait), from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&text)
}

pub fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (v.len() >= 4).then(|| at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        assert_eq!(
            parse_listening_line("listening on http://127.0.0.1:40123"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line(
                "2026-01-01T00:00:00Z INFO listening on http://127.0.0.1:8/ (auth off)"
            ),
            Some("127.0.0.1:8".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line("listening on http://[::1]:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(parse_listening_line("starting"), None);
        assert_eq!(parse_listening_line("listening on http://nohost"), None);
    }

    #[test]
    fn url_loopback_rules() {
        let p = parse_url("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 8080);
        assert_eq!(p.authority, "127.0.0.1:8080");
        assert_eq!(p.prefix, "");

        let p = parse_url("http://[::1]:9/base/", false).unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.authority, "[::1]:9");
        assert_eq!(p.prefix, "/base");

        let p = parse_url("http://localhost", false).unwrap();
        assert_eq!(p.port, 80);

        assert!(parse_url("http://10.0.0.1:80", false).is_err());
        assert!(parse_url("http://example.com", false).is_err());
        assert!(parse_url("http://example.com", true).is_ok());
        assert!(parse_url("https://127.0.0.1", false).is_err());
        assert!(parse_url("127.0.0.1:80", false).is_err());
    }

    #[test]
    fn proc_limits_and_stat() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95724                95724                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some((1024, 524_288)));
        let unl = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unl), Some((u64::MAX, u64::MAX)));
        assert_eq!(parse_open_files_limit("nothing"), None);
        assert!(open_files_limit().is_some());

        let stat = "1234 (tokio (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
        assert!(cpu_ticks(std::process::id()).is_some());

        let stat = "cpu  100 20 30 1000 5 1 2 3 0 0\ncpu0 50 10 15 500 2 0 1 1 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(156));
        assert_eq!(parse_machine_busy("cpu0 1 2 3 4\n"), None);
        assert!(machine_busy_ticks().is_some());
    }

    #[test]
    fn proc_status_fields() {
        let s = "Name:\tsessiond\nVmHWM:\t  2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kib(s, "VmRSS"), Some(1024));
        assert_eq!(status_kib(s, "VmHWM"), Some(2048));
        assert_eq!(status_kib(s, "VmSwap"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 15);
        // Our own process always has one.
        assert!(read_memory(std::process::id()).unwrap().rss_kib > 0);
    }
}
