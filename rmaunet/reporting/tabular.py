"""The layout-neutral table that both renderers (Markdown, LaTeX) draw.

Builders in `tables.py` decide what each cell says (numbers already formatted, bold
chosen); the renderers only decide how it looks in their format, so a Markdown table
and its LaTeX twin can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Cell", "Table", "HeaderGroup"]


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    italic: bool = False
    mark: str = ""  # a superscript after the text, e.g. "*" for a significant p-value


@dataclass(frozen=True)
class HeaderGroup:
    """A label spanning `span` columns above the header row (Table XI's task blocks)."""

    label: str
    span: int


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)  # printed under the table, one sentence each
    # Longer explanations (definitions, unadjusted p-values): under the Markdown table; in the
    # LaTeX float only as comments, so the printed notes stay short.
    details: list[str] = field(default_factory=list)
    groups: list[HeaderGroup] = field(default_factory=list)  # empty, or spans summing to len(header)
    align: str = ""  # one of l / c / r per column; default: first column left, others right
    rule_before: set[int] = field(default_factory=set)  # row indices that start a new block (a midrule)

    def __post_init__(self) -> None:
        if not self.align:
            self.align = "l" + "r" * (len(self.header) - 1)
        if len(self.align) != len(self.header):
            raise ValueError(f"align {self.align!r} does not match {len(self.header)} columns")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"row {i} has {len(row)} cells for {len(self.header)} columns")
        if self.groups and sum(g.span for g in self.groups) != len(self.header):
            raise ValueError("header groups must span every column")

    def column(self, name: str) -> list[Cell]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]
