//! The rules of the trigger.dev Sessions surface, written over the native services.
//!
//! A trigger session is one native session: its `type`, `externalId`, `tags` and `metadata` are
//! the native ones, and `taskIdentifier`, `triggerConfig` and `currentRunId` live under the
//! reserved key `trigger` of the native `data` (so native clients see them, and every change
//! bumps `version` and appears on `events`). A run is a native job of type
//! `task:{taskIdentifier}` whose input is `triggerConfig.basePayload`; `.in` and `.out` are the
//! native channels `in` and `out`.

use serde_json::{json, Map, Value};
use sessiond_core::channel::{ChannelName, RecordInput, IN};
use sessiond_core::cursor::Cursor;
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{validate_type, CreateJobInput, JobId, JobStatus};
use sessiond_core::limits::LIST_LIMIT_MAX;
use sessiond_core::merge_patch;
use sessiond_core::session::{CreateSessionInput, Session, SessionFilter};
use sessiond_core::{AccountId, Error, Timestamp};
use tracing::instrument;
use uuid::Uuid;

use super::jobs::SessionChangeForJob;
use super::{ChannelService, JobService, SessionService};

/// The key of the native `data` that holds the trigger fields.
pub const DATA_KEY: &str = "trigger";
/// Runs are native jobs of type `task:{taskIdentifier}`.
pub const TASK_JOB_PREFIX: &str = "task:";
/// A continuation lost a race with another one (never answered: the loser re-reads).
const RUN_CHANGED: &str = "run_changed";
/// Native sessions read per store query while a list looks for matching ones.
const SCAN_BATCH: usize = LIST_LIMIT_MAX;
/// A forward list page stops after this many sessions were looked at (the page may be short;
/// `next` continues from where it stopped).
const SCAN_MAX: usize = 5_000;

pub fn job_type(task_identifier: &str) -> String {
    format!("{TASK_JOB_PREFIX}{task_identifier}")
}

/// `run_<job uuid without dashes>`.
pub fn run_id(job: JobId) -> String {
    format!("run_{}", job.as_uuid().simple())
}

/// `session_<uuid without dashes>`.
pub fn friendly_id(session: &Session) -> String {
    format!("session_{}", session.id.as_uuid().simple())
}

/// The trigger fields of a session (absent on sessions made by other surfaces).
#[derive(Debug, Clone, Copy)]
pub struct TriggerData<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> TriggerData<'a> {
    pub fn of(s: &'a Session) -> Self {
        TriggerData {
            map: s.data.get(DATA_KEY).and_then(Value::as_object),
        }
    }
    /// Whether the session was started through this surface.
    pub fn is_trigger(&self) -> bool {
        self.task_identifier().is_some()
    }
    pub fn task_identifier(&self) -> Option<&'a str> {
        self.map?.get("taskIdentifier")?.as_str()
    }
    pub fn trigger_config(&self) -> Option<&'a Value> {
        self.map?.get("triggerConfig").filter(|v| v.is_object())
    }
    pub fn current_run_id(&self) -> Option<&'a str> {
        self.map?.get("currentRunId")?.as_str()
    }
}

/// `sessions.start`, parsed and checked against the wire format's limits.
#[derive(Debug, Clone)]
pub struct StartInput {
    pub kind: String,
    pub external_id: Option<String>,
    pub task_identifier: String,
    pub trigger_config: Map<String, Value>,
    pub tags: Vec<String>,
    pub metadata: Option<Map<String, Value>>,
    pub expires_at: Option<Timestamp>,
}

pub struct Started {
    pub session: Session,
    pub run: JobId,
    pub cached: bool,
}

/// `sessions.update`: absent fields are left alone; `Some(None)` clears.
#[derive(Debug, Clone, Default)]
pub struct UpdateInput {
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Option<Map<String, Value>>>,
    pub external_id: Option<Option<String>>,
}

/// Where a list page starts.
#[derive(Debug, Clone, Copy)]
pub enum PageAt {
    First,
    After(Cursor),
    Before(Cursor),
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Native filters (status, tags, externalId, createdAt bounds; `kind` when one type).
    pub filter: SessionFilter,
    /// Any of these types (empty: any).
    pub types: Vec<String>,
    /// Any of these task identifiers (empty: any).
    pub task_identifiers: Vec<String>,
    pub size: usize,
    pub page: PageAt,
}

pub struct ListPage {
    pub sessions: Vec<Session>,
    pub next: Option<Cursor>,
    pub previous: Option<Cursor>,
}

/// A record appended through the surface.
pub struct Appended {
    pub seq: i64,
    pub duplicate: bool,
}

fn cursor_of(s: &Session) -> Cursor {
    Cursor {
        created_at: s.created_at,
        id: *s.id.as_uuid(),
    }
}

fn newer_than(s: &Session, c: &Cursor) -> bool {
    (s.created_at, *s.id.as_uuid()) > (c.created_at, c.id)
}

#[derive(Clone)]
pub struct TriggerService {
    sessions: SessionService,
    jobs: JobService,
    channels: ChannelService,
}

impl TriggerService {
    pub fn new(sessions: SessionService, jobs: JobService, channels: ChannelService) -> Self {
        Self {
            sessions,
            jobs,
            channels,
        }
    }

    /// Creates a session and its first run, idempotently on `externalId`: an open session with
    /// the same externalId is returned (`cached`) with only its `triggerConfig` refreshed, and a
    /// run is enqueued for it unless one is queued or running. A closed or expired one is a
    /// conflict.
    #[instrument(skip_all, fields(account = %account))]
    pub async fn start(&self, account: AccountId, input: StartInput) -> Result<Started, Error> {
        if validate_type(&job_type(&input.task_identifier)).is_err() {
            return Err(Error::invalid_field(format!(
                "taskIdentifier {:?} cannot name a run: use at most {} of A-Z, a-z, 0-9, '.', '_', '-', ':', '/'",
                input.task_identifier,
                sessiond_core::limits::JOB_TYPE_MAX_CHARS - TASK_JOB_PREFIX.len()
            )));
        }
        let mut trigger = Map::new();
        trigger.insert(
            "taskIdentifier".into(),
            Value::String(input.task_identifier.clone()),
        );
        trigger.insert(
            "triggerConfig".into(),
            Value::Object(input.trigger_config.clone()),
        );
        trigger.insert("currentRunId".into(), Value::Null);
        let native = CreateSessionInput {
            external_id: input.external_id.clone(),
            kind: Some(input.kind),
            tags: Some(input.tags),
            metadata: input.metadata.map(Value::Object),
            data: Some(json!({ DATA_KEY: trigger })),
            expires_at: input.expires_at,
            ..Default::default()
        };
        let created = match self.sessions.create(account, native).await {
            Ok(c) => c,
            Err(e) if e.code == codes::SESSION_CLOSED => {
                return Err(self.reuse_refused(account, input.external_id, e).await)
            }
            Err(e) => return Err(e),
        };
        let cached = created.cached;
        let session = if cached {
            self.refresh_config(
                account,
                &created.session,
                input.task_identifier,
                input.trigger_config,
            )
            .await?
        } else {
            created.session
        };
        let (run, session) = self
            .ensure_run(account, session)
            .await?
            .ok_or_else(|| Error::internal("a started session has no task identifier"))?;
        Ok(Started {
            session,
            run,
            cached,
        })
    }

    /// The conflict for an externalId whose session is closed or expired.
    async fn reuse_refused(
        &self,
        account: AccountId,
        external_id: Option<String>,
        native: Error,
    ) -> Error {
        let Some(external_id) = external_id else {
            return native;
        };
        let closed = match self
            .sessions
            .get(account, &SessionRef::External(external_id))
            .await
        {
            Ok(s) => s.closed_at.is_some(),
            Err(_) => true,
        };
        Error::conflict(
            codes::SESSION_CLOSED,
            if closed {
                "Session is closed; use a different externalId to create a new session"
            } else {
                "Session is expired; use a different externalId to create a new session"
            },
        )
    }

    /// Replaces `triggerConfig` (and sets `taskIdentifier` on a session that had none).
    async fn refresh_config(
        &self,
        account: AccountId,
        session: &Session,
        task_identifier: String,
        config: Map<String, Value>,
    ) -> Result<Session, Error> {
        self.sessions
            .patch_with(
                account,
                &SessionRef::Id(session.id),
                Box::new(move |s: &Session| {
                    let old = s.data.get(DATA_KEY).cloned().unwrap_or(Value::Null);
                    let mut new = old.as_object().cloned().unwrap_or_default();
                    if !new.get("taskIdentifier").is_some_and(Value::is_string) {
                        new.insert("taskIdentifier".into(), Value::String(task_identifier));
                    }
                    new.insert("triggerConfig".into(), Value::Object(config));
                    new.entry("currentRunId").or_insert(Value::Null);
                    Ok(match merge_patch::diff(&old, &Value::Object(new)) {
                        Some(p) => json!({ "data": { DATA_KEY: p } }),
                        None => json!({}),
                    })
                }),
            )
            .await
    }

    /// The session's live run (a queued or running job of its task), enqueueing one when there
    /// is none, with `currentRunId` kept pointing at it. `None` for a session without a task.
    #[instrument(skip_all, fields(session = %session.id))]
    pub async fn ensure_run(
        &self,
        account: AccountId,
        mut session: Session,
    ) -> Result<Option<(JobId, Session)>, Error> {
        for _ in 0..4 {
            let t = TriggerData::of(&session);
            let Some(task) = t.task_identifier() else {
                return Ok(None);
            };
            let kind = job_type(task);
            let current = t.current_run_id().map(str::to_owned);
            let jobs = self.jobs.list(session.id).await?;
            let live = jobs.iter().rev().find(|j| {
                j.kind == kind && matches!(j.status, JobStatus::Queued | JobStatus::Running)
            });
            if let Some(job) = live {
                let id = run_id(job.id);
                if current.as_deref() == Some(id.as_str()) {
                    return Ok(Some((job.id, session)));
                }
                let job_id = job.id;
                let s = self
                    .sessions
                    .patch_with(
                        account,
                        &SessionRef::Id(session.id),
                        Box::new(move |_| {
                            Ok(json!({ "data": { DATA_KEY: { "currentRunId": id } } }))
                        }),
                    )
                    .await?;
                return Ok(Some((job_id, s)));
            }
            let config = t.trigger_config();
            let payload = config
                .and_then(|c| c.get("basePayload"))
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            let max_attempts = config
                .and_then(|c| c.get("maxAttempts"))
                .and_then(Value::as_i64);
            let input = CreateJobInput {
                kind,
                input: Some(payload),
                reuse: false,
                output_key: None,
                max_attempts,
            };
            // Optimistic: the run is recorded only if no other continuation got there first.
            let change: SessionChangeForJob = Box::new(move |job, s, now| {
                if TriggerData::of(s).current_run_id() != current.as_deref() {
                    return Err(Error::conflict(
                        RUN_CHANGED,
                        "another run was started for this session",
                    ));
                }
                let patch = json!({ "data": { DATA_KEY: { "currentRunId": run_id(job.id) } } });
                Ok(s.apply_merge_patch(&patch, now)?.into_iter().collect())
            });
            match self
                .jobs
                .create_with(account, &SessionRef::Id(session.id), input, Some(change))
                .await
            {
                Ok((job, s)) => return Ok(Some((job.id, s))),
                Err(e) if e.code == RUN_CHANGED => {
                    session = self
                        .sessions
                        .get(account, &SessionRef::Id(session.id))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(
            "the session's run kept changing under concurrent requests; retry",
        ))
    }

    /// `tags` replace, `metadata` replaces (`null` clears), `externalId` must stay the same.
    #[instrument(skip_all, fields(session = %r))]
    pub async fn update(
        &self,
        account: AccountId,
        r: &SessionRef,
        input: UpdateInput,
    ) -> Result<Session, Error> {
        self.sessions
            .patch_with(
                account,
                r,
                Box::new(move |s: &Session| {
                    if let Some(external_id) = input.external_id {
                        if external_id != s.external_id {
                            return Err(Error::invalid(
                                codes::READ_ONLY_FIELD,
                                "externalId cannot be changed after creation",
                            ));
                        }
                    }
                    let mut patch = Map::new();
                    if let Some(tags) = input.tags {
                        patch.insert("tags".into(), json!(tags));
                    }
                    match input.metadata {
                        None => {}
                        Some(None) if s.metadata.is_empty() => {}
                        Some(None) => {
                            patch.insert("metadata".into(), Value::Null);
                        }
                        Some(Some(m)) => {
                            let old = Value::Object(s.metadata.clone());
                            if let Some(p) = merge_patch::diff(&old, &Value::Object(m)) {
                                patch.insert("metadata".into(), p);
                            }
                        }
                    }
                    Ok(Value::Object(patch))
                }),
            )
            .await
    }

    /// One page of the account's trigger sessions, newest first.
    #[instrument(skip_all)]
    pub async fn list(&self, account: AccountId, mut q: ListQuery) -> Result<ListPage, Error> {
        if q.types.len() == 1 {
            q.filter.kind = q.types.first().cloned();
        }
        match q.page {
            PageAt::First => self.forward(account, &q, None).await,
            PageAt::After(c) => self.forward(account, &q, Some(c)).await,
            PageAt::Before(c) => self.backward(account, &q, c).await,
        }
    }

    fn matches(q: &ListQuery, s: &Session) -> bool {
        let t = TriggerData::of(s);
        let Some(task) = t.task_identifier() else {
            return false;
        };
        (q.types.is_empty() || s.kind.as_ref().is_some_and(|k| q.types.contains(k)))
            && (q.task_identifiers.is_empty() || q.task_identifiers.iter().any(|x| x == task))
    }

    async fn forward(
        &self,
        account: AccountId,
        q: &ListQuery,
        after: Option<Cursor>,
    ) -> Result<ListPage, Error> {
        let mut out: Vec<Session> = Vec::new();
        let mut cursor = after;
        let mut scanned = 0usize;
        let mut more = false;
        let mut stopped_at = None;
        'scan: loop {
            let page = self
                .sessions
                .list(account, q.filter.clone(), cursor, SCAN_BATCH, true)
                .await?;
            for s in page.sessions {
                scanned += 1;
                let position = cursor_of(&s);
                if Self::matches(q, &s) {
                    if out.len() == q.size {
                        more = true;
                        break 'scan;
                    }
                    out.push(s);
                }
                if scanned >= SCAN_MAX {
                    stopped_at = Some(position);
                    break 'scan;
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let next = if more {
            out.last().map(cursor_of)
        } else {
            stopped_at
        };
        let previous = after.and(out.first().map(cursor_of));
        Ok(ListPage {
            sessions: out,
            next,
            previous,
        })
    }

    /// The `size` matching sessions just newer than `before`. The store lists newest first
    /// only, so this reads windows of creation time upwards from `before`, doubling their width
    /// until they hold more than a page.
    async fn backward(
        &self,
        account: AccountId,
        q: &ListQuery,
        before: Cursor,
    ) -> Result<ListPage, Error> {
        let base = before.created_at.millis();
        // Rows are created at "now"; allow for clocks of other nodes running a little ahead.
        let ceiling = q
            .filter
            .created_before
            .map(|t| t.millis())
            .unwrap_or(i64::MAX)
            .min(Timestamp::now().millis().saturating_add(60_000));
        let mut windows: Vec<Vec<Session>> = Vec::new();
        let mut total = 0usize;
        let mut low = base;
        let mut width: i64 = 1;
        loop {
            let high = base.saturating_add(width);
            let mut filter = q.filter.clone();
            let after_bound = Timestamp::from_millis(low - 1);
            filter.created_after = Some(match filter.created_after {
                Some(a) if a > after_bound => a,
                _ => after_bound,
            });
            let before_bound = Timestamp::from_millis(high);
            filter.created_before = Some(match filter.created_before {
                Some(b) if b < before_bound => b,
                _ => before_bound,
            });
            let mut found = Vec::new();
            let mut cursor = None;
            loop {
                let page = self
                    .sessions
                    .list(account, filter.clone(), cursor, SCAN_BATCH, true)
                    .await?;
                found.extend(
                    page.sessions
                        .into_iter()
                        .filter(|s| newer_than(s, &before) && Self::matches(q, s)),
                );
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            total += found.len();
            windows.push(found);
            if total > q.size || high >= ceiling {
                break;
            }
            low = high;
            width = width.saturating_mul(2);
        }
        // Newest window first; each window is newest first already.
        let all: Vec<Session> = windows.into_iter().rev().flatten().collect();
        let skip = all.len().saturating_sub(q.size);
        let more = skip > 0;
        let sessions: Vec<Session> = all.into_iter().skip(skip).collect();
        let previous = if more {
            sessions.first().map(cursor_of)
        } else {
            None
        };
        let next = sessions.last().map(cursor_of);
        Ok(ListPage {
            sessions,
            next,
            previous,
        })
    }

    /// Appends one raw text record to `.in` or `.out`: stored as the native record
    /// `{"data": "<raw>", "id": "<part id>"}` whose record id is the part id, so a repeated
    /// `X-Part-Id` is not appended again. An append to `in` enqueues a continuation run when
    /// the session has none queued or running.
    #[instrument(skip_all, fields(session = %session.id, channel = %channel))]
    pub async fn append(
        &self,
        account: AccountId,
        session: Session,
        channel: &ChannelName,
        raw: String,
        part_id: Option<String>,
    ) -> Result<Appended, Error> {
        let id = part_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        let data = json!({ "data": raw, "id": id }).to_string();
        let appended = self
            .channels
            .append(
                account,
                &SessionRef::Id(session.id),
                channel,
                vec![RecordInput {
                    id: Some(id),
                    data: Some(data),
                    headers: None,
                }],
            )
            .await?;
        let result = appended
            .results
            .first()
            .ok_or_else(|| Error::internal("an append of one record returned no result"))?;
        let out = Appended {
            seq: result.seq,
            duplicate: result.duplicate,
        };
        if channel.as_str() == IN {
            // The record is committed; a run that cannot be enqueued (the session closed in
            // between) must not turn the append into a failure.
            if let Err(e) = self.ensure_run(account, session).await {
                tracing::warn!(error = %e, "cannot enqueue a continuation run");
            }
        }
        Ok(out)
    }
}
