#!/usr/bin/env python3
"""mltrack benchmarks: every figure measured side by side with its limit, and with the FUSE
clients people use instead (s3fs-fuse and `rclone mount`), in the same run.

Run through scripts/bench, which installs what is needed. Each case is repeated (3 times, or
once with --quick) and the median is reported, with the ratio mltrack/limit: for times, 1.00
means as fast as the limit and 2.00 twice as slow; a peer's ratio is against the same limit.
The many-small-files and many-runs cases run once (they take minutes each). Writes a table to
stdout, JSON to $CARGO_TARGET_DIR/bench/results.json and regenerates docs/BENCHMARKS.md;
`--only small,tree` runs some groups of cases (GROUPS) and leaves docs/BENCHMARKS.md alone.

Every daemon, mount and server started here is stopped and unmounted when the run ends, also
when it fails or is interrupted (SIGINT, SIGTERM).
"""

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCESS, SECRET, BUCKET = "bench-access", "bench-secret-key", "bench"
# The S3 server: s3s-fs with TCP_NODELAY (examples/s3_server.rs), built by scripts/bench.
S3_SERVER = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                         "release", "examples", "s3_server")
PEERS = ("s3fs", "rclone")

# The groups of cases, in the order they run (`--only` picks some).
GROUPS = ("cli", "read", "write", "memory", "small", "tree")

# What to undo when the run ends: mount points and processes, newest first.
MOUNTS, PROCS = [], []


def sh(cmd, env=None, check=True, capture=False):
    return subprocess.run(cmd, env=env, check=check, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE if capture else None)


def timed(cmd, env=None, setup=None):
    """Seconds one run of cmd takes (setup, untimed, runs first)."""
    if setup:
        setup()
    start = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - start


def median_time(repeat, cmd, env=None, setup=None):
    return statistics.median(timed(cmd, env, setup) for _ in range(repeat))


def median_of(repeat, fn):
    return statistics.median(fn() for _ in range(repeat))


def peak_rss_mib(cmd, env=None, setup=None):
    if setup:
        setup()
    out = sh(["/usr/bin/time", "-f", "%M"] + cmd, env=env, capture=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_mounted(path):
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


def cleanup():
    for mnt in reversed(MOUNTS):
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
    for proc in reversed(PROCS):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class S3Server:
    """s3s-fs serving a directory on 127.0.0.1 (examples/s3_server.rs: the s3s-fs library with
    TCP_NODELAY on its connections; the stand-alone s3s-fs binary stalls small answers 40 ms on
    Nagle and delayed ACKs). It keeps each object as a plain file at <root>/<bucket>/<key>, so a
    case can lay out thousands of objects with plain file writes."""

    def __init__(self, root):
        os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
        self.root = root
        self.port = free_port()
        self.proc = subprocess.Popen(
            [S3_SERVER, "--port", str(self.port),
             "--access-key", ACCESS, "--secret-key", SECRET, root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.append(self.proc)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{S3_SERVER} did not start (scripts/bench builds it)")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def path(self, key):
        """Where the server keeps the object `key`."""
        return os.path.join(self.root, BUCKET, key)

    def env(self, prefix):
        env = dict(os.environ)
        env.update({
            "MLTRACK_STORE": f"s3://{BUCKET}/{prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        return env

    def curl(self, *args):
        return ["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "--user", f"{ACCESS}:{SECRET}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                *args]

    def curl_put(self, path, key):
        return self.curl("-T", path, f"{self.endpoint}/{BUCKET}/{key}")

    def curl_get(self, key):
        return self.curl("-o", "/dev/null", f"{self.endpoint}/{BUCKET}/{key}")

    def clear(self):
        """Removes every object, to free the disk for the next case."""
        bucket = os.path.join(self.root, BUCKET)
        for name in os.listdir(bucket):
            p = os.path.join(bucket, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def remove(self, prefix):
        """Removes the objects under `prefix` (a top-level directory of the bucket): the write
        cases free each 2 GiB copy once it is measured, or they need 36 GiB of disk at once."""
        shutil.rmtree(os.path.join(self.root, BUCKET, prefix), ignore_errors=True)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pid):
    """User and system CPU seconds process `pid` (all its threads) has used (for the probes)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pids, step):
    """What `step()` returns, and the CPU seconds each process of `pids` used while it ran."""
    before = [cpu_seconds(p) for p in pids]
    result = step()
    return result, [cpu_seconds(p) - b for p, b in zip(pids, before)]


class Daemon:
    """A FUSE daemon run in the foreground under /usr/bin/time, so that its peak memory and
    its start-up time (until the mount point is live) are known. stop() unmounts it."""

    def __init__(self, cmd, mnt, env=None):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.rss_file = mnt.rstrip("/") + ".rss"
        self.log = open(mnt.rstrip("/") + ".log", "w")
        start = time.perf_counter()
        self.proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", self.rss_file, *cmd],
                                     env=env, stdout=self.log, stderr=self.log)
        PROCS.append(self.proc)
        MOUNTS.append(mnt)
        while not is_mounted(mnt):
            if self.proc.poll() is not None or time.perf_counter() - start > 120:
                self.proc.kill()
                raise RuntimeError(f"{cmd[0]} did not mount {mnt}; see {self.log.name}")
            time.sleep(0.01)
        self.startup = time.perf_counter() - start

    @property
    def pid(self):
        """The daemon's own process: the one child of /usr/bin/time (for the probes)."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def stop(self):
        """Unmounts and waits for the daemon to exit; returns its peak RSS in MiB."""
        if subprocess.run(["umount", self.mnt], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        with open(self.rss_file) as f:
            return int(f.read().strip().splitlines()[-1]) / 1024


class Tools:
    """How to mount the S3 store with mltrack and with each peer, and where an object appears.

    Peers see the bucket's plain objects: s3fs mounts one flat prefix (`bucket:/prefix`; s3s-fs
    answers a HEAD of a nested "directory" key with 500, which s3fs retries for minutes, so s3fs
    gets no nested trees), rclone the whole bucket. Cold cases run each tool without its disk
    cache (mltrack: an empty cache directory; s3fs: no use_cache; rclone: --vfs-cache-mode off);
    warm cases with the cache filled by an earlier mount (s3fs use_cache, rclone full)."""

    def __init__(self, mlt, server, work):
        self.mlt, self.server, self.work = mlt, server, work
        self.passwd = os.path.join(work, "s3fs.passwd")
        with open(self.passwd, "w") as f:
            f.write(f"{ACCESS}:{SECRET}\n")
        os.chmod(self.passwd, 0o600)
        self.rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.rclone_env.update({
            "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET,
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        })

    def mltrack(self, mnt, prefix, cache, cache_size, extra=()):
        return Daemon([self.mlt, "mount", mnt, "--foreground", "--cache-dir", cache,
                       "--cache-size", str(cache_size), *extra], mnt, self.server.env(prefix))

    def s3fs(self, mnt, prefix, cache=None):
        os.makedirs(self.server.path(prefix), exist_ok=True)
        opts = [f"url={self.server.endpoint}", "use_path_request_style", f"passwd_file={self.passwd}",
                "endpoint=us-east-1", "sigv4"]
        if cache:
            opts.append(f"use_cache={cache}")
        cmd = ["s3fs", f"{BUCKET}:/{prefix}", mnt, "-f"]
        for o in opts:
            cmd += ["-o", o]
        return Daemon(cmd, mnt)

    def rclone(self, mnt, mode, cache, extra=()):
        return Daemon(["rclone", "mount", f"bench:{BUCKET}", mnt, "--vfs-cache-mode", mode,
                       "--cache-dir", cache, *extra], mnt, self.rclone_env)

    def wait_for_object(self, key, size, timeout=600):
        """rclone uploads after close, in the background: a write is done once the object is in
        the bucket (s3s-fs renames a finished upload into place)."""
        start = time.perf_counter()
        path = self.server.path(key)
        while not (os.path.exists(path) and os.path.getsize(path) == size):
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"rclone did not upload {key}")
            time.sleep(0.01)


def make_file(path, size):
    """Incompressible bytes, written once and reused."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        left = size
        block = os.urandom(64 << 20)
        i = 0
        while left > 0:
            # Vary each block so that no two blocks of the file are the same.
            chunk = (i.to_bytes(8, "little") + block[8:])[:min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
            i += 1


def label_of(size):
    return f"{size >> 20} MiB" if size < (1 << 30) else f"{size >> 30} GiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller files, fewer runs, one repetition")
    ap.add_argument("--mltrack", required=True)
    ap.add_argument("--python", required=True, help="a Python with the mltrack package")
    ap.add_argument("--only", help="comma-separated groups of cases to run, of "
                    f"{','.join(GROUPS)}; the table is printed and docs/BENCHMARKS.md is left "
                    "as it was")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    if only - set(GROUPS):
        ap.error(f"--only: unknown groups {','.join(sorted(only - set(GROUPS)))}")
    quick = args.quick
    repeat = 1 if quick else 3
    read_size = (256 << 20) if quick else (1 << 30)
    write_size = (256 << 20) if quick else (2 << 30)
    work = tempfile.mkdtemp(prefix="mltrack-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    results = []
    server = None
    # Also SIGINT: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    stopped = False

    def add(case, mltrack, limit_name, limit, unit="s", peers=None):
        peers = peers or {}
        results.append({"case": case, "mltrack": mltrack, "limit_name": limit_name,
                        "limit": limit, "ratio": mltrack / limit if limit else None,
                        "unit": unit, "peers": peers})
        ratio = f"{mltrack / limit:.2f}x" if limit else "-"
        extra = "  ".join(f"{p} {v:.2f} ({v / limit:.2f}x)" if limit else f"{p} {v:.2f}"
                          for p, v in peers.items())
        print(f"{case:<52} {mltrack:>9.2f} {unit:<4} {limit_name:<32} {limit:>9.2f} {unit:<4} "
              f"{ratio:<7} {extra}", flush=True)

    try:
        print(f"{'case':<52} {'mltrack':>14} {'limit':<32} {'':>14} {'ratio':<7} peers", flush=True)
        if "cli" in only:
            cli_cases(args.mltrack, args.python, work, write_size, repeat, add, quick)
        server = S3Server(os.path.join(work, "s3"))
        tools = Tools(args.mltrack, server, work)
        for group, run in (
            ("read", lambda: read_cases(tools, work, read_size, repeat, add, quick)),
            ("write", lambda: write_cases(tools, work, write_size, repeat, add)),
            ("memory", lambda: memory_cases(tools, work, 2 * write_size, add)),
            ("small", lambda: small_file_cases(tools, work, 1000 if quick else 10000, repeat, add)),
            ("tree", lambda: tree_cases(tools, work, 1000 if quick else 10000, repeat, add)),
        ):
            if group in only:
                run()
                server.clear()
    except KeyboardInterrupt:
        print("interrupted: unmounting and stopping everything; the reports are left as they were",
              file=sys.stderr)
        stopped = True
        return 130
    finally:
        cleanup()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        # Whatever was measured is reported, also when a later case failed.
        if not stopped:
            write_reports(results, quick, repeat, partial=args.only is not None)
    return 0


def interrupted(*_):
    raise KeyboardInterrupt


def cli_cases(mlt, python, work, size, repeat, add, quick):
    """`mltrack put` on the local store: hashing and storing, against openssl and cp; and
    Python's `store_data` of the same file, against `mltrack put` (the same core)."""
    label = label_of(size)
    data = os.path.join(work, "data.bin")
    make_file(data, size)
    store = os.path.join(work, "store")
    local_env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))

    def fresh_store():
        shutil.rmtree(store, ignore_errors=True)

    sh(["cat", data])  # same page-cache state for every side
    openssl = median_time(repeat, ["openssl", "dgst", "-sha256", data])
    dst = os.path.join(work, "copy.bin")
    cp_sync = median_time(repeat, ["sh", "-c", f"cp {data} {dst} && sync {dst}"],
                          setup=lambda: os.path.exists(dst) and os.remove(dst))
    os.path.exists(dst) and os.remove(dst)
    put_new = median_time(repeat, [mlt, "put", data], env=local_env, setup=fresh_store)
    add(f"put new {label}, local store", put_new, "openssl dgst -sha256", openssl)
    add(f"put new {label}, local store", put_new, "cp + sync to local disk", cp_sync)
    put_dup = median_time(repeat, [mlt, "put", data, "--name", "again"], env=local_env)
    add(f"put already-stored {label}, local store", put_dup, "openssl dgst -sha256", openssl)
    # The whole call from Python, import and store opening included, as a script pays it.
    store_data = [python, "-c", f"import mltrack; mltrack.FlexibleDataStore().store_data({data!r})"]
    py_new = median_time(repeat, store_data, env=local_env, setup=fresh_store)
    add(f"python store_data new {label}, local store", py_new, "mltrack put", put_new)
    py_dup = median_time(repeat, store_data, env=local_env)
    add(f"python store_data already-stored {label}, local", py_dup, "mltrack put", put_dup)
    if not quick:
        rss = peak_rss_mib([mlt, "put", data], env=local_env, setup=fresh_store)
        add(f"peak memory of put {label}, local store", rss, "size of the file", size >> 20, unit="MiB")
    fresh_store()


def read_cases(tools, work, size, repeat, add, quick):
    """Reading one object through each mount: cold and warm, 1 and 4 readers, and fio random
    reads on a warm cache. The limits: a GET of the object with curl, and cat of a local file."""
    label = label_of(size)
    server, mlt = tools.server, tools.mlt
    data = os.path.join(work, "read.bin")
    make_file(data, size)
    env = server.env("mounted")
    sh([mlt, "put", data, "--name", "bench"], env=env)
    sh(server.curl_put(data, "plain/data.bin"))
    h = sh(["openssl", "dgst", "-sha256", "-r", data], capture=True).stdout.split()[0]
    key = f"mounted/data/{h[:2]}/{h}/data.bin"
    mnt = os.path.join(work, "mnt")
    caches = {t: os.path.join(work, f"cache-{t}") for t in ("mltrack",) + PEERS}

    def start(tool, warm):
        """A fresh mount of `tool`; returns (daemon, path of the object in it)."""
        cache = caches[tool]
        if not warm:
            shutil.rmtree(cache, ignore_errors=True)
        if tool == "mltrack":
            d = tools.mltrack(mnt, "mounted", cache, 4 * size)
            return d, os.path.join(mnt, "data", h[:2], h, "data.bin")
        if tool == "s3fs":
            d = tools.s3fs(mnt, "plain", cache if warm else None)
            return d, os.path.join(mnt, "data.bin")
        d = tools.rclone(mnt, "full" if warm else "off", cache)
        return d, os.path.join(mnt, "plain", "data.bin")

    def once(tool, warm, cmd_of):
        d, path = start(tool, warm)
        try:
            return timed(cmd_of(path))
        finally:
            d.stop()

    def fill(tool):
        """Reads the object once through a fresh mount, so that the tool's cache holds it."""
        shutil.rmtree(caches[tool], ignore_errors=True)
        os.makedirs(caches[tool], exist_ok=True)
        once(tool, True, lambda p: ["sh", "-c", f"cat {p} > /dev/null"])

    cat = lambda p: ["sh", "-c", f"cat {p} > /dev/null"]
    four = lambda p: ["sh", "-c", " & ".join([f"cat {p} > /dev/null"] * 4) + " & wait"]
    get = shlex.join(server.curl_get("plain/data.bin"))
    tools_all = ("mltrack",) + PEERS

    def case(name, limit_name, limit, warm, cmd_of):
        got = {}
        for t in tools_all:
            if warm:
                fill(t)
            got[t] = median_of(repeat, lambda: once(t, warm, cmd_of))
        add(name, got["mltrack"], limit_name, limit, peers={p: got[p] for p in PEERS})

    sh(cat(data))
    curl_get = median_time(repeat, server.curl_get("plain/data.bin"))
    case(f"cold read {label} (1 reader)", "curl GET, same server", curl_get, False, cat)
    observability_cases(tools, mnt, caches["mltrack"], size, h, repeat, add, curl_get, cat)
    cat_local = median_time(repeat, cat(data))
    case(f"warm read {label} (1 reader, new mount)", "cat of a local file", cat_local, True, cat)
    four_gets = median_time(repeat, ["sh", "-c", " & ".join([get] * 4) + " & wait"])
    case(f"cold read {label} (4 readers at once)", "4 curl GETs at once", four_gets, False, four)
    four_local = median_time(repeat, four(data))
    case(f"warm read {label} (4 readers at once)", "4 cats of a local file", four_local, True, four)

    # Random reads with fio on a warm cache, as a data loader would make them. Each side reads the
    # same number of bytes at random offsets; the figure is fio's run time.
    for bs, total in (("4k", (16 << 20) if quick else (64 << 20)), ("1m", size // 2)):
        def fio(path):
            out = sh(["fio", "--name=rand", f"--filename={path}", "--rw=randread", f"--bs={bs}",
                      f"--io_size={total}", "--ioengine=psync", "--invalidate=0", "--readonly",
                      "--randrepeat=1", "--output-format=json"], capture=True).stdout
            return json.loads(out)["jobs"][0]["read"]["runtime"] / 1000

        local = median_of(repeat, lambda: fio(data))
        got = {}
        for t in tools_all:
            fill(t)

            def one():
                d, path = start(t, True)
                try:
                    return fio(path)
                finally:
                    d.stop()
            got[t] = median_of(repeat, one)
        add(f"fio random {bs} reads of {total >> 20} MiB, warm cache", got["mltrack"],
            "fio on a local file", local, peers={p: got[p] for p in PEERS})
    cold_random_case(tools, lambda: start("mltrack", False), key, size, repeat, add)
    for c in caches.values():
        shutil.rmtree(c, ignore_errors=True)
    os.remove(data)


COLD_RANDOM_READS = 2048
COLD_RANDOM_BS = 32 << 10


def cold_random_case(tools, start, key, size, repeat, add):
    """Random 32 KiB reads of a cold object, as `np.load(mmap_mode="r")` and a data loader
    make them: fio on a fresh mount with an empty cache, one reader, against the same number
    of 32 KiB ranged GETs made straight to the store by one curl, one after another over one
    connection (the same concurrency). mltrack alone: the peers' cold random reads are not the
    question of issue 16."""
    fio_cmd = lambda path: ["fio", "--name=cold", f"--filename={path}", "--rw=randread",
                            f"--bs={COLD_RANDOM_BS}", f"--io_size={COLD_RANDOM_READS * COLD_RANDOM_BS}",
                            "--ioengine=psync", "--invalidate=0", "--readonly", "--randrepeat=1",
                            "--output-format=json"]

    def once():
        d, path = start()
        try:
            out = sh(fio_cmd(path), capture=True).stdout
        finally:
            d.stop()
        return json.loads(out)["jobs"][0]["read"]["runtime"] / 1000

    got = median_of(repeat, once)
    rng = random.Random(1)
    server = tools.server
    config = os.path.join(os.path.dirname(server.root), "cold-random.curl")
    with open(config, "w") as f:
        for i in range(COLD_RANDOM_READS):
            at = rng.randrange(size // COLD_RANDOM_BS) * COLD_RANDOM_BS
            f.write("next\n" if i else "")
            f.write(f'url = "{server.endpoint}/{BUCKET}/{key}"\nrange = "{at}-{at + COLD_RANDOM_BS - 1}"\n'
                    f'output = "/dev/null"\naws-sigv4 = "aws:amz:us-east-1:s3"\n'
                    f'user = "{ACCESS}:{SECRET}"\nheader = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n'
                    "silent\nshow-error\nfail\n")
    # One curl: its requests go one after another over one connection, as fio's reads do.
    gets = median_time(repeat, ["curl", "-K", config])
    os.remove(config)
    add(f"fio random {COLD_RANDOM_BS >> 10}k reads of {label_of(size)}, cold cache",
        got, "the same ranged GETs with curl", gets)


def observability_cases(tools, mnt, cache, size, h, repeat, add, curl_get, cat):
    """What counting costs a cold read (`--metrics` on, scraped once a second as Prometheus
    would, against the same mount without it, alternating), and `mltrack warmup` of the object
    through a fresh mount against one curl GET of it."""
    label = label_of(size)
    path = os.path.join(mnt, "data", h[:2], h, "data.bin")

    def cold(extra, scrape_port=None):
        shutil.rmtree(cache, ignore_errors=True)
        d = tools.mltrack(mnt, "mounted", cache, 4 * size, extra)
        scraper = None
        if scrape_port:
            url = f"http://127.0.0.1:{scrape_port}/metrics"
            scraper = subprocess.Popen(["sh", "-c", f"while curl -sf --noproxy '*' {url} > /dev/null; do sleep 1; done"])
        try:
            return timed(cat(path))
        finally:
            if scraper:
                scraper.kill()
                scraper.wait()
            d.stop()

    plain, counted = [], []
    for _ in range(repeat):
        plain.append(cold(()))
        port = free_port()
        counted.append(cold(("--metrics", str(port)), port))
    add(f"cold read {label}, --metrics on and scraped", statistics.median(counted),
        "the same mount without --metrics", statistics.median(plain))

    def warmup():
        shutil.rmtree(cache, ignore_errors=True)
        d = tools.mltrack(mnt, "mounted", cache, 4 * size)
        try:
            return timed([tools.mlt, "warmup", path])
        finally:
            d.stop()

    add(f"mltrack warmup {label} (1 file, empty cache)", median_of(repeat, warmup),
        "curl GET, same server", curl_get)


def write_cases(tools, work, size, repeat, add):
    """Writing through the mount: new data, already-stored data, references. mltrack writes into a
    run; the peers write the same file into their mount (they upload it again whatever it holds)."""
    label = label_of(size)
    server, mlt = tools.server, tools.mlt
    data = os.path.join(work, "data.bin")
    make_file(data, size)  # made by the cli group already, unless `--only` left it out
    dst = os.path.join(work, "cp-dst.bin")
    cp_local = median_time(repeat, ["sh", "-c", f"cp {data} {dst} && sync {dst}"],
                           setup=lambda: os.path.exists(dst) and os.remove(dst))
    os.path.exists(dst) and os.remove(dst)
    curl = statistics.median(timed(server.curl_put(data, f"plain-w/{i}")) for i in range(repeat))
    server.remove("plain-w")
    openssl = median_time(repeat, ["openssl", "dgst", "-sha256", data])
    ln_local = median_time(repeat, ["sh", "-c", f"ln {data} {work}/ln-dst && rm {work}/ln-dst"])
    mnt = os.path.join(work, "wmnt")
    for kind in ("local", "S3"):
        times, dup_times, ln_times, cp_ref_times = [], [], [], []
        for i in range(repeat):
            store = os.path.join(work, f"wstore{i}")
            cache = os.path.join(work, f"wcache{i}")
            if kind == "local":
                env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
                m = Daemon([mlt, "mount", mnt, "--foreground", "--cache-dir", cache], mnt, env)
            else:
                m = tools.mltrack(mnt, f"writes{i}", cache, 10 << 30)
            try:
                runs = os.path.join(mnt, "runs", "by_project", "bench")
                for r in ("a", "b", "c"):
                    os.makedirs(os.path.join(runs, r))
                # Each copy starts with the writeback of the one before it done, as its limit
                # (measured alone) does (docs/PERFORMANCE.md, "Fresh page-cache pages").
                sh(["sync"])
                times.append(timed(["cp", data, f"{runs}/a/outputs/new.bin"]))
                sh(["sync"])
                dup_times.append(timed(["cp", data, f"{runs}/b/inputs/again.bin"]))
                h = sh(["getfattr", "--only-values", "-n", "user.mltrack.sha256",
                        f"{runs}/a/outputs/new.bin"], capture=True).stdout.strip()
                obj = os.path.join(mnt, "data", h[:2], h, "data.bin")
                ln_times.append(timed(["ln", obj, f"{runs}/c/inputs/linked.bin"]))
                cp_ref_times.append(timed(["cp", obj, f"{runs}/c/inputs/copied.bin"]))
            finally:
                m.stop()
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(store, ignore_errors=True)
                if kind == "S3":
                    server.remove(f"writes{i}")
        peers_new, peers_dup = {}, {}
        if kind == "S3":
            news, dups = {p: [] for p in PEERS}, {p: [] for p in PEERS}
            for i in range(repeat):
                d = tools.s3fs(mnt, f"s3fs-w{i}")
                try:
                    sh(["sync"])
                    news["s3fs"].append(timed(["cp", data, f"{mnt}/new.bin"]))
                    sh(["sync"])
                    dups["s3fs"].append(timed(["cp", data, f"{mnt}/again.bin"]))
                finally:
                    d.stop()
                    server.remove(f"s3fs-w{i}")
                d = tools.rclone(mnt, "writes", os.path.join(work, "rc-w"), ["--vfs-write-back", "0s"])
                try:
                    for name, out in (("new", news), ("again", dups)):
                        key = f"rclone-w{i}/{name}.bin"
                        os.makedirs(os.path.dirname(f"{mnt}/{key}"), exist_ok=True)
                        sh(["sync"])
                        start = time.perf_counter()
                        sh(["cp", data, f"{mnt}/{key}"])
                        tools.wait_for_object(key, size)
                        out["rclone"].append(time.perf_counter() - start)
                finally:
                    d.stop()
                    shutil.rmtree(os.path.join(work, "rc-w"), ignore_errors=True)
                    server.remove(f"rclone-w{i}")
            peers_new = {p: statistics.median(v) for p, v in news.items()}
            peers_dup = {p: statistics.median(v) for p, v in dups.items()}
            server.clear()
        new = statistics.median(times)
        if kind == "local":
            add(f"cp new {label} into a run, local store", new, "cp + sync to local disk", cp_local)
        else:
            add(f"cp new {label} into a run, S3", new, "curl PUT, same server", curl, peers=peers_new)
        add(f"cp already-stored {label} into a run, {kind}", statistics.median(dup_times),
            "openssl dgst -sha256", openssl, peers=peers_dup)
        add(f"ln of a stored {label} object into a run, {kind}", statistics.median(ln_times),
            "ln on local disk", ln_local)
        add(f"whole-file cp of a stored {label} object, {kind}", statistics.median(cp_ref_times),
            "ln on local disk", ln_local)


def memory_cases(tools, work, size, add):
    """Peak daemon memory while writing and while reading (cold) a file of `size` on S3."""
    server, mlt = tools.server, tools.mlt
    big = os.path.join(work, "big.bin")
    make_file(big, size)
    mnt = os.path.join(work, "memmnt")
    cache = os.path.join(work, "memcache")
    mib = size >> 20

    def measure(start, dest_of, uploaded=lambda: None):
        d = start()
        try:
            sh(["cp", big, dest_of()])
            uploaded()
        finally:
            rss = d.stop()
            shutil.rmtree(cache, ignore_errors=True)
        return rss

    def mltrack_write():
        d = tools.mltrack(mnt, "memwrite", cache, 1 << 30)
        os.makedirs(os.path.join(mnt, "runs", "by_project", "bench", "mem"))
        return d

    def rclone_write_dest():
        os.makedirs(f"{mnt}/rc-mem", exist_ok=True)
        return f"{mnt}/rc-mem/big.bin"

    w = {
        "mltrack": measure(mltrack_write, lambda: os.path.join(mnt, "runs/by_project/bench/mem/outputs")),
        "s3fs": measure(lambda: tools.s3fs(mnt, "s3fs-mem"), lambda: f"{mnt}/big.bin"),
        "rclone": measure(lambda: tools.rclone(mnt, "writes", cache, ["--vfs-write-back", "0s"]),
                          rclone_write_dest, lambda: tools.wait_for_object("rc-mem/big.bin", size)),
    }
    add(f"daemon peak memory writing {mib} MiB (S3)", w["mltrack"], "size of the file", mib,
        unit="MiB", peers={p: w[p] for p in PEERS})
    server.clear()

    env = server.env("memread")
    sh([mlt, "put", big], env=env)
    sh(server.curl_put(big, "plain/big.bin"))
    hb = sh(["openssl", "dgst", "-sha256", "-r", big], capture=True).stdout.split()[0]

    def read(start, path_of):
        d = start()
        try:
            sh(["sh", "-c", f"cat {path_of()} > /dev/null"])
        finally:
            rss = d.stop()
            shutil.rmtree(cache, ignore_errors=True)
        return rss

    r = {
        "mltrack": read(lambda: tools.mltrack(mnt, "memread", cache, 1 << 30),
                        lambda: f"{mnt}/data/{hb[:2]}/{hb}/data.bin"),
        "s3fs": read(lambda: tools.s3fs(mnt, "plain"), lambda: f"{mnt}/big.bin"),
        "rclone": read(lambda: tools.rclone(mnt, "off", cache), lambda: f"{mnt}/plain/big.bin"),
    }
    add(f"daemon peak memory reading {mib} MiB (S3, cold)", r["mltrack"], "size of the file", mib,
        unit="MiB", peers={p: r[p] for p in PEERS})
    os.remove(big)


def small_files(path, count):
    """`count` files of 4 KiB of random bytes (so that no two sets share data) in `path`."""
    os.makedirs(path, exist_ok=True)
    for i in range(count):
        with open(os.path.join(path, f"f{i:05}"), "wb") as f:
            f.write(os.urandom(4096))


def parallel_cp(src, dest, writers):
    """The files of `src` copied into the existing directory `dest` by `writers` `cp`
    processes at once, each given an equal share (one process each, not one per file)."""
    per = -(-len(os.listdir(src)) // writers)
    return ["sh", "-c", f"cd {shlex.quote(src)} && ls | xargs -P {writers} -n {per} "
            f"cp -t {shlex.quote(dest)}"]


def small_file_cases(tools, work, count, repeat, add):
    """Many 4 KiB files written with `cp` into one directory on S3, then listed with `ls -lR`;
    a tenth as many (how the time a file grows with the run); and another `count` written by
    8 processes at once (what parallel writers share). Each set is new data. Run once per
    tool."""
    server, mlt = tools.server, tools.mlt
    writers = 8
    small, tenth, par = (os.path.join(work, n) for n in ("small", "small-tenth", "small-par"))
    small_files(small, count)
    small_files(tenth, count // 10)
    small_files(par, count)
    local_cp = median_time(repeat, ["sh", "-c", f"rm -rf {work}/small-dst && cp -r {small} {work}/small-dst && sync"])
    local_ls = median_time(repeat, ["ls", "-lR", f"{work}/small-dst"])
    mnt = os.path.join(work, "smallmnt")
    cache = os.path.join(work, "smallcache")
    write, ls, parallel = {}, {}, {}

    # The CPU seconds the S3 server (and the daemon) spend on the writes: on 2 cores shared by
    # the writers, the daemon and the server, what the server spends is not mltrack's to save.
    server_cpu, daemon_cpu = {}, {}

    d = tools.mltrack(mnt, "small", cache, 1 << 30)
    try:
        runs = os.path.join(mnt, "runs", "by_project", "bench")
        run = os.path.join(runs, "small")
        os.makedirs(run)
        write["mltrack"], (server_cpu["mltrack"],) = with_cpu([server.proc.pid], lambda: timed(
            ["cp", "-r", small, os.path.join(run, "outputs")]))
        ls["mltrack"] = timed(["ls", "-lR", run])
        os.makedirs(os.path.join(runs, "tenth"))
        tenth_write = timed(["cp", "-r", tenth, os.path.join(runs, "tenth", "outputs")])
        os.makedirs(os.path.join(runs, "parallel"))
        parallel["mltrack"], (server_cpu["par"], daemon_cpu["par"]) = with_cpu(
            [server.proc.pid, d.pid],
            lambda: timed(parallel_cp(par, os.path.join(runs, "parallel", "outputs"), writers)))
    finally:
        d.stop()
        shutil.rmtree(cache, ignore_errors=True)

    d = tools.s3fs(mnt, "s3fs-small")
    try:
        # s3fs gets a flat directory (see Tools): `cp` of the files, not of their folder.
        write["s3fs"] = timed(["sh", "-c", f"cp {small}/* {mnt}/"])
        ls["s3fs"] = timed(["ls", "-lR", mnt])
    finally:
        d.stop()

    def rclone_write(cmd, prefix):
        """Seconds from `cmd` until rclone has uploaded the `count` files into `prefix`."""
        start = time.perf_counter()
        sh(cmd)
        for i in range(count):
            tools.wait_for_object(f"{prefix}/f{i:05}", 4096)
        return time.perf_counter() - start

    d = tools.rclone(mnt, "writes", cache, ["--vfs-write-back", "0s"])
    try:
        write["rclone"], (server_cpu["rclone"],) = with_cpu([server.proc.pid], lambda: rclone_write(
            ["cp", "-r", small, f"{mnt}/rclone-small"], "rclone-small"))
        ls["rclone"] = timed(["ls", "-lR", f"{mnt}/rclone-small"])
        os.makedirs(f"{mnt}/rclone-par")
        parallel["rclone"] = rclone_write(parallel_cp(par, f"{mnt}/rclone-par", writers),
                                          "rclone-par")
    finally:
        d.stop()
        shutil.rmtree(cache, ignore_errors=True)
    add(f"{count} files of 4 KiB cp -r into one run (S3)", write["mltrack"], "cp -r + sync on local disk",
        local_cp, peers={p: write[p] for p in PEERS})
    add(f"ls -lR of those {count} files", ls["mltrack"], "ls -lR on local disk", local_ls,
        peers={p: ls[p] for p in PEERS})
    # Issue 14: flat, within 1.3x of the time a file of a run a tenth the size.
    add(f"time a file, {count} files cp -r into one run", write["mltrack"] / count * 1000,
        f"the same, {count // 10} files", tenth_write / (count // 10) * 1000, unit="ms")
    # Issue 14: 8 writers at least 3x faster than one (a ratio of 0.33 or less).
    add(f"{count} other files by {writers} cp processes at once", parallel["mltrack"],
        "mltrack, 1 cp -r (2 rows up)", write["mltrack"], peers={"rclone": parallel["rclone"]})
    # What bounds the two rows above on this machine (docs/PERFORMANCE.md, "What the S3
    # server's CPU allows"): the server's own CPU for each file mltrack stores (data,
    # metadata.json, used_by marker, log entry: four requests, where rclone makes one) against
    # rclone's whole time a file; and the CPU of the daemon and the server for the 8 writers,
    # spread over both cores, against issue 14's goal of a third of one writer's time.
    add(f"S3 server CPU a file, those {count} files", server_cpu["mltrack"] / count * 1000,
        "rclone's whole time a file", write["rclone"] / count * 1000, unit="ms",
        peers={"rclone": server_cpu["rclone"] / count * 1000})
    goal = write["mltrack"] / 3
    add(f"S3 server CPU over 2 cores, {writers} writers", server_cpu["par"] / 2,
        "a third of 1 cp -r (issue 14's goal)", goal)
    add(f"daemon + server CPU over 2 cores, {writers} writers",
        (server_cpu["par"] + daemon_cpu["par"]) / 2,
        "a third of 1 cp -r (issue 14's goal)", goal)
    for d in (small, tenth, par, f"{work}/small-dst"):
        shutil.rmtree(d, ignore_errors=True)


def plant_tree(tools, work, runs, first=0, mirrors=True):
    """Lays out `runs` runs of 10 files (numbered from `first`) straight into the server's
    directory under `tree`, in the layout of docs/STORE.md (what `runs` calls of `run create`
    would leave), and with `mirrors` the same tree as plain files on local disk (`treelocal`,
    with each run's empty `inputs/`) and as plain objects (`plaintree`, for rclone). Returns
    the 10 objects' (hash, size)."""
    server, mlt = tools.server, tools.mlt
    env = server.env("tree")
    objs = []
    for i in range(10):
        p = os.path.join(work, f"obj{i}.csv")
        with open(p, "w") as f:
            f.write(f"id,value\n{i},{i * i}\n")
        meta = json.loads(sh([mlt, "--json", "put", p], env=env, capture=True).stdout)
        objs.append((meta["hash"], meta["size"]))
    store = server.path("tree")
    mirror = os.path.join(work, "treelocal")
    plain = server.path("plaintree")
    for r in range(first, first + runs):
        run_id = f"run{r:06}"
        files = {f"outputs/f{i}.csv": {"hash": h, "size": sz, "format": "csv", "role": "output",
                                       "mtime": "2026-11-26T10:00:00Z", "mode": 420,
                                       "added_at": "2026-11-26T10:00:00Z"}
                 for i, (h, sz) in enumerate(objs)}
        manifest = {"schema_version": 1, "run_id": run_id, "run_type": "experiment",
                    "project": f"p{r % 10}", "created_at": "2026-11-26T10:00:00Z",
                    "updated_at": "2026-11-26T10:00:00Z", "storage_modes": ["by_project"],
                    "tags": {}, "files": files}
        os.makedirs(os.path.join(store, "manifests"), exist_ok=True)
        with open(os.path.join(store, "manifests", f"{run_id}.json"), "w") as f:
            json.dump(manifest, f)
        ptr = os.path.join(store, "runs", "by_project", f"p{r % 10}", run_id)
        os.makedirs(ptr, exist_ok=True)
        with open(os.path.join(ptr, "run.json"), "w") as f:
            json.dump({"run_id": run_id, "manifest": f"manifests/{run_id}.json"}, f)
        for h, _ in objs:
            os.makedirs(os.path.join(store, "data", h[:2], h, "used_by"), exist_ok=True)
            open(os.path.join(store, "data", h[:2], h, "used_by", run_id), "w").close()
        if not mirrors:
            continue
        for base in (mirror, plain):
            d = os.path.join(base, "by_project", f"p{r % 10}", run_id, "outputs")
            os.makedirs(d, exist_ok=True)
            for i in range(10):
                with open(os.path.join(d, f"f{i}.csv"), "w") as f:
                    f.write(f"id,value\n{i},{i * i}\n")
        os.makedirs(os.path.join(mirror, "by_project", f"p{r % 10}", run_id, "inputs"), exist_ok=True)
    return objs


def tree_cases(tools, work, runs, repeat, add):
    """A store with many runs of 10 files on S3: mount start-up time, `ls -lR` of the runs (and
    the daemon's peak for three times as many, listed once more on a fresh mount), and the
    CLI's `run list` and `runs-using` over them.
    The store is laid out straight into the server's directory, in the layout of docs/STORE.md
    (what `runs` calls of `run create` would leave). rclone lists the same tree as plain
    objects (10 small files per run); s3fs is left out (it gets no nested trees, see Tools)."""
    server, mlt = tools.server, tools.mlt
    env = server.env("tree")
    objs = plant_tree(tools, work, runs)
    mirror = os.path.join(work, "treelocal")
    mnt = os.path.join(work, "treemnt")
    cache = os.path.join(work, "treecache")

    def startup(start):
        d = start()
        t = d.startup
        d.stop()
        return t

    with_runs = median_of(repeat, lambda: startup(lambda: tools.mltrack(mnt, "tree", cache, 1 << 30)))
    without = median_of(repeat, lambda: startup(lambda: tools.mltrack(mnt, "empty", cache, 1 << 30)))
    rclone = median_of(repeat, lambda: startup(lambda: tools.rclone(mnt, "off", cache)))
    add(f"mount time, S3 store with {runs} runs", with_runs, "mltrack mount time, empty store", without,
        peers={"rclone": rclone})
    local_ls = median_time(repeat, ["ls", "-lR", os.path.join(mirror, "by_project")])
    # A refresh interval longer than the first listing, so that the second is within it.
    d = tools.mltrack(mnt, "tree", cache, 1 << 30, ["--refresh", "600"])
    try:
        ls, (server_cpu,) = with_cpu([tools.server.proc.pid],
                                     lambda: timed(["ls", "-lR", os.path.join(mnt, "runs", "by_project")]))
        ls_again = timed(["ls", "-lR", os.path.join(mnt, "runs", "by_project")])
    finally:
        rss = d.stop()
    # The CLI over the same runs: every manifest read (32 at a time), and one LIST of markers.
    run_list = median_time(repeat, [mlt, "--json", "run", "list"], env=env)
    runs_using = median_time(repeat, [mlt, "--json", "runs-using", objs[0][0]], env=env)
    d = tools.rclone(mnt, "off", cache)
    try:
        rc = timed(["ls", "-lR", os.path.join(mnt, "plaintree", "by_project")])
    finally:
        d.stop()
    add(f"ls -lR of {runs} runs of 10 files (first listing, S3)", ls, "ls -lR of the same tree on local disk",
        local_ls, peers={"rclone": rc})
    # What bounds the first listing on this machine: the server's own CPU for the manifests
    # it serves (a GET each; s3s-fs computes each one's MD5), over both cores, against issue
    # 14's goal (docs/PERFORMANCE.md, "What the S3 server's CPU allows").
    add("S3 server CPU over 2 cores, that first ls -lR", server_cpu / 2,
        "3x ls -lR on local disk (issue 14's goal)", 3 * local_ls)
    add(f"ls -lR of {runs} runs again, within --refresh", ls_again,
        "ls -lR of the same tree on local disk", local_ls)
    add(f"daemon peak memory, that ls -lR of {runs} runs", rss, "the goal of issue 14", 300,
        unit="MiB")
    add(f"mltrack run list over {runs} runs (S3)", run_list, "the goal of issue 14", 5.0)
    add(f"mltrack runs-using over {runs} runs (S3)", runs_using, "the goal of issue 14", 5.0)
    # Issue 14: memory that does not grow with the runs listed. Three times the runs (the
    # store alone: no local or plain copy), listed once on a fresh mount.
    plant_tree(tools, work, 2 * runs, first=runs, mirrors=False)
    shutil.rmtree(cache, ignore_errors=True)
    d = tools.mltrack(mnt, "tree", cache, 1 << 30, ["--refresh", "600"])
    try:
        sh(["ls", "-lR", os.path.join(mnt, "runs", "by_project")])
    finally:
        rss_3x = d.stop()
    add(f"daemon peak memory, ls -lR of {3 * runs} runs", rss_3x, f"the same, {runs} runs (above)",
        rss, unit="MiB")
    shutil.rmtree(cache, ignore_errors=True)


def machine():
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB memory, Linux {platform.release()}"


def version(cmd):
    try:
        return sh(cmd, capture=True, check=False).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "not installed"


def write_reports(results, quick, repeat, partial):
    """results.json, and docs/BENCHMARKS.md unless only some groups ran (`partial`: then
    results-only.json, and the table printed as it went is the report)."""
    out_dir = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "bench")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peers = {"s3fs": version(["s3fs", "--version"]), "rclone": version(["rclone", "version"])}
    doc = {"date": stamp, "machine": machine(), "quick": quick, "repeat": repeat,
           "peers": peers, "results": results}
    name = "results-only.json" if partial else "results.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(doc, f, indent=2)
    if partial:
        print(f"\nwrote {os.path.join(out_dir, name)} (--only: docs/BENCHMARKS.md left as it was)")
        return
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench`" + (" --quick" if quick else "") + f" on {stamp}, on {machine()}.",
        f"Each figure is the median of {repeat} run(s) (the small-files and many-runs cases run",
        "once); each ratio is the figure divided by a limit measured in the same run on the same",
        "files with the same page-cache state (for times, 1.00 is as fast as the limit, 2.00 twice",
        "as slow). Peers ran on the same S3 server (s3s-fs on 127.0.0.1, with TCP_NODELAY:",
        "examples/s3_server.rs) with the same bytes: "
        f"{peers['s3fs']}; {peers['rclone']}.",
        "Cold cases run every tool without its disk cache, warm cases with it filled by an earlier",
        "mount; see `scripts/bench.py` for each tool's options. Why each figure is what it is,",
        "with the profiles and counts behind it: docs/PERFORMANCE.md.",
        "",
        "| case | mltrack | limit | limit value | ratio | s3fs (ratio) | rclone (ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        cells = []
        for p in PEERS:
            v = r["peers"].get(p)
            if v is None:
                cells.append("-")
            elif r["limit"]:
                cells.append(f"{v:.2f} {r['unit']} ({v / r['limit']:.2f})")
            else:
                cells.append(f"{v:.2f} {r['unit']}")
        lines.append(f"| {r['case']} | {r['mltrack']:.2f} {r['unit']} | {r['limit_name']} | "
                     f"{r['limit']:.2f} {r['unit']} | {ratio} | {cells[0]} | {cells[1]} |")
    lines.append("")
    with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"\nwrote {os.path.join(out_dir, 'results.json')} and docs/BENCHMARKS.md")


if __name__ == "__main__":
    sys.exit(main())
