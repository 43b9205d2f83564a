"""`rmaunet study run|plan` and `rmaunet demo`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

__all__ = ["register", "register_demo", "OPTUNA_STORAGE_ENV"]

# The Optuna storage URL from the environment: it never needs to be on a command line, where
# `ps` and the Ray job's recorded entrypoint (the dashboard, `ray job list`) would show it.
OPTUNA_STORAGE_ENV = "RMAUNET_OPTUNA_STORAGE"


def _spec_arg(p: argparse.ArgumentParser) -> None:
    from rmaunet.specs import resolve_spec

    p.add_argument(
        "spec",
        type=resolve_spec,
        help="study spec: a YAML file, or the name of a bundled spec (`rmaunet study list`), e.g. paper_table4_losses",
    )


def _study_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    data_default = os.environ.get("RMAUNET_DATA")
    p.add_argument(
        "--data",
        action="append",
        required=not data_default,
        default=None,
        metavar="[NAME=]DIR|URI",
        help=(
            "dataset folder in its published layout, or an object-store URI of one (s3://bucket/l4s, "
            "gs://…: each node copies it once into its own cache, $RMAUNET_CACHE_DIR or ~/.cache/rmaunet, "
            "keyed by the data's fingerprint; credentials as for --storage); "
            "repeat as NAME=DIR|URI for a cross-dataset study (Table XI); default: $RMAUNET_DATA"
        ),
    )
    _storage_arg(p)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the study to CPU minutes (small widths, crops, few tiles, one epoch, cpu=1,gpu=0 per trial)",
    )
    _override_args(p)
    p.add_argument(
        "--resources",
        metavar="cpu=N,gpu=N[,workers=N]",
        help="what each trial asks, instead of the spec's `resources:` (after --smoke's); "
        "e.g. cpu=2,gpu=0 to run a GPU spec on CPUs. Keys left out keep the spec's value",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="at most N trials at once, instead of the spec's `max_concurrent:` (default: as many as "
        "fit, counted per node on the node types the cluster can start, or on its live nodes)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address (default: RAY_ADDRESS, else this machine, where a local Ray runtime runs). "
        "Before anything starts, every row's request is compared with what the cluster's nodes and node "
        "types offer: a row no node can hold is refused (exit 2)",
    )


def _override_args(p: argparse.ArgumentParser) -> None:
    """--set and --seeds: the spec changed without editing it, recorded with the study's results."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the spec's base config, every row inheriting it (repeatable; a nested key "
        "with dots; the value read as in the spec's YAML), e.g. --set epochs=5 --set batch_size=8 --set "
        "loss_params.alpha=0.3. A row that sets the key itself keeps its own value; the store records the "
        "overrides, trials are reused only at the same values, and the report names them",
    )
    p.add_argument(
        "--seeds",
        metavar="S[,S…]",
        help="train these seeds instead of the spec's `seeds:`, e.g. --seeds 0,1,2 (a list, not a count: "
        "--seeds 3 is the one seed 3); trials of seeds already in the store are reused",
    )


def _storage_arg(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    what = (
        "results store: a folder (created if missing), or on a cluster s3://BUCKET/PREFIX or gs://… "
        "(or a folder every node mounts). Ray Tune's experiment state goes under it too; default: $RMAUNET_STORAGE"
    )
    default = os.environ.get("RMAUNET_STORAGE")
    if positional:
        p.add_argument("storage", nargs="?" if default else None, default=default, help=what)
    else:
        p.add_argument("--storage", required=not default, default=default, help=what)


def register(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser(
        "study",
        help="plan or run an ablation study / search from a YAML spec",
        description="Plan or run a study declared in a YAML spec (see search_spaces/).",
    )
    study_sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    run = study_sub.add_parser(
        "run",
        help="train what the study needs on Ray Tune and write its results rows",
        description=(
            "Run a study on the Ray cluster in RAY_ADDRESS (or --address), or on a local Ray "
            "runtime. Trainings already in the store are reused; rerunning continues an "
            "interrupted study. One driver runs a study at a time (a lease in the store). "
            "Exit status: 0 every planned training ok; 1 some failed or did not finish (one line "
            "on stderr says which); 2 refused input; 3 another driver runs the study."
        ),
    )
    _study_args(run)
    _reports_arguments(run, default=None, old="--report", old_help=" that writes into DIR itself, not DIR/<study>/")
    run.add_argument(
        "--take-over",
        action="store_true",
        help="run even though another driver holds the study's lease (one you know is dead; a driver "
        "that stopped heartbeating for a minute is taken over without this flag)",
    )
    run.add_argument(
        "--optuna-storage",
        default=os.environ.get(OPTUNA_STORAGE_ENV),
        metavar="URL",
        help=f"Optuna RDB URL for searches (default: ${OPTUNA_STORAGE_ENV}, else sqlite in the store; "
        "postgresql://USER@HOST/DB on a cluster). Keep the password out of the URL: PostgreSQL's driver "
        f"reads it from PGPASSWORD or ~/.pgpass (0600); or set the whole URL in ${OPTUNA_STORAGE_ENV}. "
        "A password is masked in every message",
    )
    tracking = run.add_argument_group(
        "experiment tracking",
        "Ray Tune's logger callbacks: one run per training, with its varied config fields as "
        "parameters and every epoch's metrics (TensorBoard's files are always in STORAGE/tune/)",
    )
    tracking.add_argument(
        "--mlflow",
        metavar="URI",
        help="log to this MLflow tracking URI (file:///…, http://…); "
        "the experiment is the study's name. Needs the mlflow extra",
    )
    tracking.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="log to this Weights & Biases project, grouped by study; needs the wandb extra and WANDB_API_KEY",
    )
    tracking.add_argument(
        "--tune-callback",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="add the ray.tune.Callback that MODULE.FACTORY() returns (repeatable)",
    )
    run.set_defaults(func=_run)

    plan = study_sub.add_parser(
        "plan",
        help="print how many trainings a study needs and how many it reuses",
        description=(
            "Validate a spec and print its rows, what each trial asks, what the cluster offers and what "
            "would be trained; trains nothing. With --address or RAY_ADDRESS it connects to that cluster "
            "(its `ray up` node types, KubeRay worker groups or live nodes); without, it checks this "
            "machine, where `study run` without an address would train: a row asking for a GPU this "
            "machine lacks is refused, as `study run` would refuse it."
        ),
    )
    _study_args(plan)
    _cost_args(plan)
    plan.set_defaults(func=_plan)

    listing = study_sub.add_parser(
        "list",
        help="list the bundled specs (each paper table, the search, the demo) with their size",
        description="List the specs shipped with rmaunet: run any of them by name, e.g. `rmaunet study plan demo`.",
    )
    listing.set_defaults(func=_list)

    status = study_sub.add_parser(
        "status",
        help="where a study stands: per row and seed done / running / failed / not started",
        description=(
            "Read a results store and print, per study (or --study), each planned training's state: "
            "done (or reused), running (a checkpoint but no result), failed (with its cause) or not "
            "started, and the best validation score so far. Reads the store only: no Ray, no data."
        ),
    )
    _storage_arg(status, positional=True)
    status.add_argument("--study", help="only this study (default: every study run into the store)")
    status.set_defaults(func=_status)


def _cost_args(p: argparse.ArgumentParser) -> None:
    from rmaunet.studies.cost import DEFAULT_GPU, GPUS

    cost = p.add_argument_group(
        "cost", "FLOPs, peak memory per trial, GPU-hours and wall time of the trainings to run (rmaunet.studies.cost)"
    )
    cost.add_argument(
        "--gpu",
        metavar="NAME",
        help=f"judge each trial's memory against this GPU ({', '.join(GPUS)}; default: the cluster's own "
        f"GPU type where its nodes declare one, else {DEFAULT_GPU})",
    )
    cost.add_argument("--no-cost", action="store_true", help="skip the cost table (it builds each distinct model once)")
    cost.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip timing a few training steps of each model on this machine's CPU (seconds per model)",
    )


def register_demo(sub: argparse._SubParsersAction) -> None:
    from rmaunet.specs import bundled_spec  # the specs ship in the package: found the same way in a wheel

    demo = sub.add_parser(
        "demo",
        help="synthetic data + the demo loss study on local Ray + its tables (what `make demo` runs)",
        description=(
            "Write a synthetic Landslide4Sense-format dataset, run search_spaces/demo.yaml on a local "
            "Ray runtime and write the table (Markdown, LaTeX) and the results store."
        ),
    )
    demo.add_argument("--data", type=Path, default=Path(".demo/data"), help="where the synthetic dataset goes")
    demo.add_argument("--storage", type=Path, default=Path(".demo/results"), help="results store folder")
    _reports_arguments(demo, default=Path("reports"))
    demo.add_argument(
        "--spec", type=Path, default=bundled_spec("demo"), help="study spec (default: the bundled demo.yaml)"
    )
    demo.add_argument("--n", type=int, default=240, help="number of synthetic scenes")
    demo.add_argument("--size", type=int, default=64, help="synthetic tile side in pixels")
    demo.set_defaults(func=_demo)


class Console:
    """The study's log lines, time-stamped. On a terminal it also keeps one live status line
    (trainings done, running, failed, time left) under them, redrawn in place; off a
    terminal (a file, `ray job logs`) there is no status line and no control character."""

    def __init__(self, stream=None) -> None:
        import sys

        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.current = ""

    def __call__(self, msg: str) -> None:
        clear = "\r\x1b[K" if self.live and self.current else ""
        self.stream.write(f"{clear}[{time.strftime('%H:%M:%S')}] {msg}\n")
        if self.live and self.current:
            self.stream.write(self.current)
        self.stream.flush()

    def status(self, text: str) -> None:
        if not self.live:
            return
        self.current = f"  ▸ {text}"
        self.stream.write(f"\r\x1b[K{self.current}")
        self.stream.flush()

    def close(self) -> None:
        """Leave the last status line on the screen, ended, for the lines that follow."""
        if self.live and self.current:
            self.stream.write("\n")
            self.stream.flush()
        self.current = ""


def _reports_arguments(
    p: argparse.ArgumentParser, *, default: Path | None, old: str | None = None, old_help: str = ""
) -> None:
    from rmaunet.reporting.cli import add_reports_argument

    add_reports_argument(p, default=default, old=old, dest="report_into", old_help=old_help)


def _report_dir(args: argparse.Namespace, study: str) -> Path | None:
    """Where a study's report goes: REPORTS/<study>/, as `rmaunet report` writes it; the
    deprecated --report DIR keeps its old meaning, DIR itself."""
    from rmaunet.safe_input import slug

    if getattr(args, "report_into", None) is not None:
        return args.report_into
    return None if args.reports is None else args.reports / slug(study)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _data_arg(values: list[str] | None) -> Path | str | dict[str, Path | str]:
    """`--data DIR|URI` (one dataset) or `--data NAME=DIR|URI …` (one per dataset), else
    $RMAUNET_DATA (the parser requires one of them). A URI stays a string: Path("s3://b/x")
    would collapse its "//"."""
    from rmaunet.config import DATASETS
    from rmaunet.errors import DataError
    from rmaunet.storage import is_uri

    def where(text: str) -> Path | str:
        return text if is_uri(text) else Path(text)

    values = values or [os.environ["RMAUNET_DATA"]]
    named = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if sep and name in DATASETS:
            named[name] = where(folder)
        elif len(values) == 1:
            return where(value)
        else:
            raise DataError(f"{value}: with several --data, write NAME=DIR|URI (NAME one of {', '.join(DATASETS)})")
    return named


def _list(args: argparse.Namespace) -> int:
    from rmaunet.errors import plural
    from rmaunet.specs import bundled_spec, bundled_spec_names
    from rmaunet.studies.spec import load_spec

    names = bundled_spec_names()
    width = max(map(len, names))
    for name in names:
        spec = load_spec(bundled_spec(name), build_checks=False)  # bundled: checked by the tests
        if spec.kind == "search":
            size = f"search, up to {plural(spec.budget, 'training')}"
        else:
            trainings = len(spec.rows) * len(spec.seeds)
            size = f"{spec.kind}, {plural(len(spec.rows), 'row')} × {plural(len(spec.seeds), 'seed')}"
            size += (
                f" = {plural(trainings, 'training')}"
                if spec.kind != "threshold"
                else f" ({len(spec.thresholds)} thresholds)"
            )
        first = spec.description.strip().split(". ")[0].rstrip(".")
        print(f"{name:<{width}}  {size}" + (f"; {first}" if first else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    from rmaunet.studies.status import render_status, study_status

    statuses = study_status(args.storage, args.study)
    print(render_status(statuses) if statuses else f"{args.storage}: no study has run into this store yet")
    return 0


def _load(args: argparse.Namespace):
    """The spec with the command line's --smoke, --set, --seeds, --resources and --max-concurrent applied."""
    import dataclasses

    from rmaunet.errors import ConfigError
    from rmaunet.studies.spec import MAX_BUDGET, load_spec, parse_seeds, parse_set

    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    spec = load_spec(args.spec, smoke=args.smoke, overrides=parse_set(args.set), seeds=seeds)
    if args.resources is not None:
        spec = dataclasses.replace(spec, resources=_resources_arg(args.resources, spec.resources))
    if args.max_concurrent is not None:
        if not 1 <= args.max_concurrent <= MAX_BUDGET:
            raise ConfigError(f"--max-concurrent {args.max_concurrent}: expected an integer in [1, {MAX_BUDGET}]")
        spec = dataclasses.replace(spec, max_concurrent=args.max_concurrent)
    return spec


def _resources_arg(text: str, resources: dict[str, float]) -> dict[str, float]:
    """`cpu=4,gpu=1[,workers=2]` over the spec's resources, each value in the spec's own range."""
    from rmaunet.errors import ConfigError
    from rmaunet.studies.spec import RESOURCE_LIMITS

    out = dict(resources)
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in RESOURCE_LIMITS:
            raise ConfigError(f"--resources {text}: expected KEY=NUMBER items, KEY one of {', '.join(RESOURCE_LIMITS)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--resources {text}: {key}={value} is not a number") from None
        if not 0 <= number <= RESOURCE_LIMITS[key] or (key == "workers" and (number < 1 or not number.is_integer())):
            kind = "an integer in [1," if key == "workers" else "a number in [0,"
            raise ConfigError(f"--resources {text}: {key} must be {kind} {RESOURCE_LIMITS[key]}]")
        out[key] = number
    return out


def _plan(args: argparse.Namespace) -> int:
    from rmaunet.studies.capacity import check_requests, trial_requests
    from rmaunet.studies.cost import gpu_named
    from rmaunet.studies.runner import plan_study
    from rmaunet.studies.session import study_cluster

    spec = _load(args)
    gpu = gpu_named(args.gpu) if args.gpu else None  # a typo is refused before anything is planned
    with study_cluster(args.address, _log) as capacity:
        check_requests(spec, capacity)
        plan = plan_study(spec, _data_arg(args.data), args.storage)
        print(plan.summary())
        _print_changes(spec)
        print(plan.capacity_line(capacity))
        if spec.kind == "search":
            print(f"  [search] each sampled trial asks {trial_requests(spec)[0][1]}")
        for p in plan.planned:
            state = "reuse" if p.trial_id in plan.finished else "train"
            print(f"  [{state}] {p.label} (seed {p.seed}) trial {p.trial_id}, asks {plan.request(p)}")
        if not args.no_cost:
            _print_cost(plan, capacity, gpu, calibrated=not args.no_calibrate)
    return 0


def _print_changes(spec) -> None:
    """What --set and --seeds changed, and the rows an override does not reach."""
    from rmaunet.errors import plural

    if not spec.changes():
        return
    print(f"  [changed] {spec.changes()} (recorded in the store with the study's results)")
    for key, labels in spec.rows_keeping_their_own().items():
        shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        print(f"  [changed] {key} does not reach {shown}: {plural(len(labels), 'row')} with {key} of its own")


def _print_cost(plan, capacity, gpu, *, calibrated: bool) -> None:
    from rmaunet.studies.plan import cost_report
    from rmaunet.training.quiet import quiet_worker

    quiet_worker()  # the models are built here: TensorFlow's start-up lines stay off the terminal
    print(cost_report(plan, plan.costs(calibrated=calibrated), capacity, gpu))


def _run(args: argparse.Namespace) -> int:
    from rmaunet.api import run_study
    from rmaunet.studies.preflight import check_mlflow_uri, check_ray_address
    from rmaunet.studies.session import tracking_callbacks

    spec = _load(args)
    check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))  # seconds, not a wait forever in ray.init
    check_mlflow_uri(args.mlflow)
    callbacks = tracking_callbacks(
        spec.name, mlflow=args.mlflow, wandb=args.wandb, factories=args.tune_callback, storage=str(args.storage)
    )
    _print_changes(spec)
    started = time.monotonic()
    console = Console()
    try:
        plan = run_study(
            spec,
            _data_arg(args.data),
            args.storage,
            address=args.address,
            log=console,
            optuna_storage=args.optuna_storage,
            callbacks=callbacks,
            take_over=args.take_over,
        )
    finally:
        console.close()
    _summarise(
        spec,
        args.storage,
        _report_dir(args, spec.name),
        started,
        optuna_storage=args.optuna_storage,
        callbacks=callbacks,
    )
    return _exit_status(spec, args.storage, plan)


def _exit_status(spec, storage: Path, plan) -> int:
    """0 when every planned training is ok (a search: every sampled one finished or was stopped
    by its scheduler); else 1, with one line on stderr: how many failed, the first one's
    reason, how many did not finish. A rerun of a study whose trainings failed says it again."""
    import sys

    from rmaunet.errors import one_line, plural
    from rmaunet.store import ResultsStore

    store = ResultsStore(storage)
    if spec.kind == "search":
        rows = store.read(spec.name)
        failed = rows[rows["status"] == "failed"].drop_duplicates("trial_id")
        reasons = [(str(r["row"]), str(r["reason"])) for _, r in failed.iterrows()]
        total, unfinished = rows["trial_id"].nunique(), 0
    else:
        results = {tid: store.finished_trial(tid) for tid in plan.unique}
        reasons = [
            (plan.unique[tid].label, str(r.get("reason", "")))
            for tid, r in results.items()
            if r is not None and r.get("status") != "ok"
        ]
        total, unfinished = len(results), sum(r is None for r in results.values())
    if not reasons and not unfinished:
        return 0
    parts = [f"{len(reasons)} of {plural(total, 'training')} failed"] if reasons else []
    if reasons:
        parts[0] += f" (first: {reasons[0][0]!r}: {one_line(reasons[0][1], 300)})"
    if unfinished:
        parts.append(f"{unfinished} did not finish (rerun to continue)")
    print(f"rmaunet: study {spec.name}: " + "; ".join(parts), file=sys.stderr)
    return 1


def _summarise(
    spec,
    storage: Path,
    report_dir: Path | None,
    started: float,
    optuna_storage: str | None = None,
    callbacks: list | None = None,
) -> None:
    from rmaunet.errors import plural
    from rmaunet.reporting.report import render_study
    from rmaunet.store import ResultsStore, safe_name

    study = spec.name
    store = ResultsStore(storage)
    rows = store.read(study)
    exported = store.export_study(study)
    took = time.monotonic() - started
    _log(f"{study}: {plural(len(rows), 'results row')} in {took:.0f} s; store {store}, table {exported}")
    if report_dir is not None and not rows.empty:
        # The same call as `rmaunet report STORE`: the spec the store kept, the same rows.
        changes = {"optuna_storage": optuna_storage} if optuna_storage else {}
        paths = render_study(storage, study, rows, report_dir, changes=changes)
        for callback in callbacks or []:
            if hasattr(callback, "log_report"):  # MLflow: the table and figures beside the trainings' runs
                callback.log_report(paths)
        print()
        print(Path(paths["markdown"]).read_text())
        for kind, path in paths.items():
            print(f"  {kind}: {path}")
        if store.root is None:
            # Under `ray job submit` a relative --reports folder is in the job's temporary
            # working directory on the head: the store keeps a copy the user can reach.
            target = store.storage.child("reports", safe_name(study, "study"))
            for path in sorted(Path(report_dir).rglob("*")):
                if path.is_file():
                    target.upload(path, path.relative_to(report_dir).as_posix())
            _log(f"report copied to {target}")


def _demo(args: argparse.Namespace) -> int:

    from rmaunet.api import run_study
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore
    from rmaunet.studies.spec import load_spec

    started = time.monotonic()
    if not (args.data / "TrainData" / "img").is_dir():
        _log(f"writing {args.n} synthetic Landslide4Sense scenes ({args.size}×{args.size}×14) to {args.data}")
        write_landslide4sense(args.data, args.n, seed=0, size=args.size)
    else:
        _log(f"using the synthetic dataset already in {args.data}")
    spec = load_spec(args.spec)
    console = Console()
    try:
        run_study(spec, args.data, args.storage, synthetic=True, log=console)
    finally:
        console.close()
    report_dir = _report_dir(args, spec.name)
    _summarise(spec, args.storage, report_dir, started)
    exported = ResultsStore(args.storage).export(report_dir / "results.parquet", spec.name)
    _log(_demo_map(args, spec.name, report_dir))
    _log(f"demo finished in {time.monotonic() - started:.0f} s; results store {args.storage}, copy {exported}")
    return 0


def _demo_map(args: argparse.Namespace, study: str, report_dir: Path) -> str:
    """The demo ends with a map: its best row on validation, exported, predicts a synthetic scene.
    A store of trials trained before they kept their preprocessing gets the reason instead."""
    from rmaunet.errors import RmaunetError
    from rmaunet.mapping.demo import map_demo

    try:
        return map_demo(args.storage, study, report_dir, args.data.parent / "map")
    except RmaunetError as exc:
        return f"no map: {exc}"
