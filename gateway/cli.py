"""gateway serve | check | simulate | demo"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import SIGNALS

from . import keys
from .accesslog import AccessLog
from .config import Config, ConfigError, load
from .connections import GuardedProtocol
from .settings import SUPERVISED, Settings, is_loopback

ROOT = Path(__file__).resolve().parent.parent
# An installed wheel has no config/ beside it: the image points GATEWAY_DEMO_CONFIG at its copy.
DEMO_CONFIG = os.environ.get("GATEWAY_DEMO_CONFIG") or str(ROOT / "config" / "demo.yaml")


def _load_or_exit(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        sys.exit(f"gateway: config error: {exc}")


def _print_table(config: Config) -> None:
    print(f"config: {config.path}")
    print("providers:")
    for p in config.providers.values():
        state = "enabled" if p.enabled else f"DISABLED (set {p.key_variable})"
        print(f"  {p.name:<14} profile={p.profile.name:<12} thinking={p.profile.thinking.name:<12} "
              f"{p.base_url}  {state}")
    print("models:")
    for alias, routes in config.models.items():
        shown = ", ".join(f"{r.provider.name}:{r.model}{'' if r.provider.enabled else ' (disabled)'}" for r in routes)
        usable = any(r.provider.enabled for r in routes)
        print(f"  {alias:<16} -> {shown}{'' if usable else '   [no enabled route: answers 503]'}")
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command line's choices written back to it so that
    every worker process (``--workers N``) reads the same ones."""
    for name in ("config", "host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"GATEWAY_{name.upper()}"] = str(value)
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"GATEWAY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        sys.exit(f"gateway: settings error: {problems}")


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, refusing a SIGHUP reload whose config does not load (the
    workers it would start could not serve; the old ones keep the old table), coalescing the
    SIGHUPs that arrive during a reload into one more, and telling the metrics when a worker is
    gone, so that its in-flight gauge leaves the sum."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], settings_path: str) -> None:
        super().__init__(config, sockets)
        self._settings_path = settings_path

    def handle_signals(self) -> None:
        # The supervisor reads its queue only between reloads (a reload replaces the workers one
        # by one and waits for each old one to drain): every HUP queued meanwhile asks for the
        # same thing, one reload from the file as it is now. A stop wins over a reload.
        queued = list(self.signal_queue)
        del self.signal_queue[:len(queued)]
        stopping = any(sig in (signal.SIGINT, signal.SIGTERM) for sig in queued)
        reloaded = False
        for sig in queued:
            if sig == signal.SIGHUP and (stopping or reloaded):
                continue
            reloaded = reloaded or sig == signal.SIGHUP
            handler = getattr(self, f"handle_{SIGNALS[sig].lower()}", None)
            if handler is not None:
                handler()

    def handle_hup(self) -> None:
        from .metrics import Metrics  # after PROMETHEUS_MULTIPROC_DIR is set

        try:
            load(self._settings_path)
        except ConfigError as exc:
            AccessLog().event("reload_rejected", level="warning", error=str(exc))
            Metrics.reloaded(False)
            return
        Metrics.reloaded(True)
        with self._forgetting_replaced_workers():
            super().handle_hup()

    def keep_subprocess_alive(self) -> None:
        with self._forgetting_replaced_workers():
            super().keep_subprocess_alive()

    @contextlib.contextmanager
    def _forgetting_replaced_workers(self) -> Iterator[None]:
        before = {p.pid for p in self.processes}
        yield
        from prometheus_client import multiprocess  # after PROMETHEUS_MULTIPROC_DIR is set

        for pid in before - {p.pid for p in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)


def serve(args: argparse.Namespace) -> None:
    settings = _settings(args)
    config = _load_or_exit(settings.config)
    if not settings.client_keys and not config.keys and not is_loopback(settings.host):
        sys.exit(f"gateway: refusing to serve on {settings.host} without client keys: "
                 "set GATEWAY_API_KEYS or configure keys:, or bind to 127.0.0.1")
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # every worker writes its metrics here and /metrics sums them (set before any import of them)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
        atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if args.workers > 1:
        os.environ[SUPERVISED] = str(os.getpid())  # workers find their siblings' process metrics by it
        if not settings.redis_url:
            print(f"note: with --workers {args.workers} and no GATEWAY_REDIS_URL, each worker keeps its own state: "
                  "a key's limits and budget are per worker (a key limited to N gets N per worker), and responses "
                  "stored by /v1/responses live in the worker that made them (a previous_response_id another "
                  "worker stored is a 400 that says so)", file=sys.stderr)
    if settings.metrics_port is not None:
        from .metrics import serve_separately
        serve_separately(settings.metrics_port, settings.host)
    # proxy_headers=False: nothing reads a request's client address or scheme (no log line names
    # them), so uvicorn's X-Forwarded-* middleware would be a layer per request for nothing; and no
    # "server: uvicorn" header: it tells an attacker the stack, and costs a header per answer
    server_config = uvicorn.Config("gateway.app:create_app", factory=True, host=settings.host, port=settings.port,
                                   workers=args.workers, loop="uvloop", http=GuardedProtocol,
                                   log_level=settings.log_level, access_log=False, proxy_headers=False,
                                   server_header=False, timeout_graceful_shutdown=int(settings.shutdown_grace))
    if args.workers > 1:
        _Supervisor(server_config, [server_config.bind_socket()], settings.config).run()
    else:
        uvicorn.Server(server_config).run()


def new_key(args: argparse.Namespace) -> None:
    try:
        plain, lines = keys.new_key(args.name)
    except ValueError as exc:
        sys.exit(f"gateway: {exc}")
    print(f"# the key for {args.name}, shown this once (the gateway keeps only its SHA-256):\n# {plain}\n{lines}",
          end="")


def check(args: argparse.Namespace) -> None:
    _print_table(_load_or_exit(_settings(args).config))


def simulate(args: argparse.Namespace) -> None:
    from .simulator import create_app as simulator

    uvicorn.run(simulator(), host=args.host, port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo(args: argparse.Namespace) -> None:
    """The simulators and the gateway together, keyless, until Ctrl-C."""
    from .app import create_app
    from .simulator import create_app as simulator

    sim_port = _free_port()
    os.environ["GATEWAY_DEMO_UPSTREAM"] = f"http://127.0.0.1:{sim_port}"
    settings = Settings(config=str(args.config), host="127.0.0.1", port=args.port, api_keys="")
    config = _load_or_exit(settings.config)
    servers = [
        uvicorn.Server(uvicorn.Config(simulator(), host="127.0.0.1", port=sim_port, log_level="warning",
                                      access_log=False, loop="uvloop", http="httptools")),
        uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning",
                                      access_log=False, loop="uvloop", http=GuardedProtocol,
                                      proxy_headers=False, server_header=False)),
    ]
    base = f"http://127.0.0.1:{args.port}/v1"
    alias = next(iter(config.models))
    print(f"""
GLM gateway demo: simulated upstreams on 127.0.0.1:{sim_port}, no keys needed.
Base URL: {base}
Models:   {", ".join(config.models)}

  curl {base}/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "{alias}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="unused")
  print(client.chat.completions.create(model="{alias}",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

Ctrl-C stops it.
""", flush=True)

    async def both() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    try:
        asyncio.run(both())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible gateway for GLM resellers")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve the gateway")
    p.add_argument("--config", help="routing table (default: $GATEWAY_CONFIG or config/gateway.yaml)")
    p.add_argument("--host", help="bind address (default: $GATEWAY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GATEWAY_PORT or 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.set_defaults(run=serve)
    p = commands.add_parser("check", help="validate a config and print the routing table")
    p.add_argument("--config")
    p.set_defaults(run=check)
    p = commands.add_parser("key", help="virtual keys")
    key_commands = p.add_subparsers(dest="key_command", required=True)
    p = key_commands.add_parser("new", help="print a fresh random key once, and the YAML lines with its hash")
    p.add_argument("name", help="the key's name in keys: (a metric label)")
    p.set_defaults(run=new_key)
    p = commands.add_parser("simulate", help="serve the five simulated upstreams")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.set_defaults(run=simulate)
    p = commands.add_parser("demo", help="simulated upstreams and the gateway together, no keys needed")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--config", default=DEMO_CONFIG)
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
