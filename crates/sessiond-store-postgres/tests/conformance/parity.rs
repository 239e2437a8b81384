//! Documents and chats, checked against the `Store` trait alone and run on both backends (the
//! shared conformance suite has no such checks yet; these are written so they can move there).

use std::sync::{Arc, Mutex};

use serde_json::json;
use sessiond_core::account::Account;
use sessiond_core::chat::{Chat, ChatId, ChatPatch, NewChat, NewMessage, Role};
use sessiond_core::document::{Document, DocumentEventKind, DocumentId, DocumentStatus, NewChunk};
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::session::{CreateSessionInput, Session};
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{
    CreateChat, DocumentDecision, DocumentOutcome, DocumentReuse, DocumentUpload, InsertSession,
    Store, StoreError,
};

async fn account(store: &Arc<dyn Store>) -> AccountId {
    let id = AccountId::random();
    store
        .create_account(Account {
            id,
            name: None,
            created_at: Timestamp::now(),
        })
        .await
        .unwrap();
    id
}

fn new_session(account: AccountId) -> Session {
    let now = Timestamp::now();
    CreateSessionInput::default()
        .validate(now)
        .unwrap()
        .into_session(account, now)
}

async fn session(store: &Arc<dyn Store>, account: AccountId) -> Session {
    match store
        .insert_session(new_session(account), Event::SessionCreated { version: 1 })
        .await
        .unwrap()
    {
        InsertSession::Inserted(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn event_kinds(store: &Arc<dyn Store>, s: SessionId) -> Vec<String> {
    let page = store
        .read_records(s, "events", 0, 1000, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    page.records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.data.get()).unwrap();
            v["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

const PROCESS: &str = "document.process";

fn document(account: AccountId, id: DocumentId, sha: &str) -> (Document, Job) {
    let now = Timestamp::now();
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
        kind: PROCESS.into(),
        input: Some(json!({ "documentId": id.to_string() })),
        reuse: false,
        output_key: None,
        max_attempts: None,
    }
    .validate(account, now)
    .unwrap()
    .0;
    (doc, job)
}

/// Uploads as the service does; returns what the store offered for reuse.
async fn upload(
    store: &Arc<dyn Store>,
    account: AccountId,
    s: SessionId,
    id: DocumentId,
    sha: &str,
    reuse: Option<DocumentReuse>,
) -> Result<Option<(Document, Job, Option<DocumentId>)>, StoreError> {
    let (doc, job) = document(account, id, sha);
    let offered = Arc::new(Mutex::new(None));
    let seen = offered.clone();
    let out = store
        .create_document(
            account,
            &SessionRef::Id(s),
            DocumentUpload {
                document: doc,
                content: b"hello".to_vec(),
                job,
                reuse,
            },
            Box::new(
                move |doc: &mut Document, job: &mut Job, _s: &Session, prev: Option<&Document>| {
                    let now = Timestamp::now();
                    doc.job_id = Some(job.id);
                    *seen.lock().unwrap() = prev.map(|p| p.id);
                    let mut events = vec![doc.event(DocumentEventKind::Uploaded)];
                    let Some(prev) = prev else {
                        events.push(job.created_event());
                        return Ok(DocumentDecision {
                            events,
                            copy_chunks_from: None,
                        });
                    };
                    doc.status = DocumentStatus::Ready;
                    doc.chunk_count = prev.chunk_count;
                    doc.token_count = prev.token_count;
                    job.succeed_reused(prev.job_id, json!({"reused": true}), now);
                    events.push(job.created_event());
                    Ok(DocumentDecision {
                        events,
                        copy_chunks_from: Some(prev.id),
                    })
                },
            ),
            None,
        )
        .await?;
    let offered = *offered.lock().unwrap();
    Ok(out.map(|(d, j)| (d, j, offered)))
}

fn chunk(index: i64, content: &str) -> NewChunk {
    NewChunk {
        index,
        content: content.into(),
        token_count: 4,
        char_count: content.chars().count() as i64,
        metadata: json!({"z": index, "a": "x"}),
    }
}

pub async fn documents_lifecycle_search_reuse_and_delete(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let other = account(&store).await;
    let s = session(&store, acc).await;
    let s2 = session(&store, acc).await;
    let id = DocumentId::random();
    let (doc, job, offered) = upload(&store, acc, s.id, id, "sha-1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offered, None);
    assert_eq!(doc.session_id, s.id);
    assert_eq!(doc.job_id, Some(job.id));
    assert_eq!(
        store.get_document(s.id, id).await.unwrap(),
        Some(doc.clone())
    );
    assert_eq!(store.get_document(s2.id, id).await.unwrap(), None);
    assert_eq!(
        store.find_document(acc, id).await.unwrap(),
        Some(doc.clone())
    );
    assert_eq!(store.find_document(other, id).await.unwrap(), None);
    assert_eq!(store.list_documents(s.id).await.unwrap(), vec![doc.clone()]);
    assert_eq!(
        store.document_content(id).await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(store.get_job(acc, job.id).await.unwrap(), Some(job.clone()));
    assert!(
        upload(
            &store,
            acc,
            SessionId::random(),
            DocumentId::random(),
            "x",
            None
        )
        .await
        .unwrap()
        .is_none(),
        "no such session"
    );

    // The server's processor claims it across accounts and finishes it.
    let (claimed, _) = store
        .claim_job(
            None,
            &[PROCESS.to_owned()],
            Box::new(|j: &mut Job, _s: &mut Session| {
                Ok(vec![j.claim(Some("p".into()), 60, Timestamp::now())])
            }),
        )
        .await
        .unwrap()
        .expect("the processing job");
    assert_eq!(claimed.id, job.id);
    let lease = claimed.lease_id.unwrap();
    let chunks = vec![
        chunk(0, "The quick brown fox"),
        chunk(1, "jumps over the lazy dog"),
        chunk(2, "quick thinking wins"),
    ];
    let (ready, done) = store
        .finish_document(
            acc,
            id,
            DocumentOutcome::Ready(chunks.clone()),
            Box::new(move |d: &mut Document, j: &mut Job, s: &mut Session| {
                let now = Timestamp::now();
                d.updated_at = now;
                let mut events = j.complete(s, lease, json!({"chunkCount": d.chunk_count}), now)?;
                events.push(d.event(DocumentEventKind::Ready));
                Ok(events)
            }),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.status, DocumentStatus::Ready);
    assert_eq!((ready.chunk_count, ready.token_count), (3, 12));
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        store.get_document(s.id, id).await.unwrap(),
        Some(ready.clone())
    );
    let stored = store.list_chunks(id).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|c| (c.index, c.content.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (0, "The quick brown fox"),
            (1, "jumps over the lazy dog"),
            (2, "quick thinking wins")
        ]
    );
    assert_eq!(
        serde_json::to_string(&stored[2].metadata).unwrap(),
        r#"{"z":2,"a":"x"}"#
    );
    assert_eq!(stored[1].char_count, 23);

    // Search: every word must appear; best first; snippets mark the matches.
    let hits = store.search_chunks(s.id, "quick", 10).await.unwrap();
    let mut found: Vec<i64> = hits.iter().map(|h| h.index).collect();
    found.sort();
    assert_eq!(found, vec![0, 2]);
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );
    assert!(hits.iter().all(|h| h.document_id == id && h.score > 0.0));
    let fox = store.search_chunks(s.id, "QUICK fox", 10).await.unwrap();
    assert_eq!(fox.len(), 1);
    assert_eq!(fox[0].index, 0);
    assert_eq!(fox[0].snippet, "The «quick» brown «fox»");
    assert_eq!(fox[0].chunk_id, stored[0].id);
    assert!(
        store
            .search_chunks(s.id, "fox OR cat", 10)
            .await
            .unwrap()
            .is_empty(),
        "literal"
    );
    assert!(store
        .search_chunks(s.id, "   ", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .search_chunks(s.id, "\"quick", 10)
            .await
            .unwrap()
            .len()
            == 2
    );
    assert!(
        store
            .search_chunks(s2.id, "quick", 10)
            .await
            .unwrap()
            .is_empty(),
        "per session"
    );
    assert_eq!(
        store.search_chunks(s.id, "quick", 1).await.unwrap().len(),
        1
    );

    // Reuse: the same bytes and settings elsewhere in the account get the chunks copied.
    let past = Timestamp::now().plus_seconds(-3600);
    let reuse = |match_filename| {
        Some(DocumentReuse {
            since: past,
            match_filename,
        })
    };
    let copy_id = DocumentId::random();
    let (copy, copy_job, offered) = upload(&store, acc, s2.id, copy_id, "sha-1", reuse(true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offered, Some(id));
    assert_eq!(copy.status, DocumentStatus::Ready);
    assert_eq!(copy_job.status, JobStatus::Succeeded);
    let copied = store.list_chunks(copy_id).await.unwrap();
    assert_eq!(copied.len(), 3);
    assert!(copied.iter().all(|c| c.document_id == copy_id));
    assert!(copied
        .iter()
        .zip(&stored)
        .all(|(a, b)| a.content == b.content && a.id != b.id));
    assert_eq!(
        store.search_chunks(s2.id, "lazy", 10).await.unwrap().len(),
        1
    );
    let (_, _, offered) = upload(
        &store,
        acc,
        s2.id,
        DocumentId::random(),
        "sha-2",
        reuse(false),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(offered, None, "other bytes");
    let (_, _, offered) = upload(
        &store,
        other,
        session(&store, other).await.id,
        DocumentId::random(),
        "sha-1",
        reuse(false),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(offered, None, "another account");

    // Same id: replaced in its own session, refused in another.
    let (again, _, _) = upload(&store, acc, s2.id, copy_id, "sha-3", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status, DocumentStatus::Processing);
    assert!(
        store.list_chunks(copy_id).await.unwrap().is_empty(),
        "replaced"
    );
    assert_eq!(
        store
            .list_documents(s2.id)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.id == copy_id)
            .count(),
        1
    );
    let err = upload(&store, acc, s.id, copy_id, "sha-3", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::DOCUMENT_EXISTS));

    // Delete: the document and its chunks go, the event is recorded.
    let describe = || -> sessiond_store::DocumentDescribe {
        Box::new(|d: &Document| vec![d.event(DocumentEventKind::Deleted)])
    };
    assert!(
        store
            .delete_document(s2.id, id, describe(), None)
            .await
            .unwrap()
            .is_none(),
        "other session"
    );
    let (gone, n) = store
        .delete_document(s.id, id, describe(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((gone.id, n), (id, 3));
    assert!(store.get_document(s.id, id).await.unwrap().is_none());
    assert!(store.list_chunks(id).await.unwrap().is_empty());
    assert!(store.document_content(id).await.unwrap().is_none());
    assert!(store
        .search_chunks(s.id, "quick", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        event_kinds(&store, s.id).await,
        vec![
            "session.created",
            "document.uploaded",
            "job.queued",
            "job.running",
            "job.succeeded",
            "document.ready",
            "document.deleted"
        ]
    );
    // Deleting the session takes its documents along.
    store
        .delete_session(acc, &SessionRef::Id(s2.id))
        .await
        .unwrap()
        .unwrap();
    assert!(store.find_document(acc, copy_id).await.unwrap().is_none());
    assert!(store.list_chunks(copy_id).await.unwrap().is_empty());
}

fn new_chat(s: &Session, title: &str) -> Chat {
    NewChat {
        title: Some(title.into()),
        ..Default::default()
    }
    .validate()
    .unwrap()
    .into_chat(s.id, s.account_id, Timestamp::now())
}

pub async fn chats_create_messages_reads_and_delete(store: Arc<dyn Store>) {
    let acc = account(&store).await;
    let s = new_session(acc);
    let first = new_chat(&s, "first");
    let s = match store
        .insert_session_with_chat(s, Event::SessionCreated { version: 1 }, first.clone())
        .await
        .unwrap()
    {
        InsertSession::Inserted(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        store.list_chats(s.id, acc).await.unwrap(),
        vec![(first.clone(), None)]
    );
    let err = store
        .insert_session_with_chat(
            new_session(acc),
            Event::SessionCreated { version: 1 },
            first.clone(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::CHAT_EXISTS));

    let ok = || -> sessiond_store::SessionGuard { Box::new(|_| Ok(())) };
    let second = new_chat(&s, "second");
    assert_eq!(
        store
            .create_chat(acc, &SessionRef::Id(s.id), second.clone(), ok())
            .await
            .unwrap(),
        CreateChat::Created(second.clone())
    );
    assert_eq!(
        store
            .create_chat(acc, &SessionRef::Id(s.id), second.clone(), ok())
            .await
            .unwrap(),
        CreateChat::Existing(second.clone())
    );
    let elsewhere = session(&store, acc).await;
    assert_eq!(
        store
            .create_chat(acc, &SessionRef::Id(elsewhere.id), second.clone(), ok())
            .await
            .unwrap(),
        CreateChat::IdTaken
    );
    assert_eq!(
        store
            .create_chat(
                acc,
                &SessionRef::Id(SessionId::random()),
                new_chat(&s, "x"),
                ok()
            )
            .await
            .unwrap(),
        CreateChat::SessionNotFound
    );
    let refused = new_chat(&s, "refused");
    let err = store
        .create_chat(
            acc,
            &SessionRef::Id(s.id),
            refused.clone(),
            Box::new(|_| {
                Err(sessiond_core::Error::conflict(
                    codes::SESSION_CLOSED,
                    "closed",
                ))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(ref e) if e.code == codes::SESSION_CLOSED));
    assert!(store.get_chat(s.id, refused.id).await.unwrap().is_none());
    assert_eq!(
        store.get_chat(s.id, second.id).await.unwrap(),
        Some(second.clone())
    );
    assert!(store
        .get_chat(elsewhere.id, second.id)
        .await
        .unwrap()
        .is_none());

    // Messages: ordered, exactly once by id.
    let msg = |id: &str, role| NewMessage {
        id: id.into(),
        role,
        parts: json!([{"type": "text", "text": id, "a": 1}]),
    };
    let t1 = Timestamp::now();
    let (m1, dup) = store
        .append_message(s.id, first.id, msg("m1", Role::User), t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m1.seq, dup), (1, false));
    let (again, dup) = store
        .append_message(s.id, first.id, msg("m1", Role::User), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert!(dup);
    assert_eq!(again, m1);
    let t2 = Timestamp::from_millis(t1.millis() + 5);
    let (m2, _) = store
        .append_message(s.id, first.id, msg("m2", Role::Assistant), t2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m2.seq, 2);
    assert!(store
        .append_message(elsewhere.id, first.id, msg("m3", Role::User), t2)
        .await
        .unwrap()
        .is_none());
    let listed = store.list_messages(first.id).await.unwrap();
    assert_eq!(listed, vec![m1.clone(), m2.clone()]);
    assert_eq!(
        serde_json::to_string(&listed[0].parts).unwrap(),
        r#"[{"type":"text","text":"m1","a":1}]"#
    );
    let chat = store.get_chat(s.id, first.id).await.unwrap().unwrap();
    assert_eq!(chat.message_count, 2);
    assert_eq!(chat.last_assistant_message_at, Some(t2));
    assert!(chat.has_unread(None));

    // Read marks only move forward.
    assert!(store.mark_chat_read(s.id, first.id, acc, t2).await.unwrap());
    assert!(store.mark_chat_read(s.id, first.id, acc, t1).await.unwrap());
    assert!(!store
        .mark_chat_read(s.id, ChatId::random(), acc, t2)
        .await
        .unwrap());
    let chats = store.list_chats(s.id, acc).await.unwrap();
    assert_eq!(
        chats.iter().map(|(c, _)| c.id).collect::<Vec<_>>(),
        vec![first.id, second.id]
    );
    assert_eq!(chats[0].1, Some(t2));
    assert_eq!(chats[1].1, None);
    assert_eq!(
        store.list_chats(s.id, AccountId::random()).await.unwrap()[0].1,
        None
    );

    // Update: a change is written and recorded; no change writes nothing.
    let patch = |title: &str| ChatPatch {
        title: Some(title.into()),
        model_id: None,
    };
    let p = patch("renamed");
    let updated = store
        .update_chat(
            s.id,
            second.id,
            Box::new(move |c: &mut Chat| Ok(c.apply(p, Timestamp::now()))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.title, "renamed");
    assert_eq!(
        store.get_chat(s.id, second.id).await.unwrap(),
        Some(updated.clone())
    );
    let p = patch("renamed");
    assert_eq!(
        store
            .update_chat(
                s.id,
                second.id,
                Box::new(move |c: &mut Chat| Ok(c.apply(p, Timestamp::now())))
            )
            .await
            .unwrap(),
        Some(updated.clone())
    );
    assert!(store
        .update_chat(elsewhere.id, second.id, Box::new(|_c: &mut Chat| Ok(None)))
        .await
        .unwrap()
        .is_none());

    // Delete, unless the rule says no.
    let delete = || -> sessiond_store::ChatDelete {
        Box::new(|c: &Chat, n: i64| {
            if n <= 1 {
                Err(sessiond_core::Error::conflict(
                    codes::CHAT_EXISTS,
                    "the last chat",
                ))
            } else {
                Ok(vec![c.event("chat.deleted")])
            }
        })
    };
    let gone = store
        .delete_chat(s.id, first.id, delete())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.id, first.id);
    assert!(store.list_messages(first.id).await.unwrap().is_empty());
    assert!(store
        .delete_chat(s.id, first.id, delete())
        .await
        .unwrap()
        .is_none());
    assert!(
        store.delete_chat(s.id, second.id, delete()).await.is_err(),
        "the last one stays"
    );
    assert_eq!(
        event_kinds(&store, s.id).await,
        vec![
            "session.created",
            "chat.created",
            "chat.created",
            "chat.message",
            "chat.message",
            "chat.updated",
            "chat.deleted"
        ]
    );
    store
        .delete_session(acc, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .unwrap();
    assert!(store.list_chats(s.id, acc).await.unwrap().is_empty());
}
