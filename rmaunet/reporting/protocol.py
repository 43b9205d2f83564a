"""What a table's caption and notes may say about how its numbers were made, read from the rows.

A sentence is written only when a column backs it: rows from the study engine record the
threshold protocol, the chosen epoch, the number of test tiles; a results table typed in
from a paper records none of that, and its caption then claims nothing about selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from rmaunet.config import DEEPLAB_RATES, TUNED, aspp_rates, aspp_too_small
from rmaunet.datasets import DATASET_INFO
from rmaunet.reporting.stats import SIGNIFICANCE_LEVEL, PairedTest, detectable_difference
from rmaunet.thresholds import GRID

__all__ = [
    "split_caption",
    "protocol_notes",
    "metric_notes",
    "significance_notes",
    "METRIC_LABELS",
    "metric_label",
]

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
    """The decision threshold, detection threshold, checkpoint, splits and backbone caveats
    as the rows record them."""
    notes = []
    threshold = _threshold_note(rows)
    if threshold:
        notes.append(threshold)
    det = _numbers(rows, "det_threshold")
    if len(det):
        fixed = "cfg_det_threshold" in rows.columns and (rows["cfg_det_threshold"].astype(str) != TUNED).all()
        how = "fixed" if fixed else "chosen per trial on validation by detection F1"
        notes.append(f"Detection threshold: {how} ({_span(det)}).")
    notes += _epoch_notes(rows) + _schedule_notes(rows) + _split_notes(rows) + _backbone_notes(rows)
    return notes


def _schedule_notes(rows: pd.DataFrame) -> list[str]:
    """The learning-rate schedule when a row decays it (rmaunet.config.learning_rate_at):
    why a trial's late epochs change little. Nothing for the constant rate of the paper."""
    if "cfg_lr_schedule" not in rows.columns:
        return []
    cosine = rows[rows["cfg_lr_schedule"].astype(str) == "cosine"]
    if cosine.empty:
        return []
    who = "" if len(cosine) == len(rows) else " for " + ", ".join(dict.fromkeys(cosine["row"].astype(str)))
    start = _span(_numbers(cosine, "cfg_learning_rate"))
    return [f"Learning rate: {start} in the first epoch, cosine-decayed towards 0 after the last{who}."]


def _epoch_notes(rows: pd.DataFrame) -> list[str]:
    """Which epoch each trial kept and at which threshold it was judged, per row group: a
    fixed-threshold row keeps the epoch best at its threshold, a tuned one the epoch best
    over the grid (rmaunet.training.evaluation.best_over_thresholds)."""
    best = _numbers(rows, "best_epoch")
    best = best[best > 0]  # 0: a failed trial that never chose an epoch
    if not len(best):
        return []
    epochs = _numbers(rows, "epochs_run")
    of = f" of {_span(epochs, '{:.0f}')}" if len(epochs) else ""
    by = _selection_label(rows)
    head = f"Weights: each trial's epoch chosen on validation{by} (epoch {_span(best, '{:.0f}')}{of})"
    if "cfg_threshold" not in rows.columns:
        return [head + "."]
    tuned = rows["cfg_threshold"].astype(str) == TUNED
    groups = {}
    if tuned.any():
        groups[f"judged at its best threshold of the {GRID[0]:g}–{GRID[-1]:g} grid"] = rows[tuned]
    if (~tuned).any():
        fixed = rows[~tuned]
        groups[f"judged at its fixed threshold ({_span(_numbers(fixed, 'cfg_threshold'))})"] = fixed
    if len(groups) == 1:
        return [f"{head}, {next(iter(groups))}."]
    parts = "; ".join(f"{rule} for {', '.join(dict.fromkeys(g['row'].astype(str)))}" for rule, g in groups.items())
    return [f"{head}: {parts}."]


def _selection_label(rows: pd.DataFrame, prefix: str = " by ") -> str:
    """ " by F1": the selection metric the rows record (nothing when they record none)."""
    if "selection_metric" not in rows.columns:
        return ""
    names = [m for m in dict.fromkeys(rows["selection_metric"].dropna().astype(str)) if m]
    return prefix + " / ".join(metric_label(m.removeprefix("val_")) for m in names) if names else ""


def _split_notes(rows: pd.DataFrame) -> list[str]:
    """Whether test tiles are independent of training tiles: only rows from the engine say."""
    if "trial_id" not in rows.columns:
        return []
    groups = rows["cfg_split_groups"].dropna().astype(str) if "cfg_split_groups" in rows.columns else []
    groups = [g for g in dict.fromkeys(groups) if g and g != "None"]
    if groups:
        return [f"Splits: whole regions held out (tiles grouped by {', '.join(groups)}); intervals resample regions."]
    return [
        "Splits: random per tile, as in the paper; tiles of one scene may fall in several splits, so test tiles "
        "are not independent of training tiles."
    ]


def _backbone_notes(rows: pd.DataFrame) -> list[str]:
    """DeepLab-V3's ASPP rates on this table's inputs, and when they are too small for them."""
    if "cfg_backbone" not in rows.columns:
        return []
    deeplab = rows[rows["cfg_backbone"].astype(str) == "deeplabv3"]
    sizes = sorted({s for s in map(_input_size, deeplab.to_dict("records")) if s})
    notes = []
    for size in sizes:
        rates = ", ".join(map(str, aspp_rates(size)))
        published = ", ".join(map(str, DEEPLAB_RATES))
        text = f"DeepLab-V3: ASPP rates {rates} (the published {published} scaled to {size}-px inputs)"
        if aspp_too_small(size):
            text += f"; {size} px is too small for distinct rates: not the published multi-scale context"
        notes.append(text + ".")
    return notes


def _input_size(row: dict) -> int | None:
    crop = pd.to_numeric(pd.Series([row.get("cfg_crop")]), errors="coerce").iloc[0]
    if not math.isnan(crop):
        return int(crop)
    info = DATASET_INFO.get(str(row.get("cfg_dataset")))
    return info.tile_size if info is not None else None


def _threshold_note(rows: pd.DataFrame) -> str:
    if "threshold_protocol" not in rows.columns:
        return ""  # not recorded (older rows, typed-in tables): say nothing about how it was chosen
    if "kind" in rows.columns and (rows["kind"].astype(str) == "threshold").all():
        values = _numbers(rows, "threshold")
        listed = f" ({', '.join(f'{v:g}' for v in sorted(set(values)))})" if len(values) else ""
        return (
            f"Decision threshold: each row applies one fixed candidate{listed} to the same trained models; "
            "none is tuned per row."
        )
    protocol = rows["threshold_protocol"].fillna("").astype(str).str.strip().str.lower()
    parts = []
    tuned = rows[protocol == "tuned"]
    if len(tuned):
        values = _numbers(tuned, "threshold")
        used = f" (values used: {_span(values)})" if len(values) else ""
        parts.append(f"chosen per trial on validation{_selection_label(tuned, ' by validation ')}{used}")
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


def significance_notes(metric: str, tests: Sequence[PairedTest]) -> list[str]:
    """What the p column can and cannot say: the smallest difference these seeds could detect
    after correction, from the spread they showed, and what "no variance" means."""
    notes = []
    with_p = [t for t in tests if not t.no_variance]  # what Holm corrects over
    d = detectable_difference(with_p)
    if not math.isnan(d):
        n, m = min(t.n_shared for t in with_p), len(with_p)
        after = f" after correction for {m} comparisons" if m > 1 else ""
        notes.append(
            f"With n = {n} seeds and the spread observed here, only a difference above {100 * d:.2f} "
            f"{metric_label(metric)} points could reach p < {SIGNIFICANCE_LEVEL:g}{after}; "
            "not significant means not detected, not no effect."
        )
    if any(t.no_variance for t in tests):
        notes.append("No variance: the same difference on every seed, so no t-test (and no evidence either way).")
    return notes


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
