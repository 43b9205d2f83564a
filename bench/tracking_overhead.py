"""What does --mlflow cost Tune's driver loop per reported result?

Ray Tune runs every callback on its driver loop: while a callback writes, no trial's result
is processed. Ray's MLflowLoggerCallback writes each result synchronously through its
`_MLflowLoggerUtil.log_metrics` (every key of the result, Tune's bookkeeping included);
rmaunet's MLflowTracking (rmaunet.studies.tracking) queues the write for a background thread.
Both write to the same kind of store, an MLflow SQLite database in a temporary folder, the
same number of epoch results of the same shape.

Prints one JSON object on its last line: the median and 95th percentile seconds per result
on the loop for each (`ray_sync_*`, `rmaunet_*`), their ratio, and how long rmaunet's thread
then took to write everything (`rmaunet_drain_s`: work moved off the loop, not removed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def _result(epoch: int) -> dict[str, float]:
    """An epoch result as a trial reports it, plus what Tune adds."""
    metrics = {f"val_{m}": 0.5 + epoch / 1000 for m in ("precision", "recall", "f1", "iou", "miou")}
    tune_keys = {"pid": 4242, "timestamp": time.time(), "time_this_iter_s": 1.0, "training_iteration": epoch}
    return {"epoch": epoch, "loss": 0.3, "images_per_s": 120.0, "epoch_s": 2.0, **metrics, **tune_keys}


def ray_sync(folder: Path, results: int) -> list[float]:
    from ray.air._internal.mlflow import _MLflowLoggerUtil

    util = _MLflowLoggerUtil()
    util.setup_mlflow(tracking_uri=f"sqlite:///{folder / 'ray.db'}", experiment_name="bench")
    run = util.start_run(run_name="trial", tags={"study": "bench"}, set_active=False)
    costs = []
    for epoch in range(1, results + 1):
        started = time.perf_counter()
        util.log_metrics(step=epoch, metrics_to_log=_result(epoch), run_id=run.info.run_id)
        costs.append(time.perf_counter() - started)
    return costs


def rmaunet_async(folder: Path, results: int) -> tuple[list[float], float]:
    from rmaunet.studies.tracking import MLflowTracking

    tracking = MLflowTracking(f"sqlite:///{folder / 'rmaunet.db'}", "bench", str(folder / "store"))
    trial = SimpleNamespace(trial_id="t", config={"rmaunet_trial_id": "x", "row": "bench", "seed": 0}, last_result={})
    tracking.setup()
    tracking.on_trial_start(0, [trial], trial)
    costs = []
    for epoch in range(1, results + 1):
        started = time.perf_counter()
        tracking.on_trial_result(0, [trial], trial, _result(epoch))
        costs.append(time.perf_counter() - started)
    drain = time.perf_counter()
    tracking.flush()
    assert not tracking.errors, tracking.errors
    return costs, time.perf_counter() - drain


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=60, help="epoch results to log (default 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ray_costs = ray_sync(Path(tmp), args.results)
        ours, drain = rmaunet_async(Path(tmp), args.results)
    out = {
        "results": args.results,
        "ray_sync_median_s": statistics.median(ray_costs),
        "ray_sync_p95_s": p95(ray_costs),
        "rmaunet_median_s": statistics.median(ours),
        "rmaunet_p95_s": p95(ours),
        "loop_cost_ratio": statistics.median(ray_costs) / max(statistics.median(ours), 1e-9),
        "rmaunet_drain_s": drain,
        "goal_s_per_result": 0.1,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
