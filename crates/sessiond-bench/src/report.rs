//! Percentile maths and the printed/JSON report.

use std::time::Duration;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant digits (0.1% error).
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// One measured scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl Summary {
    /// `window` is the measured time (warm-up excluded) the histogram's requests completed in.
    pub fn from_histogram(h: &Histogram<u64>, errors: u64, window: Duration) -> Self {
        let requests = h.len();
        let secs = window.as_secs_f64();
        let ms = |us: u64| us as f64 / 1000.0;
        let (p50, p99, max) = if requests == 0 {
            (0, 0, 0)
        } else {
            (
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.99),
                h.max(),
            )
        };
        Self {
            requests,
            rps: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
            errors,
        }
    }
}

/// A row of the report plus what only the notes and JSON carry.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: String,
    pub concurrency: usize,
    /// `Err` when the scenario could not run (setup failed); the message says why.
    pub result: Result<Summary, String>,
    /// Channel records moved per second (appended, or delivered for `fanout`), when that
    /// differs from requests.
    pub records_per_s: Option<f64>,
    /// Whether throughput relative to `bare` means anything (not for streaming scenarios,
    /// whose "requests" are deliveries or subscriptions).
    pub compare_to_bare: bool,
    pub vs_bare: Option<f64>,
    pub first_error: Option<String>,
    /// Extra human-readable lines printed under the table.
    pub notes: Vec<String>,
    /// Extra fields for the JSON document (seeding, memory).
    pub extra: Map<String, Value>,
}

impl ScenarioReport {
    pub fn failed(name: &str, concurrency: usize, why: String) -> Self {
        Self {
            name: name.to_string(),
            concurrency,
            result: Err(why),
            records_per_s: None,
            compare_to_bare: true,
            vs_bare: None,
            first_error: None,
            notes: Vec::new(),
            extra: Map::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "scenario": self.name,
            "concurrency": self.concurrency,
        });
        if let Value::Object(m) = &mut v {
            match &self.result {
                Ok(s) => {
                    m.insert("requests".into(), json!(s.requests));
                    m.insert("rps".into(), json!(round3(s.rps)));
                    m.insert(
                        "recordsPerSec".into(),
                        json!(self.records_per_s.map(round3)),
                    );
                    m.insert("p50Ms".into(), json!(round3(s.p50_ms)));
                    m.insert("p99Ms".into(), json!(round3(s.p99_ms)));
                    m.insert("maxMs".into(), json!(round3(s.max_ms)));
                    m.insert("errors".into(), json!(s.errors));
                    m.insert("vsBare".into(), json!(self.vs_bare.map(round3)));
                    m.insert("failed".into(), Value::Null);
                }
                Err(why) => {
                    m.insert("failed".into(), json!(why));
                }
            }
            m.insert("firstError".into(), json!(self.first_error));
            for (k, x) in &self.extra {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sets every row's throughput relative to the `bare` row of the same run.
pub fn apply_vs_bare(reports: &mut [ScenarioReport]) {
    let bare = reports
        .iter()
        .find(|r| r.name == "bare")
        .and_then(|r| r.result.as_ref().ok())
        .map(|s| s.rps)
        .filter(|rps| *rps > 0.0);
    for r in reports.iter_mut() {
        r.vs_bare = match (&r.result, bare) {
            (Ok(s), Some(b)) if r.compare_to_bare => Some(s.rps / b),
            _ => None,
        };
    }
}

pub const COLUMNS: [&str; 10] = [
    "scenario",
    "concurrency",
    "requests",
    "req/s",
    "records/s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "vs_bare",
];
const WIDTHS: [usize; 10] = [14, 11, 10, 10, 10, 9, 9, 9, 7, 7];

/// Fixed-width line: the first column left-aligned, the numbers right-aligned.
pub fn format_row(cells: &[String; 10]) -> String {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(WIDTHS).enumerate() {
        if i == 0 {
            line.push_str(&format!("{cell:<w$}"));
        } else {
            line.push_str(&format!("  {cell:>w$}"));
        }
    }
    line.trim_end().to_string()
}

pub fn row_cells(r: &ScenarioReport) -> [String; 10] {
    let dash = || "-".to_string();
    match &r.result {
        Ok(s) => [
            r.name.clone(),
            r.concurrency.to_string(),
            s.requests.to_string(),
            format!("{:.0}", s.rps),
            r.records_per_s.map_or_else(dash, |x| format!("{x:.0}")),
            format!("{:.3}", s.p50_ms),
            format!("{:.3}", s.p99_ms),
            format!("{:.3}", s.max_ms),
            s.errors.to_string(),
            r.vs_bare.map_or_else(dash, |x| format!("{x:.2}")),
        ],
        Err(_) => [
            r.name.clone(),
            r.concurrency.to_string(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            "failed".to_string(),
            dash(),
        ],
    }
}

/// The table plus the notes (failures, first errors, seeding, memory) under it.
pub fn render(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    out.push_str(&format_row(&COLUMNS.map(str::to_string)));
    out.push('\n');
    for r in reports {
        out.push_str(&format_row(&row_cells(r)));
        out.push('\n');
    }
    let mut notes = Vec::new();
    for r in reports {
        if let Err(why) = &r.result {
            notes.push(format!("{}: FAILED: {why}", r.name));
        }
        for n in &r.notes {
            notes.push(format!("{}: {n}", r.name));
        }
        if let Some(e) = &r.first_error {
            notes.push(format!("{}: first error: {e}", r.name));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// KiB → "123.4 MiB".
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The command line as it could be pasted back into a shell, with a `--key` value hidden.
pub fn command_line(args: &[String]) -> String {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        if a == "--key" {
            hide_next = true;
            out.push(a.clone());
        } else if a.starts_with("--key=") {
            out.push("--key=***".to_string());
        } else {
            out.push(shell_quote(a));
        }
    }
    out.join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hist_1_to_1000() -> Histogram<u64> {
        let mut h = new_histogram().unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        h
    }

    #[test]
    fn percentiles_and_rate() {
        let s = Summary::from_histogram(&hist_1_to_1000(), 3, Duration::from_secs(2));
        assert_eq!(s.requests, 1000);
        assert_eq!(s.rps, 500.0);
        assert_eq!(s.p50_ms, 0.5);
        assert_eq!(s.p99_ms, 0.99);
        assert_eq!(s.max_ms, 1.0);
        assert_eq!(s.errors, 3);
    }

    #[test]
    fn percentiles_stay_within_precision_for_large_values() {
        let mut h = new_histogram().unwrap();
        h.record_n(1_000, 99).unwrap();
        h.record(5_000_000).unwrap(); // one 5 s outlier
        let s = Summary::from_histogram(&h, 0, Duration::from_secs(1));
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p99_ms, 1.0);
        assert!((s.max_ms - 5000.0).abs() / 5000.0 < 0.001, "{}", s.max_ms);
        // Values over the histogram's range are clamped rather than lost.
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 101);
    }

    #[test]
    fn empty_histogram_is_zero_not_nan() {
        let s = Summary::from_histogram(&new_histogram().unwrap(), 0, Duration::ZERO);
        assert_eq!((s.requests, s.rps, s.p99_ms), (0, 0.0, 0.0));
    }

    fn report(name: &str, rps: f64) -> ScenarioReport {
        ScenarioReport {
            name: name.into(),
            concurrency: 64,
            result: Ok(Summary {
                requests: 1234,
                rps,
                p50_ms: 0.4123,
                p99_ms: 2.5,
                max_ms: 10.0,
                errors: 0,
            }),
            records_per_s: None,
            compare_to_bare: true,
            vs_bare: None,
            first_error: None,
            notes: Vec::new(),
            extra: Map::new(),
        }
    }

    #[test]
    fn table_layout_and_vs_bare() {
        let mut rs = vec![
            report("bare", 20000.0),
            report("create", 5000.0),
            ScenarioReport::failed("get", 64, "pool creation failed".into()),
        ];
        rs[1].first_error = Some("HTTP 500: boom".into());
        apply_vs_bare(&mut rs);
        assert_eq!(rs[0].vs_bare, Some(1.0));
        assert_eq!(rs[1].vs_bare, Some(0.25));
        assert_eq!(rs[2].vs_bare, None);

        let text = render(&rs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "scenario        concurrency    requests       req/s   records/s     p50_ms     p99_ms     max_ms   errors  vs_bare"
        );
        assert_eq!(
            lines[2],
            "create                   64        1234        5000           -      0.412      2.500     10.000        0     0.25"
        );
        // Columns line up: every row is as wide as the header.
        assert_eq!(lines[1].len(), lines[0].len());
        assert!(lines[3].starts_with("get ") && lines[3].contains("failed"));
        assert!(text.contains("get: FAILED: pool creation failed"));
        assert!(text.contains("create: first error: HTTP 500: boom"));
    }

    #[test]
    fn records_column_and_streaming_rows() {
        let mut rs = vec![report("bare", 20000.0), report("append-batch", 100.0)];
        rs[1].records_per_s = Some(10_000.0);
        let mut fan = report("fanout", 200_000.0);
        fan.compare_to_bare = false;
        rs.push(fan);
        apply_vs_bare(&mut rs);
        assert_eq!(rs[1].vs_bare, Some(0.005));
        assert_eq!(rs[2].vs_bare, None);
        let text = render(&rs);
        let line = text.lines().nth(2).unwrap();
        assert!(line.starts_with("append-batch "), "{line}");
        assert!(line.contains(" 100       10000 "), "{line}");
        assert_eq!(rs[1].to_json()["recordsPerSec"], 10_000.0);
        assert!(rs[0].to_json()["recordsPerSec"].is_null());
    }

    #[test]
    fn no_bare_row_means_no_ratio() {
        let mut rs = vec![report("create", 5000.0)];
        apply_vs_bare(&mut rs);
        assert_eq!(rs[0].vs_bare, None);
        assert!(render(&rs).lines().nth(1).unwrap().ends_with(" -"));
    }

    #[test]
    fn json_shape() {
        let mut r = report("list", 1000.0);
        r.vs_bare = Some(0.5);
        r.extra.insert("rssKib".into(), json!(1024));
        let v = r.to_json();
        assert_eq!(v["scenario"], "list");
        assert_eq!(v["p50Ms"], 0.412);
        assert_eq!(v["vsBare"], 0.5);
        assert_eq!(v["rssKib"], 1024);
        assert!(v["failed"].is_null());
        let f = ScenarioReport::failed("get", 1, "x".into()).to_json();
        assert_eq!(f["failed"], "x");
    }

    #[test]
    fn command_line_quotes_and_hides_key() {
        let args: Vec<String> = [
            "sessiond-bench",
            "--key",
            "sk_secret",
            "--url",
            "http://127.0.0.1:1",
            "--key=abc",
            "a b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            command_line(&args),
            "sessiond-bench --key *** --url http://127.0.0.1:1 --key=*** 'a b'"
        );
    }

    #[test]
    fn mib_formatting() {
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
