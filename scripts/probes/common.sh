# Shared by the probes: a release build, an s3s-fs server on a free port of 127.0.0.1 serving a
# fresh directory, and the environment that points mltrack at it. Everything is stopped and
# removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
B="${CARGO_TARGET_DIR:-$ROOT/target}/release/mltrack"
[ -x "$B" ] || (cd "$ROOT" && cargo build --release --locked)
W=$(mktemp -d /var/tmp/mltrack-probe-XXXXXX)
mkdir -p "$W/s3/bench" "$W/mnt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key probe --secret-key probe-secret "$W/s3" >/dev/null 2>&1 &
SERVER=$!
cleanup() { umount -l "$W/mnt" 2>/dev/null || true; kill "$SERVER" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
sleep 1
export MLTRACK_STORE=s3://bench/probe AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=probe \
  AWS_SECRET_ACCESS_KEY=probe-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
