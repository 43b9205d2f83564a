"""Parameter count and FLOPs per image of a model variant (for GPU utilisation figures).

FLOPs are counted by TensorFlow's graph profiler on the frozen inference graph of one
image: a multiply-add is 2 FLOPs, as in the usual GFLOPs tables; ops without a registered
cost (BatchNorm folded at inference, resizes, activations) count 0, so the figure is the
convolution / matmul work that dominates a GPU's time.
"""

from __future__ import annotations

import keras

from rmaunet.config import TrialConfig

__all__ = ["model_cost", "count_flops"]


def count_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of `model` (inference mode) on a batch of one."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"count_flops needs a model built for a fixed input size, got {shape}")
    forward = tf.function(lambda x: model(x, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec((1, *shape), model.inputs[0].dtype))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops)


def model_cost(config: TrialConfig, num_bands: int, size: int) -> dict[str, int]:
    """{'params': trainable + non-trainable weights, 'flops': FLOPs per image} of the config's model."""
    from rmaunet.models import build_model

    model = build_model(config, num_bands, size)
    return {"params": int(model.count_params()), "flops": count_flops(model)}
