"""Does `rmaunet study plan`'s CPU calibration predict a study's real training time?

1. Writes a synthetic Landslide4Sense dataset and a small table study (two architectures,
   so two models are calibrated; two seeds; a few epochs; one CPU per trial).
2. Plans it as `rmaunet study plan` does (rmaunet.studies.plan.StudyPlan.costs): a few
   training steps of each model are timed on this machine with one trial's thread pools,
   and each training's time is predicted from its FLOPs (rmaunet.studies.cost).
3. Runs the study through the platform (run_study: local Ray, the trial's own code path)
   and sums each training's recorded wall time (`wall_s` of the results store: its epochs,
   validation and checkpoints, from the first epoch to the last).
4. Prints predicted against measured and their ratio (the goal: within ±30 %), with the
   load average before and after: on a shared machine the figure moves with the load.

bench/study_cost.py is another question (what the paper's specs cost after deduplication,
and what a search saves over a grid); this one checks the time prediction itself.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL = 0.30  # |predicted / measured - 1| at most
# On a heavily loaded machine a local Ray's raylet can miss Ray's fixed 30 s to register.
RAY_STARTS = 3
BASE = {
    "preset": "baseline",
    "base_filters": 8,
    "depth": 3,
    "crop": 48,
    "learning_rate": 2.0e-3,
    "batch_size": 8,
}
ROWS = [
    {"label": "U-Net & Cross Entropy (baseline)"},
    {"label": "U-Net & multi-head attention", "set": {"attention": "mha"}},
]


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=120, help="synthetic scenes (64×64, cropped to 48×48)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()

    import yaml

    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore
    from rmaunet.studies.plan import plan_study
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 - progress to stderr, JSON to stdout
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="cost-estimate-") as tmp:
        work = Path(tmp)
        data = write_landslide4sense(work / "data", n=args.tiles, seed=7, size=64)
        doc = {
            "name": "cost_estimate",
            "kind": "table",
            "base": {**BASE, "epochs": args.epochs},
            "seeds": list(range(args.seeds)),
            "resources": {"cpu": 1},
            "rows": ROWS,
        }
        (work / "spec.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        spec = load_spec(work / "spec.yaml")
        store = work / "store"

        t0 = time.monotonic()
        costs = plan_study(spec, data, store).costs()
        calibration_s = time.monotonic() - t0
        predicted = {(c.label, c.config.seed): c.cpu_seconds() or 0.0 for c in costs}

        for attempt in range(1, RAY_STARTS + 1):
            t0 = time.monotonic()
            try:
                run_study(spec, data, store, log=log)
                break
            except Exception as exc:  # Ray's own: a raylet that did not register within its fixed 30 s
                if "timed out during startup" not in str(exc) or attempt == RAY_STARTS:
                    raise
                log(f"local Ray did not start (attempt {attempt}, load {load()}): trying again in a fresh store")
                import ray

                ray.shutdown()
                store = work / f"store{attempt + 1}"
        study_wall_s = time.monotonic() - t0
        rows = ResultsStore(store).read(spec.name).drop_duplicates("trial_id")
        measured = {(str(r["row"]), int(r["seed"])): float(r["wall_s"]) for _, r in rows.iterrows()}

    per_training = [
        {"row": row, "seed": seed, "predicted_s": round(predicted[(row, seed)], 1), "measured_s": round(s, 1)}
        for (row, seed), s in sorted(measured.items())
    ]
    total_predicted, total_measured = sum(predicted.values()), sum(measured.values())
    ratio = total_predicted / total_measured
    first = costs[0].calibration
    assert first is not None
    out = {
        "trainings": len(measured),
        "epochs": args.epochs,
        "predicted_training_s": round(total_predicted, 1),
        "measured_training_s": round(total_measured, 1),
        "ratio": round(ratio, 3),
        "goal": f"within ±{GOAL:.0%}",
        "within_goal": abs(ratio - 1) <= GOAL,
        "calibration_s": round(calibration_s, 1),
        "calibrated_gflops": {c.label: round(c.calibration.flops_per_s / 1e9, 2) for c in costs if c.calibration},
        "tracing_s_per_training": round(first.start_s, 1),
        "threads": first.threads,
        "study_wall_s": round(study_wall_s, 1),
        "ray_starts": attempt,
        "per_training": per_training,
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": load(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
