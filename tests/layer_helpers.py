"""One round trip for every layer and model variant (KerasHub style).

`run_model_round_trip` calls a model on a seeded batch, saves it as `.keras`, reloads it
without custom_objects (so every layer must be registered and serialisable) and asserts
the reloaded model gives the same outputs. `run_layer_round_trip` wraps a single layer
in a functional model and does the same, after checking get_config/from_config.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

__all__ = ["run_model_round_trip", "run_layer_round_trip", "random_batch"]


def random_batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _as_dict(outputs) -> dict[str, np.ndarray]:
    if isinstance(outputs, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}
    return {"output": keras.ops.convert_to_numpy(outputs)}


def run_model_round_trip(model: keras.Model, batch: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    """Build/call/save/reload/compare; returns the original model's outputs (inference mode)."""
    before = _as_dict(model(batch, training=False))
    for name, value in before.items():
        assert np.all(np.isfinite(value)), f"{name}: non-finite output"
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    after = _as_dict(reloaded(batch, training=False))
    assert sorted(after) == sorted(before)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert reloaded.count_params() == model.count_params()
    return before


def run_layer_round_trip(
    layer: keras.layers.Layer, input_shape: tuple[int, ...], tmp_path: Path, batch_size: int = 2
) -> np.ndarray:
    """get_config → from_config gives an equal config; then the model round trip on the layer alone."""
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs), name=f"wrap_{layer.name}")
    return run_model_round_trip(model, random_batch((batch_size, *input_shape)), tmp_path)["output"]
