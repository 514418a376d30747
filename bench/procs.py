"""Processes the bench starts: spawn in a session of their own, wait until they answer, stop, RSS."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / ".work"
RESULTS_DIR = BENCH_DIR / "results"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f}s")


class Proc:
    """One server, started in its own session so that it and every child it forks share a group."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=cwd, start_new_session=True,
        )
        self.pid = self.popen.pid
        _RUNNING.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 5.0) -> None:
        # The whole group: uvicorn's worker processes and nginx's worker go with their parent.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout=grace)
                if not group_pids(self.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        if self in _RUNNING:
            _RUNNING.remove(self)


_RUNNING: list[Proc] = []


def stop_all() -> None:
    for proc in list(reversed(_RUNNING)):
        proc.stop(grace=3.0)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            pids.append(int(entry.name))
    return pids


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the group, summed (shared pages of forked workers count twice)."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE_SIZE
    return total


class RssSampler:
    """Tracks the peak RSS of each registered process group for the whole run."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def watch(self, name: str, pgid: int) -> None:
        self._groups[name] = pgid

    def start(self) -> None:
        self._thread.start()

    def sample_now(self) -> None:
        for name, pgid in list(self._groups.items()):
            rss = group_rss(pgid)
            if rss > self.peaks.get(name, 0):
                self.peaks[name] = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_now()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def run_quiet(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> int:
    return subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False).returncode


def ensure_debian_tools() -> None:
    """nginx and wrk come from Debian's packages; installed here when missing (needs root)."""
    missing = [pkg for pkg, binary in (("nginx", "nginx"), ("wrk", "wrk"))
               if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: missing {', '.join(missing)}; install with: sudo apt-get install {' '.join(missing)}")
    print(f"bench: installing {', '.join(missing)} from Debian's packages", flush=True)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run_quiet(["apt-get", "update", "-qq"], timeout=300, env=env)
    # policy-rc.d 101 keeps the package's own nginx service from starting on port 80.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        code = run_quiet(["apt-get", "install", "-y", "-qq", *missing], timeout=600, env=env)
    finally:
        if made_policy:
            policy.unlink()
    if code != 0:
        sys.exit(f"bench: apt-get install {' '.join(missing)} failed ({code})")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def ensure_venv(name: str, requirement: str, probe: str, timeout: float = 900) -> Path | None:
    """A venv under bench/.work for a peer or a tool, never the project's own venv; None if it can't be made."""
    venv = WORK_DIR / name
    python = venv / "bin" / "python"
    if python.exists() and run_quiet([str(python), "-c", probe], timeout=120) == 0:
        return venv
    print(f"bench: installing {requirement} into {venv.relative_to(BENCH_DIR.parent)}", flush=True)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with (WORK_DIR / f"{name}-install.log").open("ab") as log:
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300,
                               stdout=log, stderr=log)
            subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True,
                           timeout=timeout, stdout=log, stderr=log)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"bench: could not install {requirement}: {exc} (see {log.name})", flush=True)
            return None
    return venv if run_quiet([str(python), "-c", probe], timeout=120) == 0 else None
