"""Loss functions by name: `get(name, **params)` returns `(y_true, y_prob) -> scalar`.

The paper's L2 term (λ = 1e-4, Eq. 1) is not part of these functions: it is the
TrialConfig's `l2`, applied as kernel regularisers by the models for every loss.
Skeleton version: cross_entropy, focal, iou.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import ops

__all__ = ["get", "REGISTRY"]

_EPS = 1e-7

LossFn = Callable[..., "keras.KerasTensor"]


def cross_entropy() -> LossFn:
    def loss(y_true, y_prob):
        p = ops.clip(y_prob, _EPS, 1 - _EPS)
        return -ops.mean(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))

    return loss


def focal(gamma: float = 2.0, alpha: float = 0.25) -> LossFn:
    def loss(y_true, y_prob):
        p = ops.clip(y_prob, _EPS, 1 - _EPS)
        p_t = y_true * p + (1 - y_true) * (1 - p)
        alpha_t = y_true * alpha + (1 - y_true) * (1 - alpha)
        return ops.mean(-alpha_t * ops.power(1 - p_t, gamma) * ops.log(p_t))

    return loss


def iou(smooth: float = 1.0) -> LossFn:
    def loss(y_true, y_prob):
        inter = ops.sum(y_true * y_prob)
        union = ops.sum(y_true) + ops.sum(y_prob) - inter
        return 1.0 - (inter + smooth) / (union + smooth)

    return loss


REGISTRY: dict[str, Callable[..., LossFn]] = {
    "cross_entropy": cross_entropy,
    "focal": focal,
    "iou": iou,
}


def get(name: str, **params) -> LossFn:
    if name not in REGISTRY:
        raise KeyError(f"unknown loss {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name](**params)
