#!/usr/bin/env python3
"""A results store of a few hundred rows covering every table layout, and the reports it gives (seeded).

    python tests/data/report_golden/data.py           # rewrite expected/ with this checkout's rmaunet

Studies, each its own kind: a search of 240 trials (some with two seeds, some without a
validation value), a one-factor table of 30 rows over 3 seeds (NaN metrics, a row on fewer
seeds, a difference without variance), a ladder, a threshold table, a cross-dataset table of
one-seed rows with per-tile counts, and a one-factor table of one-seed rows with per-tile
counts (bootstrap intervals, some by region). Also a hand-typed CSV table in which seeds
repeat (a rerun typed twice). expected/<study>/ holds table.md, table.tex and README.md as
`rmaunet report --no-figures` wrote them before the tables were computed column-wise
(commit fddc509): the test compares today's output with them byte for byte.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
REPORT_FILES = ("table.md", "table.tex", "README.md")


def _scores(counts: np.ndarray) -> dict[str, float]:
    """f1, iou, precision and recall of counts summed over tiles (the split's own scoring)."""
    tp, fp, fn = (float(v) for v in counts.sum(axis=0))
    return {
        "f1": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
    }


def _row(study: str, kind: str, row: str, row_index: int, seed: int, f1: float, **extra: Any) -> dict[str, Any]:
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
        "threshold_protocol": "tuned",
        "selection_metric": "f1",
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
        "best_epoch": 2,
        "wall_s": 120.0 + row_index,
        "gpu_hours": 0.0,
        "history": json.dumps([{"epoch": e, "loss": 1.0 / e, "val_f1": f1 * e / 3} for e in (1, 2, 3)]),
        "steps": "[]",
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


def store_rows(seed: int = 0) -> list[dict[str, Any]]:
    """Every row of the store (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    # A search: one trial per configuration, a few with a second seed, a few without validation.
    for i in range(240):
        lr = float(10 ** rng.uniform(-4, -2))
        attention = str(rng.choice(["se", "cbam", "mha"]))
        alpha = float(rng.uniform(0.1, 0.9))
        label = f"attention={attention}, learning_rate={lr:.3g}, alpha={alpha:.3g}"
        for s in (0, 1) if i % 20 == 3 else (0,):
            f1 = float(rng.uniform(0.4, 0.8))
            rows.append(
                _row(
                    "golden_search",
                    "search",
                    label,
                    i,
                    s,
                    f1,
                    val_f1=float("nan") if i % 37 == 5 else float(rng.uniform(0.4, 0.8)),
                    cfg_learning_rate=lr,
                    cfg_attention=attention,
                    cfg_loss_params=json.dumps({"alpha": alpha}),
                    finished_at=f"2026-01-01T{i // 60:02d}:{i % 60:02d}:{s:02d}",
                )
            )
    # One factor over three seeds: NaN cells, a row on fewer seeds, a shift without variance.
    base = rng.uniform(0.55, 0.65, size=3)
    for i in range(30):
        shift = rng.normal(0, 0.03, size=3) if i % 7 else np.full(3, 0.01 * (i // 7))
        for s in (0, 1) if i == 11 else (0, 1, 2):
            extra: dict[str, Any] = {"test_miou": float("nan")} if (i == 13 or (i == 17 and s == 2)) else {}
            rows.append(_row("golden_table", "table", f"variant {i}", i, s, float(base[s] + shift[s]), **extra))
    # A ladder: each row adds one technique.
    steps = ["Combined loss", "23 band data", "Res-Conv", "Multi-head attention", "Multiple heads", "Threshold"]
    for i in range(len(steps) + 1):
        label = " + ".join(steps[:i]) or "Baseline"
        for s in (0, 1):
            f1 = 0.6 + 0.01 * i + float(rng.normal(0, 0.005))
            rows.append(_row("golden_ladder", "ladder", label, i, s, f1, steps=json.dumps(steps[:i])))
    # A threshold table: None, then 0.1 ... 0.9, three seeds, all of one training per seed.
    for threshold in [None, *np.round(np.arange(0.1, 1.0, 0.1), 1).tolist()]:
        for s in (0, 1, 2):
            f1 = 0.7 - (0.0 if threshold is None else abs(threshold - 0.4) / 4) + float(rng.normal(0, 0.004))
            rows.append(
                _row(
                    "golden_threshold",
                    "threshold",
                    "None" if threshold is None else str(threshold),
                    0,
                    s,
                    f1,
                    threshold=float("nan") if threshold is None else threshold,
                    trial_id=f"threshold-{s}",
                    val_f1=f1 + float(rng.normal(0, 0.004)),
                )
            )
    # Per-tile counts: a cross-dataset table and a one-factor table of one-seed rows.
    for study, kind, count in (("golden_datasets", "table", 6), ("golden_tiles", "table", 20)):
        for i in range(count):
            tiles = int(rng.integers(20, 60))
            counts = np.stack(
                [rng.integers(0, 400, tiles), rng.integers(0, 150, tiles), rng.integers(0, 150, tiles)], axis=1
            )
            scores = _scores(counts)
            extra = {
                "test_tile_counts": json.dumps(counts.tolist()),
                "test_tile_groups": json.dumps([f"region {k % 5}" for k in range(tiles)] if i % 3 == 1 else []),
                **{f"test_{m}": v for m, v in scores.items()},
            }
            if study == "golden_datasets":
                dataset = ("landslide4sense", "bijie", "nepal")[i % 3]
                extra |= {"cfg_dataset": dataset, "cfg_task": "segmentation+detection" if i % 2 else "segmentation"}
                extra |= {f"test_det_{m}": float(rng.uniform(0.8, 1.0)) for m in ("f1", "accuracy", "precision")}
                extra["test_det_recall"] = float(rng.uniform(0.8, 1.0))
            rows.append(_row(study, kind, f"model {i}", i, 0, scores["f1"], **extra))
    return rows


def typed_table(path: Path, seed: int = 1) -> Path:
    """A hand-typed CSV of one-factor rows whose seeds repeat (a rerun typed in twice)."""
    rng = np.random.default_rng(seed)
    lines = ["row,seed,test_f1,test_miou"]
    for i in range(12):
        for s in (0, 0, 1, 1, 2) if i % 4 == 1 else (0, 1, 2):
            f1 = 0.6 + 0.01 * i + float(rng.normal(0, 0.01))
            lines.append(f"config {i},{s},{f1!r},{f1 - 0.07!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_store(root: Path) -> Path:
    from rmaunet.store import ResultsStore

    results = ResultsStore(root)
    for record in store_rows():
        results.write_row(record)
    return root


def write_reports(work: Path) -> Path:
    """The reports of the store and of the typed table, as `rmaunet report --no-figures` writes them."""
    from rmaunet.cli import main

    out = work / "reports"
    for source in (write_store(work / "store"), typed_table(work / "golden_typed.csv")):
        if main(["report", str(source), "--reports", str(out), "--no-figures"]) != 0:
            raise SystemExit(f"rmaunet report {source} failed")
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        reports = write_reports(Path(tmp))
        shutil.rmtree(EXPECTED, ignore_errors=True)
        for study in sorted(p.name for p in reports.iterdir()):
            (EXPECTED / study).mkdir(parents=True)
            for name in REPORT_FILES:
                shutil.copyfile(reports / study / name, EXPECTED / study / name)
    print(f"wrote {EXPECTED}", file=sys.stderr)
