"""Scene prediction benchmark: windows per second against a naive per-tile loop, and the
peak memory of a Sentinel-2-sized scene.

    python bench/predict.py [--scene 2048] [--large 10980] [--tile 64] [--model DIR]

1. Throughput on a `--scene`² synthetic 14-band scene: `predict_scene` (whole block rows
   read once and cut into strips, windows preprocessed on a thread while the model
   predicts the previous strip, batched model calls, its two COGs written; polygons left
   out) against the naive loop: the same windows, the same blending, each window read,
   preprocessed and predicted on its own (batch of one), the map kept whole in memory and
   not written. Both use the same traced model function, traced before timing; the median
   of --repeats alternated runs is reported, in wall time and in this process's CPU time.
   Both maps are compared, so a fast-but-wrong path cannot pass.
2. Peak resident memory (ru_maxrss) of `predict_scene` on a `--large`² scene (default
   10,980², one Sentinel-2 tile at 10 m), measured in a child process that does nothing
   else. The scene is a uint16 stack (reflectance × 10,000, as Sentinel-2 L2A ships it)
   written strip by strip from a repeated synthetic patch and read with --scale 0.001;
   polygons included; `--large 0` skips it. Target: under 4 GB.

Without --model the network is an untrained U-Net of the demo's size (base 8, depth 3,
64×64 windows): throughput depends on the architecture, not on the weights. The last
line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rmaunet.data.synthetic import landslide4sense_image, make_scene  # noqa: E402
from rmaunet.datasets import LANDSLIDE4SENSE  # noqa: E402

CRS = "EPSG:32645"
PATCH = 512


def _patch(seed: int = 0) -> np.ndarray:
    """A (PATCH, PATCH, 14) synthetic Landslide4Sense-scale patch with landslides."""
    return landslide4sense_image(make_scene(np.random.default_rng(seed), PATCH, True, 0.03))


def write_scene(path: Path, side: int, uint16: bool) -> Path:
    """A side² scene tiled from the patch, written strip by strip (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    patch = _patch()
    if uint16:
        patch = np.clip(np.rint(patch * 1000.0), 0, 65535).astype(np.uint16)
    profile = dict(
        driver="GTiff", width=side, height=side, count=14, dtype=patch.dtype, crs=CRS, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="YES",
        transform=from_origin(600_000.0, 3_200_000.0, 10.0, 10.0),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        for k, name in enumerate(LANDSLIDE4SENSE.bands):
            ds.set_band_description(k + 1, name)
        reps = -(-side // PATCH)
        row_of_patches = np.tile(patch, (1, reps, 1))[:, :side]
        for top in range(0, side, PATCH):
            h = min(PATCH, side - top)
            ds.write(row_of_patches[:h].transpose(2, 0, 1), window=Window(0, top, side, h))
    return path


def bench_model(tile: int, model_dir: str | None, base_filters: int = 8, depth: int = 3):  # noqa: ANN201
    """An exported model, or an untrained U-Net (the demo's size by default) with identity normalisation."""
    from rmaunet.mapping.export import Exported, load_exported

    if model_dir:
        return load_exported(model_dir)
    import keras

    from rmaunet.config import TrialConfig
    from rmaunet.models import build_model

    keras.utils.set_random_seed(0)
    config = TrialConfig(base_filters=base_filters, depth=depth)
    bands = list(LANDSLIDE4SENSE.bands)
    inputs = {"dataset": "landslide4sense", "channels": bands, "bands": bands, "tile_size": tile}
    meta = {"inputs": {**inputs, "normalisation": None, "engineered_over": tile}, "threshold": 0.5}
    return Exported(Path("untrained"), build_model(config, len(bands), tile), meta)


def naive(exported, scene: Path, overlap: int) -> tuple[np.ndarray, float]:
    """Window by window: read, preprocess, predict one, blend into a whole-scene map."""
    import rasterio
    from rasterio.windows import Window

    from rmaunet.mapping.geotiff import band_indexes
    from rmaunet.mapping.windows import blend_weights, offsets

    recipe, tile = exported.recipe, exported.recipe.tile_size
    forward = exported.mask_probabilities  # traced once, shared with predict_scene: no tracing timed
    weights = blend_weights(tile, overlap)
    started = time.perf_counter()
    with rasterio.open(scene) as ds:
        indexes = band_indexes(ds, recipe.channels)
        total = np.zeros((ds.height, ds.width), np.float32)
        weight = np.zeros_like(total)
        for row in offsets(ds.height, tile, overlap):
            for col in offsets(ds.width, tile, overlap):
                raw = ds.read(indexes, window=Window(col, row, tile, tile), out_dtype="float32")
                prob = forward(recipe.model_input(raw.transpose(1, 2, 0)[None]))[0]
                total[row : row + tile, col : col + tile] += prob * weights
                weight[row : row + tile, col : col + tile] += weights
    return total / weight, time.perf_counter() - started


def _large_child(args: argparse.Namespace) -> None:
    """Run in a child process: predict the large scene and report this process's peak RSS."""
    from rmaunet.mapping.predict import predict_scene

    exported = bench_model(args.tile, args.model, args.base_filters, args.depth)
    summary = predict_scene(
        exported, Path(args.child_scene), Path(args.child_out), scale=0.001, batch_size=64, overlap=args.large_overlap
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**summary, "peak_rss_gib": peak_kib / 2**20}))


def throughput(args: argparse.Namespace, work: Path) -> dict:
    """predict_scene against the naive loop on the same scene, model and windows."""
    import rasterio

    from rmaunet.mapping.predict import predict_scene

    exported = bench_model(args.tile, args.model, args.base_filters, args.depth)
    tile = exported.recipe.tile_size
    overlap = tile // 4
    scene = write_scene(work / "scene.tif", args.scene, uint16=False)
    run = dict(overlap=overlap, progress=False, polygons=False)
    predict_scene(exported, scene, work / "warm", **run)  # traces the model
    fast, slow, fast_cpu, slow_cpu = [], [], [], []
    for k in range(args.repeats):  # alternated, so a load spike on the shared machine hits both
        t0, c0 = time.perf_counter(), time.process_time()
        summary = predict_scene(exported, scene, work / f"fast{k}", **run)
        fast.append(time.perf_counter() - t0)
        fast_cpu.append(time.process_time() - c0)
        c0 = time.process_time()
        naive_map, naive_s = naive(exported, scene, overlap)
        slow.append(naive_s)
        slow_cpu.append(time.process_time() - c0)
    fast_s, naive_s = float(np.median(fast)), float(np.median(slow))
    with rasterio.open(summary["probability"]) as ds:
        gap = float(np.abs(ds.read(1) - naive_map).max())
    windows = summary["windows"]
    return {
        "scene": [args.scene, args.scene],
        "tile": tile,
        "overlap": overlap,
        "windows": windows,
        "windows_per_s": windows / fast_s,
        "naive_windows_per_s": windows / naive_s,
        "speedup": naive_s / fast_s,
        "repeats": args.repeats,
        "seconds": {"batched": fast, "naive": slow},
        # CPU seconds of this process (all its threads): less swayed by other users of a shared machine
        "cpu_seconds": {"batched": fast_cpu, "naive": slow_cpu},
        "cpu_speedup": float(np.median(slow_cpu) / np.median(fast_cpu)),
        "max_abs_difference": gap,
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=int, default=2048, help="side of the throughput scene (0: skip)")
    parser.add_argument("--large", type=int, default=10_980, help="side of the memory scene (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the median is reported)")
    parser.add_argument("--tile", type=int, default=64, help="window side (untrained model only)")
    parser.add_argument("--model", help="an exported model folder instead of the untrained demo-sized U-Net")
    parser.add_argument("--base-filters", type=int, default=8, help="untrained U-Net's width")
    parser.add_argument("--depth", type=int, default=3, help="untrained U-Net's depth")
    parser.add_argument("--large-overlap", type=int, help="overlap on the large scene (default: a quarter tile)")
    parser.add_argument("--workdir", help="where the scenes go (default: a temporary folder)")
    parser.add_argument("--child-scene", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_scene:
        _large_child(args)
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        result: dict = {"bench": "predict", "cpus": os.cpu_count(), "python": platform.python_version()}
        if args.scene:
            result.update(throughput(args, work))
            print(json.dumps(result), flush=True)
        if args.large:
            t0 = time.perf_counter()
            big = write_scene(work / "large.tif", args.large, uint16=True)
            result["large_write_s"] = time.perf_counter() - t0
            command = [sys.executable, __file__, "--child-scene", str(big), "--child-out", str(work / "large-out")]
            command += ["--tile", str(args.tile), "--base-filters", str(args.base_filters), "--depth", str(args.depth)]
            command += (["--model", args.model] if args.model else []) + (
                ["--large-overlap", str(args.large_overlap)] if args.large_overlap is not None else []
            )
            result["loadavg_before_large"] = os.getloadavg()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            child = json.loads(done.stdout.strip().splitlines()[-1])
            result["large"] = {
                "size": child["size"],
                "windows": child["windows"],
                "seconds": child["seconds"],
                "windows_per_s": child["windows_per_s"],
                "peak_rss_gib": child["peak_rss_gib"],
                "under_4_gib": child["peak_rss_gib"] < 4.0,
                "polygons": child.get("polygons"),
            }
            result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
