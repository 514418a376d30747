"""The benchmark: `python -m bench [--quick] [--targets a,b,...]` (also `make bench`).

Starts a canned nginx upstream and every target at once, then runs each phase over all targets in
turn (the order rotating between rounds) so that a slow spell of the shared machine hits all of
them alike. Writes bench/results/results.json, results.md and latency.png; stops every process it
started, also on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report, simphase
from bench.procs import (
    BENCH_DIR,
    RESULTS_DIR,
    WORK_DIR,
    RssSampler,
    ensure_debian_tools,
    ensure_venv,
    group_rss,
    nginx_binary,
    stop_all,
)
from bench.streams import hold_streams, measure_ttfb
from bench.targets import ALL_TARGETS, Target, start_targets
from bench.upstream import UPSTREAM_KEY, start_upstream
from bench.wrk import run_wrk, write_script

LITELLM_REQ = "litellm[proxy]==1.106.2"  # pinned: later releases were pulled as compromised


@dataclass
class Plan:
    mode: str
    rounds: int
    warmup_s: float
    sat_s: float
    rate_s: float
    rates: list[int]
    ttfb_count: int
    sim_count: int
    open_streams: int
    open_deadline_s: float
    hold_s: float
    connections: int = 32
    threads: int = 1


QUICK = Plan("quick", rounds=1, warmup_s=1, sat_s=3, rate_s=3, rates=[100, 500], ttfb_count=50, sim_count=5,
             open_streams=1000, open_deadline_s=20, hold_s=2)
FULL = Plan("full", rounds=2, warmup_s=2, sat_s=8, rate_s=6, rates=[50, 100, 500, 1000, 2000], ttfb_count=200,
            sim_count=20,
            open_streams=1000, open_deadline_s=30, hold_s=4)

METHOD = [
    "Upstream: one nginx worker answering POST /v1/chat/completions with a fixed chat.completion, "
    "/sse/v1/chat/completions with a fixed body of 50 chat.completion.chunk events + [DONE] "
    "(text/event-stream), and /slow/v1/chat/completions with the same body trickled by limit_rate. "
    "The gateway and LiteLLM receive every request on /v1/chat/completions and reach the three upstream "
    "paths through three model aliases (glm-bench, glm-bench-stream, glm-bench-slow); direct, nginx-proxy "
    "and the Python floor pass paths through and are sent to the prefixed paths.",
    "Saturation: wrk -t1 -c32, POST bodies from a Lua script; the best of the rounds is kept.",
    "Fixed rates: Debian and PyPI carry neither wrk2, oha nor vegeta, so wrk's Lua delay() hook paces the "
    "sends on one CLOCK_MONOTONIC schedule (slot k at start + k/rate, 1 ms granularity, missed slots "
    "dropped, not bunched); latency is wrk's, from request write to response end; p50/p99 are medians over "
    "the rounds; 'added' is the target minus direct at the same rate in the same run.",
    "Streams: streams/s is wrk at saturation on the streaming request (a stream counts when its last byte "
    "arrives); time to first byte is a raw asyncio socket client, one stream at a time, from request "
    "write to the first complete SSE event of the body (TCP connect excluded), medians over the rounds.",
    "RSS: /proc statm of the target's whole process group (uvicorn's workers included, shared pages counted "
    "once per process), sampled every 250 ms; 'peak' is over the wrk and TTFB phases, the slow-stream figure "
    "is the peak while the streams are held open; direct's is the upstream nginx's, which serves every target.",
    "Event timing: the project's simulator (gateway.simulator, toapis dialect) spaces 24 content events "
    f"{simphase.SIM_DELAY_MS} ms apart, each write cut in three pieces; the gateway and LiteLLM reach it "
    "through the glm-bench-sim alias; per event index, the median arrival of the complete event is compared "
    "with a direct connection to the simulator. 'lag spread' = max − min over the events of that extra lag: "
    "a steady relay adds the same to each event, one held back until the next shows ~20 ms.",
    "Python floor: bench/floor.py, a raw-ASGI pass-through on uvicorn (uvloop, httptools) with one shared "
    "aiohttp ClientSession; the best a proxy on this stack can do.",
]


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _versions(litellm: Path | None) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "not found"
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"

    found = {"wrk": first_line(["wrk", "-v"]), "nginx": first_line([nginx_binary(), "-v"]),
             "python": sys.version.split()[0]}
    if litellm is not None:
        found["litellm"] = first_line([str(litellm / "bin" / "python"), "-c",
                                       "import importlib.metadata as m; print(m.version('litellm'))"])
    return found


class Bench:
    def __init__(self, plan: Plan, targets: list[Target], work: Path) -> None:
        self.plan, self.targets, self.work = plan, targets, work
        self.upstream_pgid = 0
        self.raw: dict[str, Any] = {"saturation": {"json": {}, "stream": {}},
                                    "fixed_rate": {str(r): {} for r in plan.rates}, "ttfb": {}, "open_streams": {}}

    def _script(self, target: Target, kind: str, rate: float | None) -> Path:
        name = f"{target.name}-{kind}-{int(rate) if rate else 'sat'}.lua"
        return write_script(self.work / "lua" / name, target.body(kind), target.headers, rate)

    def _wrk(self, target: Target, kind: str, seconds: float, rate: float | None = None) -> dict[str, Any]:
        try:
            result = run_wrk(target.url(kind), self._script(target, kind, rate), seconds=seconds,
                              connections=self.plan.connections, threads=self.plan.threads)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"  {target.name}: wrk failed: {exc}", flush=True)
            return {"error": str(exc)}
        return result.as_dict()

    def _order(self, round_no: int) -> list[Target]:
        live = [t for t in self.targets if t.available]
        shift = round_no % len(live) if live else 0
        return live[shift:] + live[:shift]

    def run_round(self, round_no: int) -> None:
        plan = self.plan
        order = self._order(round_no)
        if round_no == 0:
            print("bench: warm-up", flush=True)
            for t in order:
                self._wrk(t, "json", plan.warmup_s)
                self._wrk(t, "stream", plan.warmup_s)
        for kind in ("json", "stream"):
            print(f"bench: round {round_no + 1}: {kind} at saturation", flush=True)
            for t in order:
                res = self._wrk(t, kind, plan.sat_s)
                self.raw["saturation"][kind].setdefault(t.name, []).append(res)
                print(f"  {t.name:13} {res.get('rps', 0):>10,.0f} /s  p50 {res.get('p50_ms', math.nan):.2f} ms  "
                      f"errors {res.get('errors', 0) + res.get('non_2xx', 0)}", flush=True)
        for rate in plan.rates:
            print(f"bench: round {round_no + 1}: {rate} req/s", flush=True)
            for t in order:
                best = max((r.get("rps", 0) for r in self.raw["saturation"]["json"].get(t.name, [])), default=0)
                if rate > 1.5 * best:
                    print(f"  {t.name:13} skipped: saturates at {best:,.0f} req/s", flush=True)
                    continue
                res = self._wrk(t, "json", plan.rate_s, rate)
                self.raw["fixed_rate"][str(rate)].setdefault(t.name, []).append(res)
                print(f"  {t.name:13} {res.get('rps', 0):>8,.0f} /s  p50 {res.get('p50_ms', math.nan):.3f} ms  "
                      f"p99 {res.get('p99_ms', math.nan):.3f} ms", flush=True)
        print(f"bench: round {round_no + 1}: time to first byte, {plan.ttfb_count} streams each", flush=True)
        for t in order:
            res = measure_ttfb(t, plan.ttfb_count)
            self.raw["ttfb"].setdefault(t.name, []).append(res)
            print(f"  {t.name:13} p50 {res['ttfb_p50_ms']:.3f} ms  p99 {res['ttfb_p99_ms']:.3f} ms  "
                  f"events {res['events_min']}", flush=True)

    def run_open_streams(self) -> None:
        plan = self.plan
        print(f"bench: {plan.open_streams:,} concurrent slow streams", flush=True)
        for t in self._order(0):
            pgid = t.proc.pid if t.proc else (self.upstream_pgid if t.name == "direct" else None)
            rss = (lambda g=pgid: group_rss(g)) if pgid else (lambda: 0)
            res = hold_streams(t, plan.open_streams, plan.open_deadline_s, plan.hold_s, rss)
            self.raw["open_streams"][t.name] = res
            print(f"  {t.name:13} open {res['opened']:,} in {res['open_s']:.1f} s  RSS {res['rss_mib']:.1f} MiB",
                  flush=True)
            time.sleep(1)  # let the target drop the closed streams before the next one starts

    def run_simulator(self, sim_port: int | None, note: str) -> None:
        alias_targets = [t for t in self._order(0) if t.available and t.by_alias]
        if sim_port is None or not alias_targets:
            self.raw["simulator"] = {"note": note or "no gateway or LiteLLM target to compare"}
            return
        print(f"bench: event timing through the simulator, {self.plan.sim_count} streams each", flush=True)
        direct = Target("direct", port=sim_port, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
        res = simphase.measure(direct, alias_targets, self.plan.sim_count)
        self.raw["simulator"] = res
        for name in ["direct"] + [t.name for t in alias_targets]:
            prof = res[name]
            spread = f"  lag spread {prof['lag_spread_ms']:.2f} ms" if "lag_spread_ms" in prof else ""
            print(f"  {name:13} events {prof.get('events', 0)}  first {(prof.get('event_ms') or [math.nan])[0]:.2f} ms"
                  f"{spread}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, ~2-3 min (for development)")
    parser.add_argument("--targets", default=",".join(t for t in ALL_TARGETS if t != "gateway-base"),
                        help=f"comma-separated subset of {','.join(ALL_TARGETS)}; direct is always added")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for results.{json,md}, latency.png")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite results.md and latency.png from the results.json in --out")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    args.names = [n for n in ALL_TARGETS if n in names or n == "direct"]
    return args


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render_only:
        raw = json.loads((args.out / "results.json").read_text())
        raw["summary"] = report.summarize(raw)
        return write_outputs(raw, args.out)
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    ensure_debian_tools()
    work = (WORK_DIR / "run").resolve()
    work.mkdir(parents=True, exist_ok=True)
    litellm_venv: list[Path | None] = []

    def get_litellm() -> Path | None:
        if not litellm_venv:
            litellm_venv.append(ensure_venv("litellm-venv", LITELLM_REQ,
                                            "import importlib.metadata as m; assert m.version('litellm') == '1.106.2'"))
        return litellm_venv[0]

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = _loadavg()
    t0 = time.monotonic()
    sampler = RssSampler()
    try:
        upstream, upstream_port = start_upstream(work)
        sim_proc, sim_port, sim_note = simphase.start_simulator(work)
        targets = start_targets(args.names, upstream_port, sim_port, work, get_litellm)
        for t in targets:
            if t.proc is not None and t.available:
                sampler.watch(t.name, t.proc.pid)
        sampler.watch("direct", upstream.pid)
        sampler.start()
        bench = Bench(plan, targets, work)
        bench.upstream_pgid = upstream.pid
        for round_no in range(plan.rounds):
            bench.run_round(round_no)
        sampler.sample_now()
        peaks = dict(sampler.peaks)
        bench.run_open_streams()
        bench.run_simulator(sim_port, sim_note)
        meta = {"started": started, "mode": plan.mode, "cpus": os.cpu_count(), "loadavg_start": load_start,
                "loadavg_end": _loadavg(), "rounds": plan.rounds, "threads": plan.threads,
                "connections": plan.connections, "sat_seconds": plan.sat_s, "rate_seconds": plan.rate_s,
                "open_streams": plan.open_streams, "elapsed_s": round(time.monotonic() - t0),
                "versions": _versions(litellm_venv[0] if litellm_venv else None), "method": METHOD}
    finally:
        sampler.close()
        stop_all()
    raw = {"meta": meta, **bench.raw, "targets": {
        t.name: {"available": t.available, "note": t.note,
                 "peak_rss_mib": round(peaks[t.name] / 2**20, 1) if t.name in peaks else None} for t in targets}}
    raw["summary"] = report.summarize(raw)
    return write_outputs(raw, args.out)


def write_outputs(raw: dict[str, Any], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    (out / "results.md").write_text(report.render_md(raw, raw["summary"]))
    tools = ensure_venv("tools-venv", "matplotlib", "import matplotlib")
    if tools is not None:
        subprocess.run([str(tools / "bin" / "python"), str(BENCH_DIR / "chart.py"), str(out / "results.json"),
                        str(out / "latency.png")], check=False, timeout=120)
    print(f"bench: wrote {out}/results.json, results.md{', latency.png' if tools else ''}", flush=True)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
