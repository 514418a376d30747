"""The front doors' streaming translations, per event: `python -m bench.doors` (issues 12, 13).

The relay's own per-read work (split the events, parse each chunk, note what it carries) is run
over one recorded 50-delta chat stream twice in the same process: once passed through as the chat
door does, once translated by each door (Anthropic's events, the Responses API's semantic events). The difference, per
upstream event, is what the translation costs; both are printed with the pass-through's own cost
for scale. In-process and single-threaded: no network, so the machine's noise is small, and the
best of several rounds is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from gateway.doors import MESSAGES, RESPONSES, Request
from gateway.doors.responses_request import Needs
from gateway.exchange import Exchange
from gateway.relay import _StreamState
from gateway.sse import EventSplitter


class _Provider:
    name = "bench"


def recorded_stream(deltas: int = 50) -> list[bytes]:
    """A thinking model's stream as an upstream sends it: reasoning, then content, then usage."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "glm-4.7"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**head, "choices": [{"index": 0, "delta": {"reasoning_content": f" step{i}"}}]} for i in range(10)]
    chunks += [{**head, "choices": [{"index": 0, "delta": {"content": f" word{i}"}}]} for i in range(deltas)]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 12, "completion_tokens": deltas + 10, "total_tokens": deltas + 22}})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def run(reads: list[bytes], encoder_for: Callable[[], object | None]) -> float:
    """Seconds for one pass of the relay's event work over ``reads``."""
    started = time.perf_counter()
    state = _StreamState(Exchange(request_id="bench"), False, False, encoder_for())  # type: ignore[arg-type]
    splitter = EventSplitter(1024 * 1024)
    for read in reads:
        state.relay(splitter.feed(read), _Provider())  # type: ignore[arg-type]
    return time.perf_counter() - started


def best(reads: list[bytes], encoder_for: Callable[[], object | None], passes: int = 2000, rounds: int = 5) -> float:
    """Best-of-rounds seconds per pass."""
    times = []
    for _ in range(rounds):
        total = sum(run(reads, encoder_for) for _ in range(passes))
        times.append(total / passes)
    return min(times)


def main() -> None:
    reads = recorded_stream()
    request = Request({"model": "claude-x"}, "claude-x")
    chat = best(reads, lambda: None)
    events = len(reads)
    print(f"upstream events per stream: {events}")
    print(f"chat door (pass-through):      {chat / events * 1e6:6.2f} us per event")
    responses_request = Request({"model": "m"}, "m", state=Needs(id="resp_1_bench", store=False))
    for name, encoder_for in (("messages", lambda: MESSAGES.events(request, "bench")),
                              ("responses", lambda: RESPONSES.events(responses_request, "bench"))):
        translated = best(reads, encoder_for)
        print(f"{name} door (translated): {translated / events * 1e6:6.2f} us per event; translation "
              f"{(translated - chat) / events * 1e6:5.2f} us per event ({translated / chat:.2f}x the pass-through)")


if __name__ == "__main__":
    main()
