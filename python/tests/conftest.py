"""Fixtures for the Python package's tests: a store per test on each backend (a local
directory, and a prefix of the bucket of a real S3 server, examples/s3_server.rs, on
127.0.0.1), the `mltrack` binary with the same store for the CLI side, and real FUSE mounts.

scripts/test builds the package into its virtual environment and runs these after `cargo test`
built the binaries; MLTRACK_BIN and MLTRACK_S3_SERVER name them, else they are looked for under
$CARGO_TARGET_DIR/debug."""

import base64
import contextlib
import json
import os
import socket
import subprocess
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
MLTRACK = os.environ.get("MLTRACK_BIN", os.path.join(TARGET, "debug", "mltrack"))
S3_SERVER = os.environ.get("MLTRACK_S3_SERVER",
                           os.path.join(TARGET, "debug", "examples", "s3_server"))
BUCKET = "mltrack-test"
ACCESS = "mltrack-test-access"
SECRET = "SECRET-sauce-4f1d9c-never-print"

# What the store's environment is made of; every test starts without any of it.
STORE_VARS = ["MLTRACK_STORE", "MLTRACK_S3_BUCKET", "MLTRACK_DEFAULT_RUN_TYPE",
              "MLTRACK_DEFAULT_STORAGE_MODE", "AWS_PROFILE", "AWS_ENDPOINT_URL", "RUST_LOG"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """The S3 server, serving `root`; each object is the file `root/<bucket>/<key>`."""

    def __init__(self, root):
        os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
        self.root = root
        self.port = free_port()
        self.proc = subprocess.Popen(
            [S3_SERVER, "--port", str(self.port), "--access-key", ACCESS, "--secret-key",
             SECRET, root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{S3_SERVER} did not start")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(str(tmp_path_factory.mktemp("s3")))
    yield server
    server.stop()


def s3_env(endpoint, home):
    """The AWS side of the environment for the test server: static keys, no profile, no
    metadata service."""
    for f in ("aws-config", "aws-credentials"):
        open(os.path.join(home, f), "w").close()
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(home, "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials"),
    }


class Env:
    """One test's store: its URL, where its keys live on disk (for both backends, since the
    test server keeps objects as plain files), and the CLI and mounts over it."""

    def __init__(self, backend, tmp, monkeypatch, server):
        self.backend = backend
        self.tmp = tmp
        for var in STORE_VARS:
            monkeypatch.delenv(var, raising=False)
        env = {"MLTRACK_CACHE_DIR": os.path.join(tmp, "cache"), "HOME": tmp}
        if backend == "s3":
            prefix = f"t-{uuid.uuid4().hex[:12]}"
            self.url = f"s3://{BUCKET}/{prefix}"
            self.root = os.path.join(server.root, BUCKET, prefix)
            env.update(s3_env(server.endpoint, tmp))
        else:
            self.url = os.path.join(tmp, "store")
            self.root = self.url
        env["MLTRACK_STORE"] = self.url
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        self.env = dict(os.environ)

    def key(self, key):
        """Where the store keeps `key`."""
        return os.path.join(self.root, key)

    def write_key(self, key, data):
        """Replaces the object `key` behind the store's back (a damaged manifest, say). The
        test server keeps a checksum of each object beside it, which would refuse the new
        bytes as a broken transfer: it goes too."""
        with open(self.key(key), "wb") as f:
            f.write(data)
        if self.backend == "s3":
            full = os.path.relpath(self.key(key), os.path.join(self.root, "..", ".."))
            bucket, name = full.split("/", 1)
            b64 = lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("=")
            side = os.path.join(self.root, "..", "..", f".bucket-{b64(bucket)}.object-"
                                f"{b64(name)}.internal.json")
            assert os.path.exists(side), side
            os.remove(side)

    def keys_under(self, prefix):
        found = []
        for dirpath, _, files in os.walk(self.key(prefix)):
            found += [os.path.relpath(os.path.join(dirpath, f), self.root) for f in files]
        return sorted(found)

    def objects(self):
        """The hashes of the complete objects in the store."""
        return sorted(k.split("/")[2] for k in self.keys_under("data")
                      if k.endswith("/metadata.json"))

    def cli(self, *args):
        out = subprocess.run([MLTRACK, *args], env=self.env, capture_output=True, text=True)
        assert out.returncode == 0, f"mltrack {args}: {out.stderr}"
        return out.stdout

    def cli_json(self, *args):
        return json.loads(self.cli("--json", *args))

    @contextlib.contextmanager
    def mount(self, *extra):
        mnt = os.path.join(self.tmp, f"mnt-{uuid.uuid4().hex[:6]}")
        os.makedirs(mnt)
        log = open(os.path.join(self.tmp, "mount.log"), "w")
        proc = subprocess.Popen(
            [MLTRACK, "mount", mnt, "--foreground", "--cache-dir",
             os.path.join(self.tmp, "mount-cache"), *extra],
            env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.time() + 120
            while not os.path.ismount(mnt):
                assert proc.poll() is None and time.time() < deadline, \
                    open(os.path.join(self.tmp, "mount.log")).read()
                time.sleep(0.02)
            yield mnt
        finally:
            subprocess.run([MLTRACK, "unmount", mnt], env=self.env, capture_output=True)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture(params=["local", "s3"])
def env(request, tmp_path, monkeypatch):
    server = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return Env(request.param, str(tmp_path), monkeypatch, server)


@pytest.fixture
def store(env):
    import mltrack

    return mltrack.FlexibleDataStore()


@pytest.fixture
def training_df():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(42)
    n = 5000
    return pd.DataFrame({
        "customer_id": np.arange(n),
        "tenure_months": rng.integers(1, 72, n),
        "monthly_charges": rng.normal(70, 20, n).round(2),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "churned": rng.random(n) < 0.2,
    })


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)
