"""Planning a study: its rows, the trainings they need, and which ones the store already has.

No Ray here: `rmaunet study plan` and the runner both start from a StudyPlan (what the
cluster offers comes in as a Capacity, read by rmaunet.studies.session.study_cluster).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rmaunet.errors import DataError, plural
from rmaunet.storage import is_uri
from rmaunet.store import ResultsStore
from rmaunet.studies.capacity import UNBOUNDED, Capacity, TrialRequest, trial_requests
from rmaunet.studies.expand import PlannedRow, expand
from rmaunet.studies.spec import StudySpec

__all__ = ["StudyPlan", "plan_study", "resolve_data", "usable"]


def usable(result: dict[str, Any] | None) -> bool:
    """A stored result that a rerun reuses. A failed trial (NaN loss, out of memory) is a
    result too: rerunning it would fail again; delete its trial folder to retry it."""
    return result is not None and result.get("status") in ("ok", "failed")


class StudyPlan:
    def __init__(
        self,
        spec: StudySpec,
        planned: list[PlannedRow],
        store: ResultsStore,
        data: dict[str, Path | str],
        fingerprints: dict[str, str],
    ) -> None:
        self.spec = spec
        self.planned = planned
        self.data = data
        self.fingerprints = fingerprints

        unique: dict[str, PlannedRow] = {}
        for p in planned:
            unique.setdefault(p.trial_id, p)
        self.unique = unique
        self.finished = {tid for tid in unique if usable(store.finished_trial(tid))}
        self.to_train = [p for tid, p in unique.items() if tid not in self.finished]

    def manifest(self) -> dict[str, Any]:
        """What `rmaunet study status` reads back: every planned (row, seed) and its trial."""
        s = self.spec
        return {
            "study": s.name,
            "kind": s.kind,
            "budget": s.budget,
            "rows": [
                {
                    "row": p.label,
                    "row_index": p.row_index,
                    "seed": p.seed,
                    "trial_id": p.trial_id,
                    "epochs": p.config.epochs,
                }
                for p in self.planned
            ],
        }

    def summary(self) -> str:
        s = self.spec
        if s.kind == "search":
            return f"{s.name} (search): up to {s.budget} sampled trainings, {s.scheduler.upper()} scheduler, Optuna TPE"
        reused = len(self.unique) - len(self.to_train)
        dup = len(self.planned) - len(self.unique)
        return (
            f"{s.name} ({s.kind}): {plural(len(s.rows), 'row')} × {plural(len(s.seeds), 'seed')} = "
            f"{plural(len(self.planned), 'result')}; {plural(len(self.to_train), 'training')} to run, "
            f"{reused} reused from the store" + (f", {dup} shared between rows" if dup else "")
        )

    def request(self, row: PlannedRow) -> TrialRequest:
        """What one trial of `row` asks the cluster for."""
        return trial_requests(self.spec)[row.row_index][1]

    def capacity_line(self, capacity: Capacity) -> str:
        """The cluster's nodes and node types, and how many trials of each request run at once."""
        cap = self.spec.max_concurrent
        counts: dict[str, int] = {}
        for _, request in trial_requests(self.spec):
            fit = capacity.trials_at_once(request)
            counts[str(request)] = min(fit, cap) if cap else fit
        at_once = ", ".join(f"{_many(n)} of {request}" for request, n in counts.items())
        limit = f" (max_concurrent {cap})" if cap else ""
        return f"capacity: {capacity.describe()}; trials at once: {at_once}{limit}"


def _many(count: int) -> str:
    return "unbounded" if count >= UNBOUNDED else str(count)


def resolve_data(spec: StudySpec, data: Path | str | Mapping[str, Path | str]) -> dict[str, Path | str]:
    """One folder or object-store URI per dataset the study uses: a single one serves a
    one-dataset study; a cross-dataset study (Table XI) names one per dataset. A URI stays
    as it is: whether it holds data is learned by listing it (plan_study)."""
    needed = sorted({r.config.dataset for r in spec.rows} | {spec.base.dataset})
    if isinstance(data, Mapping):
        folders = {k: _absolute(v) for k, v in data.items()}
        if len(folders) == 1 and len(needed) == 1 and needed[0] not in folders:
            folders = {needed[0]: next(iter(folders.values()))}
    else:
        folders = {name: _absolute(data) for name in needed}
        if len(needed) > 1:
            raise DataError(
                f"{data}: study {spec.name!r} uses datasets {', '.join(needed)}: pass --data NAME=DIR for each"
            )
    for name in needed:
        if name not in folders:
            raise DataError(f"{spec.path}: no data folder for dataset {name!r} (pass --data {name}=DIR)")
        if not is_uri(folders[name]) and not Path(folders[name]).exists():
            raise DataError(f"{folders[name]}: data folder not found")
    return {name: folders[name] for name in needed}


def _absolute(data: Path | str) -> Path | str:
    return data if is_uri(data) else Path(data).resolve()


def plan_study(
    spec: StudySpec, data: Path | str | Mapping[str, Path | str], storage: Path | str, *, check_data: bool = True
) -> StudyPlan:
    """The study's rows and trainings; with check_data, every data file its trials will
    read is read once first, so bad data is one DataError naming the file, before any trial.
    Data under a URI is fingerprinted from a listing of its objects."""
    from rmaunet.data import fingerprint
    from rmaunet.data.folder import check_data_folder
    from rmaunet.data.staging import remote_fingerprint

    folders = resolve_data(spec, data)
    for folder in folders.values():
        if not is_uri(folder):
            check_data_folder(folder)  # a broken link or a FIFO: one line, not the fingerprint's traceback
    fingerprints = {
        name: remote_fingerprint(folder, name) if is_uri(folder) else fingerprint(folder, name)
        for name, folder in folders.items()
    }
    plan = StudyPlan(spec, expand(spec, fingerprints), ResultsStore(storage), folders, fingerprints)
    if check_data:
        check_study_data(spec, plan)
    return plan


def check_study_data(spec: StudySpec, plan: StudyPlan) -> None:
    """Read what the trainings still to run will read (trials already in the store read
    nothing), once per distinct set of raw channels and tile limit, and refuse a config
    that would fail on that data in every trial (tile size against depth, too few tiles).
    Data under a URI is staged into this node's cache first and the copy read: what a
    trial on this node reads."""
    from rmaunet.data import DataSummary, check_trainable, validate_data
    from rmaunet.data.bands import resolve_bands
    from rmaunet.data.staging import local_data
    from rmaunet.datasets import dataset_info

    configs = [p.config for p in plan.to_train] if spec.kind != "search" else [spec.base]
    summaries: dict[tuple[str, tuple[str, ...], int | None], DataSummary] = {}
    for config in configs:
        channels = dataset_info(config.dataset).channels(resolve_bands(config.bands, config.dataset))
        key = (config.dataset, channels, config.max_tiles)
        if key not in summaries:
            name = config.dataset
            summaries[key] = validate_data(config, local_data(plan.data[name], name, plan.fingerprints[name]))
        check_trainable(config, summaries[key])
