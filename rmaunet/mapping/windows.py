"""Windows over a scene and their blending, row strip by row strip (pure NumPy).

A scene is covered by square windows of the model's tile size, `overlap` pixels apart
from their neighbours' edges; the last window of a row or column is moved back to end at
the scene's edge. Overlapping predictions are blended with a smooth weight (a raised
sine ramp across the overlap, 1 inside), so no window's edge, where a U-Net sees the
least context, decides a pixel another window sees in its middle. Without overlap every
weight is 1 and the map is the windows' predictions themselves.

`StripBlender` keeps only the rows still open: a window row's rows above the next window
row are final and leave; memory is a few tile heights times the scene's width.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rmaunet.errors import ConfigError

__all__ = ["offsets", "blend_weights", "StripBlender"]

_MIN_WEIGHT = 1e-3  # the window's own edge still counts where no other window reaches


def offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each window along one axis of `length` pixels."""
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap: {overlap} must be in [0, tile size {tile})")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 weights: 1 inside, a sin² ramp over the `overlap` border pixels."""
    if overlap == 0:
        return np.ones((tile, tile), np.float32)
    i = np.arange(tile, dtype=np.float64) + 0.5
    ramp = np.minimum(1.0, np.minimum(i, tile - i) / overlap)
    line = np.maximum(np.sin(0.5 * np.pi * ramp) ** 2, _MIN_WEIGHT)
    return np.outer(line, line).astype(np.float32)


class StripBlender:
    """Weighted sums of window predictions for the open rows; finished rows come out."""

    def __init__(self, height: int, width: int, tile: int, overlap: int) -> None:
        self.height, self.width, self.tile = height, width, tile
        self.rows = offsets(height, tile, overlap)
        self.columns = offsets(width, tile, overlap)
        self.weights = blend_weights(tile, overlap)
        self.top = 0  # the scene row of the buffers' first row
        self.total = np.zeros((tile, width), np.float32)
        self.weight = np.zeros((tile, width), np.float32)

    def add(self, row: int, probs: np.ndarray) -> None:
        """Predictions (len(columns), tile, tile) of the windows starting at scene row `row`."""
        h = min(self.tile, self.height - row)
        w = min(self.tile, self.width)
        r = row - self.top
        for col, prob in zip(self.columns, probs):
            weights = self.weights[:h, :w]
            self.total[r : r + h, col : col + w] += prob[:h, :w] * weights
            self.weight[r : r + h, col : col + w] += weights

    def finish(self, next_row: int | None) -> Iterator[tuple[int, np.ndarray]]:
        """The rows final once every window before `next_row` (None: the last) is added:
        (first scene row, blended probabilities)."""
        end = self.height if next_row is None else next_row
        n = end - self.top
        if n <= 0:
            return
        prob = self.total[:n] / np.maximum(self.weight[:n], np.float32(1e-12))
        yield self.top, prob
        self.total = np.concatenate([self.total[n:], np.zeros((n, self.width), np.float32)])
        self.weight = np.concatenate([self.weight[n:], np.zeros((n, self.width), np.float32)])
        self.top = end
