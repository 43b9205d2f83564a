"""Online augmentation (Section III-A): rotation by 90/180/270 degrees, then cutmix that
pastes the landslide regions of other landslide tiles, with their mask, into a tile.

Both are expressed as *where each output pixel comes from*: a batch's augmented images
and masks are then one gather each from the stored tiles, with the same indices. That is
fast (one memory pass per batch, whatever the augmentations) and makes the image / mask
pairing exact by construction. Randomness is stateless, from per-batch seeds, so a run
is reproducible and parallel map calls cannot race on a generator's state.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["CUTMIX_PROBABILITY", "CUTMIX_MARGIN", "rotation_table", "grown_regions", "source_indices"]

CUTMIX_PROBABILITY = 0.5  # share of tiles that receive pasted landslides
CUTMIX_MARGIN = 2  # pixels of the donor's surroundings pasted around its landslides


def rotation_table(height: int, width: int, dtype: type = np.int64) -> np.ndarray:
    """(4, H·W): for k quarter turns, the source pixel of each output pixel.
    Non-square tiles only turn by 0 or 180 degrees (rows 1 and 3 repeat rows 0 and 2)."""
    grid = np.arange(height * width, dtype=dtype).reshape(height, width)
    if height != width:
        turns = [grid, np.rot90(grid, 2), grid, np.rot90(grid, 2)]
    else:
        turns = [np.rot90(grid, k) for k in range(4)]
    return np.stack([t.reshape(-1) for t in turns])


def grown_regions(masks: np.ndarray, margin: int = CUTMIX_MARGIN) -> np.ndarray:
    """(N, H·W) bool: each tile's landslide pixels grown by `margin` (what cutmix pastes)."""
    from scipy import ndimage

    grown = ndimage.maximum_filter(masks > 0, size=(1, 2 * margin + 1, 2 * margin + 1), mode="constant")
    return grown.reshape(len(masks), -1)


def source_indices(
    tiles: tf.Tensor,
    seed: tf.Tensor,
    *,
    pixels: int,
    rotations: tf.Tensor | None,
    donor_ids: tf.Tensor | None,
    donor_regions: tf.Tensor | None,
) -> tf.Tensor:
    """(B, H·W) flat indices into the stored (N·H·W, …) pixels for a batch of tile ids.

    rotations: `rotation_table` as a tensor, or None for no rotation.
    donor_ids, donor_regions: the tiles that hold landslides and their `grown_regions`
    (D, H·W), or None for no cutmix.
    """
    batch = tf.shape(tiles)[0]
    dtype = tiles.dtype
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    if rotations is not None:
        k = tf.random.stateless_uniform([batch], seeds[0], 0, 4, dtype=tf.int32)
        positions = tf.gather(rotations, k)
    else:
        positions = tf.range(pixels, dtype=dtype)[None]
    sources = tiles[:, None] * pixels + positions
    if donor_ids is None:
        return tf.broadcast_to(sources, [batch, pixels])
    assert donor_regions is not None
    pick = tf.random.stateless_uniform([batch], seeds[1], 0, tf.shape(donor_ids)[0], dtype=tf.int32)
    apply = tf.random.stateless_uniform([batch], seeds[2]) < CUTMIX_PROBABILITY
    # The donor's landslides grown by a margin, pasted at the same place (the terrain
    # context of a scar comes with it; its orientation is the donor's own).
    region = tf.logical_and(tf.gather(donor_regions, pick), apply[:, None])
    donor_sources = tf.gather(donor_ids, pick)[:, None] * pixels + tf.range(pixels, dtype=dtype)[None]
    return tf.where(region, donor_sources, sources)
