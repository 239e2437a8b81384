//! Jobs: work tracked per session, run by the server or leased to external workers.
//!
//! The state machine lives here as pure functions: the store applies them while it holds the
//! job's row, so every backend follows the same rules.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::codes;
use crate::event::Event;
use crate::limits::*;
use crate::session::Session;
use crate::{AccountId, Error, ErrorKind, SessionId, Timestamp};

crate::ids::uuid_id!(
    /// A job's id.
    JobId
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub account_id: AccountId,
    pub session_id: SessionId,
    pub kind: String,
    pub input: Value,
    /// SHA-256 of the normalized input: what reuse compares.
    pub input_hash: String,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub progress: Option<Value>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub reused_from: Option<JobId>,
    pub output_key: Option<String>,
    /// Identifies the current claim; heartbeat/complete/fail must present it.
    pub lease_id: Option<Uuid>,
    /// The lease length of the current claim; heartbeats extend by as much.
    pub lease_seconds: i64,
    pub lease_expires_at: Option<Timestamp>,
    pub worker_id: Option<String>,
    pub status: JobStatus,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// Top-level input keys that do not take part in reuse: ids of the session and documents the job
/// runs for, and the cache flags themselves.
const NORMALIZE_STRIP: &[&str] = &[
    "sessionId",
    "session_id",
    "docId",
    "doc_id",
    "documentId",
    "document_id",
    "reuse",
    "usePreviousSessionData",
    "skipCache",
];

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The input as reuse compares it: keys sorted at every level, ids and cache flags removed.
pub fn normalized_input(input: &Value) -> Value {
    let mut v = sorted(input);
    if let Value::Object(m) = &mut v {
        for k in NORMALIZE_STRIP {
            m.remove(*k);
        }
    }
    v
}

pub fn input_hash(kind: &str, input: &Value) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(normalized_input(input).to_string().as_bytes());
    hex_lower(&h.finalize())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw create input as a surface parsed it.
#[derive(Debug, Clone)]
pub struct CreateJobInput {
    pub kind: String,
    pub input: Option<Value>,
    pub reuse: bool,
    pub output_key: Option<String>,
    pub max_attempts: Option<i64>,
}

pub fn validate_type(kind: &str) -> Result<(), Error> {
    let ok = !kind.is_empty()
        && kind.chars().count() <= JOB_TYPE_MAX_CHARS
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_field(format!(
            "type must be 1 to {JOB_TYPE_MAX_CHARS} of A-Z, a-z, 0-9, '.', '_', '-', ':', '/', got {kind:?}"
        )))
    }
}

pub fn validate_output_key(key: &str) -> Result<(), Error> {
    let n = key.chars().count();
    if n == 0 || n > OUTPUT_KEY_MAX_CHARS || key.trim() != key || key.chars().any(char::is_control)
    {
        return Err(Error::invalid_field(format!(
            "outputKey must be a top-level key of the session's data: 1 to {OUTPUT_KEY_MAX_CHARS} characters, \
             no control characters or surrounding spaces"
        )));
    }
    Ok(())
}

impl CreateJobInput {
    /// Checks every limit and builds the queued job (its session is filled in by the store).
    pub fn validate(self, account: AccountId, now: Timestamp) -> Result<(Job, bool), Error> {
        validate_type(&self.kind)?;
        let input = match self.input {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(Error::invalid_field("input must be a JSON object")),
        };
        let size = input.to_string().len();
        if size > JOB_INPUT_MAX_BYTES {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                codes::PAYLOAD_TOO_LARGE,
                format!("input is {size} bytes as JSON; the limit is {JOB_INPUT_MAX_BYTES}"),
            ));
        }
        if let Some(k) = &self.output_key {
            validate_output_key(k)?;
        }
        let max_attempts = self.max_attempts.unwrap_or(JOB_MAX_ATTEMPTS_DEFAULT);
        if !(1..=JOB_MAX_ATTEMPTS_MAX).contains(&max_attempts) {
            return Err(Error::invalid_field(format!(
                "maxAttempts must be from 1 to {JOB_MAX_ATTEMPTS_MAX}"
            )));
        }
        let input_hash = input_hash(&self.kind, &input);
        Ok((
            Job {
                id: JobId::random(),
                account_id: account,
                session_id: SessionId(Uuid::nil()),
                kind: self.kind,
                input,
                input_hash,
                result: None,
                error: None,
                progress: None,
                attempts: 0,
                max_attempts,
                reused_from: None,
                output_key: self.output_key,
                lease_id: None,
                lease_seconds: 0,
                lease_expires_at: None,
                worker_id: None,
                status: JobStatus::Queued,
                created_at: now,
                started_at: None,
                finished_at: None,
                updated_at: now,
            },
            self.reuse,
        ))
    }
}

fn lease_lost(job: &Job) -> Error {
    Error::conflict(
        codes::LEASE_LOST,
        format!(
            "job {} is {} and not held by this lease (it expired, was cancelled or finished)",
            job.id,
            job.status.as_str()
        ),
    )
}

impl Job {
    fn event(&self, kind: JobEventKind) -> Event {
        Event::Job {
            kind,
            job_id: self.id,
            job_type: self.kind.clone(),
            status: self.status.as_str(),
            attempts: self.attempts,
            detail: match kind {
                JobEventKind::Progress => self.progress.clone(),
                JobEventKind::Succeeded => Some(json!({
                    "reusedFrom": self.reused_from.map(|r| r.to_string()),
                    "outputKey": self.output_key,
                })),
                JobEventKind::Failed | JobEventKind::Queued if self.error.is_some() => {
                    Some(json!({ "error": self.error }))
                }
                _ => None,
            },
        }
    }

    /// The event for a newly created job.
    pub fn created_event(&self) -> Event {
        self.event(if self.status == JobStatus::Succeeded {
            JobEventKind::Succeeded
        } else {
            JobEventKind::Queued
        })
    }

    /// Turns a new job into a reuse of `previous` (a succeeded job with the same normalized input).
    pub fn reuse(&mut self, previous: &Job, now: Timestamp) {
        self.status = JobStatus::Succeeded;
        self.result = previous.result.clone();
        // Point at the job that computed the result, not at an earlier reuse of it.
        self.reused_from = Some(previous.reused_from.unwrap_or(previous.id));
        self.started_at = Some(now);
        self.finished_at = Some(now);
        self.updated_at = now;
    }

    /// Marks a new job succeeded without running it, with `result` taken from earlier work.
    pub fn succeed_reused(&mut self, reused_from: Option<JobId>, result: Value, now: Timestamp) {
        self.status = JobStatus::Succeeded;
        self.result = Some(result);
        self.reused_from = reused_from;
        self.started_at = Some(now);
        self.finished_at = Some(now);
        self.updated_at = now;
    }

    /// Leases a queued job to a worker.
    pub fn claim(&mut self, worker: Option<String>, lease_seconds: i64, now: Timestamp) -> Event {
        self.status = JobStatus::Running;
        self.attempts += 1;
        self.lease_id = Some(Uuid::new_v4());
        self.lease_seconds = lease_seconds;
        self.lease_expires_at = Some(now.plus_seconds(lease_seconds));
        self.worker_id = worker;
        self.started_at.get_or_insert(now);
        self.updated_at = now;
        self.event(JobEventKind::Running)
    }

    fn ensure_held(&self, lease: Uuid, now: Timestamp) -> Result<(), Error> {
        let live = self.status == JobStatus::Running
            && self.lease_id == Some(lease)
            && self.lease_expires_at.is_some_and(|e| e > now);
        if live {
            Ok(())
        } else {
            Err(lease_lost(self))
        }
    }

    /// Extends the lease; records progress when given.
    pub fn heartbeat(
        &mut self,
        lease: Uuid,
        progress: Option<Value>,
        now: Timestamp,
    ) -> Result<Vec<Event>, Error> {
        self.ensure_held(lease, now)?;
        self.lease_expires_at = Some(now.plus_seconds(self.lease_seconds));
        self.updated_at = now;
        match progress {
            Some(p) => {
                self.progress = Some(p);
                Ok(vec![self.event(JobEventKind::Progress)])
            }
            // A lease extension alone is not an event worth recording, but it must be written.
            None => Ok(vec![Event::Silent]),
        }
    }

    /// Completes the job; with `outputKey` the result is merge-patched into the session's data
    /// (unless the session is no longer active: then only the job records it).
    pub fn complete(
        &mut self,
        session: &mut Session,
        lease: Uuid,
        result: Value,
        now: Timestamp,
    ) -> Result<Vec<Event>, Error> {
        self.ensure_held(lease, now)?;
        self.succeed(session, result, now)
    }

    /// Marks the job succeeded and applies its output key.
    pub fn succeed(
        &mut self,
        session: &mut Session,
        result: Value,
        now: Timestamp,
    ) -> Result<Vec<Event>, Error> {
        self.status = JobStatus::Succeeded;
        self.result = Some(result);
        // An earlier attempt's error no longer describes the job.
        self.error = None;
        self.finish(now);
        let mut events = self.apply_output(session, now)?;
        events.insert(0, self.event(JobEventKind::Succeeded));
        Ok(events)
    }

    /// Writes the result at the output key of the session's data (a merge patch).
    pub fn apply_output(&self, session: &mut Session, now: Timestamp) -> Result<Vec<Event>, Error> {
        let (Some(key), Some(result)) = (&self.output_key, &self.result) else {
            return Ok(vec![]);
        };
        if !session.is_active(now) {
            return Ok(vec![]);
        }
        let patch = json!({ "data": { key.clone(): result.clone() } });
        Ok(session
            .apply_merge_patch(&patch, now)?
            .into_iter()
            .collect())
    }

    fn finish(&mut self, now: Timestamp) {
        self.lease_id = None;
        self.lease_expires_at = None;
        self.finished_at = Some(now);
        self.updated_at = now;
    }

    /// A failure reported by the worker: retried (queued again) while attempts remain, the
    /// worker did not say `retry: false` and the session is still active.
    pub fn fail(
        &mut self,
        session: &Session,
        lease: Uuid,
        error: Value,
        retry: bool,
        now: Timestamp,
    ) -> Result<Vec<Event>, Error> {
        self.ensure_held(lease, now)?;
        Ok(vec![self.failed_attempt(session, error, retry, now)])
    }

    fn failed_attempt(
        &mut self,
        session: &Session,
        error: Value,
        retry: bool,
        now: Timestamp,
    ) -> Event {
        self.error = Some(error);
        if !session.is_active(now) {
            // Nothing claims jobs of a closed session: a retry would wait for ever.
            self.status = JobStatus::Cancelled;
            self.finish(now);
            return self.event(JobEventKind::Cancelled);
        }
        if retry && self.attempts < self.max_attempts {
            self.status = JobStatus::Queued;
            self.lease_id = None;
            self.lease_expires_at = None;
            self.worker_id = None;
            self.updated_at = now;
            self.event(JobEventKind::Queued)
        } else {
            self.status = JobStatus::Failed;
            self.finish(now);
            self.event(JobEventKind::Failed)
        }
    }

    /// A lease ran out: back to the queue, or failed once attempts are used up. `None` when the
    /// lease is still live (or the job is not running).
    pub fn expire(&mut self, session: &Session, now: Timestamp) -> Option<Event> {
        if self.status != JobStatus::Running || self.lease_expires_at.is_none_or(|e| e > now) {
            return None;
        }
        let error = json!({ "message": "the worker's lease expired", "code": "lease_expired" });
        Some(self.failed_attempt(session, error, true, now))
    }

    /// Cancels a queued or running job; a finished job is left as it is (`None`).
    pub fn cancel(&mut self, now: Timestamp) -> Option<Event> {
        if self.status.is_final() {
            return None;
        }
        self.status = JobStatus::Cancelled;
        self.finish(now);
        Some(self.event(JobEventKind::Cancelled))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    Queued,
    Running,
    Progress,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobEventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobEventKind::Queued => "job.queued",
            JobEventKind::Running => "job.running",
            JobEventKind::Progress => "job.progress",
            JobEventKind::Succeeded => "job.succeeded",
            JobEventKind::Failed => "job.failed",
            JobEventKind::Cancelled => "job.cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CreateSessionInput;

    fn job() -> Job {
        CreateJobInput {
            kind: "scrape".into(),
            input: Some(json!({"url": "x", "sessionId": "s"})),
            reuse: true,
            output_key: Some("scrapeOutput".into()),
            max_attempts: Some(2),
        }
        .validate(AccountId::DEFAULT, Timestamp::from_millis(1000))
        .unwrap()
        .0
    }

    #[test]
    fn normalization_ignores_key_order_and_ids() {
        let a = input_hash(
            "t",
            &json!({"b": 1, "a": {"y": 1, "x": 2}, "sessionId": "s1", "reuse": true}),
        );
        let b = input_hash(
            "t",
            &json!({"a": {"x": 2, "y": 1}, "b": 1, "sessionId": "s2"}),
        );
        assert_eq!(a, b);
        assert_ne!(a, input_hash("t", &json!({"a": {"x": 2, "y": 1}, "b": 2})));
        assert_ne!(a, input_hash("u", &json!({"a": {"x": 2, "y": 1}, "b": 1})));
    }

    fn active_session(now: Timestamp) -> Session {
        CreateSessionInput::default()
            .validate(now)
            .unwrap()
            .into_session(AccountId::DEFAULT, now)
    }

    #[test]
    fn lease_rules() {
        let now = Timestamp::from_millis(10_000);
        let s = active_session(now);
        let mut j = job();
        j.claim(Some("w".into()), 10, now);
        let lease = j.lease_id.unwrap();
        assert_eq!(j.attempts, 1);
        assert!(
            j.heartbeat(Uuid::new_v4(), None, now).is_err(),
            "other lease"
        );
        assert!(j.expire(&s, now).is_none(), "lease still live");
        let later = now.plus_seconds(11);
        j.expire(&s, later).unwrap();
        assert_eq!(j.status, JobStatus::Queued, "requeued: attempts remain");
        assert_eq!(
            j.fail(&s, lease, json!("x"), true, later).unwrap_err().code,
            codes::LEASE_LOST
        );
        j.claim(None, 10, later);
        let lease2 = j.lease_id.unwrap();
        j.fail(&s, lease2, json!({"message": "boom"}), true, later)
            .unwrap();
        assert_eq!(j.status, JobStatus::Failed, "max attempts reached");
        assert!(j.cancel(later).is_none(), "final stays final");
    }

    #[test]
    fn a_failing_job_of_a_closed_session_is_cancelled_not_requeued() {
        let now = Timestamp::from_millis(10_000);
        let mut s = active_session(now);
        let mut j = job();
        j.claim(None, 10, now);
        s.close(None, now);
        j.fail(&s, j.lease_id.unwrap(), json!("x"), true, now)
            .unwrap();
        assert_eq!(j.status, JobStatus::Cancelled);
    }

    #[test]
    fn completion_applies_output_key() {
        let now = Timestamp::from_millis(10_000);
        let mut s = CreateSessionInput::default()
            .validate(now)
            .unwrap()
            .into_session(AccountId::DEFAULT, now);
        let mut j = job();
        j.claim(None, 10, now);
        let lease = j.lease_id.unwrap();
        let events = j.complete(&mut s, lease, json!({"pages": 3}), now).unwrap();
        assert_eq!(events.len(), 2, "job.succeeded and session.patched");
        assert_eq!(s.data["scrapeOutput"], json!({"pages": 3}));
        assert_eq!(s.version, 2);
        assert_eq!(j.status, JobStatus::Succeeded);
        assert!(
            j.complete(&mut s, lease, json!(1), now).is_err(),
            "late complete"
        );
    }
}
