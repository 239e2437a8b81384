//! The in-process fan-out of "something changed" signals to live readers (SSE streams and
//! long-polls).
//!
//! Storage is the source of truth: a woken reader reads from its own cursor, so a missed or
//! merged signal can only delay a record, never lose or duplicate it. To keep a thousand readers
//! of one channel from each re-reading the store on every append, the hub also keeps, per
//! channel with live readers, the head seq it knows of and a short contiguous tail of the
//! records committed through this node. A reader whose next record is in that tail takes it from
//! memory; any doubt (unknown head, a gap, a signal without details) sends it to storage.
//! Backends that span nodes feed the same hub from their notification listener.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sessiond_core::channel::Record;
use sessiond_core::SessionId;
use tokio::sync::watch;

/// Bytes of record data kept in memory per channel tail.
const TAIL_MAX_BYTES: usize = 4 * 1024 * 1024;
const TAIL_MAX_RECORDS: usize = 4096;

/// What readers of one session can observe. `changes` increases on every signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    pub changes: u64,
    pub closed: bool,
    pub deleted: bool,
}

/// Commits that finished out of order and wait for the ones before them.
const PENDING_MAX: usize = 256;
/// How long a gap may stay open before readers stop trusting memory (the commit that fills it
/// may never be published, e.g. when its request was abandoned).
const GAP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Default)]
struct Tail {
    /// The channel's last seq as far as this hub knows; `None` when it cannot be trusted.
    head: Option<i64>,
    /// Contiguous records ending at `head` (when non-empty).
    ring: VecDeque<Arc<Record>>,
    bytes: usize,
    /// Published batches beyond `head + 1`, by first seq, with when they arrived: concurrent
    /// commits reach the hub in any order.
    pending: std::collections::BTreeMap<i64, (Vec<Arc<Record>>, std::time::Instant)>,
    /// When a reader last found storage no further than `head` (its storage read confirmed,
    /// or taught, the head): other readers' safety polls within a period can rely on it.
    checked: Option<std::time::Instant>,
}

impl Tail {
    fn clear(&mut self) {
        self.ring.clear();
        self.bytes = 0;
        self.pending.clear();
    }

    fn forget(&mut self) {
        self.clear();
        self.head = None;
        self.checked = None;
    }

    /// Appends a contiguous batch that starts right after `head`, then any pending batches that
    /// now follow.
    fn extend(&mut self, records: Vec<Arc<Record>>) {
        let mut next = Some(records);
        while let Some(batch) = next.take() {
            if let Some(last) = batch.last() {
                self.head = Some(last.seq);
            }
            for r in batch {
                self.push(r);
            }
            let want = self.head.map(|h| h + 1);
            if let Some(want) = want {
                next = self.pending.remove(&want).map(|(b, _)| b);
            }
        }
    }

    /// Whether a gap has been waiting too long for the commit that fills it.
    fn stale_gap(&self) -> bool {
        self.pending
            .values()
            .next()
            .is_some_and(|(_, at)| at.elapsed() > GAP_PATIENCE)
    }

    fn push(&mut self, r: Arc<Record>) {
        self.bytes += r.data.get().len() + r.headers.get().len();
        self.ring.push_back(r);
        while self.bytes > TAIL_MAX_BYTES || self.ring.len() > TAIL_MAX_RECORDS {
            match self.ring.pop_front() {
                Some(old) => self.bytes -= old.data.get().len() + old.headers.get().len(),
                None => break,
            }
        }
    }
}

/// The records (in seq order) after `after`, when they follow on from it with no hole (`after`
/// `None`: from anywhere); `None` when they do not.
fn following(after: Option<i64>, records: &[Arc<Record>]) -> Option<Vec<Arc<Record>>> {
    let fresh: Vec<Arc<Record>> = records
        .iter()
        .filter(|r| after.is_none_or(|a| r.seq > a))
        .cloned()
        .collect();
    let starts = match (after, fresh.first()) {
        (Some(a), Some(first)) => first.seq == a + 1,
        _ => true,
    };
    (starts && fresh.windows(2).all(|w| w[1].seq == w[0].seq + 1)).then_some(fresh)
}

struct Topic {
    tx: watch::Sender<Signal>,
    tails: Mutex<HashMap<String, Tail>>,
}

/// A signal as it travels between nodes (seqs only, never record data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Appended {
        session: SessionId,
        channel: String,
        last_seq: i64,
    },
    ChannelChanged {
        session: SessionId,
        channel: String,
    },
    Changed {
        session: SessionId,
    },
    Closed {
        session: SessionId,
    },
    Deleted {
        session: SessionId,
    },
    JobQueued,
}

/// Forwards this node's signals to the other nodes of a cluster (e.g. PostgreSQL NOTIFY). It is
/// called after the change committed and must not block.
pub trait Notifier: Send + Sync + 'static {
    fn notify(&self, signal: Remote);
}

#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<SessionId, Arc<Topic>>>,
    /// Wakes long-polling job claimers when a job becomes claimable.
    jobs: tokio::sync::Notify,
    notifier: std::sync::OnceLock<Arc<dyn Notifier>>,
}

/// What a reader at `after` should do next.
#[derive(Debug)]
pub enum Fetch {
    /// These records follow `after` directly (up to the known head).
    Records(Vec<Arc<Record>>),
    /// Nothing after `after` as far as the hub knows.
    UpToDate,
    /// The hub cannot tell: read from storage.
    Storage,
}

/// A live reader's handle on one session's signals. Dropping it releases the hub's entry once
/// no other reader of the session remains.
pub struct Subscription {
    hub: Arc<Hub>,
    session: SessionId,
    topic: Arc<Topic>,
    rx: watch::Receiver<Signal>,
}

impl Subscription {
    /// Waits until something changes after the last observed signal; returns the new signal.
    pub async fn changed(&mut self) -> Signal {
        if self.rx.changed().await.is_err() {
            return Signal {
                deleted: true,
                ..*self.rx.borrow()
            };
        }
        *self.rx.borrow_and_update()
    }

    /// The latest signal, without marking it seen.
    pub fn peek(&self) -> Signal {
        *self.rx.borrow()
    }

    /// The latest signal, marking it seen.
    pub fn current(&mut self) -> Signal {
        *self.rx.borrow_and_update()
    }

    /// What follows `after` on `channel`, from memory when possible.
    pub fn fetch(&self, channel: &str, after: i64) -> Fetch {
        let tails = self.topic.tails.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tail) = tails.get(channel) else {
            return Fetch::Storage;
        };
        let Some(head) = tail.head else {
            return Fetch::Storage;
        };
        if tail.stale_gap() {
            return Fetch::Storage;
        }
        if head <= after {
            return Fetch::UpToDate;
        }
        match tail.ring.front() {
            // The ring is contiguous, so the first wanted record is at a computed index.
            Some(first) if first.seq <= after + 1 => {
                let skip = usize::try_from(after + 1 - first.seq).unwrap_or(0);
                Fetch::Records(tail.ring.iter().skip(skip).cloned().collect())
            }
            _ => Fetch::Storage,
        }
    }

    /// Whether a reader of this node read `channel` from storage within `within` and found
    /// nothing beyond the head the hub knows, so a safety poll may take memory's word instead
    /// of reading storage again: with a thousand readers on a channel, one storage read per
    /// period covers all of them.
    pub fn checked_within(&self, channel: &str, within: std::time::Duration) -> bool {
        let tails = self.topic.tails.lock().unwrap_or_else(|p| p.into_inner());
        tails
            .get(channel)
            .filter(|t| t.head.is_some())
            .and_then(|t| t.checked)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// The signal counter to pass to [`Subscription::observe_head`]: read it *before* reading
    /// from storage.
    pub fn changes(&self) -> u64 {
        self.rx.borrow().changes
    }

    /// Records what storage said the channel's head is, unless a signal arrived since
    /// `changes_before` (then the head may already be stale and stays unknown).
    pub fn observe_head(&self, channel: &str, last_seq: i64, changes_before: u64) {
        self.observe_records(channel, last_seq, changes_before, &[]);
    }

    /// [`Subscription::observe_head`] with the records the reader just read from storage (in
    /// seq order, ending at `last_seq`): when they continue the tail, the tail keeps them, so
    /// the session's other readers still find the new head's records in memory.
    pub fn observe_records(
        &self,
        channel: &str,
        last_seq: i64,
        changes_before: u64,
        read: &[Arc<Record>],
    ) {
        let mut tails = self.topic.tails.lock().unwrap_or_else(|p| p.into_inner());
        // Publishers signal while holding this lock, so this comparison cannot race them.
        if self.topic.tx.borrow().changes != changes_before {
            return;
        }
        let tail = tails.entry(channel.to_owned()).or_default();
        tail.checked = Some(std::time::Instant::now());
        if tail.head.is_some_and(|h| h >= last_seq) {
            return;
        }
        // The ring must end at the head; records it lacks are in storage only.
        match following(tail.ring.back().map(|r| r.seq), read) {
            Some(fresh) if fresh.last().is_some_and(|l| l.seq == last_seq) => {
                for r in fresh {
                    tail.push(r);
                }
            }
            _ => {
                if tail.ring.back().is_some_and(|r| r.seq != last_seq) {
                    tail.ring.clear();
                    tail.bytes = 0;
                }
            }
        }
        tail.head = Some(last_seq);
        // Pending batches at or below the head are in storage, and so seen; later ones may
        // now follow on.
        tail.pending = std::mem::take(&mut tail.pending).split_off(&(last_seq + 1));
        if let Some((batch, _)) = tail.pending.remove(&(last_seq + 1)) {
            tail.extend(batch);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = sessions.get(&self.session) {
            // Our own receiver is still alive while we run, hence 1.
            if topic.tx.receiver_count() <= 1 {
                sessions.remove(&self.session);
            }
        }
    }
}

fn forget_all(tails: &mut HashMap<String, Tail>) {
    for t in tails.values_mut() {
        t.forget();
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Subscribes to a session's signals. Subscribe before reading the backlog, so that an
    /// append committed between the read and the wait still wakes the reader.
    pub fn subscribe(self: &Arc<Self>, session: SessionId) -> Subscription {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let topic = sessions
            .entry(session)
            .or_insert_with(|| {
                Arc::new(Topic {
                    tx: watch::channel(Signal::default()).0,
                    tails: Mutex::new(HashMap::new()),
                })
            })
            .clone();
        let rx = topic.tx.subscribe();
        Subscription {
            hub: self.clone(),
            session,
            topic,
            rx,
        }
    }

    /// Sends this node's signals to other nodes from now on (set once).
    pub fn set_notifier(&self, notifier: Arc<dyn Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    fn forward(&self, signal: Remote) {
        if let Some(n) = self.notifier.get() {
            n.notify(signal);
        }
    }

    /// A signal from another node: wake local readers; nothing is forwarded again.
    pub fn apply_remote(&self, signal: Remote) {
        match signal {
            Remote::Appended {
                session,
                channel,
                last_seq,
            } => self.signal(session, |tails, _| {
                if let Some(t) = tails.get_mut(&channel) {
                    if t.head.is_none_or(|h| last_seq > h) {
                        // Records this node has not seen: only storage has them.
                        t.forget();
                    }
                }
            }),
            Remote::ChannelChanged { session, channel } => {
                self.local_channel_changed(session, &channel)
            }
            Remote::Changed { session } => self.signal(session, |tails, _| forget_all(tails)),
            Remote::Closed { session } => self.local_closed(session),
            Remote::Deleted { session } => self.local_deleted(session),
            Remote::JobQueued => self.jobs.notify_waiters(),
        }
    }

    /// For another node's append up to `last_seq`: the head this node knows of `channel`, when
    /// the channel has live readers here and is behind by at most `max` records. The records in
    /// between can then be read from storage once, for all of those readers, and handed over
    /// with [`Hub::remote_records`] (instead of [`Hub::apply_remote`], which sends every reader
    /// to storage).
    pub fn remote_gap(
        &self,
        session: SessionId,
        channel: &str,
        last_seq: i64,
        max: i64,
    ) -> Option<i64> {
        let topic = self.topic(session)?;
        let tails = topic.tails.lock().unwrap_or_else(|p| p.into_inner());
        let head = tails.get(channel)?.head?;
        (last_seq > head && last_seq - head <= max).then_some(head)
    }

    /// Records another node committed, read from storage on this node's readers' behalf (see
    /// [`Hub::remote_gap`]), in seq order. They extend the channel's tail when they follow on
    /// from its head (records it already holds are skipped); anything else sends the readers
    /// to storage. Readers are signalled either way.
    pub fn remote_records(&self, session: SessionId, channel: &str, records: Vec<Arc<Record>>) {
        self.signal(session, |tails, _| {
            let Some(tail) = tails.get_mut(channel) else {
                return;
            };
            let Some(head) = tail.head else {
                return;
            };
            match following(Some(head), &records) {
                Some(fresh) if fresh.is_empty() => {}
                Some(fresh) => tail.extend(fresh),
                None => tail.forget(),
            }
        });
    }

    fn topic(&self, session: SessionId) -> Option<Arc<Topic>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&session)
            .cloned()
    }

    /// Updates the session's channel tails and signals readers, under the tails lock so that a
    /// reader's [`Subscription::observe_head`] sees either both or neither.
    fn signal(
        &self,
        session: SessionId,
        update: impl FnOnce(&mut HashMap<String, Tail>, &mut Signal),
    ) {
        let Some(topic) = self.topic(session) else {
            return;
        };
        let mut tails = topic.tails.lock().unwrap_or_else(|p| p.into_inner());
        topic.tx.send_modify(|s| {
            s.changes += 1;
            update(&mut tails, s);
        });
    }

    /// Records committed through this node: `records` are the newly appended ones in seq order,
    /// `last_seq` the channel's head after the commit.
    pub fn appended(
        &self,
        session: SessionId,
        channel: &str,
        records: Vec<Arc<Record>>,
        last_seq: i64,
    ) {
        self.forward(Remote::Appended {
            session,
            channel: channel.to_owned(),
            last_seq,
        });
        self.signal(session, |tails, _| {
            let Some(tail) = tails.get_mut(channel) else {
                return;
            };
            let Some(head) = tail.head else {
                return;
            };
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                return;
            };
            if last.seq != last_seq || last_seq <= head {
                // Not this batch's head, or already seen: nothing to learn.
                return;
            }
            if first.seq == head + 1 {
                tail.extend(records);
            } else if first.seq > head + 1 && tail.pending.len() < PENDING_MAX {
                tail.pending
                    .insert(first.seq, (records, std::time::Instant::now()));
            } else {
                tail.forget();
            }
        });
    }

    /// Records were appended to `channel` that the hub has no details of (server events, or
    /// another node's append): its readers go to storage.
    pub fn channel_changed(&self, session: SessionId, channel: &str) {
        self.forward(Remote::ChannelChanged {
            session,
            channel: channel.to_owned(),
        });
        self.local_channel_changed(session, channel);
    }

    fn local_channel_changed(&self, session: SessionId, channel: &str) {
        self.signal(session, |tails, _| {
            if let Some(t) = tails.get_mut(channel) {
                t.forget();
            }
        });
    }

    /// Something about the session changed without details: every reader goes to storage.
    pub fn changed(&self, session: SessionId) {
        self.forward(Remote::Changed { session });
        self.signal(session, |tails, _| forget_all(tails));
    }

    /// The session was closed (its `events` channel got the event too).
    pub fn closed(&self, session: SessionId) {
        self.forward(Remote::Closed { session });
        self.local_closed(session);
    }

    fn local_closed(&self, session: SessionId) {
        self.signal(session, |tails, s| {
            forget_all(tails);
            s.closed = true;
        });
    }

    pub fn deleted(&self, session: SessionId) {
        self.forward(Remote::Deleted { session });
        self.local_deleted(session);
    }

    fn local_deleted(&self, session: SessionId) {
        self.signal(session, |tails, s| {
            forget_all(tails);
            s.deleted = true;
        });
    }

    /// Wakes every reader to re-read from storage (a lost notification connection was
    /// re-established: anything may have been missed).
    pub fn wake_all(&self) {
        let sessions: Vec<SessionId> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for s in sessions {
            self.signal(s, |tails, _| forget_all(tails));
        }
        self.jobs.notify_waiters();
    }

    /// A job was queued (or requeued): waiting claimers try again.
    pub fn job_queued(&self) {
        self.forward(Remote::JobQueued);
        self.jobs.notify_waiters();
    }

    /// Resolves on the next [`Hub::job_queued`]. Create (and `enable`) it before looking for a
    /// job, so a job queued in between is not missed.
    pub fn job_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.jobs.notified()
    }

    /// Number of sessions with live readers (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use sessiond_core::Timestamp;

    fn rec(seq: i64) -> Arc<Record> {
        Arc::new(Record {
            seq,
            id: format!("r{seq}"),
            data: RawValue::from_string(seq.to_string()).unwrap(),
            headers: RawValue::from_string("{}".into()).unwrap(),
            created_at: Timestamp::now(),
        })
    }

    fn seqs(f: Fetch) -> Option<Vec<i64>> {
        match f {
            Fetch::Records(r) => Some(r.iter().map(|r| r.seq).collect()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn signals_reach_subscribers_and_entries_are_released() {
        let hub = Hub::new();
        let s = SessionId::random();
        let mut a = hub.subscribe(s);
        let mut b = hub.subscribe(s);
        hub.changed(s);
        assert_eq!(a.changed().await.changes, 1);
        hub.closed(s);
        let sig = a.changed().await;
        assert!(sig.closed && !sig.deleted);
        assert_eq!(
            b.changed().await,
            Signal {
                changes: 2,
                closed: true,
                deleted: false
            }
        );
        drop(a);
        assert_eq!(hub.session_count(), 1);
        drop(b);
        assert_eq!(hub.session_count(), 0);
        hub.changed(s);
        assert_eq!(hub.session_count(), 0);
    }

    #[tokio::test]
    async fn records_read_for_another_nodes_append_extend_the_tail() {
        let hub = Hub::new();
        let s = SessionId::random();
        let mut sub = hub.subscribe(s);
        // No reader has seen the head yet: nothing to fill, readers go to storage.
        assert_eq!(hub.remote_gap(s, "in", 3, 256), None);
        let c = sub.changes();
        sub.observe_head("in", 2, c);
        assert_eq!(hub.remote_gap(s, "in", 2, 256), None, "not behind");
        assert_eq!(hub.remote_gap(s, "in", 300, 256), None, "too far behind");
        assert_eq!(hub.remote_gap(s, "other", 5, 256), None, "no readers");
        assert_eq!(hub.remote_gap(s, "in", 5, 256), Some(2));

        // What storage returned after head 2, possibly overlapping what the tail has.
        hub.remote_records(s, "in", (1..=5).map(rec).collect());
        assert_eq!(sub.changed().await.changes, 1);
        assert_eq!(seqs(sub.fetch("in", 2)), Some(vec![3, 4, 5]));
        assert_eq!(hub.remote_gap(s, "in", 5, 256), None);
        // Already held: nothing changes.
        hub.remote_records(s, "in", vec![rec(4), rec(5)]);
        assert_eq!(seqs(sub.fetch("in", 3)), Some(vec![4, 5]));
        // Local appends after them follow on.
        hub.appended(s, "in", vec![rec(6)], 6);
        assert_eq!(seqs(sub.fetch("in", 5)), Some(vec![6]));
        // A gap is never papered over: readers go to storage.
        hub.remote_records(s, "in", vec![rec(8), rec(9)]);
        assert!(matches!(sub.fetch("in", 6), Fetch::Storage));
    }

    #[tokio::test]
    async fn records_a_reader_read_from_storage_stay_in_memory_for_the_others() {
        let hub = Hub::new();
        let s = SessionId::random();
        let a = hub.subscribe(s);
        let b = hub.subscribe(s);
        a.observe_records("in", 2, a.changes(), &[rec(1), rec(2)]);
        assert_eq!(seqs(b.fetch("in", 0)), Some(vec![1, 2]));
        // A later read that continues the ring (overlap allowed) extends it.
        a.observe_records("in", 4, a.changes(), &[rec(2), rec(3), rec(4)]);
        assert_eq!(seqs(b.fetch("in", 2)), Some(vec![3, 4]));
        // One that does not reach the head, or leaves a hole, only moves the head.
        a.observe_records("in", 7, a.changes(), &[rec(6), rec(7)]);
        assert!(matches!(b.fetch("in", 4), Fetch::Storage));
        assert!(matches!(b.fetch("in", 7), Fetch::UpToDate));
        a.observe_records("in", 9, a.changes(), &[rec(8)]);
        assert!(matches!(b.fetch("in", 8), Fetch::Storage));
        // A signal since the read started: the read may be stale, so nothing is learnt.
        let before = a.changes();
        hub.changed(s);
        a.observe_records("in", 12, before, &[rec(10), rec(11), rec(12)]);
        assert!(matches!(b.fetch("in", 9), Fetch::Storage));
    }

    #[tokio::test]
    async fn one_readers_storage_check_covers_the_others_for_a_while() {
        let hub = Hub::new();
        let s = SessionId::random();
        let a = hub.subscribe(s);
        let b = hub.subscribe(s);
        let period = std::time::Duration::from_secs(5);
        assert!(!b.checked_within("in", period));
        a.observe_head("in", 3, a.changes());
        assert!(b.checked_within("in", period));
        assert!(!b.checked_within("in", std::time::Duration::ZERO));
        assert!(!b.checked_within("out", period));
        // A read that found the head already known still counts as a check.
        a.observe_head("in", 2, a.changes());
        assert!(b.checked_within("in", period));
        // Once the head is in doubt, every reader checks storage itself again.
        hub.changed(s);
        assert!(!b.checked_within("in", period));
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Remote>>);

    impl Notifier for Recorder {
        fn notify(&self, signal: Remote) {
            self.0.lock().unwrap().push(signal);
        }
    }

    #[tokio::test]
    async fn local_signals_are_forwarded_and_remote_ones_are_not() {
        let hub = Hub::new();
        let rec = Arc::new(Recorder::default());
        hub.set_notifier(rec.clone());
        let s = SessionId::random();
        let mut sub = hub.subscribe(s);
        sub.observe_head("in", 1, sub.changes());
        hub.appended(s, "in", vec![rec_(2)], 2);
        hub.closed(s);
        hub.job_queued();
        assert_eq!(rec.0.lock().unwrap().len(), 3);
        // A remote append beyond what this node saw sends readers to storage.
        hub.apply_remote(Remote::Appended {
            session: s,
            channel: "in".into(),
            last_seq: 3,
        });
        assert!(matches!(sub.fetch("in", 2), Fetch::Storage));
        hub.apply_remote(Remote::Deleted { session: s });
        assert!(sub.changed().await.deleted);
        assert_eq!(
            rec.0.lock().unwrap().len(),
            3,
            "remote signals are not forwarded"
        );
    }

    fn rec_(seq: i64) -> Arc<Record> {
        rec(seq)
    }

    #[tokio::test]
    async fn tail_serves_contiguous_records_and_defers_to_storage_otherwise() {
        let hub = Hub::new();
        let s = SessionId::random();
        let sub = hub.subscribe(s);
        assert!(matches!(sub.fetch("in", 0), Fetch::Storage), "unknown head");
        sub.observe_head("in", 2, sub.changes());
        assert!(matches!(sub.fetch("in", 2), Fetch::UpToDate));
        assert!(
            matches!(sub.fetch("in", 1), Fetch::Storage),
            "seq 2 is not in memory"
        );
        hub.appended(s, "in", vec![rec(3), rec(4)], 4);
        assert_eq!(seqs(sub.fetch("in", 2)), Some(vec![3, 4]));
        assert_eq!(seqs(sub.fetch("in", 3)), Some(vec![4]));
        assert!(matches!(sub.fetch("in", 4), Fetch::UpToDate));
        // Out of order: 6 is published before 5; it waits for 5, then both follow.
        hub.appended(s, "in", vec![rec(6)], 6);
        assert!(
            matches!(sub.fetch("in", 4), Fetch::UpToDate),
            "6 waits for 5"
        );
        hub.appended(s, "in", vec![rec(5)], 5);
        assert_eq!(seqs(sub.fetch("in", 4)), Some(vec![5, 6]));
        // A gap that is never filled stops being trusted after a while.
        hub.appended(s, "in", vec![rec(8)], 8);
        assert!(matches!(sub.fetch("in", 6), Fetch::UpToDate));
        std::thread::sleep(GAP_PATIENCE + std::time::Duration::from_millis(20));
        assert!(matches!(sub.fetch("in", 6), Fetch::Storage));
        // Storage says 8: the head moves on and memory is trusted again.
        sub.observe_head("in", 8, sub.changes());
        assert!(matches!(sub.fetch("in", 8), Fetch::UpToDate));
        hub.appended(s, "in", vec![rec(9)], 9);
        assert_eq!(seqs(sub.fetch("in", 8)), Some(vec![9]));
        // A detail-less change sends everyone to storage.
        hub.changed(s);
        assert!(matches!(sub.fetch("in", 9), Fetch::Storage));
        // Another node appended.
        sub.observe_head("in", 9, sub.changes());
        hub.channel_changed(s, "in");
        assert!(matches!(sub.fetch("in", 9), Fetch::Storage));
        // A signal between reading the counter and observing keeps the head unknown.
        let before = sub.changes();
        hub.changed(s);
        sub.observe_head("in", 9, before);
        assert!(matches!(sub.fetch("in", 9), Fetch::Storage));
    }
}
