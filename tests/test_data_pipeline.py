"""tf.data pipeline: rotation and cutmix keep image and mask paired, seeded, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

tf = pytest.importorskip("tensorflow")

from rmaunet.data.augment import CUTMIX_MARGIN, rotation_table  # noqa: E402
from rmaunet.data.pipeline import make_dataset  # noqa: E402
from rmaunet.errors import ConfigError  # noqa: E402

N, SIZE = 24, 16


def tiles() -> tuple[np.ndarray, np.ndarray]:
    """Channel 0 repeats the mask, channel 1 is the tile id, channel 2 the pixel position."""
    rng = np.random.default_rng(0)
    y = np.zeros((N, SIZE, SIZE), np.uint8)
    for i in range(0, N, 2):  # every other tile holds one landslide blob
        r, c = rng.integers(2, SIZE - 6, size=2)
        y[i, r : r + 4, c : c + 3] = 1
    x = np.zeros((N, SIZE, SIZE, 3), np.float32)
    x[..., 0] = y
    x[..., 1] = np.arange(N)[:, None, None]
    x[..., 2] = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    return x, y


def batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(a.numpy(), b.numpy()) for a, b in ds]


@pytest.mark.parametrize("augment", [(), ("rotation",), ("cutmix",), ("rotation", "cutmix")])
def test_image_and_mask_stay_paired(augment):
    # Whatever the augmentation, the mask moves with the image: channel 0 still equals the mask.
    x, y = tiles()
    for _ in range(2):  # two epochs
        for image, mask in batches(make_dataset(x, y, 5, training=True, augment=augment, seed=3)):
            assert image.shape[1:] == (SIZE, SIZE, 3) and mask.shape[1:] == (SIZE, SIZE, 1)
            assert image.dtype == np.float32 and mask.dtype == np.float32
            np.testing.assert_array_equal(image[..., 0], mask[..., 0])


def test_rotation_turns_by_multiples_of_90_degrees():
    # Each output is its tile turned by 0, 90, 180 or 270 degrees, and all four angles occur.
    x, y = tiles()
    seen = set()
    for image, _ in batches(make_dataset(x, y, 8, training=True, augment=("rotation",), seed=1)):
        for out in image:
            tile = int(out[0, 0, 1])
            turns = [k for k in range(4) if np.array_equal(out, np.rot90(x[tile], k))]
            assert len(turns) == 1
            seen.add(turns[0])
    assert seen == {0, 1, 2, 3}


def test_cutmix_pastes_other_tiles_landslides_with_their_masks():
    # Pasted pixels come from landslide tiles, at the same place, with their mask; some
    # landslide-free tiles gain a landslide this way.
    x, y = tiles()
    gained = 0
    for image, mask in batches(make_dataset(x, y, 8, training=True, augment=("cutmix",), seed=2)):
        for out, m in zip(image, mask):
            ids = np.unique(out[..., 1]).astype(int)
            own = int(np.bincount(out[..., 1].astype(int).ravel()).argmax())
            for donor in set(ids) - {own}:
                pasted = out[..., 1] == donor
                assert y[donor].any()
                np.testing.assert_array_equal(out[pasted][:, 2], x[donor][pasted][:, 2])  # same place
                np.testing.assert_array_equal(m[..., 0][pasted], y[donor][pasted])
                # the pasted region is exactly the donor's landslide grown by the margin
                grown = ndimage.maximum_filter(y[donor], size=2 * CUTMIX_MARGIN + 1, mode="constant") > 0
                np.testing.assert_array_equal(pasted, grown)
            gained += not y[own].any() and m.any()
    assert gained > 0


def test_same_seed_same_batches_new_epoch_new_order():
    # A seed fixes shuffling and augmentation; the next epoch reshuffles.
    x, y = tiles()
    make = lambda seed: make_dataset(x, y, 6, training=True, augment=("rotation", "cutmix"), seed=seed)  # noqa: E731
    ds = make(5)
    first, second = batches(ds), batches(ds)
    again = batches(make(5))
    other = batches(make(6))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_evaluation_batches_keep_order_and_pixels():
    x, y = tiles()
    out = batches(make_dataset(x, y, 7, training=False))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out])[..., 0], y)


def test_cutmix_without_any_landslide_tile_is_a_no_op():
    x, y = tiles()
    y[:] = 0
    x[..., 0] = 0
    for image, mask in batches(make_dataset(x, y, 8, training=True, augment=("cutmix",), seed=0)):
        assert not mask.any()
        for out in image:
            assert len(np.unique(out[..., 1])) == 1


def test_rotation_table_of_non_square_tiles_only_flips():
    # 90-degree turns would change a non-square tile's shape: only 0 and 180 are used.
    table = rotation_table(2, 3)
    assert table.shape == (4, 6)
    assert {tuple(row) for row in table.tolist()} == {tuple(range(6)), tuple(range(5, -1, -1))}


def test_unknown_augmentation_is_refused():
    x, y = tiles()
    with pytest.raises(ConfigError, match="mixup"):
        make_dataset(x, y, 4, training=True, augment=("mixup",))


@pytest.mark.slow
def test_benchmark_prints_its_json_last():
    # bench/data_pipeline.py (small sizes): the last line is JSON with the two headline keys.
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "data_pipeline.py"
    args = ["--tiles", "8", "--pipeline-tiles", "32", "--size", "32", "--batch", "8"]
    out = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["engineer_speedup"] > 0 and result["pipeline_tiles_per_s"] > 0
    assert result["canny_agreement"] > 0.99 and result["engineer_max_abs_difference"] < 1e-4
