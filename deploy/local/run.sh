#!/usr/bin/env bash
# The deploy/docker-compose.yml topology on one machine, without Docker:
# N vecmem replicas on their own loopback ports behind nginx (Debian's
# `apt-get install nginx`) as the gRPC load balancer, all in front of one
# Qdrant.
#
#   deploy/local/run.sh --qdrant-url http://127.0.0.1:6334 [--replicas 3]
#       [--port 50051] [--http-port 8090] [--dir DIR] [--vecmem PATH]
#
# It needs a Qdrant. Replicas cannot share the embedded engine: each would
# own a separate copy of the data on its own disk, and a client would see
# whichever replica it reached. Use a Qdrant server or cluster (the Compose
# file runs one), or on a machine without one the in-repo Qdrant-protocol
# double: `cargo run --release --example qdrant_double -- 127.0.0.1:6334`.
#
# The load balancer listens on --port (gRPC) and --http-port (REST, health);
# replica i (1..N) listens on --port + i and --http-port + i. Any VECMEM__*
# variable in the environment reaches every replica. nginx runs with
# deploy/nginx/nginx.conf, rewritten only where that file marks `# local:`.
#
# DIR (default: a new temporary directory) gets nginx.conf, nginx.log,
# replica-I.log and replica-I.pid. When every replica is ready and nginx
# answers, one line starting with `ready:` is printed; then it runs until
# SIGINT or SIGTERM and stops everything it started. A replica that dies is
# not restarted (that is an orchestrator's job), and the others keep serving.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
replicas=3
port=50051
http_port=8090
qdrant_url=${QDRANT_URL:-}
dir=""
vecmem=""

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --qdrant-url) qdrant_url=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --vecmem) vecmem=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done

if [ -z "$qdrant_url" ]; then
  cat >&2 <<'EOF'
run.sh: no Qdrant given (--qdrant-url URL or QDRANT_URL).
Replicas cannot share vecmem's embedded engine, so this topology needs a
Qdrant every replica reaches, e.g.
  docker run -p 6334:6334 qdrant/qdrant                          # a real one
  cargo run --release --example qdrant_double -- 127.0.0.1:6334   # the in-repo double
then: deploy/local/run.sh --qdrant-url http://127.0.0.1:6334
EOF
  exit 2
fi
case "$replicas" in ''|*[!0-9]*|0) echo "run.sh: --replicas must be a positive number" >&2; exit 2 ;; esac
if [ -z "$vecmem" ]; then
  vecmem="$repo/target/release/vecmem"
  [ -x "$vecmem" ] || vecmem="$repo/target/debug/vecmem"
fi
[ -x "$vecmem" ] || { echo "run.sh: no vecmem binary at $vecmem (cargo build --release)" >&2; exit 2; }
nginx=$(command -v nginx || true)
[ -n "$nginx" ] || nginx=/usr/sbin/nginx
[ -x "$nginx" ] || { echo "run.sh: nginx not found (apt-get install nginx)" >&2; exit 2; }
[ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/vecmem-local.XXXXXX")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# nginx's workers run as an unprivileged user when started by root; they
# must reach the temporary directories (large request bodies) inside DIR.
chmod 755 "$dir"

pids=()
# Everything started here is a job of this shell: replicas, nginx, the sleep.
stop() {
  trap - EXIT INT TERM
  local jobs
  jobs=$(jobs -p)
  [ -z "$jobs" ] || kill -TERM $jobs 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

# The replicas: same config, own ports, own (unused) embedded data path.
for i in $(seq 1 "$replicas"); do
  VECMEM__SERVER__GRPC_ADDR="127.0.0.1:$((port + i))" \
  VECMEM__SERVER__HTTP_ADDR="127.0.0.1:$((http_port + i))" \
  VECMEM__BACKEND__KIND=qdrant \
  VECMEM__BACKEND__QDRANT__URL="$qdrant_url" \
  VECMEM__BACKEND__EMBEDDED__PATH="$dir/replica-$i-data" \
    "$vecmem" serve >"$dir/replica-$i.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$dir/replica-$i.pid"
done

# nginx.conf: the Compose one, with the `# local:` lines rewritten.
awk -v dir="$dir" -v conf="$repo/deploy/nginx" -v port="$port" -v http_port="$http_port" \
    -v replicas="$replicas" '
  /# local: error_log/   { print "error_log " dir "/nginx.log warn;"; next }
  /# local: pid/         { print "pid " dir "/nginx.pid;"; next }
  /# local: grpc listen/ { print "        listen 127.0.0.1:" port " http2;"; next }
  /# local: http listen/ { print "        listen 127.0.0.1:" http_port ";"; next }
  /# local: grpc replicas/ || /# local: http replicas/ {
    base = /grpc replicas/ ? port : http_port
    match($0, /max_fails.*;/)
    for (i = 1; i <= replicas; i++)
      print "        server 127.0.0.1:" base + i " " substr($0, RSTART, RLENGTH)
    next
  }
  /# local: include/     { sub(/\/etc\/nginx\/vecmem/, conf); sub(/ *# local:.*/, ""); print; next }
  { print }
' "$repo/deploy/nginx/nginx.conf" >"$dir/nginx.conf"
# Temporary files (large request bodies) stay inside DIR too.
sed -i "s|^http {|http {\n    client_body_temp_path $dir/client_body;\n    proxy_temp_path $dir/proxy;\n    fastcgi_temp_path $dir/fastcgi;\n    uwsgi_temp_path $dir/uwsgi;\n    scgi_temp_path $dir/scgi;|" "$dir/nginx.conf"
"$nginx" -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/nginx-check.log" \
  || { cat "$dir/nginx-check.log" >&2; exit 1; }
"$nginx" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>>"$dir/nginx.log" &
pids+=("$!")

# Ready when every replica says so and nginx answers; bounded to 60 s.
deadline=$((SECONDS + 60))
for i in $(seq 1 "$replicas"); do
  until "$vecmem" health --url "http://127.0.0.1:$((http_port + i))/health/ready" --timeout-ms 500 \
      >/dev/null 2>&1; do
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      echo "run.sh: replica $i exited; its log, $dir/replica-$i.log:" >&2
      tail -n 20 "$dir/replica-$i.log" >&2
      exit 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || { echo "run.sh: replica $i not ready within 60 s" >&2; exit 1; }
    sleep 0.2
  done
done
until "$vecmem" health --url "http://127.0.0.1:$http_port/health/ready" --timeout-ms 500 >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "run.sh: nginx not answering within 60 s; see $dir/nginx.log" >&2; exit 1; }
  sleep 0.2
done

echo "ready: $replicas replicas behind nginx: gRPC 127.0.0.1:$port, HTTP 127.0.0.1:$http_port, files in $dir"
# Serve until told to stop; a replica's death alone does not end the run.
while :; do
  sleep 3600 &
  wait $! || true
done
