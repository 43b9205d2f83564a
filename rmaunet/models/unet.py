"""U-Net assembly: encoder of blocks with MaxPooling, decoder with UpSampling2D and skips."""

from __future__ import annotations

import keras

from rmaunet.config import TrialConfig
from rmaunet.models.blocks import DoubleConv
from rmaunet.models.heads import ChannelMeanHead

__all__ = ["build_unet"]


def build_unet(config: TrialConfig, num_bands: int, size: int | None) -> keras.Model:
    """Outputs a dict: 'mask' (B,H,W,1) probabilities and 'features' (B,H,W,C) decoder features."""
    inputs = keras.Input((size, size, num_bands), name="image")
    x = inputs
    skips = []
    for level in range(config.depth):
        x = DoubleConv(config.base_filters * 2**level, config.l2, name=f"down_{level}")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = DoubleConv(config.base_filters * 2**config.depth, config.l2, name="bottleneck")(x)
    for level in reversed(range(config.depth)):
        x = keras.layers.UpSampling2D(2)(x)
        x = keras.layers.Concatenate()([x, skips[level]])
        x = DoubleConv(config.base_filters * 2**level, config.l2, name=f"up_{level}")(x)
    features = x
    # The paper's head: average the final feature map across channels into one mask.
    mask = ChannelMeanHead(dtype="float32", name="mask")(features)
    return keras.Model(inputs, {"mask": mask, "features": features}, name="unet")
