"""Attention layers applied after every block (Table VIII): SE, CBAM and the paper's
three-axis multi-head attention (Fig. 6).

`make_attention(name, l2)` is the registry a TrialConfig's `attention` names; "none"
returns None so a block simply skips the step.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

__all__ = [
    "SqueezeExcitation",
    "CBAM",
    "TriAxialAttention",
    "ATTENTIONS",
    "make_attention",
    "l2_regularizer",
]


def l2_regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """The paper's λ/2·‖θ‖² on a kernel (Keras' L2 is factor·‖θ‖², hence the half)."""
    return keras.regularizers.L2(l2 / 2) if l2 else None


def _bottleneck(channels: int, ratio: int) -> int:
    """Hidden units of an SE / CBAM MLP: channels // ratio, but at least min(channels, 4);
    narrow maps would otherwise squeeze to one ReLU unit, which a bad init leaves dead
    (every gate stuck at 0.5)."""
    return max(min(channels, 4), channels // ratio)


@keras.saving.register_keras_serializable(package="rmaunet")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-excitation (Hu et al.): per-channel gates from globally pooled features."""

    def __init__(self, ratio: int = 16, l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ratio = ratio
        self.l2 = l2

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = _bottleneck(channels, self.ratio)
        reg = l2_regularizer(self.l2)
        self.squeeze = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=reg, dtype=self.dtype_policy)
        self.excite = keras.layers.Dense(
            channels, activation="sigmoid", kernel_regularizer=reg, dtype=self.dtype_policy
        )
        self.squeeze.build((input_shape[0], channels))
        self.excite.build((input_shape[0], hidden))

    def call(self, x):
        pooled = keras.ops.mean(x, axis=(1, 2))
        gates = self.excite(self.squeeze(pooled))
        return x * gates[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "l2": self.l2}


@keras.saving.register_keras_serializable(package="rmaunet")
class CBAM(keras.layers.Layer):
    """Convolutional block attention (Woo et al.): channel gates, then a spatial gate."""

    def __init__(self, ratio: int = 16, kernel_size: int = 7, l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ratio = ratio
        self.kernel_size = kernel_size
        self.l2 = l2

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = _bottleneck(channels, self.ratio)
        reg = l2_regularizer(self.l2)
        # One MLP shared by the average- and max-pooled descriptors, as in the paper.
        self.mlp_hidden = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=reg, dtype=self.dtype_policy)
        self.mlp_out = keras.layers.Dense(channels, kernel_regularizer=reg, dtype=self.dtype_policy)
        self.spatial = keras.layers.Conv2D(
            1, self.kernel_size, padding="same", activation="sigmoid", kernel_regularizer=reg, dtype=self.dtype_policy
        )
        self.mlp_hidden.build((input_shape[0], channels))
        self.mlp_out.build((input_shape[0], hidden))
        self.spatial.build((*input_shape[:-1], 2))

    def call(self, x):
        avg = self.mlp_out(self.mlp_hidden(keras.ops.mean(x, axis=(1, 2))))
        mx = self.mlp_out(self.mlp_hidden(keras.ops.max(x, axis=(1, 2))))
        x = x * keras.ops.sigmoid(avg + mx)[:, None, None, :]
        descriptor = keras.ops.concatenate(
            [keras.ops.mean(x, axis=-1, keepdims=True), keras.ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return x * self.spatial(descriptor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "kernel_size": self.kernel_size, "l2": self.l2}


@keras.saving.register_keras_serializable(package="rmaunet")
class TriAxialAttention(keras.layers.Layer):
    """The paper's multi-head attention (Fig. 6): attend along each axis of an H×W×C map.

    The map is reduced along channels (→ H×W), height (→ W×C) and width (→ H×C); each
    2-D map is a sequence of tokens for `keras.layers.MultiHeadAttention` (self-attention),
    whose sigmoid output gates the input broadcast along the reduced axis. The three gated
    maps are averaged so the block's scale does not triple. `pooling="mean"` follows the
    authors' code; "mean_max" adds max pooling, as the paper's text describes.

    The token width of each map is a spatial side, so the input's H and W must be static.
    """

    def __init__(self, num_heads: int = 4, key_dim: int = 12, pooling: str = "mean", l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if pooling not in ("mean", "mean_max"):
            raise ValueError(f"TriAxialAttention: pooling must be 'mean' or 'mean_max', got {pooling!r}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.pooling = pooling
        self.l2 = l2

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height is None or width is None:
            raise ValueError("TriAxialAttention needs a static height and width (build the model with a fixed size)")
        reg = l2_regularizer(self.l2)

        def mha(name: str) -> keras.layers.MultiHeadAttention:
            return keras.layers.MultiHeadAttention(
                self.num_heads, self.key_dim, kernel_regularizer=reg, dtype=self.dtype_policy, name=name
            )

        # (sequence length, token width) of the map each attention sees.
        self.attn_channels = mha("attn_channels")  # H tokens of width W
        self.attn_height = mha("attn_height")  # W tokens of width C
        self.attn_width = mha("attn_width")  # H tokens of width C
        for layer, seq in (
            (self.attn_channels, (None, height, width)),
            (self.attn_height, (None, width, channels)),
            (self.attn_width, (None, height, channels)),
        ):
            layer.build(seq, seq)

    def _reduce(self, x, axis: int):
        reduced = keras.ops.mean(x, axis=axis)
        if self.pooling == "mean_max":
            reduced = reduced + keras.ops.max(x, axis=axis)
        return reduced

    def call(self, x):
        m_c = self._reduce(x, -1)
        m_h = self._reduce(x, 1)
        m_w = self._reduce(x, 2)
        gate_c = keras.ops.sigmoid(self.attn_channels(m_c, m_c))[..., None]
        gate_h = keras.ops.sigmoid(self.attn_height(m_h, m_h))[:, None, :, :]
        gate_w = keras.ops.sigmoid(self.attn_width(m_w, m_w))[:, :, None, :]
        return (x * gate_c + x * gate_h + x * gate_w) / 3.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "pooling": self.pooling,
            "l2": self.l2,
        }


# name → factory(l2, name) of the attention applied after every block; None: no attention.
ATTENTIONS: dict[str, Callable[[float, str | None], keras.layers.Layer | None]] = {
    "none": lambda l2, name=None: None,
    "se": lambda l2, name=None: SqueezeExcitation(l2=l2, name=name),
    "cbam": lambda l2, name=None: CBAM(l2=l2, name=name),
    "mha": lambda l2, name=None: TriAxialAttention(l2=l2, name=name),
}


def make_attention(name: str, l2: float = 0.0, layer_name: str | None = None) -> keras.layers.Layer | None:
    """The attention layer a config names, or None for "none"."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r} (choose one of: {', '.join(ATTENTIONS)})")
    return ATTENTIONS[name](l2, layer_name)
