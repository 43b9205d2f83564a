"""The results store: one Parquet row per (study, row, seed), written atomically.

The crossing point between the study engine (which writes rows) and reporting (which
reads them); neither imports the other. Layout under a storage folder:

    trials/<trial_id>/           one trained trial (rmaunet.trial_folder.TrialFolder)
    rows/<study>/<key>.parquet   one results row each (see COLUMNS)

Each row is its own file, written to a temporary name and renamed into place
(rmaunet.atomic), so many trials finishing at once never lose or tear a row, a crash
leaves either the old file or the new one, and readers skip temporary files. `read()`
gathers the rows into one DataFrame; `export()` writes that as a single Parquet file for
pandas / pyarrow users.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rmaunet import atomic
from rmaunet.errors import StoreError
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "ResultsStore",
    "store_root",
    "COLUMNS",
    "METRIC_NAMES",
    "DETECTION_METRIC_NAMES",
    "CONFIG_PREFIX",
    "safe_name",
]

METRIC_NAMES = ("precision", "recall", "f1", "iou", "miou")
DETECTION_METRIC_NAMES = ("accuracy", "precision", "recall", "f1")
CONFIG_PREFIX = "cfg_"

# The documented schema (README, "Results store"). Config fields follow as cfg_<field>.
COLUMNS: dict[str, str] = {
    "study": "study name (the spec's `name`)",
    "kind": "table | ladder | loco | threshold | search",
    "row": "row label as printed in the table",
    "row_index": "position of the row in the spec (table order)",
    "seed": "training seed",
    "trial_id": "hash of the training config, seed and data fingerprint (shared across studies)",
    "config_hash": "TrialConfig.training_hash (config and seed, without the data)",
    "status": "ok | failed",
    "reason": "why a failed trial failed (empty when ok)",
    "threshold": "decision threshold the metrics below were computed at",
    "threshold_protocol": "tuned (chosen per trial on validation by selection_metric) | fixed (the config's value)",
    "selection_metric": "validation metric that selected the checkpoint and a tuned threshold (f1, miou, …)",
    "chosen_threshold": "threshold study: the one chosen on validation; else the row's own threshold",
    "det_threshold": "detection head's threshold, chosen on validation by image-level F1 (NaN without a head)",
    "test_tiles": "number of test tiles",
    "test_tile_counts": "JSON list of [tp, fp, fn] per test tile at the row's threshold (tile bootstrap)",
    "threshold_curve": "JSON list of {threshold, val_<metric>, test_<metric>} over rmaunet.thresholds.GRID",
    **{f"val_{m}": f"validation {m} (0-1)" for m in METRIC_NAMES},
    **{f"test_{m}": f"test {m} (0-1), computed once per trial" for m in METRIC_NAMES},
    **{
        f"val_det_{m}": f"validation image-level detection {m} (NaN without a detection head)"
        for m in DETECTION_METRIC_NAMES
    },
    **{
        f"test_det_{m}": f"test image-level detection {m} (NaN without a detection head)"
        for m in DETECTION_METRIC_NAMES
    },
    "epochs_run": "epochs trained",
    "best_epoch": "epoch whose weights were kept (best validation selection metric)",
    "wall_s": "wall time of the training in seconds",
    "gpu_hours": "GPU-hours of the training (0 on CPU)",
    "reused": "true when the training was done earlier (another study or run) and only reused here",
    "images_per_s": "steady-state training throughput",
    "params": "trainable and non-trainable parameters of the model",
    "flops_per_image": "forward-pass FLOPs per image (a multiply-add counts 2)",
    "history": "JSON list of per-epoch dicts (epoch, loss, val_*, images_per_s, epoch_s)",
    "steps": "JSON list of the techniques switched on in this row (ladder / loco)",
    "data_fingerprint": "hash of the dataset files",
    "git_commit": "commit of the code that trained it",
    "versions": "JSON dict of package versions",
    "node": "host that trained it",
    "accelerator": "CPU or the GPU model",
    "finished_at": "UTC ISO time the row was written",
}


def safe_name(text: str, default: str = "row") -> str:
    """`text` as one harmless path component: no separators, no leading dot ("..", ".tmp-")."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")[:60]
    return slug or default


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def store_root(storage: Path | str) -> Path:
    """The store's folder. An object-store URI is refused rather than taken for a relative
    folder named "s3:" (which every node would have its own, unseen copy of)."""
    if isinstance(storage, str) and _URI.match(storage):
        raise StoreError(
            f"{storage}: object-store URIs are not supported as a results store yet; "
            "use a folder every node mounts (NFS, EFS, Filestore)"
        )
    return Path(storage)


class ResultsStore:
    def __init__(self, root: Path | str) -> None:
        self.root = store_root(root)

    # ------------------------------------------------------------------ trials
    def trial(self, trial_id: str) -> TrialFolder:
        if safe_name(trial_id, default="") != trial_id:
            raise StoreError(f"{self.root}: {trial_id!r} is not a trial id")
        return TrialFolder(self.root / "trials" / trial_id)

    def finished_trial(self, trial_id: str) -> dict[str, Any] | None:
        """The stored result of a completed trial, or None when it must (re)run."""
        return self.trial(trial_id).read_result()

    # ------------------------------------------------------------------ rows
    def row_path(self, study: str, row: str, seed: int, threshold: float | None = None) -> Path:
        key = f"{study}\0{row}\0{seed}\0{threshold}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.root / "rows" / safe_name(study, "study") / f"{safe_name(row)}__s{seed}__{digest}.parquet"

    def row_path_for(self, row: dict[str, Any]) -> Path:
        missing = [c for c in ("study", "row", "seed") if c not in row]
        if missing:
            raise StoreError(f"{self.root}: results row lacks {', '.join(missing)}")
        threshold = row.get("threshold") if row.get("kind") == "threshold" else None
        return self.row_path(row["study"], row["row"], int(row["seed"]), threshold)

    def write_row(self, row: dict[str, Any]) -> Path:
        table = pa.Table.from_pylist([_plain(row)])
        return atomic.atomic_write(self.row_path_for(row), lambda tmp: pq.write_table(table, tmp))

    def read(self, study: str | None = None) -> pd.DataFrame:
        base = self.root / "rows"
        folders: Iterable[Path] = (
            [base / safe_name(study, "study")] if study else sorted(base.glob("[!.]*")) if base.is_dir() else []
        )
        frames = []
        for folder in folders:
            atomic.sweep(folder)  # a killed writer's leftovers, once they are old
            for path in sorted(folder.glob("[!.]*.parquet")):  # never an in-flight temporary file
                try:
                    frames.append(pq.read_table(path).to_pandas())
                except FileNotFoundError:
                    continue  # replaced between the listing and the read: the new file is listed next time
                except (OSError, pa.ArrowInvalid) as exc:
                    raise StoreError(f"{path}: unreadable results row ({exc})") from None
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        df = _one_type_per_column(pd.concat(frames, ignore_index=True))
        if study:
            df = df[df["study"] == study]
        sort = [c for c in ("study", "row_index", "seed", "threshold") if c in df.columns]
        return df.sort_values(sort, kind="stable").reset_index(drop=True)

    def export(self, path: Path | str, study: str | None = None) -> Path:
        """All rows (of one study) as one Parquet file, written atomically."""
        rows = self.read(study)
        return atomic.atomic_write(Path(path), lambda tmp: rows.to_parquet(tmp, index=False))


def _one_type_per_column(df: pd.DataFrame) -> pd.DataFrame:
    """Rows written by different versions may hold text in one row and numbers in another
    (cfg_threshold: 0.5 or "tuned"); such a column becomes text, so the frame exports."""
    for column in [c for c in df.columns if df[c].dtype == object]:
        present = df[column].notna()
        kinds = {type(v) for v in df.loc[present, column]}
        if str in kinds and len(kinds) > 1:
            df.loc[present, column] = df.loc[present, column].map(str)
    return df


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Nested values (dicts, lists) become JSON strings so every column is a scalar."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else v for k, v in row.items()}
