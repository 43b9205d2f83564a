"""Convolutional blocks of the encoder and decoder: the baseline's double conv and Res-Conv.

Both blocks end with the attention the config names (Table VIII applies it after every
block), so the assembly code swaps blocks and attention by name only.
"""

from __future__ import annotations

import keras

from rmaunet.models.attention import l2_regularizer, make_attention

__all__ = ["DoubleConv", "ResConvBlock", "ConvBNAct", "BLOCKS", "make_block", "config_block"]

_SLOPE = 0.1  # LeakyReLU slope of the authors' code


@keras.saving.register_keras_serializable(package="rmaunet")
class ConvBNAct(keras.layers.Layer):
    """Conv (no bias: BatchNorm has one), BatchNorm, LeakyReLU: the unit every block repeats."""

    def __init__(
        self, filters: int, kernel_size: int = 3, strides: int = 1, dilation_rate: int = 1, l2: float = 0.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.l2 = l2
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            dilation_rate=dilation_rate,
            padding="same",
            use_bias=False,
            kernel_regularizer=l2_regularizer(l2),
            dtype=self.dtype_policy,
        )
        self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy)
        self.act = keras.layers.LeakyReLU(negative_slope=_SLOPE, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        return self.act(self.norm(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "l2": self.l2,
        }


class _Block(keras.layers.Layer):
    """What every U-Net block shares: its four arguments, its output width, its config."""

    def __init__(
        self, filters: int, l2: float = 0.0, attention: str = "none", dilation_rate: int = 1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.l2 = l2
        self.attention = attention
        self.dilation_rate = dilation_rate

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "l2": self.l2,
            "attention": self.attention,
            "dilation_rate": self.dilation_rate,
        }


@keras.saving.register_keras_serializable(package="rmaunet")
class DoubleConv(_Block):
    """(Conv 3×3, BatchNorm, LeakyReLU) × 2, then attention: the baseline block of Section III."""

    def __init__(
        self, filters: int, l2: float = 0.0, attention: str = "none", dilation_rate: int = 1, **kwargs
    ) -> None:
        super().__init__(filters, l2, attention, dilation_rate, **kwargs)
        self.units = [
            ConvBNAct(filters, 3, dilation_rate=dilation_rate, l2=l2, dtype=self.dtype_policy, name=f"conv_{i}")
            for i in range(2)
        ]
        self.attend = make_attention(attention, l2, "attention")

    def build(self, input_shape):
        shape = input_shape
        for unit in self.units:
            unit.build(shape)
            shape = (*shape[:-1], self.filters)
        if self.attend is not None:
            self.attend.build(shape)

    def call(self, x, training=None):
        for unit in self.units:
            x = unit(x, training=training)
        return self.attend(x) if self.attend is not None else x


@keras.saving.register_keras_serializable(package="rmaunet")
class ResConvBlock(_Block):
    """Res-Conv (Fig. 5, as in the authors' code).

    Two parallel branches on the input (Conv 3×3 and Conv 2×2, each BN + LeakyReLU) see
    two receptive fields; their sum goes through Conv 3×3 + BN + LeakyReLU and the
    attention, then the block input is added back (projected by a 1×1 conv when the
    channel counts differ) so gradients reach early layers directly.
    """

    def __init__(
        self, filters: int, l2: float = 0.0, attention: str = "none", dilation_rate: int = 1, **kwargs
    ) -> None:
        super().__init__(filters, l2, attention, dilation_rate, **kwargs)
        policy = self.dtype_policy
        self.branch_3 = ConvBNAct(filters, 3, dilation_rate=dilation_rate, l2=l2, dtype=policy, name="branch_3x3")
        self.branch_2 = ConvBNAct(filters, 2, dilation_rate=dilation_rate, l2=l2, dtype=policy, name="branch_2x2")
        self.merge = ConvBNAct(filters, 3, dilation_rate=dilation_rate, l2=l2, dtype=policy, name="merge")
        self.attend = make_attention(attention, l2, "attention")
        self.project: keras.layers.Layer | None = None

    def build(self, input_shape):
        if int(input_shape[-1]) != self.filters:
            self.project = keras.layers.Conv2D(
                self.filters, 1, kernel_regularizer=l2_regularizer(self.l2), dtype=self.dtype_policy, name="project"
            )
            self.project.build(input_shape)
        self.branch_3.build(input_shape)
        self.branch_2.build(input_shape)
        self.merge.build((*input_shape[:-1], self.filters))
        if self.attend is not None:
            self.attend.build((*input_shape[:-1], self.filters))

    def call(self, x, training=None):
        y = self.branch_3(x, training=training) + self.branch_2(x, training=training)
        y = self.merge(y, training=training)
        if self.attend is not None:
            y = self.attend(y)
        shortcut = self.project(x) if self.project is not None else x
        return y + shortcut


# name → block class; every block takes (filters, l2=, attention=, dilation_rate=).
BLOCKS: dict[str, type[keras.layers.Layer]] = {"double_conv": DoubleConv, "res_conv": ResConvBlock}


def make_block(
    name: str,
    filters: int,
    *,
    l2: float = 0.0,
    attention: str = "none",
    dilation_rate: int = 1,
    layer_name: str | None = None,
) -> keras.layers.Layer:
    """The block a config names, with the config's attention at its end."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r} (choose one of: {', '.join(BLOCKS)})")
    return BLOCKS[name](filters, l2=l2, attention=attention, dilation_rate=dilation_rate, name=layer_name)


def config_block(config, filters: int, name: str, dilation_rate: int = 1) -> keras.layers.Layer:
    """make_block with a TrialConfig's block, L2 and attention: what every architecture stacks."""
    return make_block(
        config.block, filters, l2=config.l2, attention=config.attention, dilation_rate=dilation_rate, layer_name=name
    )
