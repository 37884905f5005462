//! The storage layer: bytes under keys, nothing about runs, hashes or FUSE.
//!
//! One small trait, [`ObjectStore`], with the operations every backend can do well: a ranged
//! get, a put with a [`PutMode`] (overwrite, create only if absent, replace only if the ETag
//! still matches), head, a paginated list with an optional `/` delimiter, and delete. Keys are
//! `/`-separated strings relative to the store root (`data/a3/<hash>/data.parquet`); the
//! backend maps them to files or to S3 keys under its prefix.
//!
//! Backends: [`local::LocalStore`] (the embedded default, a directory), [`s3::S3Store`]
//! (any S3-compatible server), [`memory::MemoryStore`] and [`faulty::FaultyStore`] for tests.
//! Every one of them runs the same conformance suite (`tests/suite/storage_conformance.rs`).

pub mod counted;
pub mod faulty;
pub mod local;
pub mod memory;
pub mod s3;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// A shared handle on a backend.
pub type DynStore = Arc<dyn ObjectStore>;

/// What a put may do to an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Create only if no object has the key (`If-None-Match: *`); else [`StorageError::AlreadyExists`].
    Create,
    /// Replace only if the current ETag is this one (`If-Match`); else
    /// [`StorageError::PreconditionFailed`].
    Update(String),
}

/// The bytes of a put: small values in memory, large ones streamed from a local file.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    File(PathBuf),
    /// A local file handed over: its owner never writes it again, so a store on its
    /// filesystem may take the file itself (a link) instead of a copy; any other store
    /// reads it as a `File`.
    Adopt(PathBuf),
}

/// What a head or a list says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key relative to the store root.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// The bytes of a get and the ETag of the version they came from.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub data: Bytes,
    pub etag: Option<String>,
}

/// One page of a listing. `prefixes` are the common prefixes (ending in `/`) when the listing
/// is delimited; `next` continues the listing when the backend paginates.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key} does not exist in the store")]
    NotFound { key: String },
    #[error("{key} already exists in the store")]
    AlreadyExists { key: String },
    #[error("{key} was changed by another writer")]
    PreconditionFailed { key: String },
    #[error("invalid key {key:?}")]
    InvalidKey { key: String },
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {key}{} failed: {message}", if store.is_empty() { String::new() } else { format!(" in {store}") })]
    Remote {
        /// Where the store is (`s3://bucket/prefix`), filled in by the backend's caller.
        store: String,
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StorageError {
    /// Names the store in a remote error's message.
    pub fn in_store(self, where_: &str) -> Self {
        match self {
            StorageError::Remote {
                op, key, message, ..
            } => StorageError::Remote {
                store: where_.to_string(),
                op,
                key,
                message,
            },
            other => other,
        }
    }

    /// True when the local disk is full (the caller may report `ENOSPC`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where this store is, for messages: a path or `s3://bucket/prefix`. Never credentials.
    fn describe(&self) -> String;

    /// True when each request is a round trip over the network (S3), so that two requests that
    /// do not depend on each other are worth sending together; false for a local directory,
    /// where a request costs no wait.
    fn is_remote(&self) -> bool {
        false
    }

    /// The bytes of `key`, or of `range` of it (clamped to the object's end).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult>;

    /// Stores `body` under `key` as `mode` allows; returns the new ETag.
    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String>;

    /// The object's size and ETag, or `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// One page of the keys starting with `prefix`. With `delimited`, keys with a further `/`
    /// after the prefix are folded into common prefixes.
    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> Result<ListPage>;

    /// Removes `key`; removing a key that does not exist is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Every object and common prefix under `prefix`, following pagination to the end.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str, delimited: bool) -> Result<ListPage> {
    let mut all = ListPage::default();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, delimited, token).await?;
        all.objects.extend(page.objects);
        all.prefixes.extend(page.prefixes);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(all),
        }
    }
}

/// The names directly under `prefix` (which ends in `/`): the last component of each common
/// prefix, without its trailing slash, sorted and each once, so that one name is found in
/// them with [`has_child`].
pub async fn list_children(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let page = list_all(store, prefix, true).await?;
    let mut names: Vec<String> = page
        .prefixes
        .iter()
        .filter_map(|p| p.strip_prefix(prefix))
        .map(|p| p.trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    // Every backend lists in key order; an S3 server that did not would break the search.
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// Whether `names`, as [`list_children`] gives them, hold `name`: a binary search, so that a
/// lookup in a directory of n names costs log n, not n.
pub fn has_child(names: &[String], name: &str) -> bool {
    names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
}

/// The names directly under prefixes, as [`list_children`] gives them, each kept for a while.
/// A mount lists a directory, then looks up each of its names: with this, that is one LIST
/// per directory and refresh interval, not one per name.
#[derive(Debug)]
pub struct Listings {
    ttl: std::time::Duration,
    kept: std::sync::Mutex<Kept>,
}

/// Listings by prefix, with when each was made.
type Kept = std::collections::HashMap<String, (std::time::Instant, std::sync::Arc<Vec<String>>)>;

impl Listings {
    pub fn new(ttl: std::time::Duration) -> Listings {
        Listings {
            ttl,
            kept: std::sync::Mutex::default(),
        }
    }

    /// The names under `prefix`: kept ones if younger than the time to live, else listed.
    pub async fn children(
        &self,
        store: &dyn ObjectStore,
        prefix: &str,
    ) -> Result<std::sync::Arc<Vec<String>>> {
        Ok(self.children_since(store, prefix).await?.1)
    }

    /// [`Listings::children`], with when the listing was started: it shows the store as it
    /// was at that moment or later.
    pub async fn children_since(
        &self,
        store: &dyn ObjectStore,
        prefix: &str,
    ) -> Result<(std::time::Instant, std::sync::Arc<Vec<String>>)> {
        if let Some((at, names)) = self.lock().get(prefix)
            && at.elapsed() < self.ttl
        {
            return Ok((*at, names.clone()));
        }
        let started = std::time::Instant::now();
        let names = std::sync::Arc::new(list_children(store, prefix).await?);
        self.lock()
            .insert(prefix.to_string(), (started, names.clone()));
        Ok((started, names))
    }

    /// When the kept listing of `prefix` was started, if one is kept.
    pub fn made_at(&self, prefix: &str) -> Option<std::time::Instant> {
        self.lock().get(prefix).map(|(at, _)| *at)
    }

    /// Forgets the listing of `prefix`.
    pub fn forget(&self, prefix: &str) {
        self.lock().remove(prefix);
    }

    /// Forgets every listing of a prefix that starts with `prefix`.
    pub fn forget_under(&self, prefix: &str) {
        self.lock().retain(|p, _| !p.starts_with(prefix));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The names directly under `prefix`: from `kept` if given (a mount's listings, kept for a
/// while), else listed now.
pub async fn children_kept(
    kept: Option<&Listings>,
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<std::sync::Arc<Vec<String>>> {
    match kept {
        Some(l) => l.children(store, prefix).await,
        None => Ok(std::sync::Arc::new(list_children(store, prefix).await?)),
    }
}

/// Checks that a key is a relative `/`-path with no empty, `.` or `..` components: keys are
/// built from validated names, so a bad one is a bug or a hostile listing, never followed.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
        })
    }
}
