//! Bounds the log a background mount writes to `<cache-dir>/mount.log` (its stderr). A mount
//! lives for days, and the log is never rotated by anyone else: when stderr is a regular file
//! that has grown past [`LOG_LIMIT`], it is cut back to nothing, with a line saying so, before
//! the next line is written. `mltrack mount` also keeps the previous log as `mount.log.1` when
//! it starts a daemon over a large one. A stderr that is a terminal, a pipe or journald is left
//! alone: whoever reads it bounds it.

use std::io::{self, Write};
use std::os::fd::AsFd;

use tracing_subscriber::fmt::MakeWriter;

/// Log directives added to the default level (unless `RUST_LOG` says otherwise): fuser warns
/// "Failed to umount filesystem" at every exit, because the mount was already detached by
/// `mltrack unmount`; the AWS credential chain warns, kilobytes at a time, about every source
/// it tried (the one sentence an operator needs is the error, docs/STORE.md).
pub const QUIET: &str = ",fuser::session=error,aws_config=error,aws_runtime=error";

/// The most a log file written as stderr grows to.
pub const LOG_LIMIT: u64 = 64 * 1024 * 1024;

/// stderr, cut back when it is a file past [`LOG_LIMIT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CappedStderr;

impl CappedStderr {
    fn cut_if_full() {
        let stderr = io::stderr();
        let Ok(st) = rustix::fs::fstat(stderr.as_fd()) else {
            return;
        };
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if regular
            && st.st_size as u64 > LOG_LIMIT
            && rustix::fs::ftruncate(stderr.as_fd(), 0).is_ok()
        {
            let _ = writeln!(
                stderr.lock(),
                "(the log passed {} MiB and was cut; earlier lines are gone)",
                LOG_LIMIT >> 20
            );
        }
    }
}

impl Write for CappedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Self::cut_if_full();
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for CappedStderr {
    type Writer = CappedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        CappedStderr
    }
}
