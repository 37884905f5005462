//! Inode numbers: allocated lazily, one per path, the first time a path is looked up or
//! listed, and kept for the life of the mount, so a path keeps its number. A run's file has
//! one inode whichever view it is reached through; a rename moves the inodes under it.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Kind, Node, Tree, lock, run_entry};
use crate::error::{Error, Result};
use crate::ids::{RelPath, RunId};

#[derive(Default)]
pub(super) struct Inodes {
    pub(super) by_ino: HashMap<u64, Arc<Node>>,
    pub(super) by_path: HashMap<String, u64>,
    /// A run's file has one inode whichever view it is reached through, so the kernel's
    /// caches of it agree across views.
    pub(super) by_file: HashMap<(RunId, RelPath), u64>,
    pub(super) next: u64,
}

impl Inodes {
    /// The table with the root alone.
    pub(super) fn new() -> Inodes {
        let mut inodes = Inodes {
            next: super::ROOT_INO + 1,
            ..Default::default()
        };
        let root = Arc::new(Node {
            ino: super::ROOT_INO,
            kind: Kind::Root,
            path: String::new(),
        });
        inodes.by_ino.insert(super::ROOT_INO, root);
        inodes.by_path.insert(String::new(), super::ROOT_INO);
        inodes
    }
}

impl Tree {
    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        lock(&self.inodes)
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or(Error::Stale(ino))
    }

    pub(super) fn intern(&self, parent: &Node, name: &str, kind: Kind) -> Arc<Node> {
        let path = if parent.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", parent.path)
        };
        let mut inodes = lock(&self.inodes);
        if let Some(ino) = inodes.by_path.get(&path)
            && let Some(node) = inodes.by_ino.get(ino)
            && node.kind == kind
        {
            return node.clone();
        }
        if let Some((run, file)) = run_entry(&kind)
            && let Some(ino) = inodes.by_file.get(&(run.clone(), file.clone())).copied()
            && let Some(node) = inodes.by_ino.get(&ino).cloned()
            && node.kind == kind
        {
            inodes.by_path.insert(path, ino);
            return node;
        }
        let ino = inodes.next;
        inodes.next += 1;
        if let Some((run, file)) = run_entry(&kind) {
            inodes.by_file.insert((run.clone(), file.clone()), ino);
        }
        let node = Arc::new(Node {
            ino,
            kind,
            path: path.clone(),
        });
        inodes.by_ino.insert(ino, node.clone());
        inodes.by_path.insert(path, ino);
        node
    }

    /// After a rename: every node of a run file or directory that `moved` maps to a new path
    /// in the run follows it, keeping its inode (as the kernel's dentries do), now reached
    /// under `to_node` (a directory of `to_run` at `to_prefix`).
    pub(super) fn rekey(
        &self,
        from_run: &RunId,
        to_run: &RunId,
        to_node: &Node,
        to_prefix: &str,
        moved: &dyn Fn(&str) -> Option<String>,
    ) {
        let base = to_node
            .path
            .strip_suffix(to_prefix)
            .unwrap_or(&to_node.path)
            .trim_end_matches('/')
            .to_string();
        let mut inodes = lock(&self.inodes);
        let changed: Vec<(Arc<Node>, Kind, String)> = inodes
            .by_ino
            .values()
            .filter_map(|n| {
                let (run, rel) = match &n.kind {
                    Kind::RunFile(r, p) | Kind::RunLink(r, p) => (r, p.as_str()),
                    Kind::RunSubdir(r, p) => (r, p.as_str()),
                    _ => return None,
                };
                if run != from_run {
                    return None;
                }
                let new = moved(rel)?;
                let kind = match &n.kind {
                    Kind::RunFile(..) => Kind::RunFile(to_run.clone(), RelPath::parse(&new).ok()?),
                    Kind::RunLink(..) => Kind::RunLink(to_run.clone(), RelPath::parse(&new).ok()?),
                    _ => Kind::RunSubdir(to_run.clone(), new.clone()),
                };
                Some((n.clone(), kind, format!("{base}/{new}")))
            })
            .collect();
        for (node, kind, path) in changed {
            if inodes.by_path.get(&node.path) == Some(&node.ino) {
                inodes.by_path.remove(&node.path);
            }
            if let Some((r, p)) = run_entry(&node.kind) {
                inodes.by_file.remove(&(r.clone(), p.clone()));
            }
            if let Some((r, p)) = run_entry(&kind) {
                inodes.by_file.insert((r.clone(), p.clone()), node.ino);
            }
            inodes.by_path.insert(path.clone(), node.ino);
            inodes.by_ino.insert(
                node.ino,
                Arc::new(Node {
                    ino: node.ino,
                    kind,
                    path,
                }),
            );
        }
    }
}
