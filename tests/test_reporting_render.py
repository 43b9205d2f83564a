"""Markdown renders as a GFM table; LaTeX escapes its specials and compiles with pdflatex."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from PIL import Image
from test_reporting_support import result_row, table_rows

from rmaunet.errors import SpecError
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
            table_rows([[0.6, 0.61]], [label], kind="ladder", study="ladder", seeds=(0, 1), steps=json.dumps(s)).assign(
                row_index=i
            )
            for i, (label, s) in enumerate(
                zip(["U-Net w/", "Combined loss", "Combined loss + Res-Conv & Multihead Att."], steps)
            )
        ]
    )


# One study per layout, with labels full of characters Markdown and LaTeX treat specially.
LAYOUT_ROWS = {
    "one_factor": lambda: table_rows(
        [[0.6, 0.62, 0.61], [0.65, 0.66, 0.67]], ["U-Net & Cross_Entropy (100%)", "U-Net | Focal #2 $x$"]
    ),
    "ladder": _ladder,
    "threshold": lambda: table_rows([[0.6], [0.7]], ["None", "0.95"], kind="threshold", seeds=(0,)),
    "cross_dataset": lambda: pd.concat(
        [
            table_rows([[0.769]], ["RMAU-NET"], seeds=(0,)),
            table_rows(
                [[0.74]],
                ["RMAU-NET"],
                seeds=(0,),
                cfg_dataset="bijie",
                cfg_task="segmentation+detection",
                test_det_f1=0.93,
            ),
        ]
    ),
    "search": lambda: pd.DataFrame(
        [
            result_row(
                "s",
                "search",
                f"trial_{i}",
                i,
                0,
                0.6 + i / 100,
                cfg_learning_rate=10.0 ** -(i + 2),
                cfg_loss="focal_iou" if i % 2 else "cross_entropy",
            )
            for i in range(4)
        ]
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


def _pdflatex(folder: Path, document: str) -> str:
    """Compile `document` in `folder`; the log's text (the test fails on any LaTeX error)."""
    (folder / "doc.tex").write_text(document)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (folder / "doc.log").read_text(errors="replace") if (folder / "doc.log").exists() else run.stdout
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert run.returncode == 0 and not errors, "\n".join(errors) or run.stdout[-2000:]
    return log


@pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex not installed (`make latex` installs texlive-latex-base/recommended)",
)
def test_every_layout_compiles_in_a_two_column_paper_without_overfull_lines(tmp_path: Path) -> None:
    # Every layout's table.tex builds in a two-column article with no line running into the margin
    # (a wide table spans both columns, or shrinks to the text width), and so does the bare tabular
    # inside a float of the user's own (its width is then the user's to manage).
    floats, bare = [], []
    for layout in sorted(LAYOUT_ROWS):
        refs = REFS if layout == "cross_dataset" else None
        write_study_report(
            LAYOUT_ROWS[layout](), tmp_path / layout, title=f"Study {layout}", references=refs, figures=False
        )
        floats += [
            rf"\input{{{layout}/table.tex}}",
            "Body text of the column, so that the page shows how wide a column is. " * 3,
        ]
        (tmp_path / f"{layout}-bare.tex").write_text(render_latex(_table(layout), style="tabular"))
        bare.append(rf"\begin{{table*}}\centering\input{{{layout}-bare.tex}}\end{{table*}}")
    log = _pdflatex(tmp_path, latex_document(*floats, two_column=True))
    overfull = [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]
    assert not overfull, overfull
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed: the pages were not rendered to PNG for a look")
    subprocess.run(["pdftoppm", "-png", "-r", "60", "doc.pdf", "page"], cwd=tmp_path, check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages
    with Image.open(pages[-1]) as page:
        assert page.convert("L").getextrema()[0] < 100  # something dark was drawn: not a blank page
    bare_folder = tmp_path / "bare"
    bare_folder.mkdir()
    for path in tmp_path.glob("*-bare.tex"):
        path.rename(bare_folder / path.name)
    _pdflatex(bare_folder, latex_document(*bare, two_column=True))


def test_latex_float_has_caption_apart_from_the_rule_and_notes_below() -> None:
    # A float: the tabular measured in a box first, then caption, a skip, the box, and notes in a
    # footnote-size box as wide as the table.
    text = render_latex(_table("one_factor"), label="tab:x")
    caption = text.index(r"\caption{Study one\_factor.")
    assert text.index(r"\toprule") < caption < text.index(r"\medskip", caption) < text.index(r"\usebox", caption)
    assert r"\label{tab:x}" in text and r"\parbox{\rmaunetTableWidth}{\footnotesize" in text
    assert r"\begin{table*}" in text and r"\begin{table}[t]" in text  # which one is measured by LaTeX


def test_bare_tabular_style_keeps_caption_and_notes_as_comments() -> None:
    # style="tabular": no float, no \caption; what the caption and notes say stays readable as comments.
    text = render_latex(_table("one_factor"), style="tabular")
    assert r"\begin{table" not in text and r"\caption" not in text
    assert text.splitlines()[1].startswith("% Caption: Study one_factor.")
    assert any(
        line.startswith("% Note: Cells: mean") and "Bold: best value per column." in line for line in text.splitlines()
    )
    assert "% Note: F1: of the landslide class" in text  # the details too: no float to leave them out of
    assert r"\begin{tabular}{lrrrrrr}" in text


def test_latex_style_comes_from_the_spec_and_is_checked(tmp_path: Path) -> None:
    # report: latex_style: tabular writes a bare table.tex; an unknown style is refused naming the spec.
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nreport:\n  latex_style: tabular\n")
    text = write_study_report(LAYOUT_ROWS["one_factor"](), tmp_path / "a", spec=spec, figures=False)[
        "latex"
    ].read_text()
    assert r"\begin{table" not in text and r"\begin{tabular}" in text
    spec.write_text("name: t\nreport:\n  latex_style: sideways\n")
    with pytest.raises(SpecError, match=r"spec.yaml: report latex_style: unknown 'sideways'"):
        write_study_report(LAYOUT_ROWS["one_factor"](), tmp_path / "b", spec=spec, figures=False)


def test_significance_is_a_superscript_in_both_formats() -> None:
    # A significant p-value carries a superscript *, not a starred word after a space.
    table = Table(["Row", "p"], [[Cell("A"), Cell("0.009", mark="*")]])
    assert r"A & 0.009$^{*}$ \\" in render_latex(table)
    assert "| A | 0.009<sup>\\*</sup> |" in render_markdown(table)
    html = MarkdownIt("commonmark").enable("table").render(render_markdown(table))
    assert "0.009<sup>*</sup>" in html


def test_a_row_starting_with_a_bracket_is_not_read_as_a_spacing_argument() -> None:
    # "[37] DDTL" after the previous row's \\ would be taken as \\[37]; it is shielded with {}.
    text = render_latex(
        Table(["Model", "F1"], [[Cell("A"), Cell("1")], [Cell("[37] DDTL"), Cell("2")]]), style="tabular"
    )
    assert "{}[37] DDTL & 2 \\\\" in text


def test_latex_signed_numbers_get_math_signs() -> None:
    # Δ cells: "-1.00" typesets with a real minus, while a label's hyphen stays a hyphen.
    text = render_latex(Table(["Row", "Δ"], [[Cell("U-Net-3"), Cell("-1.00")], [Cell("-"), Cell("+0.50")]]))
    assert r"U-Net-3 & $-$1.00 \\" in text
    assert r"- & $+$0.50 \\" in text
