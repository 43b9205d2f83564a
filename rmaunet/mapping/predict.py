"""`rmaunet predict`: an exported model over whole GeoTIFF scenes.

For each scene: the raster bands the model reads are found by name (rmaunet.mapping.geotiff),
the scene is read one row strip of windows at a time (rmaunet.mapping.windows), each
window goes through the trial's own input recipe (rmaunet.data.recipe) and the model in
batches, overlapping predictions are blended, and finished rows go to disk. Reading and
preprocessing the next strip runs on a thread while the model predicts the current one.
Memory follows the strip (tile size × scene width), not the scene.

Outputs, beside each other in --out, named after the scene:

    <scene>_probability.tif   float32 probability, NaN where the input is nodata (COG)
    <scene>_mask.tif          uint8 1 landslide / 0 not / 255 nodata (COG)
    <scene>_landslides.geojson  one polygon per landslide with its area
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet.errors import DataError
from rmaunet.mapping import geotiff
from rmaunet.mapping.export import Exported
from rmaunet.mapping.windows import StripBlender

__all__ = ["predict_scene", "Progress", "output_names", "DEFAULT_OVERLAP"]

DEFAULT_OVERLAP = 0.25  # of the tile size


def output_names(scene: str | Path) -> dict[str, str]:
    stem = Path(str(scene).rstrip("/")).name.rsplit(".", 1)[0]
    return {
        "probability": f"{stem}_probability.tif",
        "mask": f"{stem}_mask.tif",
        "geojson": f"{stem}_landslides.geojson",
    }


class Progress:
    """A bar redrawn in place on a terminal; off a terminal, a plain line every 10 %."""

    def __init__(self, total: int, label: str, stream: Any = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.shown = -1

    def update(self, done: int) -> None:
        share = done / max(self.total, 1)
        elapsed = time.monotonic() - self.started
        eta = elapsed / share - elapsed if share > 0 else float("nan")
        if self.tty:
            bar = "#" * int(30 * share)
            self.stream.write(f"\r{self.label} [{bar:<30}] {100 * share:5.1f}% eta {eta:5.0f} s")
            if done >= self.total:
                self.stream.write("\n")
        elif int(10 * share) > self.shown:
            self.shown = int(10 * share)
            self.stream.write(f"{self.label}: {100 * share:.0f}% ({done}/{self.total} strips, eta {eta:.0f} s)\n")
        self.stream.flush()


def _forward(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The mask head's probabilities of a batch: one traced function for the model."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        return model(batch, training=False)["mask"]

    return lambda x: forward(tf.constant(x)).numpy()[..., 0]


def predict_scene(
    exported: Exported,
    scene: Path | str,
    out: Path,
    *,
    bands: Sequence[str] | None = None,
    overlap: int | None = None,
    batch_size: int = 32,
    threshold: float | None = None,
    scale: float = 1.0,
    progress: bool = True,
    polygons: bool = True,
) -> dict[str, Any]:
    """Map one scene into `out` (see the module docstring); returns a summary."""
    import rasterio  # noqa: F401 - fail here, not inside a thread, without the dependency
    from rasterio.windows import Window

    recipe = exported.recipe
    if not isinstance(exported.model.output, dict) or "mask" not in exported.model.output:
        raise DataError(f"{exported.folder}: a detection-only model draws no map")
    tile = recipe.tile_size
    overlap = int(round(DEFAULT_OVERLAP * tile)) if overlap is None else int(overlap)
    threshold = exported.threshold if threshold is None else float(threshold)
    forward = _forward(exported.model)
    names = output_names(scene)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with geotiff.gdal_env(), geotiff.open_scene(scene) as ds, tempfile.TemporaryDirectory(dir=out) as scratch:
        indexes = geotiff.band_indexes(ds, recipe.channels, bands)
        blender = StripBlender(ds.height, ds.width, tile, overlap)
        rows, columns = blender.rows, blender.columns

        def load(row: int) -> tuple[np.ndarray, np.ndarray]:
            """One strip's windows as model input, and the strip's nodata pixels."""
            h = min(tile, ds.height - row)
            raw = ds.read(indexes, window=Window(0, row, ds.width, h), out_dtype="float32")
            invalid = geotiff.invalid_pixels(ds, indexes, raw)
            raw *= np.float32(scale)
            raw[:, invalid] = np.nan  # nodata feeds the model as the readers' fill value (0)
            windows = np.full((len(columns), tile, tile, len(indexes)), np.nan, np.float32)
            for k, col in enumerate(columns):
                part = raw[:, :, col : col + tile]
                windows[k, :h, : part.shape[2]] = part.transpose(1, 2, 0)
            return recipe.model_input(windows), invalid

        writer = geotiff.StripWriter(ds, Path(scratch) / "probability.tif", Path(scratch) / "mask.tif")
        bar = Progress(len(rows), Path(str(scene)).name) if progress and len(rows) > 8 else None
        landslide_pixels = 0
        try:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(load, rows[0])
                for i, row in enumerate(rows):
                    x, invalid = pending.result()
                    following = rows[i + 1] if i + 1 < len(rows) else None
                    if following is not None:
                        pending = pool.submit(load, following)
                    probs = np.concatenate([forward(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])
                    blender.add(row, probs)
                    for top, prob in blender.finish(following):
                        bad = invalid[: len(prob)]
                        mask = np.where(bad, geotiff.MASK_NODATA, prob >= threshold).astype(np.uint8)
                        landslide_pixels += int((mask == 1).sum())
                        writer.write(top, np.where(bad, np.float32(np.nan), prob), mask)
                    if bar is not None:
                        bar.update(i + 1)
        finally:
            writer.close()
        geotiff.to_cog(Path(scratch) / "probability.tif", out / names["probability"])
        geotiff.to_cog(Path(scratch) / "mask.tif", out / names["mask"])
        windows = len(rows) * len(columns)
        size = (ds.height, ds.width)
    summary: dict[str, Any] = {
        "scene": str(scene),
        "size": list(size),
        "windows": windows,
        "overlap": overlap,
        "threshold": threshold,
        "landslide_pixels": landslide_pixels,
        "seconds": time.perf_counter() - started,
        "probability": str(out / names["probability"]),
        "mask": str(out / names["mask"]),
    }
    if polygons:
        found = geotiff.write_polygons(out / names["mask"], out / names["geojson"], {"scene": Path(str(scene)).name})
        summary.update(polygons=found["polygons"], landslide_area=found["area"], geojson=str(out / names["geojson"]))
    summary["windows_per_s"] = windows / summary["seconds"]
    return summary
