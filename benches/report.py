#!/usr/bin/env python3
"""The side-by-side benchmark report of benches/README.md, with its plots.

Workload: one namespace of 100,000 memories of dimension 1024, spread over
100 tenants (per-user memories: every call is scoped to one tenant), searches
drawn uniformly from 1,000 distinct query vectors, upserts of one memory.

Configurations, all driven by `vecmem bench` from this machine:

  direct       `vecmem bench --direct-qdrant`: the same calls straight to
               Qdrant, one Qdrant call each (the baseline)
  vecmem       vecmem in front of that Qdrant, batching and cache on
  no-batching  the same, batching off
  no-cache     the same, result cache off
  embedded     vecmem on its embedded engine (no Qdrant), batching and cache on

"Qdrant" is the in-repo Qdrant-protocol double (examples/qdrant_double.rs:
Qdrant's gRPC API on qdrant-edge, Qdrant's own engine, indexing in the
background), as no Qdrant server can be installed here. Unlike Qdrant, the
double holds writes to a collection while it builds an index there, so
upserts can stall for seconds after many writes. QDRANT_URL=... runs the
Qdrant configurations against a real Qdrant instead.

Each operation (search, upsert, get, an 80/20 search/upsert mix) runs at
concurrency 1, 8, 32 and 64, closed-loop. Then search runs open-loop at
offered loads from a quarter of the measured saturation throughput to twice
it, against vecmem and against Qdrant directly: p50/p99 and errors against
offered load.

  cargo build --release --bins --example qdrant_double
  python3 benches/report.py [--quick] [--out benches/results]

Writes report.json (every run's full bench report), report.md (the tables)
and two plots, throughput.png and latency_vs_load.png, into --out.
Needs matplotlib for the plots (pip install matplotlib).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline import VECMEM, ROOT, Server, describe, free_port  # noqa: E402

DOUBLE = os.environ.get("QDRANT_DOUBLE", os.path.join(ROOT, "target", "release", "examples", "qdrant_double"))
NAMESPACE = "memories"
OPS = {
    "search": ["--op", "search"],
    "upsert": ["--op", "upsert"],
    "get": ["--op", "get"],
    "mix 80/20": ["--op", "mix", "--mix", "search=80,upsert=20"],
}
CONFIGS = ["direct", "vecmem", "no-batching", "no-cache", "embedded"]
# One colour per configuration in every plot.
COLOURS = {config: f"C{i}" for i, config in enumerate(CONFIGS)}
LOAD_FACTORS = [0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0]
# Timeout of calls that may wait for the double's index builds (seeding).
SLOW_MS = 120_000


class Double:
    """The Qdrant-protocol double on a free port, stopped on exit."""

    def __init__(self):
        self.addr = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.addr}"
        self.process = subprocess.Popen(
            [DOUBLE, self.addr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


def run_bench(target, shape, extra, server_metrics=True):
    """One `vecmem bench` run; its JSON report. With `server_metrics`, a run
    against vecmem also reports vecmem's CPU time per call (from its
    process_cpu_seconds_total, which builds before 345b7a2 lack)."""
    if target == "direct":
        where = ["--direct-qdrant", shape["qdrant"]]
    else:
        where = ["--addr", target.grpc]
        if server_metrics:
            where += ["--server-metrics", f"http://{target.http}/metrics"]
    command = [
        VECMEM, "bench", *where, "--namespace", NAMESPACE, "--dim", str(shape["dim"]),
        "--tenants", str(shape["tenants"]), "--seed-memories", str(shape["memories"]),
        "--distinct-queries", "1000", "-O", "json", *map(str, extra),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout)


def wait_indexed(server, timeout=1800):
    """Waits until the namespace's index covers what the engine will index."""
    deadline = time.time() + timeout
    url = f"http://{server.http}/v1/namespaces/{NAMESPACE}"
    while time.time() < deadline:
        with urllib.request.urlopen(url, timeout=10) as answer:
            info = json.load(answer)
        if info.get("indexStatus") == "INDEXED":
            print(f"  indexed: {info}", flush=True)
            return
        time.sleep(2)
    sys.exit(f"{NAMESPACE} not indexed within {timeout} s: {info}")


def seed(server, shape):
    """Writes the namespace once through vecmem; later runs reuse it."""
    started = time.time()
    run_bench(server, shape, ["--op", "get", "-n", "1", "-c", "1", "--timeout-ms", SLOW_MS])
    print(f"  seeded {shape['memories']} memories in {time.time() - started:.0f} s", flush=True)
    wait_indexed(server)


def qdrant_settings(url, extra=None):
    settings = {"VECMEM__BACKEND__KIND": "qdrant", "VECMEM__BACKEND__QDRANT__URL": url}
    settings.update(extra or {})
    return settings


def vecmem_server(shape, settings):
    # The double pauses writes while it builds an index (see the module
    # docstring), so writes may wait seconds for it: let them, rather than
    # report a stand-in's pause as vecmem's failure.
    slow = {"VECMEM__BACKEND__QDRANT__TIMEOUT_MS": SLOW_MS}
    return Server({"VECMEM__LOG__LEVEL": "warn", **slow, **settings}, dim=shape["dim"])


def sweep_concurrency(name, target, shape, levels, run_for, results):
    for op, args in OPS.items():
        for concurrency in levels:
            report = run_bench(
                target, shape,
                [*args, "--already-seeded", "-c", concurrency, "--connections", min(concurrency, 4),
                 "-z", run_for, "--warmup", "1s"],
            )
            results.append({"config": name, "op": op, "concurrency": concurrency, "report": report})
            describe(f"{name} {op} c={concurrency}", report)


def sweep_load(name, target, shape, saturation, run_for, results):
    for factor in LOAD_FACTORS:
        rps = max(1, int(saturation * factor))
        report = run_bench(
            target, shape,
            ["--op", "search", "--already-seeded", "-c", 256, "--connections", 4, "--rps", rps,
             "-z", run_for, "--warmup", "1s", "--timeout-ms", 10_000],
        )
        results.append({"config": name, "offered_rps": rps, "factor": factor, "report": report})
        describe(f"{name} offered {rps} req/s", report)


def saturation_of(results, config):
    return max(r["report"]["rps"] for r in results if r["config"] == config and r["op"] == "search")


def markdown(shape, by_concurrency, by_load, levels):
    lines = [
        f"Namespace: {shape['memories']:,} memories x {shape['dim']} dims over {shape['tenants']} tenants.",
        "",
    ]
    for op in OPS:
        lines += [f"**{op}**: req/s (p99 ms) [vecmem's CPU µs per call] by concurrency", ""]
        lines.append("| config | " + " | ".join(f"c={c}" for c in levels) + " |")
        lines.append("| --- |" + " --- |" * len(levels))
        for config in CONFIGS:
            cells = []
            for c in levels:
                run = next((r for r in by_concurrency
                            if r["config"] == config and r["op"] == op and r["concurrency"] == c), None)
                if run is None:
                    cells.append("-")
                    continue
                report = run["report"]
                errors = sum(report["errors"].values())
                cell = f"{report['rps']:,.0f} ({report['latency_ms']['p99']:.1f})"
                if "server_cpu_us_per_call" in report:
                    cell += f" [{report['server_cpu_us_per_call']:,.0f}]"
                cells.append(cell + (f" {errors} err" if errors else ""))
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**search, open loop**: offered load vs served, p50 and p99 (ms), errors", "",
              "| config | offered req/s | served req/s | p50 | p99 | errors |",
              "| --- | --- | --- | --- | --- | --- |"]
    for run in by_load:
        report = run["report"]
        errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "0"
        lines.append(
            f"| {run['config']} | {run['offered_rps']:,} ({run['factor']}x) | "
            f"{report['ok'] / report['elapsed_s']:,.0f} | {report['latency_ms']['p50']:.1f} | "
            f"{report['latency_ms']['p99']:.1f} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def plot(by_concurrency, by_load, levels, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(OPS), figsize=(16, 4.2))
    for axis, op in zip(axes, OPS):
        for config in CONFIGS:
            runs = [r for r in by_concurrency if r["config"] == config and r["op"] == op]
            if runs:
                axis.plot([r["concurrency"] for r in runs], [r["report"]["rps"] for r in runs],
                          marker="o", color=COLOURS[config], label=config)
        axis.set_title(op)
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrency")
        axis.set_ylabel("req/s")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle("Throughput against concurrency (closed loop)")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "throughput.png"), dpi=110)

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    # Each configuration against its own saturation point, so that one that
    # saturates at 2,000 req/s and one at 25,000 read side by side.
    for config in sorted({r["config"] for r in by_load}):
        runs = [r for r in by_load if r["config"] == config]
        offered = [r["factor"] for r in runs]
        for pct, style in (("p50", "--"), ("p99", "-")):
            axes[0].plot(offered, [r["report"]["latency_ms"][pct] for r in runs], style, marker="o",
                         color=COLOURS[config], label=f"{config} {pct}")
        failed = [sum(r["report"]["errors"].values()) / max(1, r["report"]["count"]) * 100 for r in runs]
        axes[1].plot(offered, failed, marker="o", color=COLOURS[config], label=config)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("offered load / closed-loop saturation throughput")
    axes[0].set_ylabel("latency from intended send (ms)")
    axes[0].set_title("search latency against offered load (open loop)")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    axes[1].set_xlabel("offered load / closed-loop saturation throughput")
    axes[1].set_ylabel("% of calls failed")
    axes[1].set_title("failed calls (shed: RESOURCE_EXHAUSTED)")
    axes[1].grid(alpha=0.3)
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "latency_vs_load.png"), dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small namespace and short runs, to try the script")
    parser.add_argument("--out", default=os.path.join(ROOT, "benches", "results"))
    parser.add_argument("--replot", action="store_true",
                        help="only redo report.md and the plots from --out's report.json")
    args = parser.parse_args()
    if args.replot:
        with open(os.path.join(args.out, "report.json")) as saved:
            saved = json.load(saved)
        levels = sorted({r["concurrency"] for r in saved["by_concurrency"]})
        write_outputs(saved["shape"], saved["by_concurrency"], saved["by_load"], levels, args.out)
        return
    for binary in (VECMEM, DOUBLE):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: cargo build --release --bins --example qdrant_double")
    if args.quick:
        shape = {"memories": 2_000, "dim": 64, "tenants": 10}
        levels, run_for, load_for = [1, 8], "2s", "2s"
    else:
        shape = {"memories": 100_000, "dim": 1024, "tenants": 100}
        levels, run_for, load_for = [1, 8, 32, 64], "4s", "6s"
    os.makedirs(args.out, exist_ok=True)
    by_concurrency, by_load = [], []

    external = os.environ.get("QDRANT_URL")
    double = None if external else Double()
    try:
        shape["qdrant"] = external or double.url
        qdrant_configs = {
            "vecmem": {},
            "no-batching": {"VECMEM__PIPELINE__BATCH__ENABLED": "false"},
            "no-cache": {"VECMEM__PIPELINE__CACHE__ENABLED": "false"},
        }
        for name, extra in qdrant_configs.items():
            print(f"{name}: vecmem in front of Qdrant at {shape['qdrant']}", flush=True)
            with vecmem_server(shape, qdrant_settings(shape["qdrant"], extra)) as server:
                if name == "vecmem":
                    seed(server, shape)
                sweep_concurrency(name, server, shape, levels, run_for, by_concurrency)
                if name == "vecmem":
                    saturation = saturation_of(by_concurrency, "vecmem")
                    sweep_load("vecmem", server, shape, saturation, load_for, by_load)
        print("direct: the same calls straight to Qdrant", flush=True)
        sweep_concurrency("direct", "direct", shape, levels, run_for, by_concurrency)
        sweep_load("direct", "direct", shape, saturation_of(by_concurrency, "direct"), load_for, by_load)
    finally:
        if double:
            double.__exit__(None, None, None)

    print("embedded: vecmem on its embedded engine", flush=True)
    with vecmem_server(shape, {}) as server:
        seed(server, shape)
        sweep_concurrency("embedded", server, shape, levels, run_for, by_concurrency)

    with open(os.path.join(args.out, "report.json"), "w") as out:
        json.dump({"shape": shape, "by_concurrency": by_concurrency, "by_load": by_load}, out, indent=1)
    write_outputs(shape, by_concurrency, by_load, levels, args.out)


def write_outputs(shape, by_concurrency, by_load, levels, out_dir):
    with open(os.path.join(out_dir, "report.md"), "w") as out:
        out.write(markdown(shape, by_concurrency, by_load, levels))
    plot(by_concurrency, by_load, levels, out_dir)
    print(f"wrote report.md, throughput.png, latency_vs_load.png to {out_dir}")


if __name__ == "__main__":
    main()
