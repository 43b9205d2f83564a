"""Heads that turn the decoder's feature map into predictions.

`attach_heads(features, config)` builds the output dict every backbone shares:
- "mask" (B, H, W, 1) probability at the input resolution, "features" (B, H, W, C);
- with multi-resolution heads also "head_half", "head_full", "head_double" (Table VII);
- with a detection task "detection" (B, 1), the image-level probability (Section V).
All outputs are float32, whatever the global dtype policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from rmaunet.config import TrialConfig
from rmaunet.models.attention import l2_regularizer
from rmaunet.models.blocks import ConvBNAct

__all__ = [
    "RESOLUTION_HEADS",
    "ChannelMeanHead",
    "ResolutionHead",
    "MaskAverage",
    "DetectionHead",
    "HEADS",
    "TASK_OUTPUTS",
    "attach_heads",
]

# The multi-resolution heads' output names (Table VII), each scored against the mask at its size.
RESOLUTION_HEADS = ("head_half", "head_full", "head_double")


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


_SCALES = (0.5, 1.0, 2.0)


@keras.saving.register_keras_serializable(package="rmaunet")
class ResolutionHead(keras.layers.Layer):
    """One of the multiple heads: a mask at `scale` × the feature map's resolution.

    0.5 resamples with a stride-2 conv, 2.0 with a stride-2 transposed conv (both
    BN + LeakyReLU), 1.0 uses the features as they are; then the channel-mean head.
    The head's own sublayers follow the global policy; only its output is float32.
    """

    def __init__(self, scale: float, filters: int, l2: float = 0.0, prior: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        if scale not in _SCALES:
            raise ValueError(f"ResolutionHead: scale must be one of {_SCALES}, got {scale!r}")
        self.scale = scale
        self.filters = filters
        self.l2 = l2
        self.prior = prior
        policy = self.dtype_policy
        self.down = ConvBNAct(filters, 3, strides=2, l2=l2, dtype=policy, name="down") if scale == 0.5 else None
        self.up = self.up_norm = None
        if scale == 2.0:
            self.up = keras.layers.Conv2DTranspose(
                filters,
                3,
                strides=2,
                padding="same",
                use_bias=False,
                kernel_regularizer=l2_regularizer(l2),
                dtype=policy,
                name="up",
            )
            self.up_norm = keras.layers.BatchNormalization(dtype=policy, name="up_norm")
        self.act = keras.layers.LeakyReLU(negative_slope=0.1, dtype=policy)
        self.head = ChannelMeanHead(prior, dtype="float32", name="channel_mean")

    def build(self, input_shape):
        shape = input_shape
        if self.down is not None:
            self.down.build(shape)
            shape = self.down.compute_output_shape(shape)
        if self.up is not None:
            self.up.build(shape)
            shape = self.up.compute_output_shape(shape)
            self.up_norm.build(shape)
        self.head.build(shape)

    def call(self, x, training=None):
        if self.down is not None:
            x = self.down(x, training=training)
        if self.up is not None:
            x = self.act(self.up_norm(self.up(x), training=training))
        return self.head(x)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        resize = lambda n: None if n is None else int(n * self.scale)
        return (b, resize(h), resize(w), 1)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "filters": self.filters,
            "l2": self.l2,
            "prior": self.prior,
        }


@keras.saving.register_keras_serializable(package="rmaunet")
class MaskAverage(keras.layers.Layer):
    """Average the half-, full- and double-resolution masks at full resolution.

    Bilinear upsampling and 2×2 average pooling resize by exactly 2 without needing the
    image size at build time, so the model still accepts any size divisible by 2**depth.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.upsample = keras.layers.UpSampling2D(2, interpolation="bilinear", dtype="float32")
        self.downsample = keras.layers.AveragePooling2D(2, dtype="float32")

    def build(self, input_shape):
        # Both resamplers are weightless; building them here keeps deserialisation quiet.
        self.upsample.build(input_shape[0])
        self.downsample.build(input_shape[2])

    def call(self, masks):
        half, full, double = (keras.ops.cast(m, "float32") for m in masks)
        return (self.upsample(half) + full + self.downsample(double)) / 3.0

    def compute_output_shape(self, input_shape):
        return input_shape[1]


@keras.saving.register_keras_serializable(package="rmaunet")
class DetectionHead(keras.layers.Layer):
    """Landslide-or-not (Section V): global average pooling, dense, sigmoid → (B, 1) float32."""

    def __init__(self, l2: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.l2 = l2
        self.pool = keras.layers.GlobalAveragePooling2D(dtype="float32")
        self.dense = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=l2_regularizer(l2), dtype="float32")

    def build(self, input_shape):
        self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, x):
        return self.dense(self.pool(keras.ops.cast(x, "float32")))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _single_head(features, config: TrialConfig) -> dict:
    return {"mask": ChannelMeanHead(dtype="float32", name="mask")(features)}


def _multi_resolution_heads(features, config: TrialConfig) -> dict:
    filters = int(features.shape[-1])
    half = ResolutionHead(0.5, filters, config.l2, name="head_half")(features)
    full = ResolutionHead(1.0, filters, config.l2, name="head_full")(features)
    double = ResolutionHead(2.0, filters, config.l2, name="head_double")(features)
    mask = MaskAverage(name="mask")([half, full, double])
    return {"mask": mask, "head_half": half, "head_full": full, "head_double": double}


# name → function(features, config) → the mask outputs of that head layout.
HEADS: dict[str, Callable[..., dict]] = {"single": _single_head, "multi_resolution": _multi_resolution_heads}

# task → the parts it predicts; the trainer reads which losses and metrics apply.
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "segmentation": ("segmentation",),
    "detection": ("detection",),
    "segmentation+detection": ("segmentation", "detection"),
}


def attach_heads(features, config: TrialConfig) -> dict:
    """The model's output dict for `config.heads` and `config.task` on a decoder feature map."""
    parts = TASK_OUTPUTS[config.task]
    outputs: dict = {}
    if "segmentation" in parts:
        outputs.update(HEADS[config.heads](features, config))
        # float32 for the center loss even when the decoder runs in float16.
        outputs["features"] = keras.layers.Activation("linear", dtype="float32", name="features")(features)
    if "detection" in parts:
        outputs["detection"] = DetectionHead(config.l2, name="detection")(features)
    return outputs
