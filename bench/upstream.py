"""The canned upstream and the C proxy: nginx configs, bodies, and the paths every target shares.

nginx without Lua cannot branch on the request body, so the three upstream behaviours sit under
three path prefixes of one server, all ending in the same /v1/chat/completions:

    /v1/chat/completions        fixed chat.completion JSON
    /sse/v1/chat/completions    fixed SSE body: 50 chat.completion.chunk events + [DONE]
    /slow/v1/chat/completions   the same SSE body, trickled out with limit_rate (open streams for RSS)

Proxies under test keep their single client path /v1/chat/completions: the gateway and LiteLLM
pick the prefix through the model alias (glm-bench, glm-bench-stream, glm-bench-slow), each alias
bound to a provider whose base_url carries the prefix. Path pass-through targets (direct, nginx
proxy, Python floor) are sent to the prefixed path itself.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from bench.procs import Proc, free_port, nginx_binary, wait_port

UPSTREAM_KEY = "bench-upstream-key"
STREAM_EVENTS = 50
SLOW_RATE = 400  # bytes/s after the first event: ~23 s for the 10 KB body, longer than the RSS probe

COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "glm-5",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog. " * 4},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 21, "completion_tokens": 44, "total_tokens": 65},
}

REQUEST_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say something about foxes and dogs in one sentence."},
]


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, object] = {"model": model, "messages": REQUEST_MESSAGES, "max_tokens": 64}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def sse_body() -> bytes:
    events = []
    for i in range(STREAM_EVENTS):
        delta: dict[str, str] = {"content": f"token{i} "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        chunk = {
            "id": "chatcmpl-bench0000000000000000000000", "object": "chat.completion.chunk",
            "created": 1760000000, "model": "glm-5",
            "choices": [{"index": 0, "delta": delta,
                         "finish_reason": "stop" if i == STREAM_EVENTS - 1 else None}],
        }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def _nginx_string(body: bytes) -> str:
    # A single-quoted nginx string; '$' would start a variable, and the canned bodies hold none.
    text = body.decode()
    assert "$" not in text and "\n" not in text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_COMMON = """
{user}
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    tcp_nodelay on;
{body}
}}
"""

# nginx caps one config parameter at 4 KB and its static handler answers POST with 405, so the
# 12 KB SSE body is a file reached through an error_page redirect, which re-enters as GET.
_UPSTREAM_SERVER = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_body_buffer_size 64k;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 {json};
        }}
        location = /sse/v1/chat/completions {{
            error_page 418 =200 /_canned/sse;
            return 418;
        }}
        location = /slow/v1/chat/completions {{
            error_page 418 =200 /_canned/slow;
            return 418;
        }}
        location /_canned/ {{
            internal;
            root {root};
            types {{ }}
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            etag off;
            location = /_canned/slow {{
                limit_rate_after {first};
                limit_rate {rate};
                try_files /_canned/sse =500;
            }}
        }}
    }}
"""

_PROXY_SERVER = """
    upstream canned {{
        server 127.0.0.1:{upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_body_buffer_size 64k;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{
            proxy_pass http://canned;
        }}
        location /sse/ {{
            proxy_buffering off;
            proxy_pass http://canned;
        }}
        location /slow/ {{
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_pass http://canned;
        }}
    }}
"""


def _start_nginx(name: str, work: Path, server_block: str) -> Proc:
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    # As root nginx's worker would drop to nobody, who may not read the work tree.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf.write_text(_COMMON.format(user=user, dir=work, body=server_block))
    return Proc(name, [nginx_binary(), "-p", str(work), "-c", str(conf), "-e", str(work / "error.log"),
                       "-g", "daemon off;"], log=work / "stdout.log")


def start_upstream(work: Path) -> tuple[Proc, int]:
    port = free_port()
    sse = sse_body()
    first = sse.index(b"\n\n") + 2 + 200  # headers and the first event go out at once
    www = (work / "nginx-upstream" / "www" / "_canned").resolve()
    www.mkdir(parents=True, exist_ok=True)
    (www / "sse").write_bytes(sse)
    block = _UPSTREAM_SERVER.format(port=port, json=_nginx_string(json.dumps(COMPLETION).encode()),
                                    root=www.parent, first=first, rate=SLOW_RATE)
    proc = _start_nginx("upstream", work / "nginx-upstream", block)
    wait_port(port, proc.popen, 10)
    return proc, port


def start_nginx_proxy(work: Path, upstream_port: int) -> tuple[Proc, int]:
    port = free_port()
    proc = _start_nginx("nginx-proxy", work / "nginx-proxy", _PROXY_SERVER.format(port=port, upstream=upstream_port))
    wait_port(port, proc.popen, 10)
    return proc, port
