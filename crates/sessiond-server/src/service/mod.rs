//! The use cases, written once and called by every surface. Handlers parse and render; the rules
//! live here and in `sessiond-core`.

use std::sync::Arc;

use sessiond_store::{Hub, Store};
use tokio_util::sync::CancellationToken;

pub mod accounts;
pub mod agent;
pub mod channels;
pub mod chats;
pub mod documents;
pub mod jobs;
pub mod sessions;
pub mod trigger;

pub use accounts::AccountService;
pub use channels::ChannelService;
pub use chats::ChatService;
pub use documents::DocumentService;
pub use jobs::JobService;
pub use sessions::SessionService;
pub use trigger::TriggerService;

#[derive(Clone)]
pub struct Services {
    pub sessions: SessionService,
    pub accounts: AccountService,
    pub channels: ChannelService,
    pub jobs: JobService,
    pub documents: DocumentService,
    pub chats: ChatService,
    pub trigger: TriggerService,
}

impl Services {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        job_reuse_window_seconds: i64,
        token_secret: &[u8],
    ) -> Self {
        let jobs = JobService::new(
            store.clone(),
            hub.clone(),
            shutdown.clone(),
            job_reuse_window_seconds,
        );
        let sessions = SessionService::new(store.clone(), hub.clone(), jobs.clone());
        let channels = ChannelService::new(store.clone(), hub.clone(), shutdown.clone());
        let documents = DocumentService::new(
            store.clone(),
            hub.clone(),
            jobs.clone(),
            shutdown.clone(),
            job_reuse_window_seconds,
        );
        Self {
            documents,
            trigger: TriggerService::new(sessions.clone(), jobs.clone(), channels.clone()),
            sessions,
            accounts: AccountService::new(store.clone(), accounts::KeySealer::new(token_secret)),
            chats: ChatService::new(store.clone(), hub.clone()),
            channels,
            jobs,
        }
    }
}
