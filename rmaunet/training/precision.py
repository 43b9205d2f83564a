"""Mixed precision and XLA switches of a TrialConfig, applied in one place.

`configure(config)` must run before the model is built: Keras reads the global dtype
policy when a layer is created, so a policy set afterwards changes nothing. It always
sets the policy (float32 included) because the policy is process-global and a worker
that ran a mixed-precision trial before must not leak it into the next one.

float16 needs loss scaling (its smallest normal number is about 6e-5, so small gradients
underflow to zero); bfloat16 has float32's exponent range and does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmaunet.config import TrialConfig

if TYPE_CHECKING:  # keras is heavy; the study engine imports this module's siblings cheaply
    import keras

__all__ = ["configure", "wrap_optimizer", "needs_loss_scaling"]

_POLICIES = {"float32": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}


def configure(config: TrialConfig) -> bool:
    """Set the Keras global dtype policy for config.precision; return whether to jit-compile."""
    import keras

    keras.mixed_precision.set_global_policy(_POLICIES[config.precision])
    return bool(config.xla)


def needs_loss_scaling(config: TrialConfig) -> bool:
    return config.precision == "mixed_float16"


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, config: TrialConfig) -> keras.optimizers.Optimizer:
    """Wrap in a dynamic LossScaleOptimizer for float16; other precisions unchanged.

    A custom train step must then scale the loss with `optimizer.scale_loss(loss)` before
    taking gradients; `apply_gradients` unscales them and skips steps with inf/NaN.
    """
    import keras

    if needs_loss_scaling(config):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
