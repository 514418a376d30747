"""wrk runs: a Lua script per run for the POST body, open-loop pacing, and a JSON summary on stdout.

Fixed rates: wrk has no rate option and Debian/PyPI carry neither wrk2, oha nor vegeta, so the
script's delay() hook paces requests. wrk calls delay() before every request of a connection; the
script keeps one schedule per thread (one thread here), hands each call the next slot
(start + k * 1000/rate ms, read off CLOCK_MONOTONIC through LuaJIT's FFI) and returns the wait until
it. As long as a connection is free at each slot the send times follow the schedule, whatever the
latency; a slot missed by more than one interval is dropped rather than caught up in a burst, and
the achieved rate is reported next to the asked one. Latency is wrk's own: from the write of the
request to the end of the response (no coordinated-omission correction; a target that cannot keep
up shows it as a shortfall in the achieved rate).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LUA_COMMON = r"""
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

_LUA_PACED = r"""
local ffi = require("ffi")
pcall(ffi.cdef, [[typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
                 int clock_gettime(int, bench_timespec *);]])
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 1000 / {rate}
local next_slot = nil

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now - interval then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return math.floor(wait + 0.5)
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    errors: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_script(path: Path, body: bytes, headers: dict[str, str], rate: float | None) -> Path:
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = _LUA_COMMON.format(body=body.decode(), headers=header_lines)
    if rate:
        script += _LUA_PACED.format(rate=float(rate))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return path


def run_wrk(url: str, script: Path, *, seconds: float, connections: int, threads: int = 1,
            timeout_s: int = 10) -> WrkResult:
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", f"{timeout_s}s", "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    secs = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(
        requests=raw["requests"], seconds=round(secs, 2), rps=round(raw["requests"] / secs, 1) if secs else 0.0,
        errors=errors, non_2xx=raw["status"], p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000, max_ms=raw["max_us"] / 1000, mean_ms=round(raw["mean_us"] / 1000, 3),
    )
