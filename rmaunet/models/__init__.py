"""The RMAU-NET model family; `build_model(config, num_bands, size)` is the one entry point.

Every model returns a dict of float32 outputs (see heads.py):
- 'mask': (B, H, W, 1) landslide probability at the input resolution (the prediction);
- 'features': (B, H, W, C) the decoder's last feature map (center loss uses it);
- multi-resolution heads add 'head_half', 'head_full', 'head_double';
- a detection task adds 'detection' (B, 1); detection alone has no 'mask'/'features'.

The registries (BACKBONES, BLOCKS, ATTENTIONS, HEADS, TASK_OUTPUTS) are keyed by the
names in rmaunet.config, so a spec names any variant and a new one is one entry.
"""

from __future__ import annotations

import keras

from rmaunet.config import TrialConfig
from rmaunet.models.attention import ATTENTIONS, CBAM, SqueezeExcitation, TriAxialAttention
from rmaunet.models.backbones import ASPP, BACKBONES, check_size
from rmaunet.models.blocks import BLOCKS, ConvBNAct, DoubleConv, ResConvBlock
from rmaunet.models.cost import model_cost
from rmaunet.models.heads import (
    HEADS,
    TASK_OUTPUTS,
    ChannelMeanHead,
    DetectionHead,
    MaskAverage,
    ResolutionHead,
    attach_heads,
)

__all__ = [
    "build_model",
    "model_cost",
    "BACKBONES",
    "BLOCKS",
    "ATTENTIONS",
    "HEADS",
    "TASK_OUTPUTS",
    "ASPP",
    "CBAM",
    "ChannelMeanHead",
    "ConvBNAct",
    "DetectionHead",
    "DoubleConv",
    "MaskAverage",
    "ResConvBlock",
    "ResolutionHead",
    "SqueezeExcitation",
    "TriAxialAttention",
]


def build_model(config: TrialConfig, num_bands: int, size: int | None = None) -> keras.Model:
    """The Keras model a config names, for `num_bands` input bands and `size`×`size` tiles.

    `size=None` builds for any size divisible by 2**depth where the architecture allows
    it; the keras.applications backbones and 'mha' attention need a fixed size. Kernels
    carry the paper's λ/2·‖θ‖² (λ = config.l2) in `model.losses`. Call under the global
    dtype policy the trial uses; outputs stay float32.
    """
    check_size(config, size)
    inputs = keras.Input((size, size, num_bands), name="image")
    features = BACKBONES[config.backbone](inputs, config)
    outputs = attach_heads(features, config)
    return keras.Model(inputs, outputs, name=config.backbone)
