"""`rmaunet study status`: where a study stands, read from the store alone (no Ray, no data).

A run writes its plan (every row and seed with its trial) into the store before it trains;
each planned training is then, from the trial's files in the store:

    done         its result is stored (status ok); "reused" when the study's row says so
    failed       its result is stored with status failed; the reason is its one line
    running      a checkpoint is stored but no result: training, or interrupted (rerun to continue)
    not started  nothing stored yet
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rmaunet.errors import StoreError, plural
from rmaunet.store import ResultsStore

__all__ = ["TrainingStatus", "StudyStatus", "study_status", "render_status", "STATES"]

STATES = ("done", "running", "failed", "not started")


@dataclass(frozen=True)
class TrainingStatus:
    row: str
    seed: int
    trial_id: str
    state: str
    epochs: int
    epoch: int | None = None  # last checkpointed (running) or run (done, failed)
    reused: bool = False
    reason: str = ""


@dataclass
class StudyStatus:
    study: str
    kind: str
    trainings: list[TrainingStatus] = field(default_factory=list)
    budget: int = 0
    best: tuple[str, float] | None = None  # (row, validation score) among finished rows
    metric: str = "val_f1"

    def counts(self) -> Counter[str]:
        return Counter(t.state for t in self.trainings)


def study_status(store: ResultsStore | str, study: str | None = None) -> list[StudyStatus]:
    """Every study the store has a plan for (or only `study`), each training's state."""
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    names = [study] if study else store.planned_studies()
    if study and store.read_plan(study) is None:
        known = ", ".join(store.planned_studies()) or "none"
        raise StoreError(f"{store}: no plan of study {study!r} (studies run into this store: {known})")
    return [_one(store, name) for name in names]


def _one(store: ResultsStore, name: str) -> StudyStatus:
    plan = store.read_plan(name) or {}
    rows = store.read(name)
    status = StudyStatus(name, str(plan.get("kind", "?")), budget=int(plan.get("budget") or 0))
    reused = _reused(rows)
    if status.kind == "search":
        # A search's rows exist only as it samples them: one per row written, the rest of the budget unsampled.
        for record in rows.to_dict("records"):
            state = {"ok": "done", "failed": "failed"}.get(str(record.get("status")), "done")
            status.trainings.append(
                TrainingStatus(
                    str(record["row"]),
                    int(record["seed"]),
                    str(record["trial_id"]),
                    state,
                    0,
                    reason=str(record.get("reason") or ""),
                )
            )
    else:
        for entry in plan.get("rows", []):
            status.trainings.append(_training(store, entry, reused))
    metric = (
        str(rows["selection_metric"].dropna().iloc[0])
        if "selection_metric" in rows and rows["selection_metric"].notna().any()
        else "f1"
    )
    status.metric = f"val_{metric.removeprefix('val_')}"
    if status.metric in rows and rows[status.metric].notna().any():
        best = rows.loc[rows[status.metric].astype(float).idxmax()]
        status.best = (str(best["row"]), float(best[status.metric]))
    return status


def _reused(rows: Any) -> set[tuple[str, int]]:
    if rows.empty or "reused" not in rows:
        return set()
    return {(str(r), int(s)) for r, s, u in zip(rows["row"], rows["seed"], rows["reused"]) if bool(u)}


def _training(store: ResultsStore, entry: dict[str, Any], reused: set[tuple[str, int]]) -> TrainingStatus:
    tid, row, seed, epochs = str(entry["trial_id"]), str(entry["row"]), int(entry["seed"]), int(entry["epochs"])
    result = store.finished_trial(tid)
    if result is not None and result.get("status") in ("ok", "failed"):
        state = "done" if result["status"] == "ok" else "failed"
        run = result.get("epochs_run")
        return TrainingStatus(
            row,
            seed,
            tid,
            state,
            epochs,
            run if isinstance(run, int) else None,
            reused=(row, seed) in reused,
            reason=str(result.get("reason") or ""),
        )
    epoch = store.checkpoint_epoch(tid)
    return TrainingStatus(row, seed, tid, "running" if epoch is not None else "not started", epochs, epoch)


def render_status(statuses: list[StudyStatus]) -> str:
    """Plain lines for a terminal or a log: a summary per study, then one line per training."""
    lines: list[str] = []
    for s in statuses:
        counts = s.counts()
        reused = sum(t.reused for t in s.trainings)
        parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
        total = s.budget if s.kind == "search" else len(s.trainings)
        head = f"{s.study} ({s.kind}): {plural(total, 'training')}"
        if s.kind == "search":
            head = f"{s.study} (search): {len(s.trainings)} of {plural(s.budget, 'sampled training')}"
        lines.append(f"{head}: {', '.join(parts) or 'nothing run yet'}" + (f"; {reused} reused" if reused else ""))
        if s.best is not None and not math.isnan(s.best[1]):
            lines.append(f"  best so far: {s.best[0]} ({s.metric} {100 * s.best[1]:.2f})")
        width = max((len(t.row) for t in s.trainings), default=0)
        for t in s.trainings:
            detail = ""
            if t.state == "running":
                detail = f"epoch {t.epoch}/{t.epochs} checkpointed (training, or interrupted: rerun to continue)"
            elif t.state == "done":
                detail = ("reused" if t.reused else "") + (f" {t.epoch}/{t.epochs} epochs" if t.epoch else "")
            elif t.state == "failed":
                detail = t.reason
            lines.append(f"  {t.row:<{width}}  seed {t.seed:<3} {t.state:<11} {detail}".rstrip())
    return "\n".join(lines)
