"""Progress lines while a study runs: which trials run where, done / total, best so far, time left."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rmaunet.studies.rows import RowWriter

__all__ = ["Progress", "FINISHED"]

# Reported once a training has written its result. Not "done": Tune sets that key itself
# on every trial's last result, stopped early or not.
FINISHED = "rmaunet_finished"
Log = Callable[[str], None]


class Progress(tune.Callback):
    """Logs each trial's start, epochs and end; a finished trial's rows are written through
    `on_complete(trial, stopped)`."""

    def __init__(
        self,
        writer: RowWriter,
        label: Callable[[Any], str],
        log: Log,
        on_complete: Callable[[Any, bool], None],
        total: int,
    ) -> None:
        self.writer, self.label, self.log, self.on_complete = writer, label, log, on_complete
        self.total = total
        self.finished = 0
        self.started = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        running = sum(1 for t in trials if t.status == "RUNNING")
        self.log(f"  start  {self.label(trial)}  ({running} running, {self.finished}/{self.total} done)")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metric = f"val_{self.writer.metric}"
        if "epoch" in result and metric in result:
            self.log(
                f"  epoch {int(result['epoch'])}  {self.label(trial)} on {result.get('node_ip', '?')}: "
                f"loss {result.get('loss', math.nan):.4f}, {metric} {100 * result[metric]:.2f}, "
                f"{result.get('images_per_s', math.nan):.0f} img/s"
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        finished = bool(last.get(FINISHED))
        self.on_complete(trial, not finished)
        self.finished += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.finished * max(self.total - self.finished, 0)
        best = self.writer.best
        best_text = f"best so far {best[1]!r} val {self.writer.metric} {100 * best[0]:.2f}" if best else "no result yet"
        state = "done  " if finished else "stop  "
        self.log(f"  {state} {self.label(trial)}  [{self.finished}/{self.total}] {best_text}; about {eta:.0f} s left")

    def on_trial_recover(self, iteration, trials, trial, **info):
        cause = (error_tail(trial, 1) or ["no error recorded"])[0].strip()
        self.log(
            f"  error  {self.label(trial)} on {trial_node(trial)}: the trial died ({cause});"
            " retrying, from its last epoch checkpoint"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        tail = error_tail(trial, ERROR_LINES)
        source = f"the end of {trial.error_file}:" if tail else "Tune recorded no error."
        self.log(
            f"  error  {self.label(trial)} on {trial_node(trial)}: failed {trial.num_failures} time(s), out of retries;"
            f" rerun the study to try again. {source}" + "".join(f"\n      {line}" for line in tail)
        )


# How much of a failed trial's error the driver shows: the exception and the frames that raised it.
ERROR_LINES = 10


def trial_node(trial: Any) -> str:
    """Where the trial last ran, as "host (ip)": from its last result, which Tune fills in
    itself; Tune has already cleared the trial's location when on_trial_error runs."""
    last = trial.last_result or {}
    ip = last.get("node_ip") or trial.temporary_state.location.hostname
    host = last.get("hostname")
    if not ip:
        return "an unknown node (it never reported)"
    return f"{host} ({ip})" if host and host != ip else str(ip)


def error_tail(trial: Any, lines: int) -> list[str]:
    """The last non-blank `lines` lines of the trial's error file (Tune appends each failure's
    traceback to it on the driver); empty when there is none."""
    path = trial.error_file
    if not path:
        return []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
