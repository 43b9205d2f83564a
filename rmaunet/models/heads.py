"""Heads that turn the decoder's feature map into predictions."""

from __future__ import annotations

import math

import keras

__all__ = ["ChannelMeanHead"]


@keras.saving.register_keras_serializable(package="rmaunet")
class ChannelMeanHead(keras.layers.Layer):
    """The paper's mask head: average the feature map across channels into one mask.

    A learnable scale and bias calibrate that mean into a logit. The bias starts at the
    logit of `prior` (the landslide pixel share, as in RetinaNet's prior initialisation):
    a head that starts at 0.5 everywhere spends most of a short run unlearning it.
    """

    def __init__(self, prior: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prior = prior

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        self.bias = self.add_weight(
            name="bias", shape=(), initializer=keras.initializers.Constant(math.log(self.prior / (1 - self.prior)))
        )

    def call(self, x):
        mean = keras.ops.mean(keras.ops.cast(x, "float32"), axis=-1, keepdims=True)
        return keras.ops.sigmoid(self.scale * mean + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "prior": self.prior}
