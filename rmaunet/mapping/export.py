"""`rmaunet export`: a finished trial -> a model folder that maps landslides on its own.

The folder holds

    model.keras        the Keras 3 model (keras.saving.load_model after `import rmaunet.models`,
                       which registers the project's layers)
    preprocess.json    the input recipe (rmaunet.data.recipe), the row's decision threshold with
                       its protocol, the detection threshold, config, data fingerprint, commit,
                       and the row's validation and test metrics
    MODEL_CARD.md      what it is, the data it saw, its metrics and protocol, where it came from

Why `.keras` and no ONNX or SavedModel: the `.keras` file is Keras 3's own format, holds
the architecture with the weights and loads on any Keras 3 backend. ONNX through tf2onnx
would need a converter that follows TensorFlow releases from far behind and has no
mapping for custom layers (the attention blocks); a SavedModel is one line away for TF
Serving users (`keras.saving.load_model(...).export(DIR)`), so it is not kept twice.

The row is chosen from the results store: `--row LABEL` (its best seed on validation,
or `--seed`), or `--best`: the row with the best mean validation score over its seeds.
Test scores are reported, never used to choose.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rmaunet.errors import StoreError
from rmaunet.store import METRIC_NAMES, ResultsStore
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "choose_row",
    "export_model",
    "write_model_folder",
    "load_exported",
    "Exported",
    "MODEL_FILE",
    "PREPROCESS_FILE",
    "CARD_FILE",
]

MODEL_FILE = "model.keras"
PREPROCESS_FILE = "preprocess.json"
CARD_FILE = "MODEL_CARD.md"


def choose_row(
    rows: pd.DataFrame, study: str, row: str | None = None, seed: int | None = None, best: bool = False
) -> pd.Series:
    """The results row to export: by label (and seed), or the best on validation."""
    ok = rows[(rows["study"] == study) & (rows["status"] == "ok")] if not rows.empty else rows
    if ok.empty:
        raise StoreError(f"study {study!r}: no finished rows in the store")
    metric = f"val_{ok['selection_metric'].iloc[0]}"
    if best:
        means = ok.groupby("row", sort=False)[metric].mean()
        order = ok.groupby("row", sort=False)["row_index"].min()
        # Best mean validation score; ties go to the row listed first in the spec.
        label = min(means.index, key=lambda r: (-_finite(means[r]), order[r]))
        chosen = ok[ok["row"] == label]
    else:
        chosen = ok[ok["row"] == row]
        if chosen.empty:
            labels = ", ".join(dict.fromkeys(ok["row"]))
            raise StoreError(f"study {study!r}: no finished row {row!r} (rows: {labels})")
    if seed is not None:
        chosen = chosen[chosen["seed"] == seed]
        if chosen.empty:
            raise StoreError(f"study {study!r}: row {row!r} has no finished seed {seed}")
    chosen = chosen.assign(_score=[-_finite(v) for v in chosen[metric]]).sort_values(["_score", "seed"])
    return chosen.iloc[0].drop("_score")


def _finite(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else -math.inf


def _trial_files(store: ResultsStore, trial_id: str, scratch: Path) -> TrialFolder:
    """The trial's weights, config and preprocess.json as a local folder."""
    if store.root is not None:
        return store.trial(trial_id)
    remote = store.storage.child("trials", trial_id)
    folder = TrialFolder(scratch / trial_id).create()
    for name in (TrialFolder.BEST_WEIGHTS, TrialFolder.PREPROCESS, TrialFolder.RESULT):
        remote.download(name, folder.root / name)
    return folder


def export_model(
    store_where: Path | str,
    study: str,
    out: Path,
    *,
    row: str | None = None,
    seed: int | None = None,
    best: bool = False,
) -> Path:
    """Write the model folder `out` for one results row (see the module docstring)."""
    store = ResultsStore(store_where)
    chosen = choose_row(store.read(study), study, row, seed, best)
    trial_id = str(chosen["trial_id"])
    with tempfile.TemporaryDirectory(prefix="rmaunet-export-") as scratch:
        folder = _trial_files(store, trial_id, Path(scratch))
        recipe = folder.read_preprocess()
        if recipe is None:
            raise StoreError(
                f"trial {trial_id} ({study} / {chosen['row']}, seed {chosen['seed']}) was trained before trials kept "
                "their preprocessing (no preprocess.json): its normalisation statistics are lost; train it again "
                f"(remove {store.storage.uri_of('trials/' + trial_id)} and rerun the study)"
            )
        if not folder.best_weights.is_file():
            raise StoreError(f"trial {trial_id}: no {TrialFolder.BEST_WEIGHTS} in the store")
        model = _rebuild(recipe, folder.best_weights)
    meta = _export_meta(recipe, chosen, best)
    write_model_folder(out, model, meta)
    (out / CARD_FILE).write_text(model_card(meta, int(model.count_params())))
    return out


def write_model_folder(out: Path, model: Any, meta: dict[str, Any]) -> Path:
    """model.keras and preprocess.json: what `load_exported` and `rmaunet predict` read."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    (out / PREPROCESS_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return out


def _rebuild(recipe: dict[str, Any], weights: Path):  # noqa: ANN202 - keras.Model
    """The trial's model in float32 (a mixed-precision trial keeps float32 weights too)."""
    import keras

    from rmaunet.config import TrialConfig
    from rmaunet.models import build_model

    config = TrialConfig.from_dict(recipe["config"])
    inputs = recipe["inputs"]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_model(config, len(inputs["bands"]), int(inputs["tile_size"]))
        model.load_weights(weights)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def _export_meta(recipe: dict[str, Any], row: pd.Series, best: bool) -> dict[str, Any]:
    """The trial's preprocess.json with the exported row's own threshold and metrics (rows
    sharing one training may differ in a fixed threshold, which does not change training)."""
    metrics = {split: {m: float(row.get(f"{split}_{m}", math.nan)) for m in METRIC_NAMES} for split in ("val", "test")}
    return {
        **recipe,
        "threshold": float(row["threshold"]),
        "threshold_protocol": str(row["threshold_protocol"]),
        "selection_metric": str(row["selection_metric"]),
        "metrics": metrics,
        "test_tiles": int(row.get("test_tiles", 0) or 0),
        "study": str(row["study"]),
        "row": str(row["row"]),
        "seed": int(row["seed"]),
        "trial_id": str(row["trial_id"]),
        "chosen_by": "best mean validation score over seeds (--best)" if best else "--row",
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "row_provenance": {k: _plain(row.get(k)) for k in ("git_commit", "node", "accelerator", "finished_at")},
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def model_card(meta: dict[str, Any], params: int) -> str:
    cfg, inputs = meta["config"], meta["inputs"]
    threshold_rule = (
        f"chosen on validation by {meta['selection_metric']}"
        if meta["threshold_protocol"] == "tuned"
        else "fixed by the config"
    )
    norm = "training-split mean and standard deviation per band" if inputs["normalisation"] else "none"
    engineered = [b for b in inputs["bands"] if b not in inputs["channels"]]
    cropped = engineered and inputs["engineered_over"] != inputs["tile_size"]
    lines = [
        f"# Model card: {meta['study']} / {meta['row']} (seed {meta['seed']})",
        "",
        "A landslide segmentation model of the RMAU-NET family, exported by `rmaunet export` from "
        f"trial `{meta['trial_id']}` of study `{meta['study']}`.",
        "",
        "## What it is",
        "",
        f"- Architecture: backbone `{cfg['backbone']}`, block `{cfg['block']}`, attention `{cfg['attention']}`, "
        f"heads `{cfg['heads']}`, task `{cfg['task']}`; base filters {cfg['base_filters']}, depth {cfg['depth']}; "
        f"{params:,} parameters.",
        f"- Input: {inputs['tile_size']}×{inputs['tile_size']} windows of {len(inputs['bands'])} bands "
        f"({', '.join(inputs['bands'])}), built from the raw channels {', '.join(inputs['channels'])}; "
        f"non-finite values become 0; normalisation: {norm}.",
        f"- Output: a landslide probability per pixel; the mask is probability ≥ {meta['threshold']:g} "
        f"({meta['threshold_protocol']}: {threshold_rule}).",
        f"- Trained with loss `{cfg['loss']}`, {cfg['epochs']} epochs, batch {cfg['batch_size']}, learning rate "
        f"{cfg['learning_rate']:g}, augmentation {', '.join(cfg['augment']) or 'none'}, precision {cfg['precision']}.",
        "",
        "## Data it saw",
        "",
        f"- Dataset `{inputs['dataset']}` (fingerprint `{meta['data_fingerprint']}`), band spec `{cfg['bands']}`, "
        f"crop {cfg['crop'] or 'none'}, at most {cfg['max_tiles'] or 'all'} tiles; validation {cfg['val_fraction']:g} "
        "of the training split, carved with the trial's seed; test split fixed by the dataset's split policy.",
        "",
        "## Validation and test metrics",
        "",
        f"At threshold {meta['threshold']:g}, pixel metrics of the landslide class (mIoU: mean of both classes).",
        "",
        "| split | precision | recall | F1 | IoU | mIoU |",
        "|---|---|---|---|---|---|",
    ]
    for split, name in (("val", "validation"), ("test", f"test ({meta['test_tiles']} tiles)")):
        m = meta["metrics"][split]
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRIC_NAMES) + " |")
    lines += [
        "",
        f"Protocol: the checkpoint and the threshold were chosen on validation; test was scored once, with the "
        f"selected weights. This row was picked by {meta['chosen_by']}; test scores never chose anything.",
        "",
        "## Provenance",
        "",
        f"- Trial `{meta['trial_id']}`, config hash over the fields above; trained by commit "
        f"`{meta.get('git_commit', 'unknown')}` on {meta['row_provenance'].get('node') or '?'} "
        f"({meta['row_provenance'].get('accelerator') or '?'}), finished {meta['row_provenance'].get('finished_at')}.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in (meta.get('versions') or {}).items() if v)}.",
        f"- Exported {meta['exported_at']}.",
        "",
        "## Use",
        "",
        "    rmaunet predict THIS_FOLDER SCENE.tif --out maps/",
        "",
        "or in Python: `import rmaunet.models, keras; keras.saving.load_model('model.keras')` and the recipe in "
        "preprocess.json (`rmaunet.data.recipe.InputRecipe`).",
        "",
        "## Limits",
        "",
        "- It knows the scenes of its training data only: another sensor, season or scale of values "
        "(`rmaunet predict --scale`) shifts its inputs away from what it learnt.",
        "- Per-tile bands (min-max, filters, gradients, edges) are computed over each prediction window"
        + (
            f"; in training they were computed over {inputs['engineered_over']}-pixel tiles before the crop."
            if cropped
            else "."
        ),
        "",
    ]
    return "\n".join(lines)


@dataclass
class Exported:
    """A loaded model folder: the Keras model and what applying it needs."""

    folder: Path
    model: Any
    meta: dict[str, Any]

    @property
    def recipe(self):  # noqa: ANN201 - InputRecipe
        from rmaunet.data.recipe import InputRecipe

        return InputRecipe.from_dict(self.meta["inputs"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @functools.cached_property
    def mask_probabilities(self) -> Callable[[np.ndarray], np.ndarray]:
        """(N, tile, tile, bands) model input -> (N, tile, tile) mask probabilities: one traced
        function for any batch size, made once per loaded model (tracing takes seconds: a
        function made per scene or per batch size would trace again)."""
        import tensorflow as tf

        recipe = self.recipe
        spec = tf.TensorSpec([None, recipe.tile_size, recipe.tile_size, len(recipe.bands)], tf.float32)

        @tf.function(input_signature=[spec])
        def forward(batch):  # noqa: ANN001, ANN202 - a traced TensorFlow function
            return self.model(batch, training=False)["mask"][..., 0]

        return lambda x: forward(tf.convert_to_tensor(x, tf.float32)).numpy()


def load_exported(folder: Path | str) -> Exported:
    """Load a folder written by `export_model` (a DataError-like StoreError if it is not one)."""
    folder = Path(folder)
    model_path, meta_path = folder / MODEL_FILE, folder / PREPROCESS_FILE
    if not model_path.is_file() or not meta_path.is_file():
        expected = f"expected {MODEL_FILE} and {PREPROCESS_FILE}; see `rmaunet export`"
        raise StoreError(f"{folder}: not an exported model ({expected})")
    import keras

    import rmaunet.models  # noqa: F401 - registers the project's layers for load_model

    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{meta_path}: unreadable ({exc})") from None
    return Exported(folder, keras.saving.load_model(model_path, compile=False), meta)
