"""Data-layer benchmark: band engineering (cold) and the warm tf.data training pipeline.

    python bench/data_pipeline.py [--tiles 64] [--pipeline-tiles 512] [--batch 16]

1. Engineering Table V's twelve bands from the 14 originals, tiles per second, cold (no
   cache): `engineer_bands` (vectorised, threaded) against `engineer_bands_reference`
   (the naive per-tile SciPy loop), on the same synthetic Landslide4Sense tiles; the two
   results are compared so a fast-but-wrong path cannot pass.
2. The warm training pipeline: 23 bands, 128×128, rotation and cutmix, batches of 16,
   tiles per second after a first (warm-up) epoch; the best of three epochs.
3. The synthetic dataset writer (`rmaunet data synth`): 100 scenes, scenes per second.

Targets on a 2-core machine: engineering ≥ 2× the naive loop, pipeline ≥ 2,000 tiles/s.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rmaunet.data.bands import available_cpus, engineer_bands, engineer_bands_reference, resolve_bands  # noqa: E402
from rmaunet.data.synthetic import PARAMS, landslide4sense_image, make_scene  # noqa: E402


def synthetic_tiles(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = PARAMS["landslide4sense"]
    images, masks = [], []
    for _ in range(n):
        scene = make_scene(rng, size, rng.random() < params.landslide_image_ratio, params.per_landslide_image)
        images.append(landslide4sense_image(scene))
        masks.append(scene.mask)
    return np.stack(images), np.stack(masks)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64, help="tiles for the engineering benchmark")
    parser.add_argument("--pipeline-tiles", type=int, default=512, help="tiles in the pipeline's training set")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    images, masks = synthetic_tiles(args.tiles, args.size, seed=0)
    all_bands = resolve_bands("26")
    engineer_bands(images[:4], all_bands)  # import and first-call costs are not throughput
    naive_n = max(4, args.tiles // 4)  # the naive loop is slow: time a quarter of the tiles
    fast_s, fast = timed(lambda: engineer_bands(images, all_bands), 3)
    naive_s, naive = timed(lambda: engineer_bands_reference(images[:naive_n], all_bands), 2)
    continuous = [k for k, n in enumerate(all_bands) if n != "canny"]
    max_error = float(np.abs(fast[:naive_n][..., continuous] - naive[..., continuous]).max())
    edges = all_bands.index("canny")
    edge_agreement = float((fast[:naive_n, ..., edges] == naive[..., edges]).mean())
    engineer_tps = args.tiles / fast_s
    naive_tps = naive_n / naive_s
    print(
        f"band engineering ({len(all_bands) - 14} bands, {args.size}²): {engineer_tps:.0f} tiles/s, "
        f"naive per-tile loop {naive_tps:.0f} tiles/s, speed-up {engineer_tps / naive_tps:.1f}× "
        f"(max |difference| {max_error:.2e}, edges agree on {100 * edge_agreement:.3f} %)"
    )

    import tensorflow as tf

    from rmaunet.data.pipeline import make_dataset

    bands23 = resolve_bands("23")
    base = engineer_bands(images, bands23)
    repeat = -(-args.pipeline_tiles // len(base))
    x = np.concatenate([base] * repeat)[: args.pipeline_tiles]
    y = np.concatenate([masks] * repeat)[: args.pipeline_tiles]
    x = (x - x.mean(axis=(0, 1, 2))) / (x.std(axis=(0, 1, 2)) + 1e-6)
    ds = make_dataset(x.astype(np.float32), y, args.batch, training=True, augment=("rotation", "cutmix"), seed=0)
    for _ in ds:  # warm-up epoch: tracing, thread pools, autotuning
        pass
    rates, cpu_rates = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        seen = sum(int(b[0].shape[0]) for b in ds)
        rates.append(seen / (time.perf_counter() - t0))
        cpu_rates.append(seen / (time.process_time() - c0))
    pipeline_tps = max(rates)
    print(
        f"warm tf.data pipeline (23 bands, {args.size}², rotation + cutmix, batch {args.batch}): "
        f"{pipeline_tps:.0f} tiles/s (epochs: {', '.join(f'{r:.0f}' for r in rates)})"
    )

    # 3. The synthetic Landslide4Sense writer that the tests and the demo start from (it was a
    # timed test; a time is a benchmark's figure, never a test's pass mark).
    import tempfile

    from rmaunet.data.synthetic import write_landslide4sense

    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        write_landslide4sense(folder, 100, seed=0, size=args.size)
        synth_tps = 100 / (time.perf_counter() - t0)
    print(f"synthetic Landslide4Sense writer ({args.size}², 14 bands, HDF5): {synth_tps:.1f} scenes/s")

    result = {
        "benchmark": "data_pipeline",
        "cpus": available_cpus(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "tiles": args.tiles,
        "size": args.size,
        "engineer_tiles_per_s": round(engineer_tps, 1),
        "naive_tiles_per_s": round(naive_tps, 1),
        "engineer_speedup": round(engineer_tps / naive_tps, 2),
        "engineer_max_abs_difference": max_error,
        "canny_agreement": edge_agreement,
        "pipeline_tiles_per_s": round(pipeline_tps, 1),
        "synthetic_scenes_per_s": round(synth_tps, 1),
        # Tiles per second of CPU time, and the machine's load: wall-clock rates on a
        # shared machine depend on what else runs; these two say how much.
        "pipeline_tiles_per_cpu_s": round(max(cpu_rates), 1),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "targets": {"engineer_speedup": 2.0, "pipeline_tiles_per_s": 2000},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
