"""The package and the rest of mltrack on one store, on both backends: a run made in Python is
a run for the CLI and a directory in a mount; a file copied into a mounted run is in
`get_run` and `load_data`; data stored with `mltrack put` is found by its hash."""

import os
import shutil

import pandas as pd

from conftest import wait_for
from mltrack import FlexibleDataStore, RunType, StorageMode


def test_a_run_made_in_python_is_a_run_for_the_cli_and_in_a_mount(env, training_df):
    store = FlexibleDataStore()
    with env.mount("--refresh", "1") as mnt:
        # The mount has listed the views before the run exists.
        assert os.listdir(os.path.join(mnt, "runs", "by_type", "production")) == []
        m = store.create_run(run_id="prod_py", run_type=RunType.PRODUCTION,
                             project="customer_churn", model="xgb",
                             storage_modes=[StorageMode.BY_TYPE, StorageMode.BY_MODEL],
                             tags={"owner": "ana"})
        ref = store.add_run_input(m, "training_data", training_df)

        shown = env.cli_json("run", "show", "prod_py")
        assert shown["run_type"] == "production" and shown["model"] == "xgb"
        assert shown["tags"] == {"owner": "ana"}
        assert shown["files"]["inputs/training_data.parquet"]["hash"] == ref.hash
        assert env.cli("runs-using", ref.hash[:8]).split() == ["prod_py"]

        # Within the refresh interval, under each of its views, with its file readable.
        for view in ("by_type/production", "by_model/xgb"):
            run_dir = os.path.join(mnt, "runs", view, "prod_py")
            wait_for(lambda: os.path.isdir(run_dir), 10, f"{run_dir} in the mount")
            got = pd.read_parquet(os.path.join(run_dir, "inputs", "training_data.parquet"))
            pd.testing.assert_frame_equal(got, training_df)
        assert not os.path.exists(os.path.join(mnt, "runs", "by_project", "customer_churn", "prod_py"))

        # A view added in Python appears too.
        store.add_storage_mode(m, StorageMode.BY_PROJECT)
        wait_for(lambda: os.path.isdir(
            os.path.join(mnt, "runs", "by_project", "customer_churn", "prod_py")), 10,
            "the new view in the mount")


def test_a_file_copied_into_a_mounted_run_is_in_get_run_and_load_data(env, training_df,
                                                                       tmp_path):
    store = FlexibleDataStore()
    local = tmp_path / "features.parquet"
    training_df.to_parquet(local)
    with env.mount("--refresh", "1") as mnt:
        run_dir = os.path.join(mnt, "runs", "by_project", "churn", "run_m")
        os.makedirs(run_dir)  # the project too, as `mkdir -p`: a new project is made by mkdir
        shutil.copy(local, os.path.join(run_dir, "inputs", "features.parquet"))
        with open(os.path.join(run_dir, "outputs", "metrics.json"), "w") as f:
            f.write('{"auc": 0.91}')
        # close() returned: the manifest has the entries, for every reader of the store.
        run = store.get_run("run_m")
        assert run.project == "churn"
        assert sorted(run.files) == ["inputs/features.parquet", "outputs/metrics.json"]
        entry = run.files["inputs/features.parquet"]
        assert entry["format"] == "parquet" and entry["size"] == local.stat().st_size
        pd.testing.assert_frame_equal(store.load_data(entry["hash"]), training_df)
        assert store.load_data(run.outputs["outputs/metrics.json"]["hash"]) == b'{"auc": 0.91}'
        assert store.find_runs_by_data(entry["hash"]) == ["run_m"]
        # And the other way: a Python output appears in the mounted run at once (its view
        # was listed by this mount, which reads the run's state again within --refresh).
        store.add_run_output(run, "predictions", training_df[["customer_id"]])
        path = os.path.join(run_dir, "outputs", "predictions.parquet")
        wait_for(lambda: os.path.exists(path), 10, "the Python output in the mount")
        pd.testing.assert_frame_equal(pd.read_parquet(path), training_df[["customer_id"]])


def test_data_stored_with_mltrack_put_is_found_by_hash(env, training_df, tmp_path):
    local = tmp_path / "train.parquet"
    training_df.to_parquet(local)
    put = env.cli_json("put", str(local), "--name", "train")
    assert put["new"]
    store = FlexibleDataStore()
    pd.testing.assert_frame_equal(store.load_data(put["hash"]), training_df)
    pd.testing.assert_frame_equal(store.load_data(put["hash"][:6]), training_df)
    again = store.store_data(local)
    assert again.hash == put["hash"] and not again.new
    # Python's store_data, the CLI's get: the same bytes.
    ref = store.store_data(b"written from python\n", "note.txt")
    out = tmp_path / "note.txt"
    env.cli("get", ref.hash, "-o", str(out))
    assert out.read_bytes() == b"written from python\n"
    # A run made with the CLI is a RunManifest here.
    env.cli("run", "create", "cli_run", "--type", "analysis", "--project", "p", "--tag", "k=v")
    env.cli("run", "add-input", "cli_run", "train.parquet", "--hash", put["hash"])
    run = store.get_run("cli_run")
    assert run.run_type is RunType.ANALYSIS and run.tags == {"k": "v"}
    assert run.inputs["inputs/train.parquet"]["hash"] == put["hash"]
    assert sorted(store.find_runs_by_data(put["hash"])) == ["cli_run"]
