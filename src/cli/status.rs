//! `mltrack status MOUNTPOINT`: asks a mount how it is doing (the virtual attribute
//! `user.mltrack.status` of its root, see [`crate::fs::status`]) and shows it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::error::Error;
use crate::fs::status::STATUS_XATTR;
use crate::units::human_size;

pub fn status(mountpoint: &Path, json: bool) -> Result<ExitCode> {
    let (root, status) = ask(mountpoint)?;
    if json {
        super::output::print_json(&status);
        return Ok(ExitCode::SUCCESS);
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let size = |v: &Value| human_size(n(v));
    let c = &status["counters"];
    println!(
        "mount      {} (pid {}, up {}s{})",
        root.display(),
        n(&status["pid"]),
        n(&c["uptime_seconds"]),
        if status["read_only"] == true {
            ", read-only"
        } else {
            ""
        }
    );
    println!("store      {}", status["store"].as_str().unwrap_or("?"));
    let cache = &status["cache"];
    println!(
        "cache      {}: {} of {}, {} objects",
        cache["dir"].as_str().unwrap_or("-"),
        size(&cache["used_bytes"]),
        size(&cache["limit_bytes"]),
        n(&cache["objects"])
    );
    if let Some(addr) = status["metrics"].as_str() {
        println!("metrics    http://{addr}/metrics");
    }
    let pending = status["pending_writes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "writes     {} pending, {} committing ({})",
        pending.len(),
        n(&c["commits_in_flight"]),
        size(&c["committing_bytes"])
    );
    for w in &pending {
        println!(
            "  {:<10} {}/{} {}",
            w["state"].as_str().unwrap_or("?"),
            w["run"].as_str().unwrap_or("?"),
            w["path"].as_str().unwrap_or("?"),
            size(&w["bytes"])
        );
    }
    let requests: Vec<String> = c["requests"]
        .as_object()
        .map(|ops| {
            ops.iter()
                .map(|(op, outcomes)| {
                    let total: u64 = outcomes.as_object().map_or(0, |o| o.values().map(n).sum());
                    match n(&outcomes["error"]) {
                        0 => format!("{op} {total}"),
                        e => format!("{op} {total} ({e} failed)"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    println!("requests   {}", listed(&requests));
    println!(
        "store i/o  {} read, {} written, {} retries",
        size(&c["store_bytes_read"]),
        size(&c["store_bytes_written"]),
        n(&c["retries"])
    );
    println!(
        "reads      {} from the store, {} from the cache; {} hits, {} misses",
        size(&c["read_bytes"]["store"]),
        size(&c["read_bytes"]["cache"]),
        n(&c["cache_hits"]),
        n(&c["cache_misses"])
    );
    let errors: Vec<String> = c["errors"]
        .as_object()
        .map(|e| e.iter().map(|(k, v)| format!("{k} {}", n(v))).collect())
        .unwrap_or_default();
    println!(
        "errors     {}{}",
        listed(&errors),
        match n(&c["verification_failures"]) {
            0 => String::new(),
            v => format!("; {v} blocks failed verification"),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The mount's root and its status, or a sentence saying why it cannot be had.
pub fn ask(mountpoint: &Path) -> Result<(std::path::PathBuf, Value), Error> {
    let root = std::fs::canonicalize(mountpoint)
        .map_err(|e| Error::BadRequest(format!("{}: {e}", mountpoint.display())))?;
    let not_a_mount = || {
        Error::BadRequest(format!(
            "{} is not an mltrack mount (mount one with `mltrack mount {}`)",
            root.display(),
            root.display()
        ))
    };
    if !crate::mount::is_mounted(&root) {
        return Err(not_a_mount());
    }
    let bytes = match xattr(&root, STATUS_XATTR) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(not_a_mount()),
        Err(e) => {
            return Err(Error::BadRequest(format!(
                "cannot ask the mount at {}: {e}",
                root.display()
            )));
        }
    };
    let status = serde_json::from_slice(&bytes).map_err(|e| {
        Error::BadRequest(format!(
            "the mount at {} answered something that is not its status: {e}",
            root.display()
        ))
    })?;
    Ok((root, status))
}

/// Extended attribute `name` of `path` (not following a final link), `None` if it has none.
pub fn xattr(path: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64 * 1024];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Items joined with commas, or `none`.
fn listed(items: &[String]) -> String {
    match items {
        [] => "none".to_string(),
        _ => items.join(", "),
    }
}
