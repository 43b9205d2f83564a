"""bench/overhead.py runs end to end (tiny size) and prints the figures issue 5 asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_overhead_benchmark_prints_its_figures_on_the_last_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "overhead.py"),
            "--epochs",
            "2",
            "--rounds",
            "1",
            "--tiles",
            "60",
            "--size",
            "32",
            "--base-filters",
            "4",
            "--depth",
            "2",
            "--keep",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["throughput_ratio"] > 0 and summary["throughput_ratio_mean"] > 0
    assert summary["startup_s"] > 0  # a platform trial starts processes a bare fit does not
    assert len(summary["bare_epoch_images_per_s"]) == 2 and len(summary["platform_epoch_images_per_s"]) == 1
    assert all(len(run) == 2 for run in summary["platform_epoch_images_per_s"])
    # Each platform run trained in a fresh folder of its own: its history is complete.
    history = json.loads((tmp_path / "work" / "overhead_w1_run0" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
