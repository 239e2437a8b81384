use std::sync::Arc;

use serde_json::Value;
use sessiond_core::chat::NewChat;
use sessiond_core::cursor::Cursor;
use sessiond_core::error::codes;
use sessiond_core::event::{Event, EVENTS_CHANNEL};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{
    validate_close_reason, CreateSessionInput, Session, SessionFilter, SessionQuery,
};
use sessiond_core::{AccountId, Error, ErrorKind, SessionId, Timestamp};
use sessiond_store::{Hub, InsertSession, Store, UpdateSession};
use tracing::instrument;

use crate::extract::IfMatch;

/// Computes a merge patch from the session as the store holds it (see
/// [`SessionService::patch_with`]).
pub type PatchFrom = Box<dyn FnOnce(&Session) -> Result<Value, Error> + Send>;

#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    jobs: super::JobService,
}

/// The outcome of a create: a new session, or the existing one for an idempotent retry.
pub struct Created {
    pub session: Session,
    pub cached: bool,
}

pub struct Page {
    pub sessions: Vec<Session>,
    pub next: Option<Cursor>,
}

impl SessionService {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, jobs: super::JobService) -> Self {
        Self { store, hub, jobs }
    }

    /// Creates a session. The same `externalId` while that session is active returns it
    /// unchanged (`cached`); once it is closed or expired the externalId cannot be reused.
    pub async fn create(
        &self,
        account: AccountId,
        input: CreateSessionInput,
    ) -> Result<Created, Error> {
        self.create_with_chat(account, input, None).await
    }

    /// Creates a session and, when `chat` is given, its first chat in the same transaction.
    #[instrument(skip_all, fields(account = %account))]
    pub async fn create_with_chat(
        &self,
        account: AccountId,
        input: CreateSessionInput,
        chat: Option<NewChat>,
    ) -> Result<Created, Error> {
        let now = Timestamp::now();
        let session = input.validate(now)?.into_session(account, now);
        let id = session.id;
        let event = Event::SessionCreated { version: 1 };
        let outcome = match chat {
            None => self.store.insert_session(session, event).await?,
            Some(chat) => {
                let chat = chat.validate()?.into_chat(id, account, now);
                self.store
                    .insert_session_with_chat(session, event, chat)
                    .await?
            }
        };
        match outcome {
            InsertSession::Inserted(session) => {
                metrics::counter!("sessiond_sessions_created_total").increment(1);
                Ok(Created {
                    session,
                    cached: false,
                })
            }
            InsertSession::ExternalIdTaken(existing) => {
                if existing.is_active(now) {
                    Ok(Created {
                        session: existing,
                        cached: true,
                    })
                } else {
                    Err(Error::conflict(
                        codes::SESSION_CLOSED,
                        format!(
                            "Session {} with externalId {:?} is {}; use a different externalId to create a new session",
                            existing.id,
                            existing.external_id.as_deref().unwrap_or_default(),
                            existing.status(now).as_str()
                        ),
                    ))
                }
            }
            InsertSession::IdTaken => Err(Error::conflict(
                codes::SESSION_EXISTS,
                format!("Session {id} already exists"),
            )),
        }
    }

    #[instrument(skip_all, fields(session = %r))]
    pub async fn get(&self, account: AccountId, r: &SessionRef) -> Result<Session, Error> {
        self.store
            .get_session(account, r)
            .await?
            .ok_or_else(|| Error::session_not_found(r))
    }

    /// Applies an RFC 7396 merge patch, guarded by `If-Match` when given.
    #[instrument(skip_all, fields(session = %r))]
    pub async fn patch(
        &self,
        account: AccountId,
        r: &SessionRef,
        patch: Value,
        if_match: Option<IfMatch>,
    ) -> Result<Session, Error> {
        self.patch_with(
            account,
            r,
            Box::new(move |s: &Session| {
                if let Some(IfMatch::Version(v)) = if_match {
                    if s.version != v {
                        return Err(Error::new(
                            ErrorKind::PreconditionFailed,
                            codes::VERSION_MISMATCH,
                            format!(
                                "Session {} is at version {}, not {v}; read it again and retry",
                                s.id, s.version
                            ),
                        ));
                    }
                }
                Ok(patch)
            }),
        )
        .await
    }

    /// Applies the merge patch that `make` computes from the current session, while the store
    /// holds the row: a patch that depends on the session's state without a read-then-write race.
    #[instrument(skip_all, fields(session = %r))]
    pub async fn patch_with(
        &self,
        account: AccountId,
        r: &SessionRef,
        make: PatchFrom,
    ) -> Result<Session, Error> {
        let now = Timestamp::now();
        let outcome = self
            .store
            .update_session(
                account,
                r,
                Box::new(move |s: &mut Session| {
                    let patch = make(s)?;
                    Ok(s.apply_merge_patch(&patch, now)?.into_iter().collect())
                }),
            )
            .await?;
        if let UpdateSession::Updated(s) = &outcome {
            self.hub.channel_changed(s.id, EVENTS_CHANNEL);
        }
        updated(outcome, r)
    }

    /// Replaces top-level keys of the session's data whole, `null` stored as null (a shallow
    /// merge, see [`Session::replace_data_keys`]); the version and events follow like a patch.
    #[instrument(skip_all, fields(session = %r))]
    pub async fn replace_data_keys(
        &self,
        account: AccountId,
        r: &SessionRef,
        keys: serde_json::Map<String, Value>,
    ) -> Result<Session, Error> {
        let now = Timestamp::now();
        let outcome = self
            .store
            .update_session(
                account,
                r,
                Box::new(move |s: &mut Session| {
                    Ok(s.replace_data_keys(keys, now)?.into_iter().collect())
                }),
            )
            .await?;
        if let UpdateSession::Updated(s) = &outcome {
            self.hub.channel_changed(s.id, EVENTS_CHANNEL);
        }
        updated(outcome, r)
    }

    /// The account that owns the session with this id, whichever account asks. Only for
    /// surfaces that answer 403 (rather than 404) on another account's session.
    pub async fn owner(&self, id: SessionId) -> Result<Option<AccountId>, Error> {
        Ok(self.store.session_owner(id).await?)
    }

    /// Closes the session; closing a closed session returns it unchanged.
    #[instrument(skip_all, fields(session = %r))]
    pub async fn close(
        &self,
        account: AccountId,
        r: &SessionRef,
        reason: Option<String>,
    ) -> Result<Session, Error> {
        let reason = validate_close_reason(reason)?;
        let now = Timestamp::now();
        let outcome = self
            .store
            .update_session(
                account,
                r,
                Box::new(move |s: &mut Session| Ok(s.close(reason, now).into_iter().collect())),
            )
            .await?;
        if let UpdateSession::Updated(s) = &outcome {
            self.hub.closed(s.id);
            // Nothing claims a closed session's jobs; cancelling them records why. The close
            // itself has committed, so a failure here is logged rather than answered.
            if let Err(e) = self.jobs.cancel_queued(account, s.id).await {
                tracing::warn!(session = %s.id, error = %e, "cannot cancel the queued jobs of a closed session");
            }
        }
        updated(outcome, r)
    }

    #[instrument(skip_all, fields(session = %r))]
    pub async fn delete(&self, account: AccountId, r: &SessionRef) -> Result<(), Error> {
        match self.store.delete_session(account, r).await? {
            Some(id) => {
                self.hub.deleted(id);
                Ok(())
            }
            None => Err(Error::session_not_found(r)),
        }
    }

    /// One page of the account's sessions, newest first.
    #[instrument(skip_all)]
    pub async fn list(
        &self,
        account: AccountId,
        filter: SessionFilter,
        after: Option<Cursor>,
        limit: usize,
        include_data: bool,
    ) -> Result<Page, Error> {
        // One row more than asked tells whether another page exists.
        let query = SessionQuery {
            filter,
            after,
            limit: limit + 1,
            now: Timestamp::now(),
        };
        let mut sessions = self
            .store
            .list_sessions(account, &query, include_data)
            .await?;
        let next = if sessions.len() > limit {
            sessions.truncate(limit);
            sessions.last().map(|s| Cursor {
                created_at: s.created_at,
                id: *s.id.as_uuid(),
            })
        } else {
            None
        };
        Ok(Page { sessions, next })
    }
}

fn updated(outcome: UpdateSession, r: &SessionRef) -> Result<Session, Error> {
    match outcome {
        UpdateSession::NotFound => Err(Error::session_not_found(r)),
        UpdateSession::Unchanged(s) | UpdateSession::Updated(s) => Ok(s),
    }
}
