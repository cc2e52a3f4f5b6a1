#!/usr/bin/env bash
# Loads N memories of dim 128 (default 1,000,000) into a fresh server, once
# through one Import stream and once through unary Upserts of 256 memories
# (one caller, then four), and reports for each: memories per second, the
# server's CPU per memory, and the server's peak RSS (VmHWM). Every run gets
# a fresh server and data directory, so the peaks are each run's own.
#
#   benches/import.sh target/release/vecmem OUT_DIR [N]
#
# With QDRANT_URL set (e.g. http://127.0.0.1:6334) the server fronts that
# Qdrant, with a fresh collection prefix per run; otherwise it runs the
# embedded engine. Reports land in OUT_DIR as vecmem bench JSON, with
# OUT_DIR/summary.json and a table on stdout.
set -euo pipefail

BIN=$(realpath "$1")
OUT=$(mkdir -p "$2" && realpath "$2")
N=${3:-1000000}
BATCH=256
GRPC=127.0.0.1:50062
HTTP=127.0.0.1:8062
RUN=$(date +%s)

run() { # NAME, then vecmem bench arguments
  local name=$1 data
  shift
  data=$(mktemp -d)
  local backend=()
  if [[ -n ${QDRANT_URL:-} ]]; then
    backend=(VECMEM__BACKEND__KIND=qdrant VECMEM__BACKEND__QDRANT__URL="$QDRANT_URL"
      VECMEM__BACKEND__QDRANT__COLLECTION_PREFIX="import-$RUN-$name-")
  fi
  env "${backend[@]}" VECMEM__BACKEND__EMBEDDED__PATH="$data" \
    VECMEM__SERVER__GRPC_ADDR=$GRPC VECMEM__SERVER__HTTP_ADDR=$HTTP \
    VECMEM__NAMESPACES__BENCH__DIM=128 VECMEM__PIPELINE__CACHE__ENABLED=false \
    "$BIN" serve >"$OUT/$name.server.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 300); do curl -sf "$HTTP/health/ready" >/dev/null && break; sleep 0.1; done
  "$BIN" bench --addr "$GRPC" --namespace bench --batch $BATCH \
    --server-metrics "http://$HTTP/metrics" -O json "$@" >"$OUT/$name.json"
  local peak
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
  echo "$peak" >"$OUT/$name.peak_rss_kb"
}

run import-1-stream --op import -c 1 -n "$N"
run upsert-c1 --op upsert -c 1 -n $((N / BATCH))
run upsert-c4 --op upsert -c 4 -n $((N / BATCH))

python3 - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for name in ["import-1-stream", "upsert-c1", "upsert-c4"]:
    report = json.loads((out / f"{name}.json").read_text())
    rows[name] = {
        "memories_per_s": round(report["memories_per_s"]),
        "server_cpu_us_per_memory": round(report["server_cpu_us_per_memory"], 2),
        "peak_rss_mib": round(int((out / f"{name}.peak_rss_kb").read_text()) / 1024),
        "elapsed_s": round(report["elapsed_s"], 1),
        "errors": report["errors"],
    }
base = rows["upsert-c1"]["memories_per_s"]
for row in rows.values():
    row["vs_upsert_c1"] = round(row["memories_per_s"] / base, 2)
(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
print(f"{'run':<16} {'memories/s':>11} {'x upsert c1':>11} {'CPU us/mem':>10} {'peak RSS MiB':>12} {'s':>7}")
for name, row in rows.items():
    print(f"{name:<16} {row['memories_per_s']:>11} {row['vs_upsert_c1']:>11} "
          f"{row['server_cpu_us_per_memory']:>10} {row['peak_rss_mib']:>12} {row['elapsed_s']:>7}")
EOF
