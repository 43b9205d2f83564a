"""Windows over a scene and their blending, row strip by row strip (pure NumPy).

A scene is covered by square windows of the model's tile size, `overlap` pixels apart
from their neighbours' edges; the last window of a row or column is moved back to end at
the scene's edge. Overlapping predictions are blended with a smooth weight (a raised
sine ramp across the overlap, 1 inside), so no window's edge, where a U-Net sees the
least context, decides a pixel another window sees in its middle. Without overlap every
weight is 1 and the map is the windows' predictions themselves.

`StripBlender` keeps only the rows still open: a window row's rows above the next window
row are final and leave; memory is a few tile heights times the scene's width. It keeps
weighted sums, not probabilities, so consecutive parts of one scene's window rows, blended
apart (Ray tasks), add up to the whole scene's blend (`merge_parts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from rmaunet.errors import ConfigError

__all__ = ["offsets", "blend_weights", "blended", "StripBlender", "Sums", "split_rows", "merge_parts"]

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


Sums = tuple[int, np.ndarray, np.ndarray, np.ndarray]
"""Finished scene rows: (first scene row, Σ weight × probability, Σ weight, nodata), each (rows, width)."""


def blended(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The blended probabilities of weighted sums (every covered pixel has a positive weight)."""
    return total / np.maximum(weight, np.float32(1e-12))


class StripBlender:
    """Weighted sums of window predictions for the open rows; finished rows come out.

    `rows` is the window rows this blender sees (default: all of the scene's); a part of
    them (a Ray task's share of one scene) ends at its last window's bottom, and its border
    rows carry only its own windows' share of the sums, for `merge_parts` to complete.
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int, rows: Sequence[int] | None = None) -> None:
        self.height, self.width, self.tile = height, width, tile
        self.rows = offsets(height, tile, overlap) if rows is None else list(rows)
        self.columns = offsets(width, tile, overlap)
        self.weights = blend_weights(tile, overlap)
        self.top = self.rows[0]  # the scene row of the buffers' first row
        self.end = min(self.rows[-1] + tile, height)  # below the last window
        self.total = np.zeros((tile, width), np.float32)
        self.weight = np.zeros((tile, width), np.float32)

    def add(self, row: int, probs: np.ndarray) -> None:
        """Predictions (len(columns), tile, tile) of the windows starting at scene row `row`."""
        h = min(self.tile, self.height - row)
        w = min(self.tile, self.width)
        r = row - self.top
        weights = self.weights[:h, :w]
        for col, prob in zip(self.columns, probs):
            self.total[r : r + h, col : col + w] += prob[:h, :w] * weights
            self.weight[r : r + h, col : col + w] += weights

    def finish(self, next_row: int | None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The rows final once every window before `next_row` (None: the last) is added:
        (first scene row, weighted sum, weight sum)."""
        end = self.end if next_row is None else next_row
        n = end - self.top
        if n <= 0:
            return
        yield self.top, self.total[:n].copy(), self.weight[:n].copy()
        self.total = np.concatenate([self.total[n:], np.zeros((n, self.width), np.float32)])
        self.weight = np.concatenate([self.weight[n:], np.zeros((n, self.width), np.float32)])
        self.top = end


def split_rows(rows: Sequence[int], per_part: int) -> list[list[int]]:
    """Consecutive window rows, `per_part` at most in each part."""
    if per_part < 1:
        raise ConfigError(f"window rows per task: {per_part} must be at least 1")
    return [list(rows[k : k + per_part]) for k in range(0, len(rows), per_part)]


def merge_parts(parts: Iterable[Sums]) -> Iterator[Sums]:
    """The sums of consecutive parts of one scene (each over its own window rows, in row
    order) as finished rows: a part's rows that the next part's windows also cover get that
    part's share added before they leave, so the result is the whole scene's blend."""
    held: Sums | None = None
    for top, total, weight, invalid in parts:
        if held is not None:
            h_top, h_total, h_weight, h_invalid = held
            shared = h_top + len(h_total) - top  # rows both parts cover
            if shared > 0:  # new arrays: a part from Ray's object store is read-only
                total = np.concatenate([h_total[-shared:] + total[:shared], total[shared:]])
                weight = np.concatenate([h_weight[-shared:] + weight[:shared], weight[shared:]])
            own = top - h_top
            yield h_top, h_total[:own], h_weight[:own], h_invalid[:own]
        held = (top, total, weight, invalid)
    if held is not None:
        yield held
