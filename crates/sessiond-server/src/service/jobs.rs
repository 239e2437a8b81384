use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sessiond_core::error::codes;
use sessiond_core::event::EVENTS_CHANNEL;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::limits::*;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, JobId, SessionId, Timestamp};
use sessiond_store::{Hub, JobUpdate, Store, UpdateJob};
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

/// Job types the server runs itself (document processing); workers cannot claim them.
pub const SERVER_JOB_TYPES: &[&str] = &["document.process", "documentation.processUpload"];

/// See [`JobService::create_with`].
pub type SessionChangeForJob = Box<
    dyn FnOnce(&Job, &mut Session, Timestamp) -> Result<Vec<sessiond_core::event::Event>, Error>
        + Send,
>;

/// How often expired leases are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct JobService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    reuse_window_seconds: i64,
}

/// A claim request, validated.
pub struct Claim {
    pub types: Vec<String>,
    pub lease_seconds: i64,
    pub wait: Duration,
    pub worker_id: Option<String>,
}

impl Claim {
    pub fn new(
        types: Vec<String>,
        lease_seconds: Option<i64>,
        wait: Option<u64>,
        worker_id: Option<String>,
    ) -> Result<Claim, Error> {
        if types.len() > JOB_CLAIM_TYPES_MAX {
            return Err(Error::invalid_field(format!(
                "a claim names at most {JOB_CLAIM_TYPES_MAX} types"
            )));
        }
        let lease_seconds = lease_seconds.unwrap_or(LEASE_SECONDS_DEFAULT);
        if !(LEASE_SECONDS_MIN..=LEASE_SECONDS_MAX).contains(&lease_seconds) {
            return Err(Error::invalid_field(format!(
                "leaseSeconds must be from {LEASE_SECONDS_MIN} to {LEASE_SECONDS_MAX}"
            )));
        }
        let wait = wait.unwrap_or(0);
        if wait > WAIT_MAX_SECONDS {
            return Err(Error::invalid_field(format!(
                "wait must be from 0 to {WAIT_MAX_SECONDS} seconds"
            )));
        }
        if let Some(w) = &worker_id {
            if w.chars().count() > 256 {
                return Err(Error::invalid_field(
                    "workerId must be at most 256 characters",
                ));
            }
        }
        Ok(Claim {
            types,
            lease_seconds,
            wait: Duration::from_secs(wait),
            worker_id,
        })
    }
}

fn job_not_found(id: JobId) -> Error {
    Error::not_found(codes::JOB_NOT_FOUND, format!("Job {id} not found"))
}

impl JobService {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        reuse_window_seconds: i64,
    ) -> Self {
        Self {
            store,
            hub,
            shutdown,
            reuse_window_seconds,
        }
    }

    fn changed(&self, job: &Job) {
        self.hub.channel_changed(job.session_id, EVENTS_CHANNEL);
        if job.status == JobStatus::Queued {
            self.hub.job_queued();
        }
    }

    /// Creates a job. With `reuse`, an earlier success of the same type and normalized input in
    /// the account, finished within the reuse window, is reused: the new job is created
    /// succeeded with its result (and its output key applied).
    pub async fn create(
        &self,
        account: AccountId,
        session: &SessionRef,
        input: CreateJobInput,
    ) -> Result<Job, Error> {
        Ok(self.create_with(account, session, input, None).await?.0)
    }

    /// Like [`JobService::create`], and `change` also changes the session in the same
    /// transaction, given the settled job (for example to record the job's id in the session's
    /// data). It returns the events describing its change (none: it changed nothing); an error
    /// aborts the whole creation. Returns the job and the session after the transaction.
    #[instrument(skip_all, fields(session = %session))]
    pub async fn create_with(
        &self,
        account: AccountId,
        session: &SessionRef,
        input: CreateJobInput,
        change: Option<SessionChangeForJob>,
    ) -> Result<(Job, Session), Error> {
        let now = Timestamp::now();
        let (job, reuse) = input.validate(account, now)?;
        let since = reuse.then(|| now.plus_seconds(-self.reuse_window_seconds));
        let (job, session_after) = self
            .store
            .create_job(
                account,
                session,
                job,
                since,
                Box::new(
                    move |job: &mut Job, s: &mut Session, previous: Option<&Job>| {
                        s.ensure_active(now)?;
                        let mut events = match previous {
                            Some(previous) => {
                                job.reuse(previous, now);
                                let mut events = vec![job.created_event()];
                                events.extend(job.apply_output(s, now)?);
                                events
                            }
                            None => vec![job.created_event()],
                        };
                        if let Some(change) = change {
                            events.extend(change(job, s, now)?);
                        }
                        Ok(events)
                    },
                ),
            )
            .await?
            .ok_or_else(|| Error::session_not_found(session))?;
        metrics::counter!("sessiond_jobs_created_total", "reused" => if job.reused_from.is_some() { "true" } else { "false" }).increment(1);
        self.changed(&job);
        Ok((job, session_after))
    }

    pub async fn get(&self, account: AccountId, id: JobId) -> Result<Job, Error> {
        self.store
            .get_job(account, id)
            .await?
            .ok_or_else(|| job_not_found(id))
    }

    pub async fn list(&self, session: SessionId) -> Result<Vec<Job>, Error> {
        Ok(self.store.list_jobs(session).await?)
    }

    async fn update(&self, account: AccountId, id: JobId, update: JobUpdate) -> Result<Job, Error> {
        match self.store.update_job(account, id, update).await? {
            UpdateJob::NotFound => Err(job_not_found(id)),
            UpdateJob::Unchanged(job) => Ok(job),
            UpdateJob::Updated(job, _) => {
                self.changed(&job);
                Ok(job)
            }
        }
    }

    /// Leases the oldest queued job of the given types, waiting up to `claim.wait` for one.
    #[instrument(skip_all, fields(types = ?claim.types))]
    pub async fn claim(&self, account: AccountId, mut claim: Claim) -> Result<Option<Job>, Error> {
        // The server runs its own job types; workers cannot take them.
        claim
            .types
            .retain(|t| !SERVER_JOB_TYPES.contains(&t.as_str()));
        self.claim_in(Some(account), claim).await
    }

    /// Like [`JobService::claim`] across every account (for the server's own processors).
    pub async fn claim_any(&self, claim: Claim) -> Result<Option<Job>, Error> {
        self.claim_in(None, claim).await
    }

    async fn claim_in(
        &self,
        account: Option<AccountId>,
        claim: Claim,
    ) -> Result<Option<Job>, Error> {
        let deadline = tokio::time::Instant::now() + claim.wait;
        loop {
            // Register for wake-ups before looking, so a job queued in between is not missed.
            let notified = self.hub.job_notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Timestamp::now();
            let worker = claim.worker_id.clone();
            let lease = claim.lease_seconds;
            let got = self
                .store
                .claim_job(
                    account,
                    &claim.types,
                    Box::new(move |job: &mut Job, _s: &mut Session| {
                        Ok(vec![job.claim(worker, lease, now)])
                    }),
                )
                .await?;
            if let Some((job, _)) = got {
                self.changed(&job);
                return Ok(Some(job));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    pub async fn heartbeat(
        &self,
        account: AccountId,
        id: JobId,
        lease: Uuid,
        progress: Option<Value>,
    ) -> Result<Job, Error> {
        let now = Timestamp::now();
        self.update(
            account,
            id,
            Box::new(move |job: &mut Job, _s: &mut Session| job.heartbeat(lease, progress, now)),
        )
        .await
    }

    pub async fn complete(
        &self,
        account: AccountId,
        id: JobId,
        lease: Uuid,
        result: Value,
    ) -> Result<Job, Error> {
        let now = Timestamp::now();
        self.update(
            account,
            id,
            Box::new(move |job: &mut Job, s: &mut Session| job.complete(s, lease, result, now)),
        )
        .await
    }

    pub async fn fail(
        &self,
        account: AccountId,
        id: JobId,
        lease: Uuid,
        error: Value,
        retry: bool,
    ) -> Result<Job, Error> {
        let now = Timestamp::now();
        self.update(
            account,
            id,
            Box::new(move |job: &mut Job, s: &mut Session| job.fail(s, lease, error, retry, now)),
        )
        .await
    }

    /// Cancels a queued or running job; a finished job is returned unchanged.
    pub async fn cancel(&self, account: AccountId, id: JobId) -> Result<Job, Error> {
        let now = Timestamp::now();
        self.update(
            account,
            id,
            Box::new(move |job: &mut Job, _s: &mut Session| {
                Ok(job.cancel(now).into_iter().collect())
            }),
        )
        .await
    }

    /// Cancels the session's queued jobs (the session was closed).
    pub async fn cancel_queued(&self, account: AccountId, session: SessionId) -> Result<(), Error> {
        for job in self.store.list_jobs(session).await? {
            if job.status == JobStatus::Queued {
                self.cancel(account, job.id).await?;
            }
        }
        Ok(())
    }

    /// Returns expired leases to the queue (or fails them) until shutdown.
    pub fn spawn_sweeper(&self) {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = svc.shutdown.cancelled() => return,
                }
                if let Err(e) = svc.sweep().await {
                    tracing::warn!(error = %e, "lease sweep failed");
                }
            }
        });
    }

    pub async fn sweep(&self) -> Result<usize, Error> {
        let now = Timestamp::now();
        let expired = self.store.expired_leases(now, 1000).await?;
        let n = expired.len();
        for (account, id) in expired {
            // One job that cannot be updated must not hold up the others.
            if let Err(e) = self
                .update(
                    account,
                    id,
                    Box::new(move |job: &mut Job, s: &mut Session| {
                        Ok(job.expire(s, now).into_iter().collect())
                    }),
                )
                .await
            {
                tracing::warn!(job = %id, error = %e, "cannot expire a lease");
            }
        }
        Ok(n)
    }
}
