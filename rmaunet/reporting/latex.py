"""LaTeX (booktabs) rendering of a `Table`, and a minimal document that compiles it.

Two styles: a float with caption, label and notes, or the bare `tabular` for a float of
the user's own (caption and notes then come as comments above it). The float measures the
tabular first, in \\small then \\footnotesize: one that fits the column is a `table`, a
wider one a `table*` spanning both columns of a two-column paper. Fonts are scaled only on
request (`scale`), since many venues refuse scaled tables. The notes are set at footnote
size in a box as wide as the table as printed, so they never run past it (threeparttable's layout; threeparttable and
adjustbox are not in Debian's texlive-latex-recommended, and this needs nothing beyond it).

The output needs `\\usepackage{booktabs}`, `\\usepackage{amssymb}` (for `\\checkmark`) and,
with scaling, `\\usepackage{graphicx}`; every other symbol is mapped to plain LaTeX so
the table compiles with pdflatex's default input encoding and no other package.
"""

from __future__ import annotations

import re

from rmaunet.reporting.tabular import Cell, Table

__all__ = ["render_latex", "latex_escape", "latex_document", "latex_packages", "LATEX_PACKAGES", "LATEX_STYLES"]

LATEX_PACKAGES = ("booktabs", "amssymb", "graphicx")
LATEX_STYLES = ("float", "tabular")
# A box and a length shared by every generated table of a document, allocated by the first.
_ALLOCATE = r"\ifdefined\rmaunetTableBox\else\newsavebox{\rmaunetTableBox}\newlength{\rmaunetTableWidth}\fi"

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",  # a bare | prints as an em dash in the default OT1 font encoding
    # Unicode the tables use: pdflatex without extra packages rejects these as raw bytes.
    "±": r"$\pm$",
    "✓": r"$\checkmark$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "–": "--",
    "—": "---",
    "×": r"$\times$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "α": r"$\alpha$",
    "…": r"\ldots{}",
    "“": "``",
    "”": "''",
    "‘": "`",
    "’": "'",
    "★": r"$\star$",
}
_PATTERN = re.compile("|".join(re.escape(k) for k in _ESCAPES))


def latex_escape(text: str) -> str:
    escaped = _PATTERN.sub(lambda m: _ESCAPES[m.group(0)], text)
    # Anything else outside ASCII would stop pdflatex ("Unicode character not set up"): drop
    # accents where NFKD can, otherwise show a visible placeholder rather than fail the build.
    if escaped.isascii():
        return escaped
    import unicodedata

    out = []
    for ch in escaped:
        if ch.isascii():
            out.append(ch)
            continue
        plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        out.append(plain or "?")
    return "".join(out)


_SIGNED = re.compile(r"^([+-])(?=\d)")


def _cell(cell: Cell) -> str:
    # A signed number (Δ columns) gets a typographic sign; a bare hyphen is shorter than a minus.
    text = _SIGNED.sub(lambda m: f"${m.group(1)}$", latex_escape(cell.text))
    if cell.bold and text:
        text = rf"\textbf{{{text}}}"
    if cell.italic and text:
        text = rf"\textit{{{text}}}"
    if cell.mark:
        text += f"$^{{{latex_escape(cell.mark)}}}$"
    return text


_HEADER_BREAK = 14  # a longer column name goes on two lines: the column is as wide as its numbers


def _header(text: str, align: str) -> str:
    """A column name, on two lines (a nested tabular, no package needed) when it is long."""
    words = text.split(" ")
    if len(text) <= _HEADER_BREAK or len(words) < 2:
        return latex_escape(text)
    # The break that makes the longer line shortest.
    cut = min(range(1, len(words)), key=lambda k: max(len(" ".join(words[:k])), len(" ".join(words[k:]))))
    first, second = (latex_escape(" ".join(part)) for part in (words[:cut], words[cut:]))
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{first}\\ {second}\end{{tabular}}"


def _row(cells: list[str]) -> str:
    line = " & ".join(cells) + r" \\"
    # After the previous row's \\, a line starting with "[" would be read as \\'s spacing argument.
    return "{}" + line if line.startswith("[") else line


def _tabular(table: Table) -> list[str]:
    lines = [rf"\begin{{tabular}}{{{table.align}}}", r"\toprule"]
    if table.groups:
        spans, rules, col = [], [], 1
        for group in table.groups:
            if group.label:
                spans.append(rf"\multicolumn{{{group.span}}}{{c}}{{{latex_escape(group.label)}}}")
                rules.append(rf"\cmidrule(lr){{{col}-{col + group.span - 1}}}")
            else:
                spans += [""] * group.span
            col += group.span
        lines += [_row(spans), " ".join(rules)]
    lines += [_row([_header(h, a) for h, a in zip(table.header, table.align)]), r"\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.rule_before and i > 0:
            lines.append(r"\midrule")
        lines.append(_row([_cell(c) for c in row]))
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def _float_body(table: Table, label: str, scale: bool) -> list[str]:
    """Caption, the measured tabular and notes as wide as it (scaled down only when `scale`)."""
    lines = [r"\centering"]
    if table.caption:
        lines.append(rf"\caption{{{latex_escape(table.caption)}}}")
    if label:
        lines.append(rf"\label{{{re.sub(r'[^A-Za-z0-9:._-]+', '-', label)}}}")
    if table.caption:
        lines.append(r"\medskip")  # the caption would otherwise sit on the top rule (article's \belowcaptionskip is 0)
    if scale:
        lines += [
            r"\ifdim\rmaunetTableWidth>\linewidth\setlength{\rmaunetTableWidth}{\linewidth}\fi",
            r"\resizebox{\rmaunetTableWidth}{!}{\usebox{\rmaunetTableBox}}",
        ]
    else:
        lines.append(r"\usebox{\rmaunetTableBox}")
    if table.notes:
        notes = " ".join(latex_escape(n) for n in table.notes)
        lines += [r"\par\smallskip", rf"\parbox{{\rmaunetTableWidth}}{{\footnotesize\raggedright {notes}}}"]
    return lines


def latex_packages(scale: bool = False) -> tuple[str, ...]:
    """The packages a generated table needs: graphicx only for the opt-in scaling."""
    return LATEX_PACKAGES if scale else tuple(p for p in LATEX_PACKAGES if p != "graphicx")


def render_latex(table: Table, label: str = "", style: str = "float", scale: bool = False) -> str:
    """The table as a float with caption, label and notes, or (style "tabular") the bare tabular.

    The float is measured before it is placed: set in \\small it is a `table` when it fits the
    column; otherwise it is set in \\footnotesize with narrower column gaps, and stays a
    `table` if that fits, else becomes a `table*` across both columns of a two-column paper
    (in \\scriptsize with narrower gaps still, if even the page width is too narrow for it).
    Fonts are never scaled unless `scale` is asked for (many venues refuse scaled tables):
    then a table wider than its line is shrunk to fit.
    """
    if style not in LATEX_STYLES:
        raise ValueError(f"LaTeX style {style!r}: choose from {', '.join(LATEX_STYLES)}")
    lines = ["% Generated by `rmaunet report`; needs \\usepackage{" + ",".join(latex_packages(scale)) + "}."]
    if style == "tabular":
        if table.caption:
            lines.append(f"% Caption: {table.caption}")
        lines += [f"% Note: {note}" for note in [*table.notes, *table.details]]
        return "\n".join(lines + _tabular(table)) + "\n"
    lines += [f"% Detail: {note}" for note in table.details]  # in table.md; too long for under a float
    body = _float_body(table, label, scale)
    lines += [
        _ALLOCATE,
        r"\def\rmaunetTabular{%",
        *_tabular(table),
        "}%",
        r"\sbox{\rmaunetTableBox}{\small\rmaunetTabular}%",
        r"\ifdim\wd\rmaunetTableBox>\columnwidth",
        r"\sbox{\rmaunetTableBox}{\footnotesize\setlength{\tabcolsep}{3pt}\rmaunetTabular}%",
        r"\fi",
        r"\ifdim\wd\rmaunetTableBox>\textwidth",
        r"\sbox{\rmaunetTableBox}{\scriptsize\setlength{\tabcolsep}{2pt}\rmaunetTabular}%",
        r"\fi",
        r"\setlength{\rmaunetTableWidth}{\wd\rmaunetTableBox}%",
        r"\ifdim\rmaunetTableWidth>\columnwidth",
        r"\begin{table*}[t]",
        *body,
        r"\end{table*}",
        r"\else",
        r"\begin{table}[t]",
        *body,
        r"\end{table}",
        r"\fi",
    ]
    return "\n".join(lines) + "\n"


def latex_document(*tables: str, two_column: bool = False) -> str:
    """A minimal article around generated tables: what a test compiles and a user can start from."""
    packages = "\n".join(rf"\usepackage{{{p}}}" for p in LATEX_PACKAGES)
    body = "\n".join(tables)
    options = "[twocolumn]" if two_column else ""
    return f"\\documentclass{options}{{article}}\n{packages}\n\\begin{{document}}\n{body}\n\\end{{document}}\n"
