#!/usr/bin/env bash
# Instructions a proxy executes per call, counted by callgrind: a figure that
# does not drift with what else the machine is doing, so a change to the
# request path can be measured in one run of each build, on any machine.
#
#   benches/callgrind.sh SERVER OP [CALLS]
#
# SERVER is a vecmem binary, or `floor=PATH` for examples/proxy_floor. OP is
# get, search or upsert (one memory per call; the floor serves gets and
# searches only). The in-repo Qdrant double is the backend (started here,
# 2,000 memories of dim 1024 over 10 tenants, seeded through VECMEM); the
# server runs under callgrind with the result cache off, takes 200 calls to
# warm up, then its counters are zeroed and CALLS (default 1000) calls at
# c=1 (or $C at once) are counted. Prints the instructions per call; the
# full profile is left in $OUT (default /tmp/vecmem-callgrind) for
# callgrind_annotate.
#
# Needs valgrind (Debian's package) and:
#   cargo build --profile profiling --bin vecmem --example qdrant_double [--example proxy_floor]
set -euo pipefail

SERVER=${1:?SERVER: a vecmem binary, or floor=PATH}
OP=${2:?OP: get or search}
CALLS=${3:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VECMEM=${VECMEM:-$ROOT/target/profiling/vecmem}
DOUBLE=${QDRANT_DOUBLE:-$ROOT/target/profiling/examples/qdrant_double}
OUT=${OUT:-/tmp/vecmem-callgrind}
mkdir -p "$OUT"
DOUBLE_ADDR=127.0.0.1:7334 SEED_GRPC=127.0.0.1:7100 SEED_HTTP=127.0.0.1:7101
GRPC=127.0.0.1:7200 HTTP=127.0.0.1:7201
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
wait_listening() {
  for _ in $(seq 1 120); do listening "$1" && return 0; sleep 1; done
  echo "nothing listens on $1" >&2
  exit 1
}
serve_vecmem() { # BINARY GRPC HTTP [command prefix...]; run in the background, it becomes the server process
  local binary=$1 grpc=$2 http=$3
  shift 3
  exec env VECMEM__SERVER__GRPC_ADDR="$grpc" VECMEM__SERVER__HTTP_ADDR="$http" \
    VECMEM__BACKEND__KIND=qdrant VECMEM__BACKEND__QDRANT__URL="http://$DOUBLE_ADDR" \
    VECMEM__NAMESPACES__MEMORIES__DIM=1024 VECMEM__PIPELINE__CACHE__ENABLED=false \
    VECMEM__LOG__LEVEL=info VECMEM__BACKEND__EMBEDDED__PATH="$OUT/data" \
    "$@" "$binary" serve
}
bench() { # ADDR extra...
  local addr=$1
  shift
  "$VECMEM" bench --addr "$addr" --namespace memories --dim 1024 --tenants 10 \
    --seed-memories 2000 --distinct-queries 100 -c "${C:-1}" -O json "$@"
}

listening $DOUBLE_ADDR && { echo "$DOUBLE_ADDR is taken" >&2; exit 1; }
"$DOUBLE" $DOUBLE_ADDR > "$OUT/double.log" 2>&1 &
started+=($!)
wait_listening $DOUBLE_ADDR
serve_vecmem "$VECMEM" $SEED_GRPC $SEED_HTTP > "$OUT/seed.log" 2>&1 &
seeder=$!
started+=($seeder)
wait_listening $SEED_GRPC
bench $SEED_GRPC --op get -n 1 > /dev/null
kill "$seeder"

label=$(basename "${SERVER#floor=}")-$OP
if [[ $SERVER == floor=* ]]; then
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$label.out" \
    "${SERVER#floor=}" $GRPC "http://$DOUBLE_ADDR" memories > "$OUT/$label.log" 2>&1 &
else
  serve_vecmem "$SERVER" $GRPC $HTTP valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/$label.out" > "$OUT/$label.log" 2>&1 &
fi
server=$!
started+=($server)
wait_listening $GRPC
bench $GRPC --already-seeded --op "$OP" -n 200 > /dev/null
callgrind_control -z "$server" > /dev/null
bench $GRPC --already-seeded --op "$OP" -n "$CALLS" > "$OUT/$label.bench.json"
callgrind_control -d "$server" > /dev/null
python3 - "$OUT/$label.bench.json" "$OUT/$label.out.1" "$CALLS" "$label" <<'EOF'
import json, sys
report, profile, calls, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ok = json.load(open(report))["ok"]
if ok != calls:
    sys.exit(f"{label}: {calls - ok} of {calls} calls failed; see {report}")
total = next(int(line.split()[1]) for line in open(profile) if line.startswith("summary:"))
print(f"{label}: {total / calls:,.0f} instructions per call ({profile})")
EOF
