"""The seed's configuration: MLTRACK_S3_BUCKET, MLTRACK_DEFAULT_RUN_TYPE and
MLTRACK_DEFAULT_STORAGE_MODE, and the constructor's arguments, which win."""

import threading
import time

import pytest

import mltrack
from conftest import BUCKET
from mltrack import FlexibleDataStore, RunType, StorageMode


def test_the_environment_names_the_bucket_and_the_defaults(env, monkeypatch):
    if env.backend == "s3":
        # MLTRACK_S3_BUCKET is shorthand for s3://$MLTRACK_S3_BUCKET/mltrack.
        monkeypatch.delenv("MLTRACK_STORE")
        monkeypatch.setenv("MLTRACK_S3_BUCKET", BUCKET)
        assert FlexibleDataStore().url == f"s3://{BUCKET}/mltrack"
        assert FlexibleDataStore(s3_bucket=BUCKET).url == f"s3://{BUCKET}/mltrack"
        ref = FlexibleDataStore().store_data(b"in the bucket's default prefix", "cfg.txt")
        assert FlexibleDataStore(store=f"s3://{BUCKET}/mltrack").load_data(ref.hash) == \
            b"in the bucket's default prefix"
        monkeypatch.setenv("MLTRACK_STORE", env.url)
    monkeypatch.setenv("MLTRACK_DEFAULT_RUN_TYPE", "production")
    monkeypatch.setenv("MLTRACK_DEFAULT_STORAGE_MODE", "by_type,by_date")
    store = FlexibleDataStore()
    assert store.url == env.url
    assert store.default_run_type is RunType.PRODUCTION
    m = store.create_run(run_id="from_env")
    assert m.run_type is RunType.PRODUCTION
    assert set(m.storage_modes) == {StorageMode.BY_TYPE, StorageMode.BY_DATE}
    # Arguments win over the environment, as in the seed's example.
    store = FlexibleDataStore(store=env.url, default_run_type=RunType.EVALUATION,
                              default_storage_mode=StorageMode.FLAT)
    m = store.create_run(run_id="from_args")
    assert m.run_type is RunType.EVALUATION and m.storage_modes == [StorageMode.FLAT]
    assert "runs/flat/from_args/run.json" in env.keys_under("runs")
    # And a call's own arguments win over both.
    m = store.create_run(run_id="own", run_type="analysis", project="p",
                         storage_modes="by_project")
    assert m.run_type is RunType.ANALYSIS and m.storage_modes == [StorageMode.BY_PROJECT]


def test_a_bad_setting_is_a_value_error_naming_it(env, monkeypatch):
    monkeypatch.setenv("MLTRACK_DEFAULT_RUN_TYPE", "prod")
    with pytest.raises(ValueError, match="MLTRACK_DEFAULT_RUN_TYPE"):
        FlexibleDataStore()
    monkeypatch.delenv("MLTRACK_DEFAULT_RUN_TYPE")
    monkeypatch.setenv("MLTRACK_DEFAULT_STORAGE_MODE", "by_week")
    with pytest.raises(ValueError, match="MLTRACK_DEFAULT_STORAGE_MODE"):
        FlexibleDataStore()
    monkeypatch.delenv("MLTRACK_DEFAULT_STORAGE_MODE")
    with pytest.raises(ValueError, match="not both"):
        FlexibleDataStore("bucket", store="/tmp/x")
    with pytest.raises(ValueError, match="bucket"):
        FlexibleDataStore(s3_bucket="Not_A_Bucket")
    with pytest.raises(ValueError, match="run type"):
        FlexibleDataStore(default_run_type="nightly")


def test_hashing_releases_the_gil(env):
    """Another Python thread keeps running while the core hashes and stores 256 MiB."""
    store = FlexibleDataStore()
    blob = bytes(256 * 1024 * 1024)
    ticks = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    start, began = ticks[0], time.time()
    store.store_data(blob, "zeros.bin")
    elapsed, during = time.time() - began, ticks[0] - start
    done.set()
    counter.join()
    # Held, the GIL would stop the counter for the whole call; released, it ticks about
    # once per millisecond (at least a tenth of that on a loaded machine).
    assert during >= elapsed * 1000 / 10, f"{during} ticks in {elapsed:.2f} s"


def test_the_package_ships_types_and_docstrings():
    import importlib.resources as resources

    files = {p.name for p in resources.files("mltrack").iterdir()}
    assert {"py.typed", "_mltrack.pyi", "__init__.py"} <= files
    for call in ("store_data", "load_data", "open", "create_run", "add_run_input",
                 "add_run_output", "add_storage_mode", "find_runs_by_data", "get_run",
                 "list_runs"):
        assert getattr(FlexibleDataStore, call).__doc__, call
    assert mltrack.capture_flexible_data.__doc__
    assert [t.value for t in RunType] == ["experiment", "production", "evaluation",
                                          "development", "analysis"]
    assert [m.value for m in StorageMode] == ["by_project", "by_date", "by_type", "by_model",
                                              "flat"]
