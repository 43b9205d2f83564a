"""What the paper's studies cost after deduplication, and what a search saves over a grid.

1. Expands every paper spec (Tables IV, VI-X) against one data fingerprint and counts
   table rows against the trainings actually needed (shared configs train once; the
   threshold table and the ladder's threshold step reuse existing trainings).
2. Runs a search (Optuna TPE + ASHA) and an exhaustive grid of the same space on the
   same synthetic data through the platform, and reports the share of the grid's epoch
   budget the search spent before its best validation F1 came within 1 point of the
   grid's best (`search_budget_fraction`, target <= 1/3).

By default the search space is a CPU-sized slice of joint_search (18 grid points);
`--space joint` uses joint_search's own space discretised at 3 points per continuous axis
(hundreds of trainings: a cluster job). Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER_SPECS = [
    "paper_table4_losses",
    "paper_table6_bands",
    "paper_table7_heads",
    "paper_table8_architectures",
    "paper_table9_threshold",
    "paper_table10_ladder",
]
SMALL_SPACE = {
    "loss_params.alpha": {"choice": [0.2, 0.5, 0.8]},
    "attention": {"choice": ["none", "se"]},
    "learning_rate": {"choice": [3.0e-4, 1.0e-3, 3.0e-3]},
}
# Big enough to learn the synthetic signal within the epoch budget (F1 0 everywhere would
# make any search "match" the grid), small enough for 2 CPU cores.
BASE = {"preset": "baseline", "loss": "focal_iou", "base_filters": 8, "depth": 3, "batch_size": 8, "augment": []}


def paper_cost() -> dict[str, int]:
    from rmaunet.studies.expand import expand
    from rmaunet.studies.spec import load_spec

    rows, trainings = 0, set()
    for name in PAPER_SPECS:
        spec = load_spec(REPO / "search_spaces" / f"{name}.yaml")
        planned = expand(spec, "fingerprint")
        per_threshold = len(spec.thresholds) if spec.kind == "threshold" else 1
        rows += len(planned) * per_threshold
        trainings |= {p.trial_id for p in planned}
    return {"rows": rows, "trainings": len(trainings)}


def _write_spec(path: Path, doc: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def search_vs_grid(work: Path, space: dict, epochs: int, budget: int, n_tiles: int) -> dict[str, float]:
    from rmaunet.config import TrialConfig
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.search import describe, grid_points, parse_space
    from rmaunet.studies.spec import load_spec

    data = write_landslide4sense(work / "data", n=n_tiles, seed=7, size=64)
    base = {**BASE, "epochs": epochs}
    parsed = parse_space(space, TrialConfig.from_dict({k: v for k, v in base.items() if k != "preset"}))
    grid = grid_points(parsed)
    rows = []
    for params in grid:
        overrides = {k: v for k, v in params.items() if not k.startswith("loss_params.")}
        extra = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("loss_params.")}
        if extra:
            overrides["loss_params"] = extra
        rows.append({"label": describe(params), "set": overrides})
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 - progress to stderr, JSON to stdout

    t0 = time.monotonic()
    grid_spec = _write_spec(
        work / "grid.yaml", {"name": "grid", "kind": "table", "base": base, "resources": {"cpu": 1}, "rows": rows}
    )
    run_study(load_spec(grid_spec), data, work / "grid_store", log=log)
    grid_s = time.monotonic() - t0
    grid_rows = ResultsStore(work / "grid_store").read("grid")
    grid_best = float(grid_rows["val_f1"].max())
    grid_epochs = int(grid_rows["epochs_run"].sum())

    t0 = time.monotonic()
    search_spec = _write_spec(
        work / "search.yaml",
        {"name": "search", "kind": "search", "base": base, "resources": {"cpu": 1}, "budget": budget, "space": space},
    )
    run_study(load_spec(search_spec), data, work / "search_store", log=log)
    search_s = time.monotonic() - t0
    found = ResultsStore(work / "search_store").read("search").sort_values("row_index")
    spent, reached_at, best = 0, None, 0.0
    for _, r in found.iterrows():
        spent += int(r["epochs_run"])
        best = max(best, float(r["val_f1"]) if r["val_f1"] == r["val_f1"] else 0.0)
        if reached_at is None and best >= grid_best - 0.01:
            reached_at = spent
    return {
        "grid_points": len(grid),
        "grid_epochs": grid_epochs,
        "grid_best_val_f1": grid_best,
        "search_trials": int(len(found)),
        "search_epochs": int(found["epochs_run"].sum()),
        "search_best_val_f1": best,
        "search_epochs_to_within_1pt": reached_at,
        "search_budget_fraction": (reached_at / grid_epochs) if reached_at is not None else None,
        "grid_wall_s": grid_s,
        "search_wall_s": search_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=["small", "joint"], default="small")
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--tiles", type=int, default=160)
    p.add_argument("--no-search", action="store_true", help="only count the paper specs' rows and trainings")
    args = p.parse_args()
    out: dict[str, object] = paper_cost()
    if not args.no_search:
        space = SMALL_SPACE
        if args.space == "joint":
            from rmaunet.studies.spec import load_spec

            space = load_spec(REPO / "search_spaces" / "joint_search.yaml").space
        with tempfile.TemporaryDirectory(prefix="study-cost-") as work:
            out.update(search_vs_grid(Path(work), space, args.epochs, args.budget, args.tiles))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
