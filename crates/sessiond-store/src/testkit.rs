//! The store conformance suite: one set of tests, written against the [`Store`] trait, that every
//! backend runs. A behaviour that differs between backends is a bug.
//!
//! A backend's test crate invokes [`conformance_tests!`] with an async expression that yields a
//! fresh, empty `Arc<dyn Store>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::channel::NewRecord;
use sessiond_core::cursor::Cursor;
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{
    CreateSessionInput, Session, SessionFilter, SessionQuery, SessionStatus,
};
use sessiond_core::{AccountId, Error, KeyId, SessionId, Timestamp};

use crate::{InsertSession, Store, StoreError, UpdateSession};

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
            accounts_and_keys,
            records_append_dedupe_and_read,
            records_guard_and_missing_session,
            records_concurrent_appends_are_gapless,
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

fn rec(id: &str, data: &str) -> NewRecord {
    NewRecord {
        id: id.into(),
        data: data.into(),
        headers: "{}".into(),
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
