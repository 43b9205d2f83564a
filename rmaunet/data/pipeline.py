"""tf.data pipelines over in-memory (or memory-mapped) arrays.

Training batches are built from shuffled tile ids: each batch's augmentation becomes a
table of source pixels (`rmaunet.data.augment`) and the images and masks are gathered
with it from the stored arrays, in parallel map calls. The arrays travel as one dataset
element (by reference, never copied per batch) rather than as captured constants or
variables, so the pipeline works the same inside a distribution strategy's scope.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from rmaunet.data.augment import grown_regions, rotation_table, source_indices
from rmaunet.errors import ConfigError

__all__ = ["make_dataset", "AUGMENTATIONS"]

AUGMENTATIONS = ("rotation", "cutmix")


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    augment: tuple[str, ...] = (),
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (image float32 NHWC, mask float32 NHW1); shuffled and augmented when training."""
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"augment: unknown value {unknown[0]!r} (choose one of: {', '.join(AUGMENTATIONS)})")
    images = np.ascontiguousarray(x, dtype=np.float32)
    masks = np.ascontiguousarray(y, dtype=np.float32)[..., None]
    if not training:
        return _fixed_tuning(tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).prefetch(2))

    n, height, width, channels = images.shape
    pixels = height * width
    # 32-bit pixel indices are faster to make and to gather with, while they fit.
    index_type = np.int32 if n * pixels < 2**31 else np.int64
    stored = {"pixels": images.reshape(n * pixels, channels), "masks": masks.reshape(n * pixels)}
    if "rotation" in augment:
        stored["rotations"] = rotation_table(height, width, index_type)
    if "cutmix" in augment:
        donor_ids = np.flatnonzero(masks.reshape(n, -1).max(axis=1) > 0.5).astype(index_type)
        if len(donor_ids):
            stored["donor_ids"] = donor_ids
            stored["donor_regions"] = grown_regions(masks[donor_ids, ..., 0])

    def gather(data, tiles, batch_seed):
        sources = source_indices(
            tf.cast(tiles, index_type),
            batch_seed,
            pixels=pixels,
            rotations=data.get("rotations"),
            donor_ids=data.get("donor_ids"),
            donor_regions=data.get("donor_regions"),
        )
        batch = tf.shape(tiles)[0]
        image = tf.reshape(tf.gather(data["pixels"], sources), [batch, height, width, channels])
        mask = tf.reshape(tf.gather(data["masks"], sources), [batch, height, width, 1])
        return image, mask

    # The arrays are one dataset element, repeated by reference for every batch.
    data = tf.data.Dataset.from_tensors(stored).repeat()
    tiles = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
    return _fixed_tuning(
        tf.data.Dataset.zip((data, tiles, seeds))
        .map(gather, num_parallel_calls=_parallel_calls(), deterministic=True)
        .prefetch(2)
    )


def _parallel_calls() -> int:
    """Parallel map calls: the cores this process trains on (a Ray worker's share when the
    platform caps TensorFlow's threads, else every core it may run on)."""
    from rmaunet.data.bands import available_cpus

    return int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or available_cpus()


def _fixed_tuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Fixed parallelism and buffers instead of tf.data's autotuner.

    The pipelines gather from arrays already in memory, so a prefetch of two batches
    hides them fully; the autotuner's own background work, though, cost training steps:
    on a 2-core machine about a third of the epochs of a small model ran at ~75 % speed
    with it on and none with it off (16-epoch runs, same process otherwise).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
