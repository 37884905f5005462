//! Inode numbers: allocated lazily, one per path, the first time a path is looked up or
//! listed, and kept for the life of the mount, so a path keeps its number. A run's file has
//! one inode whichever view it is reached through; a rename moves the inodes under it.
//!
//! The table is built to stay small when a mount has listed many runs (docs/MOUNT.md,
//! "Inode numbers"): `ls -lR` of 100,000 runs interns more than a million nodes. A node stores
//! its parent's number, its own name and, for the nodes inside runs, only what it is (a run
//! directory, a directory, a file, a link); its path and its [`Kind`] (run id, path in the
//! run) are derived by walking up to the run directory when asked ([`Tree::node`]). The
//! indexes hold numbers only: a place `(parent, name)` is hashed from the node that has it,
//! and a run's file from its run and path, so no name or path is stored twice.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Kind, Node, ROOT_INO, Tree, lock, run_entry};
use crate::error::{Error, Result};
use crate::ids::{RelPath, RunId};
use crate::runs::manifest::parent_dir;

/// Deeper than any path of the tree can be; a walk up that goes further has met a loop.
const MAX_DEPTH: usize = 4096;

pub(super) struct Inodes {
    /// Node `ino` is `slots[ino - 1]`: numbers are handed out in order and never reused.
    slots: Vec<Slot>,
    /// Each node's own place, `(parent, name)` → number, hashed from the node itself.
    places: HashTable<u64>,
    /// Places where a run's file is reached besides its own: the same file seen through
    /// another view of its run. They win over `places` (the later one is current).
    aliases: HashMap<(u64, Box<str>), u64>,
    /// A run's file or link by its run and path in the run: (hash of both, number).
    files: HashTable<(u64, u64)>,
    hasher: DefaultHashBuilder,
}

struct Slot {
    parent: u64,
    name: Box<str>,
    kind: Stored,
}

/// What a node is. Nodes inside runs keep no run id or path: those follow from the parents,
/// so a directory's rename carries everything under it along.
enum Stored {
    /// A run directory: its name is the run id.
    RunDir,
    RunSubdir,
    RunFile,
    RunLink,
    /// Anything else (and anything whose kind its parents do not tell): kept whole.
    Whole(Box<Kind>),
}

impl Inodes {
    /// The table with the root alone.
    pub(super) fn new() -> Inodes {
        Inodes {
            slots: vec![Slot {
                parent: ROOT_INO,
                name: "".into(),
                kind: Stored::Whole(Box::new(Kind::Root)),
            }],
            places: HashTable::new(),
            aliases: HashMap::new(),
            files: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn slot(&self, ino: u64) -> Option<&Slot> {
        slot_in(&self.slots, ino)
    }

    fn slot_mut(&mut self, ino: u64) -> Option<&mut Slot> {
        self.slots.get_mut(index(ino)?)
    }

    fn place_hash(&self, parent: u64, name: &str) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    fn file_hash(&self, run: &RunId, path: &str) -> u64 {
        self.hasher.hash_one((run.as_str(), path))
    }

    /// The node's path in the tree: its parents' names down to its own.
    fn path(&self, ino: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let slot = self.slot(cur)?;
            names.push(&*slot.name);
            if names.len() > MAX_DEPTH {
                return None;
            }
            cur = slot.parent;
        }
        names.reverse();
        Some(names.join("/"))
    }

    /// What the node is; for nodes inside a run, found by walking up to the run directory.
    fn kind(&self, ino: u64) -> Option<Kind> {
        let slot = self.slot(ino)?;
        match &slot.kind {
            Stored::Whole(k) => return Some((**k).clone()),
            Stored::RunDir => return Some(Kind::RunDir(RunId::parse("run id", &slot.name).ok()?)),
            _ => {}
        }
        let (run, prefix) = self.run_dir(slot.parent)?;
        let rel = if prefix.is_empty() {
            slot.name.to_string()
        } else {
            format!("{prefix}/{}", slot.name)
        };
        Some(match slot.kind {
            Stored::RunSubdir => Kind::RunSubdir(run, rel),
            Stored::RunFile => Kind::RunFile(run, RelPath::parse(&rel).ok()?),
            _ => Kind::RunLink(run, RelPath::parse(&rel).ok()?),
        })
    }

    /// The run and the path in it of a directory node of a run (`""` for the run directory).
    fn run_dir(&self, ino: u64) -> Option<(RunId, String)> {
        let mut names = Vec::new();
        let mut cur = ino;
        let (run, base) = loop {
            let slot = self.slot(cur)?;
            match &slot.kind {
                Stored::RunSubdir => names.push(&*slot.name),
                Stored::RunDir => break (RunId::parse("run id", &slot.name).ok()?, None),
                Stored::Whole(k) => match &**k {
                    Kind::RunDir(run) => break (run.clone(), None),
                    Kind::RunSubdir(run, prefix) => break (run.clone(), Some(prefix.as_str())),
                    _ => return None,
                },
                Stored::RunFile | Stored::RunLink => return None,
            }
            if names.len() > MAX_DEPTH {
                return None;
            }
            cur = slot.parent;
        };
        names.extend(base);
        names.reverse();
        Some((run, names.join("/")))
    }

    /// The run id of the run a node is in (its run directory's name), found without building
    /// any path; `None` for nodes outside runs.
    fn run_of(&self, ino: u64) -> Option<&str> {
        let mut cur = ino;
        for _ in 0..MAX_DEPTH {
            let slot = self.slot(cur)?;
            match &slot.kind {
                Stored::RunDir => return Some(&slot.name),
                Stored::Whole(k) => {
                    return match &**k {
                        Kind::RunDir(run)
                        | Kind::RunSubdir(run, _)
                        | Kind::RunFile(run, _)
                        | Kind::RunLink(run, _) => Some(run.as_str()),
                        _ => None,
                    };
                }
                _ => cur = slot.parent,
            }
        }
        None
    }

    fn node(&self, ino: u64) -> Option<Arc<Node>> {
        self.node_of_kind(ino, self.kind(ino)?)
    }

    /// The node `ino`, whose kind the caller has derived already.
    fn node_of_kind(&self, ino: u64, kind: Kind) -> Option<Arc<Node>> {
        Some(Arc::new(Node {
            ino,
            kind,
            path: self.path(ino)?,
        }))
    }

    /// How a node of `kind` at `(parent, name)` is stored: without its run id and path when
    /// its parents give them.
    fn stored(&self, parent: u64, name: &str, kind: &Kind) -> Stored {
        let inside = |run: &RunId, rel: &str, stored: Stored| match self.run_dir(parent) {
            Some((r, prefix))
                if &r == run && parent_dir(rel) == prefix && rel_name(rel) == name =>
            {
                stored
            }
            _ => Stored::Whole(Box::new(kind.clone())),
        };
        match kind {
            Kind::RunDir(run) if run.as_str() == name => Stored::RunDir,
            Kind::RunSubdir(run, rel) => inside(run, rel, Stored::RunSubdir),
            Kind::RunFile(run, rel) => inside(run, rel.as_str(), Stored::RunFile),
            Kind::RunLink(run, rel) => inside(run, rel.as_str(), Stored::RunLink),
            _ => Stored::Whole(Box::new(kind.clone())),
        }
    }

    /// The node at `(parent, name)`, if one was interned there.
    fn at(&self, parent: u64, name: &str) -> Option<u64> {
        if !self.aliases.is_empty()
            && let Some(ino) = self.aliases.get(&(parent, Box::from(name)))
        {
            return Some(*ino);
        }
        let hash = self.place_hash(parent, name);
        let slots = &self.slots;
        self.places
            .find(hash, |&i| is_at(slots, i, parent, name))
            .copied()
    }

    /// The node of the run's file or link at `path`.
    fn file(&self, run: &RunId, path: &RelPath) -> Option<u64> {
        let hash = self.file_hash(run, path.as_str());
        self.files
            .find(hash, |&(h, ino)| {
                h == hash
                    && run_entry(&self.kind(ino).unwrap_or(Kind::Root))
                        .is_some_and(|(r, p)| r == run && p == path)
            })
            .map(|&(_, ino)| ino)
    }

    fn unfile(&mut self, run: &RunId, path: &RelPath) {
        if let Some(ino) = self.file(run, path) {
            self.unfile_node(run, path, ino);
        }
    }

    /// Takes node `ino`, filed as the run's file at `path`, out of the file index.
    fn unfile_node(&mut self, run: &RunId, path: &RelPath, ino: u64) {
        let hash = self.file_hash(run, path.as_str());
        if let Ok(entry) = self.files.find_entry(hash, |&(h, i)| h == hash && i == ino) {
            entry.remove();
        }
    }

    /// Whether node `ino` is the one filed as the run's file at `path`.
    fn is_filed(&self, run: &RunId, path: &RelPath, ino: u64) -> bool {
        let hash = self.file_hash(run, path.as_str());
        self.files
            .find(hash, |&(h, i)| h == hash && i == ino)
            .is_some()
    }

    fn refile(&mut self, run: &RunId, path: &RelPath, ino: u64) {
        self.unfile(run, path);
        let hash = self.file_hash(run, path.as_str());
        self.files.insert_unique(hash, (hash, ino), |&(h, _)| h);
    }

    /// Takes the node's own place out of `places` (before its parent or name changes).
    fn unplace(&mut self, ino: u64) {
        let Some(slot) = self.slot(ino) else {
            return;
        };
        let hash = self.place_hash(slot.parent, &slot.name);
        if let Ok(entry) = self.places.find_entry(hash, |&i| i == ino) {
            entry.remove();
        }
    }

    /// Makes `ino` the node at `(parent, name)`: its own place if it has that parent and name,
    /// an alias otherwise. Whatever was there before is no longer reached there.
    fn occupy(&mut self, parent: u64, name: &str, ino: u64) {
        self.aliases.remove(&(parent, Box::from(name)));
        let hash = self.place_hash(parent, name);
        let Inodes { slots, places, .. } = self;
        if let Ok(entry) = places.find_entry(hash, |&i| is_at(slots, i, parent, name)) {
            if *entry.get() == ino {
                return;
            }
            entry.remove();
        }
        if is_at(&self.slots, ino, parent, name) {
            let Inodes {
                slots,
                places,
                hasher,
                ..
            } = self;
            places.insert_unique(hash, ino, |&i| place_hash_of(hasher, slots, i));
        } else {
            self.aliases.insert((parent, Box::from(name)), ino);
        }
    }

    /// A new node of `kind` at `(parent, name)`.
    fn add(&mut self, parent: u64, name: &str, kind: &Kind) -> u64 {
        let stored = self.stored(parent, name, kind);
        self.slots.push(Slot {
            parent,
            name: name.into(),
            kind: stored,
        });
        let ino = self.slots.len() as u64;
        if let Some((run, file)) = run_entry(kind) {
            self.refile(run, file, ino);
        }
        self.occupy(parent, name, ino);
        ino
    }

    fn intern(&mut self, parent: &Node, name: &str, kind: Kind) -> Arc<Node> {
        if let Some(ino) = self.at(parent.ino, name)
            && self.kind(ino).as_ref() == Some(&kind)
        {
            // A file made again where one was removed: other views reach it again.
            if let Some((run, file)) = run_entry(&kind)
                && !self.is_filed(run, file, ino)
            {
                self.refile(run, file, ino);
            }
            if let Some(node) = self.node_of_kind(ino, kind.clone()) {
                return node;
            }
        }
        if let Some((run, file)) = run_entry(&kind)
            && let Some(ino) = self.file(run, file)
            && self.kind(ino).as_ref() == Some(&kind)
            && let Some(node) = self.node(ino)
        {
            self.occupy(parent.ino, name, ino);
            return node;
        }
        let ino = self.add(parent.ino, name, &kind);
        let path = if parent.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", parent.path)
        };
        Arc::new(Node { ino, kind, path })
    }

    /// The directory node of the run at `prefix` under its run directory `run_dir`, made if
    /// it was never looked up.
    fn dir_at(&mut self, run_dir: u64, run: &RunId, prefix: &str) -> u64 {
        let mut cur = run_dir;
        let mut rel = String::new();
        for part in prefix.split('/').filter(|p| !p.is_empty()) {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            let kind = Kind::RunSubdir(run.clone(), rel.clone());
            cur = match self.at(cur, part) {
                Some(ino) if self.kind(ino).as_ref() == Some(&kind) => ino,
                _ => self.add(cur, part, &kind),
            };
        }
        cur
    }

    /// Moves node `ino` to `(parent, name)` as `kind`, with the indexes kept right.
    fn replace(&mut self, ino: u64, old: &Kind, parent: u64, name: &str, kind: &Kind) {
        self.unplace(ino);
        if let Some((run, file)) = run_entry(old) {
            self.unfile_node(run, file, ino);
        }
        let stored = self.stored(parent, name, kind);
        if let Some(slot) = self.slot_mut(ino) {
            slot.parent = parent;
            slot.name = name.into();
            slot.kind = stored;
        }
        if let Some((run, file)) = run_entry(kind) {
            self.refile(run, file, ino);
        }
        self.occupy(parent, name, ino);
    }
}

fn rel_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Where node `ino` is in the slots: numbers start at 1.
fn index(ino: u64) -> Option<usize> {
    usize::try_from(ino.checked_sub(1)?).ok()
}

fn slot_in(slots: &[Slot], ino: u64) -> Option<&Slot> {
    slots.get(index(ino)?)
}

fn is_at(slots: &[Slot], ino: u64, parent: u64, name: &str) -> bool {
    slot_in(slots, ino).is_some_and(|s| s.parent == parent && &*s.name == name)
}

fn place_hash_of(hasher: &DefaultHashBuilder, slots: &[Slot], ino: u64) -> u64 {
    slot_in(slots, ino).map_or(0, |s| hasher.hash_one((s.parent, &*s.name)))
}

impl Tree {
    /// The node numbered `ino`, its path and kind derived from its parents; `Stale` for a
    /// number this mount never gave.
    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        lock(&self.inodes).node(ino).ok_or(Error::Stale(ino))
    }

    pub(super) fn intern(&self, parent: &Node, name: &str, kind: Kind) -> Arc<Node> {
        lock(&self.inodes).intern(parent, name, kind)
    }

    /// After `rm`: the run's file at `path` is no longer the one other views reach.
    pub(super) fn forget_file(&self, run: &RunId, path: &RelPath) {
        lock(&self.inodes).unfile(run, path);
    }

    /// After a rename of a file (or, with `dir`, a directory) from a path of one run to a path
    /// of another (or the same): its nodes keep their inodes (as the kernel's dentries do),
    /// now reached under `to_node` (the directory at `to_prefix` that the rename moved it
    /// into). Everything under a directory follows it; its files keep one inode in every view.
    pub(super) fn rekey(
        &self,
        (from_run, from): (&RunId, &str),
        (to_run, to): (&RunId, &str),
        to_node: &Node,
        to_prefix: &str,
        dir: bool,
    ) {
        let mut inodes = lock(&self.inodes);
        // The run directory of `to_node`'s view: up from it as deep as its prefix.
        let mut run_dir = to_node.ino;
        for _ in to_prefix.split('/').filter(|p| !p.is_empty()) {
            match inodes.slot(run_dir) {
                Some(slot) => run_dir = slot.parent,
                None => return,
            }
        }
        let moved = |rel: &str| {
            if rel == from {
                Some(to.to_string())
            } else {
                rel.strip_prefix(from)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| format!("{to}/{rest}"))
            }
        };
        // A file: its one node. A directory (or a file no index knows, which should not
        // happen): every node of the run at or under it, in every view.
        let file = RelPath::parse(from)
            .ok()
            .filter(|_| !dir)
            .and_then(|p| inodes.file(from_run, &p));
        let candidates: Vec<u64> = if let Some(ino) = file {
            vec![ino]
        } else {
            (ROOT_INO + 1..=inodes.slots.len() as u64)
                .filter(|&ino| {
                    !matches!(inodes.slot(ino).map(|s| &s.kind), Some(Stored::RunDir))
                        && inodes.run_of(ino) == Some(from_run.as_str())
                })
                .collect()
        };
        let mut changed: Vec<(u64, Kind, String)> = candidates
            .into_iter()
            .filter_map(|ino| {
                let kind = inodes.kind(ino)?;
                let rel = match &kind {
                    Kind::RunFile(run, p) | Kind::RunLink(run, p) if run == from_run => p.as_str(),
                    Kind::RunSubdir(run, p) if run == from_run => p.as_str(),
                    _ => return None,
                };
                let new = moved(rel)?;
                Some((ino, kind, new))
            })
            .collect();
        // Directories before what is in them, so each finds its parent already moved.
        changed.sort_by_key(|(_, _, new)| new.matches('/').count());
        for (ino, old, new) in changed {
            let kind = match &old {
                Kind::RunFile(..) => RelPath::parse(&new)
                    .ok()
                    .map(|p| Kind::RunFile(to_run.clone(), p)),
                Kind::RunLink(..) => RelPath::parse(&new)
                    .ok()
                    .map(|p| Kind::RunLink(to_run.clone(), p)),
                _ => Some(Kind::RunSubdir(to_run.clone(), new.clone())),
            };
            let Some(kind) = kind else { continue };
            let parent = inodes.dir_at(run_dir, to_run, parent_dir(&new));
            inodes.replace(ino, &old, parent, rel_name(&new), &kind);
        }
    }
}
