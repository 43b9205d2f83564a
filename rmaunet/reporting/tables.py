"""Paper-style tables from results rows (skeleton: one-factor tables, Markdown + LaTeX)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["one_factor_table", "to_markdown", "to_latex", "write_study_report"]

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}


def one_factor_table(rows: pd.DataFrame, metrics: tuple[str, ...] = ("f1", "miou"), split: str = "test") -> pd.DataFrame:
    """One line per row label (spec order): the metrics in percent (mean over seeds) and Δ F1."""
    ok = rows[rows["status"] == "ok"]
    cols = [f"{split}_{m}" for m in metrics]
    grouped = ok.groupby(["row_index", "row"], sort=True)[cols].mean().reset_index()
    table = pd.DataFrame({"Row": grouped["row"]})
    for m, c in zip(metrics, cols):
        table[_METRIC_LABELS.get(m, m)] = 100.0 * grouped[c].to_numpy()
    first = table.columns[1]
    table[f"Δ {first}"] = table[first] - table[first].iloc[0]
    table["n"] = ok.groupby(["row_index", "row"], sort=True).size().to_numpy()
    return table


_METRIC_LABELS = {"f1": "F1", "miou": "mIoU", "iou": "IoU", "precision": "Precision", "recall": "Recall"}


def _cells(table: pd.DataFrame, bold: callable) -> list[list[str]]:
    metric_cols = [c for c in table.columns if c not in ("Row", "n") and not c.startswith("Δ")]
    best = {c: table[c].max() for c in metric_cols}
    out = []
    for _, r in table.iterrows():
        line = []
        for c in table.columns:
            v = r[c]
            if c == "Row":
                line.append(str(v))
            elif c == "n":
                line.append(str(int(v)))
            elif c.startswith("Δ"):
                line.append(f"{v:+.2f}")
            else:
                text = f"{v:.2f}"
                line.append(bold(text) if v == best[c] else text)
        out.append(line)
    return out


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join(":---" if c == "Row" else "---:" for c in table.columns) + "|"
    body = ["| " + " | ".join(cells) + " |" for cells in _cells(table, lambda t: f"**{t}**")]
    return "\n".join([header, rule, *body]) + "\n"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text).replace("Δ", r"$\Delta$")


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for cells in _cells(table, lambda t: rf"\textbf{{{t}}}"):
        lines.append(" & ".join(_latex_escape(c) if i == 0 else c.replace("+", "+") for i, c in enumerate(cells)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_study_report(rows: pd.DataFrame, out_dir: Path | str, title: str = "") -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = one_factor_table(rows)
    paths = {"markdown": out / "table.md", "latex": out / "table.tex"}
    paths["markdown"].write_text(to_markdown(table))
    paths["latex"].write_text(to_latex(table, caption=title))
    return paths
