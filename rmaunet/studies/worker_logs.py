"""Worker output that reaches the driver, less the words of processes told to exit.

A study's driver forwards its workers' output (log_to_driver: a failing trial's traceback
belongs in the job's log). When Ray ends a worker (an idle one, a trial's process once Tune
has no more use for it, every worker of the job as it finishes) it sends SIGTERM, and Ray's
handler raises SystemExit wherever the process happens to be. Inside a garbage-collection
callback, Python prints that as "Exception ignored in: …" and a traceback ending in
`sigterm_handler` and `SystemExit`; a TensorFlow process may add abseil's
"[mutex.cc : N] RAW: Lock blocking" as it goes. Neither says anything about the study, and
a user reading them at the end of a finished study takes them for a failure. This filter
drops exactly those and passes everything else on, in order.

A Ray worker that holds no task or actor (an idle one Ray keeps or ends) can also abort in
abseil as it goes ("[mutex.cc : N] RAW: Check … failed: … Mutex corrupt", then a crash
dump of some 12 lines). It held no task when it aborted (Ray names a worker's task only
while the task runs, so such a worker may have run one before): its dump becomes one line
saying so. A process running a task or an actor keeps its every line, a crash dump included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["ExitNoiseFilter", "install"]

_TRACEBACK_START = ("Traceback (most recent call last):", "Exception ignored in")
_ABSEIL_RAW = re.compile(r"^\[mutex\.cc : \d+\] RAW: (Lock blocking )?")
# A traceback longer than this is passed on as it is, ended or not.
_MAX_HELD = 400


def _ends_traceback(line: str) -> bool:
    """The exception's own line ("SystemExit: 1", "ValueError: …"): the first line after a
    traceback's start that is neither indented, nor empty, nor a traceback's start."""
    return bool(line) and not line[0].isspace() and not line.startswith(_TRACEBACK_START)


def _is_exit(traceback: list[str]) -> bool:
    return traceback[-1].startswith("SystemExit") and any("in sigterm_handler" in line for line in traceback)


class ExitNoiseFilter:
    """Takes Ray's batches of worker lines ({"pid", "is_err", "lines", …}) and hands each on
    without the exit noise. A traceback is held until its exception line arrives (a later
    batch of the same process's stream may bring it), then dropped or passed on whole."""

    def __init__(self, forward: Callable[[dict[str, Any]], None]) -> None:
        self.forward = forward
        self.held: dict[tuple[Any, bool], list[str]] = {}
        self.aborted: set[Any] = set()  # idle workers whose abseil abort was summarised

    def __call__(self, data: dict[str, Any]) -> None:
        key = (data.get("pid"), bool(data.get("is_err")))
        held = self.held.pop(key, None)
        idle = not (data.get("actor_name") or data.get("task_name"))
        out: list[str] = []
        for line in data.get("lines", []):
            if idle and key[0] in self.aborted:
                continue  # the rest of its crash dump
            abseil = _ABSEIL_RAW.match(line)
            lock_blocking = bool(abseil and abseil.group(1))  # the exit line, dropped
            if idle and held is None and abseil and not lock_blocking:
                self.aborted.add(key[0])
                out.append(f"a Ray worker aborted in abseil while it held no task ({line[:160]})")
                continue
            if held is None:
                if line.startswith(_TRACEBACK_START):
                    held = [line]
                elif not lock_blocking:
                    out.append(line)
                continue
            held.append(line)
            if _ends_traceback(line):
                if not _is_exit(held):
                    out.extend(held)
                held = None
            elif len(held) >= _MAX_HELD:
                out.extend(held)
                held = None
        if held is not None:
            self.held[key] = held
        if out:
            self.forward({**data, "lines": out})


def install() -> bool:
    """Put the filter in front of Ray's printer of worker output in this driver (connected
    with log_to_driver=True). False where this Ray has no such printer to wrap."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    name = "ray_print_logs"  # the name Ray adds its printer under, and removes it by on disconnect
    printer = next((handler for key, handler in dispatcher.handlers if key == name), None)
    if printer is None:
        return False
    if isinstance(printer, ExitNoiseFilter):
        return True
    dispatcher.remove_handler(name)
    dispatcher.add_handler(name, ExitNoiseFilter(printer))
    return True
