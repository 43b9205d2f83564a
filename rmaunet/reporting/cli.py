"""`rmaunet report`: results store (or a results table) -> paper-style tables."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn a results store into the paper's tables",
        description="Write Markdown and LaTeX tables, in the paper's layouts, from a results store.",
    )
    p.add_argument("store", type=Path, help="results store folder (the --storage of a study run)")
    p.add_argument("--study", help="only this study (default: every study in the store)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports/)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from rmaunet.errors import StoreError
    from rmaunet.reporting.tables import write_study_report
    from rmaunet.studies.store import ResultsStore

    df = ResultsStore(args.store).read(args.study)
    if df.empty:
        raise StoreError(f"{args.store}: no results rows" + (f" for study {args.study!r}" if args.study else ""))
    for study, rows in df.groupby("study"):
        paths = write_study_report(rows, args.out / str(study), title=str(study))
        print(f"{study}: " + ", ".join(str(p) for p in paths.values()))
    return 0
