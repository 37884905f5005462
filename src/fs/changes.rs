//! What every change to the tree checks first: that it is inside a run (the rest of the tree
//! is read-only: `EROFS`, or `EPERM` where only runs can be made), that the mount is not
//! `--read-only`, and that the run exists. Everything else a change does is a manifest change
//! through `runs`, visible on this mount at once.

use super::{Attr, Kind, Node, Tree};
use crate::error::{Error, Result};
use crate::ids::{RelPath, RunId};
use crate::runs::Current;

/// A directory inside a run: the run and the directory's path in it (`""` for the run).
pub(super) fn run_dir(node: &Node) -> Option<(RunId, String)> {
    match &node.kind {
        Kind::RunDir(run) => Some((run.clone(), String::new())),
        Kind::RunSubdir(run, prefix) => Some((run.clone(), prefix.clone())),
        _ => None,
    }
}

pub(super) fn join(prefix: &str, name: &str) -> Result<RelPath> {
    let path = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    };
    Ok(RelPath::parse(&path)?)
}

impl Tree {
    pub(super) fn refuse_read_only(&self, node: &Node) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly(format!(
                "{} (mounted --read-only)",
                node.path
            )));
        }
        Ok(())
    }

    /// The error for a change attempted outside the runs.
    pub(super) fn not_here(node: &Node) -> Error {
        match &node.kind {
            Kind::Root | Kind::RunsRoot | Kind::ViewRoot(_) | Kind::ViewKey(..) => {
                Error::NotPermitted(format!(
                    "{}: only runs (directories) can be made here, and runs cannot be renamed",
                    if node.path.is_empty() {
                        "/"
                    } else {
                        &node.path
                    }
                ))
            }
            _ => Error::ReadOnly(if node.path.is_empty() {
                "/".into()
            } else {
                node.path.clone()
            }),
        }
    }

    pub(super) async fn require_manifest(&self, run: &RunId) -> Result<Current> {
        self.manifest(run)
            .await?
            .ok_or_else(|| Error::RunNotFound(run.clone()))
    }

    pub(super) async fn attr_or_gone(&self, node: &Node) -> Result<Attr> {
        self.attr_of(node)
            .await?
            .ok_or_else(|| Error::NoSuchPath(node.path.clone()))
    }
}
