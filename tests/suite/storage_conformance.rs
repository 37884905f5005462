//! One conformance suite for every storage backend: the in-memory twin, the local directory
//! and S3 (the in-process s3s-fs server through aws-sdk-s3). A backend that passes behaves
//! the same as the others for everything the domain relies on.

use crate::common;

use std::sync::Arc;

use bytes::Bytes;
use mltrack::storage::memory::MemoryStore;
use mltrack::storage::{Body, DynStore, PutMode, StorageError, list_all, list_children};

/// A backend for one test, with whatever must stay alive while it is used.
struct Backend {
    store: DynStore,
    _keep: Option<common::TestStore>,
}

fn backend(kind: &str) -> Backend {
    match kind {
        "memory" => Backend {
            store: Arc::new(MemoryStore::new()),
            _keep: None,
        },
        "local" => {
            let t = common::TestStore::new(common::Kind::Local);
            Backend {
                store: t.backend(),
                _keep: Some(t),
            }
        }
        _ => {
            let t = common::TestStore::new(common::Kind::S3);
            Backend {
                store: t.backend(),
                _keep: Some(t),
            }
        }
    }
}

fn bytes(s: &str) -> Body {
    Body::Bytes(Bytes::copy_from_slice(s.as_bytes()))
}

async fn put_get_and_ranges(store: DynStore) {
    store
        .put("a/b/c.txt", bytes("hello world"), PutMode::Overwrite)
        .await
        .unwrap();
    let got = store.get("a/b/c.txt", None).await.unwrap();
    assert_eq!(&got.data[..], b"hello world");
    assert_eq!(
        &store.get("a/b/c.txt", Some(6..11)).await.unwrap().data[..],
        b"world"
    );
    assert_eq!(
        &store.get("a/b/c.txt", Some(6..100)).await.unwrap().data[..],
        b"world",
        "ranges clamp at the end"
    );
    assert!(
        store
            .get("a/b/c.txt", Some(50..60))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    let head = store.head("a/b/c.txt").await.unwrap().unwrap();
    assert_eq!(head.size, 11);
    assert!(head.etag.is_some());
    assert!(store.head("a/b/missing").await.unwrap().is_none());
    assert!(matches!(
        store.get("a/b/missing", None).await,
        Err(StorageError::NotFound { .. })
    ));
    store
        .put("a/b/c.txt", bytes("replaced"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        &store.get("a/b/c.txt", None).await.unwrap().data[..],
        b"replaced"
    );
}

async fn conditional_writes(store: DynStore) {
    let first = store
        .put("m/run.json", bytes("v1"), PutMode::Create)
        .await
        .unwrap();
    assert!(matches!(
        store.put("m/run.json", bytes("v2"), PutMode::Create).await,
        Err(StorageError::AlreadyExists { .. })
    ));
    assert_eq!(
        &store.get("m/run.json", None).await.unwrap().data[..],
        b"v1",
        "a failed create changes nothing"
    );
    let etag = store.get("m/run.json", None).await.unwrap().etag.unwrap();
    assert_eq!(etag.trim_matches('"'), first.trim_matches('"'));
    let second = store
        .put("m/run.json", bytes("v2"), PutMode::Update(etag.clone()))
        .await
        .unwrap();
    assert!(matches!(
        store
            .put("m/run.json", bytes("v3"), PutMode::Update(etag))
            .await,
        Err(StorageError::PreconditionFailed { .. })
    ));
    assert_eq!(
        &store.get("m/run.json", None).await.unwrap().data[..],
        b"v2"
    );
    let current = store
        .head("m/run.json")
        .await
        .unwrap()
        .unwrap()
        .etag
        .unwrap();
    assert_eq!(current.trim_matches('"'), second.trim_matches('"'));
    assert!(matches!(
        store
            .put("m/none.json", bytes("x"), PutMode::Update(current))
            .await,
        Err(StorageError::PreconditionFailed { .. })
    ));
}

async fn listing(store: DynStore) {
    for k in [
        "runs/by_project/churn/r1/run.json",
        "runs/by_project/churn/r2/run.json",
        "runs/by_project/fraud/r3/run.json",
        "runs/flat/r4/run.json",
        "runsx",
    ] {
        store.put(k, bytes("{}"), PutMode::Overwrite).await.unwrap();
    }
    assert_eq!(
        list_children(store.as_ref(), "runs/by_project/")
            .await
            .unwrap(),
        vec!["churn", "fraud"]
    );
    assert_eq!(
        list_children(store.as_ref(), "runs/").await.unwrap(),
        vec!["by_project", "flat"]
    );
    let all = list_all(store.as_ref(), "runs/", false).await.unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "runs/by_project/churn/r1/run.json",
            "runs/by_project/churn/r2/run.json",
            "runs/by_project/fraud/r3/run.json",
            "runs/flat/r4/run.json"
        ]
    );
    assert!(all.prefixes.is_empty());
    let partial = list_all(store.as_ref(), "runs/by_project/ch", true)
        .await
        .unwrap();
    assert_eq!(partial.prefixes, vec!["runs/by_project/churn/"]);
    let top = list_all(store.as_ref(), "", true).await.unwrap();
    assert_eq!(
        top.prefixes,
        vec!["runs/"],
        "backend bookkeeping never shows in listings"
    );
    assert_eq!(
        top.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        vec!["runsx"]
    );
    assert!(
        list_all(store.as_ref(), "nothing/here/", true)
            .await
            .unwrap()
            .objects
            .is_empty()
    );
}

async fn deletes(store: DynStore) {
    store
        .put("d/x/1", bytes("1"), PutMode::Overwrite)
        .await
        .unwrap();
    store
        .put("d/y/2", bytes("2"), PutMode::Overwrite)
        .await
        .unwrap();
    store.delete("d/x/1").await.unwrap();
    store.delete("d/x/1").await.unwrap();
    assert!(store.head("d/x/1").await.unwrap().is_none());
    assert_eq!(
        list_children(store.as_ref(), "d/").await.unwrap(),
        vec!["y"],
        "an emptied prefix disappears"
    );
    store
        .put("d/x/1", bytes("again"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(&store.get("d/x/1", None).await.unwrap().data[..], b"again");
}

async fn large_files_stream(store: DynStore) {
    // Past the multipart threshold of the S3 backend, with a ragged last part.
    let dir = tempfile::tempdir().unwrap();
    let data = common::bytes(7, 20 * 1024 * 1024 + 4321);
    let path = dir.path().join("big");
    std::fs::write(&path, &data).unwrap();
    store
        .put("big/data.bin", Body::File(path.clone()), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        store.head("big/data.bin").await.unwrap().unwrap().size,
        data.len() as u64
    );
    let mid = 9 * 1024 * 1024;
    let got = store
        .get("big/data.bin", Some(mid..mid + 4096))
        .await
        .unwrap();
    assert_eq!(&got.data[..], &data[mid as usize..mid as usize + 4096]);
    let all = store.get("big/data.bin", None).await.unwrap();
    assert!(all.data[..] == data[..], "the whole object round-trips");
    assert!(matches!(
        store
            .put("big/data.bin", Body::File(path), PutMode::Create)
            .await,
        Err(StorageError::AlreadyExists { .. })
    ));
}

async fn one_create_wins(store: DynStore) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.put("race/key", bytes(&format!("writer {i}")), PutMode::Create)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one create wins");
    assert!(store.head("race/key").await.unwrap().is_some());
}

async fn hostile_keys_are_refused(store: DynStore) {
    for k in ["", "/abs", "a/../b", "a//b", "./a", "a/.."] {
        assert!(
            matches!(
                store.put(k, bytes("x"), PutMode::Overwrite).await,
                Err(StorageError::InvalidKey { .. })
            ),
            "{k:?}"
        );
        assert!(store.get(k, None).await.is_err());
    }
}

macro_rules! conformance {
    ($($name:ident),*) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn memory() { super::$name(super::backend("memory").store).await }
                #[tokio::test(flavor = "multi_thread")]
                async fn local() { let b = super::backend("local"); super::$name(b.store.clone()).await }
                #[tokio::test(flavor = "multi_thread")]
                async fn s3() { let b = super::backend("s3"); super::$name(b.store.clone()).await }
            }
        )*
    };
}

conformance!(
    put_get_and_ranges,
    conditional_writes,
    listing,
    deletes,
    large_files_stream,
    one_create_wins,
    hostile_keys_are_refused
);
