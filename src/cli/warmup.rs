//! `mltrack warmup PATH_OR_RUN...`: fetches whole files into the node's cache through a mount,
//! so that training starts on a warm cache (docs/MOUNT.md, "Warming the cache").
//!
//! The mount does the fetching: the files are read through it, several files and ranges at
//! once, so every block is fetched by the daemon with its own credentials, verified, and kept
//! in the cache it reads from, and a read after the warmup makes no request. Before reading,
//! each file's object is looked up in the cache (`user.mltrack.cached`): what is cached
//! already is not read again, so a second warmup fetches nothing. What does not fit in the
//! cache is left out and said so. Pages read are dropped from the page cache as they go
//! (`POSIX_FADV_DONTNEED`): the node's cache is the disk, not memory.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use serde::Serialize;

use super::output::{Bar, print_json};
use super::status::{ask, xattr};
use crate::error::Error;
use crate::fs::status::CACHED_XATTR;
use crate::ids::RunId;
use crate::runs::manifest::Manifest;
use crate::units::human_size;

/// The bytes one job reads at a time: a large file is read by several jobs at once.
const CHUNK: u64 = 64 * 1024 * 1024;
const READ_SIZE: usize = 1024 * 1024;

/// A file to warm: where it is in the mount, its size, and what the cache had of it.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    size: u64,
    cached: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Files found under the arguments (links and files without an object are not counted).
    pub files: u64,
    /// Distinct objects among them.
    pub objects: u64,
    pub bytes: u64,
    /// Bytes the cache held already.
    pub cached_bytes: u64,
    /// Bytes fetched into the cache now.
    pub fetched_bytes: u64,
    /// Files left out because the cache cannot hold them with the rest.
    pub left_out: Vec<String>,
    pub left_out_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Files that could not be read, with why.
    pub errors: Vec<String>,
}

pub fn warmup(
    targets: &[String],
    mount: Option<&Path>,
    jobs: usize,
    json: bool,
) -> Result<ExitCode> {
    let mounts = crate::mount::mltrack_mounts();
    let mut files = Vec::new();
    let mut roots = Vec::new();
    for t in targets {
        let (root, dir) = locate(t, mount, &mounts)?;
        walk(&dir, &mut files).map_err(|e| Error::BadRequest(format!("{}: {e}", dir.display())))?;
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    let mut limit = u64::MAX;
    for root in &roots {
        let (_, status) = ask(root)?;
        limit = limit.min(status["cache"]["limit_bytes"].as_u64().unwrap_or(u64::MAX));
    }
    let mut report = Report {
        files: files.len() as u64,
        cache_limit_bytes: limit,
        ..Report::default()
    };
    // One read per object, in the order given; the set must fit in the cache as a whole.
    let mut seen = HashSet::new();
    let mut fetch = Vec::new();
    let mut kept = 0u64;
    for (hash, f) in files {
        if !seen.insert(hash) {
            continue;
        }
        report.objects += 1;
        report.bytes += f.size;
        if kept + f.size > limit {
            report.left_out.push(f.path.display().to_string());
            report.left_out_bytes += f.size;
            continue;
        }
        kept += f.size;
        report.cached_bytes += f.cached;
        if f.cached < f.size {
            fetch.push(f);
        }
    }
    if !report.left_out.is_empty() {
        eprintln!(
            "warning: {} of {} do not fit in the cache ({}) with the rest; warming what fits and leaving out {} files",
            human_size(report.left_out_bytes),
            human_size(report.bytes),
            human_size(limit),
            report.left_out.len()
        );
    }
    let to_fetch: u64 = fetch.iter().map(|f| f.size - f.cached).sum();
    let bar = Bar::new(to_fetch, json, "warming");
    let errors = read_all(&fetch, jobs.max(1), &bar);
    bar.finish();
    for f in &fetch {
        let now = cached(&f.path).unwrap_or(f.cached);
        report.fetched_bytes += now.saturating_sub(f.cached);
    }
    report.errors = errors;
    if json {
        print_json(&report);
    } else {
        println!(
            "{} files, {} objects, {}: {} fetched, {} were cached{}",
            report.files,
            report.objects,
            human_size(report.bytes),
            human_size(report.fetched_bytes),
            human_size(report.cached_bytes),
            if report.left_out.is_empty() {
                String::new()
            } else {
                format!(", {} left out", human_size(report.left_out_bytes))
            }
        );
        for e in &report.errors {
            eprintln!("error: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The mount and the directory (or file) in it that argument `t` names: a path in an mltrack
/// mount, or a run id (its `inputs/`, in `mount` or the one mount of this node).
fn locate(t: &str, mount: Option<&Path>, mounts: &[PathBuf]) -> Result<(PathBuf, PathBuf), Error> {
    let as_path = Path::new(t);
    if as_path.is_absolute() || t.contains('/') || as_path.exists() {
        let path = std::fs::canonicalize(as_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BadRequest(format!("{t} does not exist")),
            _ => Error::BadRequest(format!("{t}: {e}")),
        })?;
        let root = mounts
            .iter()
            .filter(|m| path.starts_with(m))
            .max_by_key(|m| m.as_os_str().len())
            .ok_or_else(|| Error::BadRequest(format!("{t} is not in an mltrack mount")))?;
        return Ok((root.clone(), path));
    }
    let run = RunId::parse("run id", t).map_err(|e| Error::BadRequest(e.to_string()))?;
    let candidates: Vec<PathBuf> = match mount {
        Some(m) => vec![
            std::fs::canonicalize(m)
                .map_err(|e| Error::NoSuchPath(format!("{}: {e}", m.display())))?,
        ],
        None => mounts.to_vec(),
    };
    if candidates.is_empty() {
        return Err(Error::BadRequest(format!(
            "{t} is not a path, and no mltrack mount is there to find run {t} in: mount the store first"
        )));
    }
    let mut found = Vec::new();
    for root in candidates {
        let manifest = root.join("manifests").join(format!("{run}.json"));
        let Ok(bytes) = std::fs::read(&manifest) else {
            continue;
        };
        let key = format!("manifests/{run}.json");
        let m = Manifest::parse(run.as_str(), &key, &bytes)?;
        let Some(mode) = m.storage_modes.first() else {
            continue;
        };
        let pointer = m.view_pointer_key(*mode)?;
        let dir = root
            .join(pointer.trim_end_matches("/run.json"))
            .join("inputs");
        found.push((root, dir));
    }
    // Two stores mounted on one node may both have a run of that id: which one is meant is
    // the user's to say, not the mount table's order.
    match found.len() {
        0 => Err(Error::RunNotFound(run)),
        1 => Ok(found.remove(0)),
        n => Err(Error::BadRequest(format!(
            "run {run} is in {n} mltrack mounts ({}): name one with --mount",
            found
                .iter()
                .map(|(root, _)| root.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The files under `path` (or `path` itself), with their object's hash; links are not
/// followed, and files without an object (being written, manifests) are passed over.
fn walk(path: &Path, out: &mut Vec<(String, File)>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for e in entries {
            walk(&e, out)?;
        }
    } else if meta.is_file() {
        let hash = xattr(path, "user.mltrack.sha256")?;
        let cached = cached(path);
        if let (Some(hash), Some(cached)) = (hash, cached) {
            out.push((
                String::from_utf8_lossy(&hash).into_owned(),
                File {
                    path: path.to_path_buf(),
                    size: meta.len(),
                    cached,
                },
            ));
        }
    }
    Ok(())
}

/// The bytes of the file's object the mount's cache holds.
fn cached(path: &Path) -> Option<u64> {
    let v = xattr(path, CACHED_XATTR).ok()??;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

/// Reads every file whole through the mount, `jobs` ranges at once; returns what failed.
fn read_all(files: &[File], jobs: usize, bar: &Bar) -> Vec<String> {
    let chunks: Vec<(usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| (0..f.size.div_ceil(CHUNK)).map(move |c| (i, c * CHUNK)))
        .collect();
    let next = AtomicUsize::new(0);
    // The first error of each file (its other ranges likely fail the same way).
    let errors = Mutex::new(BTreeMap::new());
    let progress = bar.progress();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(chunks.len()) {
            s.spawn(|| {
                let mut buf = vec![0u8; READ_SIZE];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(f, start)) = chunks.get(i) else {
                        break;
                    };
                    let file = &files[f];
                    let end = (start + CHUNK).min(file.size);
                    if let Err(e) = read_range(&file.path, start, end, &mut buf, &progress) {
                        let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
                        errors
                            .entry(f)
                            .or_insert_with(|| format!("{}: {e}", file.path.display()));
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.into_values().collect()
}

fn read_range(
    path: &Path,
    start: u64,
    end: u64,
    buf: &mut [u8],
    progress: &crate::cas::Progress,
) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let mut at = start;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = f.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        at += n as u64;
        progress(n as u64);
    }
    // SAFETY: posix_fadvise on a descriptor we own; advice only.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            start as libc::off_t,
            (end - start) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}
