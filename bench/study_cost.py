"""What the paper's studies cost after deduplication, and what a search saves over a grid.

1. Expands every paper spec (Tables IV, VI-X) against one data fingerprint and counts
   table rows against the trainings actually needed (shared configs train once; the
   threshold table and the ladder's threshold step reuse existing trainings).
2. Runs an exhaustive grid of a search space once, then a search (Optuna TPE + ASHA) of
   the same space on the same synthetic data through the platform, once per search seed,
   and reports the share of the grid's epoch budget each search spent before its best
   validation F1 came within 1 point of the grid's best, and their median
   (`search_budget_fraction`, goal <= 1/3).

One search is not a measurement: what it samples hangs on its seed, and its concurrent
trials finish in an order the machine decides, which steers ASHA's stops (and TPE, once it
models), so a rerun can miss the target that the last one reached. Hence the median over
`--search-seeds` seeds (default 3). With the default budget of 8 trials TPE never leaves
Optuna's 10 random start-up trials: the search measured is a seeded random search + ASHA.
A search seed seeds the TPE sampler only: the space pins the training seed to the grid's,
so a configuration the search samples is the very training the grid ran, replayed from the
shared results store (same weights, same F1) and charged the epochs the search's own
schedule gave it. The search's F1 can thus differ from the grid's only by what it sampled
and stopped, never by training noise. A seed that never came within 1 point counts as
infinity (`search_unreached_counts_as`): it ranks above every seed that did reach, so it can
only raise the median; a majority of such seeds makes the median infinite (null in JSON).
Its whole spent budget would be the wrong stand-in: a search stopped early by its trial
budget would then look cheaper than one that reached the target.
Each seed's trace comes from its Optuna study (`search_trace`), not from the results store:
the store keeps one row per label and seed, so a configuration one search samples twice
would keep only its last row and the trace would lose the earlier sample's epochs and place.

By default the search space is a CPU-sized slice of joint_search (18 grid points);
`--space joint` uses joint_search's own space discretised at 3 points per continuous axis
(hundreds of trainings: a cluster job). Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
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
WITHIN = 0.01  # "came within 1 F1 point of the grid's best"
GOAL = 1 / 3  # the goal for the median share of the grid's epochs
# What a seed that never came within 1 point counts as (see the docstring), as the JSON states it.
UNREACHED = "infinity: ranks above every seed that reached the target, so it can only raise the median (null here)"


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


def search_vs_grid(
    work: Path, space: dict, epochs: int, budget: int, n_tiles: int, search_seeds: Sequence[int]
) -> dict[str, object]:
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

    # One store for the grid and every search: the searches replay the grid's trainings.
    store = work / "store"
    t0 = time.monotonic()
    grid_spec = _write_spec(
        work / "grid.yaml", {"name": "grid", "kind": "table", "base": base, "resources": {"cpu": 1}, "rows": rows}
    )
    run_study(load_spec(grid_spec), data, store, log=log)
    grid_s = time.monotonic() - t0
    grid_rows = ResultsStore(store).read("grid")
    grid_best = float(grid_rows["val_f1"].max())
    grid_epochs = int(grid_rows["epochs_run"].sum())

    traces: dict[int, list[tuple[int, float]]] = {}
    search_s: dict[int, float] = {}
    # The training seed rides in the space as a one-value choice, so that `seeds:` (which
    # also seeds TPE) can vary without changing what a configuration trains.
    pinned = {**space, "seed": {"choice": [0]}}
    for seed in search_seeds:
        name = f"search_seed{seed}"
        t0 = time.monotonic()
        search_spec = _write_spec(
            work / f"{name}.yaml",
            {
                "name": name,
                "kind": "search",
                "base": base,
                "seeds": [seed],
                "resources": {"cpu": 1},
                "budget": budget,
                "space": pinned,
            },
        )
        run_study(load_spec(search_spec), data, store, log=log)
        search_s[seed] = time.monotonic() - t0
        # The search's own Optuna study (run_search keeps a local store's in optuna.db, named after the spec).
        traces[seed] = search_trace(f"sqlite:///{store / 'optuna.db'}", name, epochs)
        log(f"{name}: (epochs charged, val F1) in finishing order: {traces[seed]}")
    grid_trace = [(r["row"], int(r["epochs_run"]), float(r["val_f1"])) for _, r in grid_rows.iterrows()]
    log(f"grid: (label, epochs, val F1): {grid_trace}")
    return {
        "grid_points": len(grid),
        "grid_epochs": grid_epochs,
        "grid_best_val_f1": grid_best,
        **budget_fractions(traces, grid_best, grid_epochs),
        "grid_wall_s": grid_s,
        "search_wall_s": sum(search_s.values()),
    }


def search_trace(url: str, study_name: str, epochs: int) -> list[tuple[int, float]]:
    """Every sample of the search `study_name` in the Optuna storage at `url`, as (epochs
    charged, validation F1), in the order Optuna was told each one finished.

    What Ray's OptunaSearch tells (ray/tune/search/optuna/optuna_search.py, Ray 2.60): each
    result it sees, at step `training_iteration`, which is the epoch, since a trial reports
    once per epoch (a replayed one once per stored epoch); the result on which the scheduler
    stops a trial is not told (tune_controller._process_trial_result). So:
    - a COMPLETE trial ran all its epochs; its last report, the objective at `epochs` + 1,
      is where ASHA's max_t stops it, so it is not among the steps. Charged: its steps up to
      `epochs`; F1: its value, the objective its results row reports (selection metric F1);
    - a PRUNED trial (stopped by ASHA) trained one epoch past its last step. Charged: its
      steps + 1; F1: its last told value (the stopping epoch's is never told), 0 if none;
    - a FAIL trial is charged the epochs it reported, at F1 0.
    """
    import optuna

    states = optuna.trial.TrialState
    study = optuna.load_study(study_name=study_name, storage=url)
    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    trace: list[tuple[int, float]] = []
    for trial in sorted(finished, key=lambda t: (t.datetime_complete, t.number)):
        steps = sorted(step for step in trial.intermediate_values if step <= epochs)
        if trial.state == states.COMPLETE:
            trace.append((len(steps), _number_or_zero(trial.value)))
        elif trial.state == states.PRUNED:
            last = trial.intermediate_values[steps[-1]] if steps else 0.0
            trace.append((len(steps) + 1, _number_or_zero(last)))
        else:
            trace.append((len(steps), 0.0))
    return trace


def _number_or_zero(value: float | None) -> float:
    """A NaN or missing F1 (a diverged epoch) counts as no match at all."""
    return float(value) if value is not None and value == value else 0.0


def budget_fractions(
    traces: Mapping[int, Sequence[tuple[int, float]]], grid_best: float, grid_epochs: int
) -> dict[str, object]:
    """Per search seed, the share of `grid_epochs` spent until the best F1 so far came
    within WITHIN of `grid_best`, and their median.

    `traces`: per seed, its trials as (epochs run, validation F1) in the order they
    finished. A seed that never came within reach counts as infinity (UNREACHED): it can
    only raise the median. JSON has no infinity: such a fraction, or such a median, is null
    (`search_seeds_reached` and each seed's `epochs_to_within_1pt` say which).
    """
    per_seed: list[dict[str, object]] = []
    fractions: list[float] = []
    for seed, trials in traces.items():
        spent, reached_at, best = 0, None, 0.0
        for epochs, f1 in trials:
            spent += epochs
            best = max(best, f1)
            if reached_at is None and best >= grid_best - WITHIN:
                reached_at = spent
        fraction = reached_at / grid_epochs if reached_at is not None else math.inf
        fractions.append(fraction)
        per_seed.append(
            {
                "seed": seed,
                "trials": len(trials),
                "epochs": spent,
                "best_val_f1": best,
                "epochs_to_within_1pt": reached_at,
                "budget_fraction": _finite_or_none(fraction),
            }
        )
    median = statistics.median(fractions)
    return {
        "search_budget_fraction": _finite_or_none(median),
        "search_budget_goal": GOAL,
        "search_budget_goal_met": median <= GOAL,
        "search_seeds_reached": sum(math.isfinite(f) for f in fractions),
        "search_unreached_counts_as": UNREACHED,
        "search_seeds": per_seed,
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=["small", "joint"], default="small")
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--tiles", type=int, default=160)
    p.add_argument("--search-seeds", type=int, default=3, help="searches to take the median of (at least 3)")
    p.add_argument("--no-search", action="store_true", help="only count the paper specs' rows and trainings")
    args = p.parse_args()
    if args.search_seeds < 3:
        p.error("--search-seeds: at least 3 (one search is not reproducible; the median of 2 is their mean)")
    out: dict[str, object] = paper_cost()
    if not args.no_search:
        space = SMALL_SPACE
        if args.space == "joint":
            from rmaunet.studies.spec import load_spec

            space = load_spec(REPO / "search_spaces" / "joint_search.yaml").space
        with tempfile.TemporaryDirectory(prefix="study-cost-") as work:
            seeds = range(args.search_seeds)
            out.update(search_vs_grid(Path(work), space, args.epochs, args.budget, args.tiles, seeds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
