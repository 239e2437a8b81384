//! The use cases, written once and called by every surface. Handlers parse and render; the rules
//! live here and in `sessiond-core`.

use std::sync::Arc;

use sessiond_store::{Hub, Store};
use tokio_util::sync::CancellationToken;

pub mod accounts;
pub mod channels;
pub mod chats;
pub mod jobs;
pub mod sessions;

pub use accounts::AccountService;
pub use channels::ChannelService;
pub use chats::ChatService;
pub use jobs::JobService;
pub use sessions::SessionService;

#[derive(Clone)]
pub struct Services {
    pub sessions: SessionService,
    pub accounts: AccountService,
    pub channels: ChannelService,
    pub jobs: JobService,
    pub chats: ChatService,
}

impl Services {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        job_reuse_window_seconds: i64,
    ) -> Self {
        let jobs = JobService::new(
            store.clone(),
            hub.clone(),
            shutdown.clone(),
            job_reuse_window_seconds,
        );
        Self {
            sessions: SessionService::new(store.clone(), hub.clone(), jobs.clone()),
            accounts: AccountService::new(store.clone()),
            chats: ChatService::new(store.clone(), hub.clone()),
            channels: ChannelService::new(store, hub, shutdown),
            jobs,
        }
    }
}
