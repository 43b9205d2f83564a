"""Loss functions by name: `get(name, **params)` returns `(y_true, y_prob) -> scalar`.

Every loss takes float (B, H, W, 1) tensors — the mask and the model's sigmoid
probabilities — and returns a float32 scalar built from Keras 3 ops, so it runs inside a
`tf.function` train step (and under `tf.distribute`: none keeps state). The names are
those of `rmaunet.config.LOSSES` (Table IV of the paper plus the combinations):

- `cross_entropy`: binary cross-entropy (Eq. 1 without its L2 term, see below).
- `focal(gamma, alpha)`: Lin et al.'s focal loss with class balancing `alpha` on the
  landslide class (Keras' `BinaryFocalCrossentropy(apply_class_balancing=True)`).
- `log_cosh(smooth)`: log(cosh(Dice loss)) (Jadon's "Log-Cosh Dice").
- `iou(smooth)`: soft Jaccard loss 1 − (Σyp + s)/(Σy + Σp − Σyp + s).
- `tversky(alpha, beta, smooth)`: 1 − (TP + s)/(TP + α·FP + β·FN + s) with soft counts
  (Salehi et al.: α weighs false positives, β false negatives); α = β = 0.5 is Dice.
- `lovasz(per_image)`: Berman et al.'s Lovász hinge on logits recovered from the
  probabilities (logit of the probability clipped to [1e-7, 1 − 1e-7]).
- `boundary(theta0, theta, include_background)`: Bokhovkin & Burnaev's boundary loss, the
  paper's reference [53]: 1 − a soft boundary F1 score. Boundaries are max-pool residues,
  y_b = maxpool(1 − y, θ0) − (1 − y), widened by a second max-pool, y_b_ext = maxpool(y_b, θ);
  P = Σ p_b·g_b_ext / Σ p_b, R = Σ p_b_ext·g_b / Σ g_b, BF1 = 2PR / (P + R), per image and
  class, averaged. Their code scores every softmax channel; for a sigmoid output those are
  the landslide p and the background 1 − p (`include_background=False`: the landslide only).
- `signed_distance`: Kervadec et al.'s boundary loss mean(φ_G · p) with φ_G the signed
  Euclidean distance map of the mask (pixels; negative inside a landslide, positive outside).
- `center(weight, base)`: `base` loss (cross-entropy; "none": no mask loss) + weight ·
  Wen et al.'s center loss on the decoder's pixel features (per-batch class centers);
  needs the features, see `needs_features`.
- `focal_iou(alpha, gamma, focal_alpha, smooth)`: alpha·focal + (1 − alpha)·iou, the
  paper's Eq. 2 (alpha = 0.5 there); alpha is the "loss weighting" a search explores.
- `weighted_sum(terms)`: Σ weight·loss over `[{"name": ..., "weight": ..., **params}]`.

Region losses (iou, Dice, Tversky) sum their soft counts over the whole batch, like the
split-level metrics, and a positive `smooth` keeps them defined on all-background batches.

The paper's L2 term (λ = 1e-4, Eq. 1) is in none of these functions: it is the
TrialConfig's `l2`, applied as kernel regularisers by the models for every loss, and the
train step adds `model.losses`.

A loss that needs the decoder's features (center, or a weighted_sum containing it) has
the attribute `needs_features = True`; the trainer then calls
`fn(y_true, y_prob, features=features)` with features of shape (B, H, W, C).
A loss that cannot be XLA-compiled (signed_distance, or a combination containing it) has
`supports_xla = False`; the trainer must then trace its step without `jit_compile`.

Bad names and bad parameters raise `rmaunet.errors.ConfigError` when the loss is built,
before any training starts.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from keras import ops

from rmaunet.errors import ConfigError

__all__ = ["get", "REGISTRY", "LossFn"]

# The clip Keras itself uses for cross-entropies: keeps log() and logit() finite.
_EPS = 1e-7

LossFn = Callable[..., Any]


# --------------------------------------------------------------------------- helpers
def _as_float(y_true: Any, y_prob: Any) -> tuple[Any, Any]:
    # Mixed precision may hand float16 probabilities over; losses are summed in float32.
    return ops.cast(y_true, "float32"), ops.cast(y_prob, "float32")


def _soft_counts(y_true: Any, y_prob: Any) -> tuple[Any, Any, Any]:
    """Soft TP, FP, FN summed over the batch."""
    tp = ops.sum(y_true * y_prob)
    fp = ops.sum((1.0 - y_true) * y_prob)
    fn = ops.sum(y_true * (1.0 - y_prob))
    return tp, fp, fn


def _check_range(loss: str, name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"loss {loss}: {name} must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        lo = "(" if open_low else "["
        raise ConfigError(f"loss {loss}: {name} = {value} is outside {lo}{low}, {high}]")
    return float(value)


def _dice_loss(y_true: Any, y_prob: Any, smooth: float) -> Any:
    tp, fp, fn = _soft_counts(y_true, y_prob)
    return 1.0 - (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)


# --------------------------------------------------------------------------- losses
def cross_entropy() -> LossFn:
    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        p = ops.clip(y_prob, _EPS, 1.0 - _EPS)
        return -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))

    return loss


def focal(gamma: float = 2.0, alpha: float = 0.25) -> LossFn:
    gamma = _check_range("focal", "gamma", gamma, 0.0, 100.0)
    alpha = _check_range("focal", "alpha", alpha, 0.0, 1.0)

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        p = ops.clip(y_prob, _EPS, 1.0 - _EPS)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
        return ops.mean(-alpha_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t))

    return loss


def log_cosh(smooth: float = 1.0) -> LossFn:
    smooth = _check_range("log_cosh", "smooth", smooth, 0.0, 1e6, open_low=True)

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        # The Dice loss lies in [0, 1], where cosh cannot overflow.
        return ops.log(ops.cosh(_dice_loss(y_true, y_prob, smooth)))

    return loss


def iou(smooth: float = 1.0) -> LossFn:
    smooth = _check_range("iou", "smooth", smooth, 0.0, 1e6, open_low=True)

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        tp, fp, fn = _soft_counts(y_true, y_prob)
        return 1.0 - (tp + smooth) / (tp + fp + fn + smooth)

    return loss


def tversky(alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0) -> LossFn:
    alpha = _check_range("tversky", "alpha", alpha, 0.0, 1.0)
    beta = _check_range("tversky", "beta", beta, 0.0, 1.0)
    smooth = _check_range("tversky", "smooth", smooth, 0.0, 1e6, open_low=True)

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        tp, fp, fn = _soft_counts(y_true, y_prob)
        return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)

    return loss


def _lovasz_hinge_rows(labels: Any, logits: Any) -> Any:
    """Lovász hinge of each row of (R, N) labels/logits (Berman et al., Alg. 1)."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    order = ops.argsort(-errors, axis=-1)  # decreasing errors
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    gt_sorted = ops.stop_gradient(ops.take_along_axis(labels, order, axis=-1))
    # Gradient of the Jaccard loss's Lovász extension at the sorted errors.
    gts = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(gt_sorted, axis=-1)
    union = gts + ops.cumsum(1.0 - gt_sorted, axis=-1)  # >= 1: never divides by zero
    jaccard = 1.0 - intersection / union
    grad = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    return ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(grad), axis=-1)


def lovasz(per_image: bool = True) -> LossFn:
    if not isinstance(per_image, bool):
        raise ConfigError(f"loss lovasz: per_image must be true or false, got {per_image!r}")

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        p = ops.clip(y_prob, _EPS, 1.0 - _EPS)
        logits = ops.log(p) - ops.log(1.0 - p)
        rows = ops.shape(y_true)[0] if per_image else 1
        labels = ops.reshape(y_true, (rows, -1))
        return ops.mean(_lovasz_hinge_rows(labels, ops.reshape(logits, (rows, -1))))

    return loss


def _signed_distance_maps(masks: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance to the mask's boundary, per image of a (B, H, W, 1) batch.

    Kervadec et al.'s convention: outside the landslide the distance to the nearest
    landslide pixel, inside minus the distance to the nearest background pixel plus one
    (so boundary pixels of the landslide carry 0). An image with no landslide gets +1
    everywhere, one that is all landslide −1, so the loss still pushes its probabilities
    the right way (the reference code leaves such images at 0 and they teach nothing).
    """
    from scipy.ndimage import distance_transform_edt

    out = np.empty(masks.shape, dtype=np.float32)
    for i, mask in enumerate(masks[..., 0] > 0.5):
        if not mask.any():
            out[i, ..., 0] = 1.0
        elif mask.all():
            out[i, ..., 0] = -1.0
        else:
            out[i, ..., 0] = distance_transform_edt(~mask) - (distance_transform_edt(mask) - 1.0) * mask
    return out


def signed_distance() -> LossFn:
    import tensorflow as tf  # numpy_function is TensorFlow's; the EDT has no Keras op

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        # The distance map depends on the mask only: no gradient flows through it, and
        # the loss stays linear (so differentiable) in y_prob. numpy_function cannot be
        # XLA-compiled: this loss needs TrialConfig.xla = False.
        phi = tf.numpy_function(_signed_distance_maps, [y_true], tf.float32, stateful=False)
        phi = ops.stop_gradient(ops.reshape(phi, ops.shape(y_true)))
        return ops.mean(phi * y_prob)

    loss.supports_xla = False
    return loss


def _pool_size(name: str, value: Any) -> int:
    # An odd window is centred on its pixel, as the authors' padding (θ − 1)/2 assumes.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ConfigError(f"loss boundary: {name} must be an odd positive integer, got {value!r}")
    return value


def _max_pool_same(x: Any, size: int) -> Any:
    # Stride 1, "same" padding: the padded border never wins the max, so the image edge
    # is no boundary (as with PyTorch's -inf padding in the authors' code).
    return ops.max_pool(x, pool_size=size, strides=1, padding="same")


def boundary(theta0: int = 3, theta: int = 5, include_background: bool = True) -> LossFn:
    theta0 = _pool_size("theta0", theta0)
    theta = _pool_size("theta", theta)
    if not isinstance(include_background, bool):
        raise ConfigError(f"loss boundary: include_background must be true or false, got {include_background!r}")

    def loss(y_true, y_prob):
        y_true, y_prob = _as_float(y_true, y_prob)
        if include_background:
            y_true = ops.concatenate([y_true, 1.0 - y_true], axis=-1)
            y_prob = ops.concatenate([y_prob, 1.0 - y_prob], axis=-1)
        gt_b = _max_pool_same(1.0 - y_true, theta0) - (1.0 - y_true)
        pred_b = _max_pool_same(1.0 - y_prob, theta0) - (1.0 - y_prob)
        gt_b_ext = _max_pool_same(gt_b, theta)
        pred_b_ext = _max_pool_same(pred_b, theta)
        # Per image and class; the authors' 1e-7 keeps an image without boundaries at
        # BF1 = 0 (loss 1, no gradient) instead of 0/0.
        precision = ops.sum(pred_b * gt_b_ext, axis=(1, 2)) / (ops.sum(pred_b, axis=(1, 2)) + _EPS)
        recall = ops.sum(pred_b_ext * gt_b, axis=(1, 2)) / (ops.sum(gt_b, axis=(1, 2)) + _EPS)
        bf1 = 2.0 * precision * recall / (precision + recall + _EPS)
        return ops.mean(1.0 - bf1)

    return loss


def _center_term(y_true: Any, features: Any) -> Any:
    """Wen et al.'s center loss, ½·mean over pixels of ‖x − c_y‖², with per-batch centers.

    The centers are each class's mean feature in the batch, held constant for the
    gradient (Wen et al. update centers separately from the network). Batch centers
    keep no state, so the loss works unchanged under tf.function, tf.distribute and XLA.
    """
    features = ops.cast(features, "float32")
    if tuple(y_true.shape[1:3]) != tuple(features.shape[1:3]):
        y_true = ops.image.resize(y_true, tuple(features.shape[1:3]), interpolation="nearest")
    fg = ops.cast(y_true > 0.5, "float32")
    bg = 1.0 - fg
    # A class absent from the batch has no pixels: its (zero) center is never used.
    c_fg = ops.sum(fg * features, axis=(0, 1, 2)) / ops.maximum(ops.sum(fg), 1.0)
    c_bg = ops.sum(bg * features, axis=(0, 1, 2)) / ops.maximum(ops.sum(bg), 1.0)
    centers = ops.stop_gradient(fg * c_fg + bg * c_bg)
    return 0.5 * ops.mean(ops.sum(ops.square(features - centers), axis=-1))


class _FeatureLoss:
    """A loss with an auxiliary term on the decoder's pixel features (trainer contract)."""

    needs_features = True

    def __init__(self, fn: Callable[[Any, Any, Any], Any], *, supports_xla: bool = True) -> None:
        self._fn = fn
        self.supports_xla = supports_xla

    def __call__(self, y_true: Any, y_prob: Any, features: Any = None) -> Any:
        if features is None:
            raise ValueError("this loss needs the decoder's features: call it as fn(y_true, y_prob, features=...)")
        return self._fn(y_true, y_prob, features)


def center(weight: float = 0.01, base: str = "cross_entropy") -> LossFn:
    weight = _check_range("center", "weight", weight, 0.0, 1e6)
    # The center term alone does not supervise the mask: it is added to a mask loss, or
    # (base "none") used as one term of a weighted_sum that holds the mask loss.
    if base in ("center", "weighted_sum") or (base != "none" and base not in REGISTRY):
        mask_losses = ", ".join(n for n in REGISTRY if n not in ("center", "weighted_sum"))
        raise ConfigError(f"loss center: base must be none or one of: {mask_losses}; got {base!r}")
    mask_loss = None if base == "none" else get(base)

    def loss(y_true, y_prob, features):
        y_true, y_prob = _as_float(y_true, y_prob)
        term = weight * _center_term(y_true, features)
        return term if mask_loss is None else mask_loss(y_true, y_prob) + term

    return _FeatureLoss(loss, supports_xla=getattr(mask_loss, "supports_xla", True))


def focal_iou(alpha: float = 0.5, gamma: float = 2.0, focal_alpha: float = 0.25, smooth: float = 1.0) -> LossFn:
    alpha = _check_range("focal_iou", "alpha", alpha, 0.0, 1.0)
    focal_loss = focal(gamma=gamma, alpha=focal_alpha)
    iou_loss = iou(smooth=smooth)

    def loss(y_true, y_prob):
        return alpha * focal_loss(y_true, y_prob) + (1.0 - alpha) * iou_loss(y_true, y_prob)

    return loss


def weighted_sum(terms: Sequence[Mapping[str, Any]] = ()) -> LossFn:
    if isinstance(terms, (str, Mapping)) or not isinstance(terms, Sequence) or not terms:
        raise ConfigError("loss weighted_sum: terms must be a non-empty list of {name, weight, ...} mappings")
    built: list[tuple[float, LossFn]] = []
    for i, term in enumerate(terms):
        # A TrialConfig may hand a term over as a tuple of (key, value) pairs.
        spec = dict(term) if isinstance(term, (Mapping, list, tuple)) else None
        if spec is None or "name" not in spec:
            raise ConfigError(f"loss weighted_sum: term {i} must be a mapping with a 'name', got {term!r}")
        name = spec.pop("name")
        weight = _check_range("weighted_sum", f"terms[{i}].weight", spec.pop("weight", 1.0), 0.0, 1e6)
        built.append((weight, get(name, **spec)))

    supports_xla = all(getattr(fn, "supports_xla", True) for _, fn in built)
    if not any(getattr(fn, "needs_features", False) for _, fn in built):

        def loss(y_true, y_prob):
            return sum(w * fn(y_true, y_prob) for w, fn in built)

        loss.supports_xla = supports_xla
        return loss

    def feature_loss(y_true, y_prob, features):
        return sum(
            w * (fn(y_true, y_prob, features=features) if getattr(fn, "needs_features", False) else fn(y_true, y_prob))
            for w, fn in built
        )

    return _FeatureLoss(feature_loss, supports_xla=supports_xla)


REGISTRY: dict[str, Callable[..., LossFn]] = {
    "cross_entropy": cross_entropy,
    "focal": focal,
    "log_cosh": log_cosh,
    "iou": iou,
    "tversky": tversky,
    "lovasz": lovasz,
    "boundary": boundary,
    "signed_distance": signed_distance,
    "center": center,
    "focal_iou": focal_iou,
    "weighted_sum": weighted_sum,
}


def get(name: str, **params: Any) -> LossFn:
    """The loss `name` built with `params`; ConfigError for an unknown name or parameter."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown loss {name!r} (known: {', '.join(REGISTRY)})")
    factory = REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        known = ", ".join(accepted) or "none"
        raise ConfigError(f"loss {name}: unknown parameter {unknown[0]!r} (accepted: {known})")
    return factory(**params)
