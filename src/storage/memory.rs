//! An in-memory backend for tests: a sorted map from key to bytes with the same semantics as
//! the real backends (conditional writes, delimited listing, clamped ranges).
//!
//! It lives in the library rather than under `tests/` so that unit tests of the domain can use
//! it; nothing in production constructs one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    Body, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError, check_key,
};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    version: u64,
}

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    etag: String,
    modified: DateTime<Utc>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map consistent (every mutation is a single
        // insert or remove), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn meta(key: &str, o: &Object) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: o.data.len() as u64,
        etag: Some(o.etag.clone()),
        last_modified: Some(o.modified),
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        check_key(key)?;
        let state = self.lock();
        let o = state
            .objects
            .get(key)
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_string(),
            })?;
        let size = o.data.len() as u64;
        let r = range.unwrap_or(0..size);
        let start = r.start.min(size);
        let end = r.end.min(size).max(start);
        Ok(GetResult {
            data: o.data.slice(start as usize..end as usize),
            etag: Some(o.etag.clone()),
        })
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        check_key(key)?;
        let data = match body {
            Body::Bytes(b) => b,
            Body::File(p) | Body::Adopt(p) => Bytes::from(tokio::fs::read(&p).await.map_err(
                |source| StorageError::Io {
                    op: "read",
                    key: key.to_string(),
                    source,
                },
            )?),
        };
        let mut state = self.lock();
        match (&mode, state.objects.get(key)) {
            (PutMode::Create, Some(_)) => {
                return Err(StorageError::AlreadyExists {
                    key: key.to_string(),
                });
            }
            (PutMode::Update(expected), current) if current.map(|o| &o.etag) != Some(expected) => {
                return Err(StorageError::PreconditionFailed {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
        state.version += 1;
        let etag = format!("v{}", state.version);
        state.objects.insert(
            key.to_string(),
            Object {
                data,
                etag: etag.clone(),
                modified: Utc::now(),
            },
        );
        Ok(etag)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        Ok(self.lock().objects.get(key).map(|o| meta(key, o)))
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        _token: Option<String>,
    ) -> Result<ListPage> {
        let state = self.lock();
        let mut page = ListPage::default();
        for (key, o) in state.objects.range(prefix.to_string()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            match rest.find('/') {
                Some(i) if delimited => {
                    let p = format!("{prefix}{}", &rest[..=i]);
                    if page.prefixes.last() != Some(&p) {
                        page.prefixes.push(p);
                    }
                }
                _ => page.objects.push(meta(key, o)),
            }
        }
        Ok(page)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.lock().objects.remove(key);
        Ok(())
    }
}
