//! `mltrack mount` and `mltrack unmount`: starting the FUSE session, running it until it is
//! unmounted or signalled, and stopping it cleanly.
//!
//! Without `--foreground`, `mount` starts itself again in the background (a new session, output
//! to `<cache-dir>/mount.log`) and returns once the mount point is live, or with the daemon's
//! error if it is not within 30 seconds. SIGTERM and SIGINT unmount. Unmounting detaches the
//! mount (so the mount point is usable again at once); the daemon sees that and exits, which
//! closes its FUSE connection, so a reader in the middle of a file gets an error instead of
//! keeping the daemon alive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cache::{BlockCache, CacheDir};
use crate::config::Config;
use crate::fs::reader::Reader;
use crate::fs::{Tree, TreeOptions};
use crate::fuse::MltrackFs;
use crate::runs::Runs;

/// Dispatch threads: enough that parallel readers do not queue behind one slow GET.
const FUSE_THREADS: usize = 8;

pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub refresh: Duration,
    pub allow_other: bool,
    pub foreground: bool,
    pub read_only: bool,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Mounts and serves until unmounted.
pub async fn mount(config: &Config, runs: Runs, opts: MountOptions) -> Result<()> {
    let mountpoint = std::fs::canonicalize(&opts.mountpoint)
        .with_context(|| format!("mount point {} does not exist", opts.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    if is_mounted(&mountpoint) {
        bail!(
            "{} is already a mount point; unmount it first",
            mountpoint.display()
        );
    }
    if !opts.foreground {
        return spawn_background(config, &mountpoint);
    }
    let conditional = match runs.probe_conditional_writes().await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(
                store = %runs.data().backend().describe(),
                "the store ignores conditional writes: writers on different machines updating one run at once can lose entries"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not probe the store for conditional writes");
            false
        }
    };
    let metrics = match opts.metrics {
        Some(addr) => {
            let bound = crate::metrics::serve(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!(address = %bound, "serving Prometheus metrics");
            Some(bound.to_string())
        }
        None => None,
    };
    let runs = runs.caching(opts.refresh, conditional);
    runs.data().honours_create_if_absent(conditional);
    // Folds the manifest logs of the runs this mount writes, seconds after their last change.
    let compactor = tokio::spawn({
        let runs = runs.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = runs
                    .compact_written(crate::runs::COMPACT_QUIET, crate::runs::COMPACT_BOUND)
                    .await;
            }
        }
    });
    let cache = Arc::new(
        BlockCache::open(&config.cache_dir, config.cache_size)
            .with_context(|| format!("cannot open the cache in {}", config.cache_dir.display()))?,
    );
    let reader = Arc::new(Reader::new(runs.data().clone(), cache.clone()));
    let spool = cache.dir().spool().with_context(|| {
        format!(
            "cannot open the spool in {}",
            config.cache_dir.join("spool").display()
        )
    })?;
    let tree_opts = TreeOptions {
        refresh: opts.refresh,
        spool: Arc::new(spool),
        default_run_type: config.default_run_type,
        default_modes: config.default_storage_modes.clone(),
        read_only: opts.read_only,
        cache_dir: Some(config.cache_dir.clone()),
        metrics,
    };
    let tree = Arc::new(Tree::new(runs.clone(), tree_opts, Some(cache)));
    let offered = tree.offer_cached_objects();
    tracing::debug!(
        objects = offered,
        "cached objects a copy being written may match"
    );
    let fs = MltrackFs::new(tree, reader, tokio::runtime::Handle::current());

    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = vec![
        fuser::MountOption::FSName(format!("mltrack:{}", runs.data().backend().describe())),
        fuser::MountOption::Subtype("mltrack".into()),
        fuser::MountOption::NoAtime,
        fuser::MountOption::DefaultPermissions,
    ];
    if opts.read_only {
        fuse_config.mount_options.push(fuser::MountOption::RO);
    }
    if opts.allow_other {
        fuse_config.acl = fuser::SessionACL::All;
    }
    fuse_config.n_threads = Some(FUSE_THREADS);

    let mp = mountpoint.clone();
    // Mount first and serve after, so that from here on "not in the mount table" can only
    // mean that someone unmounted it.
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &mp, &fuse_config))
        .await
        .context("the FUSE mount failed")?
        .with_context(|| format!("cannot mount {}", mountpoint.display()))?;
    let session = tokio::task::spawn_blocking(move || session.run());
    tracing::info!(mountpoint = %mountpoint.display(), store = %runs.data().backend().describe(), "mounted");
    let served = serve(&mountpoint, session).await;
    compactor.abort();
    // What this mount wrote is folded into the manifests before it goes.
    match tokio::time::timeout(COMPACT_AT_UNMOUNT, runs.compact_written(Duration::ZERO, 0)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the manifest logs were not all compacted; readers still see every entry")
        }
        Err(_) => tracing::warn!(
            "compacting the manifest logs took too long; readers still see every entry"
        ),
    }
    served
}

/// How long an unmount waits for the manifest logs this mount wrote to be compacted.
const COMPACT_AT_UNMOUNT: Duration = Duration::from_secs(30);

/// Serves the mounted `session` until it ends, a signal asks to unmount, or someone unmounted.
async fn serve(
    mountpoint: &Path,
    session: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<()> {
    let mut session = std::pin::pin!(session);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = &mut session => return finished(r),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; unmounting"),
        _ = term.recv() => tracing::info!("terminated; unmounting"),
        _ = detached(mountpoint) => {
            // `mltrack unmount` or `umount -l`: files still open keep the FUSE connection
            // alive; returning ends the process, which closes it and fails their reads.
            tracing::info!("unmounted");
            return Ok(());
        }
    }
    unmount(mountpoint)?;
    match tokio::time::timeout(Duration::from_secs(5), &mut session).await {
        Ok(r) => finished(r),
        Err(_) => {
            tracing::info!("files were still open; exiting ends their reads");
            Ok(())
        }
    }
}

/// Resolves once `mountpoint`, which is mounted, is no longer mounted.
async fn detached(mountpoint: &Path) {
    while is_mounted(mountpoint) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finished(r: std::result::Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.context("the FUSE session failed")?
        .context("the FUSE session ended with an error")?;
    tracing::info!("unmounted");
    Ok(())
}

/// Starts `mltrack mount --foreground` detached and waits for the mount to appear.
fn spawn_background(config: &Config, mountpoint: &Path) -> Result<()> {
    // The log goes in the cache directory, opened as the cache is: nothing planted there is
    // followed (docs/SECURITY.md).
    let cache_dir = CacheDir::open(&config.cache_dir, true)
        .with_context(|| format!("cannot use the cache in {}", config.cache_dir.display()))?;
    let log_path = cache_dir.log_path();
    let log = cache_dir
        .open_log(crate::logcap::LOG_LIMIT / 4)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid in the child before exec only detaches it from our terminal session.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if is_mounted(mountpoint) {
            println!(
                "mounted {} (pid {}, log {})",
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let tail = cache_dir.read_log().unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| l.contains("error"))
                .unwrap_or("")
                .to_string();
            bail!("the mount daemon exited ({status}) before mounting: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} was not mounted within 30 seconds; see {}",
        mountpoint.display(),
        log_path.display()
    )
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mount_table().iter().any(|m| m.point == path)
}

/// The mount points of this node's mltrack mounts: `fuse.mltrack` through the mount helper;
/// mounted directly, the kernel shows `fuse` and the source the mount gave (`mltrack:<store>`).
pub fn mltrack_mounts() -> Vec<PathBuf> {
    mount_table()
        .into_iter()
        .filter(|m| {
            m.fstype == "fuse.mltrack" || (m.fstype == "fuse" && m.source.starts_with("mltrack:"))
        })
        .map(|m| m.point)
        .collect()
}

/// One line of /proc/self/mountinfo, as far as mltrack needs it.
struct Mounted {
    point: PathBuf,
    fstype: String,
    source: String,
}

fn mount_table() -> Vec<Mounted> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            // `<id> <parent> <dev> <root> <point> <options> [fields] - <fstype> <source> ...`
            let (left, right) = l.split_once(" - ")?;
            let mut after = right.split(' ');
            Some(Mounted {
                point: PathBuf::from(unescape(left.split(' ').nth(4)?)),
                fstype: after.next()?.to_string(),
                source: after.next()?.to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Detaches the mount; its daemon notices, exits, and so ends the reads of files still open.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    if !is_mounted(&path) {
        bail!("{} is not mounted", path.display());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let err = std::io::Error::last_os_error();
        // Not root: the setuid helper can unmount a FUSE mount we own.
        let status = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&path)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            bail!("cannot unmount {}: {err}", path.display());
        }
    }
    Ok(())
}
