"""Losses: registry, parameter errors, finiteness, and equality with independent computations."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import distance_transform_edt

from rmaunet import losses
from rmaunet.config import LOSSES
from rmaunet.errors import ConfigError

SHAPE = (2, 8, 8, 1)
CHANNELS = 3

# One representative parameterisation per registry name (weighted_sum needs terms).
BUILD_PARAMS: dict[str, dict] = {
    "weighted_sum": {"terms": [{"name": "iou", "weight": 0.3}, {"name": "focal", "weight": 0.7, "gamma": 1.0}]},
}


def _mask(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(SHAPE) < 0.3).astype(np.float32)


def _prob(seed: int, low: float = 0.02, high: float = 0.98) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    return rng.uniform(low, high, SHAPE).astype(np.float32)


def _features(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 200).normal(size=SHAPE[:3] + (CHANNELS,)).astype(np.float32)


def _value_and_grads(fn, y_true, y_prob, features=None):
    """Loss value and its gradients w.r.t. y_prob (and the features), inside a tf.function."""
    needs = getattr(fn, "needs_features", False)
    p = tf.Variable(y_prob)
    f = tf.Variable(features if features is not None else np.zeros(SHAPE[:3] + (CHANNELS,), np.float32))

    @tf.function
    def step(y):
        with tf.GradientTape() as tape:
            value = fn(y, p, features=f) if needs else fn(y, p)
        return (value, *tape.gradient(value, [p, f], unconnected_gradients="zero"))

    value, g_prob, g_feat = step(tf.constant(y_true))
    return float(value), g_prob.numpy(), g_feat.numpy()


def _loss_value(fn, y_true, y_prob) -> float:
    return float(fn(tf.constant(y_true), tf.constant(y_prob)))


# behaviour: the registry names exactly the losses a TrialConfig may ask for
def test_registry_matches_config():
    assert tuple(losses.REGISTRY) == LOSSES


# behaviour: unknown names, unknown keywords and out-of-range values are ConfigErrors
@pytest.mark.parametrize(
    "name, params",
    [
        ("dice_of_doom", {}),
        ("focal", {"gama": 2.0}),
        ("focal", {"alpha": 1.5}),
        ("focal_iou", {"alpha": -0.1}),
        ("tversky", {"beta": 2.0}),
        ("iou", {"smooth": 0.0}),
        ("lovasz", {"per_image": "yes"}),
        ("boundary", {"theta0": 4}),
        ("boundary", {"theta": 0}),
        ("boundary", {"theta0": 3.0}),
        ("boundary", {"include_background": "yes"}),
        ("center", {"base": "center"}),
        ("center", {"base": "dice"}),
        ("weighted_sum", {"terms": []}),
        ("weighted_sum", {"terms": [{"weight": 1.0}]}),
        ("weighted_sum", {"terms": [{"name": "iou", "weight": "heavy"}]}),
        ("weighted_sum", {"terms": [{"name": "iou", "colour": 1}]}),
    ],
)
def test_bad_name_or_parameter_is_config_error(name, params):
    with pytest.raises(ConfigError) as info:
        losses.get(name, **params)
    assert "\n" not in str(info.value)


# behaviour: every loss is finite with finite gradients on an all-background batch and a perfect prediction
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("case", ["all_background_perfect", "all_background_noisy", "perfect", "all_landslide"])
def test_finite_value_and_gradients(name, case):
    fn = losses.get(name, **BUILD_PARAMS.get(name, {}))
    if case == "all_background_perfect":
        y_true = np.zeros(SHAPE, np.float32)
        y_prob = y_true.copy()
    elif case == "all_background_noisy":
        y_true = np.zeros(SHAPE, np.float32)
        y_prob = _prob(0)
    elif case == "perfect":
        y_true = _mask(1)
        y_prob = y_true.copy()
    else:
        y_true = np.ones(SHAPE, np.float32)
        y_prob = _prob(2)
    value, g_prob, g_feat = _value_and_grads(fn, y_true, y_prob, _features(3))
    assert np.isfinite(value)
    assert np.all(np.isfinite(g_prob)) and np.all(np.isfinite(g_feat))


# behaviour: every loss is lower for a good prediction than for its opposite
# (boundary excepted: a mask and its inverse share their boundary, so it cannot tell them apart)
@pytest.mark.parametrize("name", [n for n in LOSSES if n != "boundary"])
def test_good_prediction_beats_inverted_one(name):
    fn = losses.get(name, **BUILD_PARAMS.get(name, {}))
    y_true = _mask(4)
    good = np.where(y_true > 0.5, 0.9, 0.1).astype(np.float32)
    bad = 1.0 - good
    features = np.repeat(y_true, CHANNELS, axis=-1)  # features that separate the classes
    good_value, _, _ = _value_and_grads(fn, y_true, good, features)
    bad_value, _, _ = _value_and_grads(fn, y_true, bad, features + _features(5))
    assert good_value < bad_value


# behaviour: cross_entropy equals Keras' binary cross-entropy
def test_cross_entropy_matches_keras():
    y_true, y_prob = _mask(6), _prob(6)
    expected = float(keras.losses.BinaryCrossentropy()(y_true, y_prob))
    assert _loss_value(losses.get("cross_entropy"), y_true, y_prob) == pytest.approx(expected, rel=1e-5)


# behaviour: focal equals Keras' BinaryFocalCrossentropy with class balancing
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.8)])
def test_focal_matches_keras(gamma, alpha):
    y_true, y_prob = _mask(7), _prob(7)
    reference = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=gamma)
    expected = float(reference(y_true, y_prob))
    assert _loss_value(losses.get("focal", gamma=gamma, alpha=alpha), y_true, y_prob) == pytest.approx(
        expected, rel=1e-5
    )


# behaviour: iou is 1 − soft intersection / soft union over the batch (NumPy)
@pytest.mark.parametrize("smooth", [1.0, 1e-6])
def test_iou_matches_numpy(smooth):
    y_true, y_prob = _mask(8).astype(np.float64), _prob(8).astype(np.float64)
    inter = np.sum(y_true * y_prob)
    expected = 1.0 - (inter + smooth) / (y_true.sum() + y_prob.sum() - inter + smooth)
    assert _loss_value(losses.get("iou", smooth=smooth), y_true, y_prob) == pytest.approx(expected, rel=1e-5)


# behaviour: Tversky with α = β = 0.5 is the Dice loss (Keras' own), any other α, β Keras' Tversky
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.7), (0.9, 0.1)])
def test_tversky_matches_dice_and_keras(alpha, beta):
    y_true, y_prob = _mask(9), _prob(9)
    ours = _loss_value(losses.get("tversky", alpha=alpha, beta=beta, smooth=1e-6), y_true, y_prob)
    # Keras' argument names are swapped against Salehi et al.: its `alpha` weighs Σ y(1−p), the FN.
    assert ours == pytest.approx(float(keras.losses.tversky(y_true, y_prob, alpha=beta, beta=alpha)), rel=1e-5)
    if alpha == beta == 0.5:
        assert ours == pytest.approx(float(keras.losses.Dice()(y_true, y_prob)), rel=1e-5)


# behaviour: log_cosh is log(cosh(Dice loss)), and Tversky(0.5, 0.5) and Dice agree at any smoothing
def test_log_cosh_of_dice():
    y_true, y_prob = _mask(10).astype(np.float64), _prob(10).astype(np.float64)
    inter = np.sum(y_true * y_prob)
    dice = 1.0 - (2 * inter + 1.0) / (y_true.sum() + y_prob.sum() + 1.0)
    assert _loss_value(losses.get("log_cosh"), y_true, y_prob) == pytest.approx(np.log(np.cosh(dice)), rel=1e-5)


def _jaccard_set_loss(gt: np.ndarray, mistakes: frozenset) -> float:
    """Δ_J of Berman et al.: |M| / |positives ∪ M| for the set M of mispredicted pixels."""
    if not mistakes:
        return 0.0
    return len(mistakes) / len(set(np.flatnonzero(gt)) | mistakes)


def _lovasz_brute_force(gt: np.ndarray, logits: np.ndarray) -> float:
    """Lovász extension of the submodular Δ_J at relu(errors): the max over all orderings."""
    errors = np.maximum(1.0 - logits * (2 * gt - 1), 0.0)
    best = -np.inf
    for order in itertools.permutations(range(len(gt))):
        total, chosen = 0.0, frozenset()
        for i in order:
            grown = chosen | {i}
            total += errors[i] * (_jaccard_set_loss(gt, grown) - _jaccard_set_loss(gt, chosen))
            chosen = grown
        best = max(best, total)
    return best


# behaviour: lovasz equals a brute-force Lovász extension of the Jaccard loss on small inputs
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_matches_brute_force(seed, per_image):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((2, 2, 3, 1)) < 0.4).astype(np.float32)
    y_prob = rng.uniform(0.05, 0.95, y_true.shape).astype(np.float32)
    logits = np.log(y_prob.astype(np.float64)) - np.log1p(-y_prob.astype(np.float64))
    if per_image:
        expected = np.mean([_lovasz_brute_force(y_true[i].ravel(), logits[i].ravel()) for i in range(2)])
    else:
        # 12 pixels are too many orderings: a batch of one image, two rows of three.
        y_true, y_prob, logits = y_true[:1], y_prob[:1], logits[:1]
        expected = _lovasz_brute_force(y_true.ravel(), logits.ravel())
    value = _loss_value(losses.get("lovasz", per_image=per_image), y_true, y_prob)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)


def _window_max(image: np.ndarray, size: int) -> np.ndarray:
    """Max over the size×size window centred on each pixel, clipped at the image's edges."""
    radius = size // 2
    height, width = image.shape
    out = np.empty_like(image)
    for i in range(height):
        for j in range(width):
            out[i, j] = image[max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1].max()
    return out


def _boundary_f1_loss_reference(y_true, y_prob, theta0: int, theta: int, include_background: bool) -> float:
    """Bokhovkin & Burnaev's 1 − BF1 per image and class, averaged, written out pixel by pixel."""
    scores = []
    for gt, pred in zip(y_true[..., 0].astype(np.float64), y_prob[..., 0].astype(np.float64)):
        classes = [(gt, pred), (1 - gt, 1 - pred)] if include_background else [(gt, pred)]
        for g, p in classes:
            g_b = _window_max(1 - g, theta0) - (1 - g)
            p_b = _window_max(1 - p, theta0) - (1 - p)
            g_b_ext, p_b_ext = _window_max(g_b, theta), _window_max(p_b, theta)
            precision = sum(p_b[i, j] * g_b_ext[i, j] for i, j in np.ndindex(g.shape)) / (p_b.sum() + 1e-7)
            recall = sum(p_b_ext[i, j] * g_b[i, j] for i, j in np.ndindex(g.shape)) / (g_b.sum() + 1e-7)
            scores.append(1 - 2 * precision * recall / (precision + recall + 1e-7))
    return float(np.mean(scores))


def _blob_masks() -> np.ndarray:
    """A 2×6×7 batch: a rectangle touching the image edge, and an image with no landslide."""
    y_true = np.zeros((2, 6, 7, 1), np.float32)
    y_true[0, 1:4, 3:7] = 1.0
    return y_true


# behaviour: boundary equals a pixel-by-pixel computation of Bokhovkin & Burnaev's 1 − BF1
@pytest.mark.parametrize("theta0, theta", [(3, 5), (3, 3), (1, 5), (5, 7)])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("masks", ["blob", "random"])
def test_boundary_matches_loop_computation(theta0, theta, include_background, masks):
    y_true = _blob_masks() if masks == "blob" else _mask(18)[:, :6, :7]
    y_prob = np.random.default_rng(18).uniform(0, 1, y_true.shape).astype(np.float32)
    fn = losses.get("boundary", theta0=theta0, theta=theta, include_background=include_background)
    expected = _boundary_f1_loss_reference(y_true, y_prob, theta0, theta, include_background)
    assert _loss_value(fn, y_true, y_prob) == pytest.approx(expected, abs=1e-6)


# behaviour: boundary is 0 for a perfect prediction, 1 for an image without boundaries, and by default θ0 = 3, θ = 5
def test_boundary_extremes_and_defaults():
    y_true = _blob_masks()
    fn = losses.get("boundary")
    assert _loss_value(fn, y_true[:1], y_true[:1]) == pytest.approx(0.0, abs=1e-6)
    assert _loss_value(fn, y_true[1:], _prob(19)[:1, :6, :7]) == pytest.approx(1.0, abs=1e-6)
    y_prob = np.random.default_rng(19).uniform(0, 1, y_true.shape).astype(np.float32)
    expected = _boundary_f1_loss_reference(y_true, y_prob, 3, 5, True)
    assert _loss_value(fn, y_true, y_prob) == pytest.approx(expected, abs=1e-6)


# behaviour: boundary ranks a prediction with the right boundary above one shifted by three pixels
def test_boundary_prefers_aligned_boundaries():
    y_true = np.zeros((1, 16, 16, 1), np.float32)
    y_true[0, 4:10, 5:12] = 1.0
    good = np.where(y_true > 0.5, 0.9, 0.1).astype(np.float32)
    shifted = np.roll(good, 3, axis=2)
    fn = losses.get("boundary")
    assert _loss_value(fn, y_true, good) < _loss_value(fn, y_true, shifted)


# behaviour: boundary's gradient on a random prediction is non-zero and matches finite differences of the loop version
def test_boundary_gradient_matches_finite_differences():
    y_true = _blob_masks()
    y_prob = np.random.default_rng(20).uniform(0.05, 0.95, y_true.shape).astype(np.float32)
    value, grad, _ = _value_and_grads(losses.get("boundary"), y_true, y_prob)
    assert np.isfinite(value) and np.count_nonzero(grad) > 0
    step = 1e-4
    for index in [(0, 1, 3, 0), (0, 3, 6, 0), (0, 5, 0, 0), (1, 2, 2, 0)]:
        plus, minus = y_prob.astype(np.float64), y_prob.astype(np.float64)
        plus[index] += step
        minus[index] -= step
        up, down = (_boundary_f1_loss_reference(y_true, p, 3, 5, True) for p in (plus, minus))
        numeric = (up - down) / (2 * step)
        assert grad[index] == pytest.approx(numeric, rel=1e-3, abs=1e-5), index


# behaviour: signed_distance is mean(φ·p) with φ the signed distance map of the mask, gradient φ/N
def test_signed_distance_matches_distance_map():
    y_true = np.zeros((2, 6, 6, 1), np.float32)
    y_true[0, 1:3, 2:5] = 1.0  # image 1 has no landslide: φ ≡ +1 by convention
    y_prob = np.random.default_rng(11).uniform(0, 1, y_true.shape).astype(np.float32)
    mask = y_true[0, ..., 0] > 0.5
    phi = np.ones_like(y_true)
    phi[0, ..., 0] = distance_transform_edt(~mask) - (distance_transform_edt(mask) - 1) * mask
    assert phi[0, 1, 2, 0] == 0.0 and phi[0, 0, 0, 0] > 0  # a boundary pixel and an outside one
    fn = losses.get("signed_distance")
    value, grad, _ = _value_and_grads(fn, y_true, y_prob)
    assert value == pytest.approx(float(np.mean(phi * y_prob)), rel=1e-5)
    np.testing.assert_allclose(grad, phi / phi.size, rtol=1e-5)


# behaviour: center adds weight·½‖x − c_y‖² (per-batch class means) to the base loss, and needs features
def test_center_loss_matches_numpy():
    y_true, y_prob, features = _mask(12), _prob(12), _features(12)
    fn = losses.get("center", weight=0.5)
    assert fn.needs_features
    fg = y_true[..., 0] > 0.5
    centers = np.where(fg[..., None], features[fg].mean(axis=0), features[~fg].mean(axis=0))
    center_term = 0.5 * np.mean(np.sum((features - centers) ** 2, axis=-1))
    expected = _loss_value(losses.get("cross_entropy"), y_true, y_prob) + 0.5 * center_term
    value = float(fn(tf.constant(y_true), tf.constant(y_prob), features=tf.constant(features)))
    assert value == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        fn(tf.constant(y_true), tf.constant(y_prob))
    # base "none": the center term alone, to be one term of a weighted_sum
    alone = losses.get("center", weight=0.5, base="none")
    value = float(alone(tf.constant(y_true), tf.constant(y_prob), features=tf.constant(features)))
    assert value == pytest.approx(0.5 * center_term, rel=1e-5)


# behaviour: center resizes the mask to features of another resolution (nearest neighbour)
def test_center_loss_features_at_half_resolution():
    y_true = np.zeros(SHAPE, np.float32)
    y_true[:, :4] = 1.0
    features = np.zeros((2, 4, 4, CHANNELS), np.float32)
    features[:, :2] = 3.0  # each class's features equal its center: the center term is 0
    fn = losses.get("center", weight=1.0)
    y_prob = _prob(13)
    value = float(fn(tf.constant(y_true), tf.constant(y_prob), features=tf.constant(features)))
    assert value == pytest.approx(_loss_value(losses.get("cross_entropy"), y_true, y_prob), rel=1e-6)


# behaviour: focal_iou is alpha·focal + (1 − alpha)·iou with focal's own gamma and alpha
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_focal_iou_is_the_weighted_combination(alpha):
    y_true, y_prob = _mask(14), _prob(14)
    focal = _loss_value(losses.get("focal", gamma=1.0, alpha=0.4), y_true, y_prob)
    iou = _loss_value(losses.get("iou"), y_true, y_prob)
    value = _loss_value(losses.get("focal_iou", alpha=alpha, gamma=1.0, focal_alpha=0.4), y_true, y_prob)
    assert value == pytest.approx(alpha * focal + (1 - alpha) * iou, rel=1e-5)


# behaviour: weighted_sum adds its terms' weighted values; a center term makes it need features
def test_weighted_sum_of_terms():
    y_true, y_prob, features = _mask(15), _prob(15), _features(15)
    fn = losses.get("weighted_sum", **BUILD_PARAMS["weighted_sum"])
    expected = 0.3 * _loss_value(losses.get("iou"), y_true, y_prob) + 0.7 * _loss_value(
        losses.get("focal", gamma=1.0), y_true, y_prob
    )
    assert not getattr(fn, "needs_features", False)
    assert _loss_value(fn, y_true, y_prob) == pytest.approx(expected, rel=1e-5)
    # terms may arrive as (key, value) pairs, as a TrialConfig stores nested parameters
    with_center = losses.get("weighted_sum", terms=[(("name", "center"), ("weight", 2.0)), {"name": "iou"}])
    assert with_center.needs_features
    center = losses.get("center")(tf.constant(y_true), tf.constant(y_prob), features=tf.constant(features))
    value = with_center(tf.constant(y_true), tf.constant(y_prob), features=tf.constant(features))
    assert float(value) == pytest.approx(2.0 * float(center) + _loss_value(losses.get("iou"), y_true, y_prob), rel=1e-5)


# behaviour: every loss traces with an unknown batch size (a smaller last batch), XLA-compiled but signed_distance
@pytest.mark.parametrize("name", LOSSES)
def test_dynamic_batch_and_xla(name):
    fn = losses.get(name, **BUILD_PARAMS.get(name, {}))
    needs = getattr(fn, "needs_features", False)
    spec = [
        tf.TensorSpec([None, *SHAPE[1:]]),
        tf.TensorSpec([None, *SHAPE[1:]]),
        tf.TensorSpec([None, *SHAPE[1:3], CHANNELS]),
    ]

    # signed_distance's distance map is a numpy_function, which XLA cannot compile: it says so.
    assert getattr(fn, "supports_xla", True) == (name != "signed_distance")

    @tf.function(input_signature=spec, jit_compile=getattr(fn, "supports_xla", True))
    def compiled(y, p, f):
        return fn(y, p, features=f) if needs else fn(y, p)

    y_true, y_prob, features = _mask(16), _prob(16), _features(16)
    for batch in (2, 1):
        args = [tf.constant(a[:batch]) for a in (y_true, y_prob, features)]
        eager = fn(*args[:2], features=args[2]) if needs else fn(*args[:2])
        assert float(compiled(*args)) == pytest.approx(float(eager), rel=1e-5)


# behaviour: float16 inputs (mixed precision) give a float32 loss
@pytest.mark.parametrize("name", LOSSES)
def test_float16_inputs_give_float32(name):
    fn = losses.get(name, **BUILD_PARAMS.get(name, {}))
    args = [tf.constant(a, tf.float16) for a in (_mask(17), _prob(17), _features(17))]
    value = fn(*args[:2], features=args[2]) if getattr(fn, "needs_features", False) else fn(*args[:2])
    assert value.dtype == tf.float32 and np.isfinite(float(value))


# behaviour: a combination containing signed_distance (directly or as center's base) reports supports_xla False
@pytest.mark.parametrize(
    "name, params, supports",
    [
        ("weighted_sum", {"terms": [{"name": "signed_distance"}, {"name": "iou"}]}, False),
        ("weighted_sum", {"terms": [{"name": "center", "base": "signed_distance"}, {"name": "iou"}]}, False),
        ("center", {"base": "signed_distance"}, False),
        ("weighted_sum", {"terms": [{"name": "center"}, {"name": "lovasz"}]}, True),
        ("weighted_sum", {"terms": [{"name": "boundary"}, {"name": "cross_entropy"}]}, True),
    ],
)
def test_supports_xla_propagates(name, params, supports):
    assert getattr(losses.get(name, **params), "supports_xla", True) is supports
