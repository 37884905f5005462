"""mltrack: keep ML data once, find it from any angle.

The seed's Python API (``FlexibleDataStore``, ``RunType``, ``StorageMode``,
``capture_flexible_data``) on mltrack's Rust core: the same store, the same format, so a run
made here is a directory in every ``mltrack mount`` and a file written through a mount is in
``get_run()`` a moment later. The store, hashing, uploads and reads are the compiled core
(``mltrack._mltrack``), which releases the GIL while it works; this module turns tables and
arrays into bytes, and manifests into small classes. docs/PYTHON.md has the whole API.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import inspect
import io
import json
import os
import re
import uuid
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _mltrack

__all__ = [
    "FlexibleDataStore",
    "RunType",
    "StorageMode",
    "DataRef",
    "RunManifest",
    "capture_flexible_data",
]


class RunType(str, enum.Enum):
    """What kind of run this is (the manifest's ``run_type``)."""

    EXPERIMENT = "experiment"
    PRODUCTION = "production"
    EVALUATION = "evaluation"
    DEVELOPMENT = "development"
    ANALYSIS = "analysis"

    def __str__(self) -> str:
        return self.value


class StorageMode(str, enum.Enum):
    """A view a run appears under: ``runs/<mode>/<key>/<run_id>``."""

    BY_PROJECT = "by_project"
    BY_DATE = "by_date"
    BY_TYPE = "by_type"
    BY_MODEL = "by_model"
    FLAT = "flat"

    def __str__(self) -> str:
        return self.value


def _text(value: Any, what: str) -> str:
    """An enum member or a string as the string the store knows (it checks the value)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string or an enum member, not {type(value).__name__}")
    return value


def _modes(modes: Union[None, str, StorageMode, Iterable[Union[str, StorageMode]]]) -> List[str]:
    if modes is None:
        return []
    if isinstance(modes, (str, StorageMode)):
        return [_text(modes, "storage mode")]
    return [_text(m, "storage mode") for m in modes]


def _time(text: Optional[str]) -> Optional[_dt.datetime]:
    """RFC 3339 UTC (as manifests write it) to an aware datetime; Python 3.9 parses no ``Z``
    and no more than 6 fractional digits."""
    if not text:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return _dt.datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")


class DataRef:
    """Data in the store: its SHA-256 ``hash``, ``size`` in bytes, ``format``, the ``name`` it
    was stored under (if any) and whether this call stored it ``new`` (False: it was
    already there and nothing was uploaded)."""

    __slots__ = ("hash", "size", "format", "name", "new")

    def __init__(self, hash: str, size: int, format: str, name: Optional[str] = None,
                 new: bool = False) -> None:
        self.hash = hash
        self.size = size
        self.format = format
        self.name = name
        self.new = new

    @classmethod
    def _from_json(cls, text: str) -> "DataRef":
        d = json.loads(text)
        return cls(d["hash"], d["size"], d["format"], d.get("name"), d.get("new", False))

    def __repr__(self) -> str:
        return (f"DataRef(hash={self.hash[:12]!r}..., size={self.size}, format={self.format!r}, "
                f"name={self.name!r}, new={self.new})")

    def __str__(self) -> str:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataRef) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)


class RunManifest:
    """A run's manifest: ``run_id``, ``run_type``, ``project``, ``model``,
    ``storage_modes``, ``tags``, ``created_at``, ``updated_at`` and ``files`` (path in the
    run to its entry: ``hash``, ``size``, ``format``, ``role``, ``mtime``, ``mode``, ...).
    ``inputs`` and ``outputs`` are the files under ``inputs/`` and the others."""

    __slots__ = ("run_id", "run_type", "project", "model", "storage_modes", "tags",
                 "created_at", "updated_at", "files", "raw")

    def __init__(self, raw: Dict[str, Any]) -> None:
        self._load(raw)

    def _load(self, raw: Dict[str, Any]) -> None:
        self.raw = raw
        self.run_id: str = raw["run_id"]
        self.run_type = RunType(raw["run_type"])
        self.project: Optional[str] = raw.get("project")
        self.model: Optional[str] = raw.get("model")
        self.storage_modes = [StorageMode(m) for m in raw.get("storage_modes", [])]
        self.tags: Dict[str, str] = dict(raw.get("tags", {}))
        self.created_at = _time(raw.get("created_at"))
        self.updated_at = _time(raw.get("updated_at"))
        self.files: Dict[str, Dict[str, Any]] = dict(raw.get("files", {}))

    @classmethod
    def _from_json(cls, text: str) -> "RunManifest":
        return cls(json.loads(text))

    @property
    def inputs(self) -> Dict[str, Dict[str, Any]]:
        return {p: e for p, e in self.files.items() if e.get("role") == "input"}

    @property
    def outputs(self) -> Dict[str, Dict[str, Any]]:
        return {p: e for p, e in self.files.items() if e.get("role") != "input"}

    def __repr__(self) -> str:
        modes = ", ".join(m.value for m in self.storage_modes)
        return (f"RunManifest(run_id={self.run_id!r}, run_type={self.run_type.value!r}, "
                f"project={self.project!r}, model={self.model!r}, storage_modes=[{modes}], "
                f"tags={self.tags!r}, files={len(self.files)})")


DataLike = Any
"""A pandas/polars DataFrame, a pyarrow Table or RecordBatch, a NumPy array, bytes, a path
(``str`` or ``os.PathLike``), a ``DataRef`` or a hash."""


def _module(value: Any) -> str:
    return type(value).__module__.split(".")[0]


def _is_table(value: Any) -> bool:
    return _module(value) in ("pandas", "pyarrow", "polars") and (
        type(value).__name__ in ("DataFrame", "Table", "RecordBatch"))


def _is_array(value: Any) -> bool:
    return _module(value) == "numpy" and type(value).__name__ == "ndarray"


def _arrow_ipc(value: Any) -> bytes:
    """A table as an Arrow IPC stream, the form the core writes Parquet from. pandas'
    metadata keeps what restores the index and dtypes, minus the library versions, so the
    same DataFrame gives the same bytes under another pandas or pyarrow."""
    import pyarrow as pa

    mod = _module(value)
    if mod == "pandas":
        table = pa.Table.from_pandas(value)
    elif mod == "polars":
        table = value.to_arrow()
    elif isinstance(value, pa.RecordBatch):
        table = pa.Table.from_batches([value])
    else:
        table = value
    meta = dict(table.schema.metadata or {})
    if b"pandas" in meta:
        pandas_meta = json.loads(meta[b"pandas"])
        pandas_meta.pop("creator", None)
        pandas_meta.pop("pandas_version", None)
        meta[b"pandas"] = json.dumps(pandas_meta, sort_keys=True, separators=(",", ":")).encode()
        table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _npy(value: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


_HEX = re.compile(r"[0-9a-f]{4,64}")


class FlexibleDataStore:
    """The store: an S3 bucket (``s3_bucket=``, or ``store="s3://bucket/prefix"``) or a local
    directory (``store="/path"``). Without either, the environment names it
    (``MLTRACK_STORE``, ``MLTRACK_S3_BUCKET``; default: a local directory under
    ``~/.local/share/mltrack/store``). ``default_run_type`` and ``default_storage_mode`` win
    over ``MLTRACK_DEFAULT_RUN_TYPE`` and ``MLTRACK_DEFAULT_STORAGE_MODE``."""

    def __init__(self, s3_bucket: Optional[str] = None, *, store: Optional[str] = None,
                 default_run_type: Union[None, str, RunType] = None,
                 default_storage_mode: Union[None, str, StorageMode,
                                             Sequence[Union[str, StorageMode]]] = None) -> None:
        if s3_bucket is not None and store is not None:
            raise ValueError("give s3_bucket or store, not both")
        url = f"s3://{s3_bucket}/mltrack" if s3_bucket is not None else store
        if url is not None:
            url = os.fspath(url)
        run_type = None if default_run_type is None else _text(default_run_type, "run type")
        modes = _modes(default_storage_mode) if default_storage_mode is not None else None
        self._core = _mltrack.Store(url, run_type, modes)

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._core.url

    @property
    def default_run_type(self) -> RunType:
        return RunType(self._core.default_run_type)

    @property
    def default_storage_modes(self) -> List[StorageMode]:
        return [StorageMode(m) for m in self._core.default_storage_modes]

    def __repr__(self) -> str:
        return f"FlexibleDataStore(store={self.url!r})"

    # Data.

    def _put(self, data: DataLike, name: Optional[str], named: bool) -> DataRef:
        core = self._core
        if isinstance(data, DataRef):
            return self._stored(data.hash)
        if isinstance(data, os.PathLike) or (isinstance(data, str) and os.path.exists(data)):
            return DataRef._from_json(core.put_path(os.fspath(data), name, named))
        if isinstance(data, str):
            if _HEX.fullmatch(data):
                return self._stored(data)
            raise FileNotFoundError(f"{data!r} is neither a file nor a stored hash")
        if isinstance(data, (bytes, bytearray, memoryview)):
            return DataRef._from_json(core.put_bytes(bytes(data), name, named))
        if _is_table(data):
            hint = name if name is None or "." in name else f"{name}.parquet"
            return DataRef._from_json(core.put_table(_arrow_ipc(data), name, named, hint))
        if _is_array(data):
            hint = name if name is None or "." in name else f"{name}.npy"
            return DataRef._from_json(core.put_bytes(_npy(data), name, named, hint))
        raise TypeError(
            f"cannot store a {type(data).__module__}.{type(data).__name__}: give a DataFrame, a "
            "pyarrow Table, a NumPy array, bytes, a path, a DataRef or a hash")

    def _stored(self, text: str) -> DataRef:
        meta = json.loads(self._core.metadata(text))
        return DataRef(meta["hash"], meta["size"], meta["format"], meta.get("name"), False)

    def store_data(self, data: DataLike, name: Optional[str] = None) -> DataRef:
        """Stores ``data`` once under its SHA-256 and returns a ``DataRef``. The same bytes
        under another name are not uploaded again (``.new`` is False) and keep one hash.
        Tables become Parquet with fixed writer options (the same table gives the same hash
        in every process), arrays ``.npy``; bytes and files are stored as they are. ``name``
        (default for a path: its file name) is recorded, and protects the data from gc."""
        return self._put(data, name, True)

    def load_data(self, data: Union[str, DataRef]) -> Any:
        """The stored data, verified: a pandas DataFrame for Parquet and Arrow, a NumPy array
        for ``.npy``, bytes otherwise. ``data`` is a hash, a unique prefix or a DataRef."""
        text = data.hash if isinstance(data, DataRef) else _text(data, "hash")
        meta_json, raw = self._core.read(text)
        fmt = json.loads(meta_json)["format"]
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            return pq.read_table(pa.BufferReader(raw)).to_pandas()
        if fmt in ("arrow", "feather"):
            import pyarrow as pa

            return pa.ipc.open_file(pa.BufferReader(raw)).read_all().to_pandas()
        if fmt == "npy":
            import numpy as np

            return np.load(io.BytesIO(raw), allow_pickle=False)
        return raw

    def open(self, data: Union[str, DataRef]) -> io.BufferedReader:
        """A seekable binary reader of the stored data; every block is verified before it is
        returned, and blocks are fetched as they are read."""
        text = data.hash if isinstance(data, DataRef) else _text(data, "hash")
        return io.BufferedReader(_RawReader(self._core.open(text)), buffer_size=1 << 20)

    def find_runs_by_data(self, data: Union[str, DataRef]) -> List[str]:
        """The ids of every run that uses the data (a hash, a unique prefix or a DataRef)."""
        text = data.hash if isinstance(data, DataRef) else _text(data, "hash")
        _, runs = self._core.runs_using(text)
        return sorted(runs)

    # Runs.

    def create_run(self, run_id: Optional[str] = None,
                   run_type: Union[None, str, RunType] = None, project: Optional[str] = None,
                   model: Optional[str] = None,
                   storage_modes: Union[None, str, StorageMode,
                                        Sequence[Union[str, StorageMode]]] = None,
                   tags: Optional[Dict[str, str]] = None) -> RunManifest:
        """Creates a run and returns its manifest. The run type and storage modes default to
        the store's defaults; every storage mode needs its key (``by_project`` a project,
        ``by_model`` a model). ``run_id`` defaults to a new unique id."""
        rid = run_id if run_id is not None else f"run_{uuid.uuid4().hex}"
        rtype = None if run_type is None else _text(run_type, "run type")
        pairs = [(str(k), str(v)) for k, v in (tags or {}).items()]
        return RunManifest._from_json(
            self._core.create_run(rid, rtype, project, model, _modes(storage_modes), pairs))

    def _add(self, run: Union[str, RunManifest], directory: str, name: str,
             data: DataLike) -> DataRef:
        rid = _run_id(run)
        ref = self._put(data, name, False)
        last = name.rsplit("/", 1)[-1]
        path = f"{directory}/{name}"
        if "." not in last and ref.format != "bin":
            path = f"{path}.{ref.format}"
        out = json.loads(self._core.record(rid, path, ref.hash))
        if isinstance(run, RunManifest):
            run._load(out["manifest"])
        return DataRef(ref.hash, ref.size, ref.format, path, ref.new)

    def add_run_input(self, run: Union[str, RunManifest], name: str, data: DataLike) -> DataRef:
        """Records ``data`` as input ``inputs/<name>`` of the run (an extension for its format
        is added when ``name`` has none). Data already stored is referenced, not uploaded
        again. A ``RunManifest`` passed in is brought up to date."""
        return self._add(run, "inputs", name, data)

    def add_run_output(self, run: Union[str, RunManifest], name: str, data: DataLike) -> DataRef:
        """Records ``data`` as output ``outputs/<name>`` of the run, as ``add_run_input``."""
        return self._add(run, "outputs", name, data)

    def add_storage_mode(self, run: Union[str, RunManifest],
                         mode: Union[str, StorageMode]) -> RunManifest:
        """Adds a view to the run: it appears under ``runs/<mode>/...`` from now on."""
        m = RunManifest._from_json(self._core.add_view(_run_id(run), _text(mode, "storage mode")))
        if isinstance(run, RunManifest):
            run._load(m.raw)
        return m

    def set_run_tags(self, run: Union[str, RunManifest], tags: Dict[str, str]) -> RunManifest:
        """Sets the given tags of the run; its other tags stay."""
        pairs = [(str(k), str(v)) for k, v in tags.items()]
        m = RunManifest._from_json(self._core.set_tags(_run_id(run), pairs))
        if isinstance(run, RunManifest):
            run._load(m.raw)
        return m

    def get_run(self, run_id: Union[str, RunManifest]) -> RunManifest:
        """The run's manifest as it is stored now (with writes made through mounts)."""
        return RunManifest._from_json(self._core.get_run(_run_id(run_id)))

    def list_runs(self, run_type: Union[None, str, RunType] = None,
                  project: Optional[str] = None, model: Optional[str] = None,
                  date: Union[None, str, _dt.date] = None) -> List[RunManifest]:
        """The runs that match every filter given, sorted by id. Manifests that cannot be read
        are skipped with a warning."""
        rtype = None if run_type is None else _text(run_type, "run type")
        day = date.isoformat() if isinstance(date, _dt.date) else date
        listed, problems = self._core.list_runs(rtype, project, model, day)
        for p in problems:
            warnings.warn(p, stacklevel=2)
        return [RunManifest(m) for m in json.loads(listed)]


def _run_id(run: Union[str, RunManifest]) -> str:
    if isinstance(run, RunManifest):
        return run.run_id
    return _text(run, "run id")


class _RawReader(io.RawIOBase):
    """``io.RawIOBase`` over the core's verified ranged reads."""

    def __init__(self, core: Any) -> None:
        super().__init__()
        self._core = core
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        got = self._core.read_at(self._pos, len(view))
        view[: len(got)] = got
        self._pos += len(got)
        return len(got)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._core.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


# The decorator.

# The environment's store, kept while the variables that choose it stay the same.
_ENV_STORE: Dict[tuple, FlexibleDataStore] = {}
_ENV_VARS = ("MLTRACK_STORE", "MLTRACK_S3_BUCKET", "MLTRACK_DEFAULT_RUN_TYPE",
             "MLTRACK_DEFAULT_STORAGE_MODE", "MLTRACK_CACHE_DIR", "AWS_ENDPOINT_URL",
             "AWS_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")


def _store_of(store: Union[None, str, FlexibleDataStore]) -> FlexibleDataStore:
    if isinstance(store, FlexibleDataStore):
        return store
    if store is not None:
        return FlexibleDataStore(store=store)
    key = tuple(os.environ.get(v) for v in _ENV_VARS)
    if key not in _ENV_STORE:
        _ENV_STORE.clear()
        _ENV_STORE[key] = FlexibleDataStore()
    return _ENV_STORE[key]


def _storable_output(value: Any) -> bool:
    return _is_table(value) or _is_array(value) or isinstance(value, (bytes, bytearray))


def capture_flexible_data(store_inputs: bool = True, store_outputs: bool = True,
                          run_type: Union[None, str, RunType] = None,
                          storage_modes: Union[None, str, StorageMode,
                                               Sequence[Union[str, StorageMode]]] = None,
                          project: Optional[str] = None, run_id: Optional[str] = None,
                          model: Optional[str] = None,
                          store: Union[None, str, FlexibleDataStore] = None,
                          tags: Optional[Dict[str, str]] = None) -> Callable[[Callable], Callable]:
    """Makes every call of the decorated function a run: created before the call (id
    ``<function>_<UTC time>_<8 hex>`` unless ``run_id`` is given), with its table and array
    arguments stored as inputs named after the parameters and its return value stored as
    output ``return`` (a tuple: ``return_0``, ``return_1``, ...; a value that is no table,
    array or bytes: ``return.json`` if it is JSON). Tags record ``function``, and ``outcome``:
    ``returned``, or ``raised`` with ``exception``; an exception is re-raised. The store is
    ``store`` (a URL or a ``FlexibleDataStore``), else the one the environment names. The
    wrapper's ``last_run_id`` is the id of the run its latest call made."""

    def decorate(fn: Callable) -> Callable:
        qualname = f"{fn.__module__}.{fn.__qualname__}"
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", fn.__name__) or "run"
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            st = _store_of(store)
            now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            rid = run_id if run_id is not None else f"{base}_{now}_{uuid.uuid4().hex[:8]}"
            all_tags = {**(tags or {}), "function": qualname, "outcome": "running"}
            m = st.create_run(run_id=rid, run_type=run_type, project=project, model=model,
                              storage_modes=storage_modes, tags=all_tags)
            call.last_run_id = rid
            if store_inputs:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError:
                    bound = None  # the call itself raises it below
                for pname, value in (bound.arguments.items() if bound else ()):
                    if _is_table(value) or _is_array(value):
                        st.add_run_input(m, pname, value)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                st.set_run_tags(m, {"outcome": "raised",
                                    "exception": f"{type(e).__name__}: {e}"[:1000]})
                raise
            if store_outputs:
                _store_result(st, m, result)
            st.set_run_tags(m, {"outcome": "returned"})
            return result

        call.last_run_id = None  # type: ignore[attr-defined]
        return call

    return decorate


def _store_result(st: FlexibleDataStore, m: RunManifest, result: Any) -> None:
    if isinstance(result, tuple) and any(_storable_output(v) for v in result):
        for i, value in enumerate(result):
            if _storable_output(value):
                st.add_run_output(m, f"return_{i}", value)
        return
    if _storable_output(result):
        st.add_run_output(m, "return", result)
        return
    if result is None:
        return
    try:
        text = json.dumps(result, sort_keys=True)
    except (TypeError, ValueError):
        st.set_run_tags(m, {"return_type": type(result).__name__})
        return
    st.add_run_output(m, "return.json", text.encode())
