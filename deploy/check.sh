#!/usr/bin/env bash
# Validates the deployment files without a Docker engine; run by
# tests/deploy.rs (so by `cargo test` and CI), or by hand after editing them:
#
#   deploy/check.sh [path/to/vecmem]
#
# Needs Debian's docker-compose, nginx and prometheus (for promtool), and
# python3 with PyYAML. Each check prints one line; the first failure stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
vecmem=${1:-target/debug/vecmem}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() { printf 'check: %s\n' "$*"; }

check "docker-compose.yml is a valid Compose file"
docker-compose -f deploy/docker-compose.yml config >"$work/compose.yml"

check "the vecmem service's environment is a config vecmem accepts"
python3 - "$work/compose.yml" >"$work/vecmem.env" <<'EOF'
import sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"]["vecmem"]["environment"]
for key, value in env.items():
    print(f"{key}={value}")
EOF
# `vecmem health` loads the config first: exit 2 is a config error, 1 is
# the (expected) unreachable server.
status=0
env -i PATH="$PATH" $(cat "$work/vecmem.env") "$vecmem" health \
  --url http://127.0.0.1:9/health/ready --timeout-ms 200 2>"$work/health.err" || status=$?
if [ "$status" -ne 1 ]; then
  echo "vecmem rejected the Compose environment (exit $status):" >&2
  cat "$work/health.err" >&2
  exit 1
fi

check "nginx accepts deploy/nginx/nginx.conf (nginx -t)"
# Only what cannot exist outside Compose changes: the replicas' DNS name, the
# mount point of the included files, and where nginx writes.
sed -e "s|server vecmem:|server 127.0.0.1:|" \
    -e "s|/etc/nginx/vecmem/|$PWD/deploy/nginx/|" \
    -e "s|^pid .*|pid $work/nginx.pid;|" \
    -e "s|^error_log .*|error_log $work/nginx-error.log;|" \
    deploy/nginx/nginx.conf >"$work/nginx.conf"
nginx -t -q -p "$work" -c "$work/nginx.conf"

check "prometheus.yml and alerts.yml are valid (promtool check config)"
promtool check config deploy/prometheus/prometheus.yml >/dev/null

check "the alert rules fire as their tests say (promtool test rules)"
promtool test rules deploy/prometheus/alerts.test.yml >/dev/null

check "the Grafana provisioning and dashboard parse, and the dashboard reads only metrics vecmem exports"
python3 - <<'EOF'
import json, re, yaml
for path in ("deploy/grafana/provisioning/datasources/prometheus.yml",
             "deploy/grafana/provisioning/dashboards/vecmem.yml"):
    yaml.safe_load(open(path))
dashboard = json.load(open("deploy/grafana/dashboards/vecmem.json"))
exported = set(re.findall(r'"((?:vecmem|process)_[a-z_]+)"', open("src/metrics.rs").read()))
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        for name in re.findall(r"\b((?:vecmem|process)_[a-z_]+)", target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"{panel['title']}: {name} is not exported by src/metrics.rs"
EOF

check "grpc-service-config.json names every RPC of the proto exactly once"
python3 - <<'EOF'
import glob, json, re
config = json.load(open("deploy/grpc-service-config.json"))
rpcs = {}
for path in glob.glob("proto/vecmem/v1/*.proto"):
    text = open(path).read()
    for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
        rpcs[f"vecmem.v1.{service}"] = set(re.findall(r"rpc (\w+)\(", body))
covered = []
for method_config in config["methodConfig"]:
    for name in method_config["name"]:
        service = name["service"]
        assert service in rpcs, f"unknown service {service}"
        methods = [name["method"]] if "method" in name else sorted(rpcs[service])
        for method in methods:
            assert method in rpcs[service], f"unknown method {service}/{method}"
            covered.append(f"{service}/{method}")
every = sorted(f"{s}/{m}" for s, ms in rpcs.items() for m in ms)
assert sorted(covered) == every, f"covered {sorted(covered)}, proto has {every}"
EOF

echo "deploy/check.sh: all checks passed"
