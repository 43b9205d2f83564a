"""The Python API: the functions the `rmaunet` command calls, for notebooks and scripts.

    import rmaunet
    spec = rmaunet.load_spec("demo", smoke=True)                 # a bundled spec by name, or a YAML path
    plan = rmaunet.plan_study(spec, "data/l4s", "results")        # what would train, what is reused; no Ray
    rmaunet.run_study(spec, "data/l4s", "results")                # train on Ray Tune, write every row
    rmaunet.study_status("results")                               # per row and seed: done / running / failed
    rmaunet.load_result("results", plan.planned[0].trial_id)      # one trial's stored result

`overrides={"epochs": 5}` and `seeds=[0, 1]` change a spec as `--set epochs=5 --seeds 0,1`
do, wherever a spec is taken. Each takes a local folder or an s3:// / gs:// URI for the
store, as the command line does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rmaunet.specs import resolve_spec
from rmaunet.store import ResultsStore
from rmaunet.studies.grid import study_trainable
from rmaunet.studies.plan import StudyPlan
from rmaunet.studies.plan import plan_study as _plan_study
from rmaunet.studies.runner import run_study as _run_study
from rmaunet.studies.spec import StudySpec
from rmaunet.studies.spec import load_spec as _load_spec_file
from rmaunet.studies.status import StudyStatus, study_status

__all__ = [
    "study_trainable",
    "load_spec",
    "plan_study",
    "run_study",
    "study_status",
    "load_result",
    "StudySpec",
    "StudyPlan",
    "StudyStatus",
]

Data = Path | str | Mapping[str, Path | str]


def load_spec(
    spec: str | Path,
    *,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
) -> StudySpec:
    """A study spec from a YAML file, or the bundled spec of that name (`rmaunet study list`).
    `smoke=True` shrinks it to CPU minutes, as `--smoke` does; `overrides` replace keys of its
    base config ({"epochs": 5, "loss_params.alpha": 0.3}) and `seeds` its seeds, as `--set`
    and `--seeds` do, before its rows are built."""
    return _load_spec_file(resolve_spec(str(spec)), smoke=smoke, overrides=overrides, seeds=seeds)


def plan_study(
    spec: StudySpec | str | Path,
    data: Data,
    storage: Path | str,
    *,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
) -> StudyPlan:
    """The study's rows × seeds, their trial identities and what the store already has; reads
    the data's fingerprint, trains nothing (`rmaunet study plan`)."""
    return _plan_study(_overridden(spec, overrides, seeds), data, storage)


def run_study(
    spec: StudySpec | str | Path,
    data: Data,
    storage: Path | str,
    *,
    overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    synthetic: bool = False,
    address: str | None = None,
    log: Callable[[str], None] = print,
    optuna_storage: str | None = None,
    callbacks: Sequence[Any] = (),
    take_over: bool = False,
) -> StudyPlan:
    """Plan, reuse, train the rest on Ray Tune and write every row (`rmaunet study run`).
    Once this driver holds the study's lease and the plan has read the data, the store keeps
    the spec (its text, --smoke, what `overrides` and `seeds` changed: what `rmaunet report
    STORE` draws its captions from); a refused run writes nothing. `synthetic=True`: the
    data is synthetic, and every output of its report says so."""
    spec = _overridden(spec, overrides, seeds)
    return _run_study(
        spec,
        data,
        storage,
        address=address,
        log=log,
        optuna_storage=optuna_storage,
        callbacks=callbacks,
        take_over=take_over,
        spec_record=_spec_record(spec, synthetic=synthetic),
    )


def load_result(storage: str | Path, trial_id: str) -> dict[str, Any] | None:
    """The stored result of one trial (metrics, chosen threshold and epoch, status), or None
    when the store has no finished trial of that id."""
    return ResultsStore(storage).finished_trial(trial_id)


def _overridden(
    spec: StudySpec | str | Path, overrides: Mapping[str, Any] | None, seeds: Sequence[int] | None
) -> StudySpec:
    """`spec` with the overrides applied. Overrides act before the rows are built, so a loaded
    spec is read again from its file, with its --smoke, its earlier overrides and its resources."""
    if not isinstance(spec, StudySpec):
        return load_spec(spec, overrides=overrides, seeds=seeds)
    if overrides is None and seeds is None:
        return spec
    again = _load_spec_file(
        spec.path,
        smoke=spec.smoke,
        overrides={**spec.overrides, **(overrides or {})},
        seeds=seeds if seeds is not None else (spec.seeds if spec.seeds_given else None),
    )
    return dataclasses.replace(again, resources=spec.resources, max_concurrent=spec.max_concurrent)


def _spec_record(spec: StudySpec, *, synthetic: bool) -> dict[str, Any]:
    """What the store keeps of the spec the study runs with: `rmaunet report STORE` draws the
    same report from it."""
    from rmaunet.reporting.inputs import spec_record

    return spec_record(spec, smoke=spec.smoke, synthetic=synthetic)
