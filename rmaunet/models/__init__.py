"""The RMAU-NET model family; `build_model(config, num_bands, size)` is the one entry point.

Every model returns a dict of outputs:
- 'mask': (B, H, W, 1) landslide probability at the input resolution (the prediction);
- 'features': (B, H, W, C) the decoder's last feature map (center loss uses it).
"""

from __future__ import annotations

import keras

from rmaunet.config import TrialConfig
from rmaunet.models.unet import build_unet

__all__ = ["build_model"]


def build_model(config: TrialConfig, num_bands: int, size: int | None = None) -> keras.Model:
    return build_unet(config, num_bands, size)
