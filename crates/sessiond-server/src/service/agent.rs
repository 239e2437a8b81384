//! Agent sessions: a session bound to a repository and a sandbox, created together with its first
//! chat (what the Recoupable surface speaks). Written on top of the session and chat services; the
//! pure rules (initial fields, archive and unarchive, title numbering) are in
//! `sessiond_core::agent`.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use sessiond_core::agent::{numbered_title, AgentPatch, NewAgentSession, CITY_NAMES};
use sessiond_core::chat::{Chat, ChatId, NewChat};
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::limits::LIST_LIMIT_MAX;
use sessiond_core::session::{Session, SessionFilter};
use sessiond_core::{AccountId, Error, Timestamp};
use tracing::instrument;

use super::{Services, SessionService};

/// Creates the session and its first chat ("New chat") in one transaction: both or neither.
/// Without a (non-blank) title the session is named after a city the account has not used yet.
#[instrument(skip_all, fields(account = %account))]
pub async fn create(
    services: &Services,
    account: AccountId,
    new: NewAgentSession,
) -> Result<(Session, Chat), Error> {
    let title = match new.requested_title() {
        Some(t) => t,
        None => fallback_title(&services.sessions, account).await?,
    };
    let chat_id = ChatId::random();
    let created = services
        .sessions
        .create_with_chat(
            account,
            new.into_create_input(title),
            Some(NewChat {
                id: Some(chat_id),
                ..NewChat::default()
            }),
        )
        .await?;
    let chat = services.chats.get(created.session.id, chat_id).await?;
    Ok((created.session, chat))
}

/// The session, when the account owns it. A session id of another account is `forbidden` rather
/// than `session_not_found`: this surface reveals that it exists (404 first, then 403).
pub async fn get_revealing(
    services: &Services,
    account: AccountId,
    r: &SessionRef,
) -> Result<Session, Error> {
    match services.sessions.get(account, r).await {
        Err(e) if e.code == codes::SESSION_NOT_FOUND => {
            if let SessionRef::Id(id) = r {
                if services.sessions.owner(*id).await?.is_some() {
                    return Err(Error::forbidden(format!(
                        "session {id} belongs to another account"
                    )));
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// Applies `patch` (title, status, line counters, and the lifecycle fields archiving and
/// unarchiving imply) as one merge patch decided on the current row. No change: the session is
/// returned as it is, with the same version.
#[instrument(skip_all, fields(session = %session.id))]
pub async fn patch(
    services: &Services,
    account: AccountId,
    session: &Session,
    patch: AgentPatch,
) -> Result<Session, Error> {
    services
        .sessions
        .patch_with(
            account,
            &SessionRef::Id(session.id),
            Box::new(move |current: &Session| Ok(patch.merge_patch(current, Timestamp::now()))),
        )
        .await
}

/// A city name that no session of the account has as its title, tried in random order; when
/// every city is taken, `"<City> N"` with the smallest free N for one of them.
pub async fn fallback_title(
    sessions: &SessionService,
    account: AccountId,
) -> Result<String, Error> {
    let mut cities: Vec<&str> = CITY_NAMES.to_vec();
    cities.shuffle(&mut rand::rng());
    let mut first_taken: Option<(&str, HashSet<String>)> = None;
    for city in cities {
        let used = titles_containing(sessions, account, city).await?;
        if !used.contains(city) {
            return Ok(city.to_owned());
        }
        if first_taken.is_none() {
            first_taken = Some((city, used));
        }
    }
    let (base, used) =
        first_taken.ok_or_else(|| Error::internal("no city names to choose from"))?;
    Ok(numbered_title(base, &used))
}

/// The titles of the account's sessions that contain `needle` (ASCII case-insensitively).
async fn titles_containing(
    sessions: &SessionService,
    account: AccountId,
    needle: &str,
) -> Result<HashSet<String>, Error> {
    let mut titles = HashSet::new();
    let mut after = None;
    loop {
        let filter = SessionFilter {
            title_contains: Some(needle.to_owned()),
            ..SessionFilter::default()
        };
        let page = sessions
            .list(account, filter, after, LIST_LIMIT_MAX, false)
            .await?;
        titles.extend(page.sessions.into_iter().filter_map(|s| s.title));
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok(titles),
        }
    }
}
