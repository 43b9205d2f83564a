"""Run a study on Ray Tune: one Tune trial per training, results rows as each one ends.

The driver plans first (spec -> rows -> unique trial identities), reuses every trial
whose result is already in the store, trains the rest on the cluster, and writes each
study row the moment its trial completes. Killing the driver loses at most the trainings
in flight: the same command continues where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from rmaunet.config import TrialConfig
from rmaunet.errors import DataError
from rmaunet.studies.expand import PlannedRow, expand, trial_id
from rmaunet.studies.spec import StudySpec
from rmaunet.studies.store import CONFIG_PREFIX, METRIC_NAMES, ResultsStore

__all__ = ["run_study", "plan_study", "StudyPlan", "connect_ray"]

Log = Callable[[str], None]
# Reported once a training has written its result. Not "done": Tune sets that key itself
# on every trial's last result, stopped early or not.
FINISHED = "rmaunet_finished"


class StudyPlan:
    def __init__(
        self, spec: StudySpec, planned: list[PlannedRow], store: ResultsStore, data: dict[str, Path], fingerprints: dict[str, str]
    ) -> None:
        self.spec = spec
        self.planned = planned
        self.data = data
        self.fingerprints = fingerprints

        unique: dict[str, PlannedRow] = {}
        for p in planned:
            unique.setdefault(p.trial_id, p)
        self.unique = unique
        self.finished = {tid for tid in unique if _usable(store.finished_trial(tid))}
        self.to_train = [p for tid, p in unique.items() if tid not in self.finished]

    def summary(self) -> str:
        s = self.spec
        if s.kind == "search":
            return f"{s.name} (search): up to {s.budget} sampled trainings, {s.scheduler.upper()} scheduler, Optuna TPE"
        reused = len(self.unique) - len(self.to_train)
        dup = len(self.planned) - len(self.unique)
        return (
            f"{s.name} ({s.kind}): {len(s.rows)} rows × {len(s.seeds)} seeds = {len(self.planned)} results; "
            f"{len(self.to_train)} trainings to run, {reused} reused from the store"
            + (f", {dup} shared between rows" if dup else "")
        )


def _usable(result: dict[str, Any] | None) -> bool:
    # A failed trial (NaN loss, out of memory) is a result too: rerunning it would fail again.
    return result is not None and result.get("status") in ("ok", "failed")


def resolve_data(spec: StudySpec, data: Path | str | Mapping[str, Path | str]) -> dict[str, Path]:
    """One folder per dataset the study uses: a single folder serves a one-dataset study;
    a cross-dataset study (Table XI) names one per dataset."""
    needed = sorted({r.config.dataset for r in spec.rows} | {spec.base.dataset})
    if isinstance(data, Mapping):
        folders = {k: Path(v).resolve() for k, v in data.items()}
        if len(folders) == 1 and len(needed) == 1 and needed[0] not in folders:
            folders = {needed[0]: next(iter(folders.values()))}
    else:
        folders = {name: Path(data).resolve() for name in needed}
        if len(needed) > 1:
            raise DataError(
                f"{data}: study {spec.name!r} uses datasets {', '.join(needed)}: pass --data NAME=DIR for each"
            )
    for name in needed:
        if name not in folders:
            raise DataError(f"{spec.path}: no data folder for dataset {name!r} (pass --data {name}=DIR)")
        if not folders[name].exists():
            raise DataError(f"{folders[name]}: data folder not found")
    return {name: folders[name] for name in needed}


def plan_study(spec: StudySpec, data: Path | str | Mapping[str, Path | str], storage: Path | str) -> StudyPlan:
    from rmaunet.data import fingerprint

    folders = resolve_data(spec, data)
    fingerprints = {name: fingerprint(folder, name) for name, folder in folders.items()}
    store = ResultsStore(storage)
    return StudyPlan(spec, expand(spec, fingerprints), store, folders, fingerprints)


# --------------------------------------------------------------------------- Ray
def connect_ray(address: str | None, log: Log) -> bool:
    """Connect to RAY_ADDRESS / `address`, or start a local runtime. True if we started it."""
    import ray

    from rmaunet.training.distributed import TRAINING_PROCESS_ENV

    if ray.is_initialized():
        return False
    # Every process of this job (Tune trials train in theirs) runs at normal priority, not
    # at the niceness 15 Ray gives workers by default. `ray job submit` merges this with
    # the submission's own runtime env.
    runtime_env = {"env_vars": dict(TRAINING_PROCESS_ENV)}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        log(f"connected to Ray cluster at {address}")
        return False
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False, runtime_env=runtime_env)
    ctx = ray.get_runtime_context()
    log(f"started a local Ray runtime (dashboard on 127.0.0.1, {int(ray.cluster_resources().get('CPU', 0))} CPUs) {ctx.get_node_id()[:8]}")
    return True


def _trainable(tune_config: dict[str, Any], *, plan: dict[str, dict[str, Any]], storage: str) -> None:
    """One Tune trial: train one planned config into its trial folder of the store."""
    from ray import tune

    from rmaunet.training.trial import configure_threads, run_trial

    tid = tune_config["trial_id"]
    entry = plan[tid]
    config = TrialConfig.from_dict(entry["config"])
    data_dir = entry["data_dir"]
    configure_threads()
    out = ResultsStore(storage).trial_dir(tid)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))

    def report(row: dict[str, Any]) -> None:
        tune.report(_report_numbers(row))

    if config.num_workers > 1:
        from rmaunet.training.distributed import run_data_parallel

        result = run_data_parallel(
            config, data_dir, out, num_workers=config.num_workers, use_gpu=entry["gpu"] > 0, report=report,
            cpus_per_worker=max(1, int(entry["cpu"])),  # resources.cpu is per worker here
        )
    else:
        result = run_trial(config, data_dir, out, report=report, node=_node_name())
    tune.report({FINISHED: 1, "status_ok": int(result.status == "ok"), **{f"final_val_{k}": v for k, v in result.val.items()}})


def run_study(
    spec: StudySpec,
    data: Path | str | Mapping[str, Path | str],
    storage: Path | str,
    *,
    address: str | None = None,
    log: Log = print,
    optuna_storage: str | None = None,
) -> StudyPlan:
    """Plan, reuse, train what is missing on Ray Tune, and write every results row."""
    storage = Path(storage).resolve()
    plan = plan_study(spec, data, storage)
    log(plan.summary())
    store = ResultsStore(storage)
    provenance = _provenance()
    writer = _RowWriter(spec, plan, store, provenance, log)
    for tid in plan.finished:
        writer.trial_done(tid, reused=True)

    if spec.kind == "search":
        _search(spec, plan, storage, writer, address, log, optuna_storage)
        return plan
    if plan.to_train:
        _tune(spec, plan, storage, writer, address, log)
    missing = [tid for tid in plan.unique if tid not in writer.done]
    if missing:
        log(f"{len(missing)} trainings did not finish; rerun the same command to continue")
    return plan


def _tune(
    spec: StudySpec, plan: StudyPlan, storage: Path, writer: _RowWriter, address: str | None, log: Log
) -> None:
    import ray
    from ray import tune

    started_here = connect_ray(address, log)
    try:
        gpu = spec.resources["gpu"]
        workers = int(spec.resources["workers"])
        entries = {
            p.trial_id: {
                "config": p.config.replace(num_workers=workers).to_dict(),
                "gpu": gpu,
                "cpu": spec.resources["cpu"],
                "label": p.label,
                "data_dir": str(plan.data[p.config.dataset]),
            }
            for p in plan.to_train
        }
        if workers > 1:
            # The trial only drives a TensorflowTrainer whose workers hold the real resources.
            # Tune refuses an empty request, and any CPU share (even 0.01) leaves a node one
            # CPU short of the workers' whole CPUs: ask for a little memory instead.
            resources = {"CPU": 0, "memory": 64 * 1024**2}
        else:
            resources = {"CPU": spec.resources["cpu"], "GPU": gpu}
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, plan=entries, storage=str(storage)), resources
        )
        concurrent = _concurrency(spec, workers)
        log(f"running {len(entries)} trainings, up to {concurrent} at once")
        labels = {tid: e["label"] for tid, e in entries.items()}
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_id": tune.grid_search(list(entries))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrent,
                trial_name_creator=lambda t: f"{labels.get(t.config.get('trial_id'), 'trial')[:40]}-{t.config.get('trial_id', '')[:6]}",
                trial_dirname_creator=lambda t: f"{t.config.get('trial_id', t.trial_id)}",
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str(storage / "tune"),
                failure_config=tune.FailureConfig(max_failures=2),
                callbacks=[_Progress(writer, labels, log)],
                verbose=0,
            ),
        )
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


def _node_name() -> str:
    """Host and Ray node id: several simulated nodes share one host name."""
    import socket

    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _report_numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _search_trainable(
    params: dict[str, Any], *, base: dict[str, Any], fingerprint: str, data_dir: str, storage: str
) -> None:
    """One sampled configuration: replayed from the store when already trained, else trained.

    Reports `objective` = validation F1 (at 0.5) every epoch for ASHA, then once more
    after the last epoch, at epoch + 1, with validation F1 at the sampled threshold.
    """
    from ray import tune

    from rmaunet.studies.search import apply_params
    from rmaunet.training.trial import configure_threads, run_trial

    config = apply_params(TrialConfig.from_dict(base), params)
    tid = trial_id(config, fingerprint)
    store = ResultsStore(storage)
    out = store.trial_dir(tid)

    def report(row: dict[str, Any]) -> None:
        tune.report({**_report_numbers(row), "objective": float(row.get("val_f1", 0.0))})

    result = store.finished_trial(tid)
    if _usable(result):
        for row in result["history"]:
            report(row)
    else:
        configure_threads()
        result = run_trial(config, data_dir, out, report=report, node=_node_name()).to_dict()
    if result["status"] == "ok":
        f1 = _scores_at(out, (config.threshold,))[config.threshold].get("val_f1", 0.0)
        tune.report({"epoch": int(result["epochs_run"]) + 1, "objective": float(f1), FINISHED: 1})


def _search(
    spec: StudySpec,
    plan: StudyPlan,
    storage: Path,
    writer: _RowWriter,
    address: str | None,
    log: Log,
    optuna_storage: str | None,
) -> None:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from rmaunet.studies.search import apply_params, describe, optuna_distributions, parse_space

    url = optuna_storage or f"sqlite:///{storage / 'optuna.db'}"
    storage.mkdir(parents=True, exist_ok=True)
    rdb = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=spec.name, storage=rdb, direction="maximize", load_if_exists=True)
    # A driver killed mid-search leaves RUNNING trials behind: they will never report.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        rdb.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
    remaining = spec.budget - done
    log(f"Optuna study {spec.name!r} in {url}: {done} of {spec.budget} trials done, {max(remaining, 0)} to run")
    if remaining <= 0:
        return

    parsed = parse_space(spec.space, spec.base)
    seed = spec.seeds[0]
    base = spec.base.replace(seed=seed)
    searcher = OptunaSearch(
        space=optuna_distributions(parsed),
        metric="objective",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=seed),
        study_name=spec.name,
        storage=rdb,
    )
    epochs = base.epochs
    scheduler = (
        ASHAScheduler(time_attr="epoch", metric="objective", mode="max", max_t=epochs + 1, grace_period=1, reduction_factor=3)
        if spec.scheduler == "asha"
        else FIFOScheduler()
    )
    started_here = connect_ray(address, log)
    try:
        gpu = spec.resources["gpu"]
        trainable = tune.with_resources(
            tune.with_parameters(
                _search_trainable,
                base=base.to_dict(),
                fingerprint=plan.fingerprints[base.dataset],
                data_dir=str(plan.data[base.dataset]),
                storage=str(storage),
            ),
            {"CPU": spec.resources["cpu"], "GPU": gpu},
        )
        concurrent = _concurrency(spec, workers=1)

        def on_complete(trial, stopped: bool) -> None:
            config = apply_params(base, trial.config)
            tid = trial_id(config, plan.fingerprints[config.dataset])
            index = done + len(writer.plan.planned)  # a search plan starts empty; add() appends
            row = PlannedRow(index, describe(trial.config), seed, config, tid, ())
            writer.add(row)
            if stopped:
                writer.stopped_row(row, trial.last_result or {})
            else:
                writer.trial_done(tid)

        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=remaining, max_concurrent_trials=concurrent
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str(storage / "tune"),
                failure_config=tune.FailureConfig(max_failures=2),
                callbacks=[_Progress(writer, {}, log, on_complete=on_complete, total=remaining)],
                verbose=0,
            ),
        )
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


class _RowWriter:
    """Turns finished trials into study rows (one per row label, seed and threshold)."""

    def __init__(self, spec: StudySpec, plan: StudyPlan, store: ResultsStore, provenance: dict[str, Any], log: Log) -> None:
        self.spec, self.plan, self.store, self.provenance, self.log = spec, plan, store, provenance, log
        self.done: set[str] = set()
        self.best: tuple[float, str] | None = None

    def add(self, row: PlannedRow) -> None:
        """A row known only once it ran (a search's sampled configuration)."""
        self.plan.planned.append(row)

    def stopped_row(self, p: PlannedRow, last: dict[str, Any]) -> None:
        """A search trial that ASHA stopped early: its last validation scores, no test."""
        row = self._row(p, {"status": "stopped", "epochs_run": int(last.get("epoch", 0))}, {}, p.config.threshold, False)
        row["reason"] = f"stopped by the scheduler after epoch {int(last.get('epoch', 0))}"
        for m in METRIC_NAMES:
            row[f"val_{m}"] = float(last.get(f"val_{m}", math.nan))
        self.store.write_row(row)

    def trial_done(self, tid: str, reused: bool = False) -> None:
        result = self.store.finished_trial(tid)
        if not _usable(result):
            return
        self.done.add(tid)
        planned = [p for p in self.plan.planned if p.trial_id == tid]
        # Rows sharing this training (deduplicated configs) are scored in one pass per split.
        wanted = {t for p in planned for t in self._thresholds(p)}
        scores = _scores_at(self.store.trial_dir(tid), tuple(sorted(wanted))) if result["status"] == "ok" else {}
        for p in planned:
            thresholds = self._thresholds(p)
            rows = [self._row(p, result, scores.get(t, {}), t, reused) for t in thresholds]
            if self.spec.kind == "threshold" and result["status"] == "ok":
                chosen = max(rows, key=lambda r: r["val_f1"])["threshold"]  # chosen on validation only
                for r in rows:
                    r["chosen_threshold"] = chosen
            for r in rows:
                # A row already written from this training stays as it was (its finish time included).
                if not (reused and self.store.row_path_for(r).is_file()):
                    self.store.write_row(r)
            if result["status"] == "ok" and self.spec.kind != "threshold":
                f1 = rows[0]["val_f1"]
                if self.best is None or f1 > self.best[0]:
                    self.best = (f1, p.label)

    def _thresholds(self, p: PlannedRow) -> tuple[float, ...]:
        return self.spec.thresholds if self.spec.kind == "threshold" else (p.config.threshold,)

    def _row(
        self, p: PlannedRow, result: dict[str, Any], scores: dict[str, float], threshold: float, reused: bool
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "study": self.spec.name,
            "kind": self.spec.kind,
            "row": f"{threshold:g}" if self.spec.kind == "threshold" else p.label,
            "row_index": p.row_index,
            "seed": p.seed,
            "trial_id": p.trial_id,
            "config_hash": p.config.training_hash,
            "status": result["status"],
            "reason": result.get("reason", ""),
            "threshold": float(threshold),
            "chosen_threshold": float(threshold),
        }
        for split in ("val", "test"):
            for m in METRIC_NAMES:
                row[f"{split}_{m}"] = scores.get(f"{split}_{m}", math.nan)
            for m in ("accuracy", "precision", "recall", "f1"):
                row[f"{split}_det_{m}"] = result.get(f"{split}_det", {}).get(m, math.nan)
        accelerator = result.get("accelerator", "CPU")
        trained_s = float(result.get("wall_s", 0.0))
        row.update(
            {
                "epochs_run": int(result.get("epochs_run", 0)),
                "best_epoch": int(result.get("best_epoch", 0)),
                "wall_s": trained_s,
                # A data-parallel trial records rank 0's accelerator; every worker has its own.
                "gpu_hours": _gpu_count(accelerator) * int(result.get("num_workers", 1)) * trained_s / 3600.0,
                "reused": reused,
                "images_per_s": float(result.get("images_per_s", math.nan)),
                "params": int(result.get("params", 0)),
                "flops_per_image": int(result.get("flops_per_image", 0)),
                "history": result.get("history", []),
                "steps": list(p.steps),
                "data_fingerprint": self.plan.fingerprints[p.config.dataset],
                "node": result.get("node", ""),
                "accelerator": accelerator,
                "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **self.provenance,
            }
        )
        for key, value in p.config.to_dict().items():
            row[f"{CONFIG_PREFIX}{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        return row


def _concurrency(spec: StudySpec, workers: int) -> int:
    """Trials at once: the spec's max_concurrent, else as many as the cluster's GPUs (or
    CPUs) hold at the spec's per-trial resources times `workers`."""
    import ray

    if spec.max_concurrent:
        return spec.max_concurrent
    total = ray.cluster_resources()
    gpu = spec.resources["gpu"]
    if gpu > 0:
        return max(1, int(total.get("GPU", 0) // max(gpu * workers, 1e-9)))
    return max(1, int(total.get("CPU", 1) // max(spec.resources["cpu"] * workers, 1e-9)))


def _gpu_count(accelerator: str) -> int:
    """'2x NVIDIA H100' -> 2; 'CPU' -> 0 (the accelerator string a trial records)."""
    head = accelerator.split("x ", 1)[0]
    return int(head) if head.isdigit() else 0


def _scores_at(trial_dir: Path, thresholds: tuple[float, ...]) -> dict[float, dict[str, float]]:
    """Metrics at every threshold from the stored uint8 probability maps, one pass per split.

    No model and no training: this is what makes Table IX free. The uint8 maps are
    scored as stored (rmaunet.metrics documents how a threshold maps onto them).
    """
    from rmaunet.metrics import sweep_thresholds

    scores: dict[float, dict[str, float]] = {t: {} for t in thresholds}
    for split in ("val", "test"):
        path = trial_dir / f"{split}_probs.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            table = sweep_thresholds(data["mask"], data["prob_u8"], thresholds)
        for t in thresholds:
            scores[t].update({f"{split}_{m}": float(table.loc[t, m]) for m in METRIC_NAMES})
    return scores


class _Progress:
    """Tune callback: which trials run where, finished / total, best so far, time left."""

    def __new__(cls, *args, **kwargs):  # built lazily so this module imports without Ray
        from ray import tune

        class Progress(tune.Callback):
            def __init__(
                self, writer: _RowWriter, labels: dict[str, str], log: Log, on_complete=None, total: int | None = None
            ) -> None:
                self.writer, self.labels, self.log = writer, labels, log
                self.on_complete = on_complete
                self.total = total or len(labels)
                self.finished = 0
                self.started = time.monotonic()

            def _label(self, trial) -> str:
                if "trial_id" not in trial.config:
                    from rmaunet.studies.search import describe

                    return describe(trial.config)
                return self.labels.get(trial.config.get("trial_id"), str(trial))

            def on_trial_start(self, iteration, trials, trial, **info):
                running = sum(1 for t in trials if t.status == "RUNNING")
                self.log(f"  start  {self._label(trial)}  ({running} running, {self.finished}/{self.total} done)")

            def on_trial_result(self, iteration, trials, trial, result, **info):
                if "epoch" in result and "val_f1" in result:
                    node = result.get("node_ip", "?")
                    self.log(
                        f"  epoch {int(result['epoch'])}  {self._label(trial)} on {node}: "
                        f"loss {result.get('loss', math.nan):.4f}, val F1 {100 * result['val_f1']:.2f}, "
                        f"{result.get('images_per_s', math.nan):.0f} img/s"
                    )

            def on_trial_complete(self, iteration, trials, trial, **info):
                last = trial.last_result or {}
                if self.on_complete is not None:
                    self.on_complete(trial, stopped=not last.get(FINISHED))
                else:
                    self.writer.trial_done(trial.config.get("trial_id"))
                self.finished += 1
                total = self.total
                elapsed = time.monotonic() - self.started
                eta = elapsed / self.finished * max(total - self.finished, 0)
                best = self.writer.best
                best_text = f"best so far {best[1]!r} val F1 {100 * best[0]:.2f}" if best else "no result yet"
                state = "done  " if last.get(FINISHED) or self.on_complete is None else "stop  "
                self.log(f"  {state} {self._label(trial)}  [{self.finished}/{total}] {best_text}; about {eta:.0f} s left")

            def on_trial_recover(self, iteration, trials, trial, **info):
                self.log(f"  error  {self._label(trial)}: the trial died; retrying, from its last epoch checkpoint")

            def on_trial_error(self, iteration, trials, trial, **info):
                self.log(f"  error  {self._label(trial)}: the trial failed after its retries; rerun the study to try again")

        return Progress(*args, **kwargs)


def _provenance() -> dict[str, Any]:
    versions = {}
    for name in ("rmaunet", "tensorflow", "keras", "ray", "numpy", "optuna"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is recorded as absent
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit or os.environ.get("RMAUNET_GIT_COMMIT", "unknown"), "versions": versions}
