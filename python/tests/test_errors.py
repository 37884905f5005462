"""Bad input and a failing store: a Python exception of the promised type with the CLI's
one-sentence message, and nothing half written."""

import os
import pathlib
import time

import pytest

from conftest import BUCKET, free_port
from mltrack import FlexibleDataStore, RunType


@pytest.mark.parametrize("bad", ["a/b", "..", "", "x" * 256, "tab\there"])
def test_an_invalid_run_id_is_a_value_error_and_creates_nothing(env, bad):
    store = FlexibleDataStore()
    with pytest.raises(ValueError, match="run id"):
        store.create_run(run_id=bad, project="p")
    assert store.list_runs() == []
    assert env.keys_under("manifests") == [] and env.keys_under("runs") == []


def test_an_unknown_run_type_or_mode_is_a_value_error_naming_the_choices(env):
    store = FlexibleDataStore()
    with pytest.raises(ValueError, match=r'unknown run type "prod".*production'):
        store.create_run(run_id="r1", run_type="prod", project="p")
    with pytest.raises(ValueError, match="by_week"):
        store.create_run(run_id="r1", project="p", storage_modes=["by_week"])
    with pytest.raises(ValueError, match="model"):
        store.create_run(run_id="r1", storage_modes=["by_model"])  # no model to key it by
    with pytest.raises(TypeError):
        store.create_run(run_id="r1", run_type=3)
    assert store.list_runs() == [] and env.keys_under("manifests") == []
    m = store.create_run(run_id="r1", project="p")
    with pytest.raises(ValueError, match="by_week"):
        store.add_storage_mode(m, "by_week")
    assert store.get_run("r1").storage_modes == m.storage_modes


def test_an_unknown_hash_or_run_is_file_not_found_and_changes_nothing(env):
    store = FlexibleDataStore()
    missing = "ab" * 32
    with pytest.raises(FileNotFoundError, match="no stored data"):
        store.load_data(missing)
    with pytest.raises(FileNotFoundError):
        store.open(missing[:10])
    with pytest.raises(FileNotFoundError):
        store.find_runs_by_data("abcd12")
    with pytest.raises(ValueError, match="not a hash"):
        store.load_data("xyz")
    with pytest.raises(FileNotFoundError, match="neither a file nor a stored hash"):
        store.store_data("no/such/file.parquet")
    with pytest.raises(FileNotFoundError, match="no-such.parquet"):
        store.store_data(pathlib.Path("no-such.parquet"))
    with pytest.raises(FileNotFoundError, match="run nope does not exist"):
        store.get_run("nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        store.add_run_input("nope", "x", b"data")
    m = store.create_run(run_id="r2", project="p")
    with pytest.raises(FileExistsError, match="r2"):
        store.create_run(run_id="r2", project="other")
    assert store.get_run("r2").project == "p"
    with pytest.raises(FileNotFoundError):
        store.add_run_input(m, "training_data", missing)
    assert store.get_run("r2").files == {} and m.files == {}
    with pytest.raises(TypeError, match="cannot store a builtins.dict"):
        store.store_data({"a": 1}, "d")


def test_a_corrupt_manifest_in_the_bucket_is_skipped_with_a_warning(env):
    store = FlexibleDataStore()
    store.create_run(run_id="good", project="p")
    store.create_run(run_id="bad", project="p")
    env.write_key("manifests/bad.json", b"{ not json")
    with pytest.warns(UserWarning, match="bad"):
        runs = store.list_runs()
    assert [m.run_id for m in runs] == ["good"]
    with pytest.raises(OSError, match="bad"):
        store.get_run("bad")


def test_a_store_that_is_down_is_an_os_error_and_leaves_nothing(env, monkeypatch):
    if env.backend == "local":
        # A local store that cannot be reached: its path runs through a regular file.
        blocker = os.path.join(env.tmp, "blocker")
        open(blocker, "w").close()
        with pytest.raises(OSError, match="blocker"):
            FlexibleDataStore(store=os.path.join(blocker, "store")).store_data(b"x", "n")
        assert os.path.getsize(blocker) == 0
        return
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    down = FlexibleDataStore()
    started = time.time()
    with pytest.raises(OSError) as err:
        down.store_data(b"bytes that never arrive", "lost")
    assert "127.0.0.1" in str(err.value) or "connect" in str(err.value).lower(), str(err.value)
    assert "SECRET" not in str(err.value)
    with pytest.raises(OSError):
        down.create_run(run_id="never", project="p")
    with pytest.raises(OSError):
        down.list_runs()
    assert time.time() - started < 120
    # The store itself, reached again: nothing of the above is in it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.env["AWS_ENDPOINT_URL"])
    up = FlexibleDataStore()
    assert up.list_runs() == [] and env.keys_under("") == []
    assert up.url == f"s3://{BUCKET}/{env.url.rsplit('/', 1)[1]}"
