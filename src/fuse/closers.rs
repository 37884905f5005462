//! Whose `close()` of a written file commits it: the process that opened the descriptor, or
//! one that wrote through it, not a forked child closing the copy it inherited (see
//! [`Closers`] and docs/SEMANTICS.md, "A child's close commits only what it wrote").

use std::sync::Mutex;

/// Whose `close()` of a written handle commits it.
///
/// Every fork copies the parent's descriptors, and the child's close of its copy (at `exec`,
/// or when it exits) reaches `flush` like any other close. Committing then would record the
/// file as it stands, empty or half written, for other nodes to see; and a training script
/// that forks loader workers or runs tools while writing a large file would have it hashed
/// and uploaded again at every fork. So a close commits when it comes from the process
/// that opened the handle or from one that wrote through it. Writers are told apart by the
/// kernel's lock owner, which names a descriptor table: the threads of a process share one,
/// a forked child has its own. A close whose process cannot be told commits, to be safe; and
/// the last close of all (`release`) commits whatever is left.
#[derive(Default)]
pub(super) struct Closers {
    /// The process (thread group) that opened the handle, if known.
    opener: Option<u32>,
    wrote: Mutex<Writers>,
}

#[derive(Default)]
struct Writers {
    /// Lock owners of the writes through the handle.
    owners: Vec<u64>,
    /// Processes that changed the file by other requests (truncate, copy), which carry none.
    processes: Vec<u32>,
    /// More writers than are kept: every close commits.
    many: bool,
}

/// Writers kept per handle; past this, every close commits.
const MAX_WRITERS: usize = 32;

impl Closers {
    /// For a handle opened by thread `tid`.
    pub(super) fn opened_by(tid: u32) -> Closers {
        Closers {
            opener: process_of(tid),
            wrote: Mutex::default(),
        }
    }

    /// Records who wrote through the handle: the request's lock owner if it has one, else
    /// the process of thread `tid`.
    pub(super) fn wrote(&self, tid: u32, owner: Option<u64>) {
        let mut w = self.wrote.lock().unwrap_or_else(|p| p.into_inner());
        if w.many {
            return;
        }
        match owner {
            Some(o) if w.owners.contains(&o) => {}
            Some(o) if w.owners.len() < MAX_WRITERS => w.owners.push(o),
            Some(_) => w.many = true,
            None => match process_of(tid) {
                Some(p) if w.processes.contains(&p) => {}
                Some(p) if w.processes.len() < MAX_WRITERS => w.processes.push(p),
                // Too many, or a process that cannot be named: every close commits.
                _ => w.many = true,
            },
        }
    }

    /// Whether a close by thread `tid`, through descriptor table `owner`, commits.
    pub(super) fn commit_on_close(&self, tid: u32, owner: u64) -> bool {
        let w = self.wrote.lock().unwrap_or_else(|p| p.into_inner());
        if w.many || w.owners.contains(&owner) {
            return true;
        }
        match (self.opener, process_of(tid)) {
            (Some(opener), Some(p)) => p == opener || w.processes.contains(&p),
            _ => true,
        }
    }
}

/// The process (thread group) of the thread that made a request, from `/proc/<tid>/status`;
/// `None` if the kernel could not name it in this PID namespace (0) or it is gone.
fn process_of(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::Closers;

    fn me() -> u32 {
        std::process::id()
    }

    /// A child process that lives until it is killed: a process other than the opener.
    fn other_process() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    #[test]
    fn the_opener_commits_and_a_forked_child_does_not() {
        let mut child = other_process();
        let c = Closers::opened_by(me());
        assert!(c.commit_on_close(me(), 7));
        assert!(!c.commit_on_close(child.id(), 8));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_child_that_wrote_commits_by_its_lock_owner_or_its_process() {
        let mut child = other_process();
        let c = Closers::opened_by(me());
        c.wrote(child.id(), Some(8));
        assert!(
            c.commit_on_close(child.id(), 8),
            "the writer's own descriptor table"
        );
        let d = Closers::opened_by(me());
        d.wrote(child.id(), None);
        assert!(
            d.commit_on_close(child.id(), 9),
            "a writer known by its process"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_process_that_cannot_be_named_commits() {
        let mut child = other_process();
        // 0: the kernel could not name the thread in the daemon's PID namespace.
        assert!(Closers::opened_by(0).commit_on_close(child.id(), 1));
        assert!(Closers::opened_by(me()).commit_on_close(0, 1));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn past_the_kept_writers_every_close_commits() {
        let mut child = other_process();
        let c = Closers::opened_by(me());
        for owner in 0..=super::MAX_WRITERS as u64 {
            c.wrote(me(), Some(1000 + owner));
        }
        assert!(c.commit_on_close(child.id(), 5));
        let _ = child.kill();
        let _ = child.wait();
    }
}
