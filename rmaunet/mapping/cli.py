"""`rmaunet export` and `rmaunet predict`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="a finished row of a study -> a model folder (model.keras, preprocess.json, model card)",
        description=(
            "Export one trained row of a study from the results store: the Keras model, everything "
            "applying it needs (preprocess.json) and a model card. --best picks the row with the best "
            "mean validation score over its seeds, never by test."
        ),
    )
    export.add_argument("store", help="results store: a folder or s3://… / gs://…")
    export.add_argument("--study", required=True, help="study name (the spec's `name`)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", help="row label as printed in the table")
    which.add_argument("--best", action="store_true", help="the best row on validation")
    export.add_argument("--seed", type=int, help="with --row: this seed (default: the row's best seed on validation)")
    export.add_argument("--out", type=Path, required=True, help="model folder to write")
    export.set_defaults(func=_export)

    predict = sub.add_parser(
        "predict",
        help="map landslides on GeoTIFF scenes with an exported model",
        description=(
            "Predict whole multi-band GeoTIFF scenes window by window (overlapping, blended) and write a "
            "probability map and a mask (Cloud-Optimised GeoTIFFs with the scene's CRS and transform) and "
            "landslide polygons (GeoJSON with areas) per scene. On a Ray cluster (--address, RAY_ADDRESS, "
            "or inside `ray job submit`) the scenes are shared out as Ray tasks, or with --rows-per-task "
            "each scene's windows are."
        ),
    )
    predict.add_argument("model", type=Path, help="model folder written by `rmaunet export`")
    predict.add_argument("scenes", nargs="+", help="GeoTIFF scenes: paths or s3://… / gs://… URIs")
    predict.add_argument("--out", required=True, help="output folder or URI")
    predict.add_argument(
        "--bands",
        help="comma-separated names of the raster's bands, in the raster's order (default: the band "
        "descriptions; without them a raster with exactly the model's bands is taken in the model's order)",
    )
    predict.add_argument("--overlap", type=int, help="pixels shared by neighbouring windows (default: a quarter tile)")
    predict.add_argument("--threshold", type=float, help="mask threshold (default: the exported row's)")
    predict.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply raw values by this first, to match the training data's scale (default 1)",
    )
    predict.add_argument("--batch-size", type=int, default=32, help="windows per model call")
    predict.add_argument("--address", help="Ray cluster address: predict the scenes as Ray tasks")
    predict.add_argument(
        "--rows-per-task",
        type=int,
        help="on Ray: split each scene's windows into tasks of this many window rows (a few large scenes), "
        "instead of one task per scene (many scenes)",
    )
    predict.add_argument("--json", action="store_true", help="print the scenes' summaries as JSON")
    predict.set_defaults(func=_predict)


def _export(args: argparse.Namespace) -> int:
    from rmaunet.errors import ConfigError
    from rmaunet.mapping.export import export_model

    if args.seed is not None and args.best:
        raise ConfigError("--seed goes with --row, not --best")
    out = export_model(args.store, args.study, args.out, row=args.row, seed=args.seed, best=args.best)
    meta = json.loads((out / "preprocess.json").read_text())
    print(
        f"exported {meta['study']} / {meta['row']} (seed {meta['seed']}, trial {meta['trial_id']}): "
        f"validation {meta['selection_metric']} {100 * meta['metrics']['val'][meta['selection_metric']]:.2f}, "
        f"threshold {meta['threshold']:g} -> {out}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rmaunet.errors import ConfigError
    from rmaunet.mapping.scenes import predict_scenes

    on_ray = bool(args.address or os.environ.get("RAY_ADDRESS"))
    if args.rows_per_task is not None and (not on_ray or args.rows_per_task < 1):
        raise ConfigError("--rows-per-task: a number of window rows (1 or more), on Ray (--address or RAY_ADDRESS)")
    if on_ray:
        import ray

        ray.init(address=args.address, log_to_driver=False)
    options = {
        "bands": [b.strip() for b in args.bands.split(",")] if args.bands else None,
        "overlap": args.overlap,
        "threshold": args.threshold,
        "scale": args.scale,
        "batch_size": args.batch_size,
    }
    summaries = predict_scenes(
        args.model, args.scenes, args.out, on_ray=on_ray, rows_per_task=args.rows_per_task, **options
    )
    if args.json:
        print(json.dumps(summaries))
    return 0
