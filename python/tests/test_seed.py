"""The seed document's "Usage Examples", as close to verbatim as Python allows, on both
backends, each asserting what the seed says it does."""

import datetime
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

from mltrack import DataRef, FlexibleDataStore, RunManifest, RunType, StorageMode
from mltrack import capture_flexible_data


def today():
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def test_basic_data_storage_with_deduplication(env, training_df):
    store = FlexibleDataStore(store=env.url)

    # First time storing this data
    ref1 = store.store_data(training_df, "training_data")
    print(f"Stored: {ref1.hash[:8]}...")
    # Second time with same data (different name)
    ref2 = store.store_data(training_df, "experiment_42_data")
    print(f"Stored: {ref2.hash[:8]}...")

    assert isinstance(ref1, DataRef)
    assert ref1.hash == ref2.hash, "same data, same hash"
    assert (ref1.new, ref2.new) == (True, False), "the second store uploads nothing"
    assert ref1.format == "parquet"
    assert env.objects() == [ref1.hash], "one object stored"
    names = env.keys_under(f"data/{ref1.hash[:2]}/{ref1.hash}/names")
    assert [n.rsplit("/", 1)[1] for n in names] == ["experiment_42_data", "training_data"]
    assert "DataRef(hash=" in repr(ref1) and "format='parquet'" in repr(ref1)
    # A plain Parquet file in the bucket, readable by any tool; the same table back.
    stored = env.key(f"data/{ref1.hash[:2]}/{ref1.hash}/data.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(stored), training_df)
    pd.testing.assert_frame_equal(store.load_data(ref1.hash), training_df)


def test_different_run_types(env):
    store = FlexibleDataStore(store=env.url)

    # Development run - organized by project and date
    dev_manifest = store.create_run(
        run_id="dev_001",
        run_type=RunType.DEVELOPMENT,
        project="new_features",
        storage_modes=[StorageMode.BY_PROJECT, StorageMode.BY_DATE]
    )
    # Production run - organized by type and model
    prod_manifest = store.create_run(
        run_id="prod_001",
        run_type=RunType.PRODUCTION,
        project="customer_churn",
        model="xgb",
        storage_modes=[StorageMode.BY_TYPE, StorageMode.BY_MODEL]
    )
    # Evaluation run - for benchmarking
    eval_manifest = store.create_run(
        run_id="eval_001",
        run_type=RunType.EVALUATION,
        project="q4_benchmarks",
        storage_modes=[StorageMode.BY_TYPE, StorageMode.BY_PROJECT]
    )

    assert isinstance(dev_manifest, RunManifest)
    assert dev_manifest.run_type is RunType.DEVELOPMENT
    assert prod_manifest.run_type is RunType.PRODUCTION and prod_manifest.model == "xgb"
    assert eval_manifest.project == "q4_benchmarks"
    assert set(eval_manifest.storage_modes) == {StorageMode.BY_TYPE, StorageMode.BY_PROJECT}
    assert "run_id='prod_001'" in repr(prod_manifest)
    # The views each run type was given, as prefixes in the store.
    views = env.keys_under("runs")
    assert views == sorted([
        "runs/by_project/new_features/dev_001/run.json",
        f"runs/by_date/{today()}/dev_001/run.json",
        "runs/by_type/production/prod_001/run.json",
        "runs/by_model/xgb/prod_001/run.json",
        "runs/by_type/evaluation/eval_001/run.json",
        "runs/by_project/q4_benchmarks/eval_001/run.json",
    ])
    # Reorganise after creation.
    store.add_storage_mode(prod_manifest, StorageMode.BY_DATE)
    assert StorageMode.BY_DATE in prod_manifest.storage_modes
    assert f"runs/by_date/{today()}/prod_001/run.json" in env.keys_under("runs")
    found = store.list_runs(run_type=RunType.PRODUCTION, project="customer_churn")
    assert [m.run_id for m in found] == ["prod_001"]
    assert [m.run_id for m in store.list_runs(date=today())] == ["dev_001", "eval_001",
                                                                 "prod_001"]


class Model:
    """Stands in for the seed's `model`."""

    def predict(self, df):
        return (df["monthly_charges"].to_numpy() > 80).astype(np.float64)


model = Model()


def test_using_the_decorator(env, training_df):
    @capture_flexible_data(
        store_inputs=True,
        store_outputs=True,
        run_type=RunType.PRODUCTION,
        storage_modes=[StorageMode.BY_TYPE, StorageMode.BY_DATE],
        project="fraud_detection"
    )
    def process_transactions(transaction_df: pd.DataFrame, model_version: str):
        # Your production model code
        predictions = model.predict(transaction_df)
        return predictions

    predictions = process_transactions(training_df, "v3")
    assert np.array_equal(predictions, model.predict(training_df)), "returns what it returned"

    store = FlexibleDataStore()  # the store the environment names, as the decorator's
    run = store.get_run(process_transactions.last_run_id)
    assert run.run_type is RunType.PRODUCTION and run.project == "fraud_detection"
    assert set(run.storage_modes) == {StorageMode.BY_TYPE, StorageMode.BY_DATE}
    assert run.run_id.startswith("process_transactions_")
    assert sorted(run.files) == ["inputs/transaction_df.parquet", "outputs/return.npy"]
    assert run.tags["outcome"] == "returned"
    assert run.tags["function"].endswith("process_transactions")
    pd.testing.assert_frame_equal(
        store.load_data(run.files["inputs/transaction_df.parquet"]["hash"]), training_df)
    assert np.array_equal(store.load_data(run.files["outputs/return.npy"]["hash"]), predictions)

    # A call that raises: the run records it, and the exception reaches the caller.
    @capture_flexible_data(run_type="evaluation", project="fraud_detection",
                           run_id="failing_call")
    def broken(transaction_df):
        raise RuntimeError("model file missing")

    with pytest.raises(RuntimeError, match="model file missing"):
        broken(training_df)
    failed = store.get_run("failing_call")
    assert failed.tags["outcome"] == "raised"
    assert failed.tags["exception"] == "RuntimeError: model file missing"
    assert list(failed.files) == ["inputs/transaction_df.parquet"]


def start_run_ids():
    """mlflow's runs when it is installed; else the ids it would give (32 hex digits)."""
    try:
        import mlflow  # noqa: F401

        return "mlflow"
    except ImportError:
        return None


def test_shared_data_across_experiments(env, training_df, tmp_path, monkeypatch, capsys):
    store = FlexibleDataStore()
    large_dataset = training_df
    hyperparameter_configs = [{"depth": d} for d in (3, 5, 8)]

    # Store dataset once
    data_ref = store.store_data(large_dataset, "benchmark_data")
    objects_before = env.objects()

    run_ids = []
    use_mlflow = start_run_ids()
    with capsys.disabled():
        print("\n  the mlflow example runs " + ("with mlflow" if use_mlflow else
                                             "without mlflow, with the run ids it would give"))
    for config in hyperparameter_configs:
        if use_mlflow:
            import mlflow

            # Its file store, which mlflow 3 keeps behind this switch; no server needed.
            monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(f"file://{tmp_path}/mlruns")
            ctx = mlflow.start_run()
        else:
            ctx = None
        with (ctx if ctx is not None else _NoMlflow()) as active:
            run_id = (mlflow.active_run().info.run_id if use_mlflow else active.run_id)
            manifest = store.create_run(
                run_id=run_id,
                run_type=RunType.EXPERIMENT,
                project="hyperparam_search"
            )
            # Add reference to shared data (not a copy!)
            ref = store.add_run_input(manifest, "training_data", large_dataset)
            assert ref.hash == data_ref.hash and not ref.new
            # Run experiment...
            predictions = large_dataset["monthly_charges"].to_numpy() * config["depth"]
            # Store unique outputs
            store.add_run_output(manifest, "model_predictions", predictions)
            run_ids.append(run_id)
            assert manifest.files["inputs/training_data.parquet"]["hash"] == data_ref.hash

    # The dataset is stored once; each run added only its own predictions.
    assert set(objects_before) <= set(env.objects())
    assert len(env.objects()) == len(objects_before) + len(hyperparameter_configs)
    assert store.find_runs_by_data(data_ref.hash) == sorted(run_ids)
    assert store.find_runs_by_data(data_ref) == sorted(run_ids)
    assert store.find_runs_by_data(data_ref.hash[:8]) == sorted(run_ids), "prefix accepted"
    assert all(len(r) == 32 and int(r, 16) >= 0 for r in run_ids), run_ids
    for rid in run_ids:
        assert store.get_run(rid).inputs["inputs/training_data.parquet"]["hash"] == data_ref.hash


class _NoMlflow:
    """What `mlflow.start_run()` gives, without mlflow: a run id of 32 hex digits."""

    def __enter__(self):
        self.run_id = uuid.uuid4().hex
        return self

    def __exit__(self, *exc):
        return False


HASH_IN_A_NEW_PROCESS = """
import sys, numpy as np, pandas as pd, pyarrow as pa, polars as pl
from mltrack import FlexibleDataStore
s = FlexibleDataStore()
rng = np.random.default_rng(7)
df = pd.DataFrame({"x": rng.normal(size=3000), "k": rng.choice(["a", "b"], 3000)})
refs = [s.store_data(df), s.store_data(pa.Table.from_pandas(df, preserve_index=False)),
        s.store_data(pl.from_pandas(df)), s.store_data(rng.normal(size=(50, 4)))]
print(" ".join(r.hash for r in refs))
"""


def test_tables_and_arrays_give_the_same_hash_in_every_process(env):
    pytest.importorskip("polars")
    runs = [subprocess.run([sys.executable, "-c", HASH_IN_A_NEW_PROCESS], env=env.env,
                           capture_output=True, text=True) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (r.stdout.split() for r in runs)
    assert first == second, "the same tables and arrays, the same hashes"
    assert len(set(first)) == 4
    store = FlexibleDataStore()
    formats = [store.load_data(h) for h in first]
    assert isinstance(formats[0], pd.DataFrame) and isinstance(formats[3], np.ndarray)
    assert formats[3].shape == (50, 4)


def test_bytes_paths_and_hashes(env, tmp_path):
    store = FlexibleDataStore()
    blob = bytes(range(256)) * 20000
    path = tmp_path / "weights.bin"
    path.write_bytes(blob)
    by_bytes = store.store_data(blob, "weights.bin")
    by_path = store.store_data(path)
    by_str = store.store_data(str(path))
    assert by_bytes.hash == by_path.hash == by_str.hash and by_bytes.new and not by_path.new
    assert by_path.name == "weights.bin"
    assert store.store_data(by_bytes.hash).hash == by_bytes.hash
    assert store.store_data(by_bytes).hash == by_bytes.hash
    assert store.load_data(by_bytes.hash[:10]) == blob
    with store.open(by_bytes) as f:
        f.seek(1_000_003)
        assert f.read(70_000) == blob[1_000_003:1_070_003]
        f.seek(-5, 2)
        assert f.read() == blob[-5:]
        f.seek(0)
        assert f.read() == blob
    m = store.create_run("raw_001", storage_modes="flat")
    store.add_run_output(m, "weights", path)
    store.add_run_output(m, "notes.txt", b"lr=0.1\n")
    store.add_run_input(m, "model/weights", by_bytes.hash)
    assert sorted(m.files) == ["inputs/model/weights", "outputs/notes.txt", "outputs/weights"]
    assert m.files["outputs/notes.txt"]["format"] == "txt"
