"""Progress lines while a study runs: which trials run where, done / total, best so far, time left."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rmaunet.errors import duration, plural
from rmaunet.studies.rows import RowWriter

__all__ = ["Progress", "FINISHED"]

# Reported once a training has written its result. Not "done": Tune sets that key itself
# on every trial's last result, stopped early or not.
FINISHED = "rmaunet_finished"
Log = Callable[[str], None]


class Progress(tune.Callback):
    """Logs each trial's start, epochs and end, naming its row and seed; a finished trial's
    rows are written through `on_complete(trial, stopped)`.

    Time left is re-estimated after every epoch from the epochs done so far (all trials
    together, so it accounts for trials running side by side). When `log` has a `status`
    method (a terminal: rmaunet.study_cli.Console), a one-line summary is kept up to date
    under the log lines; off a terminal the log lines are all there is.
    """

    def __init__(
        self,
        writer: RowWriter,
        label: Callable[[Any], str],
        log: Log,
        on_complete: Callable[[Any, bool], None],
        total: int,
        epochs: Callable[[Any], int],
    ) -> None:
        self.writer, self.label, self.log, self.on_complete = writer, label, log, on_complete
        self.total, self.epochs = total, epochs
        self.finished = 0
        self.failed = 0
        self.epochs_done: dict[str, int] = {}
        self.started = time.monotonic()
        self.status = getattr(log, "status", None)

    def _epochs_left(self, trials: list[Any]) -> int:
        """Planned epochs not yet run: those of the trials not finished, plus the trials not started."""
        per_trial = {t.trial_id: self.epochs(t) for t in trials}
        mean = sum(per_trial.values()) / len(per_trial) if per_trial else 0
        running = [t for t in trials if t.status in ("PENDING", "RUNNING", "PAUSED")]
        left = sum(max(per_trial[t.trial_id] - self.epochs_done.get(t.trial_id, 0), 0) for t in running)
        unseen = max(self.total - self.finished - len(running), 0)  # a search samples them later
        return int(left + unseen * mean)

    def eta(self, trials: list[Any]) -> str:
        done = sum(self.epochs_done.values())
        if not done:
            return "time left: after the first epoch"
        seconds = (time.monotonic() - self.started) / done * self._epochs_left(trials)
        return f"about {duration(seconds)} left"

    def _update(self, trials: list[Any]) -> None:
        if self.status is None:
            return
        running = sum(1 for t in trials if t.status == "RUNNING")
        failed = f", {self.failed} failed" if self.failed else ""
        self.status(f"{self.finished}/{self.total} trainings done, {running} running{failed}; {self.eta(trials)}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.log(f"  start  {self.label(trial)}: {plural(self.epochs(trial), 'epoch')}")
        self._update(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metric = f"val_{self.writer.metric}"
        if "epoch" in result and metric in result:
            epoch = int(result["epoch"])
            self.epochs_done[trial.trial_id] = max(epoch, self.epochs_done.get(trial.trial_id, 0))
            speed = result.get("images_per_s")
            self.log(
                f"  epoch {epoch}/{self.epochs(trial)}  {self.label(trial)} on {result.get('node_ip', '?')}: "
                f"loss {result.get('loss', math.nan):.4f}, {metric} {100 * result[metric]:.2f}"
                + (f", {speed:.0f} img/s" if isinstance(speed, (int, float)) and speed > 0 else "")
                + f"; {self.eta(trials)}"
            )
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        finished = bool(last.get(FINISHED))
        self.on_complete(trial, not finished)
        self.finished += 1
        metric = self.writer.metric
        score = last.get(f"final_val_{metric}", last.get(f"val_{metric}"))
        ok = last.get("status_ok", 1)
        if finished and not ok:
            self.failed += 1
        run = self.epochs_done.get(trial.trial_id, int(last.get("epoch", 0) or 0))
        outcome = (
            "failed (its reason is in the store)"
            if finished and not ok
            else f"{run}/{self.epochs(trial)} epochs, val {metric} "
            + (f"{100 * score:.2f}" if isinstance(score, (int, float)) else "n/a")
        )
        best = self.writer.best
        # A threshold study writes its rows once every training is done: no best row before that.
        best_text = f" best so far {best[1]!r} val {metric} {100 * best[0]:.2f};" if best else ""
        state = "done  " if finished else "stop  "
        self.log(
            f"  {state} {self.label(trial)}: {outcome}  [{self.finished}/{self.total}]{best_text} {self.eta(trials)}"
        )
        self._update(trials)

    def on_trial_recover(self, iteration, trials, trial, **info):
        cause = (error_tail(trial, 1) or ["no error recorded"])[0].strip()
        self.log(
            f"  error  {self.label(trial)} on {trial_node(trial)}: the trial died ({cause});"
            " retrying, from its last epoch checkpoint"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += 1
        tail = error_tail(trial, ERROR_LINES)
        source = f"the end of {trial.error_file}:" if tail else "Tune recorded no error."
        self.log(
            f"  error  {self.label(trial)} on {trial_node(trial)}: failed {trial.num_failures} time(s), out of retries;"
            f" rerun the study to try again. {source}" + "".join(f"\n      {line}" for line in tail)
        )
        self._update(trials)


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
