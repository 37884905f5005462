//! `mltrack._mltrack`: the Python face of the domain, as thin as the CLI. Each method checks
//! its arguments into domain types, calls the domain once on the store's own async runtime
//! with the GIL released, and hands back plain values (JSON text for manifests and entries,
//! which `mltrack/__init__.py` turns into `RunManifest` and `DataRef`). Conversions of
//! DataFrames, tables and arrays, the enums and the decorator live in Python
//! (`python/mltrack/__init__.py`); docs/PYTHON.md has the whole API and its decisions.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyFileExistsError, PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use mltrack::cache::dir::CacheDir;
use mltrack::cas::metadata::ObjectMetadata;
use mltrack::cas::{Progress, Stored};
use mltrack::config::{Config, open_store};
use mltrack::error::{Error, Kind};
use mltrack::ids::{Digest, Name, RelPath};
use mltrack::runs::manifest::{Manifest, RunType, StorageMode};
use mltrack::runs::{RunArgs, RunFilter, RunSpec, Runs, Source};
use mltrack::trusted::TrustedDir;

/// Blocks read from the store per GET by an `ObjectReader` (4 MiB), and kept for the next read.
const READER_BLOCKS: u64 = 4;

/// The error and its causes as one sentence, as the CLI prints it.
fn sentence(e: &Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The domain error as the Python exception the API promises (docs/PYTHON.md, "Errors").
fn to_py(e: impl Into<Error>) -> PyErr {
    let e: Error = e.into();
    let msg = sentence(&e);
    match &e {
        Error::AmbiguousPrefix { .. } => return PyValueError::new_err(msg),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            return PyFileNotFoundError::new_err(msg);
        }
        _ => {}
    }
    match e.kind() {
        Kind::Invalid | Kind::NameTooLong => PyValueError::new_err(msg),
        Kind::NotFound => PyFileNotFoundError::new_err(msg),
        Kind::Exists => PyFileExistsError::new_err(msg),
        _ => PyOSError::new_err(msg),
    }
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // Plain data with string keys always serializes.
    serde_json::to_string(v).unwrap_or_default()
}

/// The store, its runtime and its configuration, shared by the readers it opens.
struct Inner {
    rt: tokio::runtime::Runtime,
    runs: Runs,
    config: Config,
    /// Where bytes handed over from Python wait, anonymous, until stored: `spool/` of the
    /// cache directory, opened at the first use.
    spool: OnceLock<TrustedDir>,
}

impl Inner {
    /// Runs `f` on the store's runtime with the GIL released.
    fn block<T: Send>(
        &self,
        py: Python<'_>,
        f: impl Future<Output = Result<T, Error>> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.rt.block_on(f)).map_err(to_py)
    }

    fn spool(&self) -> Result<&TrustedDir, Error> {
        if let Some(s) = self.spool.get() {
            return Ok(s);
        }
        let dir = &self.config.cache_dir;
        let spool = CacheDir::open(dir, true)
            .and_then(|c| c.spool())
            .map_err(Error::io(dir))?;
        Ok(self.spool.get_or_init(|| spool))
    }

    /// Stores what `fill` writes. `hint` (default: `name`) is the name the data first arrives
    /// under, which detects a format without a signature by its extension.
    async fn put_written(
        &self,
        name: Option<&str>,
        hint: Option<&str>,
        named: bool,
        fill: impl FnOnce(&mut std::fs::File) -> Result<(), Error>,
    ) -> Result<String, Error> {
        let name = name.map(|n| Name::parse("name", n)).transpose()?;
        let hint = match hint {
            Some(h) => Some(Name::parse("name", h)?),
            None => name.clone(),
        };
        let stored = self
            .runs
            .data()
            .put_written(self.spool()?, hint.as_ref(), fill)
            .await?;
        self.named(stored, name.as_ref(), named).await
    }

    /// The metadata of the stored object that `text` (a hash or a unique prefix) names.
    async fn described(&self, text: &str) -> Result<ObjectMetadata, Error> {
        let data = self.runs.data();
        data.require(&data.resolve(text).await?).await
    }

    /// Writes the name marker when asked, and describes what was stored.
    async fn named(&self, s: Stored, name: Option<&Name>, named: bool) -> Result<String, Error> {
        if let (Some(n), true) = (name, named) {
            self.runs.data().add_name(&s.meta.hash, n).await?;
        }
        let m = &s.meta;
        Ok(json(&serde_json::json!({
            "hash": m.hash, "size": m.size, "format": m.format, "name": name, "new": s.new,
        })))
    }
}

/// An open mltrack store: a local directory or an S3 bucket.
#[pyclass(frozen, module = "mltrack._mltrack")]
struct Store {
    inner: Arc<Inner>,
}

fn parse_mode(s: &str) -> Result<StorageMode, Error> {
    s.parse()
}

#[pymethods]
impl Store {
    /// Opens the store `store` names (`s3://bucket/prefix`, `file:///path` or a path), else
    /// the one the environment names (`MLTRACK_STORE`, `MLTRACK_S3_BUCKET`), else the local
    /// default. `default_run_type` and `default_storage_modes` win over the environment.
    #[new]
    #[pyo3(signature = (store=None, default_run_type=None, default_storage_modes=None))]
    fn new(
        py: Python<'_>,
        store: Option<&str>,
        default_run_type: Option<&str>,
        default_storage_modes: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let mut config = Config::from_env(store).map_err(to_py)?;
        if let Some(t) = default_run_type {
            config.default_run_type = t.parse::<RunType>().map_err(to_py)?;
        }
        if let Some(modes) = default_storage_modes {
            let modes = modes
                .iter()
                .map(|m| parse_mode(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_py)?;
            if modes.is_empty() {
                return Err(PyValueError::new_err(
                    "default_storage_modes needs at least one storage mode",
                ));
            }
            config.default_storage_modes = modes;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(format!("cannot start the async runtime: {e}")))?;
        let backend = py
            .detach(|| rt.block_on(open_store(&config.store)))
            .map_err(to_py)?;
        let runs = Runs::new(mltrack::cas::DataStore::new(backend));
        Ok(Store {
            inner: Arc::new(Inner {
                rt,
                runs,
                config,
                spool: OnceLock::new(),
            }),
        })
    }

    /// The store's URL.
    #[getter]
    fn url(&self) -> String {
        self.inner.config.store.to_string()
    }

    #[getter]
    fn default_run_type(&self) -> &'static str {
        self.inner.config.default_run_type.as_str()
    }

    #[getter]
    fn default_storage_modes(&self) -> Vec<&'static str> {
        let modes = &self.inner.config.default_storage_modes;
        modes.iter().map(|m| m.as_str()).collect()
    }

    /// Stores the file at `path`; `name` (default: its file name) is recorded as a name
    /// marker when `named`. Returns JSON: hash, size, format, name, new.
    #[pyo3(signature = (path, name=None, named=true))]
    fn put_path(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        name: Option<String>,
        named: bool,
    ) -> PyResult<String> {
        let inner = &self.inner;
        inner.block(py, async {
            let name = mltrack::cas::name_for(&path, name.as_deref(), "give a name")?;
            let none: Progress = Arc::new(|_| {});
            let stored = inner.runs.data().put_file(&path, Some(&name), none).await?;
            inner.named(stored, Some(&name), named).await
        })
    }

    /// Stores `data` as it is; `name` is recorded as a name marker when `named`, and `hint`
    /// (default: `name`) helps detect the format by its extension. Returns JSON as `put_path`.
    #[pyo3(signature = (data, name=None, named=true, hint=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &[u8],
        name: Option<&str>,
        named: bool,
        hint: Option<&str>,
    ) -> PyResult<String> {
        let inner = &self.inner;
        inner.block(
            py,
            inner.put_written(name, hint, named, |f| {
                f.write_all(data).map_err(Error::io("spool file"))
            }),
        )
    }

    /// Stores the table in the Arrow IPC stream `ipc` as Parquet with mltrack's fixed writer
    /// options (the same table, the same bytes). Returns JSON as `put_bytes`.
    #[pyo3(signature = (ipc, name=None, named=true, hint=None))]
    fn put_table(
        &self,
        py: Python<'_>,
        ipc: &[u8],
        name: Option<&str>,
        named: bool,
        hint: Option<&str>,
    ) -> PyResult<String> {
        let inner = &self.inner;
        inner.block(
            py,
            inner.put_written(name, hint, named, |f| {
                mltrack::cas::tables::parquet_from_ipc(ipc, std::io::BufWriter::new(f))
            }),
        )
    }

    /// Creates a run. Returns its manifest as JSON.
    #[pyo3(signature = (run_id, run_type=None, project=None, model=None, storage_modes=vec![], tags=vec![]))]
    #[allow(clippy::too_many_arguments)]
    fn create_run(
        &self,
        py: Python<'_>,
        run_id: &str,
        run_type: Option<&str>,
        project: Option<&str>,
        model: Option<&str>,
        storage_modes: Vec<String>,
        tags: Vec<(String, String)>,
    ) -> PyResult<String> {
        let c = &self.inner.config;
        let args = RunArgs {
            run_id,
            run_type,
            project,
            model,
            storage_modes: &storage_modes,
            tags: tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        };
        let spec =
            RunSpec::parse(args, c.default_run_type, &c.default_storage_modes).map_err(to_py)?;
        let m = self.inner.block(py, self.inner.runs.create(spec))?;
        Ok(json(&m))
    }

    /// Records `path` of the run as the stored object `hash` (a reference: nothing is
    /// uploaded), then folds the run's log into its manifest, as the CLI does. Returns JSON:
    /// the entry and the run's manifest.
    fn record(&self, py: Python<'_>, run_id: &str, path: &str, hash: &str) -> PyResult<String> {
        let run = Name::parse("run id", run_id).map_err(to_py)?;
        let path = RelPath::parse(path).map_err(to_py)?;
        let h = hash.parse::<Digest>().map_err(to_py)?;
        let runs = &self.inner.runs;
        self.inner.block(py, async {
            let none: Progress = Arc::new(|_| {});
            let (entry, _) = runs
                .add_file(&run, path.clone(), Source::Hash(h), none)
                .await?;
            runs.compact(&run).await?;
            let m = runs.load(&run).await?;
            Ok(json(
                &serde_json::json!({ "path": path, "entry": entry, "manifest": m.0 }),
            ))
        })
    }

    /// Adds a view to the run. Returns its manifest as JSON.
    fn add_view(&self, py: Python<'_>, run_id: &str, mode: &str) -> PyResult<String> {
        let run = Name::parse("run id", run_id).map_err(to_py)?;
        let mode = parse_mode(mode).map_err(to_py)?;
        let runs = &self.inner.runs;
        self.inner.block(py, async {
            let m = runs.add_view(&run, mode).await?;
            runs.compact(&run).await?;
            Ok(json(&m.0))
        })
    }

    /// Sets tags of the run (others stay). Returns its manifest as JSON.
    fn set_tags(
        &self,
        py: Python<'_>,
        run_id: &str,
        tags: Vec<(String, String)>,
    ) -> PyResult<String> {
        let run = Name::parse("run id", run_id).map_err(to_py)?;
        let tags = tags
            .into_iter()
            .map(|(k, v)| Ok((Name::parse("tag key", &k)?, v)))
            .collect::<Result<_, Error>>()
            .map_err(to_py)?;
        let runs = &self.inner.runs;
        self.inner.block(py, async {
            let m = runs.set_tags(&run, &tags).await?;
            runs.compact(&run).await?;
            Ok(json(&m.0))
        })
    }

    /// The run's manifest (with its log applied) as JSON.
    fn get_run(&self, py: Python<'_>, run_id: &str) -> PyResult<String> {
        let run = Name::parse("run id", run_id).map_err(to_py)?;
        let m = self.inner.block(py, self.inner.runs.load(&run))?;
        Ok(json(&m.0))
    }

    /// The manifests of the runs that match every filter given, as a JSON list, and the
    /// sentences of manifests that had to be skipped.
    #[pyo3(signature = (run_type=None, project=None, model=None, date=None))]
    fn list_runs(
        &self,
        py: Python<'_>,
        run_type: Option<&str>,
        project: Option<&str>,
        model: Option<&str>,
        date: Option<&str>,
    ) -> PyResult<(String, Vec<String>)> {
        let filter = (|| {
            Ok::<_, Error>(RunFilter {
                project: project.map(|p| Name::parse("project", p)).transpose()?,
                model: model.map(|m| Name::parse("model", m)).transpose()?,
                run_type: run_type.map(str::parse).transpose()?,
                date: date.map(RunFilter::parse_date).transpose()?,
            })
        })()
        .map_err(to_py)?;
        let listing = self.inner.block(py, self.inner.runs.list())?;
        let selected: Vec<&Manifest> = listing.runs.iter().filter(|m| filter.matches(m)).collect();
        let problems = listing.problems.iter().map(ToString::to_string).collect();
        Ok((json(&selected), problems))
    }

    /// The full hash and the runs that use the data `text` names (one LIST).
    fn runs_using(&self, py: Python<'_>, text: &str) -> PyResult<(String, Vec<String>)> {
        let data = self.inner.runs.data();
        self.inner.block(py, async {
            let h = data.resolve(text).await?;
            let runs = data.used_by(&h).await?;
            Ok((h.to_string(), runs))
        })
    }

    /// The stored object's `metadata.json`, as JSON.
    fn metadata(&self, py: Python<'_>, hash: &str) -> PyResult<String> {
        Ok(json(&self.inner.block(py, self.inner.described(hash))?))
    }

    /// The stored object's `metadata.json` (as JSON) and its bytes, every block verified.
    fn read<'py>(&self, py: Python<'py>, hash: &str) -> PyResult<(String, Bound<'py, PyBytes>)> {
        let inner = &self.inner;
        let (meta, bytes) = inner.block(py, async {
            let meta = inner.described(hash).await?;
            let mut out = Vec::with_capacity(meta.size as usize);
            let none: Progress = Arc::new(|_| {});
            inner.runs.data().export(&meta, &mut out, none).await?;
            Ok((meta, out))
        })?;
        Ok((json(&meta), PyBytes::new(py, &bytes)))
    }

    /// A reader of the stored object: ranged, verified reads.
    fn open(&self, py: Python<'_>, hash: &str) -> PyResult<ObjectReader> {
        let meta = self.inner.block(py, self.inner.described(hash))?;
        Ok(ObjectReader {
            inner: self.inner.clone(),
            meta: Arc::new(meta),
            kept: Mutex::new(None),
        })
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.url())
    }
}

/// Ranged reads of one stored object, each block verified before it is returned; the last
/// blocks fetched are kept for the reads that follow.
#[pyclass(frozen, module = "mltrack._mltrack")]
struct ObjectReader {
    inner: Arc<Inner>,
    meta: Arc<ObjectMetadata>,
    /// The first byte's offset and the bytes of the blocks fetched last.
    kept: Mutex<Option<(u64, bytes::Bytes)>>,
}

#[pymethods]
impl ObjectReader {
    #[getter]
    fn size(&self) -> u64 {
        self.meta.size
    }

    #[getter]
    fn hash(&self) -> String {
        self.meta.hash.to_string()
    }

    /// Up to `n` bytes from `offset` (fewer at the end of the object).
    fn read_at<'py>(&self, py: Python<'py>, offset: u64, n: u64) -> PyResult<Bound<'py, PyBytes>> {
        let end = offset.saturating_add(n).min(self.meta.size);
        if offset >= end {
            return Ok(PyBytes::new(py, &[]));
        }
        let kept = |k: &Option<(u64, bytes::Bytes)>| {
            k.as_ref().and_then(|(start, b)| {
                (offset >= *start && end <= start + b.len() as u64)
                    .then(|| b.slice((offset - start) as usize..(end - start) as usize))
            })
        };
        let lock = |m: &Mutex<Option<(u64, bytes::Bytes)>>| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        if let Some(b) = kept(&lock(&self.kept)) {
            return Ok(PyBytes::new(py, &b));
        }
        let block = self.meta.block_size.max(1);
        let first = offset / block;
        let last = (end - 1) / block + 1;
        let blocks = self.meta.block_hashes.len() as u64;
        let upto = last.max(first + READER_BLOCKS).min(blocks);
        let data = self.inner.runs.data();
        let got = self
            .inner
            .block(py, data.read_blocks(&self.meta, first..upto))?;
        let start = first * block;
        let b = got.slice((offset - start) as usize..(end - start) as usize);
        *self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((start, got));
        Ok(PyBytes::new(py, &b))
    }
}

/// The native module: `Store` and `ObjectReader`.
#[pymodule]
fn _mltrack(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Warnings of the domain (a manifest skipped, a retry) go to stderr, as the CLI's do;
    // RUST_LOG chooses more. An embedding application's own subscriber wins.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn{}", mltrack::logcap::QUIET))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(mltrack::logcap::CappedStderr)
        .try_init();
    m.add_class::<Store>()?;
    m.add_class::<ObjectReader>()?;
    Ok(())
}
