"""tf.data pipelines over in-memory (or memory-mapped) arrays."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["make_dataset"]


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
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32, copy=False), y[..., None].astype(np.float32)))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        if "rotation" in augment:
            ds = ds.map(_rotate(seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _rotate(seed: int):
    rng = tf.random.Generator.from_seed(seed)

    def rotate(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # The same k for image and mask keeps the pair aligned; k = 0 keeps the original.
        k = rng.uniform((), 0, 4, dtype=tf.int32)
        return tf.image.rot90(image, k), tf.image.rot90(mask, k)

    return rotate
