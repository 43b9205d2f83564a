"""`rmaunet study run|plan` and `rmaunet demo`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "register_demo"]


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, help="study spec (YAML), e.g. search_spaces/demo.yaml")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[NAME=]DIR|URI",
        help=(
            "dataset folder in its published layout, or an object-store URI of one (s3://bucket/l4s, "
            "gs://…: each node copies it once into its own cache, $RMAUNET_CACHE_DIR or ~/.cache/rmaunet, "
            "keyed by the data's fingerprint; credentials as for --storage); "
            "repeat as NAME=DIR|URI for a cross-dataset study (Table XI)"
        ),
    )
    p.add_argument(
        "--storage",
        required=True,
        help="results store: a folder (created if missing), or on a cluster s3://BUCKET/PREFIX or gs://… "
        "(or a folder every node mounts). Ray Tune's experiment state goes under it too",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the study to CPU minutes (small widths, crops, few tiles, one epoch)",
    )


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
            "interrupted study."
        ),
    )
    _study_args(run)
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else start a local runtime)")
    run.add_argument("--report", type=Path, help="also write the study's tables into this folder")
    run.add_argument(
        "--optuna-storage",
        help="Optuna RDB URL for searches (default: sqlite in the store; postgresql://… on a cluster)",
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
        description="Validate a spec and print its rows and what would be trained; trains nothing.",
    )
    _study_args(plan)
    plan.set_defaults(func=_plan)


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
    demo.add_argument("--reports", type=Path, default=Path("reports/demo"), help="where the tables go")
    demo.add_argument(
        "--spec", type=Path, default=bundled_spec("demo"), help="study spec (default: the bundled demo.yaml)"
    )
    demo.add_argument("--n", type=int, default=240, help="number of synthetic scenes")
    demo.add_argument("--size", type=int, default=64, help="synthetic tile side in pixels")
    demo.set_defaults(func=_demo)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _data_arg(values: list[str]) -> Path | str | dict[str, Path | str]:
    """`--data DIR|URI` (one dataset) or `--data NAME=DIR|URI …` (one per dataset). A URI
    stays a string: Path("s3://b/x") would collapse its "//"."""
    from rmaunet.config import DATASETS
    from rmaunet.errors import DataError
    from rmaunet.storage import is_uri

    def where(text: str) -> Path | str:
        return text if is_uri(text) else Path(text)

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


def _plan(args: argparse.Namespace) -> int:
    from rmaunet.studies.runner import plan_study
    from rmaunet.studies.spec import load_spec

    spec = load_spec(args.spec, smoke=args.smoke)
    plan = plan_study(spec, _data_arg(args.data), args.storage)
    print(plan.summary())
    for p in plan.planned:
        state = "reuse" if p.trial_id in plan.finished else "train"
        print(f"  [{state}] {p.label} (seed {p.seed}) trial {p.trial_id}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.session import tracking_callbacks
    from rmaunet.studies.spec import load_spec

    spec = load_spec(args.spec, smoke=args.smoke)
    callbacks = tracking_callbacks(spec.name, mlflow=args.mlflow, wandb=args.wandb, factories=args.tune_callback)
    started = time.monotonic()
    plan = run_study(
        spec,
        _data_arg(args.data),
        args.storage,
        address=args.address,
        log=_log,
        optuna_storage=args.optuna_storage,
        callbacks=callbacks,
    )
    _summarise(spec, args.storage, args.report, started, optuna_storage=args.optuna_storage)
    return 0 if plan.unique.keys() <= _done(args.storage, plan) else 1


def _done(storage: Path, plan) -> set[str]:
    from rmaunet.store import ResultsStore

    store = ResultsStore(storage)
    return {tid for tid in plan.unique if store.finished_trial(tid) is not None}


def _summarise(spec, storage: Path, report_dir: Path | None, started: float, optuna_storage: str | None = None) -> None:
    from rmaunet.reporting import ReportOptions, write_study_report
    from rmaunet.store import ResultsStore, safe_name

    study = spec.name
    store = ResultsStore(storage)
    rows = store.read(study)
    exported = store.export_study(study)
    _log(f"{study}: {len(rows)} results rows in {time.monotonic() - started:.0f} s; store {store}, table {exported}")
    if report_dir is not None and not rows.empty:
        options = None
        if spec.kind == "search" and (optuna_storage or store.root is not None):
            url = optuna_storage or f"sqlite:///{store.root / 'optuna.db'}"
            options = ReportOptions(optuna_storage=url, study=study)
        paths = write_study_report(rows, report_dir, title=study, spec=spec.path, options=options)
        print()
        print(Path(paths["markdown"]).read_text())
        for kind, path in paths.items():
            print(f"  {kind}: {path}")
        if store.root is None:
            # Under `ray job submit` a relative --report folder is in the job's temporary
            # working directory on the head: the store keeps a copy the user can reach.
            target = store.storage.child("reports", safe_name(study, "study"))
            for path in sorted(Path(report_dir).rglob("*")):
                if path.is_file():
                    target.upload(path, path.relative_to(report_dir).as_posix())
            _log(f"report copied to {target}")


def _demo(args: argparse.Namespace) -> int:

    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.store import ResultsStore
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    started = time.monotonic()
    if not (args.data / "TrainData" / "img").is_dir():
        _log(f"writing {args.n} synthetic Landslide4Sense scenes ({args.size}×{args.size}×14) to {args.data}")
        write_landslide4sense(args.data, args.n, seed=0, size=args.size)
    else:
        _log(f"using the synthetic dataset already in {args.data}")
    spec = load_spec(args.spec)
    run_study(spec, args.data, args.storage, log=_log)
    _summarise(spec, args.storage, args.reports, started)
    exported = ResultsStore(args.storage).export(args.reports / "results.parquet", spec.name)
    _log(_demo_map(args, spec.name))
    _log(f"demo finished in {time.monotonic() - started:.0f} s; results store {args.storage}, copy {exported}")
    return 0


def _demo_map(args: argparse.Namespace, study: str) -> str:
    """The demo ends with a map: its best row on validation, exported, predicts a synthetic scene.
    A store of trials trained before they kept their preprocessing gets the reason instead."""
    from rmaunet.errors import RmaunetError
    from rmaunet.mapping.demo import map_demo

    try:
        return map_demo(args.storage, study, args.reports, args.data.parent / "map")
    except RmaunetError as exc:
        return f"no map: {exc}"
