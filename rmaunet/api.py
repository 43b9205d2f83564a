"""The Python API: the functions the `rmaunet` command calls, for notebooks and scripts.

    import rmaunet
    spec = rmaunet.load_spec("demo", smoke=True)                 # a bundled spec by name, or a YAML path
    plan = rmaunet.plan_study(spec, "data/l4s", "results")        # what would train, what is reused; no Ray
    rmaunet.run_study(spec, "data/l4s", "results")                # train on Ray Tune, write every row
    rmaunet.study_status("results")                               # per row and seed: done / running / failed
    rmaunet.load_result("results", plan.planned[0].trial_id)      # one trial's stored result

Each takes a local folder or an s3:// / gs:// URI for the store, as the command line does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmaunet.specs import resolve_spec
from rmaunet.store import ResultsStore
from rmaunet.studies.grid import study_trainable
from rmaunet.studies.plan import StudyPlan, plan_study
from rmaunet.studies.runner import run_study
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


def load_spec(spec: str | Path, *, smoke: bool = False) -> StudySpec:
    """A study spec from a YAML file, or the bundled spec of that name (`rmaunet study list`).
    `smoke=True` shrinks it to CPU minutes, as `--smoke` does."""
    return _load_spec_file(resolve_spec(str(spec)), smoke=smoke)


def load_result(storage: str | Path, trial_id: str) -> dict[str, Any] | None:
    """The stored result of one trial (metrics, chosen threshold and epoch, status), or None
    when the store has no finished trial of that id."""
    return ResultsStore(storage).finished_trial(trial_id)
