"""Results rows for the reporting tests, shaped like `ResultsStore.read()` output (no tests here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rmaunet.reporting.stats import BOOTSTRAP_METRICS, tile_score

SEEDS = (0, 1, 2)


def result_row(study: str, kind: str, row: str, row_index: int, seed: int, f1: float, **extra: Any) -> dict[str, Any]:
    """One stored row: validation metrics a little above test (what selection on val looks like)."""
    record: dict[str, Any] = {
        "study": study,
        "kind": kind,
        "row": row,
        "row_index": row_index,
        "seed": seed,
        "trial_id": f"{study}-{row_index}-{seed}",
        "status": "ok",
        "reason": "",
        "threshold": 0.5,
        "test_f1": f1,
        "test_miou": f1 - 0.07,
        "test_iou": f1 - 0.2,
        "test_precision": f1 - 0.03,
        "test_recall": f1 + 0.04,
        "val_f1": f1 + 0.01,
        "val_miou": f1 - 0.06,
        "test_det_f1": float("nan"),
        "test_det_accuracy": float("nan"),
        "test_det_precision": float("nan"),
        "test_det_recall": float("nan"),
        "epochs_run": 3,
        "wall_s": 120.0,
        "gpu_hours": 0.25,
        "history": json.dumps([{"epoch": e, "loss": 1.0 / e, "val_f1": f1 * e / 3} for e in (1, 2, 3)]),
        "steps": json.dumps([]),
        "data_fingerprint": "fp0123456789abcdef",
        "git_commit": "c0ffee1234567890",
        "accelerator": "CPU",
        "cfg_dataset": "landslide4sense",
        "cfg_task": "segmentation",
        "cfg_seed": seed,
        "cfg_threshold": 0.5,
    }
    record.update(extra)
    return record


def table_rows(
    f1s: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    *,
    study: str = "paper_table4_losses",
    kind: str = "table",
    seeds: Sequence[int] = SEEDS,
    **extra: Any,
) -> pd.DataFrame:
    """One table row per entry of `f1s` (its test F1 on each seed)."""
    labels = labels or [f"row {i}" for i in range(len(f1s))]
    records = [
        result_row(
            study,
            kind,
            label,
            i,
            seed,
            f1,
            **({"threshold": _threshold(label)} if kind == "threshold" else {}),
            **extra,
        )
        for i, (label, values) in enumerate(zip(labels, f1s))
        for seed, f1 in zip(seeds, values)
    ]
    return pd.DataFrame(records)


def _threshold(label: str) -> float:
    """A threshold study's label is its threshold; "None" (no thresholding) is NaN."""
    try:
        return float(label)
    except ValueError:
        return float("nan")


def with_tile_counts(rows: pd.DataFrame, tiles: int = 40, seed: int = 0) -> pd.DataFrame:
    """Per-tile [tp, fp, fn] for every row, and its pixel metrics recomputed from them (as a trial stores them)."""
    rng = np.random.default_rng(seed)
    rows = rows.copy()
    lists = []
    for i in range(len(rows)):
        tp = rng.integers(0, 400, tiles)
        counts = np.stack([tp, rng.integers(0, 100 + 30 * i, tiles), rng.integers(0, 100 + 30 * i, tiles)], axis=1)
        lists.append(counts)
        for metric in BOOTSTRAP_METRICS:
            rows.loc[rows.index[i], f"test_{metric}"] = tile_score(counts, metric)
    rows["test_tile_counts"] = [json.dumps(c.tolist()) for c in lists]
    rows["test_tiles"] = tiles
    return rows


def capture_figures(monkeypatch: Any) -> dict[str, Any]:
    """Every figure the report saves from now on, by file name, as it was when saved."""
    from rmaunet.reporting import plots

    figures: dict[str, Any] = {}
    save = plots._save

    def keep(fig: Any, base: Any, *args: Any, **kwargs: Any) -> Any:
        figures[base.name] = fig
        return save(fig, base, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def int_ticks(axis: Any) -> bool:
    """The axis, once drawn, has two or more ticks, all at whole numbers."""
    axis.figure.canvas.draw()
    ticks = axis.get_majorticklocs()
    return len(ticks) > 1 and bool(np.allclose(ticks, np.round(ticks)))
