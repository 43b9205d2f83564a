"""GitHub-flavoured Markdown rendering of a `Table`."""

from __future__ import annotations

import re

from rmaunet.reporting.tabular import Cell, Table

__all__ = ["render_markdown", "markdown_escape"]

# Characters that would end a cell (|) or start emphasis / code / HTML inside one.
_SPECIAL = re.compile(r"([\\|*_`<\[\]])")


def markdown_escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def _cell(cell: Cell) -> str:
    text = markdown_escape(cell.text)
    if cell.bold and text:
        text = f"**{text}**"
    if cell.italic and text:
        text = f"*{text}*"
    if cell.mark:  # GitHub renders <sup> as a superscript, as the LaTeX table prints it
        text += f"<sup>{markdown_escape(cell.mark)}</sup>"
    return text


def render_markdown(table: Table) -> str:
    """Caption line, the table, then its notes; GFM has no spanning headers, so a header group
    is folded into each column name it spans ("Detection: F1")."""
    names = list(table.header)
    if table.groups:
        i = 0
        for group in table.groups:
            for j in range(i, i + group.span):
                if group.label:
                    names[j] = f"{group.label}: {names[j]}"
            i += group.span
    rule = {"l": ":---", "c": ":---:", "r": "---:"}
    lines = []
    if table.caption:
        lines += [f"**{markdown_escape(table.caption)}**", ""]
    lines.append("| " + " | ".join(markdown_escape(n) for n in names) + " |")
    lines.append("|" + "|".join(rule[a] for a in table.align) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    for note in [*table.notes, *table.details]:  # one paragraph each: consecutive lines would merge into one
        lines += ["", markdown_escape(note)]
    return "\n".join(lines) + "\n"
