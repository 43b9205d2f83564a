"""Export a trained row and map GeoTIFF scenes with it: real weights, real rasters.

One tiny study is trained in-process once for the module (tests/mapping_helpers.py). Its
test tiles are stitched into a GeoTIFF mosaic with a real projected CRS (UTM 45N) and
known masks, so a scene prediction can be compared with the trial's own tile-level maps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from mapping_helpers import CRS, PIXEL_M, mosaic, split_test_tiles, trained_store, write_scene  # noqa: E402

from rmaunet.cli import main  # noqa: E402
from rmaunet.config import TrialConfig  # noqa: E402
from rmaunet.data.synthetic import landslide4sense_image, make_scene  # noqa: E402
from rmaunet.mapping.export import export_model, load_exported  # noqa: E402
from rmaunet.mapping.predict import predict_scene  # noqa: E402
from rmaunet.metrics import segmentation_scores  # noqa: E402
from rmaunet.store import ResultsStore  # noqa: E402

# Every test maps with the study the module trains once (a minute): end-to-end, not fast.
pytestmark = pytest.mark.slow

COLUMNS = 4  # the mosaic is the test tiles, 4 a row


@pytest.fixture(scope="module")
def trained(l4s_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("mapping")
    store = trained_store(l4s_small, tmp)
    model = export_model(store, "mapping", tmp / "model", row="baseline")
    exported = load_exported(model)
    row = ResultsStore(store).read("mapping").iloc[0]
    folder = ResultsStore(store).trial(row["trial_id"])
    config = TrialConfig.from_dict(json.loads(folder.config.read_text()))
    raw, inputs, masks = split_test_tiles(config, l4s_small, exported.recipe)
    n = len(raw) // COLUMNS * COLUMNS
    scene = write_scene(tmp / "mosaic.tif", mosaic(raw[:n], COLUMNS))
    stored_mask, stored_u8 = folder.load_probabilities("test")
    return {
        "tmp": tmp,
        "store": store,
        "model": model,
        "exported": exported,
        "scene": scene,
        "n": n,
        "inputs": inputs[:n],
        "masks": masks[:n],
        "stored": (stored_mask[:n], stored_u8[:n]),
        "row": row,
    }


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), {"crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata, "driver": ds.driver}


def test_without_overlap_the_map_is_the_tile_predictions(trained, tmp_path):
    # Windows on the tile grid, no blending: each window of the map is the model on that tile.
    summary = predict_scene(trained["exported"], trained["scene"], tmp_path, overlap=0, progress=False)
    prob, _ = _read(Path(summary["probability"]))
    expected = trained["exported"].model.predict(trained["inputs"], verbose=0)["mask"][..., 0]
    np.testing.assert_allclose(prob, mosaic(expected, COLUMNS), atol=1e-6)


def test_export_load_predict_round_trip_gives_the_stored_test_maps(trained, tmp_path):
    # The exported model and recipe reproduce the trial's own test probabilities (stored as round(255 p)).
    summary = predict_scene(trained["exported"], trained["scene"], tmp_path, overlap=0, progress=False)
    prob, _ = _read(Path(summary["probability"]))
    stored_mask, stored_u8 = trained["stored"]
    gap = np.abs(prob * 255.0 - mosaic(stored_u8, COLUMNS).astype(np.float64))
    assert gap.max() <= 0.5 + 1e-3, f"largest gap {gap.max():.4f}/255"
    assert np.array_equal(mosaic(stored_mask, COLUMNS), mosaic(trained["masks"], COLUMNS))


def _probabilities(exported, scene: Path, out: Path, overlap: int | None) -> np.ndarray:
    summary = predict_scene(exported, scene, out, overlap=overlap, progress=False, polygons=False)
    return _read(Path(summary["probability"]))[0]


def _f1(truth: np.ndarray, prob: np.ndarray, threshold: float) -> float:
    return segmentation_scores(truth[None], prob[None], threshold)["f1"]


SEAM_PX = 4  # the band along the mosaic's tile seams where blending loses (see below)


def test_blended_windows_leave_no_seam(trained, tmp_path):
    # A continuous synthetic scene cut into the model's tiles and stitched back: with
    # overlapping, blended windows the map scores at least as well as the tiles predicted
    # one by one (overlap 0, proven equal to the tile predictions above), within half an F1 point.
    exported = trained["exported"]
    threshold = exported.threshold
    scene = make_scene(np.random.default_rng(3), 256, True, 0.04)
    path = write_scene(tmp_path / "scene.tif", landslide4sense_image(scene))
    tiles_f1 = _f1(scene.mask, _probabilities(exported, path, tmp_path / "tiles", 0), threshold)
    blended_f1 = _f1(scene.mask, _probabilities(exported, path, tmp_path / "blended", None), threshold)
    assert blended_f1 >= tiles_f1 - 0.005
    # The mosaic of independent test tiles is no scene: neighbours never bordered each other,
    # so most blended windows straddle a seam, a step in every band between unrelated tiles
    # that no training tile held (a tile's own edge is padding, as the tile-level windows see
    # it). The whole mosaic loses F1 under blending (23.68 -> 20.52 at the tuned threshold, and
    # 27.3 -> 25.6 at the best threshold for each: not a threshold effect), all of it within
    # SEAM_PX pixels of the seams between tiles, as false landslides along the step; at the
    # scene's own border both maps agree. Away from the seams, blending holds the tile-level F1.
    truth = mosaic(trained["masks"], COLUMNS)
    tiles = _probabilities(exported, trained["scene"], tmp_path / "mt", 0)
    blended = _probabilities(exported, trained["scene"], tmp_path / "mb", None)
    tile = exported.recipe.tile_size
    yy, xx = np.indices(truth.shape) % tile
    away = np.minimum(np.minimum(yy, tile - 1 - yy), np.minimum(xx, tile - 1 - xx)) >= SEAM_PX
    whole = (_f1(truth, tiles, threshold), _f1(truth, blended, threshold))
    away_f1 = (_f1(truth[away], tiles[away], threshold), _f1(truth[away], blended[away], threshold))
    print(
        f"\nF1 at threshold {threshold:g}: continuous scene tiles {100 * tiles_f1:.2f} -> blended "
        f"{100 * blended_f1:.2f}; mosaic of test tiles {100 * whole[0]:.2f} -> blended {100 * whole[1]:.2f}; "
        f"its {100 * away.mean():.0f} % {SEAM_PX}+ px from a seam {100 * away_f1[0]:.2f} -> {100 * away_f1[1]:.2f}"
    )
    assert away_f1[1] >= away_f1[0] - 0.005


def test_outputs_keep_crs_transform_and_nodata(trained, tmp_path):
    # COGs on the scene's grid; nodata and NaN input pixels stay nodata in both maps.
    with rasterio.open(trained["scene"]) as ds:
        image = ds.read().transpose(1, 2, 0)
        transform = ds.transform
    image[5:15, 40:60, 3] = np.nan
    image[50:60, 10:20, :] = -9999.0
    scene = write_scene(tmp_path / "holes.tif", image, nodata=-9999.0)
    summary = predict_scene(trained["exported"], scene, tmp_path / "out", progress=False)
    prob, prob_meta = _read(Path(summary["probability"]))
    mask, mask_meta = _read(Path(summary["mask"]))
    for meta in (prob_meta, mask_meta):
        assert meta["crs"].to_string() == CRS and meta["transform"] == transform
    assert _is_cog(Path(summary["probability"])) and _is_cog(Path(summary["mask"]))
    holes = np.zeros(prob.shape, bool)
    holes[5:15, 40:60] = holes[50:60, 10:20] = True
    assert np.isnan(prob[holes]).all() and np.isfinite(prob[~holes]).all()
    assert (mask[holes] == 255).all() and set(np.unique(mask[~holes])) <= {0, 1}


def _is_cog(path: Path) -> bool:
    with rasterio.open(path) as ds:
        return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"  # what GDAL's COG driver writes


def test_polygon_areas_sum_to_the_mask_area(trained, tmp_path):
    # Every landslide pixel is in exactly one polygon: areas add up to pixels × 100 m².
    summary = predict_scene(trained["exported"], trained["scene"], tmp_path, progress=False)
    mask, _ = _read(Path(summary["mask"]))
    features = json.loads(Path(summary["geojson"]).read_text())["features"]
    assert (mask == 1).sum() > 0 and len(features) == summary["polygons"] > 0
    total = sum(f["properties"]["area"] for f in features)
    assert total == pytest.approx((mask == 1).sum() * PIXEL_M * PIXEL_M)


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_unusable_scenes_are_refused_in_one_line(trained, tmp_path, capsys):
    # Wrong band count, a missing band, no CRS, complex numbers, not a raster: one line, exit 2, nothing written.
    image = np.zeros((40, 40, 14), np.float32)
    without_dem = [f"B{i}" for i in range(1, 13)] + ["slope"]
    cases = {
        "ten_bands": (write_scene(tmp_path / "ten.tif", image[..., :10], names=[""] * 10), "10 bands without"),
        "no_dem": (write_scene(tmp_path / "nodem.tif", image[..., :13], names=without_dem), "no band dem"),
        "no_crs": (write_scene(tmp_path / "nocrs.tif", image, crs=None), "no CRS"),
        "complex": (write_scene(tmp_path / "complex.tif", image.astype(np.complex64)), "not real numbers"),
    }
    (tmp_path / "text.tif").write_text("not a raster")
    cases["text"] = (tmp_path / "text.tif", "not a readable raster")
    for name, (scene, expected) in cases.items():
        out = tmp_path / f"out-{name}"
        err = _refused(["predict", str(trained["model"]), str(scene), "--out", str(out)], capsys)
        assert expected in err, (name, err)
        assert not out.exists() or not any(out.rglob("*.tif")), name


def test_bands_flag_names_an_undescribed_raster(trained, tmp_path, capsys):
    # Without band descriptions, --bands says which raster band is which (here: reversed order).
    with rasterio.open(trained["scene"]) as ds:
        image = ds.read().transpose(1, 2, 0)
    names = list(trained["exported"].recipe.channels)
    scene = write_scene(tmp_path / "reversed.tif", image[..., ::-1], names=[""] * len(names))
    argv = ["predict", str(trained["model"]), str(scene), "--out", str(tmp_path / "r"), "--overlap", "0"]
    assert main([*argv, "--bands", ",".join(names[::-1])]) == 0
    direct = predict_scene(trained["exported"], trained["scene"], tmp_path / "d", overlap=0, progress=False)
    by_name = _read(tmp_path / "r" / "reversed_probability.tif")[0]
    np.testing.assert_array_equal(by_name, _read(Path(direct["probability"]))[0])
    _refused([*argv, "--bands", "B1,B2"], capsys)


def test_rows_per_task_needs_ray(trained, tmp_path, capsys, monkeypatch):
    # Splitting a scene's windows into tasks needs a cluster to send them to: one line, exit 2.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["predict", str(trained["model"]), str(trained["scene"]), "--out", str(tmp_path / "o")]
    assert "--rows-per-task" in _refused([*argv, "--rows-per-task", "4"], capsys)
    assert not (tmp_path / "o").exists()


def test_export_best_picks_on_validation_and_old_trials_say_why(trained, tmp_path, capsys):
    # --best takes the row with the best mean validation score; a trial without preprocess.json is one line.
    rows = ResultsStore(trained["store"]).read("mapping")
    assert main(["export", str(trained["store"]), "--study", "mapping", "--best", "--out", str(tmp_path / "b")]) == 0
    meta = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    assert meta["metrics"]["val"]["f1"] == rows["val_f1"].max()
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert meta["trial_id"] in card and "never" in card and "| test (" in card
    old = tmp_path / "old"
    shutil.copytree(trained["store"], old)
    for recipe in old.glob("trials/*/preprocess.json"):
        recipe.unlink()
    argv = ["export", str(old), "--study", "mapping", "--row", "baseline", "--out", str(tmp_path / "o")]
    err = _refused(argv, capsys)
    assert "no preprocess.json" in err


def test_demo_ends_with_a_map(trained, tmp_path):
    # The demo's last step, in a process of its own as in `rmaunet demo`: best row exported, a
    # synthetic scene mapped, its quick-look beside the table, and no TensorFlow start-up lines.
    import os
    import subprocess
    import sys

    from PIL import Image

    import rmaunet
    from rmaunet.mapping.demo import QUICKLOOK

    code = (
        "import sys; from pathlib import Path; from rmaunet.mapping.demo import map_demo; "
        "print(map_demo(sys.argv[1], 'mapping', Path(sys.argv[2]), Path(sys.argv[3]), size=96))"
    )
    argv = [sys.executable, "-c", code, str(trained["store"]), str(tmp_path / "reports"), str(tmp_path / "work")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RMAUNET_WORKER_CHATTER")}
    root = str(Path(rmaunet.__file__).parents[1])  # this checkout's rmaunet, not an installed one
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    with Image.open(tmp_path / "reports" / QUICKLOOK) as png:
        assert png.size == (96, 96) and png.mode == "RGB"
    assert "best on validation" in done.stdout and (tmp_path / "work" / "map" / "scene_mask.tif").is_file()
