"""The backbones Table VIII compares, each ending in a full-resolution feature map.

- `unet`: the paper's U-Net (unet.py).
- `deeplabv3`: DeepLab-V3 (Chen et al. 2017) on its own encoder, a keras.applications
  ResNet-50, randomly initialised (weights=None: ImageNet weights are for 3 bands) and
  taking N bands. Its output-stride-16 map `conv4_block6_out` feeds atrous spatial pyramid
  pooling (rates 6, 12, 18 and image pooling, base_filters·4 wide: 256 at base 64), then
  bilinear upsampling ×16 to the input resolution, as DeepLab-V3 predicts. ResNet's last
  stage (conv5) is left out, as in keras.io's DeepLabV3+ example: Chen et al. run it
  atrous at stride 16, which keras.applications cannot. The config's depth, block and
  attention do not apply to this backbone.
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

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.models.blocks import ConvBNAct, config_block
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
    """Atrous spatial pyramid pooling: a 1×1 conv, 3×3 convs at `rates` and image pooling,
    concatenated and fused by a 1×1 conv (each conv BN + LeakyReLU)."""

    def __init__(self, filters: int, rates: tuple[int, ...] = (6, 12, 18), l2: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.rates = tuple(rates)
        self.l2 = l2
        policy = self.dtype_policy
        self.branches = [ConvBNAct(filters, 1, l2=l2, dtype=policy, name="branch_1x1")] + [
            ConvBNAct(filters, 3, dilation_rate=r, l2=l2, dtype=policy, name=f"branch_rate_{r}") for r in self.rates
        ]
        self.pool_conv = ConvBNAct(filters, 1, l2=l2, dtype=policy, name="image_pooling")
        self.fuse = ConvBNAct(filters, 1, l2=l2, dtype=policy, name="fuse")

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(input_shape)
        self.pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
        self.fuse.build((*input_shape[:-1], self.filters * (len(self.branches) + 1)))

    def call(self, x, training=None):
        outs = [branch(x, training=training) for branch in self.branches]
        # BatchNorm on a 1×1 map of batch 1 has no spread; inference statistics still
        # make it well defined, and DeepLab-V3 keeps this branch for global context.
        pooled = self.pool_conv(keras.ops.mean(x, axis=(1, 2), keepdims=True), training=training)
        outs.append(keras.ops.zeros_like(outs[0]) + pooled)  # broadcast to the map's size
        return self.fuse(keras.ops.concatenate(outs, axis=-1), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rates": list(self.rates), "l2": self.l2}


# The keras.applications ResNet-50 layer at output stride 16 (the end of stage conv4).
DEEPLAB_STRIDE = 16
_DEEPLAB_TAP = "conv4_block6_out"


def deeplabv3_features(inputs, config: TrialConfig):
    """DeepLab-V3 on a ResNet-50 encoder; features (B, H, W, base_filters·4)."""
    encoder = keras.applications.ResNet50(input_tensor=inputs, include_top=False, weights=None)
    x = ASPP(config.base_filters * 4, l2=config.l2, name="aspp")(encoder.get_layer(_DEEPLAB_TAP).output)
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

# keras.applications encoders are built for one image size (their skips are found by size).
STATIC_SIZE_BACKBONES = ("mobilenetv3", "efficientnetv2")


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
