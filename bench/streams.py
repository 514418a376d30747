"""Stream clients on raw asyncio sockets: time to first event, and many slow streams held open.

Raw sockets keep the client's own cost small and equal for every target: the clock starts when the
request is written and stops when the first complete SSE event of the body has been read, so the
figure includes the target's relay of headers and first event but not the TCP connect.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.targets import Target


def _request(target: Target, kind: str, keep_alive: bool = False) -> bytes:
    body = target.body(kind)
    head = [f"POST {target.path(kind)} HTTP/1.1", f"Host: 127.0.0.1:{target.port}",
            "Content-Type: application/json", "Accept: text/event-stream", f"Content-Length: {len(body)}",
            "Connection: " + ("keep-alive" if keep_alive else "close")]
    head += [f"{k}: {v}" for k, v in target.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class StreamSample:
    ttfb_ms: float = float("nan")
    total_ms: float = float("nan")
    events: int = 0
    done: bool = False
    status: int = 0
    event_ms: list[float] = field(default_factory=list)


class _Body:
    """Incremental HTTP/1.1 response reader: status, de-chunked body, complete SSE events so far."""

    def __init__(self) -> None:
        self.raw = b""
        self.status = 0
        self.body = b""
        self._pos = -1  # start of the unparsed part of raw, once the headers are in
        self._chunked = False

    def feed(self, data: bytes) -> None:
        self.raw += data
        if self._pos < 0:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.raw[9:12])
            self._chunked = b"transfer-encoding: chunked" in self.raw[:end].lower()
            self._pos = end + 4
        if not self._chunked:
            self.body = self.raw[self._pos:]
            return
        while (eol := self.raw.find(b"\r\n", self._pos)) >= 0:
            size = int(self.raw[self._pos:eol].split(b";")[0] or b"0", 16)
            if size == 0 or len(self.raw) < eol + 2 + size + 2:
                break
            self.body += self.raw[eol + 2:eol + 2 + size]
            self._pos = eol + 2 + size + 2

    def complete_events(self) -> int:
        # An event counts once its blank line has arrived: a relay may rightly hold a partial one.
        return self.body[:self.body.rfind(b"\n\n") + 1].count(b"data:")


async def one_stream(target: Target, kind: str, on_first: Callable[[], None] | None = None,
                      stop: asyncio.Event | None = None) -> StreamSample:
    sample = StreamSample()
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        request = _request(target, kind)
        t0 = time.perf_counter()
        writer.write(request)
        resp = _Body()
        while True:
            read = asyncio.ensure_future(reader.read(65536))
            if stop is not None:
                stopper = asyncio.ensure_future(stop.wait())
                finished, _ = await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if read not in finished:
                    read.cancel()
                    break
            data = await read
            if not data:
                break
            now_ms = (time.perf_counter() - t0) * 1000
            resp.feed(data)
            count = resp.complete_events()
            if count > len(sample.event_ms):
                sample.event_ms += [now_ms] * (count - len(sample.event_ms))
                if sample.ttfb_ms != sample.ttfb_ms:
                    sample.ttfb_ms = now_ms
                    if on_first is not None:
                        on_first()
        sample.total_ms = (time.perf_counter() - t0) * 1000
        sample.status = resp.status
        sample.events = len(sample.event_ms)
        sample.done = b"[DONE]" in resp.body
    finally:
        writer.close()
    return sample


async def _ttfb(target: Target, count: int) -> list[StreamSample]:
    return [await one_stream(target, "stream") for _ in range(count)]


def measure_ttfb(target: Target, count: int) -> dict[str, Any]:
    """Sequential streams, one at a time: time to first event and to the end, and events relayed."""
    samples = asyncio.run(_ttfb(target, count))
    ok = [s for s in samples if s.status == 200]
    ttfb = [s.ttfb_ms for s in ok if s.ttfb_ms == s.ttfb_ms]
    total = [s.total_ms for s in ok]
    return {
        "streams": count, "ok": len(ok),
        "ttfb_p50_ms": round(_pct(ttfb, 50), 3), "ttfb_p99_ms": round(_pct(ttfb, 99), 3),
        "total_p50_ms": round(_pct(total, 50), 3),
        "events_min": min((s.events for s in ok), default=0),
        "all_done": all(s.done for s in ok) and bool(ok),
    }


async def _hold(target: Target, count: int, open_s: float, hold_s: float,
                sample_rss: Callable[[], int]) -> dict[str, Any]:
    opened = 0
    all_open = asyncio.Event()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(200)  # connects in flight at once: stays under listen backlogs

    async def stream() -> StreamSample:
        await gate.acquire()
        released = False

        def first() -> None:
            nonlocal opened, released
            opened += 1
            released = True
            gate.release()
            if opened == count:
                all_open.set()

        try:
            if stop.is_set():  # a slot freed after the hold: don't start a stream only to drop it
                return StreamSample()
            return await one_stream(target, "slow", on_first=first, stop=stop)
        except OSError:
            return StreamSample()
        finally:
            if not released:
                gate.release()

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(stream()) for _ in range(count)]
    try:
        await asyncio.wait_for(all_open.wait(), open_s)
    except TimeoutError:
        pass
    open_time = time.perf_counter() - t0
    peak = sample_rss()
    hold_end = time.perf_counter() + hold_s
    while time.perf_counter() < hold_end:
        await asyncio.sleep(0.25)
        peak = max(peak, sample_rss())
    still_open = opened
    stop.set()
    samples = await asyncio.gather(*tasks, return_exceptions=True)
    streams = [s for s in samples if isinstance(s, StreamSample)]
    return {"asked": count, "opened": still_open, "open_s": round(open_time, 2), "rss_mib": round(peak / 2**20, 1),
            "event_ms": _median_event_times(streams)}


def _median_event_times(samples: list[StreamSample]) -> list[float]:
    """Median arrival time of the k-th event across streams, for the events every stream got."""
    got = [s.event_ms for s in samples if s.event_ms]
    if not got:
        return []
    depth = min(len(e) for e in got)
    return [round(statistics.median(e[k] for e in got), 1) for k in range(depth)]


def hold_streams(target: Target, count: int, open_s: float, hold_s: float,
                 sample_rss: Callable[[], int]) -> dict[str, Any]:
    """Open `count` slow streams at once, keep them open `hold_s` seconds and report peak RSS."""
    return asyncio.run(_hold(target, count, open_s, hold_s, sample_rss))
