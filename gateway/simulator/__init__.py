"""Simulators of the five GLM resellers the gateway fronts, written from their own API pages.

They are the independent witness that catches a gateway with a wrong profile: every check comes
from ``shared/upstream-docs/<provider>.txt`` (cited file:line in ``dialects.py``), never from the
gateway's own code. Where a page is silent they behave like OpenAI (UPSTREAMS.md:6-7).

API
---
``create_app(*, ttfb_ms=0, chunk_delay_ms=0, words=None, split_writes=False, keys=None)``
    A raw ASGI app (no framework; an answer costs one body read, one orjson parse, the checks and
    one write). The kwargs are this instance's knob defaults. ``keys`` maps provider -> the only
    bearer key it accepts; a provider absent from ``keys`` accepts any non-empty bearer key. A
    missing or empty ``Authorization: Bearer ...`` is always a 401.
    Returns a ``Simulator`` instance (callable as ASGI; its ``records`` and ``controls`` are the
    state behind the control endpoints). ``keys`` naming an unknown provider raises ValueError.
``serve(host="127.0.0.1", port=8900, **create_app_kwargs)``
    ``uvicorn.run`` of a fresh app; also ``python -m gateway.simulator [--host H] [--port P]
    [--ttfb-ms N] [--chunk-delay-ms N] [--words N] [--split-writes]``.

Endpoints
---------
``POST /{provider}/v1/chat/completions`` for powertokens, token360, siliconflow, toapis, maxtoken.
Any other path: 404 JSON ``{"error": {"message", "type": "not_found"}}`` (wrong method: 405).

Control (no auth):
- ``GET /_sim/requests``: JSON list, oldest first, of the last 1000 requests to any non-``/_sim``
  path: ``{"provider": first path segment, "path", "headers": {lower-cased name: value}, "body":
  parsed JSON or null, "raw": body as str}``. Recorded on arrival, whatever the outcome.
- ``POST /_sim/reset``: clears the recorded requests and every control (instance defaults stay).
- ``POST /_sim/control``: a JSON object of knobs, plus optional ``"provider"`` (absent: every
  provider) and optional ``"count"`` (the next N requests reaching that provider's completions
  endpoint, whatever their outcome; absent: until reset). Controls stack, the newest matching
  control wins per knob; a ``null`` knob value leaves the knob to older layers. Unknown knob or bad
  value: 400 ``{"sim_error": ...}``.
- ``GET /_sim/health``: ``{"ok": true}``.

Knobs (control JSON name; per-request header ``x-sim-<name, _ as ->``, e.g. ``x-sim-ttfb-ms``).
Precedence: instance defaults < controls < headers. A bad header value: 400 ``{"sim_error": ...}``.
- ``ttfb_ms``: delay before the response starts (every response of the endpoint, errors too).
- ``chunk_delay_ms``: delay between streamed events.
- ``words``: N -> text content is ``" ".join(f"w{i}" for i in range(N))`` (N content deltas).
- ``status``: 400-599 -> answer that status in the provider's error shape instead of answering,
  after auth and validation; 429 carries ``Retry-After: <retry_after, 1 when unset>``.
- ``retry_after``: seconds for the 429 above; 0 -> no Retry-After header at all.
- ``reset_after``: K -> streaming: after K events, close the connection mid-body (no [DONE]).
- ``stall_after``: K -> streaming: after K events send nothing and hold the connection until the
  client goes away (at most 300 s, then close as for reset).
- ``malformed_after``: K -> streaming: after K events send one event whose data is not JSON,
  then go on normally.
- ``error_after``: K -> streaming: after K events send one event whose data is the provider's error
  body for 500 (the one ``status: 500`` answers), then end the body normally, with no [DONE]. Not
  streaming: 200 ``application/json`` with that body instead of the answer (K ignored).
- ``error_code``: a non-empty string or an integer -> the code of the error body that ``status`` or
  ``error_after`` sends: ``error.code`` where the shape has an ``error`` object, else the top-level
  ``code`` (siliconflow). Given as is (a header's is a string), except that the Zhipu shape's code
  is always a string (``1113`` -> ``"1113"``). Other errors (401, 400) keep their own codes.
- ``split_writes``: bool -> every SSE write (events, [DONE], keep-alives) goes out in 3 pieces cut
  inside its first line, 1 ms apart, so clients' reads see partial events.
- ``keepalive``: bool -> an SSE comment ``: keep-alive`` (followed by a blank line) before every
  event, i.e. before the first and between events.
- ``tool_arguments``: a JSON object (or its text) -> a tool-call answer's arguments are this text
  instead of ``{"query": PROMPT}`` (to drive a real agent's tool, e.g. Claude Code's ``Bash``).
- ``drip_ms``: set (0 too) -> the body of every response of the endpoint (errors too; the JSON
  body, and every SSE write) goes out one byte per write, each byte drip_ms after the one before;
  wins over ``split_writes``. Unset by default.
- ``gzip_bomb``: N (MiB, 0 too) -> every response of the endpoint goes out with ``Content-Encoding:
  gzip`` (whatever the request's ``Accept-Encoding``: none of the pages says what their servers do
  with it), a body that inflates to N MiB of spaces, a newline, then the response (still valid
  JSON; valid SSE, the spaces being one line of an unknown field). N = 1024 is a 1 MiB body. A
  stream goes out whole in one write (pacing and stream faults do not apply). Wins over
  ``answer_bytes`` and ``drip_ms``.
- ``answer_bytes``: N -> a 200 JSON answer is padded with trailing spaces (the same JSON) to N
  bytes, sent chunked (no Content-Length) in 1 MiB writes. Streams and errors ignore it; ``drip_ms`` does not apply.
K counts the answer's own chunk events (the role chunk and the final usage chunk included;
keep-alives, the malformed event and [DONE] excluded) and is clamped to their number, so the fault
always happens, at the latest just before ``[DONE]``. K = 0: right after the response headers.

Order of a completions request
------------------------------
record -> knobs (counted controls used) -> ttfb -> auth (401) -> JSON (400) -> page checks (400)
-> ``status`` knob -> maxtoken content policy -> answer (JSON, or SSE when streaming).
``stream`` absent: powertokens streams (powertokens.txt:90-94 default true); the others answer JSON.

Answers (deterministic). PROMPT = text of the last message (string content, or its ``text`` parts
joined with ``"\\n"``); the last message is the last that is not ``system`` (system messages after
it, as Claude Code sends them, are context), or the last of all. words(s) = ``len(s.split())``.
- Text content: ``"Echo: " + PROMPT``; if the last message has role ``tool``:
  ``"Tool said: " + PROMPT``. With the ``words`` knob set, either is replaced by the ``w0 w1 ...``
  text.
- Thinking on -> ``reasoning_content = "Thinking about: " + PROMPT`` (message field, or
  ``delta.reasoning_content`` pieces before the content), on tool-call answers too. On when asked
  in the provider's own dialect (powertokens/token360 ``thinking: {"type": "enabled"}`` or
  ``{"type": "auto"}``; siliconflow ``enable_thinking: true``), and when the request says nothing
  to powertokens, or to siliconflow for a model of its enable_thinking list: their pages' examples
  reason unasked (powertokens.txt:13-41, siliconflow.txt:11-39). token360 reasons only when asked;
  toapis/maxtoken never reason.
- Tool call: the request has ``tools`` and the last message is ``user`` whose text contains the
  ``function.name`` of a tool (first in list order) -> ``message.content: null``, ``tool_calls:
  [{"id": "call_0", "type": "function", "function": {"name": NAME, "arguments":
  json.dumps({"query": PROMPT})}}]``, ``finish_reason: "tool_calls"``. Also: ``tool_choice:
  "none"`` never calls; ``{"type": "function", "function": {"name": X}}`` always calls X and
  ``"required"`` calls the first function tool when no name matches (last message ``user`` only).
- ``max_tokens`` smaller than words(content) + words(reasoning): the budget is spent on reasoning
  first, then content, each cut after its last whole word (original spacing kept), and
  ``finish_reason: "length"``. Tool-call arguments are never cut.
- usage: prompt_tokens = words over every message's text; completion_tokens = words(content) +
  words(reasoning) (tool call: words(arguments) + words(reasoning)); total = sum. Extras:
  powertokens ``prompt_tokens_details.cached_tokens: 0``; siliconflow
  ``completion_tokens_details.reasoning_tokens``, ``prompt_tokens_details.cached_tokens: 0``,
  ``prompt_cache_hit_tokens: 0``, ``prompt_cache_miss_tokens: prompt_tokens``, and
  ``system_fingerprint: ""`` on the response and on every chunk.
- ``id`` ``chatcmpl-sim-<n>`` (n counts answers of this instance), ``created`` int, ``model`` as
  asked, except powertokens answers ``glm-5`` to ``glm-4.7-flash`` (powertokens.txt:15 vs :34).
- siliconflow adds ``x-siliconcloud-trace-id`` (unique hex) to every response, errors included.

Streaming: ``content-type: text/event-stream``; events ``data: <json>\\n\\n``, each chunk
``{"id", "object": "chat.completion.chunk", "created", "model", "choices": [{"index": 0, "delta",
"finish_reason"}]}``: first delta ``{"role": "assistant", "content": ""}``; reasoning pieces; then
content pieces (split on ``" "``, every piece after the first keeps its leading space, so they
concatenate to the non-streamed string) or, for a tool call, one delta ``{"tool_calls": [{"index":
0, "id": "call_0", "type": "function", "function": {"name", "arguments": ""}}]}`` then the
arguments in at least 3 pieces ``{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}``
(at most 16 characters each); then a chunk with ``delta: {}``, ``finish_reason`` and ``usage``;
then ``data: [DONE]``.

Validation (400, naming the field) follows each page; see ``dialects.py`` for every limit and its
doc line. Rejected on every provider, as fields a gateway must rewrite: ``reasoning_effort``,
``max_completion_tokens``, ``stream_options`` and role ``developer``; ``thinking`` except on
powertokens/token360; ``enable_thinking``/``thinking_budget`` except on siliconflow (these are
rejected whenever the key is present, even as null); ``top_k``/``min_p`` except on siliconflow
(the only page that documents them, siliconflow.txt:129-170). These are the witness's policy, so
that a gateway that forgets to rewrite is caught; other unknown fields are accepted.

Error shapes:
- powertokens, token360 (Zhipu): ``{"error": {"code": "1210", "message"}}`` (400; 401 "1000",
  403 "1220", 429 "1302", 500 "500", other statuses the status as a string).
- siliconflow: ``{"code": 20015, "message", "data": null}`` (other statuses: code = status).
- toapis (OpenAI): ``{"error": {"message", "type", "param": field or null, "code": null}}``,
  type invalid_request_error / authentication_error / permission_error / not_found_error /
  rate_limit_error / server_error.
- maxtoken: ``{"error": {"code": status, "message"}}`` with the page's wording for 401, 403, 429
  and 500. Any message text containing ``[unsafe]`` -> 400 ``{"error": {"code": 503, "type":
  "content_policy_violation", "message": "Content policy violation: content blocked due to safety
  concerns"}}`` (maxtoken.txt:165).
"""

from .app import Simulator, create_app, serve

__all__ = ["Simulator", "create_app", "serve"]
