"""Band sets (Table VI), band engineering (Table V) and the signal the bands carry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from rmaunet.data.bands import (
    DATASET_BANDS,
    ENGINEERED_BANDS,
    engineer_bands,
    engineer_bands_reference,
    median_filter,
    resolve_bands,
)
from rmaunet.data.synthetic import landslide4sense_image, make_scene
from rmaunet.errors import ConfigError


def scenes(n: int, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    made = [make_scene(rng, size, i % 2 == 0, 0.05) for i in range(n)]
    return np.stack([landslide4sense_image(s) for s in made]), np.stack([s.mask for s in made])


@pytest.mark.parametrize("name, count", [("14", 14), ("17", 17), ("21", 21), ("23", 23), ("25", 25), ("26", 26)])
def test_table_vi_sets_are_the_originals_plus_bands_15_to_n(name, count):
    # Set "23" = the 14 originals then Table V's bands 15..23, in Table V's order.
    bands = resolve_bands(name)
    assert len(bands) == count
    assert bands[:14] == DATASET_BANDS["landslide4sense"]
    assert bands[14:] == ENGINEERED_BANDS[: count - 14]


def test_table_v_names_in_order():
    # Bands 15-26 are addressable one by one, by these names.
    assert ENGINEERED_BANDS == (
        "blue_norm",
        "green_norm",
        "red_norm",
        "ndvi",
        "ndmi",
        "nbr",
        "gray",
        "gaussian",
        "median",
        "grad_y",
        "grad_x",
        "canny",
    )


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("ndvi", ("ndvi",)),
        ("B2,B3, NDVI ,median", ("B2", "B3", "ndvi", "median")),  # case and spaces do not matter
        ("14,ndvi,ndvi", DATASET_BANDS["landslide4sense"] + ("ndvi",)),  # duplicates collapse
        ("23,-slope,-dem", tuple(b for b in resolve_bands("23") if b not in ("slope", "dem"))),  # band-subset search
        ("26,-21", ("gaussian", "median", "grad_y", "grad_x", "canny")),
    ],
)
def test_band_specs_resolve_to_ordered_names(spec, expected):
    assert resolve_bands(spec) == expected


@pytest.mark.parametrize("spec", ["ndwi", "B13", "", " , ", "14,-14", "23,-gray,bogus"])
def test_bad_band_specs_are_config_errors(spec):
    # Unknown names and empty selections are refused by name, with the field first.
    with pytest.raises(ConfigError, match=r"^bands: "):
        resolve_bands(spec)


@pytest.mark.parametrize("dataset", ["bijie", "nepal"])
@pytest.mark.parametrize("band", ["ndvi", "ndmi", "nbr"])
def test_rgb_datasets_refuse_sentinel2_indices(dataset, band):
    # NDVI, NDMI, NBR need Sentinel-2 channels an RGB dataset lacks: a clear error naming them.
    with pytest.raises(ConfigError, match=rf"{band}.*needs the Sentinel-2 .*{dataset}"):
        resolve_bands(band, dataset)


@pytest.mark.parametrize("dataset", ["bijie", "nepal"])
def test_rgb_datasets_get_the_rest_of_the_sets(dataset):
    # A Table VI set on an RGB dataset keeps what the dataset can carry; the bands compute.
    rgb = ("red", "green", "blue")
    bands = resolve_bands("23", dataset)
    assert bands == rgb + ("blue_norm", "green_norm", "red_norm", "gray", "gaussian", "median")
    images = np.random.default_rng(0).uniform(0, 255, (3, 20, 20, 3)).astype(np.float32)
    out = engineer_bands(images, resolve_bands("26", dataset), dataset)
    assert out.shape == (3, 20, 20, 3 + 9) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("14", ("red", "green", "blue")),  # the paper's Bijie input: RGB only
        ("14,dem", ("red", "green", "blue", "dem")),
        ("17,dem", ("red", "green", "blue", "blue_norm", "green_norm", "red_norm", "dem")),
        ("DEM,gray", ("dem", "gray")),
    ],
)
def test_bijie_dem_is_opt_in(spec, expected):
    # Band sets start from Bijie's RGB; the DEM is there when named.
    assert resolve_bands(spec, "bijie") == expected


def test_engineering_reads_the_channels_it_is_given():
    # Bijie images with the DEM as a fourth channel give the same engineered bands as RGB alone.
    rgb = np.random.default_rng(1).uniform(0, 255, (2, 20, 20, 3)).astype(np.float32)
    with_dem = np.concatenate([rgb, np.full((2, 20, 20, 1), 900, np.float32)], axis=-1)
    names = ("dem", "gray", "median", "red")
    out = engineer_bands(with_dem, names, "bijie", channels=DATASET_BANDS["bijie"])
    np.testing.assert_array_equal(out[..., 1:], engineer_bands(rgb, names[1:], "bijie"))
    assert (out[..., 0] == 900).all()
    with pytest.raises(ConfigError, match="'dem' is not one of the images' channels"):
        engineer_bands(rgb, names, "bijie")


def test_engineered_bands_match_the_naive_reference():
    # The vectorised, threaded path equals the per-tile float64 SciPy loop (Canny up to ties).
    images, _ = scenes(5, size=40)
    names = resolve_bands("26")
    fast = engineer_bands(images, names, workers=2)
    slow = engineer_bands_reference(images, names)
    edges = names.index("canny")
    others = [k for k in range(len(names)) if k != edges]
    np.testing.assert_allclose(fast[..., others], slow[..., others], rtol=1e-5, atol=1e-5)
    assert (fast[..., edges] == slow[..., edges]).mean() > 0.999
    assert set(np.unique(fast[..., edges])) <= {0.0, 1.0} and fast[..., edges].any()


@pytest.mark.parametrize("size", [2, 3, 5, 10])
def test_median_filter_equals_scipy(size):
    # Even and odd windows, ties included, reflected borders: exactly SciPy's median_filter.
    x = np.round(np.random.default_rng(size).uniform(0, 4, (3, 17, 23))).astype(np.float32)
    expected = np.stack([ndimage.median_filter(t, size=size, mode="reflect") for t in x])
    np.testing.assert_array_equal(median_filter(x, size), expected)


def test_band_engineering_is_safe_against_division_by_zero():
    # All-zero and constant tiles: indices 0, min-max 0, no NaN or inf anywhere.
    images = np.zeros((2, 16, 16, 14), np.float32)
    images[1] = 3.0
    out = engineer_bands(images, resolve_bands("26"))
    assert np.isfinite(out).all()
    for name in ("ndvi", "ndmi", "nbr", "blue_norm", "canny"):
        assert not out[..., resolve_bands("26").index(name)].any()


def test_indices_stay_within_minus_one_and_one():
    # Released values may be negative: a ratio near a zero denominator is clipped, not huge.
    images = np.random.default_rng(1).normal(0, 1, (2, 16, 16, 14)).astype(np.float32)
    out = engineer_bands(images, ("ndvi", "ndmi", "nbr"))
    assert out.min() >= -1 and out.max() <= 1


def test_ndvi_separates_landslide_from_background_pixels():
    # On synthetic scenes vegetation loss is the signal: low NDVI ranks landslide pixels first.
    from sklearn.metrics import roc_auc_score

    images, masks = scenes(12, size=64, seed=3)
    ndvi = engineer_bands(images, ("ndvi",))[..., 0]
    auc = roc_auc_score(masks.reshape(-1), -ndvi.reshape(-1))
    assert auc > 0.85, auc


def test_band_names_resolve_without_tensorflow_or_scipy():
    # The study engine validates specs with resolve_bands: it must stay light.
    code = (
        "import sys; from rmaunet.data.bands import resolve_bands; resolve_bands('23,-dem', 'bijie'); "
        "print('tensorflow' in sys.modules, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_data_layer_imports_no_tensorflow():
    # Readers, bands, cache, splits, stats and checks work without TensorFlow.
    code = (
        "import sys, rmaunet.data, rmaunet.data.stats, rmaunet.data.check, rmaunet.data.synthetic, rmaunet.data.cli; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]
