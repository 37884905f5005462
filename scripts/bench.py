#!/usr/bin/env python3
"""mltrack benchmarks: every figure measured side by side with its limit in the same run.

Run through scripts/bench, which installs what is needed. Each case is repeated (3 times, or
once with --quick) and the median is reported, with the ratio mltrack/limit: for times, 1.00
means as fast as the limit and 2.00 twice as slow. Writes a table to stdout, JSON to
target/bench/results.json and regenerates docs/BENCHMARKS.md.
"""

import argparse
import datetime
import json
import os
import platform
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


def peak_rss_mib(cmd, env=None, setup=None):
    if setup:
        setup()
    out = sh(["/usr/bin/time", "-f", "%M"] + cmd, env=env, capture=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """The s3s-fs binary serving a directory on 127.0.0.1, stopped on exit."""

    def __init__(self, root):
        os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
        self.root = root
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["s3s-fs", "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", ACCESS, "--secret-key", SECRET, root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("s3s-fs did not start")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

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

    def curl_put(self, path, key):
        return ["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "--user", f"{ACCESS}:{SECRET}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "-T", path, f"{self.endpoint}/{BUCKET}/{key}"]

    def clear(self):
        """Removes every object (s3s-fs keeps them as plain files under the bucket's folder)."""
        bucket = os.path.join(self.root, BUCKET)
        for name in os.listdir(bucket):
            p = os.path.join(bucket, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller files, one repetition")
    ap.add_argument("--mltrack", required=True)
    args = ap.parse_args()
    repeat = 1 if args.quick else 3
    size = (512 << 20) if args.quick else (2 << 30)
    label = f"{size >> 20} MiB" if size < (1 << 30) else f"{size >> 30} GiB"
    work = tempfile.mkdtemp(prefix="mltrack-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    results = []
    server = None

    def add(case, mltrack, limit_name, limit, unit="s", peers=None):
        results.append({"case": case, "mltrack": mltrack, "limit_name": limit_name,
                        "limit": limit, "ratio": mltrack / limit if limit else None,
                        "unit": unit, "peers": peers or {}})
        ratio = f"{mltrack / limit:.2f}x" if limit else "-"
        print(f"{case:<48} {mltrack:>9.2f} {unit:<4} {limit_name:<30} {limit:>9.2f} {unit:<4} {ratio}",
              flush=True)

    try:
        mlt = args.mltrack
        data = os.path.join(work, "data.bin")
        make_file(data, size)
        store = os.path.join(work, "store")
        lock_dir = os.path.join(work, "locks")
        local_env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=lock_dir)

        def fresh_store():
            shutil.rmtree(store, ignore_errors=True)

        print(f"{'case':<48} {'mltrack':>14} {'limit':<30} {'':>14} ratio", flush=True)
        sh(["cat", data], check=True)  # same page-cache state for every side
        openssl = median_time(repeat, ["openssl", "dgst", "-sha256", data])
        copy_dst = os.path.join(work, "copy.bin")
        cp_sync = median_time(repeat, ["sh", "-c", f"cp {data} {copy_dst} && sync {copy_dst}"],
                              setup=lambda: os.path.exists(copy_dst) and os.remove(copy_dst))
        os.path.exists(copy_dst) and os.remove(copy_dst)

        put_new = median_time(repeat, [mlt, "put", data], env=local_env, setup=fresh_store)
        add(f"put new {label}, local store", put_new, "openssl dgst -sha256", openssl)
        add(f"put new {label}, local store", put_new, "cp + sync to local disk", cp_sync)
        put_dup = median_time(repeat, [mlt, "put", data, "--name", "again"], env=local_env)
        add(f"put already-stored {label}, local store", put_dup, "openssl dgst -sha256", openssl)
        rss = peak_rss_mib([mlt, "put", data], env=local_env, setup=fresh_store)
        add(f"peak memory of put {label}, local store", rss, "size of the file", size / (1 << 20), unit="MiB")

        server = S3Server(os.path.join(work, "s3"))
        counter = [0]

        def next_prefix():
            counter[0] += 1
            return f"run{counter[0]}"

        def s3_put_new():
            return timed([mlt, "put", data], env=server.env(next_prefix()))

        curl = statistics.median(
            timed(server.curl_put(data, f"plain/{i}")) for i in range(repeat))
        s3_new = statistics.median(s3_put_new() for _ in range(repeat))
        add(f"put new {label}, S3 (s3s-fs on 127.0.0.1)", s3_new, "curl PUT, same server", curl)
        add(f"put new {label}, S3 (s3s-fs on 127.0.0.1)", s3_new, "openssl dgst -sha256", openssl)
        env = server.env("dup")
        sh([mlt, "put", data], env=env)
        s3_dup = median_time(repeat, [mlt, "put", data, "--name", "again"], env=env)
        add(f"put already-stored {label}, S3", s3_dup, "openssl dgst -sha256", openssl)
        rss = peak_rss_mib([mlt, "put", data], env=server.env(next_prefix()))
        add(f"peak memory of put {label}, S3", rss, "size of the file", size / (1 << 20), unit="MiB")
        mount_cases(mlt, work, server, data, size, label, repeat, add)
        # Objects of the cases above are not needed again: free the disk for the next ones.
        server.clear()
        shutil.rmtree(os.path.join(work, "mount-cache"), ignore_errors=True)
        write_cases(mlt, work, server, data, size, label, repeat, add, args.quick)
        tree_cases(mlt, work, repeat, add, args.quick)
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        # Whatever was measured is reported, also when a later case failed.
        write_reports(results, args.quick, repeat)


def mount_cases(mlt, work, server, data, size, label, repeat, add):
    """Reads through a mount of the S3 store: cold (empty cache) and warm (fully cached)."""
    env = server.env("mounted")
    sh([mlt, "put", data, "--name", "bench"], env=env)
    h = sh(["openssl", "dgst", "-sha256", "-r", data], capture=True).stdout.split()[0]
    mnt = os.path.join(work, "mnt")
    cache = os.path.join(work, "mount-cache")
    os.makedirs(mnt, exist_ok=True)
    rel = os.path.join(mnt, "data", h[:2], h, "data.bin")
    cat_local = median_time(repeat, ["sh", "-c", f"cat {data} > /dev/null"])
    curl_get = median_time(repeat, ["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
                                      "--user", f"{ACCESS}:{SECRET}", "-o", "/dev/null",
                                      "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                                      f"{server.endpoint}/{BUCKET}/mounted/data/{h[:2]}/{h}/data.bin"])

    def mounted(cmd, fresh_cache):
        if fresh_cache:
            shutil.rmtree(cache, ignore_errors=True)
        sh([mlt, "mount", mnt, "--cache-dir", cache, "--cache-size", f"{2 * size}"], env=env)
        try:
            return timed(cmd)
        finally:
            sh([mlt, "unmount", mnt], env=env, check=False)
            for _ in range(100):
                if subprocess.run(["mountpoint", "-q", mnt]).returncode != 0:
                    break
                time.sleep(0.05)
            time.sleep(0.3)

    cold = statistics.median(mounted(["sh", "-c", f"cat {rel} > /dev/null"], True) for _ in range(repeat))
    add(f"cold read {label} through the mount (S3)", cold, "curl GET, same server", curl_get)
    mounted(["sh", "-c", f"cat {rel} > /dev/null"], True)  # fill the cache
    warm = statistics.median(mounted(["sh", "-c", f"cat {rel} > /dev/null"], False) for _ in range(repeat))
    add(f"warm read {label} through the mount (new mount, cached)", warm, "cat of the file on local disk", cat_local)

    # Four readers of the same object at once: cold (they share the fetches) and warm.
    four = lambda path: ["sh", "-c", " & ".join([f"cat {path} > /dev/null"] * 4) + " & wait"]
    get = " ".join(["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
                    "--user", f"{ACCESS}:{SECRET}", "-o", "/dev/null",
                    "-H", "'x-amz-content-sha256: UNSIGNED-PAYLOAD'",
                    f"{server.endpoint}/{BUCKET}/mounted/data/{h[:2]}/{h}/data.bin"])
    four_gets = median_time(repeat, ["sh", "-c", " & ".join([get] * 4) + " & wait"])
    cold4 = statistics.median(mounted(four(rel), True) for _ in range(repeat))
    add(f"4 parallel cold reads of {label} through the mount", cold4, "4 parallel curl GETs", four_gets)
    mounted(["sh", "-c", f"cat {rel} > /dev/null"], True)
    four_local = median_time(repeat, four(data))
    warm4 = statistics.median(mounted(four(rel), False) for _ in range(repeat))
    add(f"4 parallel warm reads of {label} through the mount", warm4, "4 parallel cats on local disk", four_local)


class Mounted:
    """`mltrack mount --foreground` under /usr/bin/time, so that its peak memory is known."""

    def __init__(self, mlt, mnt, cache, env, extra=()):
        self.mlt, self.mnt, self.env = mlt, mnt, env
        os.makedirs(mnt, exist_ok=True)
        self.rss_file = mnt.rstrip("/") + ".rss"
        self.proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", self.rss_file, mlt, "mount", mnt, "--foreground",
             "--cache-dir", cache, *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if subprocess.run(["mountpoint", "-q", mnt]).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("the mount did not come up")

    def stop(self):
        """Unmounts; returns the daemon's peak RSS in MiB."""
        sh([self.mlt, "unmount", self.mnt], env=self.env, check=False)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.2)
        with open(self.rss_file) as f:
            return int(f.read().strip().splitlines()[-1]) / 1024


def write_cases(mlt, work, server, data, size, label, repeat, add, quick):
    """Writing through the mount (issue 4): new data, stored data, references, small files."""
    big = os.path.join(work, "big.bin")
    make_file(big, 2 * size)
    cp_local = median_time(repeat, ["sh", "-c", f"cp {data} {work}/cp-dst.bin && sync {work}/cp-dst.bin"],
                           setup=lambda: os.path.exists(f"{work}/cp-dst.bin") and os.remove(f"{work}/cp-dst.bin"))
    os.path.exists(f"{work}/cp-dst.bin") and os.remove(f"{work}/cp-dst.bin")
    curl = statistics.median(timed(server.curl_put(data, f"plain-w/{i}")) for i in range(repeat))
    openssl = median_time(repeat, ["openssl", "dgst", "-sha256", data])
    ln_local = median_time(repeat, ["sh", "-c", f"ln {data} {work}/ln-dst && rm {work}/ln-dst"])
    for kind in ("local", "S3"):
        times, dup_times, ln_times, cp_ref_times = [], [], [], []
        for i in range(repeat):
            store = os.path.join(work, f"wstore{i}")
            env = (dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
                   if kind == "local" else server.env(f"writes{i}"))
            mnt, cache = os.path.join(work, "wmnt"), os.path.join(work, f"wcache{i}")
            m = Mounted(mlt, mnt, cache, env)
            try:
                runs = os.path.join(mnt, "runs", "by_project", "bench")
                for r in ("a", "b", "c"):
                    os.makedirs(os.path.join(runs, r))
                times.append(timed(["cp", data, f"{runs}/a/outputs/new.bin"]))
                dup_times.append(timed(["cp", data, f"{runs}/b/inputs/again.bin"]))
                h = sh(["getfattr", "--only-values", "-n", "user.mltrack.sha256",
                        f"{runs}/a/outputs/new.bin"], capture=True).stdout.strip()
                obj = os.path.join(mnt, "data", h[:2], h, "data.bin")
                ln_times.append(timed(["ln", obj, f"{runs}/c/inputs/linked.bin"]))
                cp_ref_times.append(timed(["cp", obj, f"{runs}/c/inputs/copied.bin"]))
            finally:
                m.stop()
                shutil.rmtree(cache, ignore_errors=True)
                if kind == "local":
                    shutil.rmtree(store, ignore_errors=True)
                else:
                    server.clear()
        new = statistics.median(times)
        if kind == "local":
            add(f"cp new {label} into a run, local store", new, "cp + sync to local disk", cp_local)
        else:
            add(f"cp new {label} into a run, S3", new, "curl PUT, same server", curl)
        add(f"cp already-stored {label} into a run, {kind}", statistics.median(dup_times),
            "openssl dgst -sha256", openssl)
        add(f"ln of a stored {label} object into a run, {kind}", statistics.median(ln_times),
            "ln on local disk", ln_local)
        add(f"whole-file cp of a stored {label} object, {kind}", statistics.median(cp_ref_times),
            "ln on local disk", ln_local)

    # Peak daemon memory while writing a file twice the size of the others.
    store = os.path.join(work, "memstore")
    env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
    m = Mounted(mlt, os.path.join(work, "memmnt"), os.path.join(work, "memcache"), env,
                ["--cache-size", "1GiB"])
    try:
        os.makedirs(os.path.join(work, "memmnt", "runs", "by_project", "bench", "mem"))
        sh(["cp", big, os.path.join(work, "memmnt", "runs", "by_project", "bench", "mem", "outputs")])
    finally:
        rss = m.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(os.path.join(work, "memcache"), ignore_errors=True)
    add(f"daemon peak memory writing {2 * size >> 20} MiB", rss, "size of the file", (2 * size) >> 20, unit="MiB")

    # Peak daemon memory reading the same file cold from S3 (through the daemon, not passthrough).
    env = server.env("memread")
    sh([mlt, "put", big], env=env)
    hb = sh(["openssl", "dgst", "-sha256", "-r", big], capture=True).stdout.split()[0]
    m = Mounted(mlt, os.path.join(work, "readmnt"), os.path.join(work, "readcache"), env,
                ["--cache-size", "1GiB"])
    try:
        sh(["sh", "-c", f"cat {work}/readmnt/data/{hb[:2]}/{hb}/data.bin > /dev/null"])
    finally:
        rss = m.stop()
        shutil.rmtree(os.path.join(work, "readcache"), ignore_errors=True)
    add(f"daemon peak memory reading {2 * size >> 20} MiB (S3, cold)", rss, "size of the file", (2 * size) >> 20, unit="MiB")
    os.remove(big)

    # Many small files into one run, as `cp -r` writes them.
    count = 1000 if quick else 10000
    small = os.path.join(work, "small")
    os.makedirs(small, exist_ok=True)
    for i in range(count):
        with open(os.path.join(small, f"f{i:05}"), "wb") as f:
            f.write(os.urandom(4096))
    local_cp = median_time(repeat, ["sh", "-c", f"rm -rf {work}/small-dst && cp -r {small} {work}/small-dst && sync"])
    store = os.path.join(work, "smallstore")
    env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
    m = Mounted(mlt, os.path.join(work, "smallmnt"), os.path.join(work, "smallcache"), env)
    try:
        run = os.path.join(work, "smallmnt", "runs", "by_project", "bench", "small")
        os.makedirs(run)
        t = timed(["cp", "-r", small, os.path.join(run, "outputs")])
        ls = timed(["ls", "-lR", run])
    finally:
        m.stop()
        shutil.rmtree(store, ignore_errors=True)
    add(f"{count} files of 4 KiB cp -r into one run, local store", t, "cp -r + sync on local disk", local_cp)
    local_ls = median_time(repeat, ["ls", "-lR", f"{work}/small-dst"])
    add(f"ls -lR of those {count} files", ls, "ls -lR on local disk", local_ls)


def tree_cases(mlt, work, repeat, add, quick):
    """A store with many runs (issue 3): mount time and `ls -lR` of the runs."""
    runs = 1000 if quick else 10000
    store = os.path.join(work, "treestore")
    env = dict(os.environ, MLTRACK_STORE=store, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
    # Ten small objects, stored with the CLI; the runs are written as files in the store's own
    # layout (PRODUCT.md section 2), which is what 10,000 `run create` calls would leave.
    objs = []
    for i in range(10):
        p = os.path.join(work, f"obj{i}.csv")
        with open(p, "w") as f:
            f.write(f"id,value\n{i},{i * i}\n")
        out = sh([mlt, "--json", "put", p], env=env, capture=True).stdout
        meta = json.loads(out)
        objs.append((meta["hash"], meta["size"]))
    mirror = os.path.join(work, "treelocal")
    for r in range(runs):
        run_id = f"run{r:05}"
        files = {}
        for i, (h, sz) in enumerate(objs):
            files[f"outputs/f{i}.csv"] = {"hash": h, "size": sz, "format": "csv", "role": "output",
                                           "mtime": "2026-11-26T10:00:00Z", "mode": 420,
                                           "added_at": "2026-11-26T10:00:00Z"}
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
        d = os.path.join(mirror, "by_project", f"p{r % 10}", run_id, "outputs")
        os.makedirs(d, exist_ok=True)
        os.makedirs(os.path.join(mirror, "by_project", f"p{r % 10}", run_id, "inputs"), exist_ok=True)
        for i in range(10):
            with open(os.path.join(d, f"f{i}.csv"), "w") as f:
                f.write(f"id,value\n{i},{i * i}\n")
    empty = os.path.join(work, "emptystore")
    empty_env = dict(os.environ, MLTRACK_STORE=empty, MLTRACK_LOCK_DIR=os.path.join(work, "locks"))
    mnt = os.path.join(work, "treemnt")
    os.makedirs(mnt, exist_ok=True)

    def mount_time(e):
        t = timed([mlt, "mount", mnt, "--cache-dir", os.path.join(work, "treecache")], env=e)
        sh([mlt, "unmount", mnt], env=e, check=False)
        time.sleep(0.5)
        return t

    with_runs = statistics.median(mount_time(env) for _ in range(repeat))
    without = statistics.median(mount_time(empty_env) for _ in range(repeat))
    add(f"mount time, store with {runs} runs", with_runs, "mount time, empty store", without)
    m = Mounted(mlt, mnt, os.path.join(work, "treecache"), env)
    try:
        ls = timed(["ls", "-lR", os.path.join(mnt, "runs", "by_project")])
    finally:
        m.stop()
    local_ls = median_time(repeat, ["ls", "-lR", os.path.join(mirror, "by_project")])
    add(f"ls -lR of {runs} runs of 10 files (first listing)", ls, "ls -lR of the same tree on local disk", local_ls)


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


def write_reports(results, quick, repeat):
    out_dir = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "bench")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = {"date": stamp, "machine": machine(), "quick": quick, "repeat": repeat, "results": results}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench`" + (" --quick" if quick else "") + f" on {stamp}, on {machine()}.",
        f"Each figure is the median of {repeat} run(s); each ratio is mltrack divided by a limit",
        "measured in the same run on the same files with the same page-cache state (for times,",
        "1.00 is as fast as the limit, 2.00 twice as slow).",
        "",
        "| case | mltrack | limit | limit value | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {r['case']} | {r['mltrack']:.2f} {r['unit']} | {r['limit_name']} | "
                     f"{r['limit']:.2f} {r['unit']} | {ratio} |")
    lines.append("")
    with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"\nwrote {os.path.join(out_dir, 'results.json')} and docs/BENCHMARKS.md")


if __name__ == "__main__":
    sys.exit(main())
