"""Markdown renders as a GFM table; LaTeX escapes its specials and compiles with pdflatex."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from test_reporting_support import result_row, table_rows

from rmaunet.reporting import write_study_report
from rmaunet.reporting.inputs import ReferenceRow, ReportOptions
from rmaunet.reporting.latex import latex_document, latex_escape, render_latex
from rmaunet.reporting.markdown import render_markdown
from rmaunet.reporting.tables import build_table
from rmaunet.reporting.tabular import Cell, Table

REFS = (ReferenceRow("bijie", "Improved DDTL", "[37]", {"det_accuracy": 96.03}),)


def _ladder() -> pd.DataFrame:
    steps = [[], ["Combined loss"], ["Combined loss", "Res-Conv & Multihead Att."]]
    return pd.concat(
        [
            table_rows([[0.6, 0.61]], [label], kind="ladder", study="ladder", seeds=(0, 1), steps=json.dumps(s)).assign(row_index=i)
            for i, (label, s) in enumerate(zip(["U-Net w/", "Combined loss", "Combined loss + Res-Conv & Multihead Att."], steps))
        ]
    )


# One study per layout, with labels full of characters Markdown and LaTeX treat specially.
LAYOUT_ROWS = {
    "one_factor": lambda: table_rows([[0.6, 0.62, 0.61], [0.65, 0.66, 0.67]], ["U-Net & Cross_Entropy (100%)", "U-Net | Focal #2 $x$"]),
    "ladder": _ladder,
    "threshold": lambda: table_rows([[0.6], [0.7]], ["None", "0.95"], kind="threshold", seeds=(0,)),
    "cross_dataset": lambda: pd.concat(
        [table_rows([[0.769]], ["RMAU-NET"], seeds=(0,)), table_rows([[0.74]], ["RMAU-NET"], seeds=(0,), cfg_dataset="bijie", cfg_task="segmentation+detection", test_det_f1=0.93)]
    ),
    "search": lambda: pd.DataFrame(
        [result_row("s", "search", f"trial_{i}", i, 0, 0.6 + i / 100, cfg_learning_rate=10.0 ** -(i + 2), cfg_loss="focal_iou" if i % 2 else "cross_entropy") for i in range(4)]
    ),
}


def _table(layout: str) -> Table:
    options = ReportOptions(references=REFS) if layout == "cross_dataset" else ReportOptions()
    table = build_table(LAYOUT_ROWS[layout](), options, title=f"Study {layout}")
    return table


def _gfm_table_shape(text: str) -> tuple[int, list[int]]:
    """(body rows, cells per row incl. header) of the first table a GFM parser finds."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    kinds = [t.type for t in tokens]
    assert "table_open" in kinds, text
    rows, cells, count = 0, [], 0
    in_body = False
    for token in tokens[kinds.index("table_open") : kinds.index("table_close")]:
        if token.type == "tbody_open":
            in_body = True
        elif token.type == "tr_open":
            count = 0
        elif token.type in ("th_open", "td_open"):
            count += 1
        elif token.type == "tr_close":
            cells.append(count)
            rows += in_body
    return rows, cells


@pytest.mark.parametrize("layout", sorted(LAYOUT_ROWS))
def test_markdown_parses_as_a_table_with_every_row_and_column(layout: str) -> None:
    # A GFM parser sees one header plus one body row per table row, each with every column.
    table = _table(layout)
    rows, cells = _gfm_table_shape(render_markdown(table))
    assert rows == len(table.rows)
    assert cells == [len(table.header)] * (len(table.rows) + 1)


def test_markdown_bold_and_escaped_pipe_render_as_intended() -> None:
    # A | in a label stays inside its cell, and bold cells render <strong>.
    html = MarkdownIt("commonmark").enable("table").render(render_markdown(_table("one_factor")))
    assert "U-Net | Focal #2 $x$" in html
    assert "<strong>66.00 ± 1.00</strong>" in html


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a & b", r"a \& b"),
        ("100%", r"100\%"),
        ("cross_entropy", r"cross\_entropy"),
        ("#2", r"\#2"),
        ("$5", r"\$5"),
        ("67.83 ± 0.41", r"67.83 $\pm$ 0.41"),
        ("✓", r"$\checkmark$"),
        ("Δ F1", r"$\Delta$ F1"),
        ("{x}\\", r"\{x\}\textbackslash{}"),
        ("a | b", r"a \textbar{} b"),
        ("Lovász", "Lovasz"),
    ],
)
def test_latex_escape(text: str, expected: str) -> None:
    # LaTeX specials are escaped and the tables' Unicode becomes plain LaTeX.
    assert latex_escape(text) == expected


def test_latex_uses_booktabs_bold_and_header_groups() -> None:
    # booktabs rules, \textbf for the best cells, and Table XI's spanning task headers.
    one = render_latex(_table("one_factor"))
    assert r"\toprule" in one and r"\midrule" in one and r"\bottomrule" in one
    assert r"\textbf{66.00 $\pm$ 1.00}" in one
    xi = render_latex(_table("cross_dataset"))
    assert r"\multicolumn{4}{c}{Segmentation task}" in xi and r"\cmidrule(lr){3-6}" in xi


def test_table_refuses_ragged_rows() -> None:
    # A row with a missing cell is a bug in a builder, caught before anything renders.
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        Table(["a", "b"], [[Cell("x")]])


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (`make latex` installs texlive-latex-base/recommended)")
def test_every_layout_compiles_with_pdflatex(tmp_path: Path) -> None:
    # One document \input-ing the table.tex of every layout's report builds without a LaTeX error.
    inputs = []
    for layout in sorted(LAYOUT_ROWS):
        refs = REFS if layout == "cross_dataset" else None
        write_study_report(LAYOUT_ROWS[layout](), tmp_path / layout, title=f"Study {layout}", references=refs, figures=False)
        inputs.append(rf"\input{{{layout}/table.tex}}")
    (tmp_path / "doc.tex").write_text(latex_document(*inputs))
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (tmp_path / "doc.log").read_text(errors="replace") if (tmp_path / "doc.log").exists() else run.stdout
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert run.returncode == 0 and not errors, "\n".join(errors) or run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_latex_signed_numbers_get_math_signs() -> None:
    # Δ cells: "-1.00" typesets with a real minus, while a label's hyphen stays a hyphen.
    text = render_latex(Table(["Row", "Δ"], [[Cell("U-Net-3"), Cell("-1.00")], [Cell("-"), Cell("+0.50")]]))
    assert r"U-Net-3 & $-$1.00 \\" in text
    assert r"- & $+$0.50 \\" in text
