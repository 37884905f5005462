//! The `mltrack` binary: parses the command line, sets up logging and the async runtime,
//! runs the command, and turns a failure into one sentence on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use mltrack::cli::{self, args::Cli};

fn main() -> ExitCode {
    return_large_buffers_at_once();
    share_allocator_arenas();
    let cli = Cli::parse();
    let quiet = mltrack::logcap::QUIET;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(format!(
                "{}{quiet}",
                cli.log_level.as_deref().unwrap_or("warn")
            ))
        })
        .unwrap_or_else(|_| EnvFilter::new(format!("warn{quiet}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(mltrack::logcap::CappedStderr)
        .init();

    // A mount serves FUSE threads that each wait on the runtime, and needs worker threads. A
    // command runs one task that makes many small requests at once: on one thread, each
    // request's answer is read by the thread that waits for it, with no hand-over between
    // threads, and `run list` over 10,000 runs used 20 to 33% less CPU (docs/PERFORMANCE.md,
    // "Listing"). Its hashing and file reads run where they did: on threads of their own, on
    // tokio's blocking threads, or in the command's task.
    let mut builder = match cli.command {
        cli::args::Command::Mount { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // A FUSE session still blocked on an open file must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line: "a: b: c", skipping causes already in the message.
fn sentence(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// Has glibc give every allocation of 256 KiB or more its own mapping, returned to the system
/// when freed. By default glibc raises that threshold to the largest block freed so far, after
/// which the 1 MiB blocks a mount reads, hashes and uploads are carved from its heaps, which
/// keep the memory of blocks long gone: a cold 1 GiB read peaked at 139 MiB so, 91 MiB with
/// the threshold fixed (docs/PERFORMANCE.md, "Memory").
fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before any thread
    // of this process starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Has glibc keep at most [`ARENAS`] heaps, shared by all threads, unless `MALLOC_ARENA_MAX` in
/// the environment says otherwise. By default each thread that allocates may get a heap of its
/// own (up to 8 per core), and what one heap frees the others do not reuse: listing 20,000 runs
/// peaked at 131 MiB resident, about 65 MiB of it in use, and at 98 MiB with two heaps. Threads
/// take most small blocks from glibc's per-thread cache without touching a heap; sharing them
/// cost a fifth more futex calls when 8 writers copied small files, and no more CPU
/// (docs/PERFORMANCE.md, "Memory while listing, again").
fn share_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: as above: a tunable of the allocator, set before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// How many heaps glibc may keep: one per core of the 2-core nodes this was measured on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;
