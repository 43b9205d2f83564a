"""Windows over a scene and their blending: pure NumPy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from rmaunet.errors import ConfigError
from rmaunet.mapping.windows import StripBlender, blend_weights, blended, merge_parts, offsets, split_rows


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (96, 32, 0, [0, 32, 64]),  # exact tiling
        (100, 32, 0, [0, 32, 64, 68]),  # the last window moves back to end at the edge
        (96, 32, 8, [0, 24, 48, 64]),
        (20, 32, 8, [0]),  # a scene smaller than a window: one (padded) window
    ],
)
def test_offsets_cover_the_axis(length, tile, overlap, expected):
    # Every pixel is inside some window, and no window starts past the edge.
    assert offsets(length, tile, overlap) == expected


def test_overlap_must_leave_a_stride():
    with pytest.raises(ConfigError, match="overlap"):
        offsets(100, 32, 32)


def test_blend_weights_are_smooth_positive_and_flat_inside():
    # 1 in the middle, a monotone ramp to a small positive value at the edge, symmetric.
    w = blend_weights(32, 8)
    assert w.min() > 0 and w[8:24, 8:24].min() == 1.0
    assert np.all(np.diff(w[16, :9]) >= 0) and np.allclose(w, w[::-1, ::-1])
    assert np.array_equal(blend_weights(32, 0), np.ones((32, 32), np.float32))


def _blend(height, width, tile, overlap, predict):
    """Run StripBlender over a scene the way predict_scene does; returns the stitched map."""
    blender = StripBlender(height, width, tile, overlap)
    out = np.full((height, width), np.nan, np.float32)
    rows = blender.rows
    for i, row in enumerate(rows):
        blender.add(row, np.stack([predict(row, col) for col in blender.columns]))
        for top, total, weight in blender.finish(rows[i + 1] if i + 1 < len(rows) else None):
            assert np.isnan(out[top : top + len(total)]).all()  # each row leaves exactly once
            out[top : top + len(total)] = blended(total, weight)
    return out


def _part_sums(height, width, tile, overlap, rows, predict):
    """One part's finished sums, as a Ray task returns them: (top, total, weight, nodata)."""
    blender = StripBlender(height, width, tile, overlap, rows)
    pieces = []
    for i, row in enumerate(rows):
        blender.add(row, np.stack([predict(row, col) for col in blender.columns]))
        pieces += blender.finish(rows[i + 1] if i + 1 < len(rows) else None)
    total, weight = (np.concatenate([p[k] for p in pieces]) for k in (1, 2))
    sums = [total, weight, np.zeros(total.shape, bool)]
    for array in sums:
        array.flags.writeable = False  # as Ray's object store hands them back
    return pieces[0][0], *sums


@pytest.mark.parametrize(("height", "width", "overlap"), [(96, 128, 0), (100, 70, 8), (40, 20, 8)])
def test_windows_agreeing_on_a_scene_reproduce_it(height, width, overlap):
    # When every window predicts the same underlying field, blending gives back that field.
    field = np.random.default_rng(0).random((height + 32, width + 32)).astype(np.float32)
    out = _blend(height, width, 32, overlap, lambda r, c: field[r : r + 32, c : c + 32])
    np.testing.assert_allclose(out, field[:height, :width], rtol=1e-6)


def test_blending_weighs_a_window_centre_over_its_edge():
    # Two windows disagree (0 and 1) on their overlap: the blend moves smoothly from one to the other.
    out = _blend(32, 56, 32, 8, lambda r, c: np.full((32, 32), float(c > 0), np.float32))
    row = out[16]
    assert row[0] == 0 and row[-1] == 1
    assert np.all(np.diff(row) >= 0) and 0 < row[28] < 1


@pytest.mark.parametrize(("height", "overlap", "per_part"), [(200, 8, 2), (200, 20, 1), (150, 0, 3), (100, 8, 9)])
def test_parts_blended_apart_merge_into_the_whole_blend(height, overlap, per_part):
    # Window rows split into parts (one per Ray task), blended apart, merged: the one-process map.
    rng = np.random.default_rng(1)
    windows = {}

    def predict(r, c):  # windows disagree on their overlaps, as a model's do
        return windows.setdefault((r, c), rng.random((32, 32), np.float32))

    whole = _blend(height, 70, 32, overlap, predict)
    shares = split_rows(offsets(height, 32, overlap), per_part)
    parts = [_part_sums(height, 70, 32, overlap, rows, predict) for rows in shares]
    out = np.full((height, 70), np.nan, np.float32)
    for top, total, weight, _ in merge_parts(parts):
        assert np.isnan(out[top : top + len(total)]).all()
        out[top : top + len(total)] = blended(total, weight)
    np.testing.assert_allclose(out, whole, atol=1e-6)
