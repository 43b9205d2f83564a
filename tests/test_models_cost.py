"""Parameter and FLOP counts per image, checked against hand counts."""

from __future__ import annotations

import keras
import pytest

from rmaunet.config import TrialConfig
from rmaunet.models import build_model, model_cost
from rmaunet.models.cost import count_flops


def _tiny_conv_model(bias: bool) -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=bias)(inputs)
    return keras.Model(inputs, keras.layers.Dense(5, use_bias=False)(x))


# A 3×3 conv (2→4 channels) and a dense (4→5) on 8×8 cost 2·MACs (+1 per bias add), per image.
@pytest.mark.parametrize("bias, extra", [(False, 0), (True, 4 * 64)])
def test_count_flops_matches_hand_count(bias, extra):
    macs = 3 * 3 * 2 * 4 * 64 + 4 * 5 * 64
    assert count_flops(_tiny_conv_model(bias)) == 2 * macs + extra


# model_cost reports the model's own parameter count and positive FLOPs.
def test_model_cost_params_match_the_model():
    config = TrialConfig(base_filters=4, depth=2)
    cost = model_cost(config, 3, 32)
    assert cost["params"] == build_model(config, 3, 32).count_params()
    # At least the encoder's first 3×3 conv (3→4 channels on 32×32).
    assert cost["flops"] > 2 * 9 * 3 * 4 * 32 * 32


# A fully convolutional U-Net's work grows with the pixel count: 4× the pixels, 4× the FLOPs.
def test_unet_flops_scale_with_pixels():
    config = TrialConfig(base_filters=4, depth=2)
    small, large = model_cost(config, 3, 32), model_cost(config, 3, 64)
    assert small["params"] == large["params"]
    assert large["flops"] / small["flops"] == pytest.approx(4.0, rel=1e-3)


# Wider, attention-bearing variants cost more than the baseline (a sanity order for Table VIII).
@pytest.mark.slow
def test_rmaunet_costs_more_than_baseline():
    base = model_cost(TrialConfig(base_filters=4, depth=2), 3, 32)
    full = model_cost(
        TrialConfig(base_filters=4, depth=2, block="res_conv", attention="mha", heads="multi_resolution"), 3, 32
    )
    assert full["params"] > base["params"] and full["flops"] > base["flops"]


# Counting FLOPs needs a fixed input size.
def test_count_flops_refuses_unknown_size():
    with pytest.raises(ValueError, match="fixed input size"):
        count_flops(build_model(TrialConfig(base_filters=4, depth=2), 3, None))


def _resnet50_params(bands: int) -> int:
    """Hand count of keras.applications ResNet-50 without its top (biased convs, 4-weight BN)."""

    def conv_bn(kernel: int, c_in: int, c_out: int) -> int:
        return kernel * kernel * c_in * c_out + c_out + 4 * c_out

    total = conv_bn(7, bands, 64)
    channels = 64
    for filters, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        total += conv_bn(1, channels, 4 * filters)  # the projection shortcut of each stage's first block
        for _ in range(blocks):
            total += conv_bn(1, channels, filters) + conv_bn(3, filters, filters) + conv_bn(1, filters, 4 * filters)
            channels = 4 * filters
    return total


# DeepLab-V3's encoder is all of ResNet-50, conv5 included (23.6 M parameters at 3 bands), whatever the width.
@pytest.mark.parametrize("bands, base_filters", [(3, 4), (23, 8)])
def test_deeplabv3_encoder_is_all_of_resnet50(bands, base_filters):
    model = build_model(TrialConfig(backbone="deeplabv3", base_filters=base_filters), bands, 64)
    encoder = sum(layer.count_params() for layer in model.layers if layer.name.startswith(("conv", "pool")))
    assert encoder == _resnet50_params(bands)
    assert model.get_layer("aspp").count_params() > 0
