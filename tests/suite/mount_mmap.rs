//! Shared writable `mmap` in a run, as dataset-preparation scripts and databases use it:
//! numpy `memmap`/`open_memmap` with `w+` on a new file and `r+` on a file closed long ago,
//! and SQLite in WAL mode (its `-shm` index is a shared mapping). What the mapping wrote is
//! committed when it is written back (msync, munmap, close), and another mount, acting as
//! another node, reads it.

use crate::common;

use std::path::Path;

use common::{Kind, TestStore, path_str, sha256_hex};

/// The bytes numpy writes for `arange(n, dtype=float32)` saved as `.npy` (header included),
/// made on local disk for comparison.
fn npy_on_local_disk(dir: &Path, n: usize) -> Vec<u8> {
    let p = dir.join("want.npy");
    common::python(&format!(
        "import numpy as np\nnp.save({p:?}, np.arange({n}, dtype='float32'))",
        p = path_str(&p)
    ));
    std::fs::read(&p).expect("read want.npy")
}

fn numpy_memmap_writes_are_committed_and_seen_by_another_mount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/mm");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let n = 1_000_000;
    // A new file: `open_memmap` writes the header, sizes the file, maps it and fills it.
    common::python(&format!(
        "import numpy as np\n\
         a = np.lib.format.open_memmap({p:?}, mode='w+', dtype='float32', shape=({n},))\n\
         a[:] = np.arange({n}, dtype='float32')\n\
         a.flush()\n\
         del a\n",
        p = path_str(&run.join("outputs/a.npy")),
    ));
    // A file closed long ago, changed in place through `r+`.
    std::fs::write(run.join("outputs/b.dat"), vec![0u8; 3_000_000]).expect("write b.dat");
    common::python(&format!(
        "import numpy as np\n\
         b = np.memmap({p:?}, mode='r+', dtype='uint8')\n\
         b[::7] = 5\n\
         del b\n",
        p = path_str(&run.join("outputs/b.dat")),
    ));
    let want_a = npy_on_local_disk(t.dir.path(), n);
    let mut want_b = vec![0u8; 3_000_000];
    for b in want_b.iter_mut().step_by(7) {
        *b = 5;
    }
    let files = &t.manifest("mm")["files"];
    assert_eq!(files["outputs/a.npy"]["hash"], sha256_hex(&want_a));
    assert_eq!(files["outputs/b.dat"]["hash"], sha256_hex(&want_b));

    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let seen = other.path("runs/by_project/p/mm/outputs");
    assert!(std::fs::read(seen.join("a.npy")).expect("read a.npy") == want_a);
    assert!(std::fs::read(seen.join("b.dat")).expect("read b.dat") == want_b);
    let ok = common::python(&format!(
        "import numpy as np\n\
         a = np.load({p:?}, mmap_mode='r')\n\
         print(bool((a == np.arange({n}, dtype='float32')).all()))\n",
        p = path_str(&seen.join("a.npy")),
    ));
    assert_eq!(ok, "True", "the other mount's memmap reads other values");
}

fn sqlite_in_wal_mode_works_in_a_run_and_is_read_from_another_mount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/db");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let db = run.join("outputs/trials.db");
    let mode = common::python(&format!(
        "import sqlite3\n\
         db = sqlite3.connect({p:?})\n\
         print(db.execute('pragma journal_mode=wal').fetchone()[0])\n\
         db.execute('create table t (i integer primary key, v text)')\n\
         for i in range(300):\n    db.execute('insert into t (v) values (?)', ('trial %d' % i,))\n    db.commit()\n\
         db.close()\n",
        p = path_str(&db),
    ));
    assert_eq!(mode, "wal");
    // A WAL database made on local disk and copied in, as an optuna or mlflow database is.
    let local = t.dir.path().join("local.db");
    common::python(&format!(
        "import sqlite3\n\
         db = sqlite3.connect({p:?})\n\
         db.execute('pragma journal_mode=wal')\n\
         db.execute('create table s (x)')\n\
         db.executemany('insert into s values (?)', [(i,) for i in range(50)])\n\
         db.commit()\n\
         db.close()\n",
        p = path_str(&local),
    ));
    std::fs::copy(&local, run.join("outputs/copied.db")).expect("cp the database in");
    assert!(m.unmount().success());
    let log = std::fs::read_to_string(t.dir.path().join("mount.log")).expect("mount log");
    assert!(!log.contains("WARN"), "the log has warnings:\n{log}");

    // Read-only, as a node that only reads the trials would: SQLite still maps the `-shm`
    // index it makes beside the database.
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let seen = other.path("runs/by_project/p/db/outputs");
    let counted = common::python(&format!(
        "import sqlite3\n\
         db = sqlite3.connect('file:' + {a:?} + '?mode=ro', uri=True)\n\
         print(db.execute('select count(*), max(i) from t').fetchone())\n\
         db = sqlite3.connect('file:' + {b:?} + '?mode=ro', uri=True)\n\
         print(db.execute('select count(*), sum(x) from s').fetchone())\n",
        a = path_str(&seen.join("trials.db")),
        b = path_str(&seen.join("copied.db")),
    ));
    assert_eq!(counted, "(300, 300)\n(50, 1225)");
}

both_backends!(
    numpy_memmap_writes_are_committed_and_seen_by_another_mount,
    sqlite_in_wal_mode_works_in_a_run_and_is_read_from_another_mount,
);
