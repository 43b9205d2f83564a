"""What does the platform cost? The same model on the same data, bare and as a platform trial.

The bare run is one process doing `model.fit` of the trial's model with the trial's
objective (every head, L2 terms), optimizer, batch size, precision and XLA setting, timing
each epoch with a callback. The platform run is a Ray Tune trial that runs
`run_data_parallel` (Ray Train data-parallel trainer, MultiWorkerMirroredStrategy, custom
step, per-epoch validation, checkpoint and report) with one worker that gets every core
of the machine, like the bare process. They alternate, bare first and last (--rounds 2:
bare, platform, bare, platform, bare), so a machine that speeds up or slows down during
the run (other jobs on a shared node) biases neither side.

Prints one JSON object on its last line:
- throughput_ratio: platform steady-state training images/s ÷ bare steady-state images/s.
  Steady state is the median over every run's epochs 2.. (epoch 1 pays for tracing in
  both), pooled per side. On a shared machine single epochs swing by a third; the
  median of the pooled epochs keeps one disturbed epoch from deciding the figure, and
  throughput_ratio_mean (total images ÷ total seconds of the same epochs) is given
  beside it;
- startup_s: the platform's extra fixed cost, the median over platform runs of (wall −
  its epochs) minus the same for the bare runs. It holds the worker process start,
  TensorFlow import in the worker, the worker group and collective set-up, the per-epoch
  checkpoint uploads and the end-of-trial test scoring and probability maps. Ray's own
  start (ray_init_s) is paid once per cluster, not per trial, and is reported apart;
- the raw numbers behind both (every run's epoch rates, the spread of the bare runs).

Default size runs in a few minutes on a 2-core laptop. `--full` is the paper's RMAU-NET (23
bands, 128×128, base 64, depth 4, Res-Conv + multi-head attention + multiple heads) for a
GPU; `--precision mixed_bfloat16` / `mixed_float16` and `--xla` switch the trial's
precision; `--scale-to 2` adds a trial on 2 workers (one GPU each with `--gpu`) and reports
`scaling_ratio` (its images/s ÷ the 1-worker trial's).

    python bench/overhead.py                    # CPU, small
    python bench/overhead.py --full --gpu --precision mixed_bfloat16 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "bench_config", "run_bare", "run_platform"]


def bench_config(args: argparse.Namespace) -> Any:
    from rmaunet.config import PRESETS, TrialConfig

    common = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        augment=(),
        seed=0,
        precision=args.precision,
        xla=args.xla,
        # Validation is part of every platform epoch; a small split keeps it from dominating.
        val_fraction=0.05,
        test_fraction=0.05,
    )
    if args.full:
        return PRESETS["rmaunet"].replace(**common)
    return TrialConfig(bands="14", base_filters=args.base_filters, depth=args.depth, **common)


def _steady(rates: list[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def run_bare(config: Any, data_dir: Path) -> dict[str, Any]:
    """model.fit in this process, on exactly the images the trial trains on per epoch."""
    import keras

    from rmaunet.data import prepare_splits
    from rmaunet.models import build_model
    from rmaunet.training import precision
    from rmaunet.training.loop import make_loss

    started = time.perf_counter()
    splits = prepare_splits(config, data_dir)
    jit = precision.configure(config)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, splits.num_bands, splits.x_train.shape[1])
    objective = make_loss(config)  # the trial's own objective: every head, detection, L2

    class Bare(keras.Model):
        """model.fit around the trial's model and objective, nothing else changed."""

        def __init__(self, inner: keras.Model) -> None:
            super().__init__()
            self.inner = inner

        def call(self, x: Any, training: bool = False) -> Any:
            return self.inner(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):  # noqa: ANN001
            return objective(y, y_pred, self.inner.losses)

    bare_model = Bare(model)
    optimizer = precision.wrap_optimizer(keras.optimizers.Adam(learning_rate=config.learning_rate), config)
    bare_model.compile(optimizer=optimizer, jit_compile=jit and objective.supports_xla)
    # The trial drops the last partial batch so that all workers take the same steps.
    n = len(splits.x_train) // config.batch_size * config.batch_size
    x, y = splits.x_train[:n], splits.y_train[:n, ..., None].astype("float32")

    epoch_s: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            epoch_s.append(time.perf_counter() - self._t0)

    bare_model.fit(
        x, y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=0, callbacks=[Clock()]
    )
    wall = time.perf_counter() - started
    keras.mixed_precision.set_global_policy("float32")
    rates = [n / s for s in epoch_s]
    return {
        "images_per_s": _steady(rates),
        "epoch_images_per_s": rates,
        "epoch_s": epoch_s,
        "wall_s": wall,
        "train_images": n,
    }


def run_platform(
    config: Any, data_dir: Path, work: Path, *, num_workers: int, use_gpu: bool, run: int = 0
) -> dict[str, Any]:
    """One Ray Tune trial that runs the Ray Train data-parallel path (a fresh one per `run`:
    a reused folder would resume from the previous run's checkpoint)."""
    from ray import tune

    from rmaunet.config import TrialConfig
    from rmaunet.training.distributed import run_data_parallel

    cpus_per_worker = 1 if use_gpu else max((os.cpu_count() or 1) // num_workers, 1)

    def trial(params: dict[str, Any]) -> None:
        result = run_data_parallel(
            TrialConfig.from_dict(params["config"]),
            params["data_dir"],
            params["out_dir"],
            num_workers=params["num_workers"],
            use_gpu=params["use_gpu"],
            cpus_per_worker=params["cpus"],
            report=tune.report,
        )
        if result.status != "ok":
            raise RuntimeError(result.reason)

    name = f"overhead_w{num_workers}_run{run}"
    out = work / name
    tuner = tune.Tuner(
        # A trial that only drives a Ray Train run still needs a non-empty request.
        tune.with_resources(trial, {"CPU": 0.01}),
        param_space={
            "config": config.to_dict(),
            "data_dir": str(data_dir),
            "out_dir": str(out),
            "num_workers": num_workers,
            "use_gpu": use_gpu,
            "cpus": cpus_per_worker,
        },
        run_config=tune.RunConfig(name=name, storage_path=str(work / "tune"), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    if grid.errors:
        raise RuntimeError(f"platform trial failed: {grid.errors[0]}")
    history = json.loads((out / "history.json").read_text())
    rates = [row["images_per_s"] for row in history]
    epoch_s = [row["epoch_s"] for row in history]
    return {
        "images_per_s": _steady(rates),
        "epoch_images_per_s": rates,
        "epoch_s": epoch_s,
        "wall_s": wall,
        "num_workers": num_workers,
        "cpus_per_worker": cpus_per_worker,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the paper's RMAU-NET at 23 bands, 128x128 (for a GPU)")
    parser.add_argument("--gpu", action="store_true", help="give each platform worker one GPU")
    parser.add_argument("--data", type=Path, help="a Landslide4Sense folder (default: synthetic scenes)")
    parser.add_argument("--tiles", type=int, help="synthetic scenes to write (default 600; --full 400)")
    parser.add_argument("--size", type=int, help="synthetic scene side (default 64; --full 128)")
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="platform runs, each between two bare runs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--scale-to", type=int, default=0, help="also run the platform trial on this many workers")
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    config = bench_config(args)
    work = args.keep or Path(tempfile.mkdtemp(prefix="rmaunet_overhead_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data_dir = args.data
        if data_dir is None:
            from rmaunet.data.synthetic import write_landslide4sense

            data_dir = work / "data"
            if not data_dir.exists():
                write_landslide4sense(
                    data_dir,
                    n=args.tiles or (400 if args.full else 600),
                    seed=0,
                    size=args.size or (128 if args.full else 64),
                )
        data_dir = data_dir.resolve()

        import ray

        from rmaunet.training.distributed import TRAINING_PROCESS_ENV

        t0 = time.perf_counter()
        import tensorflow  # noqa: F401  (paid once by the bare process; measured, not hidden)

        tf_import_s = time.perf_counter() - t0
        bare_runs = [run_bare(config, data_dir)]

        cpus = os.cpu_count() or 1
        t0 = time.perf_counter()
        # One logical CPU above the cores: the Tune trial's 0.01 CPU must fit beside a worker
        # that takes every core. The job's processes run at normal priority, as a study's do
        # (rmaunet.studies.session.connect_ray).
        ray.init(
            address="local",
            num_cpus=cpus + 1,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": dict(TRAINING_PROCESS_ENV)},
            _temp_dir=str(Path(tempfile.gettempdir()) / f"ray_overhead_{os.getpid()}"),
        )
        ray_init_s = time.perf_counter() - t0
        platform_runs: list[dict[str, Any]] = []
        try:
            for run in range(args.rounds):
                platform_runs.append(run_platform(config, data_dir, work, num_workers=1, use_gpu=args.gpu, run=run))
                if run < args.rounds - 1:
                    bare_runs.append(run_bare(config, data_dir))
            scaled = (
                run_platform(config, data_dir, work, num_workers=args.scale_to, use_gpu=args.gpu)
                if args.scale_to > 1
                else None
            )
        finally:
            ray.shutdown()
        bare_runs.append(run_bare(config, data_dir))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    def pooled(runs: list[dict[str, Any]]) -> tuple[float, float]:
        """(median, images ÷ seconds) over every run's steady epochs."""
        epochs = [(rate, s) for run in runs for rate, s in zip(run["epoch_images_per_s"][1:], run["epoch_s"][1:])]
        images = sum(rate * s for rate, s in epochs)
        return statistics.median(rate for rate, _ in epochs), images / sum(s for _, s in epochs)

    bare_median, bare_mean = pooled(bare_runs)
    platform_median, platform_mean = pooled(platform_runs)
    fixed_bare = statistics.median([r["wall_s"] - sum(r["epoch_s"]) for r in bare_runs])
    fixed_platform = statistics.median([r["wall_s"] - sum(r["epoch_s"]) for r in platform_runs])
    bare_per_run = [r["images_per_s"] for r in bare_runs]
    summary: dict[str, Any] = {
        "throughput_ratio": platform_median / bare_median,
        "startup_s": fixed_platform - fixed_bare,
        "throughput_ratio_mean": platform_mean / bare_mean,
        "bare_images_per_s": bare_median,
        "platform_images_per_s": platform_median,
        "rounds": args.rounds,
        "bare_runs_images_per_s": bare_per_run,
        "platform_runs_images_per_s": [r["images_per_s"] for r in platform_runs],
        "bare_drift": (max(bare_per_run) - min(bare_per_run)) / statistics.median(bare_per_run),
        "bare_epoch_images_per_s": [r["epoch_images_per_s"] for r in bare_runs],
        "platform_epoch_images_per_s": [r["epoch_images_per_s"] for r in platform_runs],
        "bare_fixed_s": fixed_bare,
        "platform_fixed_s": fixed_platform,
        "platform_wall_s": [r["wall_s"] for r in platform_runs],
        "train_images_per_epoch": bare_runs[0]["train_images"],
        "tf_import_s": tf_import_s,
        "ray_init_s": ray_init_s,
        "cpus": os.cpu_count(),
        "gpu": args.gpu,
        "config": {
            k: config.to_dict()[k]
            for k in (
                "bands",
                "block",
                "attention",
                "heads",
                "base_filters",
                "depth",
                "batch_size",
                "epochs",
                "precision",
                "xla",
            )
        },
        "tile_size": int(args.size or (128 if args.full else 64)) if args.data is None else None,
    }
    if scaled is not None:
        summary["scaling_workers"] = args.scale_to
        summary["scaling_images_per_s"] = scaled["images_per_s"]
        summary["scaling_ratio"] = scaled["images_per_s"] / platform_median
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
