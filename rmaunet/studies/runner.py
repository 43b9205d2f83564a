"""Run a study: plan it, reuse what the store has, train the rest, write every row.

The driver plans first (spec -> rows -> unique trial identities), reuses every trial
whose result is already in the store, trains the rest on the cluster (`grid` for table,
ladder, leave-one-out and threshold studies, `search` for Optuna searches), and writes
each study row the moment its trial completes (`rows`). Killing the driver loses at
most the trainings in flight: the same command continues where it stopped.

One driver runs a study at a time: it holds the study's lease in the store
(rmaunet.store.StudyLease) from before planning to its end, so a second driver of the same
study is refused before it plans or trains anything, and takes over once the first is dead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rmaunet.errors import plural
from rmaunet.storage import Storage
from rmaunet.store import ResultsStore, StudyLease
from rmaunet.studies.plan import StudyPlan, plan_study, resolve_data
from rmaunet.studies.rows import RowWriter
from rmaunet.studies.spec import StudySpec

__all__ = ["run_study", "plan_study", "StudyPlan"]


def run_study(
    spec: StudySpec,
    data: Path | str | Mapping[str, Path | str],
    storage: Path | str | Storage,
    *,
    address: str | None = None,
    log: Callable[[str], None] = print,
    optuna_storage: str | None = None,
    callbacks: Sequence[Any] = (),
    take_over: bool = False,
    spec_record: Mapping[str, Any] | None = None,
) -> StudyPlan:
    """Plan, reuse, train what is missing on Ray Tune, and write every results row.

    `callbacks`: Tune callbacks added to the progress printer, e.g. experiment tracking
    (`rmaunet.studies.session.tracking_callbacks`: MLflow, W&B, your own). `take_over`: run
    even while another driver holds the study's lease (one known to be dead). `spec_record`:
    what the store keeps of the spec (ResultsStore.write_spec), written once this driver holds
    the lease and the plan has read the data: a refused run leaves the record it found.
    """
    from rmaunet.studies.capacity import check_requests
    from rmaunet.studies.session import study_cluster

    # A data folder that is not there (a typo, an unmounted disk): one line before the store is
    # touched, so a refused first run leaves no empty store behind. What the data holds is read
    # by the plan, under the lease, from these resolved folders.
    data = resolve_data(spec, data)
    store = ResultsStore(storage)
    store.storage.check_writable()  # a missing bucket or folder permission: one line now, not after training
    # A row no node can hold would wait forever for one: refused now, before data is read or a
    # trial starts. A cluster stays connected for the study; a local runtime starts when it trains.
    with study_cluster(address, log) as capacity:
        check_requests(spec, capacity)
        with StudyLease(store, spec.name, log=log).hold(take_over) as lease:
            plan = _run(spec, data, store, lease, capacity, address, log, optuna_storage, callbacks, spec_record)
    if lease.lost is not None:
        log(f"study {spec.name!r}: another driver took the study over while this one ran; its rows stand")
    return plan


def _run(
    spec: StudySpec,
    data: Path | str | Mapping[str, Path | str],
    store: ResultsStore,
    lease: StudyLease,
    capacity: Any,
    address: str | None,
    log: Callable[[str], None],
    optuna_storage: str | None,
    callbacks: Sequence[Any],
    spec_record: Mapping[str, Any] | None,
) -> StudyPlan:
    plan = plan_study(spec, data, store.storage)
    if spec_record is not None:
        store.write_spec(spec.name, dict(spec_record))
    log(plan.summary())
    log(plan.capacity_line(capacity))
    store.write_plan(spec.name, plan.manifest())
    writer = RowWriter(spec, plan, store, log)
    for tid in plan.finished:
        writer.trial_done(tid, reused=True)

    if plan.to_train or spec.kind == "search":
        log(f"TensorBoard: tensorboard --logdir {store.storage.uri_of('tune')} (the tensorboard extra)")
    if spec.kind == "search":
        from rmaunet.studies.search import run_search

        run_search(spec, plan, store.storage, writer, address, log, optuna_storage, callbacks, lease=lease)
        return plan
    if plan.to_train:
        from rmaunet.studies.grid import run_grid

        run_grid(spec, plan, store.storage, writer, address, log, callbacks)
    missing = [tid for tid in plan.unique if tid not in writer.done]
    if missing:
        log(f"{plural(len(missing), 'training')} did not finish; rerun the same command to continue")
    return plan
