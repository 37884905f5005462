//! User extended attributes (`user.*`) on a run's files: kept in the file's manifest entry,
//! set through the open file before close as `cp -a` and `rsync -X` do, seen by every mount;
//! `user.mltrack.*` stays computed and read-only, other namespaces are refused (`ENOTSUP`; an
//! ACL reads as none).

use crate::common;

use common::write::{copy_tree, rsync_would_change, sh};
use common::{Kind, TestStore, bytes, path_str};

fn user_attributes_are_kept_and_refusals_have_their_errno(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/x");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let f = run.join("outputs/model.bin");
    std::fs::write(&f, bytes(5, 10_000)).expect("write");
    let said = common::python(&format!(
        "import os, errno\n\
         p = {p:?}\n\
         os.setxattr(p, 'user.origin', b'hf://org/bert')\n\
         os.setxattr(p, 'user.empty', b'')\n\
         def err(f):\n    try:\n        f()\n        return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n\
         print(err(lambda: os.setxattr(p, 'user.mltrack.sha256', b'x')))\n\
         print(err(lambda: os.setxattr(p, 'trusted.x', b'x')))\n\
         print(err(lambda: os.setxattr(p, 'user.origin', b'y', os.XATTR_CREATE)))\n\
         print(err(lambda: os.setxattr(p, 'user.none', b'y', os.XATTR_REPLACE)))\n\
         print(err(lambda: os.setxattr(p, 'user.big', b'x' * 5000)))\n\
         print(err(lambda: os.removexattr(p, 'user.none')))\n\
         print(err(lambda: os.getxattr(p, 'security.selinux')))\n\
         print(err(lambda: os.getxattr(p, 'system.posix_acl_access')))\n\
         os.removexattr(p, 'user.empty')\n\
         print(sorted(os.listxattr(p)))\n\
         assert len(os.getxattr(p, 'user.mltrack.sha256')) == 64\n",
        p = path_str(&f),
    ));
    assert_eq!(
        said,
        "EPERM\nENOTSUP\nEEXIST\nENODATA\nENOSPC\nENODATA\nENOTSUP\nENODATA\n\
         ['user.origin']"
    );
    let e = &t.manifest("x")["files"]["outputs/model.bin"];
    assert_eq!(e["xattrs"]["user.origin"], "aGY6Ly9vcmcvYmVydA==", "{e}");
    // Another mount, and a rewrite of the file, keep them.
    std::fs::write(&f, b"rewritten").expect("rewrite");
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let seen = common::python(&format!(
        "import os\nprint(os.getxattr({p:?}, 'user.origin').decode())",
        p = path_str(&other.path("runs/by_project/p/x/outputs/model.bin")),
    ));
    assert_eq!(seen, "hf://org/bert");
}

/// `cp -a` and `rsync -aX` carry attributes into a run; a dry `rsync -n -aX` then finds
/// nothing to do.
#[test]
fn cp_a_and_rsync_ax_carry_attributes() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/ax");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let src = t.scratch().join("tree");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.bin"), bytes(6, 3000)).expect("write a");
    std::fs::write(src.join("sub/b.bin"), bytes(7, 70_000)).expect("write b");
    sh(
        "setfattr -n user.checksum -v sha256:abc a.bin && setfattr -n user.note -v 'two words' sub/b.bin",
        &src,
    );
    for (tool, dst) in [("cp", "outputs/cp"), ("rsync", "outputs/rsync")] {
        let dst = run.join(dst);
        copy_tree(tool, &src, &dst);
        let changes = rsync_would_change("-aX", &src, &dst);
        assert!(
            changes.is_empty(),
            "after {tool}, rsync would still change:\n{changes}"
        );
    }
}

both_backends!(user_attributes_are_kept_and_refusals_have_their_errno);
