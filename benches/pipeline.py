#!/usr/bin/env python3
"""Measures what each pipeline layer buys, as ratios taken in one run.

Each experiment starts `vecmem serve` (release build, embedded backend, data
in a fresh temporary directory) once per configuration, drives it with
`vecmem bench`, and compares the configurations:

  batching   64 clients upserting one memory each: batching on vs off
  cache      searches drawn by a Zipf law from 1,000 distinct queries:
             result cache on vs off
  admission  4x the concurrency limit vs at the limit: p99 of admitted
             calls, and how many were shed; plus the same overload with the
             limit lifted, to show what queueing would cost
  circuit    a hung Qdrant (a TCP listener that never answers): how long
             calls take to fail before and while the circuit is open

Absolute numbers drift between machines; the ratios are the result.

  python3 benches/pipeline.py [--quick] [--out benches/results/pipeline.json]

Needs `cargo build --release` first (or VECMEM=/path/to/vecmem).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECMEM = os.environ.get("VECMEM", os.path.join(ROOT, "target", "release", "vecmem"))
DIM = 256
# Exact scans throughout: no index build competing for the CPU mid-run.
NO_INDEX = {"VECMEM__NAMESPACES__MEMORIES__INDEXING_THRESHOLD_KB": 10_000_000}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vecmem serve` with extra VECMEM__ settings, stopped on exit."""

    def __init__(self, settings, dim=None, wait_for="/health/ready"):
        self.dim = dim or DIM
        self.dir = tempfile.TemporaryDirectory(prefix="vecmem-bench-")
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        env = dict(os.environ)
        env.update(
            {
                "VECMEM__SERVER__GRPC_ADDR": self.grpc,
                "VECMEM__SERVER__HTTP_ADDR": self.http,
                "VECMEM__BACKEND__EMBEDDED__PATH": os.path.join(self.dir.name, "data"),
                "VECMEM__NAMESPACES__MEMORIES__DIM": str(self.dim),
                "VECMEM__LOG__LEVEL": "warn",
            }
        )
        env.update({k: str(v) for k, v in settings.items()})
        self.log = open(os.path.join(self.dir.name, "log"), "w")
        self.process = subprocess.Popen(
            [VECMEM, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"vecmem exited at start-up; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://{self.http}{wait_for}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("vecmem did not become ready within 60 s")

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as r:
            return r.read().decode()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        self.dir.cleanup()


def bench(server, *args):
    command = [VECMEM, "bench", "--addr", server.grpc, "--dim", str(server.dim), "-O", "json", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def describe(name, report):
    latency = report["latency_ms"]
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"
    print(
        f"  {name:<34} {report['rps']:>9.1f} req/s  p50 {latency['p50']:>7.2f}  "
        f"p99 {latency['p99']:>8.2f} ms  ok {report['ok']:>6}  errors: {errors}",
        flush=True,
    )


def batching(quick):
    print("batching: 64 concurrent clients, one memory per upsert")
    calls = 1000 if quick else 4000
    results = {}
    for label, enabled in (("on", "true"), ("off", "false")):
        settings = {"VECMEM__PIPELINE__BATCH__ENABLED": enabled, "VECMEM__ADMISSION__MAX_CONCURRENCY": 256}
        with Server(settings) as server:
            bench(server, "--op", "upsert", "-c", 64, "-n", 200)  # warm-up
            results[label] = bench(server, "--op", "upsert", "-c", 64, "-n", calls, "--tenants", 16)
        describe(f"batching {label}", results[label])
    ratio = results["on"]["rps"] / results["off"]["rps"]
    print(f"  => throughput ratio on/off: {ratio:.1f}x (target >= 5x)\n")
    return {"runs": results, "throughput_ratio": ratio}


def metric(exposition, name):
    """The sum of a metric's samples in a Prometheus exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cache(quick):
    memories = 5000 if quick else 20000
    print(f"cache: Zipf(s=1.1) searches over 1,000 distinct queries; {memories} memories of dim 1024, exact scan")
    calls = 3000 if quick else 10000
    results = {}
    for label, enabled in (("on", "true"), ("off", "false")):
        settings = {"VECMEM__PIPELINE__CACHE__ENABLED": enabled, "VECMEM__PIPELINE__CACHE__TTL_MS": 600000, **NO_INDEX}
        with Server(settings, dim=1024) as server:
            common = ["--op", "search", "-c", 8, "--distinct-queries", 1000, "--zipf", 1.1]
            bench(server, *common, "-n", 10, "--seed-memories", memories)
            # Steady state: the same traffic warms the cache first (the
            # warm-up continues each worker's draws, so the measured calls
            # are new draws from the same distribution).
            before = server.metrics()
            results[label] = bench(server, *common, "-n", calls, "--warmup", "5s")
            after = server.metrics()
            hits = metric(after, "vecmem_cache_hits_total") - metric(before, "vecmem_cache_hits_total")
            misses = metric(after, "vecmem_cache_misses_total") - metric(before, "vecmem_cache_misses_total")
            results[label]["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else 0.0
        describe(f"cache {label}", results[label])
    ratio = results["on"]["rps"] / results["off"]["rps"]
    print(
        f"  => throughput ratio on/off: {ratio:.1f}x (target >= 10x); "
        f"hit ratio {results['on']['cache_hit_ratio']:.3f} (warm-up included)\n"
    )
    return {"runs": results, "throughput_ratio": ratio}


def admission(quick):
    limit = 8
    print(f"admission: max_concurrency {limit}; searches at the limit vs at 4x the limit")
    duration = "10s" if quick else "20s"
    common = ["--op", "search", "--tenants", 4, "--distinct-queries", 100000, "-z", duration]
    runs = (
        # label, server limit, clients, extra bench flags
        ("at the limit", limit, limit, []),
        ("4x, shed, clients honour RetryInfo", limit, 4 * limit, ["--respect-retry-info"]),
        ("4x, shed, clients retry at once", limit, 4 * limit, []),
        ("4x, no limit (everything queues)", 100000, 4 * limit, []),
    )
    results = {}
    for label, max_concurrency, clients, extra in runs:
        settings = {
            "VECMEM__ADMISSION__MAX_CONCURRENCY": max_concurrency,
            "VECMEM__PIPELINE__CACHE__ENABLED": "false",
            **NO_INDEX,
        }
        with Server(settings) as server:
            bench(server, *common[:-2], "-n", 10, "--seed-memories", 5000)
            results[label] = bench(server, *common, "-c", clients, *extra)
        describe(label, results[label])
    unloaded = results["at the limit"]["latency_ms"]["p99"]
    ratios = {label: report["latency_ms"]["p99"] / unloaded for label, report in results.items()}
    for label, report in results.items():
        if label == "at the limit":
            continue
        shed = report["errors"].get("RESOURCE_EXHAUSTED", 0)
        other = {k: v for k, v in report["errors"].items() if k != "RESOURCE_EXHAUSTED"}
        print(
            f"  => {label}: admitted p99 {ratios[label]:.2f}x the p99 at the limit; "
            f"shed {shed} of {report['count']}; other errors {other or 'none'}"
        )
    print("     (target: within 2x while shedding, the excess refused rather than queued)\n")
    return {"runs": results, "p99_ratios": ratios}


def circuit(quick):
    import threading

    print("circuit: Qdrant hung (accepts connections, never answers); backend timeout 200 ms")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []

    def accept():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    settings = {
        "VECMEM__BACKEND__KIND": "qdrant",
        "VECMEM__BACKEND__QDRANT__URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
        "VECMEM__BACKEND__QDRANT__TIMEOUT_MS": 200,
        "VECMEM__BACKEND__QDRANT__CONNECT_TIMEOUT_MS": 200,
        "VECMEM__RESILIENCE__CIRCUIT_FAILURE_THRESHOLD": 5,
        "VECMEM__RESILIENCE__CIRCUIT_OPEN_MS": 1000,
    }
    with Server(settings, wait_for="/health/live") as server:
        report = bench(server, "--op", "search", "-c", 1, "-z", "3s" if quick else "6s")
    listener.close()
    for connection in held:
        connection.close()
    took = report.get("error_latency_ms") or {}
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items())
    print(
        f"  {report['count']} calls failed ({errors}); time to fail: p50 {took.get('p50', 0):.2f} ms, "
        f"p90 {took.get('p90', 0):.2f} ms, max {took.get('max', 0):.2f} ms"
    )
    print("  => with the circuit open, calls fail in well under 5 ms; only the probes wait for the timeout\n")
    return {"report": report}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    parser.add_argument("--out", help="write all reports and ratios as JSON here")
    parser.add_argument("only", nargs="*", help="experiments to run (batching, cache, admission); default all")
    args = parser.parse_args()
    if not os.access(VECMEM, os.X_OK):
        sys.exit(f"{VECMEM} not found; run `cargo build --release` first")
    experiments = {"batching": batching, "cache": cache, "admission": admission, "circuit": circuit}
    chosen = args.only or list(experiments)
    unknown = [name for name in chosen if name not in experiments]
    if unknown:
        sys.exit(f"unknown experiments {unknown}; choose from {list(experiments)}")
    results = {name: experiments[name](args.quick) for name in chosen}
    results["machine"] = {"cpus": os.cpu_count(), "dim": DIM}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
