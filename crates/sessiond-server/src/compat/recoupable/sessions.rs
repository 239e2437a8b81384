//! `POST /api/sessions`, `GET` and `PATCH /api/sessions/{sessionId}`.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond_core::agent::{agent_state, agent_status, AgentPatch, AgentStatus, NewAgentSession};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::Timestamp;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::RecoupCaller;
use super::body::{self, Parsed, RawBody};
use super::chats::RecoupChat;
use super::error::{RecoupError, RecoupErrorBody, RecoupResult, INVALID_JSON};
use crate::app::App;
use crate::service::agent;

/// A session as this surface renders it: every key present, `null` when unset.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoupSession {
    pub id: Uuid,
    /// The owning account.
    pub user_id: Uuid,
    pub title: Option<String>,
    /// `running`, `completed`, `failed` or `archived`.
    pub status: String,
    #[schema(value_type = Option<String>)]
    pub repo_owner: Value,
    #[schema(value_type = Option<String>)]
    pub repo_name: Value,
    #[schema(value_type = Option<String>)]
    pub branch: Value,
    #[schema(value_type = Option<String>)]
    pub clone_url: Value,
    pub is_new_branch: bool,
    #[schema(value_type = Vec<Object>)]
    pub global_skill_refs: Value,
    #[schema(value_type = Option<Object>)]
    pub sandbox_state: Value,
    /// `provisioning`, `active`, `hibernating`, `hibernated`, `restoring`, `archived`, `failed`.
    #[schema(value_type = Option<String>)]
    pub lifecycle_state: Value,
    pub lifecycle_version: i64,
    #[schema(value_type = Option<String>)]
    pub lifecycle_error: Value,
    #[schema(value_type = Option<String>)]
    pub lifecycle_run_id: Value,
    #[schema(value_type = Option<String>)]
    pub last_activity_at: Value,
    #[schema(value_type = Option<String>)]
    pub sandbox_expires_at: Value,
    #[schema(value_type = Option<String>)]
    pub hibernate_after: Value,
    #[schema(value_type = Option<i64>)]
    pub lines_added: Value,
    #[schema(value_type = Option<i64>)]
    pub lines_removed: Value,
    #[schema(value_type = Option<String>)]
    pub snapshot_url: Value,
    #[schema(value_type = Option<String>)]
    pub snapshot_created_at: Value,
    #[schema(value_type = Option<i64>)]
    pub snapshot_size_bytes: Value,
    #[schema(value_type = Option<Object>)]
    pub cached_diff: Value,
    #[schema(value_type = Option<String>)]
    pub cached_diff_updated_at: Value,
    #[schema(value_type = Option<bool>)]
    pub auto_commit_push_override: Value,
    #[schema(value_type = Option<bool>)]
    pub auto_create_pr_override: Value,
    #[schema(value_type = Option<i64>)]
    pub pr_number: Value,
    /// `open`, `merged`, `closed` or null.
    #[schema(value_type = Option<String>)]
    pub pr_status: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl RecoupSession {
    pub fn new(s: &Session, now: Timestamp) -> Self {
        let empty = Map::new();
        let a = agent_state(s).unwrap_or(&empty);
        let field = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
        RecoupSession {
            id: *s.id.as_uuid(),
            user_id: *s.account_id.as_uuid(),
            title: s.title.clone(),
            status: agent_status(s, now).as_str().to_owned(),
            repo_owner: field("repoOwner"),
            repo_name: field("repoName"),
            branch: field("branch"),
            clone_url: field("cloneUrl"),
            is_new_branch: a
                .get("isNewBranch")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            global_skill_refs: a
                .get("globalSkillRefs")
                .filter(|v| v.is_array())
                .cloned()
                .unwrap_or_else(|| Value::Array(Vec::new())),
            sandbox_state: field("sandboxState"),
            lifecycle_state: field("lifecycleState"),
            lifecycle_version: a
                .get("lifecycleVersion")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            lifecycle_error: field("lifecycleError"),
            lifecycle_run_id: field("lifecycleRunId"),
            last_activity_at: field("lastActivityAt"),
            sandbox_expires_at: field("sandboxExpiresAt"),
            hibernate_after: field("hibernateAfter"),
            lines_added: field("linesAdded"),
            lines_removed: field("linesRemoved"),
            snapshot_url: field("snapshotUrl"),
            snapshot_created_at: field("snapshotCreatedAt"),
            snapshot_size_bytes: field("snapshotSizeBytes"),
            cached_diff: field("cachedDiff"),
            cached_diff_updated_at: field("cachedDiffUpdatedAt"),
            auto_commit_push_override: field("autoCommitPushOverride"),
            auto_create_pr_override: field("autoCreatePrOverride"),
            pr_number: field("prNumber"),
            pr_status: field("prStatus"),
            created_at: s.created_at.to_rfc3339(),
            updated_at: s.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupSessionResponse {
    pub session: RecoupSession,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupCreated {
    pub session: RecoupSession,
    pub chat: RecoupChat,
}

/// The body of `POST /api/sessions` (every field optional; unknown keys are ignored; an empty
/// or invalid JSON body counts as `{}`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the raw body
#[schema(as = RecoupCreateSessionBody)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    /// Blank or absent: a city name the account has not used yet ("<City> 2"… once all are).
    title: Option<String>,
    repo_owner: Option<String>,
    repo_name: Option<String>,
    branch: Option<String>,
    is_new_branch: Option<bool>,
    clone_url: Option<String>,
    /// Only `vercel`.
    sandbox_type: Option<String>,
    auto_commit_push: Option<bool>,
    auto_create_pr: Option<bool>,
    #[schema(format = Uuid)]
    organization_id: Option<String>,
    #[schema(format = Uuid)]
    artist_id: Option<String>,
}

/// A hyphenated UUID, as the product's schema accepts it.
fn uuid_field(m: &Map<String, Value>, key: &str) -> RecoupResult<Option<Uuid>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() == 36 => match Uuid::try_parse(s) {
            Ok(u) => Ok(Some(u)),
            Err(_) => Err(RecoupError::create_field(
                Some(key),
                format!("{key} must be a valid UUID"),
            )),
        },
        Some(_) => Err(RecoupError::create_field(
            Some(key),
            format!("{key} must be a valid UUID"),
        )),
    }
}

fn parse_create(bytes: &[u8]) -> RecoupResult<NewAgentSession> {
    let m = match body::parse(bytes) {
        Parsed::Empty | Parsed::Invalid => Map::new(),
        Parsed::Json(v) => body::object(v).map_err(|msg| RecoupError::create_field(None, msg))?,
    };
    let string = |key: &str| {
        body::string(&m, key, true).map_err(|msg| RecoupError::create_field(Some(key), msg))
    };
    let title = string("title")?;
    let repo_owner = string("repoOwner")?;
    let repo_name = string("repoName")?;
    let branch = string("branch")?;
    let is_new_branch = body::boolean(&m, "isNewBranch")
        .map_err(|msg| RecoupError::create_field(Some("isNewBranch"), msg))?;
    let clone_url = string("cloneUrl")?;
    match m.get("sandboxType") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == sessiond_core::agent::SANDBOX_TYPE => {}
        Some(_) => return Err(RecoupError::bad_request("Invalid sandbox type")),
    }
    let flag = |key: &str, message: &str| match m.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RecoupError::bad_request(message)),
    };
    let auto_commit_push = flag("autoCommitPush", "Invalid autoCommitPush value")?;
    let auto_create_pr = flag("autoCreatePr", "Invalid autoCreatePr value")?;
    let organization_id = uuid_field(&m, "organizationId")?;
    let artist_id = uuid_field(&m, "artistId")?;
    Ok(NewAgentSession {
        title,
        repo_owner,
        repo_name,
        branch,
        clone_url,
        is_new_branch,
        auto_commit_push,
        auto_create_pr,
        organization_id,
        artist_id,
    })
}

/// Create a session and its first chat ("New chat"), atomically.
#[utoipa::path(post, path = "/api/sessions", tag = "recoupable",
    operation_id = "recoupable_create_session",
    request_body(content = CreateBody, description = "All optional; empty or invalid JSON counts as {}"),
    responses(
        (status = 200, description = "The session (status running, lifecycleState provisioning) and its chat", body = RecoupCreated),
        (status = 400, description = "`Invalid sandbox type`, `Invalid autoCommitPush value`, `Invalid autoCreatePr value`, or `{\"status\":\"error\",\"missing_fields\":[name],\"error\":\"<name> must be a valid UUID\"}`", body = RecoupErrorBody),
        (status = 401, description = "None or both of x-api-key and Authorization, or a bad key", body = RecoupErrorBody),
    ))]
pub async fn create(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    RawBody(bytes): RawBody,
) -> RecoupResult<Json<RecoupCreated>> {
    let new = parse_create(&bytes)?;
    let (session, chat) = agent::create(&app.services, account, new).await?;
    Ok(Json(RecoupCreated {
        session: RecoupSession::new(&session, Timestamp::now()),
        chat: chat.into(),
    }))
}

/// A session.
#[utoipa::path(get, path = "/api/sessions/{sessionId}", tag = "recoupable",
    operation_id = "recoupable_get_session",
    params(("sessionId" = String, Path)),
    responses(
        (status = 200, body = RecoupSessionResponse),
        (status = 401, body = RecoupErrorBody),
        (status = 403, description = "`Forbidden`: the session belongs to another account", body = RecoupErrorBody),
        (status = 404, description = "`Session not found`", body = RecoupErrorBody),
    ))]
pub async fn get(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path(session): Path<String>,
) -> RecoupResult<Json<RecoupSessionResponse>> {
    let s = agent::get_revealing(&app.services, account, &SessionRef::parse(&session)).await?;
    Ok(Json(RecoupSessionResponse {
        session: RecoupSession::new(&s, Timestamp::now()),
    }))
}

/// The body of `PATCH /api/sessions/{sessionId}` (documentation).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the raw body
#[schema(as = RecoupPatchSessionBody)]
#[serde(rename_all = "camelCase")]
pub struct PatchBody {
    title: Option<String>,
    /// `running`, `completed`, `failed`, `archived`.
    status: Option<String>,
    #[schema(minimum = 0)]
    lines_added: Option<i64>,
    #[schema(minimum = 0)]
    lines_removed: Option<i64>,
}

fn parse_patch(bytes: &[u8]) -> RecoupResult<AgentPatch> {
    let m = match body::parse(bytes) {
        Parsed::Empty => Map::new(),
        Parsed::Invalid => return Err(RecoupError::bad_request(INVALID_JSON)),
        Parsed::Json(v) => body::object(v).map_err(|msg| RecoupError::patch_field(None, msg))?,
    };
    let field = |key: &'static str| move |msg: String| RecoupError::patch_field(Some(key), msg);
    let title = body::string(&m, "title", false).map_err(field("title"))?;
    let status = match m.get("status") {
        None => None,
        Some(v) => Some(v.as_str().and_then(AgentStatus::parse).ok_or_else(|| {
            let options = AgentStatus::ALL
                .iter()
                .map(|s| format!("\"{}\"", s.as_str()))
                .collect::<Vec<_>>()
                .join("|");
            RecoupError::patch_field(
                Some("status"),
                format!("Invalid option: expected one of {options}"),
            )
        })?),
    };
    let lines_added = body::count(&m, "linesAdded").map_err(field("linesAdded"))?;
    let lines_removed = body::count(&m, "linesRemoved").map_err(field("linesRemoved"))?;
    Ok(AgentPatch {
        title,
        status,
        lines_added,
        lines_removed,
    })
}

/// Change a session's title, status or line counters. Archiving sets `lifecycleState:
/// archived` and clears `lifecycleError`, `lifecycleRunId`, `sandboxExpiresAt` and
/// `hibernateAfter`; `status: running` on an archived session clears `lifecycleState` and
/// `lifecycleError`. No change answers the current session.
#[utoipa::path(patch, path = "/api/sessions/{sessionId}", tag = "recoupable",
    operation_id = "recoupable_patch_session",
    params(("sessionId" = String, Path)),
    request_body = PatchBody,
    responses(
        (status = 200, body = RecoupSessionResponse),
        (status = 400, description = "`{\"status\":\"error\",\"path\":[field],\"error\"}`, or `Invalid JSON body`", body = RecoupErrorBody),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
    ))]
pub async fn patch(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path(session): Path<String>,
    RawBody(bytes): RawBody,
) -> RecoupResult<Json<RecoupSessionResponse>> {
    // The session is looked up before the body is judged: 404 and 403 come first.
    let change = parse_patch(&bytes);
    let s = agent::get_revealing(&app.services, account, &SessionRef::parse(&session)).await?;
    let s = agent::patch(&app.services, account, &s, change?).await?;
    Ok(Json(RecoupSessionResponse {
        session: RecoupSession::new(&s, Timestamp::now()),
    }))
}
