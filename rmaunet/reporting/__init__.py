"""Results rows -> the paper's tables (Markdown, LaTeX), figures and an index page per study.

Reads only pandas frames (from the results store, a Parquet or a CSV table); never imports
TensorFlow or Ray, so a report is seconds even on a laptop without the training stack.
"""

from __future__ import annotations

from rmaunet.reporting.inputs import ReferenceRow, ReportOptions, load_references, load_results, options_from_spec
from rmaunet.reporting.latex import latex_document, render_latex
from rmaunet.reporting.markdown import render_markdown
from rmaunet.reporting.report import provenance, write_study_report
from rmaunet.reporting.stats import PairedTest, SeedStats, paired_test, seed_stats
from rmaunet.reporting.tables import build_table, choose_layout
from rmaunet.reporting.tabular import Cell, HeaderGroup, Table

__all__ = [
    "write_study_report",
    "build_table",
    "choose_layout",
    "render_markdown",
    "render_latex",
    "latex_document",
    "load_results",
    "load_references",
    "options_from_spec",
    "provenance",
    "ReportOptions",
    "ReferenceRow",
    "Table",
    "Cell",
    "HeaderGroup",
    "SeedStats",
    "PairedTest",
    "seed_stats",
    "paired_test",
]
