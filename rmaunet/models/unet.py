"""U-Net assembly: encoder of blocks with MaxPooling, decoder with UpSampling2D and skips."""

from __future__ import annotations

import keras

from rmaunet.config import TrialConfig
from rmaunet.models.blocks import config_block

__all__ = ["unet_features"]


def unet_features(inputs, config: TrialConfig):
    """The decoder's last feature map (B, H, W, base_filters) for the config's block and attention."""
    x = inputs
    skips = []
    for level in range(config.depth):
        x = config_block(config, config.base_filters * 2**level, f"down_{level}")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{level}")(x)
    x = config_block(config, config.base_filters * 2**config.depth, "bottleneck")(x)
    for level in reversed(range(config.depth)):
        x = keras.layers.UpSampling2D(2, name=f"upsample_{level}")(x)
        x = keras.layers.Concatenate(name=f"skip_{level}")([x, skips[level]])
        x = config_block(config, config.base_filters * 2**level, f"up_{level}")(x)
    return x
