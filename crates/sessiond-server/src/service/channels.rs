use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use sessiond_core::channel::{validate_batch, ChannelInfo, ChannelName, Record, RecordInput};
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, ErrorKind, SessionId, Timestamp};
use sessiond_store::{Appended, Hub, RecordPage, Store};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

#[derive(Clone)]
pub struct ChannelService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    After(i64),
    /// Only records appended from now on.
    Latest,
}

impl ChannelService {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, shutdown: CancellationToken) -> Self {
        Self {
            store,
            hub,
            shutdown,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Appends a batch, all or nothing, exactly once per record id. `events` is written only by
    /// the server; a closed or expired session takes no more records.
    #[instrument(skip_all, fields(session = %session, channel = %channel, n = records.len()))]
    pub async fn append(
        &self,
        account: AccountId,
        session: &SessionRef,
        channel: &ChannelName,
        records: Vec<RecordInput>,
    ) -> Result<Appended, Error> {
        if channel.is_events() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                codes::CHANNEL_READ_ONLY,
                "the events channel is written by the server only",
            ));
        }
        let records = validate_batch(records)?;
        let now = Timestamp::now();
        let appended = self
            .store
            .append_records(
                account,
                session,
                channel.as_str(),
                records.clone(),
                Box::new(move |s: &Session| s.ensure_active(now)),
                now,
            )
            .await?
            .ok_or_else(|| Error::session_not_found(session))?;
        // Hand the committed records to live readers so they need not re-read them.
        let mut fresh = Vec::new();
        for (record, result) in records.into_iter().zip(&appended.results) {
            if result.duplicate {
                continue;
            }
            fresh.push(Arc::new(Record {
                seq: result.seq,
                id: record.id,
                data: RawValue::from_string(record.data)
                    .map_err(|e| Error::internal(e.to_string()))?,
                headers: RawValue::from_string(record.headers)
                    .map_err(|e| Error::internal(e.to_string()))?,
                created_at: now,
            }));
        }
        if !fresh.is_empty() {
            metrics::counter!("sessiond_records_appended_total").increment(fresh.len() as u64);
            fresh.sort_by_key(|r| r.seq);
            self.hub.appended(
                appended.session_id,
                channel.as_str(),
                fresh,
                appended.last_seq,
            );
        }
        Ok(appended)
    }

    /// The channel's head seq right now.
    pub async fn last_seq(&self, session: SessionId, channel: &ChannelName) -> Result<i64, Error> {
        Ok(self.page(session, channel, i64::MAX, 0).await?.last_seq)
    }

    async fn page(
        &self,
        session: SessionId,
        channel: &ChannelName,
        after: i64,
        limit: usize,
    ) -> Result<RecordPage, Error> {
        self.store
            .read_records(session, channel.as_str(), after, limit, Timestamp::now())
            .await?
            .ok_or_else(|| Error::session_not_found(session))
    }

    /// Records after `start`; with `wait`, holds the request until at least one record exists
    /// or the wait is over (then an empty page).
    #[instrument(skip_all, fields(session = %session, channel = %channel))]
    pub async fn read(
        &self,
        session: SessionId,
        channel: &ChannelName,
        start: Start,
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<RecordPage, Error> {
        let Some(wait) = wait.filter(|w| !w.is_zero()) else {
            let after = match start {
                Start::After(n) => n,
                Start::Latest => return self.page(session, channel, i64::MAX, 0).await,
            };
            return self.page(session, channel, after, limit).await;
        };
        // Subscribe before the first read so an append that lands in between still wakes us.
        let mut sub = self.hub.subscribe(session);
        let after = match start {
            Start::After(n) => n,
            Start::Latest => self.last_seq(session, channel).await?,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let page = self.page(session, channel, after, limit).await?;
            if !page.records.is_empty() || page.session_closed {
                return Ok(page);
            }
            tokio::select! {
                sig = sub.changed() => {
                    if sig.deleted {
                        return Err(Error::session_not_found(session));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return self.page(session, channel, after, limit).await;
                }
                _ = tokio::time::sleep(crate::stream::SAFETY_POLL) => {}
                _ = self.shutdown.cancelled() => return Ok(page),
            }
        }
    }

    pub async fn list(&self, session: SessionId) -> Result<Vec<ChannelInfo>, Error> {
        Ok(self.store.list_channels(session).await?)
    }
}
