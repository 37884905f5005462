//! Configuration (README.md, "Configuration"): raw flags and environment variables become one validated
//! [`Config`] here, once. Flags win over environment variables, which win over defaults.
//! Nothing here opens a connection; [`open_store`] does, from a validated [`StoreUrl`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::runs::manifest::{RunType, StorageMode};
use crate::storage::DynStore;
use crate::storage::counted::CountedStore;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;

/// The default S3 prefix when a URL gives none.
pub const DEFAULT_PREFIX: &str = "mltrack";
pub const DEFAULT_CACHE_SIZE: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    /// `s3://bucket/prefix`, `file:///path` or a plain path (relative to the working directory).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(Error::BadRequest(format!(
                    "{s:?} does not name a valid S3 bucket"
                )));
            }
            if prefix.split('/').any(|c| c == "." || c == "..") {
                return Err(Error::BadRequest(format!(
                    "{s:?}: the prefix may not contain `.` or `..`"
                )));
            }
            let prefix = if prefix.is_empty() {
                DEFAULT_PREFIX
            } else {
                prefix
            };
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() || s.contains("://") && !s.starts_with("file://") {
            return Err(Error::BadRequest(format!(
                "{s:?} is not a store: use s3://bucket/prefix, file:///path or a path"
            )));
        }
        let path = Path::new(path);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(Error::io("."))?.join(path)
        };
        Ok(StoreUrl::Local(abs))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Local(p) => write!(f, "{}", p.display()),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreUrl,
    pub default_run_type: RunType,
    pub default_storage_modes: Vec<StorageMode>,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn home_dir(var: &str, fallback: &str) -> PathBuf {
    env(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = env("HOME").unwrap_or_else(|| "/".to_string());
        Path::new(&home).join(fallback)
    })
}

impl Config {
    /// Builds the configuration from an optional `--store` flag and the environment.
    pub fn from_env(store_flag: Option<&str>) -> Result<Config> {
        let store = match (store_flag, env("MLTRACK_STORE"), env("MLTRACK_S3_BUCKET")) {
            (Some(s), _, _) => StoreUrl::parse(s)?,
            (None, Some(s), _) => {
                StoreUrl::parse(&s).map_err(|e| Error::BadRequest(format!("MLTRACK_STORE: {e}")))?
            }
            (None, None, Some(b)) => StoreUrl::parse(&format!("s3://{b}/{DEFAULT_PREFIX}"))
                .map_err(|e| Error::BadRequest(format!("MLTRACK_S3_BUCKET: {e}")))?,
            (None, None, None) => {
                StoreUrl::Local(home_dir("XDG_DATA_HOME", ".local/share").join("mltrack/store"))
            }
        };
        let default_run_type = match env("MLTRACK_DEFAULT_RUN_TYPE") {
            Some(t) => t
                .parse()
                .map_err(|e| Error::BadRequest(format!("MLTRACK_DEFAULT_RUN_TYPE: {e}")))?,
            None => RunType::Experiment,
        };
        let default_storage_modes = match env("MLTRACK_DEFAULT_STORAGE_MODE") {
            Some(m) => StorageMode::parse_list(&m)
                .map_err(|e| Error::BadRequest(format!("MLTRACK_DEFAULT_STORAGE_MODE: {e}")))?,
            None => vec![StorageMode::ByProject],
        };
        let cache_dir = env("MLTRACK_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir("XDG_CACHE_HOME", ".cache").join("mltrack"));
        let cache_size = match env("MLTRACK_CACHE_SIZE") {
            Some(s) => crate::units::parse_size(&s)
                .map_err(|e| Error::BadRequest(format!("MLTRACK_CACHE_SIZE: {e}")))?,
            None => DEFAULT_CACHE_SIZE,
        };
        Ok(Config {
            store,
            default_run_type,
            default_storage_modes,
            cache_dir,
            cache_size,
        })
    }
}

/// Opens the backend a URL names.
pub async fn open_store(url: &StoreUrl) -> Result<DynStore> {
    let store: DynStore = match url {
        StoreUrl::Local(path) => Arc::new(LocalStore::open(path)?),
        StoreUrl::S3 { bucket, prefix } => Arc::new(S3Store::connect(bucket, prefix).await),
    };
    // Every request counted, for `mount --metrics` and `mltrack status`.
    Ok(Arc::new(CountedStore::new(store)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            StoreUrl::parse("s3://my-bucket/team/ml").unwrap(),
            StoreUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "team/ml".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("s3://my-bucket").unwrap(),
            StoreUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "mltrack".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("file:///srv/store").unwrap(),
            StoreUrl::Local("/srv/store".into())
        );
        assert_eq!(
            StoreUrl::parse("/srv/store").unwrap(),
            StoreUrl::Local("/srv/store".into())
        );
        for bad in ["s3://", "s3://A_B", "s3://bucket/../x", "http://host/x", ""] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
