# Randomised copies of a stored object written into a run (tests/suite/mount_write_dedup.rs).
# Each file starts as a copy, so the mount takes it for the object and checks its blocks as
# they arrive instead of spooling them (docs/MOUNT.md, "Copies of stored data are not
# spooled"); at a random point past the start of that match the writer does one or two things
# a writer may do (read back, write at an earlier place or past the end, truncate shorter or
# longer, fsync, change a byte, stop early, write on past the object's end, pause, open the
# file a second time), with reads compared against a model of the file at random moments.
# Each file must read back as the model says after its close. Prints the expected SHA-256 of
# every file as JSON on its last line; exits non-zero at the first difference.
#   python3 copies_fuzz.py SOURCE OUT_DIR SEED COUNT
import hashlib
import json
import os
import random
import sys
import time

src_path, out_dir, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
src = open(src_path, "rb").read()
MIB = 1 << 20
# Where the mount starts to match a file against stored objects (spool::FOLLOW_AFTER).
MATCH_FROM = 8 * MIB
EVENTS = ["none", "read", "overwrite_before", "write_ahead", "truncate_short",
          "truncate_long", "fsync", "changed_byte", "prefix", "append", "pause", "reopen"]
rng = random.Random(seed)
expected = {}


def check_read(fd, model, what):
    if not model:
        return
    at = rng.randrange(0, len(model))
    n = rng.choice([1, 4096, 65536, MIB, 3 * MIB + 7])
    if os.pread(fd, n, at) != bytes(model[at:at + n]):
        sys.exit(f"{what}: a read of {n} bytes at {at} differs from what was written")


for i in range(count):
    events = [rng.choice(EVENTS) for _ in range(rng.choice([1, 1, 2]))]
    points = [rng.randrange(MATCH_FROM + 1, len(src) + 1) for _ in events]
    name = f"copy_{seed}_{i}.bin"
    what = f"{name} {list(zip(events, points))}"
    path = os.path.join(out_dir, name)
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    pos, stop_at, done = 0, len(src), set()
    while pos < stop_at:
        n = min(rng.choice([1, 4096, 65536, 131072, MIB, 777_777]), stop_at - pos)
        os.pwrite(fd, src[pos:pos + n], pos)
        model[pos:pos + n] = src[pos:pos + n]
        pos += n
        if rng.random() < 0.03:
            check_read(fd, model, what)
        for k, (event, point) in enumerate(zip(events, points)):
            if k in done or pos < point:
                continue
            done.add(k)
            if event == "read":
                for _ in range(3):
                    check_read(fd, model, what)
            elif event == "overwrite_before":
                at = rng.randrange(0, len(model))
                b = rng.randbytes(rng.choice([1, 100, 70000]))
                os.pwrite(fd, b, at)
                model.extend(b"\0" * max(0, at + len(b) - len(model)))
                model[at:at + len(b)] = b
            elif event == "write_ahead":
                at = len(model) + rng.choice([1, 5000, 2 * MIB])
                os.pwrite(fd, b"ahead", at)
                model.extend(b"\0" * (at - len(model)) + b"ahead")
            elif event == "truncate_short":
                size = rng.randrange(0, len(model) + 1)
                os.ftruncate(fd, size)
                del model[size:]
                pos = min(pos, size)
            elif event == "truncate_long":
                size = len(model) + rng.choice([1, 4096, 3 * MIB])
                os.ftruncate(fd, size)
                model.extend(b"\0" * (size - len(model)))
            elif event == "fsync":
                os.fsync(fd)
            elif event == "changed_byte" and pos < len(src):
                b = bytes([src[pos] ^ 0x5A])
                os.pwrite(fd, b, pos)
                model.extend(b"\0" * max(0, pos + 1 - len(model)))
                model[pos:pos + 1] = b
                pos += 1
            elif event == "prefix":
                stop_at = pos
            elif event == "pause":
                time.sleep(0.3)
            elif event == "reopen":
                again = os.open(path, os.O_RDWR)
                check_read(again, model, what)
                os.close(again)
    if "append" in events:
        # Half the time after the whole copy is verified (the hashing catches up meanwhile).
        if rng.random() < 0.5:
            time.sleep(0.3)
        b = b"and then some" * rng.choice([1, 1000])
        os.pwrite(fd, b, len(model))
        model.extend(b)
    if rng.random() < 0.5:
        check_read(fd, model, what)
    os.close(fd)
    with open(path, "rb") as f:
        if f.read() != bytes(model):
            sys.exit(f"{what}: reads back wrong after its close")
    expected[name] = hashlib.sha256(model).hexdigest()
print(json.dumps(expected))
