#!/usr/bin/env bash
# Writes into the embedded engine while it builds indexes (issue 12):
# 100,000 memories x 1024 dims over 100 tenants, then 64 writers upserting
# one memory per call for 5 minutes, then how long the index takes to catch
# up, and searches before and after it has. Reports land in OUT_DIR as
# vecmem bench JSON; the server's log as server.log; the journal's size
# each second of the writes as journal_bytes.txt. Prints how long one
# tenant's export takes before and while the writers run.
#
#   benches/embedded_ingest.sh target/release/vecmem OUT_DIR [RPS]
#
# RPS (optional) paces the writers' total rate; without it they go flat out.
# Admission takes 72 calls at once (not 64), so the 64 writers leave room
# for the exports.
set -euo pipefail

BIN=$(realpath "$1")
OUT=$(mkdir -p "$2" && realpath "$2")
RATE=(${3:+--rps "$3"})
GRPC=127.0.0.1:50061
HTTP=127.0.0.1:8061
DATA=$(mktemp -d)

VECMEM__BACKEND__EMBEDDED__PATH=$DATA VECMEM__SERVER__GRPC_ADDR=$GRPC \
VECMEM__SERVER__HTTP_ADDR=$HTTP VECMEM__PIPELINE__CACHE__ENABLED=false \
VECMEM__ADMISSION__MAX_CONCURRENCY=${VECMEM__ADMISSION__MAX_CONCURRENCY:-72} \
  "$BIN" serve >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf "$HTTP/health/ready" >/dev/null && break; sleep 0.1; done

describe() { curl -s "$HTTP/v1/namespaces/memories"; echo; }
# Waits (at most 15 minutes) until every vector is indexed.
wait_indexed() {
  for _ in $(seq 1 450); do describe | grep -q '"INDEXED"' && return; sleep 2; done
}

bench() { "$BIN" bench --addr "$GRPC" --tenants 100 -O json "$@"; }

bench --op upsert -c 16 --batch 64 -n 1563 >"$OUT/seed.json"
wait_indexed
echo "seeded and indexed: $(describe)"

# A tenant's export (about 1,000 memories): HTTP status, bytes, seconds.
export_s() {
  curl -s -o /dev/null -w '%{http_code}, %{size_download} bytes in %{time_total}' \
    -X POST "$HTTP/v1/namespaces/memories/memories/export" -d '{"tenant":"bench-0"}'
}
echo "export before the writers: $(export_s) s"
bench --op upsert -c 64 --seed 7 -z 5m "${RATE[@]}" >"$OUT/ingest.json" &
INGEST=$!
# While the writers run: the journal's size each second, and two exports.
JOURNAL=$DATA/memories/vecmem-journal
for second in $(seq 1 320); do
  kill -0 $INGEST 2>/dev/null || break
  echo "$second $(stat -c %s "$JOURNAL" 2>/dev/null || echo 0)" >>"$OUT/journal_bytes.txt"
  if [[ $second == 60 || $second == 240 ]]; then echo "export at ${second} s of writes: $(export_s) s"; fi
  sleep 1
done
wait $INGEST
started=$(date +%s)
echo "ingested: $(describe)"
echo "journal: largest $(sort -k2 -n "$OUT/journal_bytes.txt" | tail -1 | cut -d' ' -f2) bytes, at the end $(stat -c %s "$JOURNAL") bytes"
bench --op search -c 8 -n 2000 >"$OUT/search-while-indexing.json"
wait_indexed
echo "index caught up $(($(date +%s) - started)) s after the writers stopped: $(describe)"
bench --op search -c 8 -n 2000 >"$OUT/search-indexed.json"
