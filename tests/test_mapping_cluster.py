"""Scenes read from and written to an object store (moto's S3), in this process and as Ray tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

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
    # same maps as predicted in this process.
    import ray

    from rmaunet.mapping.export import load_exported
    from rmaunet.mapping.predict import predict_scene
    from rmaunet.mapping.scenes import predict_scenes
    from rmaunet.storage import Storage

    model = untrained_model(tmp_path / "model")
    bucket = Storage(s3_bucket)
    scenes = _scenes_in_bucket(bucket, tmp_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # after the S3 variables
    try:
        summaries = predict_scenes(model, scenes, f"{s3_bucket}/maps", on_ray=True, log=lambda _m: None)
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
