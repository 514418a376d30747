"""Soak: `python -m bench.soak [--minutes M] [--rate R]` (not part of CI's run; issue 10).

The simulators and `gateway serve` as real processes; an alias whose primary is faulted in turn,
every few seconds, by each fault a healthy backup can absorb (they all come before the first
byte), while clients send a few hundred requests a second, half of them streams. Prints the
matrix, fault x JSON/stream: requests sent, answered whole, and lost (any error status, a stream
without [DONE], an answer that is not the simulator's). The goal is zero lost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from bench.procs import BENCH_DIR, Proc, free_port, stop_all, wait_port

KEY = "soak-client-key"
WORDS = 8
ANSWER = " ".join(f"w{i}" for i in range(WORDS))
FAULTS: dict[str, dict[str, object]] = {
    "none": {},
    "503": {"status": 503},
    "500": {"status": 500},
    "529": {"status": 529},
    "429 Retry-After 5": {"status": 429, "retry_after": 5},
    "reset before first byte": {"reset_after": 0},
    "stall before first byte": {"stall_after": 0, "ttfb_ms": 3000},
    "malformed first event": {"malformed_after": 0},
    "error in a 200": {"error_after": 0},
}
CONFIG = """providers:
  primary:
    profile: toapis
    base_url: {sim}/toapis/v1
    api_key: k
    timeout: {{first_byte: 1, idle: 2, total: 10}}
  backup:
    profile: maxtoken
    base_url: {sim}/maxtoken/v1
    api_key: k
models:
  glm-soak:
    - {{provider: primary, model: glm-5}}
    - {{provider: backup, model: glm-5-turbo}}
"""


def why_lost(status: int, body: bytes, stream: bool) -> str | None:
    """None for a whole answer, else what was wrong with it."""
    if status != 200:
        return f"HTTP {status}: {body[:200].decode(errors='replace')}"
    if not stream:
        return None if orjson.loads(body)["choices"][0]["message"]["content"] == ANSWER else "wrong answer"
    events = [e[6:] for e in body.split(b"\n\n") if e.startswith(b"data: ")]
    if not events or events[-1] != b"[DONE]":
        return f"stream without [DONE]; last event {events[-1][:200].decode(errors='replace') if events else None}"
    chunks = [orjson.loads(e) for e in events[:-1]]
    if any("error" in c for c in chunks):
        return "error event"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return None if text == ANSWER else "wrong answer"


async def soak(gateway: str, sim: str, seconds: float, rate: float, phase: float) -> dict[tuple[str, bool], Counter]:
    tally: dict[tuple[str, bool], Counter[str]] = {}
    reasons: Counter[tuple[str, str]] = Counter()
    current = ["none"]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                                 limits=limits) as client, httpx.AsyncClient(base_url=sim) as control:
        async def rotate() -> None:
            for name in itertools.cycle(FAULTS):
                await control.post("/_sim/reset")  # the answer's length is the simulator's own default
                if FAULTS[name]:
                    await control.post("/_sim/control", json={"provider": "toapis", **FAULTS[name]})
                current[0] = name
                await asyncio.sleep(phase)

        async def one(stream: bool) -> None:
            fault = current[0]
            counts = tally.setdefault((fault, stream), Counter())
            counts["sent"] += 1
            try:
                response = await client.post("/v1/chat/completions", json={
                    "model": "glm-soak", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
                why = why_lost(response.status_code, response.content, stream)
            except httpx.HTTPError as exc:
                why = f"client error {type(exc).__name__}"
            counts["lost" if why else "whole"] += 1
            if why:
                reasons[(fault, why)] += 1

        rotator = asyncio.create_task(rotate())
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for n in itertools.count():
            due = start + n / rate
            if due - start > seconds:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(stream=n % 2 == 1))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        rotator.cancel()
    for (fault, why), count in reasons.most_common():
        print(f"lost {count} under {fault!r}: {why}")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--phase", type=float, default=5.0, help="seconds each fault lasts")
    args = parser.parse_args()
    work = BENCH_DIR / ".work" / "soak"
    sim_port, gateway_port = free_port(), free_port()
    python = str(BENCH_DIR.parent / ".venv" / "bin" / "python")
    try:
        sim = Proc("simulator", [python, "-m", "gateway.simulator", "--port", str(sim_port), "--words", str(WORDS)],
                   log=work / "sim.log")
        wait_port(sim_port, sim.popen, 30)
        config = work / "gateway.yaml"
        config.write_text(CONFIG.format(sim=f"http://127.0.0.1:{sim_port}"))
        gateway = Proc("gateway", [python, "-m", "gateway", "serve", "--config", str(config), "--port",
                                   str(gateway_port)], env={"GATEWAY_API_KEYS": KEY, "GATEWAY_LOG_LEVEL": "warning"},
                       log=work / "gateway.log", cwd=BENCH_DIR.parent)
        wait_port(gateway_port, gateway.popen, 30)
        started = time.monotonic()
        tally = asyncio.run(soak(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{sim_port}",
                                 args.minutes * 60, args.rate, args.phase))
        elapsed = time.monotonic() - started
    finally:
        stop_all()
    sent = sum(c["sent"] for c in tally.values())
    lost = sum(c["lost"] for c in tally.values())
    print(f"\nsoak: {sent:,} requests in {elapsed:.0f} s ({sent / elapsed:.0f}/s), faults rotating every "
          f"{args.phase:g} s on the primary; lost {lost}\n")
    print("| fault on the primary | JSON sent | JSON lost | stream sent | stream lost |")
    print("|---|---:|---:|---:|---:|")
    for name in FAULTS:
        json_counts, stream_counts = tally.get((name, False), Counter()), tally.get((name, True), Counter())
        print(f"| {name} | {json_counts['sent']:,} | {json_counts['lost']} | {stream_counts['sent']:,} | "
              f"{stream_counts['lost']} |")
    Path(work / "last.txt").write_text(f"sent {sent} lost {lost}\n")


if __name__ == "__main__":
    main()
