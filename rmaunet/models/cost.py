"""What a model variant costs: parameters, FLOPs per image, and the activations its training
pass holds per image (for GPU utilisation figures and `rmaunet study plan`'s cost table).

FLOPs are counted on the frozen inference graph of one image, op by op, with TensorFlow's
own registered costs (what its graph profiler sums): a multiply-add is 2 FLOPs, as in the
usual GFLOPs tables; ops without a registered cost (BatchNorm folded at inference, resizes,
activations) count 0, so the figure is the convolution / matmul work that dominates a GPU's
time. TensorFlow registers no cost for Einsum, which Keras' MultiHeadAttention computes its
attention scores with: those are counted here from the equation (2 FLOPs per point of the
product space when an index is summed over).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rmaunet.config import TrialConfig

if TYPE_CHECKING:  # keras and TensorFlow are heavy; annotations only
    import keras
    import tensorflow as tf

__all__ = ["model_cost", "count_flops", "activation_bytes"]

# Ops whose output is a view of (or the same buffer as) their input in TensorFlow: no new memory.
_VIEW_OPS = frozenset({"Identity", "IdentityN", "Reshape", "Squeeze", "ExpandDims", "StopGradient", "Snapshot"})


def count_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of `model` (inference mode) on a batch of one."""
    import tensorflow as tf
    from tensorflow.python.framework import ops
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.util import deprecation

    shape = _fixed_shape(model)
    forward = tf.function(lambda x: model(x, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec((1, *shape), model.inputs[0].dtype))
    graph = convert_variables_to_constants_v2(concrete).graph
    total = 0
    with deprecation.silence():  # the registered costs read shapes through a TF1 helper that warns on stderr
        for op in graph.get_operations():
            if op.type == "Einsum":
                total += _einsum_flops(op)
                continue
            stats = ops.get_stats_for_node_def(graph, op.node_def, "flops")
            total += int(stats.value or 0)
    return total


def _einsum_flops(op: tf.Operation) -> int:
    """2 FLOPs per point of the product space of an Einsum's indices when it sums over one
    (a contraction: a multiply-add each), else one multiply per point and extra operand."""
    inputs, output = op.get_attr("equation").decode().replace(" ", "").split("->")
    sizes: dict[str, int] = {}
    widest = 0
    for term, tensor in zip(inputs.split(","), op.inputs):
        dims = tensor.shape.as_list()
        spread = len(dims) - len(term.replace("...", ""))
        widest = max(widest, spread)
        for index, dim in zip(_indices(term, spread), dims):
            sizes[index] = max(sizes.get(index, 1), int(dim or 1))
    points = math.prod(sizes.values())
    summed = set(sizes) - set(_indices(output, widest))
    return 2 * points if summed else points * max(len(op.inputs) - 1, 1)


def _indices(term: str, spread: int) -> list[str]:
    """An Einsum term's index names; its ellipsis (`spread` dimensions) as stand-ins numbered
    from the right, so that broadcast dimensions of different operands share a name."""
    head, ellipsis, tail = term.partition("...")
    stand_ins = [f"<{k}>" for k in reversed(range(spread))] if ellipsis else []
    return [*head, *stand_ins, *tail]


def activation_bytes(model: keras.Model) -> int:
    """Bytes per image of the tensors the training-mode forward pass makes: every output with
    a batch dimension (the input included), at its own dtype (float16 under a mixed policy),
    views excluded. Backpropagation keeps most of them until the backward pass reaches them,
    so this is what batch size multiplies in a training step's peak memory (an upper estimate:
    a few, like a variance's squared differences, are freed at once)."""
    import tensorflow as tf

    shape = _fixed_shape(model)
    forward = tf.function(lambda x: model(x, training=True))
    graph = forward.get_concrete_function(tf.TensorSpec((None, *shape), model.inputs[0].dtype)).graph
    total = 0
    for op in graph.get_operations():
        if op.type in _VIEW_OPS:
            continue
        for tensor in op.outputs:
            dims = tensor.shape
            if not tensor.dtype.is_floating or dims.rank is None or dims.rank == 0 or dims[0] is not None:
                continue  # weights and batch statistics: no batch dimension, counted with the parameters
            if any(d is None for d in dims[1:]):
                raise ValueError(f"activation_bytes: {op.name} has an output of unknown size {dims}")
            total += math.prod(dims[1:]) * tensor.dtype.size
    return total


def _fixed_shape(model: keras.Model) -> tuple[int, ...]:
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"counting a model's cost needs a fixed input size, got {shape}")
    return shape


def model_cost(config: TrialConfig, num_bands: int, size: int) -> dict[str, int]:
    """{'params': trainable + non-trainable weights, 'flops': FLOPs per image} of the config's model."""
    from rmaunet.models import build_model

    model = build_model(config, num_bands, size)
    return {"params": int(model.count_params()), "flops": count_flops(model)}
