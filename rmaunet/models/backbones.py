"""The backbones Table VIII compares, each ending in a full-resolution feature map.

- `unet`: the paper's U-Net (unet.py).
- `deeplabv3`: DeepLab-V3 as Chen et al. (2017) publish it: a ResNet-50 (keras.applications,
  randomly initialised: ImageNet weights are for 3 bands) taking N bands, its last stage
  conv5 atrous (stride 1, dilation 2) so the encoder ends at output stride 16 with all of
  ResNet-50 (23.6 M parameters at 3 bands, 23.6 M at 14, 23.7 M at 23); atrous spatial
  pyramid pooling with ReLU (a 1×1 conv, three 3×3 convs at the published rates 6, 12, 18
  scaled to the input (config.aspp_rates: 2, 3, 5 on 128-px tiles, whose stride-16 map is
  8×8), image pooling; base_filters·4 wide: 256 at base 64), then bilinear upsampling ×16
  to the input resolution. The config's depth, block and attention do not apply to it.
- `mobilenetv3`, `efficientnetv2`: keras.applications MobileNetV3-Large (width multiplier
  base_filters / 64) and EfficientNetV2-B0, randomly initialised (weights=None, nothing is
  downloaded), taking N bands with no ImageNet preprocessing, under a U-Net decoder that
  upsamples ×2 per level with skips from the encoder's last map at each stride and the
  input bands at stride 1, so the mask is predicted at full resolution. The decoder is
  light (segmentation_models' widths), so the encoder, not the decoder, is what differs.

Each backbone is a function (inputs, config) → features; heads.py turns features into
outputs. The U-Net encoders found by size (MobileNet-V3, EfficientNet-V2) need a static
image size. The keras.applications encoders carry no L2 term (their layers take no
regulariser): config.l2 reaches only the layers this package builds (ASPP, decoder, heads).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from rmaunet.config import DEEPLAB_STRIDE, TrialConfig, aspp_rates
from rmaunet.errors import ConfigError
from rmaunet.models.attention import l2_regularizer
from rmaunet.models.blocks import config_block
from rmaunet.models.unet import unet_features

__all__ = [
    "ASPP",
    "BACKBONES",
    "DEEPLAB_STRIDE",
    "STATIC_SIZE_BACKBONES",
    "application_features",
    "check_size",
    "deeplabv3_features",
]


@keras.saving.register_keras_serializable(package="rmaunet")
class ASPP(keras.layers.Layer):
    """DeepLab-V3's atrous spatial pyramid pooling: a 1×1 conv, 3×3 convs at `rates` and image
    pooling, concatenated and fused by a 1×1 conv; each conv BatchNorm + ReLU, as published."""

    def __init__(self, filters: int, rates: tuple[int, ...] = (6, 12, 18), l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.rates = tuple(rates)
        self.l2 = l2
        # (kernel, dilation) of each parallel branch; rates may repeat on small inputs.
        shapes = [(1, 1)] + [(3, r) for r in self.rates]
        self.branches = [self._conv_bn(k, r, f"branch_{i}") for i, (k, r) in enumerate(shapes)]
        self.pool_conv = self._conv_bn(1, 1, "image_pooling")
        self.fuse = self._conv_bn(1, 1, "fuse")

    def _conv_bn(self, kernel: int, rate: int, name: str) -> tuple[keras.layers.Layer, keras.layers.Layer]:
        conv = keras.layers.Conv2D(
            self.filters,
            kernel,
            dilation_rate=rate,
            padding="same",
            use_bias=False,
            kernel_regularizer=l2_regularizer(self.l2),
            dtype=self.dtype_policy,
            name=f"{name}_conv",
        )
        return conv, keras.layers.BatchNormalization(dtype=self.dtype_policy, name=f"{name}_bn")

    @staticmethod
    def _build_unit(unit: tuple[keras.layers.Layer, keras.layers.Layer], input_shape) -> None:
        conv, norm = unit
        conv.build(input_shape)
        norm.build(conv.compute_output_shape(input_shape))

    @staticmethod
    def _apply(unit: tuple[keras.layers.Layer, keras.layers.Layer], x, training):
        conv, norm = unit
        return keras.ops.relu(norm(conv(x), training=training))

    def build(self, input_shape):
        for branch in self.branches:
            self._build_unit(branch, input_shape)
        self._build_unit(self.pool_conv, (input_shape[0], 1, 1, input_shape[-1]))
        self._build_unit(self.fuse, (*input_shape[:-1], self.filters * (len(self.branches) + 1)))

    def call(self, x, training=None):
        outs = [self._apply(branch, x, training) for branch in self.branches]
        # BatchNorm on a 1×1 map of batch 1 has no spread; inference statistics still
        # make it well defined, and DeepLab-V3 keeps this branch for global context.
        pooled = self._apply(self.pool_conv, keras.ops.mean(x, axis=(1, 2), keepdims=True), training)
        outs.append(keras.ops.zeros_like(outs[0]) + pooled)  # broadcast to the map's size
        return self._apply(self.fuse, keras.ops.concatenate(outs, axis=-1), training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rates": list(self.rates), "l2": self.l2}


# keras.applications' ResNet-50 at output stride 16 (the end of stage conv4), where conv5 continues atrous.
_RESNET_CONV4 = "conv4_block6_out"
_CONV5_FILTERS, _CONV5_BLOCKS, _CONV5_DILATION = 512, 3, 2


def _atrous_bottleneck(x, filters: int, name: str, project: bool):
    """ResNet-50's bottleneck block (keras.applications' layers, names and BatchNorm epsilon)
    with its 3×3 conv dilated instead of strided: DeepLab-V3's conv5 at output stride 16."""
    shortcut = x
    if project:
        shortcut = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_0_conv")(x)
        shortcut = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 1, name=f"{name}_1_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=_CONV5_DILATION, name=f"{name}_2_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def deeplabv3_features(inputs, config: TrialConfig):
    """DeepLab-V3 on ResNet-50 with atrous conv5 (output stride 16); features (B, H, W, base_filters·4)."""
    encoder = keras.applications.ResNet50(input_tensor=inputs, include_top=False, weights=None)
    # keras.applications cannot dilate a stage: its conv5 (strided, stride 32) is left unused
    # and rebuilt atrous on conv4's output with the same layers and names.
    x = encoder.get_layer(_RESNET_CONV4).output
    for block in range(1, _CONV5_BLOCKS + 1):
        x = _atrous_bottleneck(x, _CONV5_FILTERS, f"conv5_block{block}", project=block == 1)
    rates = aspp_rates(int(inputs.shape[1]))
    x = ASPP(config.base_filters * 4, rates=rates, l2=config.l2, name="aspp")(x)
    return keras.layers.UpSampling2D(DEEPLAB_STRIDE, interpolation="bilinear", name="upsample")(x)


def _mobilenetv3(inputs, config: TrialConfig) -> keras.Model:
    return keras.applications.MobileNetV3Large(
        input_tensor=inputs,
        alpha=config.base_filters / 64,
        include_top=False,
        weights=None,
        include_preprocessing=False,
    )


def _efficientnetv2(inputs, config: TrialConfig) -> keras.Model:
    return keras.applications.EfficientNetV2B0(
        input_tensor=inputs, include_top=False, weights=None, include_preprocessing=False
    )


def _stride_taps(encoder: keras.Model, size: int) -> dict[int, object]:
    """The last layer output at each power-of-two stride up to 32 (the U-Net skips)."""
    taps: dict[int, object] = {}
    for layer in encoder.layers[1:]:
        out = layer.output
        if not hasattr(out, "shape") or len(out.shape) != 4 or not out.shape[1]:
            continue
        stride = size // out.shape[1]
        if out.shape[1] * stride == size and 2 <= stride <= 32 and stride & (stride - 1) == 0:
            taps[stride] = out
    return taps


def application_features(inputs, config: TrialConfig, constructor: Callable[..., keras.Model]):
    """A keras.applications encoder under a U-Net decoder; features (B, H, W, base_filters)."""
    size = int(inputs.shape[1])
    taps = _stride_taps(constructor(inputs, config), size)
    deepest = max(taps)
    x = taps[deepest]
    for level in reversed(range(int(math.log2(deepest)))):
        stride = 2**level
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder_upsample_{level}")(x)
        skip = taps.get(stride, inputs if stride == 1 else None)
        if skip is not None:
            x = keras.layers.Concatenate(name=f"decoder_skip_{level}")([x, skip])
        # Decoder widths of segmentation_models' U-Net (256/128/64 at strides 16/8/4 for
        # base 64), never below base_filters so the features match the U-Net's H×W×base.
        filters = config.base_filters * max(1, stride // 4)
        x = config_block(config, filters, f"decoder_{level}")(x)
    return x


# name → function(inputs, config) → the full-resolution feature map.
BACKBONES: dict[str, Callable[..., object]] = {
    "unet": unet_features,
    "deeplabv3": deeplabv3_features,
    "mobilenetv3": lambda inputs, config: application_features(inputs, config, _mobilenetv3),
    "efficientnetv2": lambda inputs, config: application_features(inputs, config, _efficientnetv2),
}

# Built for one image size: keras.applications encoders under a decoder (their skips are
# found by size), DeepLab-V3 (its ASPP rates are scaled to the size).
STATIC_SIZE_BACKBONES = ("mobilenetv3", "efficientnetv2", "deeplabv3")


def check_size(config: TrialConfig, size: int | None) -> None:
    """Refuse sizes the config's architecture cannot take, in one line naming the field."""
    needs_static = config.backbone in STATIC_SIZE_BACKBONES or config.attention == "mha"
    if size is None:
        if needs_static:
            what = f"backbone {config.backbone!r}" if config.backbone in STATIC_SIZE_BACKBONES else "attention 'mha'"
            raise ConfigError(f"{what} needs a fixed image size; pass size= to build_model")
        return
    multiple = config.size_multiple()
    if size % multiple != 0:
        at_depth = "" if config.backbone in ("deeplabv3", *STATIC_SIZE_BACKBONES) else f" at depth {config.depth}"
        raise ConfigError(f"size: {size} must be divisible by {multiple} for backbone {config.backbone!r}{at_depth}")
