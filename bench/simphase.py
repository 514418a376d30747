"""Event timing through the simulator: does a relay hold any event back?

The canned nginx upstream sends a whole stream at once, which hides buffering. Here the project's
own simulator (gateway.simulator, toapis dialect) spaces the events SIM_DELAY_MS apart and cuts
every write in three pieces (split_writes), and each target's arrival time of every complete event
is compared with a direct connection to the simulator. Only alias targets (gateway, LiteLLM) can be
pointed at it; path pass-through targets are bound to the nginx upstream.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from bench.procs import Proc, free_port, run_quiet, wait_port
from bench.streams import StreamSample, one_stream
from bench.targets import MAIN_VENV, Target

SIM_DELAY_MS = 20
SIM_WORDS = 24


def start_simulator(work: Path) -> tuple[Proc | None, int | None, str]:
    python = str(MAIN_VENV / "bin" / "python")
    if run_quiet([python, "-c", "from gateway.simulator import create_app"], timeout=60) != 0:
        return None, None, "gateway.simulator is not importable"
    port = free_port()
    proc = Proc("simulator", [python, "-m", "gateway.simulator", "--host", "127.0.0.1", "--port", str(port),
                              "--chunk-delay-ms", str(SIM_DELAY_MS), "--words", str(SIM_WORDS), "--split-writes"],
                log=work / "simulator.log")
    try:
        wait_port(port, proc.popen, 30)
    except RuntimeError as exc:
        proc.stop()
        return None, None, f"simulator did not start: {exc}"
    return proc, port, ""


async def _streams(target: Target, count: int) -> list[StreamSample]:
    return [await one_stream(target, "sim") for _ in range(count)]


def _profile(samples: list[StreamSample]) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200 and s.event_ms]
    if not ok:
        return {"ok": 0, "status": samples[0].status if samples else 0}
    depth = min(len(s.event_ms) for s in ok)
    return {"ok": len(ok), "events": depth, "all_done": all(s.done for s in ok),
            "event_ms": [round(statistics.median(s.event_ms[k] for s in ok), 2) for k in range(depth)]}


def measure(direct: Target, targets: list[Target], count: int) -> dict[str, Any]:
    """Median arrival time of each event over `count` sequential streams, per target and direct."""
    out: dict[str, Any] = {"delay_ms": SIM_DELAY_MS, "words": SIM_WORDS, "streams": count}
    base = _profile(asyncio.run(_streams(direct, count)))
    out["direct"] = base
    for target in targets:
        prof = _profile(asyncio.run(_streams(target, count)))
        events, ref = prof.get("event_ms", []), base.get("event_ms", [])
        depth = min(len(events), len(ref))
        if depth:
            prof["added_first_ms"] = round(events[0] - ref[0], 3)
            # The extra lag of a steady relay is the same for every event; one held back until the next
            # arrives stands out by ~SIM_DELAY_MS. (The lag itself also holds the target's upstream call.)
            lags = [events[k] - ref[k] for k in range(depth)]
            prof["lag_spread_ms"] = round(max(lags) - min(lags), 3)
        out[target.name] = prof
    return out
