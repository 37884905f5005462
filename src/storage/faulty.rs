//! A wrapper that injects failures into any backend, on command, for tests.
//!
//! Failures are armed by a countdown, as in mountpoint-s3's failure client, so that a test
//! says exactly which operation fails: "let the next 2 puts through, then fail every put".
//! It can also corrupt the bytes a get returns. Disarmed, it is a transparent pass-through.

use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Body, DynStore, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError,
};

/// The kinds of operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Head,
    List,
    Delete,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: Op,
    /// Operations of this kind still let through before failures start.
    pass: u64,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: DynStore,
    faults: Mutex<Vec<Fault>>,
    corrupt_gets: Mutex<bool>,
}

impl FaultyStore {
    pub fn new(inner: DynStore) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(Vec::new()),
            corrupt_gets: Mutex::new(false),
        }
    }

    /// After `pass` more operations of kind `op` succeed, every further one fails.
    pub fn fail_after(&self, op: Op, pass: u64) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Fault { op, pass });
    }

    /// Removes every armed fault: the store works again.
    pub fn heal(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.corrupt_gets.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// Flips the first byte of every get's data until healed.
    pub fn corrupt_gets(&self) {
        *self.corrupt_gets.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    fn check(&self, op: Op, key: &str) -> Result<()> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        for f in faults.iter_mut().filter(|f| f.op == op) {
            if f.pass == 0 {
                return Err(StorageError::Remote {
                    store: String::new(),
                    op: "injected fault on",
                    key: key.to_string(),
                    message: format!("{op:?} refused by the fault injector"),
                });
            }
            f.pass -= 1;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        self.check(Op::Get, key)?;
        let mut r = self.inner.get(key, range).await?;
        if *self.corrupt_gets.lock().unwrap_or_else(|p| p.into_inner()) && !r.data.is_empty() {
            let mut v = r.data.to_vec();
            v[0] ^= 0xff;
            r.data = v.into();
        }
        Ok(r)
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        self.check(Op::Put, key)?;
        self.inner.put(key, body, mode).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.check(Op::Head, key)?;
        self.inner.head(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> Result<ListPage> {
        self.check(Op::List, prefix)?;
        self.inner.list_page(prefix, delimited, token).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check(Op::Delete, key)?;
        self.inner.delete(key).await
    }
}
