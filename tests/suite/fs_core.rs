//! The filesystem core driven without FUSE, over the in-memory and fault-injecting stores:
//! lookups, listings, making a run, writing and committing files, renames and removals, other
//! writers' changes after the refresh interval, and a store that fails. It runs in
//! milliseconds; the mount tests check what only a kernel shows.

use std::sync::Arc;
use std::time::Duration;

use mltrack::cas::DataStore;
use mltrack::error::{Error, Kind};
use mltrack::fs::{FileType, Owner, ROOT_INO, SetAttr, Tree, TreeOptions};
use mltrack::ids::RunId;
use mltrack::runs::Runs;
use mltrack::runs::manifest::{RunType, StorageMode};
use mltrack::storage::DynStore;
use mltrack::storage::faulty::{FaultyStore, Op};
use mltrack::storage::memory::MemoryStore;
use mltrack::trusted::{Policy, TrustedDir};

struct Core {
    tree: Tree,
    runs: Runs,
    store: DynStore,
    _spool: tempfile::TempDir,
}

fn core_over(store: DynStore) -> Core {
    let spool = tempfile::tempdir().expect("spool dir");
    let dir = TrustedDir::open(&spool.path().join("spool"), Policy::Private, true, "")
        .expect("trusted spool");
    let runs = Runs::new(DataStore::new(store.clone()));
    let opts = TreeOptions {
        refresh: Duration::from_millis(200),
        spool: Arc::new(dir),
        default_run_type: RunType::Experiment,
        default_modes: vec![StorageMode::ByProject],
        read_only: false,
        cache_dir: None,
        metrics: None,
    };
    Core {
        tree: Tree::new(runs.clone(), opts, None),
        runs,
        store,
        _spool: spool,
    }
}

fn core() -> Core {
    core_over(Arc::new(MemoryStore::new()))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

impl Core {
    /// The inode at `path` (names separated by `/`), or `None` if some name is not there.
    async fn ino(&self, path: &str) -> Option<u64> {
        let mut ino = ROOT_INO;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            ino = self.tree.lookup(ino, name).await.expect("lookup")?.ino;
        }
        Some(ino)
    }

    async fn names(&self, path: &str) -> Vec<String> {
        let ino = self.ino(path).await.expect("directory exists");
        let mut names: Vec<String> = self
            .tree
            .readdir(ino)
            .await
            .expect("readdir")
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    /// `mkdir -p parent/name`: a project key is not there until a mkdir makes it.
    async fn mkdir(&self, parent: &str, name: &str) {
        let mut ino = ROOT_INO;
        for part in parent.split('/').filter(|n| !n.is_empty()) {
            ino = match self.tree.lookup(ino, part).await.expect("lookup") {
                Some(a) => a.ino,
                None => self.make(ino, part).await,
            };
        }
        self.make(ino, name).await;
    }

    async fn make(&self, parent: u64, name: &str) -> u64 {
        self.tree
            .mkdir(parent, name, 0o755, Owner::default())
            .await
            .expect("mkdir")
            .ino
    }

    /// Creates `dir/name`, writes `data` and closes it; the close's result.
    async fn write(&self, dir: &str, name: &str, data: &[u8]) -> Result<(), Error> {
        let parent = self.ino(dir).await.expect("parent exists");
        let (_, file) = self
            .tree
            .create(parent, name, 0o644, Owner::default())
            .await?;
        self.tree.write(&file, 0, data).await?;
        let committed = self.tree.commit(&file).await;
        self.tree.release(&file).await;
        committed
    }

    async fn files(&self, run: &str) -> Vec<(String, String)> {
        let run = RunId::parse("run id", run).expect("run id");
        let m = self.runs.load(&run).await.expect("manifest");
        m.0.files
            .iter()
            .map(|(p, e)| (p.to_string(), e.hash.to_string()))
            .collect()
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn the_tree_has_its_roots_and_every_view() {
    block_on(async {
        let c = core();
        assert_eq!(c.names("").await, ["data", "manifests", "runs"]);
        assert_eq!(
            c.names("runs").await,
            ["by_date", "by_model", "by_project", "by_type", "flat"]
        );
        assert!(c.ino("runs/nonsense").await.is_none());
    });
}

#[test]
fn mkdir_makes_a_run_and_a_closed_file_is_in_its_manifest() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "churn").await;
        c.mkdir("runs/by_project/churn", "core_r1").await;
        assert_eq!(
            c.names("runs/by_project/churn/core_r1").await,
            ["inputs", "outputs"]
        );
        c.write("runs/by_project/churn/core_r1/outputs", "a.bin", b"alpha")
            .await
            .expect("close");
        assert_eq!(
            c.files("core_r1").await,
            [("outputs/a.bin".to_string(), sha256_hex(b"alpha"))]
        );
        let h = sha256_hex(b"alpha");
        let key = format!("data/{}/{h}/used_by/core_r1", &h[..2]);
        assert!(c.store.head(&key).await.expect("head").is_some(), "marker");
        // The same run through another view it has not got: not there.
        assert!(c.ino("runs/flat/core_r1").await.is_none());
        let attr = c
            .tree
            .getattr(
                c.ino("runs/by_project/churn/core_r1/outputs/a.bin")
                    .await
                    .expect("file"),
            )
            .await
            .expect("getattr")
            .expect("attr");
        assert_eq!((attr.kind, attr.size), (FileType::File, 5));
    });
}

#[test]
fn rename_and_unlink_are_manifest_changes() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "p").await;
        c.mkdir("runs/by_project/p", "core_r2").await;
        let out = "runs/by_project/p/core_r2/outputs";
        c.write(out, "a", b"one").await.expect("close a");
        c.write(out, "b", b"two").await.expect("close b");
        let dir = c.ino(out).await.expect("outputs");
        c.tree
            .rename(dir, "a", dir, "c", false)
            .await
            .expect("rename");
        c.tree.unlink(dir, "b").await.expect("unlink");
        assert_eq!(
            c.files("core_r2").await,
            [("outputs/c".to_string(), sha256_hex(b"one"))]
        );
        assert_eq!(c.names(out).await, ["c"]);
        let gone = c.tree.unlink(dir, "b").await.expect_err("unlink twice");
        assert_eq!(gone.kind(), Kind::NotFound, "{gone}");
    });
}

/// A run's file has one inode in every view of its run, and keeps it when it or a directory
/// above it is renamed (the inode table derives paths from parents: docs/MOUNT.md).
#[test]
fn a_file_keeps_its_inode_in_every_view_and_through_renames() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "p").await;
        c.mkdir("runs/by_project/p", "core_r5").await;
        let run = RunId::parse("run id", "core_r5").expect("run id");
        c.runs
            .add_view(&run, StorageMode::Flat)
            .await
            .expect("add view");
        let (a, b) = ("runs/by_project/p/core_r5", "runs/flat/core_r5");
        c.mkdir(&format!("{a}/outputs"), "sub").await;
        c.write(&format!("{a}/outputs/sub"), "f", b"data")
            .await
            .expect("close f");
        let ino = c.ino(&format!("{a}/outputs/sub/f")).await.expect("f in a");
        assert_eq!(c.ino(&format!("{b}/outputs/sub/f")).await, Some(ino));

        let outputs = c.ino(&format!("{a}/outputs")).await.expect("outputs");
        c.tree
            .rename(outputs, "sub", outputs, "moved", false)
            .await
            .expect("rename the directory");
        assert_eq!(c.ino(&format!("{a}/outputs/sub")).await, None);
        assert_eq!(c.ino(&format!("{a}/outputs/moved/f")).await, Some(ino));
        assert_eq!(c.ino(&format!("{b}/outputs/moved/f")).await, Some(ino));
        let node = c.tree.node(ino).expect("node");
        assert_eq!(node.path, format!("{a}/outputs/moved/f"));

        let moved = c.ino(&format!("{b}/outputs/moved")).await.expect("moved");
        c.tree
            .rename(moved, "f", outputs, "g", false)
            .await
            .expect("rename the file");
        assert_eq!(c.ino(&format!("{a}/outputs/g")).await, Some(ino));
        assert_eq!(c.ino(&format!("{b}/outputs/g")).await, Some(ino));
        assert_eq!(c.ino(&format!("{b}/outputs/moved/f")).await, None);
        let attr = c.tree.getattr(ino).await.expect("getattr").expect("attr");
        assert_eq!(attr.size, 4);
        assert_eq!(
            c.files("core_r5").await,
            [("outputs/g".to_string(), sha256_hex(b"data"))]
        );

        // Removed, made again at the same path, then renamed: the rename finds it.
        let out = format!("{a}/outputs");
        c.tree.unlink(outputs, "g").await.expect("unlink g");
        c.write(&out, "g", b"again").await.expect("close g again");
        let g = c.ino(&format!("{out}/g")).await.expect("g again");
        c.tree
            .rename(outputs, "g", outputs, "h", false)
            .await
            .expect("rename g again");
        // The kernel keeps the renamed file's inode and asks for it by number.
        let attr = c.tree.getattr(g).await.expect("getattr").expect("attr");
        assert_eq!(attr.size, 5);
        assert_eq!(c.ino(&format!("{out}/h")).await, Some(g));
        assert_eq!(c.ino(&format!("{b}/outputs/h")).await, Some(g));
    });
}

#[test]
fn links_and_owners_are_manifest_entries() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "p").await;
        c.mkdir("runs/by_project/p", "core_l").await;
        let out = "runs/by_project/p/core_l/outputs";
        c.write(out, "step_1000", b"weights").await.expect("close");
        let dir = c.ino(out).await.expect("outputs");
        let link = c
            .tree
            .symlink(dir, "latest", "step_1000", Owner::default())
            .await
            .expect("symlink");
        assert_eq!(link.kind, FileType::Symlink);
        assert_eq!(
            c.tree.readlink(link.ino).await.expect("readlink"),
            "step_1000"
        );
        let again = c
            .tree
            .symlink(dir, "latest", "x", Owner::default())
            .await
            .expect_err("twice");
        assert_eq!(again.kind(), Kind::Exists, "{again}");
        let file = c.ino(&format!("{out}/step_1000")).await.expect("file");
        let change = SetAttr {
            uid: Some(1234),
            gid: Some(99),
            ..SetAttr::default()
        };
        let attr = c.tree.setattr(file, None, change).await.expect("chown");
        assert_eq!((attr.uid, attr.gid), (Some(1234), Some(99)));
        let run = RunId::parse("run id", "core_l").expect("id");
        let m = c.runs.load(&run).await.expect("manifest");
        let path = mltrack::ids::RelPath::parse("outputs/step_1000").expect("path");
        let entry = &m.0.files[&path];
        assert_eq!((entry.uid, entry.gid), (Some(1234), Some(99)));
        assert_eq!(m.0.links.len(), 1, "the link is not a file with data");
        c.tree
            .rename(dir, "latest", dir, "newest", false)
            .await
            .expect("mv link");
        c.tree.unlink(dir, "newest").await.expect("rm link");
        let m = c.runs.load(&run).await.expect("manifest");
        assert!(m.0.links.is_empty());
        assert_eq!(c.names(out).await, ["step_1000"]);
    });
}

#[test]
fn another_writers_run_appears_after_the_refresh() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "p").await;
        assert_eq!(c.names("runs/by_project/p").await, Vec::<String>::new());
        // Another process (the CLI, another node) makes a run in the same store.
        let other = Runs::new(DataStore::new(c.store.clone()));
        other
            .create(mltrack::runs::RunSpec {
                run_id: RunId::parse("run id", "core_r3").expect("id"),
                run_type: RunType::Experiment,
                project: Some(mltrack::ids::Name::parse("project", "p").expect("name")),
                model: None,
                storage_modes: vec![StorageMode::ByProject],
                tags: Default::default(),
            })
            .await
            .expect("create");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.names("runs/by_project/p").await, ["core_r3"]);
    });
}

#[test]
fn a_failing_store_fails_the_close_and_records_nothing() {
    block_on(async {
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let c = core_over(faulty.clone());
        c.mkdir("runs/by_project", "p").await;
        c.mkdir("runs/by_project/p", "core_r4").await;
        faulty.fail_after(Op::Put, 0);
        let out = "runs/by_project/p/core_r4/outputs";
        let e = c.write(out, "a", b"lost").await.expect_err("close fails");
        assert_eq!(e.kind(), Kind::Failed, "{e}");
        faulty.heal();
        assert!(c.files("core_r4").await.is_empty(), "nothing recorded");
        c.write(out, "a", b"kept").await.expect("close once healed");
        assert_eq!(c.files("core_r4").await.len(), 1);
    });
}

#[test]
fn each_refusal_has_its_own_kind() {
    block_on(async {
        let c = core();
        c.mkdir("runs/by_project", "p").await;
        c.mkdir("runs/by_project/p", "core_r5").await;
        let out = "runs/by_project/p/core_r5/outputs";
        c.write(out, "f", b"file").await.expect("close");
        let file = c.ino(&format!("{out}/f")).await.expect("file");
        let dir = c.ino(out).await.expect("dir");

        let e = c.tree.readdir(file).await.expect_err("readdir of a file");
        assert_eq!(e.kind(), Kind::NotDirectory, "{e}");
        let Err(e) = c.tree.open(dir).await else {
            panic!("a directory was opened as a file");
        };
        assert_eq!(e.kind(), Kind::IsDirectory, "{e}");
        let e = c.tree.readlink(file).await.expect_err("readlink of a file");
        assert_eq!(e.kind(), Kind::Invalid, "{e}");
        let e = c
            .tree
            .getattr(999_999)
            .await
            .expect_err("an inode never handed out");
        assert_eq!(e.kind(), Kind::Stale, "{e}");
        let e = c.tree.unlink(dir, "missing").await.expect_err("unlink");
        assert_eq!(e.kind(), Kind::NotFound, "{e}");
        assert_eq!(e.to_string(), format!("{out}/missing does not exist"));
    });
}
