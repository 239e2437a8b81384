//! Jobs: per session, and the worker protocol under `/v1/jobs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{Client, ClientError, Method, Result};

/// Slack on top of a claim's `wait` before the request is given up: the server answers at
/// `wait` at the latest, so only a hung connection runs into this.
const CLAIM_SLACK: Duration = Duration::from_secs(30);

/// A job as the server renders it. Every nullable field is present on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub session_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub input: Value,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub progress: Option<Value>,
    pub attempts: i64,
    pub max_attempts: i64,
    #[serde(default)]
    pub reused_from: Option<String>,
    #[serde(default)]
    pub output_key: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub updated_at: String,
}

impl Job {
    /// Succeeded, failed or cancelled: nothing will change it any more.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// A job leased to this worker, with the lease that heartbeat, complete and fail present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedJob {
    #[serde(flatten)]
    pub job: Job,
    pub lease_id: String,
}

/// Body of `POST /v1/sessions/{session}/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJob {
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON object; the server default is `{}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Map<String, Value>>,
    /// Reuse an earlier success with the same type and normalized input (server default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<bool>,
    /// Top-level key of the session's data that receives the result on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// 1–100 (server default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
}

impl ClientError {
    /// The server says this worker no longer holds the job (expired, cancelled, re-leased).
    pub fn is_lease_lost(&self) -> bool {
        self.status() == Some(409) && self.code() == Some("lease_lost")
    }
}

impl Client {
    /// Creates a job on the session (id or externalId). With reuse, the job may come back
    /// already `succeeded` with `reusedFrom` set.
    pub async fn create_job(&self, session: &str, body: &CreateJob) -> Result<Job> {
        let url = self.url(&["v1", "sessions", session, "jobs"])?;
        let req = self.request(Method::POST, url.clone()).json(body);
        Self::json(self.send(req, &url).await?).await
    }

    /// The session's jobs, oldest first.
    pub async fn list_jobs(&self, session: &str) -> Result<Vec<Job>> {
        let url = self.url(&["v1", "sessions", session, "jobs"])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    pub async fn get_job(&self, id: &str) -> Result<Job> {
        let url = self.url(&["v1", "jobs", id])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// Leases the oldest queued job of `types`, long-polling up to `wait_secs` (≤ 60) for one;
    /// `None` when none came. `lease_seconds` is 5–3600 (server default 60).
    pub async fn claim_job(
        &self,
        types: &[String],
        lease_seconds: Option<u64>,
        wait_secs: u64,
        worker_id: Option<&str>,
    ) -> Result<Option<ClaimedJob>> {
        let url = self.url(&["v1", "jobs", "claim"])?;
        let mut body = json!({ "types": types, "wait": wait_secs });
        if let Some(l) = lease_seconds {
            body["leaseSeconds"] = l.into();
        }
        if let Some(w) = worker_id {
            body["workerId"] = w.into();
        }
        // The client has no overall timeout (long polls are legitimate); this one bounds a
        // claim whose connection hangs.
        let req = self
            .request(Method::POST, url.clone())
            .timeout(Duration::from_secs(wait_secs) + CLAIM_SLACK)
            .json(&body);
        let resp = self.send(req, &url).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::json(resp).await.map(Some)
    }

    /// Extends the lease (by the claim's leaseSeconds) and records `progress` when given.
    /// A lost lease is `ClientError::is_lease_lost`.
    pub async fn heartbeat_job(
        &self,
        id: &str,
        lease_id: &str,
        progress: Option<&Value>,
    ) -> Result<Job> {
        let mut body = json!({ "leaseId": lease_id });
        if let Some(p) = progress {
            body["progress"] = p.clone();
        }
        self.job_action(id, "heartbeat", &body).await
    }

    /// The job succeeded with `result` (also merge-patched into the session's data at the
    /// job's outputKey).
    pub async fn complete_job(&self, id: &str, lease_id: &str, result: &Value) -> Result<Job> {
        let body = json!({ "leaseId": lease_id, "result": result });
        self.job_action(id, "complete", &body).await
    }

    /// The attempt failed: the job is queued again while attempts remain (unless `retry` is
    /// false), else failed.
    pub async fn fail_job(
        &self,
        id: &str,
        lease_id: &str,
        error: &Value,
        retry: Option<bool>,
    ) -> Result<Job> {
        let mut body = json!({ "leaseId": lease_id, "error": error });
        if let Some(r) = retry {
            body["retry"] = r.into();
        }
        self.job_action(id, "fail", &body).await
    }

    /// Cancels a queued or running job; a finished job comes back unchanged.
    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        self.job_action(id, "cancel", &json!({})).await
    }

    async fn job_action(&self, id: &str, action: &str, body: &Value) -> Result<Job> {
        let url = self.url(&["v1", "jobs", id, action])?;
        let req = self.request(Method::POST, url.clone()).json(body);
        Self::json(self.send(req, &url).await?).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn job_json() -> Value {
        json!({
            "id": "j1", "sessionId": "s1", "type": "echo", "status": "running",
            "input": {"a": 1}, "result": null, "error": null, "progress": null,
            "attempts": 1, "maxAttempts": 3, "reusedFrom": null, "outputKey": "out",
            "leaseExpiresAt": "2024-01-01T00:01:00Z", "createdAt": "2024-01-01T00:00:00Z",
            "startedAt": "2024-01-01T00:00:00Z", "finishedAt": null,
            "updatedAt": "2024-01-01T00:00:00Z"
        })
    }

    #[test]
    fn job_wire_shape() {
        let job: Job = serde_json::from_value(job_json()).unwrap();
        assert_eq!(job.kind, "echo");
        assert_eq!(job.output_key.as_deref(), Some("out"));
        assert!(!job.is_finished());
        // Every nullable field renders back as null, like the server's.
        assert_eq!(serde_json::to_value(&job).unwrap(), job_json());

        let mut claimed = job_json();
        claimed["leaseId"] = json!("l1");
        let c: ClaimedJob = serde_json::from_value(claimed.clone()).unwrap();
        assert_eq!(c.lease_id, "l1");
        assert_eq!(c.job, job);
        assert_eq!(serde_json::to_value(&c).unwrap(), claimed);
    }

    #[test]
    fn create_body_omits_defaults() {
        let body = CreateJob {
            kind: "echo".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"type": "echo"})
        );
        let body = CreateJob {
            kind: "echo".into(),
            input: Some(Map::new()),
            reuse: Some(false),
            output_key: Some("k".into()),
            max_attempts: Some(1),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"type": "echo", "input": {}, "reuse": false, "outputKey": "k", "maxAttempts": 1})
        );
    }

    #[test]
    fn recognizes_a_lost_lease() {
        let lost = ClientError::Api {
            status: 409,
            code: "lease_lost".into(),
            message: "x".into(),
        };
        assert!(lost.is_lease_lost());
        let other = ClientError::Api {
            status: 409,
            code: "session_closed".into(),
            message: "x".into(),
        };
        assert!(!other.is_lease_lost());
        assert!(!ClientError::Transport("x".into()).is_lease_lost());
    }
}
