"""The targets: how each is started, where it listens, and what a client sends to it."""

from __future__ import annotations

import http.client
import os
import string
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BENCH_DIR, Proc, free_port, wait_port
from bench.upstream import STREAM_EVENTS, UPSTREAM_KEY, request_body, start_nginx_proxy

MAIN_VENV = BENCH_DIR.parent / ".venv"
GATEWAY_BIN = MAIN_VENV / "bin" / "gateway"
BENCH_KEY = "bench-client-key"
LITELLM_KEY = "sk-bench-master-key"
ALL_TARGETS = ["direct", "nginx-proxy", "python-floor", "gateway-w1", "gateway-w2", "litellm", "gateway-base"]
#: gateway-base: the gateway from another checkout (BENCH_BASE_TREE, e.g. a `git worktree` of main
#: before a change), one worker, run by this venv's Python: a before/after comparison in one run.
BASE_TREE = "BENCH_BASE_TREE"

# Path pass-through targets see the upstream's own prefixes; alias targets see one path and pick the
# prefix by model (see bench/upstream.py).
_PASS_PATHS = {"json": "/v1/chat/completions", "stream": "/sse/v1/chat/completions",
               "slow": "/slow/v1/chat/completions", "sim": "/toapis/v1/chat/completions"}
_ALIAS_MODELS = {"json": "glm-bench", "stream": "glm-bench-stream", "slow": "glm-bench-slow",
                 "sim": "glm-bench-sim"}


@dataclass
class Target:
    name: str
    port: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    by_alias: bool = False
    proc: Proc | None = None
    note: str = ""

    @property
    def available(self) -> bool:
        return self.port != 0 and not self.note

    def path(self, kind: str) -> str:
        return "/v1/chat/completions" if self.by_alias else _PASS_PATHS[kind]

    def body(self, kind: str) -> bytes:
        model = _ALIAS_MODELS[kind] if self.by_alias else "glm-5"
        return request_body(model, stream=kind != "json")

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(kind)}"


def render(template: Path, out: Path, upstream: str, sim: str) -> Path:
    out.write_text(string.Template(template.read_text()).substitute(BENCH_UPSTREAM=upstream, BENCH_SIM=sim))
    return out


def check(target: Target) -> str:
    """One request of each kind; '' if both answer as the canned upstream would, else why not."""
    for kind in ("json", "stream"):
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        try:
            conn.request("POST", target.path(kind), body=target.body(kind),
                         headers={"Content-Type": "application/json", **target.headers})
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            return f"{kind} request failed: {exc}"
        finally:
            conn.close()
        if resp.status != 200:
            return f"{kind} request answered {resp.status}: {data[:200]!r}"
        if kind == "json" and b'"choices"' not in data:
            return f"json reply has no choices: {data[:200]!r}"
        if kind == "stream" and (data.count(b"data:") < STREAM_EVENTS or b"[DONE]" not in data):
            return f"stream reply has {data.count(b'data:')} events, no [DONE]: {data[:200]!r}"
    return ""


def _serve(target: Target, argv: list[str], env: dict[str, str], work: Path, ready_s: float,
           cwd: Path = BENCH_DIR.parent) -> Target:
    target.port = free_port()
    argv = [a.replace("{port}", str(target.port)) for a in argv]
    target.proc = Proc(target.name, argv, env=env, log=work / f"{target.name}.log", cwd=cwd)
    try:
        wait_port(target.port, target.proc.popen, ready_s)
        deadline = time.monotonic() + ready_s
        while (problem := check(target)) and time.monotonic() < deadline:
            time.sleep(0.5)  # LiteLLM listens before its router is ready
        target.note = problem
    except RuntimeError as exc:
        target.note = f"did not start: {exc}; log: {target.proc.log_tail(5)}"
    if target.note and target.proc is not None:
        target.proc.stop()
        target.proc = None
    return target


def gateway_missing() -> str:
    if not GATEWAY_BIN.exists():
        return f"{GATEWAY_BIN.relative_to(BENCH_DIR.parent)} not installed (pip install -e .)"
    try:
        help_run = subprocess.run([str(GATEWAY_BIN), "serve", "--help"], capture_output=True, text=True,
                                  timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"gateway serve --help failed: {exc}"
    if help_run.returncode != 0:
        return f"gateway serve --help exited {help_run.returncode}: {help_run.stderr.strip()[-200:]}"
    return ""


def start_gateway(name: str, workers: int, upstream: str, sim: str, work: Path) -> Target:
    target = Target(name, headers={"Authorization": f"Bearer {BENCH_KEY}"}, by_alias=True)
    if missing := gateway_missing():
        target.note = f"not available: {missing}"
        return target
    config = render(BENCH_DIR / "gateway.yaml", work / "gateway.yaml", upstream, sim)
    argv = [str(GATEWAY_BIN), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "{port}",
            "--workers", str(workers)]
    return _serve(target, argv, {"GATEWAY_API_KEYS": BENCH_KEY}, work, 60)


def start_base(upstream: str, sim: str, work: Path) -> Target:
    target = Target("gateway-base", headers={"Authorization": f"Bearer {BENCH_KEY}"}, by_alias=True)
    tree = os.environ.get(BASE_TREE)
    if not tree or not (Path(tree) / "gateway" / "__init__.py").exists():
        target.note = f"not available: set {BASE_TREE} to a checkout of the gateway to compare against"
        return target
    # the base tree's own bench config: it may not know a key added since
    own = Path(tree) / "bench" / "gateway.yaml"
    config = render(own if own.exists() else BENCH_DIR / "gateway.yaml", work / "gateway-base.yaml", upstream, sim)
    argv = [str(MAIN_VENV / "bin" / "python"), "-m", "gateway", "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", "{port}"]
    # run from the tree itself: `python -m` puts the working directory first on sys.path
    return _serve(target, argv, {"GATEWAY_API_KEYS": BENCH_KEY, "PYTHONPATH": tree}, work, 60, cwd=Path(tree))


def start_floor(upstream: str, work: Path) -> Target:
    target = Target("python-floor", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    argv = [str(MAIN_VENV / "bin" / "python"), "-m", "uvicorn", "bench.floor:app", "--host", "127.0.0.1",
            "--port", "{port}", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--backlog", "4096"]
    return _serve(target, argv, {"FLOOR_UPSTREAM": upstream}, work, 30)


def start_litellm(upstream: str, sim: str, work: Path, venv: Path | None) -> Target:
    target = Target("litellm", headers={"Authorization": f"Bearer {LITELLM_KEY}"}, by_alias=True)
    if venv is None:
        target.note = "not available: litellm[proxy]==1.106.2 could not be installed in bench/.work"
        return target
    config = render(BENCH_DIR / "litellm.yaml", work / "litellm.yaml", upstream, sim)
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", "{port}",
            "--num_workers", "1"]
    env = {"LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True", "NO_DOCS": "True"}
    return _serve(target, argv, env, work, 180)


def start_direct(upstream_port: int) -> Target:
    target = Target("direct", port=upstream_port, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    target.note = check(target)
    return target


def start_proxy(upstream_port: int, work: Path) -> Target:
    target = Target("nginx-proxy", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    try:
        target.proc, target.port = start_nginx_proxy(work, upstream_port)
        target.note = check(target)
    except RuntimeError as exc:
        target.note = f"did not start: {exc}"
    return target


def start_targets(names: list[str], upstream_port: int, sim_port: int | None, work: Path,
                  litellm_venv: Callable[[], Path | None]) -> list[Target]:
    """Every target at once; the simulator's alias falls back to nginx when there is no simulator."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    sim = f"http://127.0.0.1:{sim_port or upstream_port}"
    started: list[Target] = []
    for name in names:
        print(f"bench: starting {name}", flush=True)
        if name == "direct":
            target = start_direct(upstream_port)
        elif name == "nginx-proxy":
            target = start_proxy(upstream_port, work)
        elif name == "python-floor":
            target = start_floor(upstream, work)
        elif name.startswith("gateway-w"):
            target = start_gateway(name, int(name.removeprefix("gateway-w")), upstream, sim, work)
        elif name == "gateway-base":
            target = start_base(upstream, sim, work)
        elif name == "litellm":
            target = start_litellm(upstream, sim, work, litellm_venv())
        else:
            raise ValueError(name)
        if target.note:
            print(f"bench: {name}: {target.note}", flush=True)
        started.append(target)
    return started
