//! The use cases, written once and called by every surface. Handlers parse and render; the rules
//! live here and in `sessiond-core`.

use std::sync::Arc;

use sessiond_store::Store;

pub mod accounts;
pub mod sessions;

pub use accounts::AccountService;
pub use sessions::SessionService;

#[derive(Clone)]
pub struct Services {
    pub sessions: SessionService,
    pub accounts: AccountService,
}

impl Services {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            sessions: SessionService::new(store.clone()),
            accounts: AccountService::new(store),
        }
    }
}
