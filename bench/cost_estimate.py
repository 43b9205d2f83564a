"""Does `rmaunet study plan`'s CPU calibration predict a study's real training time?

1. Writes a synthetic Landslide4Sense dataset and a small table study: by default two
   architectures (two models calibrated), two seeds, a few epochs, one CPU per trial; or
   any spec (`--spec demo`, `--spec paper_table4_losses --smoke`), with `--epochs` and
   `--seeds` as `study run --set epochs=N --seeds …` would set them.
2. Plans it as `rmaunet study plan` does (rmaunet.studies.plan.StudyPlan.costs): each model
   is calibrated on this machine with one trial's thread pools, and each training's time
   predicted from what its loop does (rmaunet.studies.cost.TrainingCost.cpu_parts).
3. Runs the study through the platform (run_study: local Ray, the trial's own code path)
   and measures each training as its trial folder records it: from its config.json (written
   when the trial starts, after its process has imported TensorFlow) to its result.json
   (written last, after the final scoring). The store's `wall_s` (the epochs only) is shown
   beside it.
4. Prints predicted against measured and their ratio (the goal: within ±30 %), the study's
   wall time against the plan's estimate for this machine, and the load average before and
   after: on a shared machine the figures move with the load.

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


def trial_seconds(store: Path, trial_id: str) -> float:
    """A training's real time: its trial folder's config.json (the trial's start) to its
    result.json (its end)."""
    folder = store / "trials" / trial_id
    return (folder / "result.json").stat().st_mtime - (folder / "config.json").stat().st_mtime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=120, help="synthetic scenes (64×64)")
    p.add_argument("--spec", help="a spec file or bundled spec name (default: the small table above)")
    p.add_argument("--smoke", action="store_true", help="the spec shrunk as `--smoke` shrinks it")
    p.add_argument("--epochs", type=int, help="epochs of every training (default: the spec's; 4 for the small table)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the spec's; 2 for the small table)")
    args = p.parse_args()

    import yaml

    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.specs import resolve_spec
    from rmaunet.store import ResultsStore
    from rmaunet.studies.capacity import this_machine
    from rmaunet.studies.plan import cost_report, plan_study
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 - progress to stderr, JSON to stdout
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="cost-estimate-") as tmp:
        work = Path(tmp)
        data = write_landslide4sense(work / "data", n=args.tiles, seed=7, size=64)
        if args.spec:
            path = resolve_spec(args.spec)
        else:
            doc = {"name": "cost_estimate", "kind": "table", "base": BASE, "seeds": [0, 1], "resources": {"cpu": 1}}
            path = work / "spec.yaml"
            path.write_text(yaml.safe_dump({**doc, "base": {**BASE, "epochs": 4}, "rows": ROWS}, sort_keys=False))
        overrides = {"epochs": args.epochs} if args.epochs else None
        seeds = list(range(args.seeds)) if args.seeds else None
        spec = load_spec(path, smoke=args.smoke, overrides=overrides, seeds=seeds)
        store = work / "store"

        t0 = time.monotonic()
        plan = plan_study(spec, data, store)
        costs = plan.costs()
        calibration_s = time.monotonic() - t0
        predicted = {(c.label, c.config.seed): c.cpu_seconds() or 0.0 for c in costs}
        report = cost_report(plan, costs, this_machine())
        wall_line = next(line for line in report.splitlines() if line.startswith("wall time on the cluster"))

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
        keys = [(str(r["row"]), int(r["seed"])) for _, r in rows.iterrows()]
        measured = {key: trial_seconds(store, str(tid)) for key, tid in zip(keys, rows["trial_id"])}
        epochs_s = {key: float(seconds) for key, seconds in zip(keys, rows["wall_s"])}

    per_training = [
        {
            "row": row,
            "seed": seed,
            "predicted_s": round(predicted[(row, seed)], 1),
            "measured_s": round(s, 1),
            "epochs_wall_s": round(epochs_s[(row, seed)], 1),
        }
        for (row, seed), s in sorted(measured.items())
    ]
    total_predicted, total_measured = sum(predicted.values()), sum(measured.values())
    ratio = total_predicted / total_measured
    parts: dict[str, float] = {}
    for cost in costs:
        for name, seconds in (cost.cpu_parts() or {}).items():
            parts[name] = parts.get(name, 0.0) + seconds
    first = costs[0].calibration
    assert first is not None
    out = {
        "spec": args.spec or "the small table (bench/cost_estimate.py)",
        "smoke": args.smoke,
        "trainings": len(measured),
        "epochs": sorted({c.config.epochs for c in costs}),
        "predicted_training_s": round(total_predicted, 1),
        "measured_training_s": round(total_measured, 1),
        "ratio": round(ratio, 3),
        "goal": f"within ±{GOAL:.0%}",
        "within_goal": abs(ratio - 1) <= GOAL,
        "predicted_parts_s": {name: round(seconds, 1) for name, seconds in parts.items()},
        "calibration_s": round(calibration_s, 1),
        "calibrated_gflops": {c.label: round(c.calibration.flops_per_s / 1e9, 2) for c in costs if c.calibration},
        "threads": first.threads,
        "study_wall_s": round(study_wall_s, 1),
        "plan_wall_line": wall_line,
        "ray_starts": attempt,
        "per_training": per_training,
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": load(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
