//! Agent sessions: a session that binds a coding agent to a repository and a sandbox, with chats
//! inside it (what the Recoupable surface speaks). sessiond provisions nothing: the repository,
//! sandbox and lifecycle fields are plain data kept under the reserved key [`AGENT_DATA_KEY`] of the
//! session's `data`, so native clients see them and every change to them is an ordinary merge
//! patch (it bumps `version` and is recorded on the `events` channel).
//!
//! Stored values are sparse: a field that is null is absent from `data.agent` (a merge patch
//! deletes a key it sets to null), and readers treat a missing field as null.

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::session::{CreateSessionInput, Session, SessionStatus};
use crate::Timestamp;

/// The key of the session's `data` that holds the agent fields.
pub const AGENT_DATA_KEY: &str = "agent";

/// The native session `type` of sessions created as agent sessions (a native client can list
/// them with `?type=agent`).
pub const AGENT_SESSION_TYPE: &str = "agent";

/// The only sandbox type there is; new sessions start with `sandboxState: {"type": "vercel"}`.
pub const SANDBOX_TYPE: &str = "vercel";

/// The lifecycle state of a new session.
pub const INITIAL_LIFECYCLE_STATE: &str = "provisioning";

/// Well-known cities: the titles given to sessions created without one.
pub const CITY_NAMES: &[&str] = &[
    "Amsterdam",
    "Athens",
    "Auckland",
    "Bangkok",
    "Barcelona",
    "Beijing",
    "Berlin",
    "Bogotá",
    "Boston",
    "Buenos Aires",
    "Cairo",
    "Cape Town",
    "Chicago",
    "Copenhagen",
    "Dublin",
    "Dubai",
    "Edinburgh",
    "Florence",
    "Havana",
    "Helsinki",
    "Hong Kong",
    "Istanbul",
    "Jakarta",
    "Kyoto",
    "Lagos",
    "Lima",
    "Lisbon",
    "London",
    "Los Angeles",
    "Madrid",
    "Melbourne",
    "Mexico City",
    "Montreal",
    "Mumbai",
    "Nairobi",
    "New York",
    "Oslo",
    "Paris",
    "Prague",
    "Reykjavik",
    "Rio de Janeiro",
    "Rome",
    "San Francisco",
    "Seoul",
    "Singapore",
    "Stockholm",
    "Sydney",
    "Tokyo",
    "Toronto",
    "Vienna",
];

/// `base` when no title in `used` equals it, else `"<base> N"` with the smallest N ≥ 2 not used.
pub fn untaken_title(base: &str, used: &HashSet<String>) -> String {
    if !used.contains(base) {
        return base.to_owned();
    }
    numbered_title(base, used)
}

/// `"<base> N"` with the smallest N ≥ 2 that no title in `used` equals.
pub fn numbered_title(base: &str, used: &HashSet<String>) -> String {
    (2u64..)
        .map(|n| format!("{base} {n}"))
        .find(|t| !used.contains(t))
        .unwrap_or_else(|| format!("{base} {}", Uuid::new_v4()))
}

/// What the agent is doing, as the agent surface reports it. Pure data: it does not open or close
/// the native session (an archived session can be unarchived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Running,
    Completed,
    Failed,
    Archived,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 4] = [
        AgentStatus::Running,
        AgentStatus::Completed,
        AgentStatus::Failed,
        AgentStatus::Archived,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AgentStatus::Running => "running",
            AgentStatus::Completed => "completed",
            AgentStatus::Failed => "failed",
            AgentStatus::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The agent fields of a session (`data.agent`), when it has them as an object.
pub fn agent_state(s: &Session) -> Option<&Map<String, Value>> {
    s.data.get(AGENT_DATA_KEY).and_then(Value::as_object)
}

/// The agent status of a session: the stored one, else (a session created natively) `running`
/// while the native session is active and `completed` once it is closed or expired.
pub fn agent_status(s: &Session, now: Timestamp) -> AgentStatus {
    agent_state(s)
        .and_then(|a| a.get("status"))
        .and_then(Value::as_str)
        .and_then(AgentStatus::parse)
        .unwrap_or(match s.status(now) {
            SessionStatus::Active => AgentStatus::Running,
            SessionStatus::Closed | SessionStatus::Expired => AgentStatus::Completed,
        })
}

/// A new agent session as a surface parsed it (types checked).
#[derive(Debug, Clone, Default)]
pub struct NewAgentSession {
    pub title: Option<String>,
    pub repo_owner: Option<String>,
    pub repo_name: Option<String>,
    pub branch: Option<String>,
    pub clone_url: Option<String>,
    pub is_new_branch: Option<bool>,
    pub auto_commit_push: Option<bool>,
    pub auto_create_pr: Option<bool>,
    pub organization_id: Option<Uuid>,
    pub artist_id: Option<Uuid>,
}

impl NewAgentSession {
    /// The title asked for, trimmed; `None` when absent or blank (then a city name is chosen).
    pub fn requested_title(&self) -> Option<String> {
        self.title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }

    /// The initial `data.agent` object: `status: running`, `lifecycleState: provisioning`,
    /// `lifecycleVersion: 0`, `globalSkillRefs: []`, `sandboxState: {"type": "vercel"}`,
    /// `isNewBranch` (false unless asked), and whatever repository fields were given.
    pub fn initial_state(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("status".into(), json!(AgentStatus::Running.as_str()));
        let strings = [
            ("repoOwner", &self.repo_owner),
            ("repoName", &self.repo_name),
            ("branch", &self.branch),
            ("cloneUrl", &self.clone_url),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                m.insert(key.into(), json!(v));
            }
        }
        m.insert(
            "isNewBranch".into(),
            json!(self.is_new_branch.unwrap_or(false)),
        );
        m.insert("globalSkillRefs".into(), json!([]));
        m.insert("sandboxState".into(), json!({ "type": SANDBOX_TYPE }));
        m.insert("lifecycleState".into(), json!(INITIAL_LIFECYCLE_STATE));
        m.insert("lifecycleVersion".into(), json!(0));
        if let Some(v) = self.auto_commit_push {
            m.insert("autoCommitPushOverride".into(), json!(v));
        }
        if let Some(v) = self.auto_create_pr {
            m.insert("autoCreatePrOverride".into(), json!(v));
        }
        if let Some(v) = self.organization_id {
            m.insert("organizationId".into(), json!(v.to_string()));
        }
        if let Some(v) = self.artist_id {
            m.insert("artistId".into(), json!(v.to_string()));
        }
        m
    }

    /// The native create input for this session with its resolved title.
    pub fn into_create_input(self, title: String) -> CreateSessionInput {
        let mut data = Map::new();
        data.insert(AGENT_DATA_KEY.into(), Value::Object(self.initial_state()));
        CreateSessionInput {
            kind: Some(AGENT_SESSION_TYPE.to_owned()),
            title: Some(title),
            data: Some(Value::Object(data)),
            ..Default::default()
        }
    }
}

/// A change to an agent session: any of its title, status and line counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPatch {
    pub title: Option<String>,
    pub status: Option<AgentStatus>,
    pub lines_added: Option<u64>,
    pub lines_removed: Option<u64>,
}

impl AgentPatch {
    /// The merge patch over the native session that applies this change to `current`.
    ///
    /// Archiving (`status: archived`) also sets `lifecycleState: archived` and clears
    /// `lifecycleError`, `lifecycleRunId`, `sandboxExpiresAt` and `hibernateAfter`. Setting
    /// `status: running` on an archived session clears `lifecycleState` and `lifecycleError`.
    /// An empty change is an empty patch (which changes nothing).
    pub fn merge_patch(&self, current: &Session, now: Timestamp) -> Value {
        let mut agent = Map::new();
        if let Some(status) = self.status {
            agent.insert("status".into(), json!(status.as_str()));
            match status {
                AgentStatus::Archived => {
                    agent.insert("lifecycleState".into(), json!("archived"));
                    for key in [
                        "lifecycleError",
                        "lifecycleRunId",
                        "sandboxExpiresAt",
                        "hibernateAfter",
                    ] {
                        agent.insert(key.into(), Value::Null);
                    }
                }
                AgentStatus::Running if agent_status(current, now) == AgentStatus::Archived => {
                    agent.insert("lifecycleState".into(), Value::Null);
                    agent.insert("lifecycleError".into(), Value::Null);
                }
                _ => {}
            }
        }
        if let Some(n) = self.lines_added {
            agent.insert("linesAdded".into(), json!(n));
        }
        if let Some(n) = self.lines_removed {
            agent.insert("linesRemoved".into(), json!(n));
        }
        let mut patch = Map::new();
        if let Some(t) = &self.title {
            patch.insert("title".into(), json!(t));
        }
        if !agent.is_empty() {
            let mut data = Map::new();
            data.insert(AGENT_DATA_KEY.into(), Value::Object(agent));
            patch.insert("data".into(), Value::Object(data));
        }
        Value::Object(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountId;

    fn session(agent: Value) -> Session {
        let now = Timestamp::from_millis(1_000);
        CreateSessionInput {
            data: Some(json!({ "agent": agent })),
            ..Default::default()
        }
        .validate(now)
        .unwrap()
        .into_session(AccountId::DEFAULT, now)
    }

    #[test]
    fn city_names_are_distinct_and_enough() {
        let set: HashSet<_> = CITY_NAMES.iter().collect();
        assert_eq!(set.len(), CITY_NAMES.len());
        assert!(CITY_NAMES.len() >= 50);
    }

    #[test]
    fn numbering() {
        let used: HashSet<String> = ["Oslo", "Oslo 2", "Oslo 4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(untaken_title("Lima", &used), "Lima");
        assert_eq!(untaken_title("Oslo", &used), "Oslo 3");
        assert_eq!(numbered_title("Lima", &used), "Lima 2");
    }

    #[test]
    fn initial_state_is_sparse_with_defaults() {
        let s = NewAgentSession {
            repo_owner: Some("acme".into()),
            auto_commit_push: Some(true),
            ..Default::default()
        }
        .initial_state();
        assert_eq!(
            Value::Object(s),
            json!({
                "status": "running", "repoOwner": "acme", "isNewBranch": false,
                "globalSkillRefs": [], "sandboxState": {"type": "vercel"},
                "lifecycleState": "provisioning", "lifecycleVersion": 0,
                "autoCommitPushOverride": true,
            })
        );
    }

    #[test]
    fn archive_and_unarchive_patches() {
        let now = Timestamp::from_millis(2_000);
        let running = session(json!({"status": "running", "lifecycleError": "x"}));
        let archive = AgentPatch {
            status: Some(AgentStatus::Archived),
            ..Default::default()
        };
        assert_eq!(
            archive.merge_patch(&running, now),
            json!({"data": {"agent": {
                "status": "archived", "lifecycleState": "archived", "lifecycleError": null,
                "lifecycleRunId": null, "sandboxExpiresAt": null, "hibernateAfter": null,
            }}})
        );
        let unarchive = AgentPatch {
            status: Some(AgentStatus::Running),
            ..Default::default()
        };
        let archived = session(json!({"status": "archived", "lifecycleState": "archived"}));
        assert_eq!(
            unarchive.merge_patch(&archived, now),
            json!({"data": {"agent": {"status": "running", "lifecycleState": null, "lifecycleError": null}}})
        );
        // Running on a session that is not archived touches only the status.
        assert_eq!(
            unarchive.merge_patch(&running, now),
            json!({"data": {"agent": {"status": "running"}}})
        );
        assert_eq!(AgentPatch::default().merge_patch(&running, now), json!({}));
    }

    #[test]
    fn status_of_a_native_session() {
        let now = Timestamp::from_millis(2_000);
        let mut s = session(json!(null));
        s.data.clear();
        assert_eq!(agent_status(&s, now), AgentStatus::Running);
        s.close(None, now);
        assert_eq!(agent_status(&s, now), AgentStatus::Completed);
    }
}
