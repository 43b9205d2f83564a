"""Convolutional blocks of the U-Net: the baseline's double conv."""

from __future__ import annotations

import keras

__all__ = ["DoubleConv"]


@keras.saving.register_keras_serializable(package="rmaunet")
class DoubleConv(keras.layers.Layer):
    """(Conv 3×3, BatchNorm, LeakyReLU) × 2: the baseline block of Section III."""

    def __init__(self, filters: int, l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.l2 = l2
        reg = keras.regularizers.L2(l2 / 2) if l2 else None  # the paper's λ/2·‖θ‖²
        self.convs = [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)
            for _ in range(2)
        ]
        self.norms = [keras.layers.BatchNormalization() for _ in range(2)]
        self.act = keras.layers.LeakyReLU(negative_slope=0.1)

    def call(self, x, training=None):
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x), training=training))
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "l2": self.l2}
