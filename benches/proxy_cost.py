#!/usr/bin/env python3
"""What vecmem costs on the path the cache cannot help: uncached gets and
searches through vecmem against the same calls straight to Qdrant, with the
CPU time each process spent per call.

Workload (as in report.py): one namespace of 100,000 memories of dimension
1024 over 100 tenants, HNSW-indexed; gets read one random seeded id, searches
are top-10 with one of 1,000 query vectors. vecmem runs with its result
cache off and everything else at the defaults. Each workload runs at
concurrency 1 and 32, alternating direct / vecmem / direct / vecmem (A/B/A/B)
so that drift on a shared machine hits both sides alike; the CPU time of
vecmem and of Qdrant is read from /proc/PID/stat around every run.

`--text` seeds every memory with a text as well (8 generated words under
the namespace's text field) and adds the `hybrid` workload: the same
searches, each with a 2-word text beside its vector, fused by RRF in one
Qdrant query (`vecmem bench --text`). `--memories` and `--dim` change the
shape (on a Qdrant that has no `memories` collection of another dim).

`--rps N` offers N calls per second to every configuration (open loop:
each call is due at its time whether or not the previous ones answered, and
its latency counts from then) instead of running each flat out. Below
saturation that compares latency at the same load, which a closed loop
cannot: there a configuration that answers some calls sooner (from its
cache) gets more calls in flight at once for the rest.

`--floor PATH` adds examples/proxy_floor.rs (a tonic proxy with nothing
in it: same Qdrant calls, nothing converted) as one more configuration, so
the table shows how much of vecmem's CPU per call any such proxy pays on
this machine; it serves gets and searches only.

`--h2-floor PATH` adds examples/h2_floor.rs, the same calls as the floor
through a proxy on the `h2` crate itself (no tonic or hyper, one task per
connection, no task per call): what the HTTP/2 stack alone costs.
`--h2-floor-spawned PATH` adds the same with a task per call, as hyper's
server runs calls.

`--relay PATH` adds examples/tcp_relay.rs (a TCP relay that copies bytes
both ways and parses nothing) with the direct workload sent through it:
what one more hop costs when the proxy does no work at all, the floor
under any proxy on this machine.

Several vecmem builds or settings can be compared in the same run (before
and after a change): `--vecmem before=/path/to/old --vecmem after=target/release/vecmem`,
and `--setting after:VECMEM__PIPELINE__BATCH__ENABLED=false` changes one
configuration's environment.

  QDRANT_URL=http://127.0.0.1:6334 python3 benches/proxy_cost.py \\
      --qdrant-pid $(pgrep -f qdrant) [--vecmem label=path ...] \\
      [--floor target/profiling/examples/proxy_floor] \\
      [--h2-floor target/profiling/examples/h2_floor] \\
      [--h2-floor-spawned target/profiling/examples/h2_floor] \\
      [--relay target/profiling/examples/tcp_relay] [--out FILE]

Qdrant must run on this machine (its PID is how its CPU time is read).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline  # noqa: E402
from pipeline import VECMEM, Server, describe, free_port  # noqa: E402
from report import NAMESPACE, run_bench, wait_indexed  # noqa: E402

SHAPE = {"memories": 100_000, "tenants": 100, "dim": 1024}
WORKLOADS = [("get", 1), ("get", 32), ("search", 1), ("search", 32)]
# /proc/PID/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
USER_HZ = 100


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / USER_HZ


class Device:
    """A measuring device from examples/ in front of Qdrant, killed on exit.
    `bench_target(shape)` is what `run_bench` calls to measure it, and with
    which shape."""

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


class FloorProxy(Device):
    """examples/proxy_floor or h2_floor, called as vecmem is, at `grpc`."""

    def __init__(self, binary, qdrant_url, env=None):
        self.grpc = f"127.0.0.1:{free_port()}"
        self.process = subprocess.Popen([binary, self.grpc, qdrant_url, NAMESPACE], env={**os.environ, **(env or {})})
        wait_listening(self.process, binary, self.grpc)

    def bench_target(self, shape):
        return self, shape


class TcpRelay(Device):
    """examples/tcp_relay, called as Qdrant is, at `url`."""

    def __init__(self, binary, qdrant_url):
        listen = f"127.0.0.1:{free_port()}"
        self.url = f"http://{listen}"
        upstream = urllib.parse.urlsplit(qdrant_url).netloc
        self.process = subprocess.Popen([binary, listen, upstream])
        wait_listening(self.process, binary, listen)

    def bench_target(self, shape):
        return "direct", {**shape, "qdrant": self.url}


def wait_listening(process, binary, address):
    """Returns once `address` accepts connections; exits if it never does."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{binary} exited at start-up")
        try:
            socket.create_connection(address.split(":"), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{binary} did not listen within 30 s")


def namespace_info(server):
    url = f"http://{server.http}/v1/namespaces/{NAMESPACE}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def seed_once(server, shape, text=False):
    """Seeds through vecmem unless an earlier run did; waits for the index."""
    if int(namespace_info(server).get("pointsCount", 0)) < shape["memories"]:
        started = time.time()
        extra = ["--text"] if text else []
        run_bench(server, shape, ["--op", "get", "-n", 1, "-c", 1, "--timeout-ms", 120_000, *extra], server_metrics=False)
        print(f"seeded {shape['memories']} memories in {time.time() - started:.0f} s", flush=True)
    wait_indexed(server)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qdrant-pid", type=int, required=True)
    parser.add_argument("--vecmem", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--setting", action="append", default=[], metavar="LABEL:KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="run only these workloads, e.g. search:32,get:1; mix:64 is an 80/20 search/upsert mix, hybrid:32 a search with text (needs --text)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--floor", metavar="PATH", help="examples/proxy_floor, run as one more configuration")
    parser.add_argument("--h2-floor", metavar="PATH", help="examples/h2_floor, run as one more configuration")
    parser.add_argument("--h2-floor-spawned", metavar="PATH", help="examples/h2_floor with a task per call")
    parser.add_argument("--relay", metavar="PATH", help="examples/tcp_relay, the direct workload sent through it")
    parser.add_argument("--text", action="store_true", help="seed texts too; allows the hybrid workload")
    parser.add_argument("--memories", type=int, default=SHAPE["memories"])
    parser.add_argument("--dim", type=int, default=SHAPE["dim"])
    parser.add_argument("--rps", type=int, help="offer this many calls per second (open loop, as in wrk2) instead of running closed-loop flat out")
    parser.add_argument("--out")
    args = parser.parse_args()
    url = os.environ.get("QDRANT_URL") or sys.exit("QDRANT_URL names the Qdrant gRPC URL")
    builds = dict(item.split("=", 1) for item in args.vecmem) or {"vecmem": VECMEM}
    overrides = {label: {} for label in builds}
    for item in args.setting:
        label, setting = item.split(":", 1)
        key, value = setting.split("=", 1)
        overrides[label][key] = value

    settings = {
        "VECMEM__BACKEND__KIND": "qdrant",
        "VECMEM__BACKEND__QDRANT__URL": url,
        "VECMEM__BACKEND__QDRANT__TIMEOUT_MS": 120_000,
        "VECMEM__PIPELINE__CACHE__ENABLED": "false",
        # The shipped log level (Server's default is warn): every call's
        # request span is then recorded, as in production.
        "VECMEM__LOG__LEVEL": "info",
    }
    workloads = WORKLOADS
    if args.only:
        workloads = [(op, int(c)) for op, c in (w.split(":") for w in args.only.split(","))]
    servers, devices = {}, {}
    try:
        for label, binary in builds.items():
            pipeline.VECMEM = binary
            servers[label] = Server({**settings, **overrides[label]}, dim=args.dim)
        pipeline.VECMEM = VECMEM
        if args.floor:
            devices["floor"] = FloorProxy(args.floor, url)
        if args.h2_floor:
            devices["h2-floor"] = FloorProxy(args.h2_floor, url)
        if args.h2_floor_spawned:
            devices["h2-floor-spawned"] = FloorProxy(args.h2_floor_spawned, url, {"H2_FLOOR_CALLS": "spawned"})
        if args.relay:
            devices["relay"] = TcpRelay(args.relay, url)
        shape = {**SHAPE, "memories": args.memories, "dim": args.dim, "qdrant": url}
        seed_once(next(iter(servers.values())), shape, text=args.text)
        # Each configuration: the process whose CPU it costs, and what
        # `run_bench` calls with which shape.
        configs = [("direct", None, "direct", shape)]
        configs += [(label, server.process, server, shape) for label, server in servers.items()]
        configs += [(label, device.process, *device.bench_target(shape)) for label, device in devices.items()]

        results = []
        for op, concurrency in workloads:
            for round_ in range(args.rounds):
                for label, process, target, target_shape in configs:
                    pids = {"qdrant": args.qdrant_pid}
                    if process is not None:
                        pids["proxy"] = process.pid
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    what = {
                        "mix": ["--op", "mix", "--mix", "search=80,upsert=20"],
                        "hybrid": ["--op", "search", "--text"],
                    }.get(op, ["--op", op])
                    # CPU is read from /proc here, for any build, so not
                    # from the server's /metrics.
                    report = run_bench(
                        target,
                        target_shape,
                        [*what, "--already-seeded", "-c", concurrency,
                         "--connections", min(concurrency, 4), "-z", f"{args.seconds}s", "--warmup", "1s",
                         *(["--rps", args.rps] if args.rps else [])],
                        server_metrics=False,
                    )
                    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
                    # The warm-up second is inside the CPU window but not in
                    # the count: scale the calls by the window's length.
                    calls = report["count"] * (args.seconds + 1) / args.seconds
                    cpu_us = {name: seconds * 1e6 / max(calls, 1) for name, seconds in spent.items()}
                    results.append({"config": label, "op": op, "concurrency": concurrency,
                                    "round": round_, "report": report, "cpu_us_per_call": cpu_us})
                    describe(f"{label} {op} c={concurrency}", report)
                    print(f"      cpu µs/call: {', '.join(f'{k} {v:.0f}' for k, v in cpu_us.items())}", flush=True)
    finally:
        for server in [*servers.values(), *devices.values()]:
            server.__exit__(None, None, None)

    print(table(results, [*servers, *devices], workloads))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, indent=1)


def table(results, labels, workloads):
    """Markdown: per workload, the mean over rounds of each configuration."""

    def mean(config, op, concurrency, pick):
        values = [pick(r) for r in results if (r["config"], r["op"], r["concurrency"]) == (config, op, concurrency)]
        return sum(values) / len(values)

    lines = [
        "| workload | config | req/s | ratio to direct | p50 ms | p99 ms | proxy CPU µs/call | Qdrant CPU µs/call |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for op, concurrency in workloads:
        direct = mean("direct", op, concurrency, lambda r: r["report"]["rps"])
        for config in ["direct", *labels]:
            rps = mean(config, op, concurrency, lambda r: r["report"]["rps"])
            p50 = mean(config, op, concurrency, lambda r: r["report"]["latency_ms"]["p50"])
            p99 = mean(config, op, concurrency, lambda r: r["report"]["latency_ms"]["p99"])
            qdrant = mean(config, op, concurrency, lambda r: r["cpu_us_per_call"]["qdrant"])
            own = "" if config == "direct" else f"{mean(config, op, concurrency, lambda r: r['cpu_us_per_call']['proxy']):,.0f}"
            lines.append(
                f"| {op}, c={concurrency} | {config} | {rps:,.0f} | {rps / direct:.2f}x | {p50:.2f} | {p99:.2f} | {own} | {qdrant:,.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
