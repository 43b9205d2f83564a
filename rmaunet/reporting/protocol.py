"""What a table's caption and notes may say about how its numbers were made, read from the rows.

A sentence is written only when a column backs it: rows from the study engine record the
threshold protocol, the chosen epoch, the number of test tiles; a results table typed in
from a paper records none of that, and its caption then claims nothing about selection.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["split_caption", "protocol_notes", "metric_notes", "METRIC_LABELS", "metric_label"]

METRIC_LABELS = {
    "f1": "F1",
    "miou": "mIoU",
    "iou": "IoU (landslide)",
    "precision": "Precision",
    "recall": "Recall",
    "accuracy": "Accuracy",
}
_PIXEL_METRICS = ("f1", "precision", "recall", "iou")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _numbers(rows: pd.DataFrame, column: str) -> pd.Series:
    if column not in rows.columns:
        return pd.Series(dtype=float)
    return pd.to_numeric(rows[column], errors="coerce").dropna()


def _span(values: pd.Series, fmt: str = "{:g}") -> str:
    """ "0.5" for one value, "0.4–0.6" for several."""
    low, high = float(values.min()), float(values.max())
    return fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"


def _seeds_per_row(rows: pd.DataFrame) -> str:
    counts = rows.groupby(rows["row"].astype(str))["seed"].nunique()
    low, high = int(counts.min()), int(counts.max())
    if high == 1:
        return "one training seed per row"
    return f"{low if low == high else f'{low}–{high}'} training seeds per row"


def split_caption(rows: pd.DataFrame) -> str:
    """ "Test split (760 tiles), metrics in %; 3 training seeds per row": what every table shows.

    The seed count is stated only for rows the engine wrote (they carry a `trial_id`); a
    typed-in table's seed column is a default, not a record.
    """
    text = "Test split"
    tiles = _numbers(rows, "test_tiles")
    if len(tiles):
        text += f" ({_span(tiles, '{:.0f}')} tiles)"
    text += ", metrics in %"
    if "trial_id" in rows.columns and "seed" in rows.columns and len(rows):
        text += f"; {_seeds_per_row(rows)}"
    return text


def protocol_notes(rows: pd.DataFrame) -> list[str]:
    """The decision threshold, detection threshold and checkpoint as the rows record them."""
    notes = []
    threshold = _threshold_note(rows)
    if threshold:
        notes.append(threshold)
    det = _numbers(rows, "det_threshold")
    if len(det):
        notes.append(f"Detection threshold: chosen per trial on validation by detection F1 ({_span(det)}).")
    best = _numbers(rows, "best_epoch")
    best = best[best > 0]  # 0: a failed trial that never chose an epoch
    if len(best):
        epochs = _numbers(rows, "epochs_run")
        of = f" of {_span(epochs, '{:.0f}')}" if len(epochs) else ""
        notes.append(f"Weights: each trial's epoch chosen on validation (epoch {_span(best, '{:.0f}')}{of}).")
    return notes


def _threshold_note(rows: pd.DataFrame) -> str:
    if "threshold_protocol" not in rows.columns:
        return ""  # not recorded (older rows, typed-in tables): say nothing about how it was chosen
    protocol = rows["threshold_protocol"].fillna("").astype(str).str.strip().str.lower()
    parts = []
    tuned = rows[protocol == "tuned"]
    if len(tuned):
        by = ""
        if "selection_metric" in tuned.columns:
            names = [m for m in dict.fromkeys(tuned["selection_metric"].dropna().astype(str)) if m]
            if names:
                by = " by validation " + " / ".join(metric_label(m.removeprefix("val_")) for m in names)
        values = _numbers(tuned, "threshold")
        used = f" (values used: {_span(values)})" if len(values) else ""
        parts.append(f"chosen per trial on validation{by}{used}")
    fixed = rows[protocol == "fixed"]
    if len(fixed):
        values = _numbers(fixed, "threshold")
        parts.append(f"fixed at {_span(values)}, not tuned" if len(values) else "fixed, not tuned")
    if not parts:
        return ""
    if len(tuned) and len(fixed):
        labels = {
            name: ", ".join(dict.fromkeys(group["row"].astype(str)))
            for name, group in (("tuned", tuned), ("fixed", fixed))
        }
        return f"Decision threshold: {parts[0]} for {labels['tuned']}; {parts[1]} for {labels['fixed']}."
    return f"Decision threshold: {parts[0]}."


def metric_notes(metrics: Sequence[str], *, detection: bool = False) -> list[str]:
    """Definitions of the metrics a table shows (metrics.py computes them this way)."""
    notes = []
    pixel = [metric_label(m) for m in metrics if m in _PIXEL_METRICS]
    if pixel:
        names = pixel[0] if len(pixel) == 1 else ", ".join(pixel[:-1]) + " and " + pixel[-1]
        notes.append(f"{names}: of the landslide class, from pixel counts summed over the test split.")
    if "miou" in metrics:
        notes.append(
            "mIoU: mean of the landslide and background IoU; not comparable with the mIoU of the RMAU-NET paper."
        )
    if detection:
        notes.append("Detection: per image; an image is a landslide image when any pixel of its mask is.")
    return notes
