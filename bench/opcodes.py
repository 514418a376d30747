"""Python bytecodes executed per request, this tree against another: `python -m bench.opcodes BASE_TREE`.

A count, not a time: the same requests give the same count within a few tenths of a percent, on a
machine whose CPU timings swing by a fifth. Each tree's gateway (one worker, bench's canned nginx
upstream) runs under a tracer that counts every bytecode by the function it runs in, while wrk
sends requests at low concurrency; the table lists the functions whose count per request moved
most. It tells where the per-request work grew and whether a trim took any away; the CPU it costs
is `bench.cpu`'s to say (under load a bytecode costs ~25 ns here, ~4 when it is hot in a
microbenchmark).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import ab_parser, tree_config
from bench.procs import WORK_DIR, free_port, stop_all, wait_port
from bench.upstream import request_body, start_upstream
from bench.wrk import run_wrk, write_script

KEY = "sk-bench-opcodes"

#: run in the gateway's process: SIGUSR1 starts counting, SIGUSR2 writes the counts and stops
_TRACER = '''
import collections, os, signal, sys
counts = collections.Counter()
def local(frame, event, arg):
    if event == "opcode":
        counts[frame.f_code] += 1
    return local
def new_frame(frame, event, arg):
    frame.f_trace_opcodes = True
    return local
def start(*_):
    counts.clear()
    sys.settrace(new_frame)
def dump(*_):
    sys.settrace(None)
    counted = dict(counts)  # a copy in one C call: frames still traced go on counting into counts
    with open(os.environ["BENCH_OPCODES_OUT"], "w") as out:
        for code, n in counted.items():
            out.write(f"{n}\\t{code.co_filename}\\t{code.co_name}\\n")
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, dump)
from gateway.cli import main
main(sys.argv[1:])
'''


def count(tree: Path, upstream: str, kind: str, seconds: float, work: Path) -> collections.defaultdict[str, float]:
    """Bytecodes per request by function (``path:name``, the path from the package on) for ``tree``."""
    config = tree_config(tree, upstream, work)
    out = work / f"opcodes-{tree.name}.tsv"
    port = free_port()
    gateway = subprocess.Popen([sys.executable, "-c", _TRACER, "serve", "--config", str(config), "--port", str(port)],
                               cwd=tree, env={**os.environ, "GATEWAY_API_KEYS": KEY, "PYTHONPATH": str(tree),
                                              "BENCH_OPCODES_OUT": str(out)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, gateway, 30)
        model = "glm-bench-stream" if kind == "stream" else "glm-bench"
        script = write_script(work / f"opcodes-{kind}.lua", request_body(model, stream=kind == "stream"),
                              {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, None)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run_wrk(url, script, seconds=2, connections=4)  # warm: every first-time path taken before counting
        time.sleep(0.5)
        gateway.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        requests = run_wrk(url, script, seconds=seconds, connections=4).requests
        time.sleep(0.3)
        out.unlink(missing_ok=True)
        gateway.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_text().endswith("\n"):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway wrote no counts")
            time.sleep(0.2)
        time.sleep(0.5)  # written whole
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    per_request: collections.defaultdict[str, float] = collections.defaultdict(float)
    for line in out.read_text().splitlines():
        n, filename, name = line.split("\t")
        per_request[f"{_short(filename, tree)}:{name}"] += int(n) / max(requests, 1)
    return per_request


def _short(filename: str, tree: Path) -> str:
    """A code object's file as both trees name it: from its package on."""
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1]
    return filename[len(str(tree)) + 1:] if filename.startswith(f"{tree}/") else filename


def main() -> None:
    parser = ab_parser("python -m bench.opcodes", __doc__ or "")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    args = parser.parse_args()
    work = WORK_DIR / "opcodes"
    work.mkdir(parents=True, exist_ok=True)
    _, port = start_upstream(work)
    try:
        this = count(args.tree.resolve(), f"http://127.0.0.1:{port}", args.kind, args.seconds, work)
        base = count(args.base.resolve(), f"http://127.0.0.1:{port}", args.kind, args.seconds, work)
    finally:
        stop_all()
    total, base_total = sum(this.values()), sum(base.values())
    print(f"{args.kind}: {total:.0f} bytecodes per request (this tree) vs {base_total:.0f} (base): "
          f"{total / base_total:.3f}x")
    print(f"{'this':>8} {'base':>8} {'change':>8}  function")
    for name in sorted(this.keys() | base.keys(), key=lambda n: -abs(this[n] - base[n]))[:args.top]:
        print(f"{this[name]:8.1f} {base[name]:8.1f} {this[name] - base[name]:+8.1f}  {name}")


if __name__ == "__main__":
    main()
