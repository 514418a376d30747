"""Process metrics for every process of a ``--workers N`` gateway, not only the one that answers.

prometheus_client's process collector reads ``/proc/self``: under workers the scrape would show one
random worker's CPU, memory and descriptors, and its multiprocess registry drops them altogether.
This collector reads the supervisor and each of its workers, labelled ``pid`` and ``role``
(``supervisor``, ``worker``), through
prometheus_client's own reader (Linux ``/proc``; elsewhere it yields nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .settings import SUPERVISED


def _children(parent: int) -> list[int]:
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as listing:
            return [int(pid) for pid in listing.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: walk /proc
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry))
    return found


def _is_worker(pid: int) -> bool:
    """A serving worker, not multiprocessing's resource tracker (also the supervisor's child)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"resource_tracker" not in cmdline.read()
    except OSError:
        return False


class WorkerProcesses(Collector):
    def collect(self) -> Iterator[Metric]:
        supervisor = int(os.environ.get(SUPERVISED) or os.getpid())
        merged: dict[str, Metric] = {}
        processes = [(supervisor, "supervisor"), *((pid, "worker") for pid in _children(supervisor) if _is_worker(pid))]
        for pid, role in processes:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():  # type: ignore[misc]
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid), "role": role}, sample.value)
        yield from merged.values()
