"""GeoTIFF in and out: checking a scene, naming its bands, Cloud-Optimised outputs, polygons.

Everything here goes through rasterio (its wheels carry GDAL). A scene is refused in one
line (a DataError) when it cannot be opened, has no CRS, holds no real numbers, or lacks a
band the model needs. Outputs keep the scene's CRS and transform; a probability map and a
mask are written strip by strip into a tiled GeoTIFF and then copied into GDAL's COG driver
(it can only create by copy), so no output is ever whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet.errors import DataError

__all__ = [
    "open_scene",
    "band_indexes",
    "invalid_pixels",
    "RowReader",
    "StripWriter",
    "to_cog",
    "write_polygons",
    "write_stack",
    "quicklook",
    "MASK_NODATA",
]

MASK_NODATA = 255  # the mask's nodata value (0: no landslide, 1: landslide)
_GDAL_ENV = {"GDAL_CACHEMAX": 256}  # MB: GDAL's block cache, kept small and fixed


def gdal_env():  # noqa: ANN201 - rasterio.Env
    import rasterio

    return rasterio.Env(**_GDAL_ENV)


def open_scene(path: Path | str):  # noqa: ANN201 - rasterio.DatasetReader
    """Open a scene for reading, or a DataError saying why it cannot be mapped."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: not a readable raster ({exc})") from None
    try:
        if ds.crs is None:
            raise DataError(f"{path}: the raster has no CRS (a map needs one: assign it, e.g. gdal_edit.py -a_srs)")
        kinds = {np.dtype(d).kind for d in ds.dtypes}
        if not kinds <= set("uif"):
            raise DataError(f"{path}: band types {', '.join(sorted(set(ds.dtypes)))} are not real numbers")
    except DataError:
        ds.close()
        raise
    return ds


def band_indexes(ds: Any, channels: Sequence[str], names: Sequence[str] | None = None) -> list[int]:
    """The raster band (1-based) of each channel the model reads, in the model's order.

    Raster bands are named by `names` (the CLI's --bands, one per raster band), else by
    their band descriptions; a raster with neither is taken in the model's order when it
    has exactly the model's number of bands.
    """
    where = ds.name
    if names:
        if len(names) != ds.count:
            raise DataError(f"{where}: --bands names {len(names)} bands, the raster has {ds.count}")
        given = list(names)
    elif all(ds.descriptions):
        given = list(ds.descriptions)
    elif ds.count == len(channels):
        given = list(channels)
    else:
        raise DataError(
            f"{where}: {ds.count} bands without descriptions, the model needs {len(channels)} "
            f"({', '.join(channels)}): name the raster's bands with --bands"
        )
    lookup = {str(n).strip().lower(): i + 1 for i, n in enumerate(given)}
    missing = [c for c in channels if c.lower() not in lookup]
    if missing:
        raise DataError(
            f"{where}: no band {', '.join(missing)} (the raster's bands: {', '.join(map(str, given))}; "
            f"the model needs {', '.join(channels)})"
        )
    return [lookup[c.lower()] for c in channels]


def invalid_pixels(ds: Any, indexes: Sequence[int], raw: np.ndarray) -> np.ndarray:
    """(H, W) True where any read band is nodata or not finite; raw is (bands, H, W)."""
    bad = ~np.isfinite(raw).all(axis=0)
    for k, index in enumerate(indexes):
        nodata = ds.nodatavals[index - 1]
        if nodata is not None and not np.isnan(nodata):
            bad |= raw[k] == nodata
    return bad


class RowReader:
    """Row strips of a scene's bands, read from disk a whole row of blocks at a time.

    GDAL decodes a compressed block again for every read that touches it (its block cache
    did not keep the 14-band, 512-pixel tiles of a pixel-interleaved scene between reads of
    a strip: measured 10 x slower than reading whole block rows), so the strips the windows
    need are cut from block rows held here. Strips must come in increasing row order; the
    rows above the latest strip leave. Memory: about two block rows of the scene's width, in
    the raster's own data type (a 512-row block row of a 14-band uint16 Sentinel-2 tile: 160 MB).
    """

    def __init__(self, ds: Any, indexes: Sequence[int], min_rows: int) -> None:
        self.ds, self.indexes = ds, list(indexes)
        block = max(1, int(ds.block_shapes[0][0]))
        self.block = block
        self.chunk = block * -(-min_rows // block)  # whole blocks, at least a strip's height
        self.dtype = np.result_type(*(ds.dtypes[i - 1] for i in self.indexes))
        self.top = self.end = 0
        self.rows = np.zeros((len(self.indexes), 0, ds.width), self.dtype)

    def read(self, top: int, height: int) -> np.ndarray:
        """(bands, height, width) float32 raw values of scene rows [top, top + height)."""
        from rasterio.windows import Window

        if not self.top <= top <= self.end:  # a jump (a part starting mid-scene): start at its block
            self.top = self.end = top // self.block * self.block
            self.rows = self.rows[:, :0]
        reads = [self.rows]
        while self.end < min(top + height, self.ds.height):
            h = min(self.chunk, self.ds.height - self.end)
            window = Window(0, self.end, self.ds.width, h)
            reads.append(self.ds.read(self.indexes, window=window, out_dtype=self.dtype))
            self.end += h
        rows = reads[0] if len(reads) == 1 else np.concatenate(reads, axis=1)
        self.rows, self.top = rows[:, top - self.top :], top
        return self.rows[:, :height].astype(np.float32)


class StripWriter:
    """A probability map (float32, NaN nodata) and a mask (uint8, 255 nodata) written row strip
    by row strip into tiled GeoTIFFs with the scene's CRS and transform."""

    def __init__(self, ds: Any, prob_path: Path, mask_path: Path) -> None:
        import rasterio

        profile = {
            "driver": "GTiff",
            "width": ds.width,
            "height": ds.height,
            "count": 1,
            "crs": ds.crs,
            "transform": ds.transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        self.prob = rasterio.open(prob_path, "w", dtype="float32", nodata=np.nan, **profile)
        self.mask = rasterio.open(mask_path, "w", dtype="uint8", nodata=MASK_NODATA, **profile)
        self.prob.set_band_description(1, "landslide probability")
        self.mask.set_band_description(1, "landslide mask")

    def write(self, row: int, prob: np.ndarray, mask: np.ndarray) -> None:
        from rasterio.windows import Window

        window = Window(0, row, prob.shape[1], prob.shape[0])
        self.prob.write(prob.astype(np.float32, copy=False), 1, window=window)
        self.mask.write(mask.astype(np.uint8, copy=False), 1, window=window)

    def close(self) -> None:
        self.prob.close()
        self.mask.close()


def to_cog(source: Path, target: Path) -> Path:
    """Copy a GeoTIFF into a Cloud-Optimised GeoTIFF (tiled, overviews, deflate)."""
    from rasterio.shutil import copy

    resampling = "NEAREST" if "mask" in source.name else "AVERAGE"
    copy(source, target, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING=resampling, BIGTIFF="IF_SAFER")
    return target


def write_polygons(mask_path: Path, target: Path, props: dict[str, Any] | None = None) -> dict[str, float]:
    """Landslide polygons of a mask as GeoJSON with each polygon's area; returns the totals.

    The mask is read whole as uint8 (one byte a pixel: the only scene-sized step). Areas
    are in the CRS's units squared (m² for a projected CRS in metres); the file carries
    the scene's CRS (a `crs` member), as GDAL and QGIS read it.
    """
    import rasterio
    from rasterio.features import shapes

    with rasterio.open(mask_path) as ds:
        mask = ds.read(1)
        transform, crs = ds.transform, ds.crs
    landslide = mask == 1
    features = []
    total = 0.0
    for geometry, _ in shapes(landslide.astype(np.uint8), mask=landslide, transform=transform, connectivity=8):
        area = _polygon_area(geometry["coordinates"])
        total += area
        features.append({"type": "Feature", "geometry": geometry, "properties": {"area": area, **(props or {})}})
    unit = crs.linear_units if crs is not None and crs.is_projected else "CRS units"
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": crs.to_string() if crs is not None else ""}},
        "area_unit": f"{unit}²",
        "features": features,
    }
    target.write_text(json.dumps(collection))
    return {"polygons": len(features), "area": total, "pixels": int(landslide.sum())}


def _polygon_area(rings: list[list[list[float]]]) -> float:
    """Shoelace area of a polygon: the exterior ring less its holes."""

    def ring_area(ring: list[list[float]]) -> float:
        xy = np.asarray(ring, np.float64)
        x, y = xy[:, 0], xy[:, 1]
        return abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))) / 2.0

    return ring_area(rings[0]) - sum(ring_area(r) for r in rings[1:])


def write_stack(
    path: Path,
    image: np.ndarray,
    band_names: Sequence[str],
    crs: str,
    transform: Any,
    nodata: float | None = None,
) -> Path:
    """(H, W, C) array -> a tiled GeoTIFF whose bands carry `band_names` as descriptions
    (what a stack built with gdal_merge / rasterio would look like; tests, bench, demo)."""
    import rasterio

    height, width, count = image.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=image.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as ds:
        for k, name in enumerate(band_names):
            ds.write(image[..., k], k + 1)
            ds.set_band_description(k + 1, name)
    return path


def quicklook(
    scene: Path | str,
    mask_path: Path,
    target: Path,
    rgb: Sequence[int],
    max_side: int = 1024,
    truth: np.ndarray | None = None,
) -> Path:
    """A PNG of the scene in true colour with the mapped landslides in red, at most
    `max_side` pixels a side (decimated reads: never the whole scene in memory); a known
    landslide mask of the PNG's size (`truth`) is outlined in yellow."""
    import rasterio
    from PIL import Image
    from scipy import ndimage

    with rasterio.open(scene) as ds:
        scale = max(ds.width, ds.height) / max_side
        shape = (max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
        bands = ds.read(list(rgb), out_shape=(3, *shape)).astype(np.float64)
    with rasterio.open(mask_path) as ds:
        mask = ds.read(1, out_shape=shape) == 1
    finite = np.isfinite(bands).all(axis=0)
    low, high = (np.percentile(bands[:, finite], q, axis=1)[:, None, None] for q in (2, 98))
    picture = np.clip((bands - low) / np.maximum(high - low, 1e-12), 0, 1) ** (1 / 1.8)
    picture = np.where(finite, picture, 0).transpose(1, 2, 0)
    picture[mask] = 0.45 * picture[mask] + 0.55 * np.array([1.0, 0.1, 0.1])
    if truth is not None and truth.shape == shape:
        picture[truth & ~ndimage.binary_erosion(truth)] = (1.0, 0.9, 0.0)
    Image.fromarray((picture * 255 + 0.5).astype(np.uint8)).save(target)
    return target
