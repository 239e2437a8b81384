use std::sync::Arc;

use sessiond_core::chat::{Chat, ChatId, ChatPatch, Message, MessageInput, NewChat};
use sessiond_core::error::codes;
use sessiond_core::event::EVENTS_CHANNEL;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, SessionId, Timestamp};
use sessiond_store::{CreateChat, Hub, Store};
use tracing::instrument;
use uuid::Uuid;

#[derive(Clone)]
pub struct ChatService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
}

fn not_found(id: ChatId) -> Error {
    Error::not_found(codes::CHAT_NOT_FOUND, format!("Chat {id} not found"))
}

impl ChatService {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>) -> Self {
        Self { store, hub }
    }

    fn changed(&self, session: SessionId) {
        self.hub.channel_changed(session, EVENTS_CHANNEL);
    }

    /// Creates a chat; the same id again in this session returns the existing chat
    /// (`created == false`), an id used by another session is a conflict.
    #[instrument(skip_all, fields(session = %session))]
    pub async fn create(
        &self,
        account: AccountId,
        session: &SessionRef,
        new: NewChat,
    ) -> Result<(Chat, bool), Error> {
        let now = Timestamp::now();
        let chat = new
            .validate()?
            .into_chat(SessionId(Uuid::nil()), account, now);
        let id = chat.id;
        match self
            .store
            .create_chat(
                account,
                session,
                chat,
                Box::new(move |s: &Session| s.ensure_active(now)),
            )
            .await?
        {
            CreateChat::Created(c) => {
                self.changed(c.session_id);
                Ok((c, true))
            }
            CreateChat::Existing(c) => Ok((c, false)),
            CreateChat::IdTaken => Err(Error::conflict(
                codes::CHAT_EXISTS,
                format!("Chat {id} belongs to another session"),
            )),
            CreateChat::SessionNotFound => Err(Error::session_not_found(session)),
        }
    }

    /// The session's chats, oldest first, with whether `reader` has unread assistant messages.
    pub async fn list(
        &self,
        session: SessionId,
        reader: AccountId,
    ) -> Result<Vec<(Chat, bool)>, Error> {
        Ok(self
            .store
            .list_chats(session, reader)
            .await?
            .into_iter()
            .map(|(c, read)| {
                let unread = c.has_unread(read);
                (c, unread)
            })
            .collect())
    }

    pub async fn get(&self, session: SessionId, id: ChatId) -> Result<Chat, Error> {
        self.store
            .get_chat(session, id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    pub async fn messages(&self, chat: ChatId) -> Result<Vec<Message>, Error> {
        Ok(self.store.list_messages(chat).await?)
    }

    pub async fn patch(
        &self,
        session: SessionId,
        id: ChatId,
        patch: ChatPatch,
    ) -> Result<Chat, Error> {
        let patch = patch.validate()?;
        let now = Timestamp::now();
        let chat = self
            .store
            .update_chat(
                session,
                id,
                Box::new(move |c: &mut Chat| Ok(c.apply(patch, now))),
            )
            .await?
            .ok_or_else(|| not_found(id))?;
        self.changed(session);
        Ok(chat)
    }

    /// Deletes a chat; the last chat of a session cannot be deleted.
    pub async fn delete(&self, session: SessionId, id: ChatId) -> Result<Chat, Error> {
        let chat = self
            .store
            .delete_chat(
                session,
                id,
                Box::new(|c: &Chat, count: i64| {
                    if count <= 1 {
                        return Err(Error::conflict(
                            codes::LAST_CHAT,
                            "Cannot delete the only chat in a session",
                        ));
                    }
                    Ok(vec![c.event("chat.deleted")])
                }),
            )
            .await?
            .ok_or_else(|| not_found(id))?;
        self.changed(session);
        Ok(chat)
    }

    /// Appends a message, exactly once by id; `true` when it was already there.
    pub async fn append(
        &self,
        session: &Session,
        id: ChatId,
        input: MessageInput,
    ) -> Result<(Message, bool), Error> {
        let now = Timestamp::now();
        session.ensure_active(now)?;
        let message = input.validate(|| Uuid::new_v4().to_string())?;
        let out = self
            .store
            .append_message(session.id, id, message, now)
            .await?
            .ok_or_else(|| not_found(id))?;
        if !out.1 {
            self.changed(session.id);
        }
        Ok(out)
    }

    pub async fn mark_read(
        &self,
        session: SessionId,
        id: ChatId,
        reader: AccountId,
    ) -> Result<(), Error> {
        if self
            .store
            .mark_chat_read(session, id, reader, Timestamp::now())
            .await?
        {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }
}
