"""Each model layer on its own: serialisable round trip and the behaviour it promises."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helpers import random_batch, run_layer_round_trip

from rmaunet.models import (
    ASPP,
    CBAM,
    ChannelMeanHead,
    ConvBNAct,
    DetectionHead,
    DoubleConv,
    ResConvBlock,
    ResolutionHead,
    SqueezeExcitation,
    TriAxialAttention,
)
from rmaunet.models.attention import make_attention
from rmaunet.models.blocks import make_block

SHAPE = (8, 12, 6)  # H ≠ W ≠ C so a mixed-up axis fails loudly


# Every layer survives get_config/from_config and a .keras save/reload with identical outputs.
@pytest.mark.parametrize(
    "make_layer, out_channels",
    [
        (lambda: ConvBNAct(5, 3, l2=1e-4), 5),
        (lambda: DoubleConv(5, l2=1e-4, attention="cbam"), 5),
        (lambda: ResConvBlock(5, l2=1e-4, attention="mha"), 5),
        (lambda: ResConvBlock(6, attention="se", dilation_rate=2), 6),
        (lambda: SqueezeExcitation(ratio=2), 6),
        (lambda: CBAM(ratio=2, kernel_size=3), 6),
        (lambda: TriAxialAttention(num_heads=2, key_dim=4, pooling="mean_max", l2=1e-4), 6),
        (lambda: ASPP(4, rates=(1, 2)), 4),
        (lambda: ChannelMeanHead(prior=0.1), 1),
    ],
    ids=[
        "conv_bn_act",
        "double_conv",
        "res_conv_mha",
        "res_conv_dilated",
        "se",
        "cbam",
        "tri_axial",
        "aspp",
        "mean_head",
    ],
)
def test_layer_round_trip(make_layer, out_channels, tmp_path):
    out = run_layer_round_trip(make_layer(), SHAPE, tmp_path)
    assert out.shape == (2, *SHAPE[:2], out_channels)


# Resolution heads halve, keep or double the size and emit float32 probabilities.
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_resolution_head_sizes(scale, tmp_path):
    out = run_layer_round_trip(ResolutionHead(scale, 6), SHAPE, tmp_path)
    assert out.shape == (2, int(8 * scale), int(12 * scale), 1)
    assert out.dtype == np.float32 and np.all((out > 0) & (out < 1))


# The detection head pools the whole map into one probability per image.
def test_detection_head_round_trip(tmp_path):
    out = run_layer_round_trip(DetectionHead(l2=1e-4), SHAPE, tmp_path)
    assert out.shape == (2, 1) and np.all((out > 0) & (out < 1))


# Attention only gates its input: every output element is the input times a factor in (0, 1).
@pytest.mark.parametrize("name", ["se", "cbam", "mha"])
def test_attention_gates_lie_between_zero_and_one(name):
    keras.utils.set_random_seed(0)
    layer = make_attention(name)
    x = random_batch((2, *SHAPE), seed=1) + 3.0  # away from zero so the ratio is well defined
    ratio = np.asarray(layer(x)) / x
    assert np.all((ratio > 0) & (ratio < 1))
    assert np.std(ratio) > 1e-4  # the gates depend on the content, not a constant 0.5


# SE gates whole channels: the factor is the same at every pixel of a channel.
def test_squeeze_excitation_gate_is_per_channel():
    x = random_batch((2, *SHAPE), seed=2) + 3.0
    ratio = np.asarray(SqueezeExcitation(ratio=2)(x)) / x
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :], ratio.shape), rtol=1e-5)


# Three-axis attention averages a channel-, a height- and a width-wise gate: unlike SE,
# its factor varies across pixels of a channel and across channels of a pixel.
def test_tri_axial_attention_varies_along_every_axis():
    x = random_batch((2, *SHAPE), seed=3) + 3.0
    ratio = np.asarray(TriAxialAttention(num_heads=2, key_dim=4)(x)) / x
    assert np.std(ratio, axis=(1, 2)).min() > 1e-5
    assert np.std(ratio, axis=3).min() > 1e-5


# The three-axis attention needs static spatial sizes (its token width is a side).
def test_tri_axial_attention_refuses_unknown_size():
    with pytest.raises(ValueError, match="static height and width"):
        TriAxialAttention()(keras.Input((None, None, 4)))


# Res-Conv's residual path: with the merge conv zeroed (inference BN keeps 0 at 0) the block is the identity.
def test_res_conv_is_identity_when_its_conv_path_is_zero():
    block = ResConvBlock(6)
    x = random_batch((2, *SHAPE), seed=4)
    block(x)
    assert block.project is None  # same channel count: no projection
    block.merge.conv.kernel.assign(np.zeros(block.merge.conv.kernel.shape, "float32"))
    np.testing.assert_allclose(np.asarray(block(x, training=False)), x, atol=1e-6)


# Res-Conv projects the shortcut with a 1×1 conv when channel counts differ.
def test_res_conv_projects_when_channels_change():
    block = ResConvBlock(4)
    assert block(random_batch((1, *SHAPE))).shape == (1, 8, 12, 4)
    assert block.project is not None and block.project.kernel.shape == (1, 1, 6, 4)


# Each block ends with the attention the config names, and has none for "none".
@pytest.mark.parametrize("block", ["double_conv", "res_conv"])
@pytest.mark.parametrize(
    "attention, kind", [("none", type(None)), ("se", SqueezeExcitation), ("cbam", CBAM), ("mha", TriAxialAttention)]
)
def test_blocks_carry_the_named_attention(block, attention, kind):
    assert isinstance(make_block(block, 4, attention=attention).attend, kind)


# Unknown names are refused by the registries with the list of valid ones.
def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        make_block("triple_conv", 4)
    with pytest.raises(ValueError, match="choose one of"):
        make_attention("transformer")
