//! The store conformance suite: one set of tests, written against the [`Store`] trait, that every
//! backend runs. A behaviour that differs between backends is a bug.
//!
//! A backend's test crate invokes [`conformance_tests!`] with an async expression that yields a
//! fresh, empty `Arc<dyn Store>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use serde_json::json;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::channel::NewRecord;
use sessiond_core::cursor::Cursor;
use sessiond_core::document::{
    Chunk, Document, DocumentEventKind, DocumentId, DocumentStatus, NewChunk,
};
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::session::{
    CreateSessionInput, Session, SessionFilter, SessionQuery, SessionStatus,
};
use sessiond_core::{AccountId, Error, JobId, KeyId, SessionId, Timestamp};

use crate::{
    DocumentDecision, DocumentDescribe, DocumentOutcome, DocumentUpload, InsertSession, JobUpdate,
    SessionDocuments, Store, StoreError, UpdateJob, UpdateSession,
};

/// Generates one `#[tokio::test]` per conformance check.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            sessions_insert_get_and_conflicts,
            sessions_update_is_atomic_and_records_events,
            sessions_rejected_update_changes_nothing,
            sessions_delete_cascades,
            sessions_list_filters_and_keyset,
            sessions_owner_across_accounts,
            accounts_and_keys,
            accounts_key_seals,
            records_append_dedupe_and_read,
            records_guard_and_missing_session,
            records_concurrent_appends_are_gapless,
            records_server_generated_ids_append_guarded_and_gapless,
            jobs_create_with_and_without_reuse,
            jobs_claim_hands_each_job_to_exactly_one_claimer,
            jobs_claim_takes_the_oldest_across_types,
            jobs_claim_skips_closed_and_expired_sessions,
            jobs_update_not_found_unchanged_and_rejected,
            jobs_expired_leases,
            jobs_delete_session_removes_them,
            documents_session_hook_commits_with_the_change,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::Store> = $make.await;
                $crate::testkit::$name(store.clone()).await;
                store.shutdown().await;
            }
        )*
    };
}

async fn account(store: &Arc<dyn Store>) -> AccountId {
    let id = AccountId::random();
    store
        .create_account(Account {
            id,
            name: Some("t".into()),
            created_at: Timestamp::now(),
        })
        .await
        .expect("create account");
    id
}

fn new_session(account: AccountId, external: Option<&str>, at: Timestamp) -> Session {
    CreateSessionInput {
        external_id: external.map(str::to_owned),
        kind: Some("chat".into()),
        title: Some("Hello World".into()),
        tags: Some(vec!["a".into(), "b".into()]),
        metadata: Some(json!({"team": "red", "n": 1})),
        data: Some(json!({"x": {"y": 1}})),
        ..Default::default()
    }
    .validate(at)
    .expect("valid")
    .into_session(account, at)
}

async fn insert(store: &Arc<dyn Store>, s: Session) -> Session {
    match store
        .insert_session(s, Event::SessionCreated { version: 1 })
        .await
        .expect("insert")
    {
        InsertSession::Inserted(s) => s,
        other => panic!("expected insert, got {other:?}"),
    }
}

async fn events(store: &Arc<dyn Store>, id: SessionId) -> Vec<serde_json::Value> {
    let page = store
        .read_records(id, "events", 0, 1000, Timestamp::now())
        .await
        .expect("read")
        .expect("session exists");
    page.records
        .iter()
        .map(|r| serde_json::from_str(r.data.get()).expect("json"))
        .collect()
}

pub async fn sessions_insert_get_and_conflicts(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let now = Timestamp::now();
    let s = insert(&store, new_session(acc, Some("ext-1"), now)).await;
    let got = store
        .get_session(acc, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(got, s, "a stored session reads back identically");
    let by_ext = store
        .get_session(acc, &SessionRef::External("ext-1".into()))
        .await
        .unwrap();
    assert_eq!(by_ext.as_ref().map(|s| s.id), Some(s.id));
    assert!(
        store
            .get_session(other, &SessionRef::Id(s.id))
            .await
            .unwrap()
            .is_none(),
        "another account does not see it"
    );

    let mut same_ext = new_session(acc, Some("ext-1"), now);
    same_ext.title = Some("other".into());
    match store
        .insert_session(same_ext, Event::SessionCreated { version: 1 })
        .await
        .unwrap()
    {
        InsertSession::ExternalIdTaken(existing) => assert_eq!(existing, s),
        other => panic!("expected ExternalIdTaken, got {other:?}"),
    }
    let mut same_id = new_session(acc, None, now);
    same_id.id = s.id;
    assert_eq!(
        store
            .insert_session(same_id, Event::SessionCreated { version: 1 })
            .await
            .unwrap(),
        InsertSession::IdTaken
    );
    // The same externalId in another account is a different session.
    insert(&store, new_session(other, Some("ext-1"), now)).await;
    assert_eq!(
        events(&store, s.id).await.len(),
        1,
        "one session.created event"
    );
}

pub async fn sessions_owner_across_accounts(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    assert_eq!(store.session_owner(s.id).await.unwrap(), Some(acc));
    assert_eq!(
        store.session_owner(SessionId::random()).await.unwrap(),
        None,
        "an unknown id has no owner"
    );
    // The owner is told to anyone who asks; the store does not filter by account here.
    assert!(store
        .get_session(other, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .is_none());
    store
        .delete_session(acc, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .expect("deleted");
    assert_eq!(store.session_owner(s.id).await.unwrap(), None);
}

pub async fn sessions_update_is_atomic_and_records_events(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let r = SessionRef::Id(s.id);
    let out = store
        .update_session(
            acc,
            &r,
            Box::new(|s: &mut Session| {
                let now = Timestamp::now();
                Ok(s.apply_merge_patch(&json!({"data": {"x": {"z": 2}}}), now)?
                    .into_iter()
                    .collect())
            }),
        )
        .await
        .unwrap();
    let UpdateSession::Updated(updated) = out else {
        panic!("expected Updated, got {out:?}");
    };
    assert_eq!(updated.version, 2);
    let stored = store.get_session(acc, &r).await.unwrap().unwrap();
    assert_eq!(stored, updated);
    assert_eq!(stored.data["x"], json!({"y": 1, "z": 2}));
    // A no-op update writes nothing.
    let out = store
        .update_session(acc, &r, Box::new(|_s: &mut Session| Ok(vec![])))
        .await
        .unwrap();
    assert!(matches!(out, UpdateSession::Unchanged(ref s) if s.version == 2));
    let ev = events(&store, s.id).await;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1]["type"], "session.patched");
    assert_eq!(ev[1]["version"], 2);
    assert_eq!(
        store
            .update_session(
                acc,
                &SessionRef::Id(SessionId::random()),
                Box::new(|_s: &mut Session| Ok(vec![]))
            )
            .await
            .unwrap(),
        UpdateSession::NotFound
    );
}

pub async fn sessions_rejected_update_changes_nothing(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let r = SessionRef::Id(s.id);
    let err = store
        .update_session(
            acc,
            &r,
            Box::new(|s: &mut Session| {
                s.title = Some("half-done".into());
                Err(Error::conflict(codes::SESSION_CLOSED, "no"))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    assert_eq!(store.get_session(acc, &r).await.unwrap().unwrap(), s);
    assert_eq!(events(&store, s.id).await.len(), 1);
}

pub async fn sessions_delete_cascades(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, Some("gone"), Timestamp::now())).await;
    let rec = NewRecord {
        id: "r1".into(),
        data: "1".into(),
        headers: "{}".into(),
        fresh: false,
    };
    store
        .append_records(
            acc,
            &SessionRef::Id(s.id),
            "in",
            vec![rec],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    let other = account(&store).await;
    assert_eq!(
        store
            .delete_session(other, &SessionRef::Id(s.id))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_session(acc, &SessionRef::External("gone".into()))
            .await
            .unwrap(),
        Some(s.id)
    );
    assert!(store
        .get_session(acc, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .read_records(s.id, "in", 0, 10, Timestamp::now())
        .await
        .unwrap()
        .is_none());
    assert!(store.list_channels(s.id).await.unwrap().is_empty());
    // The externalId is free again.
    insert(&store, new_session(acc, Some("gone"), Timestamp::now())).await;
}

pub async fn sessions_list_filters_and_keyset(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let base = Timestamp::now().millis() - 100_000;
    let mut all = Vec::new();
    for i in 0..30i64 {
        // Pairs share a createdAt so the id tie-break is exercised.
        let mut s = new_session(
            acc,
            Some(&format!("e{i}")),
            Timestamp::from_millis(base + i / 2),
        );
        s.kind = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        s.tags = vec![format!("t{}", i % 3)];
        s.metadata = json!({"k": format!("v{}", i % 4), "n": i})
            .as_object()
            .unwrap()
            .clone();
        s.title = Some(format!("Title {i}"));
        if i % 5 == 0 {
            s.closed_at = Some(Timestamp::from_millis(base + 200));
        } else if i % 7 == 0 {
            s.expires_at = Some(Timestamp::from_millis(base + 50));
        }
        all.push(insert(&store, s).await);
    }
    all.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
    let now = Timestamp::now();
    let list = |filter: SessionFilter, after: Option<Cursor>, limit: usize| {
        let store = store.clone();
        async move {
            store
                .list_sessions(
                    acc,
                    &SessionQuery {
                        filter,
                        after,
                        limit,
                        now,
                    },
                    false,
                )
                .await
                .unwrap()
        }
    };
    // Keyset pagination visits every row once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list(SessionFilter::default(), after, 7).await;
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|s| s.data.is_empty()), "data omitted");
        after = page.last().map(|s| Cursor {
            created_at: s.created_at,
            id: *s.id.as_uuid(),
        });
        seen.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(seen, all.iter().map(|s| s.id).collect::<Vec<_>>());

    let expect = |pred: &dyn Fn(&Session) -> bool| -> Vec<SessionId> {
        all.iter().filter(|s| pred(s)).map(|s| s.id).collect()
    };
    let ids = |v: Vec<Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let f = SessionFilter {
        kind: Some("odd".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.kind.as_deref() == Some("odd"))
    );
    let f = SessionFilter {
        tags_any: vec!["t1".into(), "t2".into()],
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.tags[0] != "t0")
    );
    let f = SessionFilter {
        metadata_eq: vec![("k".into(), "v3".into())],
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.metadata["k"] == "v3")
    );
    // Only string values match a metadata filter.
    let f = SessionFilter {
        metadata_eq: vec![("n".into(), "3".into())],
        ..Default::default()
    };
    assert!(list(f, None, 100).await.is_empty());
    for status in [
        SessionStatus::Active,
        SessionStatus::Closed,
        SessionStatus::Expired,
    ] {
        let f = SessionFilter {
            statuses: vec![status],
            ..Default::default()
        };
        assert_eq!(
            ids(list(f, None, 100).await),
            expect(&|s| s.status(now) == status),
            "{status:?}"
        );
    }
    let f = SessionFilter {
        statuses: vec![SessionStatus::Closed, SessionStatus::Expired],
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.status(now) != SessionStatus::Active)
    );
    let f = SessionFilter {
        external_id: Some("e7".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.external_id.as_deref() == Some("e7"))
    );
    let f = SessionFilter {
        created_after: Some(Timestamp::from_millis(base + 3)),
        created_before: Some(Timestamp::from_millis(base + 8)),
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.created_at.millis() > base + 3 && s.created_at.millis() < base + 8)
    );
    let f = SessionFilter {
        title_contains: Some("tle 1".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(list(f, None, 100).await),
        expect(&|s| s.title.as_deref().unwrap_or("").contains("tle 1"))
    );
    // Another account sees none of them.
    let other = account(&store).await;
    assert!(store
        .list_sessions(
            other,
            &SessionQuery {
                filter: SessionFilter::default(),
                after: None,
                limit: 100,
                now
            },
            false
        )
        .await
        .unwrap()
        .is_empty());
}

pub async fn accounts_and_keys(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let dup = store
        .create_account(Account {
            id: acc,
            name: None,
            created_at: Timestamp::now(),
        })
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Rejected(ref e) if e.code == codes::ACCOUNT_EXISTS));
    store
        .ensure_account(Account {
            id: acc,
            name: None,
            created_at: Timestamp::now(),
        })
        .await
        .unwrap();
    assert!(store.get_account(acc).await.unwrap().is_some());
    let key = ApiKey {
        id: KeyId::random(),
        account_id: acc,
        name: Some("k".into()),
        prefix: "sk_1234".into(),
        hash: [7u8; 32],
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store.create_api_key(key.clone()).await.unwrap();
    assert_eq!(
        store.find_api_key([7u8; 32]).await.unwrap(),
        Some(key.clone())
    );
    let again = store
        .create_api_key(ApiKey {
            id: KeyId::random(),
            ..key.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Rejected(ref e) if e.code == codes::KEY_EXISTS));
    let orphan = store
        .create_api_key(ApiKey {
            id: KeyId::random(),
            account_id: AccountId::random(),
            hash: [8u8; 32],
            ..key.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(orphan, StoreError::Rejected(ref e) if e.code == codes::ACCOUNT_NOT_FOUND));
    assert!(store
        .revoke_api_key(key.id, Timestamp::now())
        .await
        .unwrap());
    assert!(!store
        .revoke_api_key(key.id, Timestamp::now())
        .await
        .unwrap());
    assert_eq!(store.find_api_key([7u8; 32]).await.unwrap(), None);
}

/// Key seals: stored per key (a second store replaces the first), listed for the account's
/// live keys only, oldest key first; an unknown key is rejected.
pub async fn accounts_key_seals(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let key = |account: AccountId, n: u8, at: i64| ApiKey {
        id: KeyId::random(),
        account_id: account,
        name: None,
        prefix: "tr_dev_12".into(),
        hash: [n; 32],
        created_at: Timestamp::from_millis(at),
        revoked_at: None,
    };
    let (a, b, c) = (
        key(acc, 31, 1_000),
        key(acc, 32, 2_000),
        key(other, 33, 1_500),
    );
    for k in [&a, &b, &c] {
        store.create_api_key(k.clone()).await.unwrap();
    }
    assert_eq!(store.key_seals(acc).await.unwrap(), Vec::<Vec<u8>>::new());
    store.store_key_seal(b.id, vec![2, 2]).await.unwrap();
    store.store_key_seal(a.id, vec![1]).await.unwrap();
    store.store_key_seal(c.id, vec![3]).await.unwrap();
    store.store_key_seal(a.id, vec![1, 1]).await.unwrap();
    assert_eq!(
        store.key_seals(acc).await.unwrap(),
        vec![vec![1, 1], vec![2, 2]]
    );
    assert_eq!(store.key_seals(other).await.unwrap(), vec![vec![3]]);
    assert!(store.revoke_api_key(a.id, Timestamp::now()).await.unwrap());
    assert_eq!(store.key_seals(acc).await.unwrap(), vec![vec![2, 2]]);
    let unknown = store
        .store_key_seal(KeyId::random(), vec![9])
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::Rejected(ref e) if e.code == codes::KEY_NOT_FOUND));
}

fn rec(id: &str, data: &str) -> NewRecord {
    NewRecord {
        id: id.into(),
        data: data.into(),
        headers: "{}".into(),
        fresh: false,
    }
}

pub async fn records_append_dedupe_and_read(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let r = SessionRef::Id(s.id);
    let empty = store
        .read_records(s.id, "in", 0, 10, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.last_seq, 0);
    let a = store
        .append_records(
            acc,
            &r,
            "in",
            vec![rec("a", "1"), rec("b", "{\"x\":2}"), rec("a", "3")],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    let got: Vec<(i64, bool)> = a.results.iter().map(|r| (r.seq, r.duplicate)).collect();
    assert_eq!(got, vec![(1, false), (2, false), (1, true)]);
    assert_eq!(a.last_seq, 2);
    // A retried batch appends nothing.
    let b = store
        .append_records(
            acc,
            &r,
            "in",
            vec![rec("a", "1"), rec("b", "2")],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(b.results.iter().all(|r| r.duplicate));
    assert_eq!(b.last_seq, 2);
    let c = store
        .append_records(
            acc,
            &r,
            "in",
            vec![rec("c", "null")],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.results[0].seq, 3);
    // Channels are independent.
    let o = store
        .append_records(
            acc,
            &r,
            "out",
            vec![rec("a", "1")],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.results[0].seq, o.results[0].duplicate), (1, false));
    let page = store
        .read_records(s.id, "in", 1, 10, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(page.records[0].data.get(), "{\"x\":2}");
    assert_eq!(page.records[1].data.get(), "null");
    assert_eq!(page.last_seq, 3);
    assert!(!page.session_closed);
    let limited = store
        .read_records(s.id, "in", 0, 1, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limited.records.len(), 1);
    let chans = store.list_channels(s.id).await.unwrap();
    let names: Vec<(&str, i64, i64)> = chans
        .iter()
        .map(|c| (c.name.as_str(), c.last_seq, c.record_count))
        .collect();
    assert_eq!(names, vec![("events", 1, 1), ("in", 3, 3), ("out", 1, 1)]);
}

pub async fn records_guard_and_missing_session(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let r = SessionRef::Id(s.id);
    let err = store
        .append_records(
            acc,
            &r,
            "in",
            vec![rec("a", "1")],
            Box::new(|_| Err(Error::conflict(codes::SESSION_CLOSED, "closed"))),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    assert_eq!(
        store
            .read_records(s.id, "in", 0, 10, Timestamp::now())
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        0
    );
    let other = account(&store).await;
    assert!(store
        .append_records(
            other,
            &r,
            "in",
            vec![rec("a", "1")],
            Box::new(|_| Ok(())),
            Timestamp::now()
        )
        .await
        .unwrap()
        .is_none());
    // Closing shows in reads.
    store
        .update_session(
            acc,
            &r,
            Box::new(|s: &mut Session| Ok(s.close(None, Timestamp::now()).into_iter().collect())),
        )
        .await
        .unwrap();
    assert!(
        store
            .read_records(s.id, "in", 0, 10, Timestamp::now())
            .await
            .unwrap()
            .unwrap()
            .session_closed
    );
}

pub async fn records_concurrent_appends_are_gapless(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .append_records(
                        acc,
                        &SessionRef::Id(s.id),
                        "in",
                        vec![
                            rec(&format!("{w}-{i}"), "1"),
                            rec(&format!("{w}-{i}-b"), "2"),
                        ],
                        Box::new(|_| Ok(())),
                        Timestamp::now(),
                    )
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = store
        .read_records(s.id, "in", 0, 1000, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );
    // Each batch's two records are adjacent: batches are atomic.
    for pair in page.records.chunks(2) {
        assert_eq!(format!("{}-b", pair[0].id), pair[1].id);
    }
}

/// Records whose ids the server generated (`fresh`) may take a backend's faster path; it must
/// keep every rule of the regular one.
pub async fn records_server_generated_ids_append_guarded_and_gapless(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(
        &store,
        new_session(acc, Some("fresh-ext"), Timestamp::now()),
    )
    .await;
    let shared = store.clone();
    let append = move |r: SessionRef, data: Vec<&str>, guard: crate::SessionGuard| {
        let store = shared.clone();
        let records: Vec<NewRecord> = data
            .into_iter()
            .map(|d| NewRecord::generated(d.to_owned()))
            .collect();
        async move {
            store
                .append_records(acc, &r, "in", records, guard, Timestamp::now())
                .await
        }
    };
    let seqs = |a: &crate::Appended| a.results.iter().map(|r| r.seq).collect::<Vec<_>>();
    // The first append creates the channel, the next ones find it; by id or by externalId.
    let first = append(SessionRef::Id(s.id), vec!["1", "2"], Box::new(|_| Ok(())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((seqs(&first), first.last_seq), (vec![1, 2], 2));
    let second = append(
        SessionRef::External("fresh-ext".into()),
        vec!["3"],
        Box::new(|_| Ok(())),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((seqs(&second), second.last_seq), (vec![3], 3));
    assert!(second.results.iter().all(|r| !r.duplicate));

    // A rejecting guard, another account's session, an unknown one: nothing appended.
    let err = append(
        SessionRef::Id(s.id),
        vec!["x"],
        Box::new(|_| Err(Error::conflict(codes::SESSION_CLOSED, "no"))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    let other = account(&store).await;
    assert!(store
        .append_records(
            other,
            &SessionRef::Id(s.id),
            "in",
            vec![NewRecord::generated("1".into())],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .is_none());
    assert!(append(
        SessionRef::Id(SessionId::random()),
        vec!["1"],
        Box::new(|_| Ok(()))
    )
    .await
    .unwrap()
    .is_none());

    // Concurrent batches: gapless, atomic, and each acknowledged seq holds what was sent.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let append = append.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let a = format!("\"{w}-{i}-a\"");
                let b = format!("\"{w}-{i}-b\"");
                let out = append(SessionRef::Id(s.id), vec![&a, &b], Box::new(|_| Ok(())))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(out.results[1].seq, out.results[0].seq + 1);
                acked.push((out.results[0].seq, a));
                acked.push((out.results[1].seq, b));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    let page = store
        .read_records(s.id, "in", 3, 1000, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let stored: Vec<(i64, String)> = page
        .records
        .iter()
        .map(|r| (r.seq, r.data.get().to_owned()))
        .collect();
    assert_eq!(stored, acked);
    assert_eq!(
        stored.iter().map(|r| r.0).collect::<Vec<_>>(),
        (4..=403).collect::<Vec<_>>()
    );
    assert_eq!(page.last_seq, 403);

    // After a close, the session's own rule turns appends away.
    store
        .update_session(
            acc,
            &SessionRef::Id(s.id),
            Box::new(|s: &mut Session| Ok(s.close(None, Timestamp::now()).into_iter().collect())),
        )
        .await
        .unwrap();
    let now = Timestamp::now();
    let err = append(
        SessionRef::Id(s.id),
        vec!["1"],
        Box::new(move |s: &Session| s.ensure_active(now)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    let channels = store.list_channels(s.id).await.unwrap();
    let input = channels.iter().find(|c| c.name == "in").unwrap();
    assert_eq!((input.last_seq, input.record_count), (403, 403));
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

fn new_job(
    account: AccountId,
    kind: &str,
    input: serde_json::Value,
    output_key: Option<&str>,
    max_attempts: Option<i64>,
) -> Job {
    CreateJobInput {
        kind: kind.into(),
        input: Some(input),
        reuse: true,
        output_key: output_key.map(str::to_owned),
        max_attempts,
    }
    .validate(account, Timestamp::now())
    .expect("valid job")
    .0
}

/// Creates a job the way the service does (reuse when offered, else queued) and reports which
/// earlier job, if any, the store offered for reuse.
async fn create_job(
    store: &Arc<dyn Store>,
    account: AccountId,
    session: SessionId,
    job: Job,
    reuse_since: Option<Timestamp>,
) -> (Job, Session, Option<JobId>) {
    let offered = Arc::new(Mutex::new(None));
    let seen = offered.clone();
    let (job, session) = store
        .create_job(
            account,
            &SessionRef::Id(session),
            job,
            reuse_since,
            Box::new(
                move |job: &mut Job, s: &mut Session, previous: Option<&Job>| {
                    let now = job.created_at;
                    *seen.lock().unwrap() = previous.map(|p| p.id);
                    match previous {
                        Some(p) => {
                            job.reuse(p, now);
                            let mut events = vec![job.created_event()];
                            events.extend(job.apply_output(s, now)?);
                            Ok(events)
                        }
                        None => Ok(vec![job.created_event()]),
                    }
                },
            ),
        )
        .await
        .expect("create_job")
        .expect("the session exists");
    let offered = *offered.lock().unwrap();
    (job, session, offered)
}

async fn claim_one(
    store: &Arc<dyn Store>,
    account: AccountId,
    types: &[&str],
    lease_seconds: i64,
    now: Timestamp,
) -> Option<(Job, Session)> {
    let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
    store
        .claim_job(
            Some(account),
            &types,
            Box::new(move |job: &mut Job, _s: &mut Session| {
                Ok(vec![job.claim(Some("worker".into()), lease_seconds, now)])
            }),
        )
        .await
        .expect("claim_job")
}

async fn complete_job(
    store: &Arc<dyn Store>,
    account: AccountId,
    id: JobId,
    lease: uuid::Uuid,
    result: serde_json::Value,
) -> Result<UpdateJob, StoreError> {
    store
        .update_job(
            account,
            id,
            Box::new(move |job: &mut Job, s: &mut Session| {
                job.complete(s, lease, result, Timestamp::now())
            }),
        )
        .await
}

/// Claims the given job (it must be the oldest queued job of its type) and completes it.
async fn run_to_success(
    store: &Arc<dyn Store>,
    account: AccountId,
    job: &Job,
    result: serde_json::Value,
) -> Job {
    let (claimed, _) = claim_one(store, account, &[&job.kind], 60, Timestamp::now())
        .await
        .expect("a queued job to claim");
    assert_eq!(claimed.id, job.id, "the oldest queued job of its type");
    match complete_job(store, account, job.id, claimed.lease_id.unwrap(), result)
        .await
        .unwrap()
    {
        UpdateJob::Updated(j, _) => {
            assert_eq!(j.status, JobStatus::Succeeded);
            j
        }
        other => panic!("expected Updated, got {other:?}"),
    }
}

pub async fn jobs_create_with_and_without_reuse(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let s1 = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let s2 = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let s3 = insert(&store, new_session(other, None, Timestamp::now())).await;
    let past = Timestamp::now().plus_seconds(-3600);
    let input = json!({"url": "u", "opts": {"a": 1, "b": [1, 2]}, "sessionId": s1.id.to_string()});

    // Without reuse: queued, stored, listed, recorded.
    let (j1, after, offered) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "scrape", input.clone(), Some("out"), None),
        None,
    )
    .await;
    assert_eq!(offered, None);
    assert_eq!(j1.status, JobStatus::Queued);
    assert_eq!(j1.session_id, s1.id);
    assert_eq!(after, s1, "a queued job does not change its session");
    assert_eq!(store.get_job(acc, j1.id).await.unwrap(), Some(j1.clone()));
    assert_eq!(store.get_job(other, j1.id).await.unwrap(), None);
    assert_eq!(store.list_jobs(s1.id).await.unwrap(), vec![j1.clone()]);
    let ev = events(&store, s1.id).await;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1]["type"], "job.queued");
    assert_eq!(ev[1]["jobId"], j1.id.to_string());

    // With reuse, but nothing has succeeded yet: nothing is offered.
    let (j2, _, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(acc, "scrape", input.clone(), Some("out"), None),
        Some(past),
    )
    .await;
    assert_eq!(offered, None, "a queued job is never offered for reuse");
    assert_eq!(j2.status, JobStatus::Queued);

    let done = run_to_success(&store, acc, &j1, json!({"pages": 3})).await;
    let s1_now = store
        .get_session(acc, &SessionRef::Id(s1.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1_now.data["out"], json!({"pages": 3}));
    assert_eq!(s1_now.version, 2);

    // Same type and normalized input (other key order, other session id): offered and reused.
    let same = json!({"sessionId": s2.id.to_string(), "opts": {"b": [1, 2], "a": 1}, "url": "u"});
    let (j3, s2_after, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(acc, "scrape", same.clone(), Some("out"), None),
        Some(past),
    )
    .await;
    assert_eq!(offered, Some(j1.id));
    assert_eq!(j3.status, JobStatus::Succeeded);
    assert_eq!(j3.reused_from, Some(j1.id));
    assert_eq!(j3.result, done.result);
    assert_eq!(s2_after.data["out"], json!({"pages": 3}));
    assert_eq!(s2_after.version, 2);
    assert_eq!(
        store.get_job(acc, j3.id).await.unwrap(),
        Some(j3.clone()),
        "the reused job is stored as returned"
    );
    assert_eq!(
        store
            .get_session(acc, &SessionRef::Id(s2.id))
            .await
            .unwrap()
            .unwrap(),
        s2_after,
        "the output key landed in the same write"
    );
    let ev = events(&store, s2.id).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec![
            "session.created",
            "job.queued",
            "job.succeeded",
            "session.patched"
        ]
    );

    // Reuse not asked for: nothing offered.
    let (j4, _, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(acc, "scrape", same.clone(), None, None),
        None,
    )
    .await;
    assert_eq!(offered, None);
    assert_eq!(j4.status, JobStatus::Queued);
    // Every success finished before `reuse_since`: nothing offered.
    let (_, _, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(acc, "scrape", same.clone(), None, None),
        Some(Timestamp::now().plus_seconds(60)),
    )
    .await;
    assert_eq!(offered, None, "outside the window");
    // Another account, another type, another input: nothing offered.
    let (_, _, offered) = create_job(
        &store,
        other,
        s3.id,
        new_job(other, "scrape", same.clone(), None, None),
        Some(past),
    )
    .await;
    assert_eq!(offered, None, "another account's success is never offered");
    let (_, _, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(acc, "scrape2", same.clone(), None, None),
        Some(past),
    )
    .await;
    assert_eq!(offered, None, "another type");
    let (_, _, offered) = create_job(
        &store,
        acc,
        s2.id,
        new_job(
            acc,
            "scrape",
            json!({"url": "v", "opts": {"a": 1, "b": [1, 2]}}),
            None,
            None,
        ),
        Some(past),
    )
    .await;
    assert_eq!(offered, None, "another input");

    // A failed job is never offered.
    let (f, _, _) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "flaky", json!({"x": 1}), None, Some(1)),
        None,
    )
    .await;
    let (claimed, _) = claim_one(&store, acc, &["flaky"], 60, Timestamp::now())
        .await
        .unwrap();
    let lease = claimed.lease_id.unwrap();
    let out = store
        .update_job(
            acc,
            f.id,
            Box::new(move |job: &mut Job, s: &mut Session| {
                job.fail(
                    s,
                    lease,
                    json!({"message": "boom"}),
                    false,
                    Timestamp::now(),
                )
            }),
        )
        .await
        .unwrap();
    assert!(matches!(out, UpdateJob::Updated(ref j, _) if j.status == JobStatus::Failed));
    let (_, _, offered) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "flaky", json!({"x": 1}), None, None),
        Some(past),
    )
    .await;
    assert_eq!(offered, None, "a failed job is never offered");

    // The newest success is offered.
    let (n1, _, _) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "n", json!({}), None, None),
        None,
    )
    .await;
    run_to_success(&store, acc, &n1, json!(1)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (n2, _, _) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "n", json!({}), None, None),
        None,
    )
    .await;
    run_to_success(&store, acc, &n2, json!(2)).await;
    let (n3, _, offered) = create_job(
        &store,
        acc,
        s1.id,
        new_job(acc, "n", json!({}), None, None),
        Some(past),
    )
    .await;
    assert_eq!(offered, Some(n2.id), "the newest success");
    assert_eq!(n3.result, Some(json!(2)));

    // No such session (or another account's): nothing is created.
    let before_jobs = store.list_jobs(s1.id).await.unwrap();
    let before_events = events(&store, s1.id).await;
    for (acct, sid) in [(acc, SessionId::random()), (other, s1.id)] {
        let got = store
            .create_job(
                acct,
                &SessionRef::Id(sid),
                new_job(acct, "scrape", json!({}), None, None),
                None,
                Box::new(|job: &mut Job, _s: &mut Session, _p: Option<&Job>| {
                    Ok(vec![job.created_event()])
                }),
            )
            .await
            .unwrap();
        assert!(got.is_none());
    }
    // A rejected decision writes nothing.
    let err = store
        .create_job(
            acc,
            &SessionRef::Id(s1.id),
            new_job(acc, "scrape", json!({}), None, None),
            Some(past),
            Box::new(|job: &mut Job, s: &mut Session, _p: Option<&Job>| {
                s.title = Some("half-done".into());
                job.status = JobStatus::Running;
                Err(Error::conflict(codes::SESSION_CLOSED, "no"))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    assert_eq!(store.list_jobs(s1.id).await.unwrap(), before_jobs);
    assert_eq!(events(&store, s1.id).await, before_events);
    assert_eq!(
        store
            .get_session(acc, &SessionRef::Id(s1.id))
            .await
            .unwrap()
            .unwrap()
            .title,
        s1.title
    );
    // Lists are oldest first.
    let listed = store.list_jobs(s1.id).await.unwrap();
    assert!(listed
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));
    assert_eq!(listed[0].id, j1.id);
}

pub async fn jobs_claim_takes_the_oldest_across_types(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let mut made = Vec::new();
    for (i, kind) in ["t.b", "t.a", "t.c", "t.a", "t.b"].iter().enumerate() {
        let (job, _, _) = create_job(
            &store,
            acc,
            s.id,
            new_job(acc, kind, json!({"n": i}), None, None),
            None,
        )
        .await;
        made.push(job.id);
    }
    // Named in another order and with a repeat: still strictly oldest first, each once.
    let mut got = Vec::new();
    while let Some((job, _)) = claim_one(
        &store,
        acc,
        &["t.c", "t.a", "t.b", "t.a"],
        60,
        Timestamp::now(),
    )
    .await
    {
        got.push(job.id);
    }
    assert_eq!(got, made);
}

pub async fn jobs_claim_hands_each_job_to_exactly_one_claimer(store: Arc<dyn Store>) {
    const JOBS: usize = 60;
    const CLAIMERS: usize = 8;
    let acc = account(&store).await;
    let other = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let os = insert(&store, new_session(other, None, Timestamp::now())).await;

    // Oldest first, and only the named types.
    let (a, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "ord", json!({"n": 1}), None, None),
        None,
    )
    .await;
    let (b, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "ord", json!({"n": 2}), None, None),
        None,
    )
    .await;
    assert!(
        claim_one(&store, acc, &[], 60, Timestamp::now())
            .await
            .is_none(),
        "no types"
    );
    assert!(claim_one(&store, acc, &["nope"], 60, Timestamp::now())
        .await
        .is_none());
    assert!(
        claim_one(&store, other, &["ord"], 60, Timestamp::now())
            .await
            .is_none(),
        "other account"
    );
    let (c1, cs) = claim_one(&store, acc, &["x", "ord"], 60, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(c1.id, a.id);
    assert_eq!(c1.status, JobStatus::Running);
    assert_eq!(c1.attempts, 1);
    assert!(c1.lease_id.is_some());
    assert_eq!(cs.id, s.id);
    assert_eq!(store.get_job(acc, a.id).await.unwrap(), Some(c1.clone()));
    let (c2, _) = claim_one(&store, acc, &["ord"], 60, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(c2.id, b.id);
    assert!(claim_one(&store, acc, &["ord"], 60, Timestamp::now())
        .await
        .is_none());
    let kinds: Vec<String> = events(&store, s.id)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "session.created",
            "job.queued",
            "job.queued",
            "job.running",
            "job.running"
        ]
    );

    let mut created = std::collections::HashSet::new();
    for i in 0..JOBS {
        let (j, _, _) = create_job(
            &store,
            acc,
            s.id,
            new_job(acc, "w", json!({"i": i}), None, None),
            None,
        )
        .await;
        created.insert(j.id);
    }
    let (decoy, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "other", json!({}), None, None),
        None,
    )
    .await;
    let (foreign, _, _) = create_job(
        &store,
        other,
        os.id,
        new_job(other, "w", json!({}), None, None),
        None,
    )
    .await;

    let start = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            while let Some((j, _)) = claim_one(&store, acc, &["w"], 60, Timestamp::now()).await {
                got.push(j);
            }
            got
        }));
    }
    let mut seen = std::collections::HashSet::new();
    let mut leases = std::collections::HashSet::new();
    for t in tasks {
        for j in t.await.unwrap() {
            assert!(seen.insert(j.id), "job {} was handed out twice", j.id);
            assert!(leases.insert(j.lease_id.unwrap()), "a lease id was reused");
            assert_eq!(j.kind, "w");
            assert_eq!(j.attempts, 1);
        }
    }
    assert_eq!(seen, created, "every queued job was claimed exactly once");
    for j in store.list_jobs(s.id).await.unwrap() {
        if j.id == decoy.id {
            assert_eq!(j.status, JobStatus::Queued, "another type is not claimed");
        } else {
            assert_eq!(j.status, JobStatus::Running);
            assert_eq!(j.attempts, 1);
        }
    }
    assert_eq!(
        store
            .get_job(other, foreign.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Queued,
        "another account's job is not claimed"
    );
}

pub async fn jobs_claim_skips_closed_and_expired_sessions(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let closed = insert(&store, new_session(acc, None, Timestamp::now())).await;
    create_job(
        &store,
        acc,
        closed.id,
        new_job(acc, "t", json!({"s": "closed"}), None, None),
        None,
    )
    .await;
    store
        .update_session(
            acc,
            &SessionRef::Id(closed.id),
            Box::new(|s: &mut Session| Ok(s.close(None, Timestamp::now()).into_iter().collect())),
        )
        .await
        .unwrap();
    assert!(
        claim_one(&store, acc, &["t"], 60, Timestamp::now())
            .await
            .is_none(),
        "a closed session's queued job is not handed out"
    );
    let mut expiring = new_session(acc, None, Timestamp::now());
    expiring.expires_at = Some(Timestamp::now().plus_seconds(1));
    let expiring = insert(&store, expiring).await;
    let (j, _, _) = create_job(
        &store,
        acc,
        expiring.id,
        new_job(acc, "t", json!({"s": "expired"}), None, None),
        None,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let got = claim_one(&store, acc, &["t"], 60, Timestamp::now()).await;
    assert!(
        got.is_none(),
        "claim_job takes jobs of active sessions only (trait doc), but handed out {} of an \
         expired session",
        j.id
    );
}

pub async fn jobs_update_not_found_unchanged_and_rejected(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let (j, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "t", json!({}), Some("k"), None),
        None,
    )
    .await;
    let noop = || -> JobUpdate { Box::new(|_j: &mut Job, _s: &mut Session| Ok(vec![])) };

    assert_eq!(
        store
            .update_job(acc, JobId::random(), noop())
            .await
            .unwrap(),
        UpdateJob::NotFound
    );
    assert_eq!(
        store.update_job(other, j.id, noop()).await.unwrap(),
        UpdateJob::NotFound,
        "another account's job"
    );
    let before_events = events(&store, s.id).await;
    // No events: nothing is written, even if the closure touched the job.
    let out = store
        .update_job(
            acc,
            j.id,
            Box::new(|job: &mut Job, s: &mut Session| {
                job.progress = Some(json!({"touched": true}));
                s.title = Some("touched".into());
                Ok(vec![])
            }),
        )
        .await
        .unwrap();
    assert_eq!(out, UpdateJob::Unchanged(j.clone()));
    assert_eq!(store.get_job(acc, j.id).await.unwrap(), Some(j.clone()));
    assert_eq!(
        store
            .get_session(acc, &SessionRef::Id(s.id))
            .await
            .unwrap()
            .unwrap(),
        s
    );
    assert_eq!(events(&store, s.id).await, before_events);
    // A rejected change writes nothing.
    let err = store
        .update_job(
            acc,
            j.id,
            Box::new(|job: &mut Job, _s: &mut Session| {
                job.heartbeat(uuid::Uuid::new_v4(), Some(json!(1)), Timestamp::now())
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::LEASE_LOST));
    assert_eq!(store.get_job(acc, j.id).await.unwrap(), Some(j.clone()));
    assert_eq!(events(&store, s.id).await, before_events);

    // Updated: the job as stored, with its session.
    let (claimed, _) = claim_one(&store, acc, &["t"], 30, Timestamp::now())
        .await
        .unwrap();
    let lease = claimed.lease_id.unwrap();
    let out = store
        .update_job(
            acc,
            j.id,
            Box::new(move |job: &mut Job, _s: &mut Session| {
                job.heartbeat(lease, Some(json!({"pct": 50})), Timestamp::now())
            }),
        )
        .await
        .unwrap();
    let UpdateJob::Updated(hb, hs) = out else {
        panic!("expected Updated, got {out:?}");
    };
    assert_eq!(hb.progress, Some(json!({"pct": 50})));
    assert_eq!(hs.id, s.id);
    assert_eq!(store.get_job(acc, j.id).await.unwrap(), Some(hb.clone()));
    let ev = events(&store, s.id).await;
    assert_eq!(ev.last().unwrap()["type"], "job.progress");
    assert_eq!(ev.last().unwrap()["progress"], json!({"pct": 50}));
    // A silent change (a lease extension) is written but not recorded.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let out = store
        .update_job(
            acc,
            j.id,
            Box::new(move |job: &mut Job, _s: &mut Session| {
                job.heartbeat(lease, None, Timestamp::now())
            }),
        )
        .await
        .unwrap();
    let UpdateJob::Updated(hb2, _) = out else {
        panic!("expected Updated, got {out:?}");
    };
    assert!(hb2.lease_expires_at > hb.lease_expires_at, "lease extended");
    assert_eq!(store.get_job(acc, j.id).await.unwrap(), Some(hb2.clone()));
    assert_eq!(events(&store, s.id).await.len(), ev.len(), "not recorded");

    // Completion writes job, session (output key) and both events together.
    let out = complete_job(&store, acc, j.id, lease, json!({"r": 1}))
        .await
        .unwrap();
    let UpdateJob::Updated(done, ds) = out else {
        panic!("expected Updated, got {out:?}");
    };
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(ds.data["k"], json!({"r": 1}));
    assert_eq!(ds.version, s.version + 1);
    assert_eq!(
        store
            .get_session(acc, &SessionRef::Id(s.id))
            .await
            .unwrap()
            .unwrap(),
        ds
    );
    let ev = events(&store, s.id).await;
    let n = ev.len();
    assert_eq!(ev[n - 2]["type"], "job.succeeded");
    assert_eq!(ev[n - 1]["type"], "session.patched");
    // Cancelling a finished job changes nothing.
    let out = store
        .update_job(
            acc,
            j.id,
            Box::new(|job: &mut Job, _s: &mut Session| {
                Ok(job.cancel(Timestamp::now()).into_iter().collect())
            }),
        )
        .await
        .unwrap();
    assert_eq!(out, UpdateJob::Unchanged(done.clone()));
    assert_eq!(events(&store, s.id).await.len(), n);
}

pub async fn jobs_expired_leases(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let os = insert(&store, new_session(other, None, Timestamp::now())).await;
    let now = Timestamp::now();
    let (a, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "a", json!({}), None, Some(2)),
        None,
    )
    .await;
    let (b, _, _) = create_job(
        &store,
        other,
        os.id,
        new_job(other, "b", json!({}), None, None),
        None,
    )
    .await;
    let (c, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "c", json!({}), None, None),
        None,
    )
    .await;
    let (d, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "d", json!({}), None, None),
        None,
    )
    .await;
    let (f, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "f", json!({}), None, Some(1)),
        None,
    )
    .await;
    // a: claimed 20 s ago for 5 s; b (another account): 10 s ago for 5 s; c: now for 60 s;
    // d stays queued; f: 20 s ago for 5 s, its only attempt.
    let (ca, _) = claim_one(&store, acc, &["a"], 5, now.plus_seconds(-20))
        .await
        .unwrap();
    claim_one(&store, other, &["b"], 5, now.plus_seconds(-10))
        .await
        .unwrap();
    claim_one(&store, acc, &["c"], 60, now).await.unwrap();
    claim_one(&store, acc, &["f"], 5, now.plus_seconds(-20))
        .await
        .unwrap();
    let _ = d;

    let mut got = store.expired_leases(now, 10).await.unwrap();
    got.sort_by_key(|(_, id)| *id.as_uuid());
    let mut want = vec![(acc, a.id), (other, b.id), (acc, f.id)];
    want.sort_by_key(|(_, id)| *id.as_uuid());
    assert_eq!(got, want, "running jobs whose lease ended, across accounts");
    assert_eq!(
        store.expired_leases(now, 2).await.unwrap().len(),
        2,
        "limit"
    );
    assert!(
        store
            .expired_leases(now.plus_seconds(-30), 10)
            .await
            .unwrap()
            .is_empty(),
        "no lease had ended 30 s ago"
    );
    assert_eq!(
        store
            .expired_leases(now.plus_seconds(120), 10)
            .await
            .unwrap()
            .len(),
        4,
        "in two minutes c's lease has ended too"
    );

    let expire = |id: JobId, account: AccountId| {
        let store = store.clone();
        async move {
            store
                .update_job(
                    account,
                    id,
                    Box::new(move |job: &mut Job, s: &mut Session| {
                        Ok(job.expire(s, now).into_iter().collect())
                    }),
                )
                .await
                .unwrap()
        }
    };
    let UpdateJob::Updated(ea, _) = expire(a.id, acc).await else {
        panic!("a's lease had ended");
    };
    assert_eq!(
        ea.status,
        JobStatus::Queued,
        "attempts remain: back to the queue"
    );
    assert_eq!(ea.attempts, 1);
    assert_eq!(ea.lease_id, None);
    assert_eq!(ea.error.as_ref().unwrap()["code"], "lease_expired");
    let UpdateJob::Updated(ef, _) = expire(f.id, acc).await else {
        panic!("f's lease had ended");
    };
    assert_eq!(ef.status, JobStatus::Failed, "no attempt left");
    assert!(ef.finished_at.is_some());
    assert!(
        matches!(expire(c.id, acc).await, UpdateJob::Unchanged(_)),
        "c's lease is live"
    );
    assert_eq!(
        store.expired_leases(now, 10).await.unwrap(),
        vec![(other, b.id)]
    );
    let ev = events(&store, s.id).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.ends_with(&["job.queued", "job.failed"]), "{kinds:?}");
    // The old lease is gone.
    let err = complete_job(&store, acc, a.id, ca.lease_id.unwrap(), json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::LEASE_LOST));
    // The requeued job is claimable again, with a new lease.
    let (again, _) = claim_one(&store, acc, &["a"], 60, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(again.id, a.id);
    assert_eq!(again.attempts, 2);
    assert_ne!(again.lease_id, ca.lease_id);
}

pub async fn jobs_delete_session_removes_them(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let keep = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let (done, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "t", json!({"x": 1}), None, None),
        None,
    )
    .await;
    run_to_success(&store, acc, &done, json!("r")).await;
    let (queued, _, _) = create_job(
        &store,
        acc,
        s.id,
        new_job(acc, "t", json!({"x": 2}), None, None),
        None,
    )
    .await;
    let (kept, _, _) = create_job(
        &store,
        acc,
        keep.id,
        new_job(acc, "k", json!({}), None, None),
        None,
    )
    .await;
    assert_eq!(
        store
            .delete_session(acc, &SessionRef::Id(s.id))
            .await
            .unwrap(),
        Some(s.id)
    );
    for id in [done.id, queued.id] {
        assert_eq!(store.get_job(acc, id).await.unwrap(), None);
        assert_eq!(
            store
                .update_job(
                    acc,
                    id,
                    Box::new(|_j: &mut Job, _s: &mut Session| Ok(vec![]))
                )
                .await
                .unwrap(),
            UpdateJob::NotFound
        );
    }
    assert!(store.list_jobs(s.id).await.unwrap().is_empty());
    assert!(claim_one(&store, acc, &["t"], 60, Timestamp::now())
        .await
        .is_none());
    let (_, _, offered) = create_job(
        &store,
        acc,
        keep.id,
        new_job(acc, "t", json!({"x": 1}), None, None),
        Some(Timestamp::now().plus_seconds(-3600)),
    )
    .await;
    assert_eq!(offered, None, "a deleted session's job is not reused");
    assert_eq!(store.get_job(acc, kept.id).await.unwrap(), Some(kept));
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

const PROCESS_DOC: &str = "document.process";

fn new_document(account: AccountId, sha: &str) -> (Document, Job) {
    let now = Timestamp::now();
    let id = DocumentId::random();
    let doc = Document {
        id,
        account_id: account,
        session_id: SessionId(uuid::Uuid::nil()),
        filename: Some("notes.md".into()),
        content_type: Some("text/markdown".into()),
        size_bytes: 5,
        sha256: sha.into(),
        status: DocumentStatus::Processing,
        error: None,
        chunk_count: 0,
        token_count: 0,
        chunk_tokens: 100,
        overlap_tokens: 10,
        job_id: None,
        created_at: now,
        updated_at: now,
    };
    let job = CreateJobInput {
        kind: PROCESS_DOC.into(),
        input: Some(json!({ "documentId": id.to_string() })),
        reuse: false,
        output_key: None,
        max_attempts: None,
    }
    .validate(account, now)
    .expect("valid job")
    .0;
    (doc, job)
}

fn doc_chunk(index: i64, content: &str) -> NewChunk {
    NewChunk {
        index,
        content: content.into(),
        token_count: 2,
        char_count: content.chars().count() as i64,
        metadata: json!({"i": index}),
    }
}

/// A hook that keeps `data.docs` as the ready documents it is shown, each with its chunks'
/// contents, and remembers what it saw.
fn docs_view(seen: Arc<Mutex<Option<serde_json::Value>>>) -> SessionDocuments {
    Box::new(
        move |s: &mut Session, docs: &[(Document, Vec<Chunk>)]| -> Result<Vec<Event>, Error> {
            let view = json!(docs
                .iter()
                .map(|(d, chunks)| json!({
                    "id": d.id.to_string(),
                    "status": d.status.as_str(),
                    "chunks": chunks.iter().map(|c| c.content.clone()).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>());
            *seen.lock().unwrap() = Some(view.clone());
            let mut keys = serde_json::Map::new();
            keys.insert("docs".into(), view);
            Ok(s.replace_data_keys(keys, Timestamp::now())?
                .into_iter()
                .collect())
        },
    )
}

/// A hook that changes the session, then refuses.
fn refusing_hook() -> SessionDocuments {
    Box::new(|s: &mut Session, _docs: &[(Document, Vec<Chunk>)]| {
        let mut keys = serde_json::Map::new();
        keys.insert("docs".into(), json!("must not be stored"));
        s.replace_data_keys(keys, Timestamp::now())?;
        Err(Error::invalid_field("the hook refused"))
    })
}

async fn upload_doc(
    store: &Arc<dyn Store>,
    account: AccountId,
    session: SessionId,
    sha: &str,
    documents: Option<SessionDocuments>,
) -> Result<(Document, Job), StoreError> {
    let (doc, job) = new_document(account, sha);
    store
        .create_document(
            account,
            &SessionRef::Id(session),
            DocumentUpload {
                document: doc,
                content: b"hello".to_vec(),
                job,
                reuse: None,
            },
            Box::new(
                |doc: &mut Document, job: &mut Job, _s: &Session, _prev: Option<&Document>| {
                    doc.job_id = Some(job.id);
                    Ok(DocumentDecision {
                        events: vec![doc.event(DocumentEventKind::Uploaded), job.created_event()],
                        copy_chunks_from: None,
                    })
                },
            ),
            documents,
        )
        .await
        .map(|r| r.expect("the session exists"))
}

/// Claims the document's processing job and finishes the document with `chunks`.
async fn finish_doc(
    store: &Arc<dyn Store>,
    account: AccountId,
    doc: &Document,
    chunks: Vec<NewChunk>,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, Job)>, StoreError> {
    let lease = match store.get_job(account, doc.job_id.unwrap()).await.unwrap() {
        Some(j) if j.status == JobStatus::Running => j.lease_id.unwrap(),
        _ => {
            let (claimed, _) = claim_one(store, account, &[PROCESS_DOC], 60, Timestamp::now())
                .await
                .expect("the processing job");
            assert_eq!(Some(claimed.id), doc.job_id);
            claimed.lease_id.unwrap()
        }
    };
    store
        .finish_document(
            account,
            doc.id,
            DocumentOutcome::Ready(chunks),
            Box::new(move |d: &mut Document, j: &mut Job, s: &mut Session| {
                let now = Timestamp::now();
                d.updated_at = now;
                let mut events = j.complete(s, lease, json!({"chunks": d.chunk_count}), now)?;
                events.push(d.event(DocumentEventKind::Ready));
                Ok(events)
            }),
            documents,
        )
        .await
}

fn describe_deleted() -> DocumentDescribe {
    Box::new(|d: &Document| vec![d.event(DocumentEventKind::Deleted)])
}

async fn current(store: &Arc<dyn Store>, account: AccountId, id: SessionId) -> Session {
    store
        .get_session(account, &SessionRef::Id(id))
        .await
        .unwrap()
        .expect("the session exists")
}

fn last_patch(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "session.patched")
        .expect("a session.patched event")
}

pub async fn documents_session_hook_commits_with_the_change(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = insert(&store, new_session(acc, None, Timestamp::now())).await;
    let seen = Arc::new(Mutex::new(None));

    // No hook: the session is not touched.
    let (a, _) = upload_doc(&store, acc, s.id, "sha-a", None).await.unwrap();
    assert_eq!(current(&store, acc, s.id).await, s);

    // Upload with a hook: it sees no ready document yet (the new one is processing).
    let (b, _) = upload_doc(&store, acc, s.id, "sha-b", Some(docs_view(seen.clone())))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(json!([])));
    let after_upload = current(&store, acc, s.id).await;
    assert_eq!(after_upload.version, s.version + 1);
    assert_eq!(after_upload.data["docs"], json!([]));
    let ev = events(&store, s.id).await;
    assert_eq!(last_patch(&ev)["version"], after_upload.version);
    assert_eq!(
        ev.last().unwrap()["type"],
        "session.patched",
        "recorded last"
    );

    // Finish with a hook: the chunks, the document's state, the job and the session change
    // commit together, and the hook sees the document ready with its chunks.
    let (done, job) = finish_doc(
        &store,
        acc,
        &a,
        vec![doc_chunk(0, "alpha one"), doc_chunk(1, "alpha two")],
        Some(docs_view(seen.clone())),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.status, DocumentStatus::Ready);
    assert_eq!(job.status, JobStatus::Succeeded);
    let view_a =
        json!({"id": a.id.to_string(), "status": "ready", "chunks": ["alpha one", "alpha two"]});
    assert_eq!(*seen.lock().unwrap(), Some(json!([view_a.clone()])));
    let after_finish = current(&store, acc, s.id).await;
    assert_eq!(after_finish.version, after_upload.version + 1, "one bump");
    assert_eq!(after_finish.data["docs"], json!([view_a.clone()]));
    let ev = events(&store, s.id).await;
    let patch = last_patch(&ev);
    assert_eq!(patch["version"], after_finish.version);
    assert_eq!(patch["patch"], json!({"data": {"docs": [view_a.clone()]}}));

    // Finishing the second: the hook sees both, in list_documents order.
    finish_doc(
        &store,
        acc,
        &b,
        vec![doc_chunk(0, "beta")],
        Some(docs_view(seen.clone())),
    )
    .await
    .unwrap()
    .unwrap();
    let order: Vec<String> = store
        .list_documents(s.id)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    let view_b = json!({"id": b.id.to_string(), "status": "ready", "chunks": ["beta"]});
    let both = if order == vec![a.id.to_string(), b.id.to_string()] {
        json!([view_a.clone(), view_b.clone()])
    } else {
        json!([view_b.clone(), view_a.clone()])
    };
    assert_eq!(*seen.lock().unwrap(), Some(both.clone()));
    let after_both = current(&store, acc, s.id).await;
    assert_eq!(after_both.version, after_finish.version + 1);
    assert_eq!(after_both.data["docs"], both);

    // A hook that refuses rolls the whole operation back: finish ...
    let (c, c_job) = upload_doc(&store, acc, s.id, "sha-c", None).await.unwrap();
    let (claimed, _) = claim_one(&store, acc, &[PROCESS_DOC], 60, Timestamp::now())
        .await
        .expect("the processing job");
    assert_eq!(claimed.id, c_job.id);
    let before = current(&store, acc, s.id).await;
    let before_events = events(&store, s.id).await.len();
    let err = finish_doc(
        &store,
        acc,
        &c,
        vec![doc_chunk(0, "gamma")],
        Some(refusing_hook()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Rejected(ref e) if e.message == "the hook refused"),
        "{err:?}"
    );
    let still = store.get_document(s.id, c.id).await.unwrap().unwrap();
    assert_eq!(still.status, DocumentStatus::Processing);
    assert_eq!(still.chunk_count, 0);
    assert!(store.list_chunks(c.id).await.unwrap().is_empty());
    assert_eq!(
        store.get_job(acc, c_job.id).await.unwrap().unwrap(),
        claimed,
        "the job's transition is rolled back too"
    );
    assert_eq!(current(&store, acc, s.id).await, before);
    assert_eq!(events(&store, s.id).await.len(), before_events);

    // ... upload ...
    let err = upload_doc(&store, acc, s.id, "sha-d", Some(refusing_hook()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(store.list_documents(s.id).await.unwrap().len(), 3);
    assert_eq!(store.list_jobs(s.id).await.unwrap().len(), 3);
    assert_eq!(current(&store, acc, s.id).await, before);
    assert_eq!(events(&store, s.id).await.len(), before_events);

    // ... and delete.
    let err = store
        .delete_document(s.id, a.id, describe_deleted(), Some(refusing_hook()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(store.get_document(s.id, a.id).await.unwrap(), Some(done));
    assert_eq!(store.list_chunks(a.id).await.unwrap().len(), 2);
    assert_eq!(current(&store, acc, s.id).await, before);
    assert_eq!(events(&store, s.id).await.len(), before_events);

    // A delete with a hook: it sees the remaining ready documents.
    let (gone, n) = store
        .delete_document(
            s.id,
            a.id,
            describe_deleted(),
            Some(docs_view(seen.clone())),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((gone.id, n), (a.id, 2));
    assert_eq!(*seen.lock().unwrap(), Some(json!([view_b.clone()])));
    let after_delete = current(&store, acc, s.id).await;
    assert_eq!(after_delete.version, before.version + 1);
    assert_eq!(after_delete.data["docs"], json!([view_b]));
    let ev = events(&store, s.id).await;
    assert_eq!(
        ev.len(),
        before_events + 2,
        "document.deleted, session.patched"
    );
    assert_eq!(last_patch(&ev)["version"], after_delete.version);
    assert!(store.list_chunks(a.id).await.unwrap().is_empty());

    // A hook that changes nothing writes nothing.
    let (e, _) = upload_doc(&store, acc, s.id, "sha-e", None).await.unwrap();
    let quiet = current(&store, acc, s.id).await;
    store
        .delete_document(s.id, e.id, describe_deleted(), Some(docs_view(seen)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current(&store, acc, s.id).await, quiet);
}
