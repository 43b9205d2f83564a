"""Results rows -> the paper's tables (Markdown, LaTeX) and figures."""

from __future__ import annotations

from rmaunet.reporting.tables import write_study_report

__all__ = ["write_study_report"]
