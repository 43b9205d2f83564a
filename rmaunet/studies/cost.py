"""What a study's trainings cost before they run: FLOPs, peak accelerator memory per trial,
GPU-hours on named GPUs, and the training time this machine's CPU would take.

Conventions (printed with every cost table, so a reader can redo the arithmetic):
- FLOPs of one training = forward FLOPs per image (the model's own count,
  rmaunet.models.cost.count_flops: a multiply-add is 2) × (3 × training tiles × epochs
  + validation tiles × epochs + every tile once for the final scoring). A training step is
  a forward pass and a backward pass costing about twice the forward; validating and
  scoring are forward passes only.
- Peak memory of one trial (of one worker in a data-parallel row) = parameters × 4 B
  (float32 weights, also under mixed precision: Keras keeps float32 variables) + trainable
  parameters × 12 B (float32 gradients, Adam's two moments) + trainable × 2 B under
  mixed precision (the half-precision copies the step computes with) + batch per worker ×
  the bytes per image of the training-mode forward pass (rmaunet.models.cost.activation_bytes,
  at their real dtypes). A GPU is judged to hold a trial when that stays under its memory
  less RESERVE_GIB (CUDA context, cuDNN workspaces, allocator fragmentation: an allowance,
  not a measurement).
- GPU-hours = FLOPs / (the GPU's dense peak for the trial's precision × UTILISATION):
  float32 runs on TF32 tensor cores where the GPU has them (TensorFlow's default on Ampere
  and later), mixed_float16 on FP16 tensor cores, mixed_bfloat16 on BF16 ones (FP32 where
  the GPU has none).
- This machine: `calibrate` times a few training steps of the row's model (its loss, its
  augmentation pipeline) and gives the effective FLOP/s; a training's predicted time is its
  FLOPs at that rate plus the tracing of its training step and its validation forward pass,
  once per training.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError

if TYPE_CHECKING:  # keras is heavy; annotations only
    import keras

__all__ = [
    "Gpu",
    "GPUS",
    "DEFAULT_GPU",
    "UTILISATION",
    "RESERVE_GIB",
    "ModelFootprint",
    "Calibration",
    "TrainingCost",
    "model_footprint",
    "calibrate",
    "training_flops",
    "peak_memory_bytes",
    "training_costs",
    "gpu_named",
    "cluster_gpu",
]

GIB = 2**30
UTILISATION = 0.4  # of a GPU's dense peak: what a well-fed U-Net training step reaches, roughly
RESERVE_GIB = 1.0
# A calibration step holds at most CALIBRATION_BATCH images and, above one image, at most
# CALIBRATION_STEP_FLOPS of work: a CPU's per-image rate hardly changes with the batch, the
# seconds do (one full-width U-Net image at 128 px is 84 GFLOP a step).
CALIBRATION_BATCH = 8
CALIBRATION_STEP_FLOPS = 20e9


@dataclass(frozen=True)
class Gpu:
    """A GPU model: its memory (GiB) and dense peak TFLOP/s per precision (None: no such unit)."""

    name: str
    memory_gib: float
    fp32: float
    tf32: float | None
    fp16: float
    bf16: float | None

    def peak_flops(self, precision: str) -> float:
        """FLOP/s at the peak of the unit a trial of `precision` runs on (module docstring)."""
        if precision == "mixed_float16":
            tflops = self.fp16
        elif precision == "mixed_bfloat16":
            tflops = self.bf16 or self.fp32
        else:
            tflops = self.tf32 or self.fp32
        return tflops * 1e12


# Dense peak TFLOP/s from the vendor's datasheets (NVIDIA lists tensor figures "with sparsity"
# at twice the dense ones; these are the dense ones).
GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        # NVIDIA T4 datasheet: FP32 8.1, mixed-precision FP16/FP32 65 TFLOPS, 16 GB GDDR6; no TF32, no BF16.
        Gpu("T4", 16, 8.1, None, 65.0, None),
        # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16 125, FP16 125 TFLOPS (dense), 24 GB GDDR6. The A10G
        # (AWS G5) is an A10 variant without a datasheet of its own: the A10's figures, an upper bound.
        Gpu("A10G", 24, 31.2, 62.5, 125.0, 125.0),
        # NVIDIA V100 datasheet (SXM2; PCIe 14 / 112): FP32 15.7, tensor (FP16) 125 TFLOPS, 16 GB; no TF32, no BF16.
        Gpu("V100", 16, 15.7, None, 125.0, None),
        # NVIDIA A100 datasheet (40 GB): FP32 19.5, TF32 156, BF16 312, FP16 312 TFLOPS (dense).
        Gpu("A100", 40, 19.5, 156.0, 312.0, 312.0),
        # NVIDIA H100 datasheet (SXM, 80 GB): FP32 67; TF32 989, BF16 1979, FP16 1979 TFLOPS with sparsity.
        Gpu("H100", 80, 67.0, 494.5, 989.5, 989.5),
    )
}
DEFAULT_GPU = "T4"  # the smallest card named: a trial it holds fits every other


def gpu_named(name: str) -> Gpu:
    """The GPU a `--gpu NAME` names (any case), or one ConfigError line with the choices."""
    for gpu in GPUS.values():
        if gpu.name.lower() == name.strip().lower():
            return gpu
    raise ConfigError(f"--gpu {name}: unknown GPU (choose one of: {', '.join(GPUS)})")


def cluster_gpu(resources: Iterable[dict[str, float]]) -> Gpu | None:
    """The GPU type a cluster's nodes declare, when it is one of GPUS: Ray gives a node with
    GPUs an `accelerator_type:<TYPE>` resource (T4, A10G, V100, A100, A100-40G, H100, …)."""
    for offer in resources:
        for key in offer:
            kind = key.removeprefix("accelerator_type:")
            if kind != key and kind.split("-")[0].upper() in GPUS:
                return GPUS[kind.split("-")[0].upper()]
    return None


# --------------------------------------------------------------------------- one model
# The config fields rmaunet.models reads that change a model's size or work (l2 does not);
# with the input bands and tile side they key the footprint cache.
MODEL_FIELDS = ("backbone", "block", "attention", "heads", "task", "base_filters", "depth", "precision")


@dataclass(frozen=True)
class ModelFootprint:
    """A model variant's size and work per image."""

    params: int
    trainable: int
    flops: int  # one forward pass of one image
    activation_bytes: int  # per image, training-mode forward pass


@dataclass
class _Built:
    footprint: ModelFootprint
    model: keras.Model
    calibrations: dict[tuple[int, int], Calibration] = field(default_factory=dict)


# Rows that share an architecture share one built model (a process-wide cache: building and
# tracing a full-width model takes seconds).
_MODELS: dict[tuple, _Built] = {}


def _model_key(config: TrialConfig, num_bands: int, size: int) -> tuple:
    return (*(getattr(config, name) for name in MODEL_FIELDS), num_bands, size)


def _built(config: TrialConfig, num_bands: int, size: int) -> _Built:
    key = _model_key(config, num_bands, size)
    if key not in _MODELS:
        import keras

        from rmaunet.models import build_model
        from rmaunet.models.cost import activation_bytes, count_flops
        from rmaunet.training import precision

        previous = keras.mixed_precision.global_policy()
        precision.configure(config)  # the trial's dtype policy: activations at the dtypes it trains with
        try:
            model = build_model(config, num_bands, size)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
        footprint = ModelFootprint(int(model.count_params()), trainable, count_flops(model), activation_bytes(model))
        _MODELS[key] = _Built(footprint, model)
    return _MODELS[key]


def model_footprint(config: TrialConfig, num_bands: int, size: int) -> ModelFootprint:
    """Parameters, forward FLOPs and activation bytes per image of the config's model."""
    return _built(config, num_bands, size).footprint


def training_flops(forward: float, sizes: dict[str, int], epochs: int) -> float:
    """FLOPs of one training (module docstring): steps at 3 × forward, validation every epoch,
    the final scoring of every split once."""
    return forward * (3 * sizes["train"] * epochs + sizes["validation"] * epochs + sum(sizes.values()))


def peak_memory_bytes(footprint: ModelFootprint, precision: str, batch: int) -> int:
    """Accelerator memory of one training step at `batch` images (module docstring)."""
    per_trainable = 12 + (2 if precision != "float32" else 0)
    return 4 * footprint.params + per_trainable * footprint.trainable + batch * footprint.activation_bytes


# --------------------------------------------------------------------------- this machine
@dataclass(frozen=True)
class Calibration:
    """This machine's effective training rate for one model, as measured."""

    flops_per_s: float  # training FLOPs (3 × forward per image) per second, steady state
    start_s: float  # the first training step's and validation's tracing beyond the steady rate: once per training
    threads: int  # TensorFlow's intra-op threads it ran with
    images: int  # images timed


def calibrate(
    config: TrialConfig,
    num_bands: int,
    size: int,
    batch: int | None = None,
    steps: int = 2,
    threads: int | None = None,
) -> Calibration:
    """Time `steps` training steps of the config's model on this machine after one to warm
    up (tracing), through the trial's own loss, optimizer and augmentation pipeline, on
    random tiles, at `batch` images a step (default: the config's, within the limits above).
    Seconds; cached per model and batch size. `threads`:
    TensorFlow's thread pools, as a trial of that many CPUs sets them (only possible before
    this process first runs TensorFlow; the calibration says what it ran with)."""
    _set_threads(threads)
    built = _built(config, num_bands, size)
    affordable = int(CALIBRATION_STEP_FLOPS // (3 * max(built.footprint.flops, 1)))
    batch = batch or max(min(config.batch_size, CALIBRATION_BATCH, affordable), 1)
    if (batch, steps) not in built.calibrations:
        built.calibrations[(batch, steps)] = _time_steps(built, config, batch, steps)
    return built.calibrations[(batch, steps)]


def _set_threads(threads: int | None) -> None:
    from rmaunet.training.trial import configure_threads

    if threads is not None:
        configure_threads(min(max(threads, 1), os.cpu_count() or 1))


def _time_steps(built: _Built, config: TrialConfig, batch: int, steps: int) -> Calibration:
    import keras
    import numpy as np
    import tensorflow as tf

    from rmaunet.data.pipeline import make_dataset
    from rmaunet.training import precision
    from rmaunet.training.evaluation import make_predictor
    from rmaunet.training.loop import make_loss, train_epoch

    model = built.model
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    images = rng.standard_normal((steps * batch, *shape), dtype=np.float32)
    masks = (rng.random((steps * batch, *shape[:2])) < 0.2).astype(np.float32)  # donors for cutmix
    dataset = make_dataset(images, masks, batch, training=True, augment=config.augment, seed=0)
    objective = make_loss(config)
    optimizer = precision.wrap_optimizer(keras.optimizers.Adam(learning_rate=config.learning_rate), config)
    optimizer.build(model.trainable_variables)

    # TrialLoop's step with one worker (rmaunet.training.loop): forward, loss, backward, Adam.
    @tf.function(jit_compile=bool(config.xla) and getattr(objective, "supports_xla", True))
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = objective(y, model(x, training=True), model.losses)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    started = time.perf_counter()
    train_epoch(step, dataset.take(1))  # the first step traces the step and the pipeline
    warm = time.perf_counter()
    _, timed, seen = train_epoch(step, dataset)
    steady = time.perf_counter() - warm
    # Validation traces its own forward function once per training (rmaunet.training.evaluation).
    predict = make_predictor(model)
    traced = time.perf_counter()
    predict(images[:batch], batch)
    again = time.perf_counter()
    predict(images[:batch], batch)
    predict_trace = max((again - traced) - (time.perf_counter() - again), 0.0)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    return Calibration(
        flops_per_s=3 * built.footprint.flops * seen / steady,
        start_s=max(warm - started - steady / timed, 0.0) + predict_trace,
        threads=threads,
        images=seen,
    )


# --------------------------------------------------------------------------- trainings
@dataclass(frozen=True)
class TrainingCost:
    """One training of a study, costed."""

    label: str
    config: TrialConfig
    sizes: dict[str, int]  # tiles in train / validation / test
    workers: int  # data-parallel workers (memory is per worker)
    footprint: ModelFootprint
    calibration: Calibration | None

    @property
    def flops(self) -> float:
        return training_flops(self.footprint.flops, self.sizes, self.config.epochs)

    @property
    def batch_per_worker(self) -> int:
        return max(self.config.batch_size // self.workers, 1)

    @property
    def memory_bytes(self) -> int:
        return peak_memory_bytes(self.footprint, self.config.precision, self.batch_per_worker)

    def fits(self, gpu: Gpu) -> bool:
        return self.memory_bytes <= (gpu.memory_gib - RESERVE_GIB) * GIB

    def gpu_seconds(self, gpu: Gpu, utilisation: float = UTILISATION) -> float:
        return self.flops / (gpu.peak_flops(self.config.precision) * utilisation)

    def cpu_seconds(self) -> float | None:
        """Predicted training time on this machine (None without a calibration)."""
        if self.calibration is None:
            return None
        return self.flops / self.calibration.flops_per_s + self.calibration.start_s


def training_costs(
    trainings: Sequence[tuple[str, TrialConfig, dict[str, int], int, int, int]],
    *,
    calibrated: bool = True,
    threads: int | None = None,
) -> list[TrainingCost]:
    """Each (label, config, split sizes, input bands, tile side, workers) costed; models are
    built once per architecture and input shape, and calibrated (with `threads`) once per
    model and batch."""
    if calibrated:
        _set_threads(threads)  # before the first model is built: TensorFlow fixes its pools when it starts
    out = []
    for label, config, sizes, num_bands, size, workers in trainings:
        footprint = model_footprint(config, num_bands, size)
        calibration = calibrate(config, num_bands, size, threads=threads) if calibrated else None
        out.append(TrainingCost(label, config, sizes, workers, footprint, calibration))
    return out
