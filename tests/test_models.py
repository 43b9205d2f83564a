"""Every model variant builds, predicts the documented outputs and survives a .keras round trip."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from layer_helpers import random_batch, run_model_round_trip

from rmaunet import config as cfg
from rmaunet.config import PRESETS, TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.models import ATTENTIONS, BACKBONES, BLOCKS, HEADS, TASK_OUTPUTS, build_model

SIZE, BANDS = 32, 3
TINY = dict(base_filters=4, depth=2)

# The fast subset covers every value of each factor; the rest of the product runs in CI.
_FAST = {
    ("double_conv", "none", "single", "segmentation"),
    ("res_conv", "mha", "multi_resolution", "segmentation+detection"),
    ("double_conv", "se", "multi_resolution", "detection"),
    ("res_conv", "cbam", "single", "segmentation"),
    ("double_conv", "mha", "single", "segmentation+detection"),
    ("res_conv", "none", "multi_resolution", "segmentation"),
}
_FACTORS = (cfg.BLOCKS, cfg.ATTENTIONS, cfg.HEADS, cfg.TASKS)
_PRODUCT = list(itertools.product(*_FACTORS))


def _pairs(combo: tuple[str, ...]) -> set[tuple[int, str, int, str]]:
    return {(i, combo[i], j, combo[j]) for i, j in itertools.combinations(range(len(combo)), 2)}


def _all_pairs(start: set[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """`start` and, greedily, the variants that add the most pairs of factor values not yet
    covered, until every pair of values of any two factors appears in some variant."""
    chosen = sorted(start)
    missing = set().union(*map(_pairs, _PRODUCT)) - set().union(*map(_pairs, chosen))
    while missing:
        best = max(_PRODUCT, key=lambda combo: len(_pairs(combo) & missing))
        chosen.append(best)
        missing -= _pairs(best)
    return chosen


# A .keras round trip saves each layer by its own config: a variant for every pair of factor
# values (a covering array: 15 of the 48) round-trips; every variant builds and predicts.
_ROUND_TRIP = _all_pairs(_FAST)
_VARIANTS = [
    pytest.param(*combo, marks=() if combo in _FAST else pytest.mark.slow, id="-".join(combo)) for combo in _PRODUCT
]


def _expected_shapes(config: TrialConfig, size: int) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    if "segmentation" in TASK_OUTPUTS[config.task]:
        shapes["mask"] = (2, size, size, 1)
        if config.heads == "multi_resolution":
            shapes.update(
                head_half=(2, size // 2, size // 2, 1),
                head_full=(2, size, size, 1),
                head_double=(2, 2 * size, 2 * size, 1),
            )
    if "detection" in TASK_OUTPUTS[config.task]:
        shapes["detection"] = (2, 1)
    return shapes


def _check_outputs(config: TrialConfig, out: dict[str, np.ndarray], size: int = SIZE) -> None:
    expected = _expected_shapes(config, size)
    if "mask" in expected:
        assert out["features"].shape[:3] == (2, size, size)
        assert out["features"].dtype == np.float32
    assert set(out) == set(expected) | ({"features"} if "mask" in expected else set())
    for name, shape in expected.items():
        assert out[name].shape == shape, name
        assert out[name].dtype == np.float32, name
        assert np.all((out[name] >= 0) & (out[name] <= 1)), f"{name} is not a probability"


# The registries name exactly the values TrialConfig accepts.
@pytest.mark.parametrize(
    "registry, names",
    [
        (BACKBONES, cfg.BACKBONES),
        (BLOCKS, cfg.BLOCKS),
        (ATTENTIONS, cfg.ATTENTIONS),
        (HEADS, cfg.HEADS),
        (TASK_OUTPUTS, cfg.TASKS),
    ],
)
def test_registries_match_config_names(registry, names):
    assert set(registry) == set(names)


# Each block × attention × heads × task variant of the U-Net predicts the documented outputs;
# those of the covering array also round-trip.
@pytest.mark.parametrize("block, attention, heads, task", _VARIANTS)
@pytest.mark.slow
def test_unet_variant_outputs_and_round_trip(block, attention, heads, task, tmp_path):
    config = TrialConfig(block=block, attention=attention, heads=heads, task=task, **TINY)
    model, batch = build_model(config, BANDS, SIZE), random_batch((2, SIZE, SIZE, BANDS))
    if (block, attention, heads, task) in _ROUND_TRIP:
        out = run_model_round_trip(model, batch, tmp_path)
    else:
        out = {name: np.asarray(value) for name, value in model(batch, training=False).items()}
    _check_outputs(config, out)


def test_the_round_trip_variants_cover_every_pair_of_factor_values():
    covered = set().union(*map(_pairs, _ROUND_TRIP))
    assert all(_pairs(combo) <= covered for combo in _PRODUCT)
    assert len(_ROUND_TRIP) < len(_PRODUCT) / 3


# Each backbone of Table VIII takes N bands and predicts a full-resolution mask, and round-trips.
@pytest.mark.parametrize(
    "backbone",
    ["unet", "deeplabv3", "mobilenetv3", pytest.param("efficientnetv2", marks=pytest.mark.slow)],
)
@pytest.mark.slow
def test_backbone_round_trip(backbone, tmp_path):
    config = TrialConfig(backbone=backbone, heads="multi_resolution", task="segmentation+detection", **TINY)
    out = run_model_round_trip(build_model(config, 5, SIZE), random_batch((2, SIZE, SIZE, 5)), tmp_path)
    _check_outputs(config, out)


# DeepLab-V3 as published: ResNet-50 whose conv5 is atrous (stride 16 throughout, dilation 2),
# ASPP with ReLU at the published rates scaled to the input, bilinear upsampling to full size.
@pytest.mark.parametrize("size, rates", [(128, (2, 3, 5)), (64, (1, 2, 2))])
@pytest.mark.slow
def test_deeplabv3_is_aspp_on_atrous_resnet50(size, rates):
    model = build_model(TrialConfig(backbone="deeplabv3", **TINY), 14, size)
    assert model.get_layer("conv5_block3_out").output.shape[1:] == (size // 16, size // 16, 2048)
    assert model.get_layer("conv5_block1_2_conv").dilation_rate == (2, 2)
    aspp = model.get_layer("aspp")
    assert aspp.rates == rates
    assert [conv.dilation_rate[0] for conv, _ in aspp.branches] == [1, *rates]
    assert not any(isinstance(layer, keras.layers.LeakyReLU) for layer in aspp._flatten_layers())
    out = model(random_batch((1, size, size, 14)), training=False)
    assert tuple(out["mask"].shape) == (1, size, size, 1)


# The full RMAU-NET preset (Res-Conv + multi-head attention + multiple heads) builds for 23 bands and round-trips.
@pytest.mark.slow
def test_rmaunet_preset_round_trip(tmp_path):
    config = PRESETS["rmaunet"].replace(**TINY)
    assert (config.block, config.attention, config.heads) == ("res_conv", "mha", "multi_resolution")
    model = build_model(config, 23, SIZE)
    out = run_model_round_trip(model, random_batch((2, SIZE, SIZE, 23)), tmp_path)
    _check_outputs(config, out)
    assert any(type(layer).__name__ == "ResConvBlock" for layer in model.layers)


# Without attention 'mha' the U-Net accepts any size divisible by 2**depth after building once.
def test_unet_without_size_accepts_other_sizes():
    model = build_model(TrialConfig(heads="multi_resolution", **TINY), BANDS, None)
    for size in (16, 24):
        out = {k: np.asarray(v) for k, v in model(random_batch((2, size, size, BANDS)), training=False).items()}
        _check_outputs(TrialConfig(heads="multi_resolution", **TINY), out, size)


# Architectures that need a fixed size, or a size the depth cannot halve, are refused with a ConfigError.
@pytest.mark.parametrize(
    "changes, size, message",
    [
        (dict(attention="mha"), None, "fixed image size"),
        (dict(backbone="mobilenetv3"), None, "fixed image size"),
        (dict(backbone="deeplabv3"), None, "fixed image size"),
        (dict(), 30, "divisible by 4"),
        (dict(backbone="efficientnetv2"), 48, "divisible by 32"),
        (dict(backbone="deeplabv3"), 40, "divisible by 16"),
    ],
)
def test_unsupported_sizes_raise_config_error(changes, size, message):
    with pytest.raises(ConfigError, match=message):
        build_model(TrialConfig(**TINY, **changes), BANDS, size)


# The L2 term is λ/2·‖θ‖² summed over conv kernels, and absent when l2 = 0.
def test_l2_losses_are_half_lambda_squared_kernels():
    model = build_model(TrialConfig(l2=1e-2, **TINY), BANDS, SIZE)
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    expected = sum(1e-2 / 2 * float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for k in kernels)
    assert len(model.losses) == len(kernels) > 0
    assert float(sum(keras.ops.convert_to_numpy(term) for term in model.losses)) == pytest.approx(expected, rel=1e-5)
    assert build_model(TrialConfig(l2=0.0, **TINY), BANDS, SIZE).losses == []


# Under a mixed-precision policy the internals run in 16 bits but every output stays float32.
@pytest.mark.parametrize("policy, compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_outputs_are_float32(policy, compute):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        config = TrialConfig(
            block="res_conv", attention="mha", heads="multi_resolution", task="segmentation+detection", **TINY
        )
        model = build_model(config, BANDS, SIZE)
        out = {k: np.asarray(v) for k, v in model(random_batch((2, SIZE, SIZE, BANDS)), training=False).items()}
        assert any(w.dtype == "float32" and "conv" in w.path for w in model.weights)  # variables stay float32
        assert any(layer.compute_dtype == compute for layer in model.layers)
    finally:
        keras.config.set_dtype_policy(previous)
    _check_outputs(config, out)


# The multi-resolution prediction is exactly the average of its three heads resized to H×W.
def test_multi_resolution_mask_is_average_of_heads():
    config = TrialConfig(heads="multi_resolution", **TINY)
    out = {
        k: np.asarray(v)
        for k, v in build_model(config, BANDS, SIZE)(random_batch((2, SIZE, SIZE, BANDS)), training=False).items()
    }
    double = out["head_double"].reshape(2, SIZE, 2, SIZE, 2, 1).mean(axis=(2, 4))
    half = np.asarray(keras.layers.UpSampling2D(2, interpolation="bilinear")(out["head_half"]))
    np.testing.assert_allclose(out["mask"], (half + out["head_full"] + double) / 3, atol=1e-6)


# Every trainable weight receives a gradient from the outputs the trainer scores (no dead branches).
@pytest.mark.parametrize(
    "changes",
    [
        dict(block="res_conv", attention="mha", heads="multi_resolution", task="segmentation+detection"),
        dict(block="res_conv", attention="cbam", task="detection"),
        dict(backbone="deeplabv3", attention="se", heads="multi_resolution"),
        dict(backbone="mobilenetv3", task="segmentation+detection"),
        pytest.param(dict(backbone="efficientnetv2"), marks=pytest.mark.slow),
    ],
    ids=["rmaunet_both_tasks", "detection_only", "deeplabv3", "mobilenetv3", "efficientnetv2"],
)
@pytest.mark.slow
def test_every_weight_gets_a_gradient(changes):
    import tensorflow as tf

    model = build_model(TrialConfig(**TINY, **changes), BANDS, SIZE)
    with tf.GradientTape() as tape:
        outputs = model(random_batch((2, SIZE, SIZE, BANDS)), training=True)
        scored = [v for k, v in outputs.items() if k != "features"]
        loss = tf.add_n([tf.reduce_mean(v) for v in scored]) + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    assert [v.path for v, g in zip(model.trainable_variables, grads) if g is None] == []


# The full RMAU-NET trains under XLA (config.xla): a jit-compiled gradient step traces and is finite.
@pytest.mark.slow
def test_rmaunet_gradient_step_compiles_with_xla():
    import tensorflow as tf

    model = build_model(PRESETS["rmaunet"].replace(task="segmentation+detection", **TINY), 23, SIZE)

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_mean(outputs["mask"]) + tf.reduce_mean(outputs["detection"]) + tf.add_n(model.losses)
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, grads = step(tf.constant(random_batch((2, SIZE, SIZE, 23))))
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g.numpy())) for g in grads)
