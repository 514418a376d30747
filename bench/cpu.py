"""The gateway's CPU per request, this tree against another: `python -m bench.cpu BASE_TREE`.

Throughput on this shared 2-core machine swings by a fifth from one minute to the next, and a
before/after of a few percent drowns in it. The server's own CPU time per request (user + system
from /proc/PID/stat, around a wrk run at saturation) moves much less. Each round starts this tree's
gateway and the other's on bench's canned nginx upstream, one after the other (the order swapped
every round: it matters), and the medians over the rounds are printed with their ratio.
``--together RATE`` runs both at once instead, each under its own wrk at a fixed rate, so that the
machine's swings land on both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import string
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.procs import WORK_DIR, free_port, stop_all, wait_port
from bench.upstream import request_body, start_upstream
from bench.wrk import run_wrk, write_script

HERE = Path(__file__).resolve().parent.parent
KEY = "sk-bench-cpu"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_config(tree: Path, upstream: str, work: Path) -> Path:
    """``tree``'s own bench config (it may not know a newer key) on bench's canned upstream."""
    config = work / f"bench-{tree.name}.yaml"
    own = tree / "bench" / "gateway.yaml"
    config.write_text(string.Template(own.read_text()).substitute(BENCH_UPSTREAM=upstream, BENCH_SIM=upstream))
    return config


def ab_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The arguments of a this-tree-against-another measure (bench.cpu, bench.opcodes)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("base", type=Path, help="another checkout of the gateway (e.g. a git worktree)")
    parser.add_argument("--tree", type=Path, default=HERE, help="the tree measured as 'this' (default: this one)")
    parser.add_argument("--kind", choices=("json", "stream"), default="json")
    return parser


def start(tree: Path, upstream: str, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``tree``'s gateway, one worker, on bench's canned upstream: the process and its port."""
    config = tree_config(tree, upstream, work)
    port = free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
                               cwd=tree, env={**os.environ, "GATEWAY_API_KEYS": KEY, "PYTHONPATH": str(tree)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, gateway, 30)
    time.sleep(0.5)
    return gateway, port


def measure(gateway: subprocess.Popen[bytes], port: int, kind: str, seconds: float,
            script: Path) -> tuple[float, float]:
    """CPU microseconds per request and requests/s of one wrk run against ``gateway``."""
    before = cpu_seconds(gateway.pid)
    result = run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", script, seconds=seconds, connections=32)
    used = cpu_seconds(gateway.pid) - before
    return used / max(result.requests, 1) * 1e6, result.rps


def load(kind: str, work: Path, name: str, rate: float | None) -> Path:
    model = "glm-bench-stream" if kind == "stream" else "glm-bench"
    return write_script(work / f"cpu-{name}.lua", request_body(model, stream=kind == "stream"),
                        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, rate)


def stop(gateway: subprocess.Popen[bytes]) -> None:
    gateway.terminate()
    gateway.wait(timeout=30)


def one_run(tree: Path, upstream: str, kind: str, seconds: float, work: Path) -> tuple[float, float]:
    """CPU microseconds per request and requests/s of ``tree``'s gateway at saturation."""
    gateway, port = start(tree, upstream, work)
    try:
        return measure(gateway, port, kind, seconds, load(kind, work, tree.name, None))
    finally:
        stop(gateway)


def together(trees: dict[str, Path], upstream: str, kind: str, seconds: float, work: Path,
             rate: float) -> dict[str, tuple[float, float]]:
    """Both gateways at once, each under its own wrk at ``rate``: whatever the machine does in
    that minute, it does to both."""
    started = {name: start(tree, upstream, work) for name, tree in trees.items()}
    try:
        with ThreadPoolExecutor(len(trees)) as pool:
            runs = {name: pool.submit(measure, gateway, port, kind, seconds, load(kind, work, name, rate))
                    for name, (gateway, port) in started.items()}
            return {name: run.result() for name, run in runs.items()}
    finally:
        for gateway, _ in started.values():
            stop(gateway)


def main() -> None:
    parser = ab_parser("python -m bench.cpu", __doc__ or "")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--together", type=float, metavar="RATE",
                        help="run both gateways at once, each at RATE requests/s (not one after the other "
                             "at saturation); the ratio is then the median of each round's")
    args = parser.parse_args()
    work = WORK_DIR / "cpu"
    work.mkdir(parents=True, exist_ok=True)
    trees = {"this": args.tree.resolve(), "base": args.base.resolve()}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    rps: dict[str, list[float]] = {name: [] for name in trees}
    _, port = start_upstream(work)
    upstream = f"http://127.0.0.1:{port}"
    ratios = []
    try:
        for round_ in range(args.rounds):
            if args.together:
                runs = together(trees, upstream, args.kind, args.seconds, work, args.together)
            else:
                order = ("this", "base") if round_ % 2 == 0 else ("base", "this")
                runs = {name: one_run(trees[name], upstream, args.kind, args.seconds, work) for name in order}
            for name, (us, rate) in runs.items():
                cpu[name].append(us)
                rps[name].append(rate)
                print(f"round {round_ + 1} {name:4} {us:7.1f} us/request {rate:8.0f} req/s", flush=True)
            ratios.append(runs["this"][0] / runs["base"][0])
    finally:
        stop_all()
    this, base = statistics.median(cpu["this"]), statistics.median(cpu["base"])
    print(f"{args.kind}: median CPU per request {this:.1f} us (this tree) vs {base:.1f} us (base): {this / base:.3f}x; "
          f"median of the rounds' ratios {statistics.median(ratios):.3f}x; "
          f"median req/s {statistics.median(rps['this']):.0f} vs {statistics.median(rps['base']):.0f}")


if __name__ == "__main__":
    main()
