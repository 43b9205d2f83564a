"""Scenes predicted as Ray tasks, read from and written to an object store (moto's S3)."""

from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from mapping_helpers import untrained_model, write_scene  # noqa: E402

from rmaunet.data.synthetic import landslide4sense_image, make_scene  # noqa: E402


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
    for seed, name in ((1, "east"), (2, "west")):
        image = landslide4sense_image(make_scene(np.random.default_rng(seed), 80, True, 0.04))
        bucket.upload(write_scene(tmp_path / f"{name}.tif", image), f"scenes/{name}.tif")
    scenes = [f"{s3_bucket}/scenes/east.tif", f"{s3_bucket}/scenes/west.tif"]
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
    with rasterio.open(tmp_path / "remote.tif") as remote, rasterio.open(local["probability"]) as here:
        assert remote.crs == here.crs and remote.transform == here.transform
        np.testing.assert_array_equal(remote.read(1), here.read(1))
