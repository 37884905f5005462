//! A wrapper that counts every request to a backend, by operation and outcome, and the bytes
//! it moves, in the process's metrics ([`crate::metrics`]). Every store the process opens is
//! wrapped in it, so the mount, the CLI and `status` count the same way. With
//! `RUST_LOG=mltrack::storage::counted=trace` it also logs each request (operation, key,
//! outcome, time taken): the sequence of requests a `close()` or a listing makes.

use std::ops::Range;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Body, DynStore, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError,
};
use crate::metrics::metrics;

#[derive(Debug)]
pub struct CountedStore {
    inner: DynStore,
}

impl CountedStore {
    pub fn new(inner: DynStore) -> Self {
        CountedStore { inner }
    }
}

/// How a request ended, as labelled.
fn outcome<T>(r: &Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(StorageError::NotFound { .. }) => "absent",
        Err(StorageError::AlreadyExists { .. } | StorageError::PreconditionFailed { .. }) => {
            "conflict"
        }
        Err(_) => "error",
    }
}

/// Counts a finished request, and traces it.
fn counted(op: &'static str, key: &str, outcome: &'static str, start: Instant) {
    metrics().request(op, outcome);
    tracing::trace!(
        op,
        key,
        outcome,
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
}

#[async_trait]
impl ObjectStore for CountedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        let start = Instant::now();
        let r = self.inner.get(key, range).await;
        counted("get", key, outcome(&r), start);
        if let Ok(g) = &r {
            metrics().store_bytes("get", g.data.len() as u64);
        }
        r
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        let len = match &body {
            Body::Bytes(b) => b.len() as u64,
            Body::File(p) | Body::Adopt(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
        };
        let start = Instant::now();
        let r = self.inner.put(key, body, mode).await;
        counted("put", key, outcome(&r), start);
        if r.is_ok() {
            metrics().store_bytes("put", len);
        }
        r
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let start = Instant::now();
        let r = self.inner.head(key).await;
        let label = match &r {
            Ok(None) => "absent",
            other => outcome(other),
        };
        counted("head", key, label, start);
        r
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> Result<ListPage> {
        let start = Instant::now();
        let r = self.inner.list_page(prefix, delimited, token).await;
        counted("list", prefix, outcome(&r), start);
        r
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.delete(key).await;
        counted("delete", key, outcome(&r), start);
        r
    }
}
