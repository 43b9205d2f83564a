"""A free TCP port on 127.0.0.1, for the servers and Ray nodes tests start.

The port is picked below Linux's ephemeral range (32768-60999 by default) and above Ray's
worker ports (10002-19999). A port the kernel hands out for `bind(0)` comes from the ephemeral
range, the same range every outgoing connection takes its source port from: between asking
and the server binding it, one of the many gRPC connections a Ray node opens can take it,
and the node then fails to start (a CI run lost a worker node that way, the cluster waiting
for three nodes and seeing two). No port is handed out twice in one process, and under
pytest-xdist each worker picks from its own slice of the range.
"""

from __future__ import annotations

import os
import random
import socket

__all__ = ["free_port"]

_LOW, _HIGH = 20000, 32000
_given: set[int] = set()
_pick = random.Random()


def _ephemeral() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _slice() -> tuple[int, int]:
    """This process's share of the range: all of it, or one xdist worker's slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (_HIGH - _LOW) // count
    low = _LOW + width * (index % count)
    return low, low + width


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (at the time of asking), outside the
    ephemeral range and never one this process handed out before."""
    ephemeral = _ephemeral()
    low, high = _slice()
    for _ in range(500):
        port = _pick.randrange(low, high)
        if port in _given or port in ephemeral:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {low}-{high}")
