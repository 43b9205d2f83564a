"""prepare_splits: the three datasets, fixed test splits, seeded validation, normalisation, cache."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import rmaunet.data.cache as cache_module
from rmaunet.config import TrialConfig
from rmaunet.data import OFFICIAL_L4S_MEAN, OFFICIAL_L4S_STD, fingerprint, prepare_splits
from rmaunet.data.cache import CACHE_DIR_NAME
from rmaunet.data.reader import TileReader
from rmaunet.data.splits import grouped_split, stratified_split, tile_groups
from rmaunet.data.synthetic import write_dataset
from rmaunet.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def l4s(tmp_path_factory) -> Path:
    return write_dataset("landslide4sense", tmp_path_factory.mktemp("l4s"), n=50, seed=4, size=32)


@pytest.fixture(scope="module")
def bijie(tmp_path_factory) -> Path:
    return write_dataset("bijie", tmp_path_factory.mktemp("bijie"), n=40, seed=4, size=32)


@pytest.fixture(scope="module")
def nepal(tmp_path_factory) -> Path:
    return write_dataset("nepal", tmp_path_factory.mktemp("nepal"), n=20, seed=4, size=32)


def _keys(x: np.ndarray) -> set[bytes]:
    return {tile.tobytes() for tile in x}


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.5])
@pytest.mark.parametrize("n_slide", [0, 1, 7, 30])
def test_stratified_split_sizes_and_strata(fraction, n_slide):
    # round(fraction·n) held out (at least 1), each stratum in proportion, disjoint and complete.
    has = np.zeros(30, bool)
    has[:n_slide] = True
    keep, held = stratified_split(has, fraction, seed=3)
    assert len(held) == max(1, round(fraction * 30))
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(30))
    assert abs(has[held].sum() - fraction * n_slide) <= 1


@pytest.mark.parametrize("dataset, bands, test_share", [("landslide4sense", "23", 0.2), ("bijie", "23", 0.3)])
def test_pooled_datasets_split_train_val_test(request, dataset, bands, test_share):
    # L4S 80:20 and Bijie 70:30 train:test, validation from train; float32 NHWC, uint8 masks.
    root = request.getfixturevalue("l4s" if dataset == "landslide4sense" else "bijie")
    s = prepare_splits(TrialConfig(dataset=dataset, bands=bands, normalisation="none"), root)
    n = len(s.x_train) + len(s.x_val) + len(s.x_test)
    assert n == {"landslide4sense": 50, "bijie": 40}[dataset]
    assert len(s.x_test) == round(test_share * n)
    assert len(s.x_val) == round(0.1 * (n - len(s.x_test)))
    assert s.x_train.dtype == np.float32 and s.x_train.shape[1:] == (32, 32, s.num_bands)
    assert s.num_bands == len(s.band_names) == (23 if dataset == "landslide4sense" else 9)  # Bijie: RGB + 6
    assert s.y_train.dtype == np.uint8 and set(np.unique(s.y_train)) <= {0, 1}
    assert not (
        _keys(s.x_train) & _keys(s.x_test) or _keys(s.x_val) & _keys(s.x_test) or _keys(s.x_train) & _keys(s.x_val)
    )


def test_nepal_tests_on_its_test_folder_and_develops_on_the_rest(nepal):
    # Test = the test folder; train and validation are carved (seeded) from train + validation.
    from rmaunet.data import Nepal

    s = prepare_splits(TrialConfig(dataset="nepal", bands="14", normalisation="none"), nepal)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (14, 2, 4)
    assert s.band_names == ("red", "green", "blue")
    assert _keys(s.x_test) == _keys(Nepal(nepal, "test").load().images)
    other = prepare_splits(TrialConfig(dataset="nepal", bands="14", normalisation="none", seed=3), nepal)
    assert _keys(other.x_val) != _keys(s.x_val) and _keys(other.x_test) == _keys(s.x_test)
    assert s.yd_test.all()


def test_test_split_ignores_the_trial_seed_validation_follows_it(l4s):
    # Every trial of a study is scored on the same test images; validation moves with the seed.
    a = prepare_splits(TrialConfig(seed=0, normalisation="none"), l4s)
    b = prepare_splits(TrialConfig(seed=1, normalisation="none"), l4s)
    assert _keys(a.x_test) == _keys(b.x_test)
    assert _keys(a.x_val) != _keys(b.x_val)
    c = prepare_splits(TrialConfig(seed=1, normalisation="none"), l4s)
    np.testing.assert_array_equal(b.x_val, c.x_val)


def test_splits_are_stratified_by_has_a_landslide(l4s):
    # Each part's share of landslide tiles is the pool's (58 %), up to rounding.
    s = prepare_splits(TrialConfig(normalisation="none"), l4s)
    pool = np.concatenate([s.yd_train, s.yd_val, s.yd_test]).mean()
    for part in (s.yd_train, s.yd_test):
        assert abs(part.mean() - pool) <= 1.0 / len(part) + 1e-9


def test_detection_labels_follow_the_masks(bijie):
    # yd_* = 1 exactly for the tiles whose mask holds a landslide.
    s = prepare_splits(TrialConfig(dataset="bijie", normalisation="none"), bijie)
    for _x, y, yd in ((s.x_train, s.y_train, s.yd_train), (s.x_test, s.y_test, s.yd_test)):
        assert yd.dtype == np.uint8 and yd.tolist() == y.reshape(len(y), -1).any(axis=1).astype(int).tolist()
    assert 0 < s.yd_train.mean() < 1


def test_train_stats_normalisation(l4s):
    # Each band of the training split has mean 0 and standard deviation 1.
    s = prepare_splits(TrialConfig(bands="23"), l4s)
    flat = s.x_train.reshape(-1, s.num_bands).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1, atol=1e-3)
    assert s.norm_mean.shape == (23,)


def test_official_normalisation_uses_the_released_constants(l4s):
    # The 14 originals use the official mean / std; engineered bands use training statistics.
    raw = prepare_splits(TrialConfig(bands="14,ndvi", normalisation="none"), l4s)
    official = prepare_splits(TrialConfig(bands="14,ndvi", normalisation="official"), l4s)
    expected = (raw.x_test[..., :14] - np.array(OFFICIAL_L4S_MEAN)) / np.array(OFFICIAL_L4S_STD)
    np.testing.assert_allclose(official.x_test[..., :14], expected, rtol=1e-5, atol=1e-5)
    assert abs(official.x_train[..., 14].mean()) < 1e-3


def test_official_normalisation_is_landslide4sense_only(bijie):
    with pytest.raises(ConfigError, match="official"):
        prepare_splits(TrialConfig(dataset="bijie", normalisation="official"), bijie)


def test_crop_is_the_centre_of_the_engineered_tile(l4s):
    # Bands are engineered on whole tiles, then cut: the crop equals the centre of the full tile.
    full = prepare_splits(TrialConfig(bands="23", normalisation="none"), l4s)
    crop = prepare_splits(TrialConfig(bands="23", normalisation="none", crop=16), l4s)
    assert crop.x_train.shape[1:3] == (16, 16)
    np.testing.assert_array_equal(crop.x_test, full.x_test[:, 8:24, 8:24])
    np.testing.assert_array_equal(crop.y_test, full.y_test[:, 8:24, 8:24])


def test_max_tiles_limits_the_pool_to_a_seeded_random_subset(l4s):
    # Not the first 20 files in numeric order (real tiles are numbered by region): a fixed
    # random subset, the same in every trial, kept in file order.
    from rmaunet.data.landslide4sense import Landslide4Sense

    s = prepare_splits(TrialConfig(max_tiles=20, normalisation="none"), l4s)
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 20
    reader = Landslide4Sense(l4s, "train")
    subset = reader.subset(20)
    assert subset == reader.subset(20) and subset != reader.samples[:20]
    assert [reader.samples.index(x) for x in subset] == sorted(reader.samples.index(x) for x in subset)
    assert reader.subset(None) == reader.subset(10**6) == reader.samples


# A grouped split keeps each region whole on one side, near the asked fraction, seeded.
def test_grouped_split_holds_whole_regions_out():
    groups = [f"r{i % 7}" for i in range(70)]
    keep, held = grouped_split(groups, 0.3, seed=1)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(70))
    assert not {groups[i] for i in keep} & {groups[i] for i in held}
    assert len(held) in (20, 30)  # whole regions of 10: the count nearest 21
    assert np.array_equal(grouped_split(groups, 0.3, seed=1)[1], held)
    with pytest.raises(DataError, match="at least two"):
        grouped_split(["a"] * 5, 0.3, seed=0)


# Regions come from the file name (a regex's first group) or a CSV of file,group; an unplaced tile is refused.
def test_tile_groups_from_a_pattern_or_a_csv(tmp_path):
    paths = [Path("img/image_1.h5"), Path("img/image_12.h5"), Path("img/image_13.h5")]
    assert tile_groups(paths, r"regex:image_(\d)") == ["1", "1", "1"]
    assert tile_groups(paths, r"regex:\d+") == ["1", "12", "13"]
    table = tmp_path / "regions.csv"
    table.write_text("file,group\nimage_1.h5,north\nimage_12.h5,south\nimage_13.h5,south\n")
    assert tile_groups(paths, f"csv:{table}") == ["north", "south", "south"]
    with pytest.raises(DataError, match="finds no region in the file name 'image_1.h5'"):
        tile_groups(paths, "regex:scene")
    table.write_text("file,group\nimage_1.h5,north\n")
    with pytest.raises(DataError, match="no group for 'image_12.h5'"):
        tile_groups(paths, f"csv:{table}")


# With split_groups, no region has tiles in two of train / validation / test, and the test
# tiles' regions travel with the splits (the bootstrap resamples them).
def test_split_groups_keep_regions_out_of_each_others_splits(l4s):
    from rmaunet.data.bands import resolve_bands
    from rmaunet.data.prepare import _plan

    rule = r"regex:(\d)\.h5$"  # ten regions: the tile number's last digit
    config = TrialConfig(normalisation="none", split_groups=rule)
    names = resolve_bands("14", "landslide4sense")
    dev, parts, _, test = _plan(config, names, l4s, fingerprint(l4s, "landslide4sense"))
    regions = np.asarray(tile_groups(dev.paths(), rule))
    sides = [set(regions[parts["train"]]), set(regions[parts["val"]]), set(regions[test])]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    s = prepare_splits(config, l4s)
    assert s.test_groups is not None and sorted(s.test_groups) == sorted(regions[test].tolist())


def test_bijie_dem_is_opt_in_and_cached_apart(bijie, monkeypatch):
    # Bijie trains on RGB by default; "14,dem" adds the DEM, with the same RGB values and splits.
    monkeypatch.delenv("RMAUNET_CACHE_DIR", raising=False)
    rgb = prepare_splits(TrialConfig(dataset="bijie", bands="14", normalisation="none"), bijie)
    dem = prepare_splits(TrialConfig(dataset="bijie", bands="14,dem", normalisation="none"), bijie)
    assert rgb.band_names == ("red", "green", "blue") and dem.band_names == ("red", "green", "blue", "dem")
    np.testing.assert_array_equal(dem.x_test[..., :3], rgb.x_test)
    np.testing.assert_array_equal(dem.y_train, rgb.y_train)
    assert dem.x_train[..., 3].max() > 255  # elevation in metres, not an 8-bit channel
    # The two channel sets are cached side by side, each with the channels it holds.
    entries = {p.parent.name: p for p in (bijie / CACHE_DIR_NAME).rglob("originals.npy")}
    assert np.load(entries["all"], mmap_mode="r").shape[-1] == 4
    assert np.load(entries["all-without-dem"], mmap_mode="r").shape[-1] == 3


def test_rgb_dataset_refuses_a_sentinel2_band(bijie):
    with pytest.raises(ConfigError, match="ndvi"):
        prepare_splits(TrialConfig(dataset="bijie", bands="ndvi"), bijie)


def test_too_few_tiles_is_a_data_error(tmp_path):
    write_dataset("landslide4sense", tmp_path, n=2, seed=0, size=16)
    with pytest.raises(DataError, match="too few tiles"):
        prepare_splits(TrialConfig(), tmp_path)


def test_replaced_nan_pixels_are_reported(tmp_path, caplog):
    # NaN pixels are replaced by 0, counted in Splits and reported in a warning naming a file.
    import h5py

    root = write_dataset("landslide4sense", tmp_path, n=12, seed=0, size=16)
    with h5py.File(root / "TrainData/img/image_3.h5", "r+") as f:
        f["img"][0, 0, :] = np.nan
    with caplog.at_level(logging.WARNING, logger="rmaunet.data"):
        s = prepare_splits(TrialConfig(normalisation="none"), root)
    assert s.nan_pixels == 14
    assert "replaced 14 NaN" in caplog.text and "image_3.h5" in caplog.text
    assert all(np.isfinite(x).all() for x in (s.x_train, s.x_val, s.x_test))


# ---------------------------------------------------------------------- cache
def _entries(root: Path) -> list[Path]:
    return sorted((root / CACHE_DIR_NAME).glob("*/*"))


def test_engineered_bands_are_cached_and_memory_mapped(tmp_path, monkeypatch):
    # The first run computes each band once and stores it; later runs only map the files.
    root = write_dataset("landslide4sense", tmp_path, n=20, seed=1, size=32)
    first = prepare_splits(TrialConfig(bands="23"), root)
    [entry] = _entries(root)
    assert {p.name for p in entry.glob("*.npy")} >= {"originals.npy", "masks.npy", "band-ndvi.npy", "band-median.npy"}

    def refuse(*args, **kwargs):
        raise AssertionError("bands were computed again")

    monkeypatch.setattr(cache_module, "engineer_bands", refuse)
    monkeypatch.setattr(TileReader, "load", refuse)
    again = prepare_splits(TrialConfig(bands="23"), root)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    subset = prepare_splits(TrialConfig(bands="14,median,ndvi"), root)  # a subset: also no new work
    assert subset.num_bands == 16


def test_a_changed_file_changes_the_fingerprint_and_the_cache_entry(tmp_path):
    # Editing one data file gives a new fingerprint, so stale cached bands are never read.
    import h5py

    root = write_dataset("landslide4sense", tmp_path, n=12, seed=1, size=16)
    before = fingerprint(root, "landslide4sense")
    prepare_splits(TrialConfig(bands="17"), root)
    assert fingerprint(root, "landslide4sense") == before  # the cache folder is not data
    with h5py.File(root / "TrainData/img/image_5.h5", "r+") as f:
        f["img"][0, 0, 0] = 99.0
    os.utime(root / "TrainData/img/image_5.h5", ns=(1, 1))
    assert fingerprint(root, "landslide4sense") != before
    s = prepare_splits(TrialConfig(bands="17", normalisation="none"), root)
    assert len(_entries(root)) == 2
    assert s.fingerprint == fingerprint(root, "landslide4sense")


def test_cache_can_be_moved_or_switched_off(tmp_path, monkeypatch):
    # RMAUNET_CACHE_DIR picks the folder; "off" keeps everything in memory.
    root = write_dataset("landslide4sense", tmp_path / "data", n=12, seed=1, size=16)
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "elsewhere"))
    moved = prepare_splits(TrialConfig(bands="21"), root)
    assert list((tmp_path / "elsewhere").glob("*/*/band-gray.npy"))
    monkeypatch.setenv("RMAUNET_CACHE_DIR", "off")
    off = prepare_splits(TrialConfig(bands="21"), root)
    assert not (root / CACHE_DIR_NAME).exists()
    np.testing.assert_array_equal(moved.x_val, off.x_val)


def test_concurrent_trials_share_one_cache_entry(tmp_path):
    # Trials starting together on a node compute each band once and all read whole files.
    root = write_dataset("landslide4sense", tmp_path, n=16, seed=2, size=32)
    results, errors = [None] * 4, []

    def trial(i: int) -> None:
        try:
            results[i] = prepare_splits(TrialConfig(bands="26", seed=i % 2), root)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in ((0, 2), (1, 3)):  # same seed, same arrays
        np.testing.assert_array_equal(results[a].x_test, results[b].x_test)
        np.testing.assert_array_equal(results[a].x_val, results[b].x_val)
    assert not list((root / CACHE_DIR_NAME).rglob("*.tmp"))


def test_read_only_data_folders_are_never_written(tmp_path, monkeypatch):
    # A folder without write permission (a shared mount, a fixture) gets its cache in ~/.cache.
    from rmaunet.data.cache import cache_root

    monkeypatch.delenv("RMAUNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        assert cache_root(data) == tmp_path / "home" / ".cache" / "rmaunet"
        assert not (data / CACHE_DIR_NAME).exists()
    finally:
        data.chmod(0o755)
