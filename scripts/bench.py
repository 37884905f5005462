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
