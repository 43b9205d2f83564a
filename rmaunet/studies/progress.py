"""Progress lines while a study runs: which trials run where, done / total, best so far, time left."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

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
        self, writer: RowWriter, label: Callable[[Any], str], log: Log, on_complete: Callable[[Any, bool], None],
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
        self.log(f"  error  {self.label(trial)}: the trial died; retrying, from its last epoch checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log(f"  error  {self.label(trial)}: the trial failed after its retries; rerun the study to try again")
