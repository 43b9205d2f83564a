"""The demo's last step: the best row (on validation) maps a synthetic scene.

`rmaunet demo` calls `map_demo` after its table: the row with the best mean validation
score is exported, a synthetic Landslide4Sense-like scene larger than any training tile is
written as a GeoTIFF (UTM 45N, 10 m pixels, named bands), predicted window by window, and
its quick-look (true colour, mapped landslides in red, the scene's true landslides outlined
in yellow) goes beside the table. It runs in the demo's own process, the first there to
load TensorFlow: its start-up lines are held back as in a trial's process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmaunet.data.synthetic import landslide4sense_image, make_scene
from rmaunet.datasets import LANDSLIDE4SENSE
from rmaunet.mapping import geotiff
from rmaunet.mapping.export import export_model, load_exported
from rmaunet.mapping.predict import predict_scene

__all__ = ["map_demo", "QUICKLOOK"]

QUICKLOOK = "map.png"
_CRS = "EPSG:32645"
_SEED = 7


def map_demo(store: Path | str, study: str, reports: Path, work: Path, size: int = 512) -> str:
    """Export the best row, map a synthetic size² scene, write reports/map.png; returns a summary line."""
    from rasterio.transform import from_origin

    from rmaunet.metrics import segmentation_scores
    from rmaunet.training.quiet import quiet_worker

    quiet_worker()  # before anything imports TensorFlow

    model = export_model(store, study, work / "model", best=True)
    exported = load_exported(model)
    scene = make_scene(np.random.default_rng(_SEED), size, True, 0.03)
    path = geotiff.write_stack(
        work / "scene.tif",
        landslide4sense_image(scene),
        LANDSLIDE4SENSE.bands,
        _CRS,
        from_origin(600_000.0, 3_100_000.0, 10.0, 10.0),
    )
    summary = predict_scene(exported, path, work / "map", progress=False)
    rgb = [LANDSLIDE4SENSE.bands.index(b) + 1 for b in ("B4", "B3", "B2")]
    reports.mkdir(parents=True, exist_ok=True)
    png = geotiff.quicklook(path, Path(summary["mask"]), reports / QUICKLOOK, rgb, truth=scene.mask.astype(bool))
    with geotiff.gdal_env():
        import rasterio

        with rasterio.open(summary["probability"]) as ds:
            f1 = segmentation_scores(scene.mask[None], ds.read(1)[None], summary["threshold"])["f1"]
    return (
        f"map: {exported.meta['row']} (seed {exported.meta['seed']}, best on validation) on a synthetic "
        f"{size}×{size} scene: {summary.get('polygons', 0)} landslide polygons, F1 {100 * f1:.1f} against the "
        f"scene's own landslides; quick-look {png}, maps in {work / 'map'}"
    )
