//! The Recoupable agent-sessions surface (`/api/sessions`, compat/RECOUPABLE.md): one test per
//! route with the statuses and messages of the compat file, the atomic create (with a store whose
//! chat insert fails), CORS, and the usual flow of a front end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::agent::CITY_NAMES;
use sessiond_core::channel::{ChannelInfo, NewRecord};
use sessiond_core::chat::{Chat, ChatId, Message, NewMessage};
use sessiond_core::document::{Chunk, Document, DocumentId, SearchHit};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::{Session, SessionQuery};
use sessiond_core::{AccountId, JobId, KeyId, SessionId, Timestamp};
use sessiond_server::{App, AppOptions};
use sessiond_store::{
    Appended, ChatDelete, ChatUpdate, CreateChat, DocumentCreate, DocumentDescribe,
    DocumentOutcome, DocumentSettle, DocumentUpload, InsertSession, JobCreate, JobUpdate,
    RecordPage, SessionDocuments, SessionGuard, SessionUpdate, Store, StoreError, UpdateJob,
    UpdateSession,
};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::common::{open_store, Api, Auth, Resp, TestServer};

const ADMIN: &str = "adm_recoup_0123456789abcdef";

/// Every key of a Session on this surface.
const SESSION_KEYS: &[&str] = &[
    "id",
    "userId",
    "title",
    "status",
    "repoOwner",
    "repoName",
    "branch",
    "cloneUrl",
    "isNewBranch",
    "globalSkillRefs",
    "sandboxState",
    "lifecycleState",
    "lifecycleVersion",
    "lifecycleError",
    "lifecycleRunId",
    "lastActivityAt",
    "sandboxExpiresAt",
    "hibernateAfter",
    "linesAdded",
    "linesRemoved",
    "snapshotUrl",
    "snapshotCreatedAt",
    "snapshotSizeBytes",
    "cachedDiff",
    "cachedDiffUpdatedAt",
    "autoCommitPushOverride",
    "autoCreatePrOverride",
    "prNumber",
    "prStatus",
    "createdAt",
    "updatedAt",
];

const CHAT_KEYS: &[&str] = &[
    "id",
    "sessionId",
    "title",
    "modelId",
    "activeStreamId",
    "lastAssistantMessageAt",
    "createdAt",
    "updatedAt",
];

#[track_caller]
fn assert_keys(v: &Value, keys: &[&str], extra: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut want: Vec<&str> = keys.iter().chain(extra).copied().collect();
    want.sort_unstable();
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    got.sort_unstable();
    assert_eq!(got, want, "keys of {v}");
}

/// Asserts the status and the exact JSON body.
#[track_caller]
fn assert_body(r: &Resp, status: u16, body: Value) {
    assert_eq!(
        r.status, status,
        "{} answered {}: {}",
        r.what, r.status, r.text
    );
    assert_eq!(r.json(), body, "{}", r.what);
}

/// Asserts the general error envelope `{"status":"error","error": message}`.
#[track_caller]
fn assert_error(r: &Resp, status: u16, message: &str) {
    assert_body(r, status, json!({"status": "error", "error": message}));
}

/// Creates a session through this surface; returns `{session, chat}`.
async fn create(api: &Api, body: Value) -> Value {
    api.post("/api/sessions", &body).await.expect(200)
}

fn sid(created: &Value) -> String {
    created["session"]["id"]
        .as_str()
        .expect("session id")
        .to_owned()
}

fn cid(created: &Value) -> String {
    created["chat"]["id"].as_str().expect("chat id").to_owned()
}

/// A second account (with its key) on an open-mode server, where the anonymous caller may
/// manage accounts.
async fn other_account(s: &TestServer) -> (String, Api) {
    let a = s
        .post("/v1/accounts", &json!({"name": "other"}))
        .await
        .expect(201);
    let id = a["id"].as_str().expect("account id").to_owned();
    let k = s
        .post(&format!("/v1/accounts/{id}/keys"), &json!({"name": "k"}))
        .await
        .expect(201);
    (id, s.x_api_key(k["key"].as_str().expect("secret")))
}

/// Appends a message natively (this surface has no message route: front ends post them
/// through the chat stream, which is the native API here).
async fn post_message(api: &Api, session: &str, chat: &str, id: &str, role: &str, text: &str) {
    let r = api
        .post(
            &format!("/v1/sessions/{session}/chats/{chat}/messages"),
            &json!({"id": id, "role": role, "parts": [{"type": "text", "text": text}]}),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{}: {}", r.what, r.text);
}

/// The `type`s of the session's events, in order.
async fn event_types(api: &Api, session: &str) -> Vec<String> {
    let page = api
        .get(&format!("/v1/sessions/{session}/channels/events/records"))
        .await
        .expect(200);
    page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["data"]["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn auth_exactly_one_credential() {
    let s = TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await;
    let admin = s.bearer(ADMIN);
    let acct = admin
        .post("/v1/accounts", &json!({"name": "a"}))
        .await
        .expect(201);
    let k = admin
        .post(
            &format!("/v1/accounts/{}/keys", acct["id"].as_str().unwrap()),
            &json!({"name": "k"}),
        )
        .await
        .expect(201);
    let key = k["key"].as_str().unwrap().to_owned();
    let exactly_one = json!({
        "status": "error",
        "error": "Exactly one of x-api-key or Authorization must be provided",
    });
    let unauthorized = json!({"status": "error", "message": "Unauthorized"});

    // Neither header.
    let r = s.post("/api/sessions", &json!({})).await;
    assert_body(&r, 401, exactly_one.clone());
    // Both headers (even when both are valid).
    let r = s
        .send(Method::POST, "/api/sessions", |rb| {
            rb.header("x-api-key", &key)
                .bearer_auth(&key)
                .json(&json!({}))
        })
        .await;
    assert_body(&r, 401, exactly_one.clone());
    // A bad key, either way.
    for api in [s.x_api_key("nope"), s.bearer("nope")] {
        assert_body(
            &api.post("/api/sessions", &json!({})).await,
            401,
            unauthorized.clone(),
        );
        assert_body(
            &api.get(&format!("/api/sessions/{}", Uuid::new_v4())).await,
            401,
            unauthorized.clone(),
        );
    }
    // Not a bearer credential.
    let r = s
        .send(Method::GET, "/api/sessions/x", |rb| {
            rb.header("authorization", format!("Basic {key}"))
        })
        .await;
    assert_body(&r, 401, unauthorized.clone());
    // The admin key is not an account's key.
    assert_body(
        &admin.post("/api/sessions", &json!({})).await,
        401,
        unauthorized.clone(),
    );
    // Auth is checked before anything else: a missing session is still 401 without a key.
    assert_body(
        &s.get(&format!("/api/sessions/{}", Uuid::new_v4())).await,
        401,
        exactly_one.clone(),
    );

    // A good key, either way; the session belongs to the key's account.
    for api in [s.x_api_key(&key), s.bearer(&key)] {
        let c = create(&api, json!({})).await;
        assert_eq!(c["session"]["userId"], acct["id"]);
        api.get(&format!("/api/sessions/{}", sid(&c)))
            .await
            .expect(200);
    }

    // Open mode: both may be absent (the default account), but never both present.
    let open = TestServer::start().await;
    let c = create(&open, json!({})).await;
    assert_eq!(c["session"]["userId"], Uuid::nil().to_string());
    let r = open
        .send(Method::POST, "/api/sessions", |rb| {
            rb.header("x-api-key", "a")
                .bearer_auth("b")
                .json(&json!({}))
        })
        .await;
    assert_body(&r, 401, exactly_one);
    assert_body(
        &open
            .x_api_key("nope")
            .post("/api/sessions", &json!({}))
            .await,
        401,
        unauthorized,
    );
}

#[tokio::test]
async fn post_sessions_creates_session_and_first_chat() {
    let s = TestServer::start().await;
    let c = create(&s, json!({"title": "Refactor"})).await;
    assert_keys(&c, &["session", "chat"], &[]);
    let session = &c["session"];
    assert_keys(session, SESSION_KEYS, &[]);
    assert_eq!(session["userId"], Uuid::nil().to_string());
    assert_eq!(session["title"], "Refactor");
    assert_eq!(session["status"], "running");
    assert_eq!(session["lifecycleState"], "provisioning");
    assert_eq!(session["lifecycleVersion"], 0);
    assert_eq!(session["globalSkillRefs"], json!([]));
    assert_eq!(session["sandboxState"], json!({"type": "vercel"}));
    assert_eq!(session["isNewBranch"], false);
    for key in [
        "repoOwner",
        "repoName",
        "branch",
        "cloneUrl",
        "lifecycleError",
        "lifecycleRunId",
        "lastActivityAt",
        "sandboxExpiresAt",
        "hibernateAfter",
        "linesAdded",
        "linesRemoved",
        "snapshotUrl",
        "snapshotCreatedAt",
        "snapshotSizeBytes",
        "cachedDiff",
        "cachedDiffUpdatedAt",
        "autoCommitPushOverride",
        "autoCreatePrOverride",
        "prNumber",
        "prStatus",
    ] {
        assert_eq!(session[key], Value::Null, "{key}");
    }
    let chat = &c["chat"];
    assert_keys(chat, CHAT_KEYS, &[]);
    assert_eq!(chat["title"], "New chat");
    assert_eq!(chat["sessionId"], session["id"]);
    assert_eq!(chat["modelId"], Value::Null);
    assert_eq!(chat["activeStreamId"], Value::Null);

    // One native session: the agent fields under data.agent, one version, both events.
    let native = s.session(&sid(&c)).await;
    assert_eq!(native["title"], "Refactor");
    assert_eq!(native["type"], "agent");
    assert_eq!(native["version"], 1);
    assert_eq!(native["data"]["agent"]["status"], "running");
    assert_eq!(native["data"]["agent"]["lifecycleState"], "provisioning");
    assert_eq!(
        event_types(&s, &sid(&c)).await,
        vec!["session.created", "chat.created"]
    );
    let chats = s
        .get(&format!("/v1/sessions/{}/chats", sid(&c)))
        .await
        .expect(200);
    assert_eq!(chats.as_array().unwrap().len(), 1);
    assert_eq!(chats[0]["id"], chat["id"]);

    // Every body field is kept as data.
    let org = Uuid::new_v4().to_string();
    let c = create(
        &s,
        json!({
            "title": "  Trimmed  ", "repoOwner": "acme", "repoName": "api", "branch": "feat/x",
            "isNewBranch": true, "cloneUrl": "https://github.com/acme/api.git",
            "sandboxType": "vercel", "autoCommitPush": true, "autoCreatePr": false,
            "organizationId": org, "artistId": Uuid::new_v4().to_string(),
            "somethingElse": {"ignored": true},
        }),
    )
    .await;
    let session = &c["session"];
    assert_keys(session, SESSION_KEYS, &[]);
    assert_eq!(session["title"], "Trimmed");
    assert_eq!(session["repoOwner"], "acme");
    assert_eq!(session["repoName"], "api");
    assert_eq!(session["branch"], "feat/x");
    assert_eq!(session["isNewBranch"], true);
    assert_eq!(session["cloneUrl"], "https://github.com/acme/api.git");
    assert_eq!(session["autoCommitPushOverride"], true);
    assert_eq!(session["autoCreatePrOverride"], false);
    let native = s.session(&sid(&c)).await;
    assert_eq!(native["data"]["agent"]["organizationId"], org);
    assert!(native["data"]["agent"].get("somethingElse").is_none());
}

#[tokio::test]
async fn post_sessions_body_rules() {
    let s = TestServer::start().await;
    // Empty, invalid, and valid-but-empty JSON all count as {}.
    for body in ["", "   ", "{", "not json", "{}"] {
        let r = s
            .raw(
                Method::POST,
                "/api/sessions",
                "application/json",
                body.to_owned(),
            )
            .await;
        let v = r.expect(200);
        assert_eq!(v["session"]["status"], "running", "{body:?}");
        assert_eq!(v["chat"]["title"], "New chat", "{body:?}");
    }
    let cases = [
        (
            json!({"sandboxType": "docker"}),
            json!({"status": "error", "error": "Invalid sandbox type"}),
        ),
        (
            json!({"sandboxType": 3}),
            json!({"status": "error", "error": "Invalid sandbox type"}),
        ),
        (
            json!({"autoCommitPush": "yes"}),
            json!({"status": "error", "error": "Invalid autoCommitPush value"}),
        ),
        (
            json!({"autoCommitPush": null}),
            json!({"status": "error", "error": "Invalid autoCommitPush value"}),
        ),
        (
            json!({"autoCreatePr": 1}),
            json!({"status": "error", "error": "Invalid autoCreatePr value"}),
        ),
        (
            json!({"organizationId": "org-1"}),
            json!({"status": "error", "missing_fields": ["organizationId"], "error": "organizationId must be a valid UUID"}),
        ),
        (
            json!({"artistId": 42}),
            json!({"status": "error", "missing_fields": ["artistId"], "error": "artistId must be a valid UUID"}),
        ),
        (
            json!({"repoOwner": 7}),
            json!({"status": "error", "missing_fields": ["repoOwner"], "error": "Invalid input: expected string, received number"}),
        ),
    ];
    for (body, want) in cases {
        let r = s.post("/api/sessions", &body).await;
        assert_body(&r, 400, want);
    }
    let r = s
        .post("/api/sessions", &json!({"title": "x".repeat(300)}))
        .await;
    assert_error(&r, 400, "title must be at most 256 characters");
    // Nothing was created by the rejected requests: five sessions from the first loop.
    assert_eq!(s.list_all("").await.len(), 5);
}

#[tokio::test]
async fn post_sessions_title_falls_back_to_an_unused_city() {
    let s = TestServer::start().await;
    let cities: HashSet<&str> = CITY_NAMES.iter().copied().collect();
    let mut seen = HashSet::new();
    for body in [
        json!({}),
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": null}),
    ] {
        let t = create(&s, body).await["session"]["title"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(cities.contains(t.as_str()), "{t} is not a city of the list");
        assert!(seen.insert(t.clone()), "{t} was used twice");
    }
    // Once every city is a title of the account, the names are numbered.
    for city in CITY_NAMES {
        if !seen.contains(*city) {
            create(&s, json!({"title": city})).await;
        }
    }
    let t = create(&s, json!({})).await["session"]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    let (base, n) = t.rsplit_once(' ').expect("a numbered title");
    assert!(cities.contains(base), "{t}");
    assert_eq!(n, "2", "{t}");
    // Another account's titles do not count.
    let (_, other) = other_account(&s).await;
    let t = create(&other, json!({})).await["session"]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cities.contains(t.as_str()), "{t}");
}

/// A store whose chat inserts fail; everything else goes to the real store underneath.
struct ChatInsertFails(Arc<dyn Store>);

#[async_trait]
impl Store for ChatInsertFails {
    fn describe(&self) -> String {
        self.0.describe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn shutdown(&self) {
        self.0.shutdown().await
    }

    async fn ensure_account(&self, account: Account) -> Result<(), StoreError> {
        self.0.ensure_account(account).await
    }

    async fn create_account(&self, account: Account) -> Result<Account, StoreError> {
        self.0.create_account(account).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.0.get_account(id).await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        self.0.create_api_key(key).await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.0.find_api_key(hash).await
    }

    async fn revoke_api_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError> {
        self.0.revoke_api_key(id, at).await
    }

    async fn store_key_seal(&self, key: KeyId, sealed: Vec<u8>) -> Result<(), StoreError> {
        self.0.store_key_seal(key, sealed).await
    }

    async fn key_seals(&self, account: AccountId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.0.key_seals(account).await
    }

    async fn insert_session(
        &self,
        session: Session,
        event: Event,
    ) -> Result<InsertSession, StoreError> {
        self.0.insert_session(session, event).await
    }

    async fn get_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<Session>, StoreError> {
        self.0.get_session(account, session).await
    }

    async fn session_owner(&self, session: SessionId) -> Result<Option<AccountId>, StoreError> {
        self.0.session_owner(session).await
    }

    async fn update_session(
        &self,
        account: AccountId,
        session: &SessionRef,
        update: SessionUpdate,
    ) -> Result<UpdateSession, StoreError> {
        self.0.update_session(account, session, update).await
    }

    async fn delete_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<SessionId>, StoreError> {
        self.0.delete_session(account, session).await
    }

    async fn list_sessions(
        &self,
        account: AccountId,
        query: &SessionQuery,
        include_data: bool,
    ) -> Result<Vec<Session>, StoreError> {
        self.0.list_sessions(account, query, include_data).await
    }

    async fn append_records(
        &self,
        account: AccountId,
        session: &SessionRef,
        channel: &str,
        records: Vec<NewRecord>,
        guard: SessionGuard,
        now: Timestamp,
    ) -> Result<Option<Appended>, StoreError> {
        self.0
            .append_records(account, session, channel, records, guard, now)
            .await
    }

    async fn read_records(
        &self,
        session: SessionId,
        channel: &str,
        after: i64,
        limit: usize,
        now: Timestamp,
    ) -> Result<Option<RecordPage>, StoreError> {
        self.0
            .read_records(session, channel, after, limit, now)
            .await
    }

    async fn list_channels(&self, session: SessionId) -> Result<Vec<ChannelInfo>, StoreError> {
        self.0.list_channels(session).await
    }

    async fn create_job(
        &self,
        account: AccountId,
        session: &SessionRef,
        job: Job,
        reuse_since: Option<Timestamp>,
        decide: JobCreate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        self.0
            .create_job(account, session, job, reuse_since, decide)
            .await
    }

    async fn get_job(&self, account: AccountId, id: JobId) -> Result<Option<Job>, StoreError> {
        self.0.get_job(account, id).await
    }

    async fn list_jobs(&self, session: SessionId) -> Result<Vec<Job>, StoreError> {
        self.0.list_jobs(session).await
    }

    async fn update_job(
        &self,
        account: AccountId,
        id: JobId,
        update: JobUpdate,
    ) -> Result<UpdateJob, StoreError> {
        self.0.update_job(account, id, update).await
    }

    async fn claim_job(
        &self,
        account: Option<AccountId>,
        types: &[String],
        claim: JobUpdate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        self.0.claim_job(account, types, claim).await
    }

    async fn create_document(
        &self,
        account: AccountId,
        session: &SessionRef,
        upload: DocumentUpload,
        decide: DocumentCreate,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        self.0
            .create_document(account, session, upload, decide, docs)
            .await
    }

    async fn get_document(
        &self,
        session: SessionId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        self.0.get_document(session, id).await
    }

    async fn find_document(
        &self,
        account: AccountId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        self.0.find_document(account, id).await
    }

    async fn list_documents(&self, session: SessionId) -> Result<Vec<Document>, StoreError> {
        self.0.list_documents(session).await
    }

    async fn document_content(&self, id: DocumentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.document_content(id).await
    }

    async fn list_chunks(&self, id: DocumentId) -> Result<Vec<Chunk>, StoreError> {
        self.0.list_chunks(id).await
    }

    async fn finish_document(
        &self,
        account: AccountId,
        id: DocumentId,
        outcome: DocumentOutcome,
        settle: DocumentSettle,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        self.0
            .finish_document(account, id, outcome, settle, docs)
            .await
    }

    async fn delete_document(
        &self,
        session: SessionId,
        id: DocumentId,
        describe: DocumentDescribe,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, i64)>, StoreError> {
        self.0.delete_document(session, id, describe, docs).await
    }

    async fn search_chunks(
        &self,
        session: SessionId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SearchHit>, StoreError> {
        self.0.search_chunks(session, query, limit).await
    }

    async fn insert_session_with_chat(
        &self,
        session: Session,
        event: Event,
        mut chat: Chat,
    ) -> Result<InsertSession, StoreError> {
        // The chat points at a session that does not exist: its insert fails inside the
        // transaction, after the session's own insert.
        chat.session_id = SessionId::random();
        self.0.insert_session_with_chat(session, event, chat).await
    }

    async fn create_chat(
        &self,
        _account: AccountId,
        _session: &SessionRef,
        _chat: Chat,
        _guard: SessionGuard,
    ) -> Result<CreateChat, StoreError> {
        Err(StoreError::Internal(
            "injected: the chat insert fails".into(),
        ))
    }

    async fn list_chats(
        &self,
        session: SessionId,
        reader: AccountId,
    ) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError> {
        self.0.list_chats(session, reader).await
    }

    async fn get_chat(&self, session: SessionId, chat: ChatId) -> Result<Option<Chat>, StoreError> {
        self.0.get_chat(session, chat).await
    }

    async fn update_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        update: ChatUpdate,
    ) -> Result<Option<Chat>, StoreError> {
        self.0.update_chat(session, chat, update).await
    }

    async fn delete_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        decide: ChatDelete,
    ) -> Result<Option<Chat>, StoreError> {
        self.0.delete_chat(session, chat, decide).await
    }

    async fn append_message(
        &self,
        session: SessionId,
        chat: ChatId,
        message: NewMessage,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError> {
        self.0.append_message(session, chat, message, now).await
    }

    async fn list_messages(&self, chat: ChatId) -> Result<Vec<Message>, StoreError> {
        self.0.list_messages(chat).await
    }

    async fn mark_chat_read(
        &self,
        session: SessionId,
        chat: ChatId,
        reader: AccountId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.0.mark_chat_read(session, chat, reader, at).await
    }

    async fn expired_leases(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(AccountId, JobId)>, StoreError> {
        self.0.expired_leases(now, limit).await
    }
}

#[tokio::test]
async fn post_sessions_is_atomic_when_the_chat_insert_fails() {
    let dir = tempfile::tempdir().unwrap();
    let inner = open_store(dir.path()).await;
    let store: Arc<dyn Store> = Arc::new(ChatInsertFails(inner.clone()));
    let app = App::new(store, AppOptions::default()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sessiond_server::serve(listener, app, async move {
        let _ = rx.await;
    }));
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: format!("http://{addr}"),
        auth: Auth::None,
    };

    for body in [json!({"title": "Doomed"}), json!({})] {
        let r = api.post("/api/sessions", &body).await;
        assert_error(&r, 500, "Internal server error");
    }
    // Neither the session nor its chat exists: not through the API, not in the store.
    assert_eq!(api.list_all("").await.len(), 0);
    let query = SessionQuery {
        filter: Default::default(),
        after: None,
        limit: 100,
        now: Timestamp::now(),
    };
    assert!(inner
        .list_sessions(AccountId::DEFAULT, &query, true)
        .await
        .unwrap()
        .is_empty());

    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn get_session_404_before_403() {
    let s = TestServer::start().await;
    let c = create(&s, json!({"title": "Mine"})).await;
    let r = s.get(&format!("/api/sessions/{}", sid(&c))).await;
    let v = r.expect(200);
    assert_keys(&v, &["session"], &[]);
    assert_keys(&v["session"], SESSION_KEYS, &[]);
    assert_eq!(v["session"], c["session"]);

    assert_error(
        &s.get(&format!("/api/sessions/{}", Uuid::new_v4())).await,
        404,
        "Session not found",
    );
    assert_error(
        &s.get("/api/sessions/not-a-uuid").await,
        404,
        "Session not found",
    );
    // Another account's session exists, and this surface says so.
    let (_, other) = other_account(&s).await;
    assert_error(
        &other.get(&format!("/api/sessions/{}", sid(&c))).await,
        403,
        "Forbidden",
    );
    // A session created natively reads with defaults for the agent fields.
    let native = s.create(json!({"title": "plain"})).await;
    let v = s
        .get(&format!("/api/sessions/{}", native["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_keys(&v["session"], SESSION_KEYS, &[]);
    assert_eq!(v["session"]["status"], "running");
    assert_eq!(v["session"]["globalSkillRefs"], json!([]));
    assert_eq!(v["session"]["lifecycleVersion"], 0);
    assert_eq!(v["session"]["lifecycleState"], Value::Null);
}

#[tokio::test]
async fn patch_session_fields_and_errors() {
    let s = TestServer::start().await;
    let c = create(&s, json!({"title": "Before"})).await;
    let id = sid(&c);
    let p = format!("/api/sessions/{id}");

    let v = s
        .patch(
            &p,
            &json!({"title": "After", "linesAdded": 12, "linesRemoved": 3, "extra": 1}),
        )
        .await
        .expect(200);
    assert_keys(&v, &["session"], &[]);
    assert_keys(&v["session"], SESSION_KEYS, &[]);
    assert_eq!(v["session"]["title"], "After");
    assert_eq!(v["session"]["linesAdded"], 12);
    assert_eq!(v["session"]["linesRemoved"], 3);
    assert_eq!(v["session"]["status"], "running");
    // The change is a native merge patch: version 2, a session.patched event.
    let native = s.session(&id).await;
    assert_eq!(native["version"], 2);
    assert_eq!(native["title"], "After");
    assert_eq!(native["data"]["agent"]["linesAdded"], 12);
    assert_eq!(
        event_types(&s, &id).await,
        vec!["session.created", "chat.created", "session.patched"]
    );

    // No change (an empty body, {}, or the same values): the current row, same version.
    for body in ["", "{}", r#"{"title":"After","linesAdded":12}"#] {
        let r = s
            .raw(Method::PATCH, &p, "application/json", body.to_owned())
            .await;
        assert_eq!(r.expect(200)["session"], v["session"], "{body:?}");
    }
    assert_eq!(s.session(&id).await["version"], 2);

    let bad = [
        (
            "[]",
            json!([]),
            "Invalid input: expected object, received array",
        ),
        (
            r#"{"title":5}"#,
            json!(["title"]),
            "Invalid input: expected string, received number",
        ),
        (
            r#"{"title":null}"#,
            json!(["title"]),
            "Invalid input: expected string, received null",
        ),
        (
            r#"{"status":"paused"}"#,
            json!(["status"]),
            r#"Invalid option: expected one of "running"|"completed"|"failed"|"archived""#,
        ),
        (
            r#"{"linesAdded":-1}"#,
            json!(["linesAdded"]),
            "Too small: expected number to be >=0",
        ),
        (
            r#"{"linesAdded":1.5}"#,
            json!(["linesAdded"]),
            "Invalid input: expected int, received number",
        ),
        (
            r#"{"linesRemoved":"3"}"#,
            json!(["linesRemoved"]),
            "Invalid input: expected number, received string",
        ),
    ];
    for (body, path, message) in bad {
        let r = s
            .raw(Method::PATCH, &p, "application/json", body.to_owned())
            .await;
        assert_body(
            &r,
            400,
            json!({"status": "error", "path": path, "error": message}),
        );
    }
    let r = s.raw(Method::PATCH, &p, "application/json", "{nope").await;
    assert_error(&r, 400, "Invalid JSON body");
    // A native rule (title length) answers with the general envelope.
    let r = s.patch(&p, &json!({"title": "x".repeat(300)})).await;
    assert_error(&r, 400, "title must be at most 256 characters");
    assert_eq!(
        s.session(&id).await["version"],
        2,
        "rejected patches change nothing"
    );

    // 404 and 403 come before the body is judged.
    let missing = format!("/api/sessions/{}", Uuid::new_v4());
    assert_error(
        &s.patch(&missing, &json!({"title": 5})).await,
        404,
        "Session not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(
        &other.patch(&p, &json!({"title": 5})).await,
        403,
        "Forbidden",
    );
    assert_error(
        &other.patch(&p, &json!({"title": "x"})).await,
        403,
        "Forbidden",
    );
    assert_eq!(s.session(&id).await["title"], "After");
}

#[tokio::test]
async fn patch_session_archive_and_unarchive() {
    let s = TestServer::start().await;
    let c = create(&s, json!({})).await;
    let id = sid(&c);
    let p = format!("/api/sessions/{id}");
    // A sandbox lifecycle written by something else (natively, as data).
    s.patch(
        &format!("/v1/sessions/{id}"),
        &json!({"data": {"agent": {
            "lifecycleState": "active", "lifecycleError": "boom", "lifecycleRunId": "run_1",
            "sandboxExpiresAt": "2030-01-01T00:00:00.000Z", "hibernateAfter": "2030-01-01T00:00:00.000Z",
            "snapshotUrl": "https://example.com/snap",
        }}}),
    )
    .await
    .expect(200);

    let v = s
        .patch(&p, &json!({"status": "archived"}))
        .await
        .expect(200);
    let a = &v["session"];
    assert_keys(a, SESSION_KEYS, &[]);
    assert_eq!(a["status"], "archived");
    assert_eq!(a["lifecycleState"], "archived");
    for key in [
        "lifecycleError",
        "lifecycleRunId",
        "sandboxExpiresAt",
        "hibernateAfter",
    ] {
        assert_eq!(a[key], Value::Null, "{key} is cleared on archive");
    }
    assert_eq!(
        a["snapshotUrl"], "https://example.com/snap",
        "other fields are kept"
    );
    let version = s.session(&id).await["version"].as_i64().unwrap();
    // Archiving again changes nothing.
    s.patch(&p, &json!({"status": "archived"}))
        .await
        .expect(200);
    assert_eq!(s.session(&id).await["version"].as_i64().unwrap(), version);

    // An error recorded while archived; unarchiving clears it and the lifecycle state.
    s.patch(
        &format!("/v1/sessions/{id}"),
        &json!({"data": {"agent": {"lifecycleError": "late", "lifecycleRunId": "run_2"}}}),
    )
    .await
    .expect(200);
    let v = s.patch(&p, &json!({"status": "running"})).await.expect(200);
    let u = &v["session"];
    assert_eq!(u["status"], "running");
    assert_eq!(u["lifecycleState"], Value::Null);
    assert_eq!(u["lifecycleError"], Value::Null);
    assert_eq!(
        u["lifecycleRunId"], "run_2",
        "unarchive clears only state and error"
    );

    // running → running and running → completed leave the lifecycle alone.
    s.patch(
        &format!("/v1/sessions/{id}"),
        &json!({"data": {"agent": {"lifecycleState": "active"}}}),
    )
    .await
    .expect(200);
    let v = s.patch(&p, &json!({"status": "running"})).await.expect(200);
    assert_eq!(v["session"]["lifecycleState"], "active");
    let v = s
        .patch(&p, &json!({"status": "completed"}))
        .await
        .expect(200);
    assert_eq!(v["session"]["status"], "completed");
    assert_eq!(v["session"]["lifecycleState"], "active");
    // The native session stays open: status is data on this surface.
    assert_eq!(s.session(&id).await["status"], "active");
}

#[tokio::test]
async fn get_chats_lists_summaries_oldest_first() {
    let s = TestServer::start().await;
    let c = create(&s, json!({})).await;
    let id = sid(&c);
    let second = s
        .post(&format!("/api/sessions/{id}/chats"), &json!({}))
        .await
        .expect(200)["chat"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = s
        .get(&format!("/api/sessions/{id}/chats"))
        .await
        .expect(200);
    assert_keys(&v, &["chats", "defaultModelId"], &[]);
    assert!(v["defaultModelId"].is_string());
    let chats = v["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0]["id"].as_str().unwrap(), cid(&c));
    assert_eq!(chats[1]["id"].as_str().unwrap(), second);
    for chat in chats {
        assert_keys(chat, CHAT_KEYS, &["hasUnread", "isStreaming"]);
        assert_eq!(chat["hasUnread"], false);
        assert_eq!(chat["isStreaming"], false);
    }
    // An assistant message makes the chat unread for the account.
    post_message(&s, &id, &second, "m1", "assistant", "done").await;
    let v = s
        .get(&format!("/api/sessions/{id}/chats"))
        .await
        .expect(200);
    assert_eq!(v["chats"][0]["hasUnread"], false);
    assert_eq!(v["chats"][1]["hasUnread"], true);
    assert!(v["chats"][1]["lastAssistantMessageAt"].is_string());

    assert_error(
        &s.get(&format!("/api/sessions/{}/chats", Uuid::new_v4()))
            .await,
        404,
        "Session not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(
        &other.get(&format!("/api/sessions/{id}/chats")).await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn post_chats_create_reuse_conflict_and_bad_ids() {
    let s = TestServer::start().await;
    let a = create(&s, json!({})).await;
    let b = create(&s, json!({})).await;
    let pa = format!("/api/sessions/{}/chats", sid(&a));

    let v = s.post(&pa, &json!({})).await.expect(200);
    assert_keys(&v, &["chat"], &[]);
    assert_keys(&v["chat"], CHAT_KEYS, &[]);
    assert_eq!(v["chat"]["title"], "New chat");
    assert_eq!(v["chat"]["sessionId"].as_str().unwrap(), sid(&a));

    // A claimed id: created once, then answered as it is.
    let claimed = Uuid::new_v4().to_string();
    let first = s.post(&pa, &json!({"id": claimed})).await.expect(200);
    assert_eq!(first["chat"]["id"], claimed);
    let again = s.post(&pa, &json!({"id": claimed})).await.expect(200);
    assert_eq!(again, first);
    // The id of another session's chat.
    let r = s
        .post(
            &format!("/api/sessions/{}/chats", sid(&b)),
            &json!({"id": claimed}),
        )
        .await;
    assert_body(&r, 409, json!({"error": "Chat ID conflict"}));
    let r = s.post(&pa, &json!({"id": cid(&b)})).await;
    assert_body(&r, 409, json!({"error": "Chat ID conflict"}));
    // Bad ids.
    for bad in [json!(""), json!(5), json!(null), json!("chat-1")] {
        let r = s.post(&pa, &json!({"id": bad})).await;
        assert_body(&r, 400, json!({"error": "Invalid chat id"}));
    }
    // An empty or invalid body counts as {}.
    for body in ["", "{oops", "[1]"] {
        let r = s
            .raw(Method::POST, &pa, "application/json", body.to_owned())
            .await;
        assert_eq!(r.expect(200)["chat"]["title"], "New chat", "{body:?}");
    }
    let chats = s.get(&pa).await.expect(200);
    assert_eq!(chats["chats"].as_array().unwrap().len(), 6);

    assert_error(
        &s.post(
            &format!("/api/sessions/{}/chats", Uuid::new_v4()),
            &json!({}),
        )
        .await,
        404,
        "Session not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(&other.post(&pa, &json!({})).await, 403, "Forbidden");
}

#[tokio::test]
async fn get_chat_with_messages_in_order() {
    let s = TestServer::start().await;
    let a = create(&s, json!({})).await;
    let b = create(&s, json!({})).await;
    let (id, chat) = (sid(&a), cid(&a));
    post_message(&s, &id, &chat, "u1", "user", "hello").await;
    post_message(&s, &id, &chat, "a1", "assistant", "hi").await;
    post_message(&s, &id, &chat, "u2", "user", "bye").await;
    // Exactly once by id.
    post_message(&s, &id, &chat, "u1", "user", "hello").await;

    let v = s
        .get(&format!("/api/sessions/{id}/chats/{chat}"))
        .await
        .expect(200);
    assert_keys(&v, &["chat", "isStreaming", "messages"], &[]);
    assert_keys(&v["chat"], CHAT_KEYS, &[]);
    assert_eq!(v["isStreaming"], false);
    assert_eq!(
        v["messages"],
        json!([
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]},
            {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]},
            {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "bye"}]},
        ])
    );
    // A chat of another session, an unknown chat, a chat id that is no UUID.
    for other_chat in [cid(&b), Uuid::new_v4().to_string(), "nope".to_owned()] {
        assert_error(
            &s.get(&format!("/api/sessions/{id}/chats/{other_chat}"))
                .await,
            404,
            "Chat not found",
        );
    }
    assert_error(
        &s.get(&format!("/api/sessions/{}/chats/{chat}", Uuid::new_v4()))
            .await,
        404,
        "Session not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(
        &other.get(&format!("/api/sessions/{id}/chats/{chat}")).await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn patch_chat_rename_and_model() {
    let s = TestServer::start().await;
    let a = create(&s, json!({})).await;
    let p = format!("/api/sessions/{}/chats/{}", sid(&a), cid(&a));

    let v = s
        .patch(&p, &json!({"title": "  Plan the refactor  "}))
        .await
        .expect(200);
    assert_keys(&v, &["chat"], &[]);
    assert_keys(&v["chat"], CHAT_KEYS, &[]);
    assert_eq!(v["chat"]["title"], "Plan the refactor");
    let v = s
        .patch(&p, &json!({"modelId": " anthropic/claude-sonnet-4.5 "}))
        .await
        .expect(200);
    assert_eq!(v["chat"]["modelId"], "anthropic/claude-sonnet-4.5");
    assert_eq!(v["chat"]["title"], "Plan the refactor");

    let bad = [
        ("{}", "At least one field is required"),
        (r#"{"title":"   "}"#, "title cannot be empty"),
        (r#"{"modelId":""}"#, "modelId cannot be empty"),
        (
            r#"{"title":3}"#,
            "Invalid input: expected string, received number",
        ),
        (r#"{"name":"x"}"#, r#"Unrecognized key: "name""#),
        ("", "Invalid JSON body"),
        ("{", "Invalid JSON body"),
    ];
    for (body, message) in bad {
        let r = s
            .raw(Method::PATCH, &p, "application/json", body.to_owned())
            .await;
        assert_error(&r, 400, message);
    }
    assert_error(
        &s.patch(
            &format!("/api/sessions/{}/chats/{}", sid(&a), Uuid::new_v4()),
            &json!({"title": "x"}),
        )
        .await,
        404,
        "Chat not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(
        &other.patch(&p, &json!({"title": "x"})).await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn delete_chat_but_never_the_only_one() {
    let s = TestServer::start().await;
    let a = create(&s, json!({})).await;
    let id = sid(&a);
    let first = cid(&a);
    let only = format!("/api/sessions/{id}/chats/{first}");
    assert_error(
        &s.delete(&only).await,
        400,
        "Cannot delete the only chat in a session",
    );

    let second = s
        .post(&format!("/api/sessions/{id}/chats"), &json!({}))
        .await
        .expect(200)["chat"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, other) = other_account(&s).await;
    assert_error(&other.delete(&only).await, 403, "Forbidden");
    assert_body(&s.delete(&only).await, 200, json!({"success": true}));
    assert_error(&s.delete(&only).await, 404, "Chat not found");
    let left = s
        .get(&format!("/api/sessions/{id}/chats"))
        .await
        .expect(200);
    assert_eq!(left["chats"].as_array().unwrap().len(), 1);
    assert_eq!(left["chats"][0]["id"].as_str().unwrap(), second);
    assert_error(
        &s.delete(&format!("/api/sessions/{id}/chats/{second}"))
            .await,
        400,
        "Cannot delete the only chat in a session",
    );
    assert_error(
        &s.delete(&format!("/api/sessions/{}/chats/{second}", Uuid::new_v4()))
            .await,
        404,
        "Session not found",
    );
}

#[tokio::test]
async fn post_read_marks_the_chat_read() {
    let s = TestServer::start().await;
    let a = create(&s, json!({})).await;
    let (id, chat) = (sid(&a), cid(&a));
    post_message(&s, &id, &chat, "a1", "assistant", "done").await;
    let list = format!("/api/sessions/{id}/chats");
    assert_eq!(
        s.get(&list).await.expect(200)["chats"][0]["hasUnread"],
        true
    );

    let r = s
        .post(&format!("/api/sessions/{id}/chats/{chat}/read"), &json!({}))
        .await;
    assert_body(&r, 200, json!({"success": true}));
    assert_eq!(
        s.get(&list).await.expect(200)["chats"][0]["hasUnread"],
        false
    );
    // A later assistant message is unread again.
    tokio::time::sleep(Duration::from_millis(5)).await;
    post_message(&s, &id, &chat, "a2", "assistant", "more").await;
    assert_eq!(
        s.get(&list).await.expect(200)["chats"][0]["hasUnread"],
        true
    );

    assert_error(
        &s.post(
            &format!("/api/sessions/{id}/chats/{}/read", Uuid::new_v4()),
            &json!({}),
        )
        .await,
        404,
        "Chat not found",
    );
    let (_, other) = other_account(&s).await;
    assert_error(
        &other
            .post(&format!("/api/sessions/{id}/chats/{chat}/read"), &json!({}))
            .await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn cors_on_every_route_and_options() {
    let s = TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await;
    let id = Uuid::new_v4();
    let chat = Uuid::new_v4();
    let routes = [
        (Method::POST, "/api/sessions".to_owned()),
        (Method::GET, format!("/api/sessions/{id}")),
        (Method::PATCH, format!("/api/sessions/{id}")),
        (Method::GET, format!("/api/sessions/{id}/chats")),
        (Method::POST, format!("/api/sessions/{id}/chats")),
        (Method::GET, format!("/api/sessions/{id}/chats/{chat}")),
        (Method::PATCH, format!("/api/sessions/{id}/chats/{chat}")),
        (Method::DELETE, format!("/api/sessions/{id}/chats/{chat}")),
        (
            Method::POST,
            format!("/api/sessions/{id}/chats/{chat}/read"),
        ),
    ];
    #[track_caller]
    fn assert_cors(r: &Resp) {
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "{}",
            r.what
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, POST, PUT, DELETE, OPTIONS, PATCH"),
            "{}",
            r.what
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Content-Type, Authorization, X-Requested-With, x-api-key"),
            "{}",
            r.what
        );
    }
    for (method, path) in &routes {
        // A preflight needs no credentials.
        let r = s
            .send(Method::OPTIONS, path, |rb| {
                rb.header("origin", "https://app.example")
                    .header("access-control-request-method", method.as_str())
            })
            .await;
        assert_eq!(r.status, 200, "OPTIONS {path}: {}", r.text);
        assert_cors(&r);
        // Errors carry the headers too (here: 401 without credentials).
        let r = s.send(method.clone(), path, |rb| rb).await;
        assert_eq!(r.status, 401, "{}", r.what);
        assert_cors(&r);
    }
    // And successes.
    let admin = s.bearer(ADMIN);
    let acct = admin
        .post("/v1/accounts", &json!({"name": "a"}))
        .await
        .expect(201);
    let k = admin
        .post(
            &format!("/v1/accounts/{}/keys", acct["id"].as_str().unwrap()),
            &json!({"name": "k"}),
        )
        .await
        .expect(201);
    let api = s.x_api_key(k["key"].as_str().unwrap());
    let r = api.post("/api/sessions", &json!({})).await;
    assert_eq!(r.status, 200);
    assert_cors(&r);
    let r = api.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(r.status, 404);
    assert_cors(&r);
    // The native API is not this surface: no CORS headers there.
    let r = api.get("/v1/sessions").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_front_end_session_flow() {
    let s = TestServer::start().await;
    // Create a session (with its first chat).
    let created = create(
        &s,
        json!({"repoOwner": "acme", "repoName": "web", "branch": "main", "cloneUrl": "https://github.com/acme/web.git"}),
    )
    .await;
    let id = sid(&created);
    let first = cid(&created);
    let base = format!("/api/sessions/{id}");
    assert_eq!(created["session"]["status"], "running");

    // List chats: the first one.
    let chats = s.get(&format!("{base}/chats")).await.expect(200);
    assert_eq!(chats["chats"].as_array().unwrap().len(), 1);
    assert_eq!(chats["chats"][0]["id"].as_str().unwrap(), first);

    // Add a chat with a claimed id (retried once, as a front end does), and rename it.
    let claimed = Uuid::new_v4().to_string();
    for _ in 0..2 {
        let v = s
            .post(&format!("{base}/chats"), &json!({"id": claimed}))
            .await
            .expect(200);
        assert_eq!(v["chat"]["id"], claimed);
    }
    let v = s
        .patch(
            &format!("{base}/chats/{claimed}"),
            &json!({"title": "Fix the login bug"}),
        )
        .await
        .expect(200);
    assert_eq!(v["chat"]["title"], "Fix the login bug");

    // Post messages (through the chat stream, natively), then read them here.
    post_message(
        &s,
        &id,
        &claimed,
        "msg-1",
        "user",
        "the login button does nothing",
    )
    .await;
    post_message(
        &s,
        &id,
        &claimed,
        "msg-2",
        "assistant",
        "fixed in src/login.tsx",
    )
    .await;
    let chats = s.get(&format!("{base}/chats")).await.expect(200);
    let summary = chats["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == claimed)
        .unwrap()
        .clone();
    assert_eq!(summary["hasUnread"], true);
    assert_eq!(summary["title"], "Fix the login bug");
    let v = s.get(&format!("{base}/chats/{claimed}")).await.expect(200);
    let ids: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["msg-1", "msg-2"]);
    assert_body(
        &s.post(&format!("{base}/chats/{claimed}/read"), &json!({}))
            .await,
        200,
        json!({"success": true}),
    );
    let chats = s.get(&format!("{base}/chats")).await.expect(200);
    assert!(chats["chats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["hasUnread"] == false));

    // Record progress, archive, unarchive.
    let v = s
        .patch(&base, &json!({"linesAdded": 10, "linesRemoved": 2}))
        .await
        .expect(200);
    assert_eq!(v["session"]["linesAdded"], 10);
    let v = s
        .patch(&base, &json!({"status": "archived"}))
        .await
        .expect(200);
    assert_eq!(v["session"]["status"], "archived");
    assert_eq!(v["session"]["lifecycleState"], "archived");
    let v = s
        .patch(&base, &json!({"status": "running"}))
        .await
        .expect(200);
    assert_eq!(v["session"]["status"], "running");
    assert_eq!(v["session"]["lifecycleState"], Value::Null);
    let v = s.get(&base).await.expect(200);
    assert_eq!(v["session"]["repoOwner"], "acme");
    assert_eq!(v["session"]["linesAdded"], 10);

    // Delete the first chat; the last one cannot go.
    assert_body(
        &s.delete(&format!("{base}/chats/{first}")).await,
        200,
        json!({"success": true}),
    );
    assert_error(
        &s.delete(&format!("{base}/chats/{claimed}")).await,
        400,
        "Cannot delete the only chat in a session",
    );
    let chats = s.get(&format!("{base}/chats")).await.expect(200);
    assert_eq!(chats["chats"].as_array().unwrap().len(), 1);

    // A native client saw all of it: the agent fields, the version, the events.
    let native = s.session(&id).await;
    assert_eq!(native["data"]["agent"]["status"], "running");
    assert_eq!(native["version"], 4);
    let events = event_types(&s, &id).await;
    assert_eq!(events.iter().filter(|e| *e == "session.patched").count(), 3);
    assert!(events.contains(&"chat.deleted".to_owned()), "{events:?}");
}

#[tokio::test]
async fn openapi_documents_the_surface() {
    let s = TestServer::start().await;
    let doc = s.get("/openapi.json").await.expect(200);
    let paths = doc["paths"].as_object().expect("paths");
    let expected: &[(&str, &[&str])] = &[
        ("/api/sessions", &["post"]),
        ("/api/sessions/{sessionId}", &["get", "patch"]),
        ("/api/sessions/{sessionId}/chats", &["get", "post"]),
        (
            "/api/sessions/{sessionId}/chats/{chatId}",
            &["get", "patch", "delete"],
        ),
        ("/api/sessions/{sessionId}/chats/{chatId}/read", &["post"]),
    ];
    for (p, methods) in expected {
        let item = paths
            .get(*p)
            .unwrap_or_else(|| panic!("{p} is not documented"));
        for m in *methods {
            assert_eq!(item[*m]["tags"], json!(["recoupable"]), "{m} {p}");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "RecoupSession",
        "RecoupChat",
        "RecoupChatSummary",
        "RecoupErrorBody",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    // The native schemas are not shadowed by this surface's.
    assert!(schemas.contains_key("SessionView"));
    assert!(schemas["RecoupSession"]["properties"]
        .as_object()
        .unwrap()
        .contains_key("userId"));
}
