"""Results rows: what a finished (or stopped) training becomes in the results store.

One row per row label, seed and (for a threshold study) threshold; the column layout is
documented in rmaunet.store.COLUMNS. Metrics are computed from the trial's stored maps
at the row's threshold, so rows sharing one training are all scored in one pass.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from typing import Any

from rmaunet import thresholds as threshold_rules
from rmaunet.config import TUNED
from rmaunet.provenance import provenance
from rmaunet.store import CONFIG_PREFIX, DETECTION_METRIC_NAMES, METRIC_NAMES, ResultsStore
from rmaunet.studies.expand import PlannedRow
from rmaunet.studies.plan import StudyPlan, usable
from rmaunet.studies.spec import StudySpec

__all__ = ["RowWriter", "provenance", "gpu_count"]

Log = Callable[[str], None]


class RowWriter:
    """Turns finished trials into study rows and keeps the best validation score so far."""

    def __init__(self, spec: StudySpec, plan: StudyPlan, store: ResultsStore, log: Log) -> None:
        self.spec, self.plan, self.store, self.log = spec, plan, store, log
        self.provenance = provenance()
        self.metric = spec.select.removeprefix("val_")
        self.done: set[str] = set()
        self.best: tuple[float, str] | None = None

    def add(self, row: PlannedRow) -> None:
        """A row known only once it ran (a search's sampled configuration)."""
        self.plan.planned.append(row)

    def stopped_row(self, p: PlannedRow, last: dict[str, Any]) -> None:
        """A search trial that the scheduler stopped early: its last validation scores, no test."""
        epochs = int(last.get("epoch", 0))
        threshold = last.get("val_threshold", math.nan) if p.config.threshold == TUNED else p.config.threshold
        row = self._row(p, {"status": "stopped", "epochs_run": epochs}, {}, threshold, False)
        row["threshold_protocol"] = _protocol(p)
        row["reason"] = f"stopped by the scheduler after epoch {epochs}"
        for m in METRIC_NAMES:
            row[f"val_{m}"] = float(last.get(f"val_{m}", math.nan))
        self.store.write_row(row)

    def trial_done(self, tid: str, reused: bool = False) -> None:
        result = self.store.finished_trial(tid)
        if not usable(result):
            return
        self.done.add(tid)
        planned = [p for p in self.plan.planned if p.trial_id == tid]
        # Rows sharing this training (deduplicated configs) are scored in one pass per split.
        folder = self.store.trial(tid)
        ok = result["status"] == "ok"
        grid = threshold_rules.scores_at(folder, threshold_rules.GRID) if ok else {}
        # Each row's thresholds: a threshold study's list, else its config's decision.
        decided = {p: self._thresholds(p, folder, grid) if ok else (math.nan,) for p in planned}
        extra_thresholds = {t for ts in decided.values() for t in ts} - set(grid)
        scores = {**grid, **(threshold_rules.scores_at(folder, sorted(extra_thresholds)) if ok else {})}
        extra = {
            "det_threshold": _number(result.get("det_threshold")),
            "threshold_curve": threshold_rules.curve(grid, self.metric),
        }
        for p in planned:
            thresholds = decided[p]
            chosen = threshold_rules.choose_threshold({t: scores.get(t, {}) for t in thresholds}, self.metric)
            rows = [self._row(p, result, scores.get(t, {}), t, reused) for t in thresholds]
            for r in rows:
                r.update(extra)
                r["threshold_protocol"] = "fixed" if self.spec.kind == "threshold" else _protocol(p)
                r["test_tile_counts"] = threshold_rules.tile_counts(folder, "test", r["threshold"]) if ok else []
                r["test_tiles"] = len(r["test_tile_counts"])
                r["test_tile_groups"] = list(result.get("test_groups") or []) if ok else []
                # Threshold studies choose among their thresholds on validation only; other
                # rows were scored at their own (tuned on validation, or fixed) threshold.
                r["chosen_threshold"] = float(
                    chosen if chosen is not None and self.spec.kind == "threshold" else r["threshold"]
                )
                # A row already written from this training stays as it was (its finish time included).
                if not (reused and self.store.has_row(r)):
                    self.store.write_row(r)
            if ok and self.spec.kind != "threshold":
                value = rows[0][f"val_{self.metric}"]
                if self.best is None or value > self.best[0]:
                    self.best = (value, p.label)

    def _thresholds(self, p: PlannedRow, folder: Any, grid: dict[float, dict[str, float]]) -> tuple[float, ...]:
        """A threshold study's list; else the row config's own decision (rmaunet.thresholds.decide)."""
        if self.spec.kind == "threshold":
            return self.spec.thresholds
        return (float(threshold_rules.decide(folder, p.config, grid)["threshold"]),)

    def _row(
        self, p: PlannedRow, result: dict[str, Any], scores: dict[str, float], threshold: float, reused: bool
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "study": self.spec.name,
            "kind": self.spec.kind,
            "row": f"{threshold:g}" if self.spec.kind == "threshold" else p.label,
            "row_index": p.row_index,
            "seed": p.seed,
            "trial_id": p.trial_id,
            "config_hash": p.config.training_hash,
            "status": result["status"],
            "reason": result.get("reason", ""),
            "threshold": float(threshold),
            "chosen_threshold": float(threshold),
            "selection_metric": self.metric,
        }
        for split in ("val", "test"):
            for m in METRIC_NAMES:
                row[f"{split}_{m}"] = scores.get(f"{split}_{m}", math.nan)
            for m in DETECTION_METRIC_NAMES:
                row[f"{split}_det_{m}"] = result.get(f"{split}_det", {}).get(m, math.nan)
        accelerator = result.get("accelerator", "CPU")
        trained_s = float(result.get("wall_s", 0.0))
        row.update(
            {
                "epochs_run": int(result.get("epochs_run", 0)),
                "best_epoch": int(result.get("best_epoch", 0)),
                "wall_s": trained_s,
                # A data-parallel trial records rank 0's accelerator; every worker has its own.
                "gpu_hours": gpu_count(accelerator) * int(result.get("num_workers", 1)) * trained_s / 3600.0,
                "reused": reused,
                "images_per_s": float(result.get("images_per_s", math.nan)),
                "params": int(result.get("params", 0)),
                "flops_per_image": int(result.get("flops_per_image", 0)),
                "history": result.get("history", []),
                "steps": list(p.steps),
                "data_fingerprint": self.plan.fingerprints[p.config.dataset],
                "node": result.get("node", ""),
                "accelerator": accelerator,
                "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **self.provenance,
            }
        )
        for key, value in p.config.to_dict().items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True)
            elif key == "threshold":
                value = str(value)  # "tuned" or a number: one column type for every row of a study
            row[f"{CONFIG_PREFIX}{key}"] = value
        return row


def _protocol(p: PlannedRow) -> str:
    return TUNED if p.config.threshold == TUNED else "fixed"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def gpu_count(accelerator: str) -> int:
    """'2x NVIDIA H100' -> 2; 'CPU' -> 0 (the accelerator string a trial records)."""
    head = accelerator.split("x ", 1)[0]
    return int(head) if head.isdigit() else 0
