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
- This machine: `calibrate` times, on the row's model with a trial's thread pools, what a
  training does: training steps (its loss, Adam, its augmentation pipeline), the predictor
  that validation and the final scoring run, the first call of each (tracing), one epoch's
  checkpoint and best weights, and a threshold sweep. A training's predicted time on this
  CPU (`TrainingCost.cpu_parts`) is what its loop does with those: the training steps'
  FLOPs at the step rate; validation every epoch and the final scoring of every split at
  the predictor's rate; one tracing of the step per distinct training batch shape (a last,
  smaller batch traces the step again) and of the predictor per distinct shape (at most
  two: it then relaxes the batch dimension); a checkpoint and the best weights saved every
  epoch; the threshold sweeps of validation every epoch and of the final scoring; building
  the model and optimizer and the FLOP count each finished trial records. Not counted:
  reading the data (`study plan` reads it once itself) and the start of the trial's
  process (Ray's worker, the TensorFlow import), which a reused worker pays once.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    "batch_shapes",
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
    pixels: int  # per image: what validation's threshold sweep scores


@dataclass
class _Built:
    footprint: ModelFootprint
    model: keras.Model
    build_s: float  # building the model: every trial builds its own
    flop_count_s: float  # counting its FLOPs: every finished trial records the count
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
        started = time.perf_counter()
        try:
            model = build_model(config, num_bands, size)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        built = time.perf_counter()
        flops = count_flops(model)
        counted = time.perf_counter()
        trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
        footprint = ModelFootprint(int(model.count_params()), trainable, flops, activation_bytes(model), size * size)
        _MODELS[key] = _Built(footprint, model, built - started, counted - built)
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
    """This machine's rates and fixed costs for one model's training, as measured (seconds)."""

    flops_per_s: float  # training steps: FLOPs (3 × forward per image) per second, steady state
    forward_flops_per_s: float  # the predictor (validation, final scoring): forward FLOPs per second
    step_trace_s: float  # a training step's first call at a new batch shape, beyond the step itself
    predict_trace_s: float  # the predictor's first call at a new batch shape, beyond its work
    save_s: float  # one epoch's checkpoint (weights, optimizer, state) and best weights
    sweep_s_per_pixel: float  # validation's threshold sweep, per pixel scored
    setup_s: float  # building the model and its optimizer
    flop_count_s: float  # the FLOP count a finished trial records
    threads: int  # TensorFlow's intra-op threads it ran with
    images: int  # images timed in steady training steps


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
    random tiles, at `batch` images a step (default: the config's, within the limits above);
    then the predictor on the same tiles after its own first call, one epoch's checkpoint,
    and a threshold sweep. Cached per model and batch size. `threads`: TensorFlow's thread
    pools, as a trial of that many CPUs sets them (only possible before this process first
    runs TensorFlow; the calibration says what it ran with)."""
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
    started = time.perf_counter()
    dataset = make_dataset(images, masks, batch, training=True, augment=config.augment, seed=0)
    objective = make_loss(config)
    optimizer = precision.wrap_optimizer(keras.optimizers.Adam(learning_rate=config.learning_rate), config)
    optimizer.build(model.trainable_variables)
    setup_s = built.build_s + time.perf_counter() - started

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
    # Validation and the final scoring run the predictor (rmaunet.training.evaluation).
    predict = make_predictor(model)
    traced = time.perf_counter()
    predict(images[:batch], batch)
    again = time.perf_counter()
    predict(images, batch)
    forward_s = time.perf_counter() - again
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    return Calibration(
        flops_per_s=3 * built.footprint.flops * seen / steady,
        forward_flops_per_s=built.footprint.flops * len(images) / forward_s,
        step_trace_s=max(warm - started - steady / timed, 0.0),
        predict_trace_s=max(again - traced - forward_s / steps, 0.0),
        save_s=_time_save(model, optimizer, config),
        sweep_s_per_pixel=_sweep_s_per_pixel(),
        setup_s=setup_s,
        flop_count_s=built.flop_count_s,
        threads=threads,
        images=seen,
    )


def _time_save(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrialConfig) -> float:
    """Seconds of what a trial writes every epoch (rmaunet.training.trial): its checkpoint,
    and the best weights (when the epoch is the best so far: counted every epoch)."""
    import tempfile

    from rmaunet.training.checkpoint import EpochCheckpoint, fresh_state
    from rmaunet.trial_folder import TrialFolder

    with tempfile.TemporaryDirectory(prefix="rmaunet-calibration-") as folder:
        started = time.perf_counter()
        EpochCheckpoint(Path(folder), config).save(model, optimizer, fresh_state())
        model.save_weights(Path(folder) / TrialFolder.BEST_WEIGHTS)
        return time.perf_counter() - started


# The sweep's cost hardly depends on the model: timed once per process, on this many random pixels.
SWEEP_PIXELS = 2**18


@functools.cache
def _sweep_s_per_pixel() -> float:
    """Seconds per pixel of scoring a probability map at every threshold of the grid
    (rmaunet.training.evaluation.best_over_thresholds: what validation runs every epoch)."""
    import numpy as np

    from rmaunet.training.evaluation import best_over_thresholds

    rng = np.random.default_rng(0)
    truth = (rng.random(SWEEP_PIXELS) < 0.2).astype(np.float32).reshape(-1, 64, 64)
    prob = rng.random(SWEEP_PIXELS, dtype=np.float32).reshape(-1, 64, 64)
    started = time.perf_counter()
    best_over_thresholds(truth, {"mask": prob}, "f1")
    return (time.perf_counter() - started) / SWEEP_PIXELS


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

    def cpu_parts(self) -> dict[str, float] | None:
        """Predicted seconds on this machine of each part of the training (module docstring;
        None without a calibration)."""
        c = self.calibration
        if c is None:
            return None
        sizes, epochs, forward = self.sizes, self.config.epochs, self.footprint.flops
        batch = self.batch_per_worker
        train_shapes = batch_shapes(sizes["train"], batch)
        if self.workers > 1:
            train_shapes = {batch}  # a worker group's epochs drop the remainder (rmaunet.training.loop.epoch_order)
        # The predictor runs at the config's batch size on rank 0, over validation, then every split.
        predict_shapes = set().union(*(batch_shapes(n, self.config.batch_size) for n in sizes.values()))
        swept = sizes["validation"] * (epochs + 2) + sizes["test"]  # every epoch; the choice, both splits at it
        return {
            "training steps": 3 * forward * sizes["train"] * epochs / c.flops_per_s,
            "prediction": forward * (sizes["validation"] * epochs + sum(sizes.values())) / c.forward_flops_per_s,
            "tracing": c.step_trace_s * len(train_shapes) + c.predict_trace_s * min(len(predict_shapes), 2),
            "threshold sweeps": c.sweep_s_per_pixel * self.footprint.pixels * swept,
            "checkpoints": c.save_s * epochs,
            "setup and FLOP count": c.setup_s + c.flop_count_s,
        }

    def cpu_seconds(self) -> float | None:
        """Predicted training time on this machine (None without a calibration)."""
        parts = self.cpu_parts()
        return None if parts is None else sum(parts.values())


def batch_shapes(tiles: int, batch: int) -> set[int]:
    """The batch sizes a pass over `tiles` at `batch` a step meets: a tf.function traces once
    for each (the predictor relaxes the batch dimension after its second)."""
    return {min(batch, tiles)} | ({tiles % batch} if tiles > batch and tiles % batch else set())


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
