"""Scenes read from and written to an object store (moto's S3), in this process and as Ray
tasks: one task per scene, or one scene's window rows split over tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from local_ray import start_local_ray  # noqa: E402
from mapping_helpers import untrained_model, write_scene  # noqa: E402

from rmaunet.data.synthetic import landslide4sense_image, make_scene  # noqa: E402


def _scenes_in_bucket(bucket, tmp_path) -> list[str]:
    for seed, name in ((1, "east"), (2, "west")):
        image = landslide4sense_image(make_scene(np.random.default_rng(seed), 80, True, 0.04))
        bucket.upload(write_scene(tmp_path / f"{name}.tif", image), f"scenes/{name}.tif")
    return [f"{bucket.uri}/scenes/east.tif", f"{bucket.uri}/scenes/west.tif"]


def _same_map(remote: Path, local: str) -> None:
    with rasterio.open(remote) as there, rasterio.open(local) as here:
        assert there.crs == here.crs and there.transform == here.transform
        np.testing.assert_array_equal(there.read(1), here.read(1))


def _same_blend(split_map: str | Path, whole_map: str | Path, threshold: float, masks: tuple[str, str]) -> None:
    """Parts merged give the one-process blend to 1e-6 (float32 sums added in another order),
    and the same mask wherever a probability is not within that of the threshold."""
    with rasterio.open(split_map) as there, rasterio.open(whole_map) as here:
        assert there.crs == here.crs and there.transform == here.transform
        whole = here.read(1)
        np.testing.assert_allclose(there.read(1), whole, atol=1e-6)
    with rasterio.open(masks[0]) as there, rasterio.open(masks[1]) as here:
        clear = np.abs(whole - threshold) > 1e-6
        np.testing.assert_array_equal(there.read(1)[clear], here.read(1)[clear])


@pytest.mark.slow
def test_window_rows_split_into_parts_give_the_one_process_map(tmp_path):
    # What each Ray task of a split scene runs (_remote_part), here in this process, over
    # parts of 2 window rows (the last part ends at the scene's edge): the same map.
    from rmaunet.mapping.export import load_exported
    from rmaunet.mapping.predict import predict_scene
    from rmaunet.mapping.scenes import _remote_part
    from rmaunet.mapping.windows import merge_parts, split_rows

    model = untrained_model(tmp_path / "model")
    files = {path.name: path.read_bytes() for path in model.iterdir()}
    image = landslide4sense_image(make_scene(np.random.default_rng(4), 150, True, 0.04))
    image[40:50, 10:30] = np.nan  # nodata on a part's border stays nodata
    scene = write_scene(tmp_path / "scene.tif", image[:150, :110])
    parts: list[list[int]] = []

    def split(rows, settings):
        parts.extend(split_rows(rows, 2))
        return merge_parts(_remote_part(files, str(scene), part, settings) for part in parts)

    exported = load_exported(model)
    whole = predict_scene(exported, scene, tmp_path / "whole", progress=False, polygons=False)
    with rasterio.open(whole["probability"]) as ds:
        threshold = float(np.nanmedian(ds.read(1)))  # an untrained model's: a mask with both classes
    whole = predict_scene(exported, scene, tmp_path / "whole", threshold=threshold, progress=False)
    apart = predict_scene(exported, scene, tmp_path / "apart", split=split, threshold=threshold, progress=False)
    assert len(parts) == 3 and apart["landslide_pixels"] > 0
    _same_blend(apart["probability"], whole["probability"], whole["threshold"], (apart["mask"], whole["mask"]))
    with rasterio.open(apart["mask"]) as ds:
        assert (ds.read(1)[40:50, 10:30] == 255).all()


@pytest.mark.slow
def test_a_task_maps_a_scene_from_and_to_an_object_store(tmp_path, s3_bucket):
    # What each Ray task runs, in this process: the model's files by value, the scene
    # streamed from S3, its maps streamed back; the same map as a local prediction.
    from rmaunet.mapping.export import load_exported
    from rmaunet.mapping.predict import predict_scene
    from rmaunet.mapping.scenes import _remote_one
    from rmaunet.storage import Storage

    model = untrained_model(tmp_path / "model")
    bucket = Storage(s3_bucket)
    scene = _scenes_in_bucket(bucket, tmp_path)[1]
    files = {path.name: path.read_bytes() for path in model.iterdir()}
    summary = _remote_one(files, scene, f"{s3_bucket}/maps", {})
    assert summary["scene"] == scene and summary["probability"] == f"{s3_bucket}/maps/west_probability.tif"
    assert bucket.child("maps").files() == ["west_landslides.geojson", "west_mask.tif", "west_probability.tif"]
    local = predict_scene(load_exported(model), tmp_path / "west.tif", tmp_path / "local", progress=False)
    bucket.download("maps/west_probability.tif", tmp_path / "remote.tif")
    _same_map(tmp_path / "remote.tif", local["probability"])


@pytest.mark.slow
def test_scenes_on_ray_from_and_to_an_object_store(tmp_path, s3_bucket):
    # Two scenes in S3, one Ray task each on a local 2-CPU cluster, maps back in S3: the
    # same maps as predicted in this process. Then, on the same cluster, one scene's window
    # rows split into one task per row: the same map to 1e-6.
    import ray

    from rmaunet.mapping.export import load_exported
    from rmaunet.mapping.predict import predict_scene
    from rmaunet.mapping.scenes import predict_scenes
    from rmaunet.storage import Storage

    model = untrained_model(tmp_path / "model")
    bucket = Storage(s3_bucket)
    scenes = _scenes_in_bucket(bucket, tmp_path)
    start_local_ray()  # after the S3 variables
    try:
        summaries = predict_scenes(model, scenes, f"{s3_bucket}/maps", on_ray=True, log=lambda _m: None)
        split = predict_scenes(model, scenes[1:], f"{s3_bucket}/split", on_ray=True, rows_per_task=1, log=print)
    finally:
        ray.shutdown()
    assert [s["scene"] for s in summaries] == scenes and all(s["node"] for s in summaries)
    assert summaries[1]["mask"] == f"{s3_bucket}/maps/west_mask.tif"
    assert bucket.child("maps").files() == sorted(
        f"{n}_{kind}" for n in ("east", "west") for kind in ("landslides.geojson", "mask.tif", "probability.tif")
    )
    local = predict_scene(load_exported(model), tmp_path / "west.tif", tmp_path / "local", progress=False)
    bucket.download("maps/west_probability.tif", tmp_path / "remote.tif")
    _same_map(tmp_path / "remote.tif", local["probability"])
    bucket.download("split/west_probability.tif", tmp_path / "split.tif")
    bucket.download("split/west_mask.tif", tmp_path / "split_mask.tif")
    assert split[0]["windows"] == 9 and split[0]["probability"] == f"{s3_bucket}/split/west_probability.tif"
    masks = (tmp_path / "split_mask.tif", local["mask"])
    _same_blend(tmp_path / "split.tif", local["probability"], local["threshold"], masks)
