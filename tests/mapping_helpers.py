"""A real results store with trained rows, and GeoTIFF scenes stitched from synthetic tiles.

`trained_store` trains a tiny study's trials in-process (no Ray: the trials and rows are
what a study run leaves, written by the same trial loop and row writer), so the mapping
tests export and predict with real weights in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmaunet.datasets import LANDSLIDE4SENSE

__all__ = [
    "trained_store",
    "untrained_model",
    "raw_tiles",
    "split_test_tiles",
    "write_scene",
    "mosaic",
    "CRS",
    "ORIGIN",
    "PIXEL_M",
]

CRS = "EPSG:32645"  # UTM 45N: Nepal's Himalaya, a real projected CRS in metres
ORIGIN = (600_000.0, 3_100_000.0)
PIXEL_M = 10.0
SPEC = """name: mapping
kind: table
base: {preset: baseline, base_filters: 8, depth: 2, epochs: 8, batch_size: 8, learning_rate: 0.003, augment: []}
resources: {cpu: 1}
rows:
  - {label: baseline}
  - {label: narrow, set: {base_filters: 4, epochs: 2}}
"""


def trained_store(data: Path, tmp: Path) -> Path:
    """A results store holding the tiny study's trained trials and their rows."""
    from rmaunet.data.prepare import fingerprint
    from rmaunet.store import ResultsStore
    from rmaunet.studies.expand import expand
    from rmaunet.studies.plan import StudyPlan
    from rmaunet.studies.rows import RowWriter
    from rmaunet.studies.spec import load_spec
    from rmaunet.training.trial import run_trial

    (tmp / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp / "spec.yaml")
    fps = {"landslide4sense": fingerprint(data, "landslide4sense")}
    store = ResultsStore(tmp / "store")
    plan = StudyPlan(spec, expand(spec, fps), store, {"landslide4sense": data}, fps)
    writer = RowWriter(spec, plan, store, log=lambda _m: None)
    for planned in plan.planned:
        run_trial(planned.config, data, store.workspace(planned.trial_id).begin(planned.config.to_dict()).root)
        writer.trial_done(planned.trial_id)
    return tmp / "store"


def untrained_model(out: Path, tile: int = 32) -> Path:
    """A model folder with an untrained tiny U-Net and an identity input recipe: for tests of
    where and how scenes are predicted, not of what the model learnt."""
    import keras

    from rmaunet.config import TrialConfig
    from rmaunet.mapping.export import write_model_folder
    from rmaunet.models import build_model

    keras.utils.set_random_seed(0)
    bands = list(LANDSLIDE4SENSE.bands)
    inputs = {"dataset": "landslide4sense", "channels": bands, "bands": bands, "tile_size": tile}
    meta = {"inputs": {**inputs, "normalisation": None, "engineered_over": tile}, "threshold": 0.5}
    return write_model_folder(out, build_model(TrialConfig(base_filters=4, depth=2), len(bands), tile), meta)


def raw_tiles(data: Path) -> np.ndarray:
    """Every tile of the synthetic Landslide4Sense folder as read: (N, H, W, 14) float32."""
    from rmaunet.data.landslide4sense import Landslide4Sense

    return np.asarray(Landslide4Sense(data, "train").load().images, np.float32)


def split_test_tiles(config, data: Path, recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trial's test split as raw tiles, model inputs and masks, in the split's order
    (found by matching the recipe's inputs against prepare_splits' own)."""
    from rmaunet.data.prepare import prepare_splits

    splits = prepare_splits(config, data)
    raw = raw_tiles(data)
    inputs = recipe.model_input(raw)
    flat = inputs.reshape(len(inputs), -1)
    order = [int(np.flatnonzero((flat == x.reshape(-1)).all(axis=1))[0]) for x in splits.x_test]
    return raw[order], inputs[order], splits.y_test


def mosaic(tiles: np.ndarray, columns: int) -> np.ndarray:
    """(N, T, T, ...) tiles -> one (rows·T, columns·T, ...) image, row-major; N divisible by columns."""
    n, t = tiles.shape[:2]
    rows = n // columns
    grid = tiles[: rows * columns].reshape(rows, columns, t, t, *tiles.shape[3:])
    return grid.swapaxes(1, 2).reshape(rows * t, columns * t, *tiles.shape[3:])


def write_scene(path: Path, image: np.ndarray, *, names=LANDSLIDE4SENSE.bands, crs=CRS, nodata=None) -> Path:
    from rasterio.transform import from_origin

    from rmaunet.mapping.geotiff import write_stack

    return write_stack(path, image, names, crs, from_origin(*ORIGIN, PIXEL_M, PIXEL_M), nodata)
