"""What a limited key costs per request: `python -m bench.keys [--rounds N] [--rate R]`.

Issue 14: "the added p50 of a limited key with Redis on loopback is under 0.3 ms against an
unlimited key, in the same run". One gateway (one worker, GATEWAY_REDIS_URL on a redis-server of
its own) on bench's canned nginx upstream; two keys: `limited` is shaped like the issue's example
key (every limit and a USD budget, all high enough never to refuse; `--key tokens-budget` with a
token budget instead, `--key rates` with only the two limits per minute), so each request makes
both of its Redis round trips (admission and settlement), and `unlimited` has none. wrk sends each
key's requests at a fixed rate, the keys alternating round by round (the order swapped every
round); the medians of the rounds' p50s and their difference are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import string
import sys
import time
from pathlib import Path

from bench.procs import WORK_DIR, Proc, free_port, stop_all, wait_port
from bench.upstream import request_body, start_upstream
from bench.wrk import run_wrk, write_script
from gateway.state.resp import Connection, packed

HERE = Path(__file__).resolve().parent.parent
LIMITED = {  # what the limited key has, all high enough never to refuse
    # the issue's own example key (search-app): every limit and a budget in USD
    "example": """
    limits: {requests_per_minute: 100000000, tokens_per_minute: 100000000000, max_concurrent: 1000000}
    budget: {usd_per_month: 1000000000}""",
    # a token budget is charged on admission too: one more write there
    "tokens-budget": """
    limits: {requests_per_minute: 100000000, tokens_per_minute: 100000000000, max_concurrent: 1000000}
    budget: {tokens_per_month: 1000000000000000}""",
    "rates": """
    limits: {requests_per_minute: 100000000, tokens_per_minute: 100000000000}""",
}
KEYS = """
keys:
  limited:
    key: sk-bench-limited{limited}
  unlimited:
    key: sk-bench-unlimited
"""


def start_redis(work: Path) -> tuple[Proc, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench.keys: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    proc = Proc("redis", [binary, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", str(work)], log=work / "redis.log")
    wait_port(port, proc.popen, 10)
    return proc, port


def script_time(url: str) -> tuple[int, float]:
    """How many scripts Redis ran, and the microseconds each took it on average."""
    async def info() -> bytes:
        connection = Connection(url)
        try:
            return await connection.call(packed("INFO", "commandstats"), asyncio.get_running_loop().time() + 5)
        finally:
            connection.close()
    stats = re.search(rb"cmdstat_evalsha:calls=(\d+),usec=\d+,usec_per_call=([\d.]+)", asyncio.run(info()))
    return (int(stats[1]), float(stats[2])) if stats else (0, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=200, help="requests/s for each run (default 200)")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--key", choices=tuple(LIMITED), default="example",
                        help="the limited key: the issue's example (every limit, a USD budget; the default), the "
                             "same with a token budget, or only the two limits per minute")
    parser.add_argument("--store", choices=("redis", "memory"), default="redis",
                        help="where the limited key is counted (memory: the in-process store, for comparison)")
    args = parser.parse_args()
    work = WORK_DIR / "keys"
    try:
        _, upstream_port = start_upstream(work)
        redis = {}
        if args.store == "redis":
            _, redis_port = start_redis(work / "redis")
            redis = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        upstream = f"http://127.0.0.1:{upstream_port}"
        config = work / "gateway.yaml"
        config.write_text(string.Template((HERE / "bench" / "gateway.yaml").read_text()).substitute(
            BENCH_UPSTREAM=upstream, BENCH_SIM=upstream) + KEYS.format(limited=LIMITED[args.key]))
        port = free_port()
        gateway = Proc("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                   str(port)], log=work / "gateway.log", cwd=HERE,
                       env={**redis, "GATEWAY_LOG_LEVEL": "warning",
                            "PYTHONPATH": str(HERE), **{k: "" for k in os.environ if k == "GATEWAY_API_KEYS"}})
        wait_port(port, gateway.popen, 30)
        time.sleep(0.5)
        p50: dict[str, list[float]] = {"limited": [], "unlimited": []}
        for round_ in range(args.rounds):
            for name in (("limited", "unlimited") if round_ % 2 == 0 else ("unlimited", "limited")):
                script = write_script(work / f"{name}.lua", request_body("glm-bench", stream=False),
                                      {"Authorization": f"Bearer sk-bench-{name}"}, args.rate)
                result = run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", script, seconds=args.seconds,
                                 connections=16)
                if result.non_2xx or result.errors:
                    sys.exit(f"bench.keys: {name}: {result.non_2xx} non-2xx, {result.errors} errors "
                             f"(see {gateway.log_path})")
                p50[name].append(result.p50_ms)
                print(f"round {round_ + 1} {name:9} p50 {result.p50_ms:.3f} ms p99 {result.p99_ms:.3f} ms "
                      f"{result.rps:.0f} req/s", flush=True)
        limited, unlimited = statistics.median(p50["limited"]), statistics.median(p50["unlimited"])
        print(f"median p50: limited {limited:.3f} ms, unlimited {unlimited:.3f} ms: "
              f"a limited key adds {limited - unlimited:.3f} ms (target < 0.3 ms)")
        added = sorted(a - b for a, b in zip(p50["limited"], p50["unlimited"], strict=True))
        print(f"added in each round (limited minus unlimited, same round): {added[0]:+.3f} to {added[-1]:+.3f} ms, "
              f"median {statistics.median(added):+.3f} ms: the spread is this machine's noise")
        if redis:
            calls, each = script_time(redis["GATEWAY_REDIS_URL"])
            print(f"Redis ran {calls} scripts (admissions and settlements), {each:.1f} us each on its own clock "
                  f"(INFO commandstats): the rest of the difference is the round trip and the gateway's own work")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
