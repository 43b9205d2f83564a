"""Does a 2-worker data-parallel run train what a 1-worker run trains, under load and restarts?

The trial is the equivalence test's (tests/test_training_distributed.py: 60 synthetic
Landslide4Sense tiles of 32x32, base_filters 4, depth 2, 2 epochs, global batch 8, seed 5).
One 1-worker run is the reference; then each variant runs on 2 workers and its final
weights (the epoch-2 checkpoint) are compared with the reference's:

    gap / step = |w2 - w1| / |w1(epoch 2) - w1(epoch 1)|   (the test allows 1e-3)

Variants (a restart is what Ray 2.60's PlacementGroupCleaner does to a live run under
load, ray-project/ray#65447: it removes the run's placement group, every worker dies,
and Ray Train restarts the group from the last epoch checkpoint, or from scratch):
- `plain`: no fault;
- `raise1`: rank 0 raises after epoch 1's checkpoint (RMAUNET_FAIL_AFTER_EPOCH=1);
- `pg_epoch2`: the driver removes the run's placement group `--delay` s after epoch 1's
  row arrives (mid-epoch 2: the restarted group replays epoch 2 from epoch 1's checkpoint);
- `pg_epoch1[:S]`: the driver removes it S (default `--early`) s after the run starts,
  before epoch 1's checkpoint. Under a load of 4-8 Ray Train's controller failed then
  instead of restarting the group (on a quiet machine, 25 s in, it restarted it itself);
  such an end raises WorkersLostError from run_data_parallel, and the bench runs the trial
  again, as Tune would (`workers_lost` lists each such end).

A variant ending in `@1` runs on one worker instead (`raise1@1`: the reference itself
restarted), compared with the same reference.

Every run records its load average (1 min) at the start and end, its wall time, whether
the fault happened, and `resumed_from`. Run under a CPU load to see the effect of load:

    /work/wt/_notes/heavy python bench/dp_determinism.py --variants plain,pg_epoch2 --repeat 2

Prints one JSON line per run and, as the last line, one JSON object: the largest gap of a
2-worker run (`max_gap_per_step`), how many runs were compared, failed or met their fault,
whether the ranks agreed, the highest load seen, and every run;
`python bench/record.py dp_determinism ARGS` keeps it in bench/results/dp_determinism.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmaunet.config import TrialConfig  # noqa: E402

TINY = dict(base_filters=4, depth=2, epochs=2, batch_size=8, augment=(), seed=5)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def weights(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def checkpoint_weights(out: Path, config: TrialConfig, epoch: int) -> dict[str, np.ndarray]:
    return weights(out / "ray_train" / f"dp_{config.training_hash}" / f"epoch_{epoch:04d}" / "last.weights.h5")


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a)))


def remove_run_placement_group(num_workers: int) -> str:
    """Remove the live Train run's placement group, as the PlacementGroupCleaner does."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for pg_id, info in ray.util.placement_group_table().items():
        if info.get("state") == "CREATED" and len(info.get("bundles", {})) == num_workers:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
            return pg_id
    return ""


def run(variant: str, config: TrialConfig, data: Path, out: Path, workers: int, delay: float, early: float) -> dict:
    from rmaunet.training.distributed import WorkersLostError, run_data_parallel

    fault: dict[str, Any] = {}
    timers: list[threading.Timer] = []

    def pull(after: float) -> None:
        def fire() -> None:
            fault["pg"] = remove_run_placement_group(workers)
            fault["at_s"] = round(time.perf_counter() - started, 1)

        timer = threading.Timer(after, fire)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        if variant == "pg_epoch2" and row["epoch"] == 1 and not timers:
            pull(delay)

    if variant == "raise1":
        os.environ["RMAUNET_FAIL_AFTER_EPOCH"] = "1"
    started, load_start = time.perf_counter(), load1()
    if variant.startswith("pg_epoch1"):
        pull(float(variant.partition(":")[2] or early))
    lost: list[str] = []
    try:
        while True:
            try:
                result = run_data_parallel(config, data, out, num_workers=workers, report=report)
                break
            except WorkersLostError as exc:  # Tune runs the trial again, which resumes: so does this
                lost.append(str(exc))
                if len(lost) == 3:
                    raise
    finally:
        for timer in timers:
            timer.cancel()
        os.environ.pop("RMAUNET_FAIL_AFTER_EPOCH", None)
    return {
        "variant": variant,
        "workers": workers,
        "status": result.status,
        "reason": result.reason,
        "resumed_from": result.resumed_from,
        "workers_lost": lost,
        "worker_failures": json.loads((out / "result.json").read_text()).get("worker_failures"),
        "rows": [r["epoch"] for r in rows],
        "losses": [r["loss"] for r in rows],
        "fault": fault or ((out / ".failure-injected").exists() and {"raised": True}) or {},
        "load1": [load_start, load1()],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="plain,raise1,pg_epoch2,pg_epoch1")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--delay", type=float, default=3.0, help="s after epoch 1's row (pg_epoch2)")
    parser.add_argument("--early", type=float, default=25.0, help="s after the run starts (pg_epoch1)")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here")
    args = parser.parse_args()

    import ray

    from rmaunet.data.synthetic import write_landslide4sense

    base = args.keep or Path(tempfile.mkdtemp(prefix="dp_determinism_"))
    data = base / "l4s_small"
    if not data.exists():
        write_landslide4sense(data, n=60, seed=3, size=32)
    from rmaunet.studies.session import job_runtime_env

    # The runtime env a study's job gets: at Ray's default niceness of 15 the Train
    # controller, which imports TensorFlow, waited minutes for a core under load.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=job_runtime_env())
    config = TrialConfig(**TINY)
    runs: list[dict[str, Any]] = []
    try:
        reference = run("plain", config, data, base / "w1", 1, args.delay, args.early)
        w1 = checkpoint_weights(base / "w1", config, 2)
        step = distance(w1, checkpoint_weights(base / "w1", config, 1))
        reference["step"] = step
        print(json.dumps(reference), flush=True)
        runs.append(reference)
        for i in range(args.repeat):
            for name in args.variants.split(","):
                variant, _, workers = name.partition("@")
                out = base / f"w{workers or 2}_{variant}_{i}"
                record = run(variant, config, data, out, int(workers or 2), args.delay, args.early)
                if record["status"] == "ok":
                    record["gap_per_step"] = distance(w1, checkpoint_weights(out, config, 2)) / step
                    sync = json.loads((out / "sync.json").read_text())
                    record["sync_epochs"] = [s["epoch"] for s in sync]
                    record["ranks_agree"] = all(len(set(s["weights_sha256"])) == 1 for s in sync)
                print(json.dumps(record), flush=True)
                runs.append(record)
    finally:
        ray.shutdown()
    compared = [r for r in runs[1:] if "gap_per_step" in r]
    summary = {
        "max_gap_per_step": max((r["gap_per_step"] for r in compared), default=None),
        "goal_gap_per_step": 1e-3,  # what the equivalence test allows
        "compared": len(compared),
        "failed_runs": sum(r["status"] != "ok" for r in runs),
        "faults_happened": sum(bool(r["fault"]) for r in runs[1:]),
        "ranks_agree": all(r.get("ranks_agree", True) for r in compared),
        "load1_max": max(max(r["load1"]) for r in runs),
    }
    print(json.dumps({**summary, "runs": runs, "cpus": os.cpu_count(), "folder": str(base)}))


if __name__ == "__main__":
    main()
