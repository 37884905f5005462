//! What exists on this mount only, before or besides the store: files open for writing
//! (listed and read at once, before their first commit) and view key directories made with
//! `mkdir` that have no run yet. Moves and removals carry these along; nothing here outlives
//! the mount. (Directories made in runs are in their manifest's `dirs`.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::spool::{Target, WriteFile};
use super::{Tree, lock};
use crate::ids::{RelPath, RunId};
use crate::runs::manifest::StorageMode;

#[derive(Default)]
pub(super) struct Pending {
    /// Files open for writing on this mount, shared by all their open handles.
    pub(super) writes: Mutex<HashMap<Target, Arc<WriteFile>>>,
    /// View key directories made on this mount that have no run yet.
    pub(super) keys: Mutex<BTreeSet<(StorageMode, String)>>,
}

impl Tree {
    /// The file open for writing at `path` of `run` on this mount, if any.
    pub(super) fn writing(&self, run: &RunId, path: &RelPath) -> Option<Arc<WriteFile>> {
        lock(&self.pending.writes)
            .get(&Target {
                run: run.clone(),
                path: path.clone(),
            })
            .cloned()
    }
}
