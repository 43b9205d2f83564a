"""MLflow tracking of a study: one run per training, written off Tune's loop.

Ray's own MLflowLoggerCallback writes every result synchronously on the driver (about a
second per result against a database store, and Tune warns that its loop is blocked) and
logs Tune's bookkeeping (`pid`, `timestamp`, `done`, `config/seed`) as metrics. This one
hands each call to a background thread that batches it, so a Tune event costs
microseconds, and logs what a reader of the study wants:

- parameters: the row, the seed, rmaunet's trial id and the fields the study varies;
- per-epoch metrics: `loss`, `val_*`, `images_per_s`, at the epoch as step;
- on completion: the selected epoch's `selected_val_*` and `test_*` metrics, and the trial's
  `config.json`, `result.json` and selected weights as artifacts;
- after the report: one run named after the study holding its table and figures.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rmaunet.store import ResultsStore

__all__ = ["MLflowTracking", "EPOCH_METRICS"]

# The per-epoch keys worth a curve: rmaunet's own metrics, not Tune's bookkeeping.
EPOCH_METRICS = ("loss", "images_per_s", "epoch_s")
TRIAL_KEY = "rmaunet_trial_id"


def _numbers(values: dict[str, Any], keep: Callable[[str], bool]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if keep(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _name(config: dict[str, Any], fallback: str) -> str:
    """A run's name: the row and seed where the trial's config has them (a table study's)."""
    return f"{config['row']} (seed {config.get('seed', '?')})" if "row" in config else fallback


class MLflowTracking(tune.Callback):
    """A Tune callback logging each training of a study to MLflow from a background thread."""

    def __init__(
        self, tracking_uri: str, experiment: str, storage: str, label: Callable[[Any], str] | None = None
    ) -> None:
        self.tracking_uri, self.experiment, self.storage = tracking_uri, experiment, storage
        self.label = label
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None
        self.client: Any = None
        self.experiment_id = ""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment's state: the settings travel; the
        queue, the thread and the client (locks, a connection) are made again where needed."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "storage": self.storage,
            "label": self.label,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    # ------------------------------------------------------------------ the writer thread
    def _start(self) -> None:
        if self.thread is not None:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        self.thread = threading.Thread(target=self._drain, name="rmaunet-mlflow", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while (job := self.work.get()) is not None:
            try:
                job()
            except Exception as exc:  # a tracking server hiccup must not stop the study
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def flush(self) -> None:
        """Wait until everything queued so far is written."""
        if self.thread is None:
            return
        self.work.put(None)
        self.thread.join()
        self.thread = None

    # ------------------------------------------------------------------ Tune's events
    def setup(self, **info: Any) -> None:
        self._start()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._start()
        config = dict(trial.config)
        name = self.label(trial) if self.label else _name(config, str(trial))
        params = {k: str(v) for k, v in config.items() if not isinstance(v, dict)}

        def create() -> None:
            from mlflow.entities import Param, RunTag

            run = self.client.create_run(self.experiment_id, run_name=name[:250], tags={"study": self.experiment})
            self.runs[trial.trial_id] = run.info.run_id
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, v[:6000]) for k, v in params.items()],
                tags=[RunTag("rmaunet_trial_id", str(config.get(TRIAL_KEY, "")))],
            )

        self.work.put(create)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result:
            return
        step = int(result["epoch"])
        metrics = _numbers(result, lambda k: k in EPOCH_METRICS or (k.startswith("val_") and k != "val_threshold"))
        stamp = int(time.time() * 1000)

        def log() -> None:
            from mlflow.entities import Metric

            run_id = self.runs.get(trial.trial_id)
            if run_id:
                self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])

        self.work.put(log)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = dict(trial.last_result or {})
        tid = str(trial.config.get(TRIAL_KEY, ""))
        self.work.put(lambda: self._finish(trial.trial_id, tid, last, "FINISHED"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.work.put(lambda: self._finish(trial.trial_id, "", {}, "FAILED"))

    def on_experiment_end(self, trials, **info):
        self.flush()

    def _finish(self, tune_id: str, tid: str, last: dict[str, Any], status: str) -> None:
        from mlflow.entities import Metric

        run_id = self.runs.get(tune_id)
        if not run_id:
            return
        stamp = int(time.time() * 1000)
        # The selected epoch's scores: test_* as they are, validation as selected_val_* (val_* is the per-epoch curve).
        finals = {
            k.replace("final_test_", "test_").replace("final_val_", "selected_val_"): v
            for k, v in _numbers(last, lambda k: k.startswith(("final_val_", "final_test_"))).items()
        }
        if finals:
            self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in finals.items()])
        if tid:
            folder = ResultsStore(self.storage).trial(tid)
            for path in (folder.config, folder.result, folder.best_weights):
                if path.is_file():
                    self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status)

    # ------------------------------------------------------------------ the study's report
    def log_report(self, files: dict[str, Path]) -> None:
        """One run named after the study with its table and figures as artifacts."""
        self._start()

        def log() -> None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{self.experiment} report", tags={"study": self.experiment}
            )
            for path in files.values():
                if Path(path).is_file():
                    self.client.log_artifact(run.info.run_id, str(path))
            self.client.set_terminated(run.info.run_id, "FINISHED")

        self.work.put(log)
        self.flush()
