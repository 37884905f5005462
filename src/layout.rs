//! The store's key layout (docs/STORE.md), in one place: every key mltrack reads or writes is
//! built here, and every key found in a listing is parsed back here.
//!
//! ```text
//! data/<h[0:2]>/<h>/data.<fmt>        data/<h[0:2]>/<h>/metadata.json
//! data/<h[0:2]>/<h>/used_by/<run_id>  data/<h[0:2]>/<h>/names/<name>
//! data/<h[0:2]>/<h>/chunks
//! runs/<mode>/<key>/<run_id>/run.json runs/flat/<run_id>/run.json
//! manifests/<run_id>.json            manifests/<run_id>.log/<seq, 20 digits>.json
//! ```

use crate::ids::Format;
use crate::ids::{Digest, Name, RunId};
use crate::runs::manifest::StorageMode;

pub const DATA: &str = "data/";
pub const MANIFESTS: &str = "manifests/";
pub const RUNS: &str = "runs/";
/// Where start-up probes write their scratch objects.
pub const PROBES: &str = ".mltrack-probe/";

/// `data/<hh>/`: the objects whose hashes start with `fan`.
pub fn fanout_prefix(fan: &str) -> String {
    format!("{DATA}{fan}/")
}

/// `data/<hh>/<h>/`: everything about one object.
pub fn object_prefix(h: &Digest) -> String {
    format!("{}{h}/", fanout_prefix(&h.fanout()))
}

/// `runs/<mode>/<key>/` (`runs/<mode>/` without a key): the view pointers of view `mode`.
pub fn view_prefix(mode: StorageMode, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("{RUNS}{mode}/{key}/"),
        None => format!("{RUNS}{mode}/"),
    }
}

pub fn data_key(h: &Digest, format: &Format) -> String {
    format!("{}data.{format}", object_prefix(h))
}

pub fn metadata_key(h: &Digest) -> String {
    format!("{}metadata.json", object_prefix(h))
}

/// The digests of the object's chunks, 32 bytes each, in order (objects of 1 MiB or more;
/// docs/STORE.md).
pub fn chunks_key(h: &Digest) -> String {
    format!("{}chunks", object_prefix(h))
}

pub fn used_by_prefix(h: &Digest) -> String {
    format!("{}used_by/", object_prefix(h))
}

pub fn used_by_key(h: &Digest, run: &RunId) -> String {
    format!("{}{run}", used_by_prefix(h))
}

pub fn names_prefix(h: &Digest) -> String {
    format!("{}names/", object_prefix(h))
}

pub fn name_key(h: &Digest, name: &Name) -> String {
    format!("{}{name}", names_prefix(h))
}

pub fn manifest_key(run: &RunId) -> String {
    format!("{MANIFESTS}{run}.json")
}

/// Where run `run`'s manifest log entries are: `manifests/<run>.log/`.
pub fn manifest_log_prefix(run: &RunId) -> String {
    format!("{MANIFESTS}{run}.log/")
}

/// Log entry `seq` of run `run`: the number in 20 digits, so that keys sort as numbers.
pub fn manifest_log_key(run: &RunId, seq: u64) -> String {
    format!("{}{seq:020}.json", manifest_log_prefix(run))
}

/// The number of a log entry key under `prefix` (a run's [`manifest_log_prefix`]), if it is
/// one.
pub fn seq_of_log_key(prefix: &str, key: &str) -> Option<u64> {
    let digits = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The run id of a key under `manifests/`, if it is one.
pub fn run_of_manifest_key(key: &str) -> Option<&str> {
    key.strip_prefix(MANIFESTS)?.strip_suffix(".json")
}

/// What a key under `data/` is, with the object's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataKey {
    Data(Digest, String),
    Metadata(Digest),
    UsedBy(Digest, String),
    Name(Digest, String),
    Chunks(Digest),
    Other(Digest),
}

/// Parses a key under `data/`; `None` for keys that are not in an object directory.
pub fn parse_data_key(key: &str) -> Option<DataKey> {
    let rest = key.strip_prefix(DATA)?;
    let mut parts = rest.splitn(3, '/');
    let fan = parts.next()?;
    let h: Digest = parts.next()?.parse().ok()?;
    if fan != h.fanout() {
        return None;
    }
    let tail = parts.next()?;
    Some(if tail == "metadata.json" {
        DataKey::Metadata(h)
    } else if tail == "chunks" {
        DataKey::Chunks(h)
    } else if let Some(fmt) = tail.strip_prefix("data.") {
        DataKey::Data(h, fmt.to_string())
    } else if let Some(run) = tail.strip_prefix("used_by/") {
        DataKey::UsedBy(h, run.to_string())
    } else if let Some(name) = tail.strip_prefix("names/") {
        DataKey::Name(h, name.to_string())
    } else {
        DataKey::Other(h)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let h: Digest = "ab".repeat(32).parse().unwrap();
        let fmt = Format::parse("parquet").unwrap();
        let run = Name::parse("run id", "r1").unwrap();
        assert_eq!(data_key(&h, &fmt), format!("data/ab/{h}/data.parquet"));
        assert_eq!(
            parse_data_key(&data_key(&h, &fmt)),
            Some(DataKey::Data(h, "parquet".into()))
        );
        assert_eq!(
            parse_data_key(&metadata_key(&h)),
            Some(DataKey::Metadata(h))
        );
        assert_eq!(
            parse_data_key(&used_by_key(&h, &run)),
            Some(DataKey::UsedBy(h, "r1".into()))
        );
        assert_eq!(parse_data_key(&chunks_key(&h)), Some(DataKey::Chunks(h)));
        assert_eq!(parse_data_key(&format!("data/cd/{h}/metadata.json")), None);
        assert_eq!(run_of_manifest_key(&manifest_key(&run)), Some("r1"));
        let prefix = manifest_log_prefix(&run);
        assert_eq!(
            manifest_log_key(&run, 42),
            "manifests/r1.log/00000000000000000042.json"
        );
        assert_eq!(
            seq_of_log_key(&prefix, &manifest_log_key(&run, 42)),
            Some(42)
        );
        assert_eq!(seq_of_log_key(&prefix, "manifests/r1.log/42.json"), None);
    }
}
