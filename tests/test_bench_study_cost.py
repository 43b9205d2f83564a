"""bench/study_cost.py: the median over search seeds, and how a seed that never reached the target counts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study_cost", ROOT / "bench" / "study_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


budget_fractions = _bench().budget_fractions


def test_each_seed_is_charged_the_epochs_spent_until_it_came_within_one_point() -> None:
    # Seed 0 reaches 0.795 (within 0.01 of 0.80) after 3 + 9 epochs; the trial after that costs nothing more.
    out = budget_fractions({0: [(3, 0.5), (9, 0.795), (9, 0.9)]}, grid_best=0.80, grid_epochs=120)
    (seed,) = out["search_seeds"]
    assert seed == {
        "seed": 0,
        "trials": 3,
        "epochs": 21,
        "best_val_f1": 0.9,
        "epochs_to_within_1pt": 12,
        "budget_fraction": 0.1,
    }
    assert out["search_budget_fraction"] == pytest.approx(0.1) and out["search_seeds_reached"] == 1


def test_the_median_is_over_seeds_not_the_first_or_the_mean() -> None:
    # Fractions 0.5, 0.1, 0.2 of 100 epochs: the median is 0.2, below the goal of 1/3.
    traces = {0: [(50, 0.8)], 1: [(10, 0.8)], 2: [(20, 0.8)]}
    out = budget_fractions(traces, grid_best=0.8, grid_epochs=100)
    assert out["search_budget_fraction"] == pytest.approx(0.2)
    assert out["search_budget_goal_met"] is True and out["search_seeds_reached"] == 3


def test_a_seed_that_never_reached_the_target_can_only_raise_the_median() -> None:
    # Seed 2 spent only 5 epochs and missed: counted at its spent budget (0.05) it would drag the median
    # from 0.4 down to 0.3; as infinity it ranks last and the median is the larger reached fraction.
    traces = {0: [(30, 0.8)], 1: [(40, 0.8)], 2: [(5, 0.5)]}
    out = budget_fractions(traces, grid_best=0.8, grid_epochs=100)
    assert out["search_budget_fraction"] == pytest.approx(0.4)
    assert out["search_budget_goal_met"] is False
    assert out["search_seeds_reached"] == 2
    missed = out["search_seeds"][2]
    assert missed["epochs_to_within_1pt"] is None and missed["budget_fraction"] is None and missed["epochs"] == 5
    assert out["search_unreached_counts_as"].startswith("infinity")


def test_a_majority_of_seeds_that_never_reached_makes_the_median_null_in_strict_json() -> None:
    # Two of three seeds missed: the median is infinite, written as null (JSON has no infinity).
    traces = {0: [(10, 0.8)], 1: [(9, 0.6)], 2: [(9, 0.7), (9, 0.78)]}
    out = budget_fractions(traces, grid_best=0.8, grid_epochs=100)
    assert out["search_budget_fraction"] is None and out["search_budget_goal_met"] is False
    assert out["search_seeds_reached"] == 1
    json.dumps(out, allow_nan=False)  # raises on an infinity or a NaN left in the summary


def test_fewer_than_three_search_seeds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # One search is the irreproducible measurement this flag replaces: the bench refuses it before any work.
    module = _bench()
    argv = sys.argv
    sys.argv = ["study_cost.py", "--search-seeds", "2"]
    try:
        with pytest.raises(SystemExit, match="2"):
            module.main()
    finally:
        sys.argv = argv
    assert "--search-seeds: at least 3" in capsys.readouterr().err


search_trace = _bench().search_trace


def test_a_configuration_sampled_twice_is_charged_twice_in_the_order_its_samples_finished(tmp_path: Path) -> None:
    # Ray's OptunaSearch (the searcher run_search uses), told what Tune tells it in a 3-epoch search: the space has
    # one point, so both samples are the same configuration. Sample "a" reports epochs 1-3 and its objective at
    # epoch 4, where ASHA's max_t stops it (that result is not told); "b" is stopped by ASHA on epoch 2 and
    # finishes first; "c" crashes after epoch 1.
    import optuna

    from rmaunet.studies.progress import FINISHED
    from rmaunet.studies.search import _optuna_searcher

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = _optuna_searcher(
        space={"attention": optuna.distributions.CategoricalDistribution(["se"])},
        metric="objective",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
        study_name="search_seed0",
        storage=optuna.storages.RDBStorage(url),
    )
    for trial in "abc":
        assert searcher.suggest(trial) == {"attention": "se"}
    for epoch, f1 in enumerate([0.5, 0.6, 0.7], start=1):
        searcher.on_trial_result("a", {"epoch": epoch, "objective": f1, "training_iteration": epoch})
    searcher.on_trial_result("b", {"epoch": 1, "objective": 0.4, "training_iteration": 1})
    searcher.on_trial_complete("b", {"epoch": 2, "objective": 0.45, "training_iteration": 2})
    searcher.on_trial_complete("a", {"epoch": 4, "objective": 0.72, FINISHED: 1, "training_iteration": 4})
    searcher.on_trial_result("c", {"epoch": 1, "objective": 0.3, "training_iteration": 1})
    searcher.on_trial_complete("c", error=True)

    assert search_trace(url, "search_seed0", epochs=3) == [(2, 0.4), (3, 0.72), (1, 0.0)]
