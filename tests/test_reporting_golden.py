"""Reports of a few hundred rows in every layout print exactly what the row-by-row tables printed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "report_golden"


def _golden_module():
    spec = importlib.util.spec_from_file_location("report_golden_data", GOLDEN / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _golden_module().write_reports(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", _golden_module().REPORT_FILES)
def test_reports_match_the_golden_files_byte_for_byte(reports: Path, name: str) -> None:
    # Means, stds, p-values, bootstrap intervals, bold and order: one changed digit fails.
    expected = sorted(p.name for p in (GOLDEN / "expected").iterdir())
    assert sorted(p.name for p in reports.iterdir()) == expected
    for study in expected:
        assert (reports / study / name).read_bytes() == (GOLDEN / "expected" / study / name).read_bytes(), study
