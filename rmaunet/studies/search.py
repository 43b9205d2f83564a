"""Searches: Ray Tune + Optuna (TPE, seeded) + ASHA over any TrialConfig field.

`parse_space` validates a spec's space before anything runs; `run_search` runs it.

A spec's `space:` maps config fields (or `loss_params.<name>`) to one distribution:

    loss_params.alpha: {uniform: [0, 1]}
    learning_rate:     {loguniform: [1.0e-4, 3.0e-3]}
    depth:             {int: [3, 5]}
    attention:         {choice: [none, se, cbam, mha]}

Every sampled trial is a training with its own identity, so a configuration the search
meets twice (or that a table already trained) is replayed from the store, not retrained.

What Optuna is told (one definition for every trial):
- a trial's value (state COMPLETE) is its objective: the validation selection metric of
  its selected weights at the trial's threshold (tuned on validation, or the sampled
  value), computed from the stored probability maps, as its results row reports it;
- its intermediate values, one per epoch, are that epoch's validation selection metric at
  the epoch's best grid threshold: what ASHA compares at its rungs;
- a trial ASHA stopped has no objective (no selected weights, no maps): it is told PRUNED,
  never COMPLETE with an epoch's number as if it were an objective. Optuna records a pruned
  trial's last intermediate value (its convention for any pruner), but its samplers and
  `best_trial` never compare it with objectives: TPE ranks pruned trials below every
  completed one, by how far they got. A trial that failed (NaN loss, out of memory, a
  crash) is told FAIL.
optuna-dashboard opens the study (`optuna-dashboard sqlite:///STORE/optuna.db`): values,
intermediate values per epoch, parameter importances.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError, StoreError, without_password
from rmaunet.storage import Storage

__all__ = [
    "parse_space",
    "apply_params",
    "check_loss_params",
    "optuna_distributions",
    "grid_points",
    "describe",
    "run_search",
    "without_password",
    "DISTRIBUTIONS",
]

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


def parse_space(space: dict[str, Any], base: TrialConfig) -> dict[str, tuple[str, list[Any]]]:
    """Validate a `space:` mapping -> {name: (kind, args)}; ConfigError names the bad entry."""
    fields = set(TrialConfig.field_names())
    parsed: dict[str, tuple[str, list[Any]]] = {}
    for name, dist in space.items():
        root = name.split(".", 1)[0]
        if root not in fields or (root == "loss_params") != ("." in name):
            raise ConfigError(f"space: unknown parameter {name!r} (a config field, or loss_params.<name>)")
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(f"space.{name}: expected one of {{{', '.join(DISTRIBUTIONS)}: …}}")
        ((kind, args),) = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(
                f"space.{name}: unknown distribution {kind!r} (choose one of: {', '.join(DISTRIBUTIONS)})"
            )
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{name}: {kind} needs a list of values")
        if kind != "choice":
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ConfigError(f"space.{name}: {kind} needs [low, high]")
            low, high = args
            if not low < high or (kind == "loguniform" and low <= 0):
                raise ConfigError(f"space.{name}: {kind} bounds {args} are not a valid range")
            if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"space.{name}: int bounds must be integers")
            probes = [low, high]
        else:
            probes = list(args)
        for value in probes:  # every end of the range must make a valid config
            try:
                apply_params(base, {name: int(value) if kind == "int" else value})
            except ConfigError as exc:
                raise ConfigError(f"space.{name}: {exc}") from None
        parsed[name] = (kind, list(args))
    return parsed


def apply_params(base: TrialConfig, params: dict[str, Any]) -> TrialConfig:
    """Sampled values -> a config; `loss_params.x` merges into the base's loss_params."""
    changes: dict[str, Any] = {}
    loss_params = dict(base.loss_params)
    for name, value in params.items():
        if name.startswith("loss_params."):
            loss_params[name.split(".", 1)[1]] = value
        else:
            changes[name] = value
    if loss_params != dict(base.loss_params):
        changes["loss_params"] = loss_params
    from rmaunet.data.bands import resolve_bands

    config = base.replace(**changes)
    resolve_bands(config.bands, config.dataset)
    check_loss_params(config)
    return config


def check_loss_params(config: TrialConfig) -> None:
    """Refuse loss parameters the named loss does not take (before any trial starts).

    Building the loss is the only complete check (each loss validates its own ranges); it
    imports Keras, so it runs only when there are parameters to check.
    """
    if config.loss_params:
        from rmaunet import losses

        losses.get(config.loss, **config.loss_kwargs)


def optuna_distributions(parsed: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    from optuna import distributions as d

    out: dict[str, Any] = {}
    for name, (kind, args) in parsed.items():
        if kind == "uniform":
            out[name] = d.FloatDistribution(float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[name] = d.FloatDistribution(float(args[0]), float(args[1]), log=True)
        elif kind == "int":
            out[name] = d.IntDistribution(int(args[0]), int(args[1]))
        else:
            out[name] = d.CategoricalDistribution(args)
    return out


def grid_points(parsed: dict[str, tuple[str, list[Any]]], per_axis: int = 3) -> list[dict[str, Any]]:
    """An exhaustive grid over the space (continuous axes at `per_axis` points)."""
    import itertools

    axes: dict[str, list[Any]] = {}
    for name, (kind, args) in parsed.items():
        if kind == "choice":
            axes[name] = list(args)
        elif kind == "int":
            axes[name] = list(range(int(args[0]), int(args[1]) + 1))
        elif kind == "loguniform":
            lo, hi = math.log(args[0]), math.log(args[1])
            axes[name] = [math.exp(lo + (hi - lo) * i / (per_axis - 1)) for i in range(per_axis)]
        else:
            axes[name] = [args[0] + (args[1] - args[0]) * i / (per_axis - 1) for i in range(per_axis)]
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def describe(params: dict[str, Any]) -> str:
    """A row label for a sampled configuration."""
    parts = []
    for name, value in sorted(params.items()):
        short = name.removeprefix("loss_params.")
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- running a search
def _train_sample(
    params: dict[str, Any], *, base: dict[str, Any], fingerprint: str, data_dir: str, storage: str, metric: str
) -> None:
    """One sampled configuration: replayed from the store when already trained, else trained.

    Reports `objective` every epoch (the epoch's validation selection metric at its best
    grid threshold: an intermediate value), then once more after the last epoch, at epoch
    + 1 and marked FINISHED, with the trial's objective (the metric of its selected weights
    at its own threshold, from the stored maps) and its selected weights as Tune checkpoint.
    """
    from ray import tune

    from rmaunet import thresholds
    from rmaunet.data.staging import local_data
    from rmaunet.store import ResultsStore
    from rmaunet.studies.expand import trial_id
    from rmaunet.studies.plan import usable
    from rmaunet.studies.progress import FINISHED
    from rmaunet.studies.session import node_name, report_final, report_numbers
    from rmaunet.training.quiet import quiet_worker
    from rmaunet.training.trial import configure_threads, crash_budget, no_progress_verdict, run_trial

    quiet_worker()
    config = apply_params(TrialConfig.from_dict(base), params)
    store = ResultsStore(storage)
    tid = trial_id(config, fingerprint)

    def report(row: dict[str, Any]) -> None:
        tune.report({**report_numbers(row), "objective": float(row.get(f"val_{metric}", 0.0))})

    result = store.finished_trial(tid)
    workspace = None
    if usable(result):
        for row in result["history"]:
            report(row)
        folder = store.trial(tid)
    else:
        configure_threads()
        workspace = store.workspace(tid)
        folder = workspace.begin(config.to_dict())
        # An exception that repeats is recorded as the trial's failure on its CRASH_LIMIT-th attempt.
        result = {"status": "failed"}
        if not no_progress_verdict(folder, workspace.record_attempt, workspace.finish, node_name()):
            with crash_budget(folder, workspace.record_crash, workspace.finish, node_name()):
                local = local_data(data_dir, config.dataset, fingerprint)
                result = run_trial(
                    config, local, folder.root, report=report, node=node_name(), on_checkpoint=workspace.save_checkpoint
                ).to_dict()
                workspace.finish()
    try:
        if result["status"] == "ok":
            threshold = float(result["threshold"])
            value = thresholds.scores_at(folder, (threshold,))[threshold].get(f"val_{metric}", 0.0)
            report_final({"epoch": int(result["epochs_run"]) + 1, "objective": float(value), FINISHED: 1}, folder)
    finally:
        if workspace is not None:
            workspace.close()


def _optuna_searcher(links: Callable[[dict[str, Any]], dict[str, str]] | None = None, **kwargs: Any) -> Any:
    """Ray's OptunaSearch, telling Optuna a value only for a trial that reached its objective.

    Ray's own searcher tells a stopped trial's last result as its value: an epoch's number
    beside finished trials' objectives. Here it is PRUNED, and a failed trial FAIL. Each
    Optuna trial gets `links(params)` as user attributes when it is sampled (rmaunet's trial
    id and row label: what joins optuna-dashboard's trials to the store's rows).
    """
    from ray.tune.search.optuna import OptunaSearch

    from rmaunet.studies.progress import FINISHED

    class FinishedOnlySearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            params = super().suggest(trial_id)
            sampled = self._ot_trials.get(trial_id)  # OptunaSearch's own map of Tune to Optuna trials
            if links is not None and isinstance(params, dict) and sampled is not None:
                for key, value in links(params).items():
                    sampled.set_user_attr(key, value)
            return params

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            super().on_trial_complete(trial_id, result if result and result.get(FINISHED) else None, error)

        def save(self, checkpoint_path: str) -> None:
            """Tune's copy of the searcher (searcher-state-*.pkl in the store's tune/), without the
            Optuna storage, its study and its open trials: each holds the storage's URL, password
            included when the URL has one. The study lives in that database; a rerun reads it there."""
            state = {k: v for k, v in self.__dict__.items() if k not in ("_storage", "_ot_study", "_ot_trials")}
            with open(checkpoint_path, "wb") as out:
                pickle.dump(state, out)

    return FinishedOnlySearch(**kwargs)


def _open_rdb(url: str) -> Any:
    """Optuna's RDB storage at `url`; a storage it cannot open (server down, wrong port or
    password, driver missing) is a StoreError naming the URL, before any Ray runtime starts."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy's and the drivers' errors share no base class
        reason = str(getattr(exc, "orig", None) or exc)  # the driver's own words, without SQLAlchemy's link
        hint = "; the postgres extra installs PostgreSQL's drivers" if isinstance(exc, ImportError) else ""
        raise StoreError(
            f"{without_password(url)}: cannot open the Optuna storage ({type(exc).__name__}: {reason}){hint}"
        ) from None


def run_search(
    spec: Any,
    plan: Any,
    storage: Storage,
    writer: Any,
    address: str | None,
    log: Callable[[str], None],
    optuna_storage: str | None,
    callbacks: Sequence[Any] = (),
    *,
    lease: Any,
) -> None:
    """Sample up to spec.budget configurations (less what an earlier run finished).
    `callbacks`: further Tune callbacks (tracking) beside the progress printer. `lease`: the
    study's rmaunet.store.StudyLease, which this driver holds (run_study took it)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from rmaunet.studies.expand import PlannedRow, trial_id
    from rmaunet.studies.progress import Progress
    from rmaunet.studies.session import concurrency, make_tuner, ray_session

    if optuna_storage is None and storage.local is None:
        raise ConfigError(
            f"{storage}: a search on an object store keeps its Optuna study in a database every "
            "node and rerun can reach: set RMAUNET_OPTUNA_STORAGE (or pass --optuna-storage) to "
            "postgresql://USER@HOST/DB, with the password in PGPASSWORD or ~/.pgpass"
        )
    if storage.local is not None:
        storage.local.mkdir(parents=True, exist_ok=True)
    url = optuna_storage or f"sqlite:///{storage.local / 'optuna.db'}"
    rdb = _open_rdb(url)
    try:  # a Python-API caller's process goes on: its pooled connections are closed here
        study = optuna.create_study(study_name=spec.name, storage=rdb, direction="maximize", load_if_exists=True)
        # A driver killed mid-search leaves RUNNING trials behind: they will never report. Only
        # the lease holder may say so: another driver's RUNNING trials are alive, and failing them
        # would lose their results to the sampler (Ray's OptunaSearch swallows the error).
        stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if stale:
            lease.verify()
        for t in stale:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=finished_states))
        remaining = spec.budget - done
        log(
            f"Optuna study {spec.name!r} in {without_password(url)}: "
            f"{done} of {spec.budget} trials done, {max(remaining, 0)} to run"
        )
        if remaining <= 0:
            return

        parsed = parse_space(spec.space, spec.base)
        seed = spec.seeds[0]
        base = spec.base.replace(seed=seed)
        metric = writer.metric

        def links(params: dict[str, Any]) -> dict[str, str]:
            config = apply_params(base, params)
            return {"rmaunet_trial_id": trial_id(config, plan.fingerprints[config.dataset]), "row": describe(params)}

        searcher = _optuna_searcher(
            links,
            space=optuna_distributions(parsed),
            metric="objective",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=seed),
            study_name=spec.name,
            storage=rdb,
        )
        scheduler = (
            ASHAScheduler(
                time_attr="epoch",
                metric="objective",
                mode="max",
                max_t=base.epochs + 1,
                grace_period=1,
                reduction_factor=3,
            )
            if spec.scheduler == "asha"
            else FIFOScheduler()
        )

        def on_complete(trial: Any, stopped: bool) -> None:
            config = apply_params(base, trial.config)
            tid = trial_id(config, plan.fingerprints[config.dataset])
            index = done + len(writer.plan.planned)  # a search plan starts empty; add() appends
            row = PlannedRow(index, describe(trial.config), seed, config, tid, ())
            writer.add(row)
            if stopped:
                writer.stopped_row(row, trial.last_result or {})
            else:
                writer.trial_done(tid)

        trainable = tune.with_parameters(
            _train_sample,
            base=base.to_dict(),
            fingerprint=plan.fingerprints[base.dataset],
            data_dir=str(plan.data[base.dataset]),
            storage=storage.uri,
            metric=metric,
        )
        with ray_session(address, log):
            tuner = make_tuner(
                trainable,
                {"CPU": spec.resources["cpu"], "GPU": spec.resources["gpu"]},
                spec=spec,
                storage=storage,
                callbacks=[
                    Progress(
                        writer,
                        lambda trial: describe(trial.config),
                        log,
                        on_complete,
                        total=remaining,
                        epochs=lambda _trial: base.epochs,
                    ),
                    *callbacks,
                ],
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=remaining,
                    max_concurrent_trials=concurrency(spec, workers=1, search=True),
                ),
            )
            tuner.fit()
    finally:
        rdb.engine.dispose()
