"""`rmaunet predict`: an exported model over whole GeoTIFF scenes.

For each scene: the raster bands the model reads are found by name (rmaunet.mapping.geotiff),
the scene is read a row of GeoTIFF blocks at a time and cut into row strips of windows
(rmaunet.mapping.windows), each window goes through the trial's own input recipe
(rmaunet.data.recipe) and the model in batches, overlapping predictions are blended, and
finished rows go to disk. Reading and preprocessing the next strip runs on a thread while
the model predicts the current one. Memory follows a few block rows and strips (their
height × the scene's width), not the scene.

Outputs, beside each other in --out, named after the scene:

    <scene>_probability.tif   float32 probability, NaN where the input is nodata (COG)
    <scene>_mask.tif          uint8 1 landslide / 0 not / 255 nodata (COG)
    <scene>_landslides.geojson  one polygon per landslide with its area
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet.errors import DataError
from rmaunet.mapping import geotiff
from rmaunet.mapping.export import Exported
from rmaunet.mapping.windows import StripBlender, Sums, blended, offsets

__all__ = ["predict_scene", "row_sums", "Split", "Progress", "output_names", "DEFAULT_OVERLAP"]

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
            self.stream.write(f"{self.label}: {100 * share:.0f}% ({done}/{self.total} rows, eta {eta:.0f} s)\n")
        self.stream.flush()


def row_sums(
    exported: Exported,
    ds: Any,
    rows: Sequence[int],
    *,
    indexes: Sequence[int],
    overlap: int,
    scale: float,
    batch_size: int,
) -> Iterator[Sums]:
    """The blending sums of window rows `rows` of an open scene (all of them, or one Ray
    task's part), finished rows first. The next strip is read and preprocessed on a thread
    while the model predicts the current one."""
    recipe = exported.recipe
    tile = recipe.tile_size
    blender = StripBlender(ds.height, ds.width, tile, overlap, rows)
    columns = blender.columns
    reader = geotiff.RowReader(ds, indexes, tile)

    def load(row: int) -> tuple[np.ndarray, np.ndarray]:
        """One strip's windows as model input, and the strip's nodata pixels."""
        raw = reader.read(row, tile)
        h = raw.shape[1]
        invalid = geotiff.invalid_pixels(ds, indexes, raw)
        raw *= np.float32(scale)
        raw[:, invalid] = np.nan  # nodata feeds the model as the readers' fill value (0)
        windows = np.full((len(columns), tile, tile, len(indexes)), np.nan, np.float32)
        for k, col in enumerate(columns):
            part = raw[:, :, col : col + tile]
            windows[k, :h, : part.shape[2]] = part.transpose(1, 2, 0)
        return recipe.model_input(windows), invalid

    forward = exported.mask_probabilities
    rows = blender.rows
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, rows[0])
        for i, row in enumerate(rows):
            x, invalid = pending.result()
            following = rows[i + 1] if i + 1 < len(rows) else None
            if following is not None:
                pending = pool.submit(load, following)
            probs = np.concatenate([forward(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])
            blender.add(row, probs)
            for top, total, weight in blender.finish(following):
                yield top, total, weight, invalid[: len(total)]


Split = Callable[[Sequence[int], dict[str, Any]], Iterator[Sums]]
"""Window rows and row_sums' settings -> the scene's finished sums, computed elsewhere (Ray tasks)."""


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
    split: Split | None = None,
) -> dict[str, Any]:
    """Map one scene into `out` (see the module docstring); returns a summary. With `split`,
    the window rows are predicted there (rmaunet.mapping.scenes: Ray tasks) and only
    written here."""
    import rasterio  # noqa: F401 - fail here, not inside a thread, without the dependency

    recipe = exported.recipe
    if not isinstance(exported.model.output, dict) or "mask" not in exported.model.output:
        raise DataError(f"{exported.folder}: a detection-only model draws no map")
    tile = recipe.tile_size
    overlap = int(round(DEFAULT_OVERLAP * tile)) if overlap is None else int(overlap)
    threshold = exported.threshold if threshold is None else float(threshold)
    names = output_names(scene)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with geotiff.gdal_env(), geotiff.open_scene(scene) as ds, tempfile.TemporaryDirectory(dir=out) as scratch:
        indexes = geotiff.band_indexes(ds, recipe.channels, bands)
        rows, columns = offsets(ds.height, tile, overlap), offsets(ds.width, tile, overlap)
        settings = {"indexes": indexes, "overlap": overlap, "scale": scale, "batch_size": batch_size}
        sums = split(rows, settings) if split is not None else row_sums(exported, ds, rows, **settings)
        writer = geotiff.StripWriter(ds, Path(scratch) / "probability.tif", Path(scratch) / "mask.tif")
        bar = Progress(ds.height, Path(str(scene)).name) if progress and len(rows) > 8 else None
        landslide_pixels = 0
        try:
            for top, total, weight, bad in sums:
                prob = blended(total, weight)
                mask = np.where(bad, geotiff.MASK_NODATA, prob >= threshold).astype(np.uint8)
                landslide_pixels += int((mask == 1).sum())
                writer.write(top, np.where(bad, np.float32(np.nan), prob), mask)
                if bar is not None:
                    bar.update(top + len(prob))
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
