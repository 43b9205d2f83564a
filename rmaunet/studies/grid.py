"""Table, ladder, leave-one-out and threshold studies: every planned training, once, on Ray Tune.

One Tune trial per unique training (rows sharing a config share it); each trial trains
into its trial folder of the store, and its rows are written the moment it ends. Tune's
config of a trial holds our identity (`rmaunet_trial_id`) and, readable, the config fields
the study varies plus the seed (`tune_params`): what ResultGrid, TensorBoard's HParams and
the tracking callbacks show. Each trial's selected weights are its Tune checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import plural
from rmaunet.storage import Storage
from rmaunet.store import ResultsStore
from rmaunet.studies.plan import StudyPlan
from rmaunet.studies.rows import RowWriter
from rmaunet.studies.session import concurrency, make_tuner, node_name, ray_session, report_final, report_numbers
from rmaunet.studies.spec import StudySpec
from rmaunet.trial_folder import TrialFolder

__all__ = ["run_grid", "tune_params", "train_one", "study_trainable", "trial_request"]

Log = Callable[[str], None]
# The name of our trial identity in Tune's config and results: Tune's own `trial_id` is another thing.
TRIAL_KEY = "rmaunet_trial_id"


def train_one(tune_config: dict[str, Any], *, plan: dict[str, dict[str, Any]], storage: str) -> None:
    """One Tune trial: train one planned config in its workspace (rmaunet.store.TrialWorkspace),
    which on an object store is this node's cache, each epoch's checkpoint copied to the store.
    `plan` maps each trial identity to its entry (`trial_entries`)."""
    from ray import tune

    from rmaunet.data.staging import local_data
    from rmaunet.studies.progress import FINISHED
    from rmaunet.training.quiet import quiet_worker
    from rmaunet.training.trial import configure_threads, crash_budget, no_progress_verdict, run_trial

    tid = tune_config[TRIAL_KEY]
    entry = plan[tid]
    config = TrialConfig.from_dict(entry["config"])
    # A data-parallel trial's process only drives its Ray Train run: TensorFlow (some 17 s of
    # CPU to import on a loaded 2-core node, 600 MB) is for its workers, not for it.
    in_process = config.num_workers <= 1
    quiet_worker(tensorflow=in_process)
    if in_process:
        configure_threads()
    workspace = ResultsStore(storage).workspace(tid)
    folder = workspace.begin(config.to_dict())

    def report(row: dict[str, Any]) -> None:
        tune.report(report_numbers(row))

    try:
        if no_progress_verdict(folder, workspace.record_attempt, workspace.finish, node_name()):
            return
        # An exception that repeats is recorded as the trial's failure on its CRASH_LIMIT-th attempt.
        with crash_budget(folder, workspace.record_crash, workspace.finish, node_name()):
            if config.num_workers > 1:
                from rmaunet.training.distributed import run_data_parallel

                result = run_data_parallel(
                    config,
                    entry["data_dir"],
                    folder.root,
                    num_workers=config.num_workers,
                    use_gpu=entry["gpu"] > 0,
                    report=report,
                    cpus_per_worker=max(1, int(entry["cpu"])),  # resources.cpu is per worker here
                    storage_path=workspace.remote.uri_of(TrialFolder.RAY_TRAIN),
                    fingerprint=entry["fingerprint"],
                )
            else:
                data_dir = local_data(entry["data_dir"], config.dataset, entry["fingerprint"])
                result = run_trial(
                    config,
                    data_dir,
                    folder.root,
                    report=report,
                    node=node_name(),
                    on_checkpoint=workspace.save_checkpoint,
                )
            workspace.finish()
            report_final(
                {
                    FINISHED: 1,
                    "status_ok": int(result.status == "ok"),
                    **{f"final_val_{k}": v for k, v in result.val.items()},
                    # The selected weights' scores under the per-epoch names too: what ResultGrid's
                    # get_dataframe() shows as each trial's val_* (its last result).
                    **{f"val_{k}": v for k, v in result.val.items()},
                    **{f"final_test_{k}": v for k, v in result.test.items()},
                },
                folder,
            )
    finally:
        workspace.close()


def tune_params(plan: StudyPlan) -> dict[str, dict[str, Any]]:
    """Per trial identity, what Tune's config shows beside it: every config field that
    differs between the study's trainings, and the seed. Lists and mappings (augment,
    loss_params) become compact JSON text, so every value is one readable scalar."""
    configs = {tid: p.config.to_dict() for tid, p in plan.unique.items()}

    def readable(value: Any) -> Any:
        return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value

    varied = [
        name
        for name in TrialConfig.field_names()
        if name == "seed" or len({json.dumps(c[name], sort_keys=True) for c in configs.values()}) > 1
    ]
    return {tid: {name: readable(config[name]) for name in varied} for tid, config in configs.items()}


def trial_request(spec: StudySpec, config: TrialConfig) -> tuple[TrialConfig, dict[str, float]]:
    """What the spec's `resources` make of one planned trial: its config with the number of
    data-parallel workers (the row's own `num_workers` when it sets one, else
    resources.workers) and the bundle its Tune trial asks for.

    A one-worker trial holds its CPUs / GPU itself. A data-parallel trial only drives a
    Ray Train run whose workers hold the real resources; Tune refuses an empty request,
    and any CPU share (even 0.01) leaves a node one CPU short of the workers' whole CPUs,
    so it asks for a little memory instead."""
    workers = config.num_workers if config.num_workers > 1 else int(spec.resources["workers"])
    if workers > 1:
        bundle = {"CPU": 0.0, "memory": 64.0 * 1024**2}
    else:
        bundle = {"CPU": spec.resources["cpu"], "GPU": spec.resources["gpu"]}
    return config.replace(num_workers=workers), bundle


def trial_entries(spec: StudySpec, plan: StudyPlan) -> dict[str, dict[str, Any]]:
    """Per trial identity still to train: everything its Tune trial needs (`train_one`) and
    the bundle it asks Tune for (`trial_request`)."""
    requests = {p.trial_id: trial_request(spec, p.config) for p in plan.to_train}
    return {
        p.trial_id: {
            "config": requests[p.trial_id][0].to_dict(),
            "bundle": requests[p.trial_id][1],
            "gpu": spec.resources["gpu"],
            "cpu": spec.resources["cpu"],
            "label": p.label,
            "data_dir": str(plan.data[p.config.dataset]),
            "fingerprint": plan.fingerprints[p.config.dataset],
        }
        for p in plan.to_train
    }


def _trainable(entries: dict[str, dict[str, Any]], storage: str) -> Any:
    """`train_one` with the study's entries and each trial's resource request attached."""
    from ray import tune

    def resources(tune_config: dict[str, Any]) -> Any:
        return tune.PlacementGroupFactory([entries[tune_config[TRIAL_KEY]]["bundle"]])

    return tune.with_resources(tune.with_parameters(train_one, plan=entries, storage=storage), resources)


def study_trainable(storage: str | Storage, study: str) -> Any:
    """The trainable a table, ladder or leave-one-out study's last run gave Ray Tune, rebuilt
    from the store: `tune.Tuner.restore(f"{storage}/tune/{study}", trainable=study_trainable(storage, study))`
    continues or reads its Tune experiment as Ray documents. (`rmaunet study run` again does
    the same and also writes the rows.)"""
    from rmaunet.errors import StoreError

    store = ResultsStore(storage)
    entries = (store.read_plan(study) or {}).get("trainings")
    if not entries:
        raise StoreError(f"{store}: study {study!r} has no trainings recorded for Ray Tune (not run here, or a search)")
    return _trainable(entries, store.storage.uri)


def _longest_first(plan: StudyPlan, entries: dict[str, dict[str, Any]], log: Log) -> dict[str, dict[str, Any]]:
    """The trainings in order of their FLOPs, largest first (stable: plan order among equals).
    Trials start in this order, so the longest do not run last, one at a time, on a cluster
    the others have left idle. Costed only when the trainings differ in what costs
    (architecture, input, epochs, tiles); an estimate that fails leaves the plan's order."""
    from rmaunet.studies.cost import MODEL_FIELDS

    def shape(config: TrialConfig) -> tuple:
        return tuple(getattr(config, n) for n in (*MODEL_FIELDS, "bands", "crop", "epochs", "max_tiles", "dataset"))

    if len({shape(p.config) for p in plan.to_train}) < 2:
        return entries
    from rmaunet.training.quiet import quiet_worker

    try:
        quiet_worker()  # models are built here, in the driver
        costs = plan.costs(calibrated=False)
    except Exception as exc:  # noqa: BLE001 - an order is an optimisation, never a reason to stop a study
        log(f"trainings start in plan order (no cost estimate: {type(exc).__name__}: {exc})")
        return entries
    flops = {p.trial_id: cost.flops for p, cost in zip(plan.to_train, costs)}
    return dict(sorted(entries.items(), key=lambda item: -flops.get(item[0], 0.0)))


def run_grid(
    spec: StudySpec,
    plan: StudyPlan,
    storage: Storage,
    writer: RowWriter,
    address: str | None,
    log: Log,
    callbacks: Sequence[Any] = (),
) -> None:
    """Train plan.to_train on the cluster; each finished training's rows go to the store.
    `callbacks`: further Tune callbacks (tracking) beside the progress printer."""
    from ray import tune

    from rmaunet.studies.progress import Progress

    entries = _longest_first(plan, trial_entries(spec, plan), log)
    # Recorded for study_trainable: Tuner.restore needs the very trainable the Tuner ran.
    ResultsStore(storage).write_plan(spec.name, {**plan.manifest(), "trainings": entries})
    params = tune_params(plan)
    # The identity is the grid; each varied field is looked up from it, so the trial's config is flat.
    looked_up = {
        name: tune.sample_from(lambda config, name=name: params[config[TRIAL_KEY]][name])
        for name in next(iter(params.values()))
    }

    def label(trial: Any) -> str:
        entry = entries.get(trial.config.get(TRIAL_KEY))
        return f"{entry['label']} (seed {entry['config']['seed']})" if entry else str(trial)

    def epochs(trial: Any) -> int:
        entry = entries.get(trial.config.get(TRIAL_KEY))
        return int(entry["config"]["epochs"]) if entry else 0

    with ray_session(address, log):
        concurrent = concurrency(spec, int(spec.resources["workers"]))
        log(
            f"running {plural(len(entries), 'training')}, "
            + (f"up to {concurrent} at once" if concurrent else "as many at once as resources allow")
        )
        tuner = make_tuner(
            _trainable(entries, storage.uri),
            None,
            spec=spec,
            storage=storage,
            callbacks=[
                Progress(
                    writer,
                    label,
                    log,
                    lambda trial, _stopped: writer.trial_done(trial.config[TRIAL_KEY]),
                    total=len(entries),
                    epochs=epochs,
                ),
                *callbacks,
            ],
            param_space={
                TRIAL_KEY: tune.grid_search(list(entries)),
                "row": tune.sample_from(lambda config: entries[config[TRIAL_KEY]]["label"]),
                **looked_up,
            },
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrent,
                trial_name_creator=lambda t: f"{label(t)[:40]}-{t.config.get(TRIAL_KEY, '')[:6]}",
                trial_dirname_creator=lambda t: str(t.config.get(TRIAL_KEY, t.trial_id)),
            ),
        )
        tuner.fit()
