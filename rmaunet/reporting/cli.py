"""`rmaunet report`: results store (or a Parquet / CSV results table) -> paper-style reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["register", "main", "add_reports_argument", "REPORTS_HELP"]

REPORTS_HELP = "reports folder: each study's report goes to REPORTS/<study>/"


class _DeprecatedAlias(argparse.Action):
    """An old flag name that still works and says which name replaced it."""

    def __init__(self, *args: object, new: str, **kwargs: object) -> None:
        self.new = new
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values, option=None) -> None:
        print(f"{parser.prog}: warning: {option} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_reports_argument(
    parser: argparse.ArgumentParser,
    *,
    default: Path | None,
    old: str | None = None,
    dest: str = "reports",
    old_help: str = "",
) -> None:
    """`--reports DIR`, the one name of the report folder in every command, and the command's old
    name for it (`old`), kept as a deprecated alias that still works."""
    suffix = f" (default {default}/)" if default else ""
    parser.add_argument("--reports", type=Path, default=default, help=REPORTS_HELP + suffix)
    if old is not None:
        parser.add_argument(
            old,
            dest=dest,
            type=Path,
            action=_DeprecatedAlias,
            new="--reports",
            help=f"deprecated name of --reports{old_help}",
        )


DESCRIPTION = (
    "Write, per study, a table in the layout of the matching paper table (Markdown and "
    "LaTeX), its figures (PNG and PDF) and a README.md index page. Metrics are test-split "
    "values in percent; several seeds give mean ± std and a paired t-test against the baseline."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="turn a results store into the paper's tables and figures", description=DESCRIPTION
    )
    _add_arguments(p)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "store",
        help="results store (a study's --storage: a folder, s3://… or gs://…), or a results table (.parquet or .csv)",
    )
    p.add_argument("--study", help="only this study (default: the spec's study, else every study)")
    p.add_argument(
        "--spec",
        type=Path,
        help="the study's YAML spec: its `report:` section picks metrics, baseline, layout, references "
        "(default: the spec the store kept when the study ran)",
    )
    p.add_argument(
        "--format", default="markdown,latex", help="comma-separated table formats: markdown, latex (default both)"
    )
    p.add_argument(
        "--metrics", help="comma-separated test metrics of the tables, e.g. f1,miou,precision,recall (default f1,miou)"
    )
    p.add_argument("--baseline", help="row label the Δ and p columns compare against (default: the first row)")
    p.add_argument("--references", type=Path, help="CSV or YAML of published rows for a cross-dataset table (Table XI)")
    p.add_argument("--optuna-storage", help="Optuna RDB URL of a search, for Optuna's own history and importance plots")
    p.add_argument("--no-figures", action="store_true", help="tables and index page only")
    p.add_argument(
        "--latex-scale",
        action="store_true",
        help="shrink a LaTeX table wider than its column to fit (off by default: many venues refuse scaled fonts)",
    )
    add_reports_argument(p, default=Path("reports"), old="--out")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from rmaunet.errors import SpecError, StoreError
    from rmaunet.reporting.inputs import load_references, load_studies, options_from_spec
    from rmaunet.reporting.report import render_study
    from rmaunet.safe_input import read_yaml, slug

    # The strict reader first (UTF-8, no duplicate keys, bounded aliases): what it accepts,
    # the plain YAML parsing behind options_from_spec / load_references reads safely.
    if args.spec is not None:
        read_yaml(args.spec, "spec")
    if args.references is not None and args.references.suffix.lower() in (".yaml", ".yml", ".json"):
        read_yaml(args.references, "references")
    study = args.study or options_from_spec(args.spec).study
    changes: dict[str, object] = {}
    if args.metrics:
        changes["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.baseline:
        changes["baseline"] = args.baseline
    if args.references:
        changes["references"] = load_references(args.references)
    if args.optuna_storage:
        changes["optuna_storage"] = args.optuna_storage
    if args.latex_scale:
        changes["latex_scale"] = True
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if not formats:
        raise SpecError(f"--format {args.format!r}: names no format (markdown, latex or both)")
    if args.reports.exists() and not args.reports.is_dir():
        raise StoreError(f"{args.reports}: --reports must be a folder, and this is not one")

    studies = load_studies(args.store, study)
    # The study name comes from the data: as a folder name it must stay inside --reports, and
    # two studies must not share one (a/b and a_b would overwrite each other's report).
    folders: dict[str, str] = {}
    for name in studies:
        other = folders.setdefault(slug(name), str(name))
        if other != str(name):
            raise StoreError(f"{args.store}: studies {other!r} and {name!r} would share the report folder {slug(name)}")
    for name, rows in studies.items():
        try:
            paths = render_study(
                args.store,
                str(name),
                rows,
                args.reports / slug(name),
                spec=args.spec,
                changes=changes,
                formats=formats,
                figures=not args.no_figures,
            )
        except OSError as exc:  # a read-only or full disk, a file where a folder goes
            raise StoreError(
                f"{exc.filename or args.reports}: cannot write the report ({exc.strerror or exc})"
            ) from None
        print(f"{name}: {paths['index']} ({len(paths)} files)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (jobs/report.py): the report command without the training stack's imports."""
    from rmaunet.errors import RmaunetError

    parser = argparse.ArgumentParser(prog="jobs/report.py", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RmaunetError as exc:
        print(f"rmaunet report: error: {exc}", file=sys.stderr)
        return 2
