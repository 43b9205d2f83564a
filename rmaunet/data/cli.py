"""`rmaunet data synth|stats|check`: make synthetic datasets, describe and validate real ones."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rmaunet.config import DATASETS

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="make, check and describe datasets", description="Make, check and describe datasets."
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = data_sub.add_parser(
        "synth",
        help="write a synthetic dataset in a dataset's own on-disk layout",
        description=(
            "Write physically plausible synthetic scenes (terrain, vegetation, water, clouds, "
            "landslide scars on steep slopes) in the named dataset's published layout. "
            "Landslide shares default to the paper's Table II."
        ),
    )
    synth.add_argument("--dataset", default="landslide4sense", choices=DATASETS, help="layout to write")
    synth.add_argument("--out", required=True, type=Path, help="folder to write into")
    synth.add_argument("--n", type=int, default=100, help="number of scenes (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.add_argument("--size", type=int, default=128, help="tile side in pixels (default 128, as released)")
    synth.add_argument("--image-ratio", type=float, help="share of scenes with landslides (default: Table II's)")
    synth.add_argument("--pixel-ratio", type=float, help="share of all pixels that are landslide (default: Table II's)")
    synth.set_defaults(func=_synth)

    _folder_action(
        data_sub,
        "stats",
        _stats,
        help="print a dataset's Table II statistics",
        description=(
            "Print image count, image size, bands, landslide image ratio and landslide pixel ratio "
            "(and NaN counts), per split and overall, as in the paper's Table II."
        ),
    ).add_argument("--json", action="store_true", help="print JSON instead of a table")
    _folder_action(
        data_sub,
        "check",
        _check,
        help="validate every file of a dataset and report all problems",
        description=(
            "Read every file and report every problem (unreadable or truncated files, wrong band "
            "counts, masks of the wrong shape, missing masks, empty folders) and notes (NaN pixels). "
            "Exit status 2 if there is a problem."
        ),
    )


def _folder_action(
    data_sub: argparse._SubParsersAction,
    name: str,
    func,
    *,
    help: str,
    description: str,  # noqa: A002, ANN001
) -> argparse.ArgumentParser:
    """An action on an existing dataset folder: `rmaunet data NAME DIR --dataset LAYOUT`."""
    parser = data_sub.add_parser(name, help=help, description=description)
    parser.add_argument("dir", type=Path, help="dataset folder")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="the dataset's layout")
    parser.set_defaults(func=func)
    return parser


def _synth(args: argparse.Namespace) -> int:
    from rmaunet.data.synthetic import PARAMS, SceneParams, write_dataset
    from rmaunet.errors import DataError

    base = PARAMS[args.dataset]
    image_ratio = base.landslide_image_ratio if args.image_ratio is None else args.image_ratio
    pixel_ratio = base.landslide_pixel_ratio if args.pixel_ratio is None else args.pixel_ratio
    if not (0 <= image_ratio <= 1 and 0 <= pixel_ratio <= 1 and pixel_ratio <= max(image_ratio, 0) + 1e-12):
        raise DataError(f"{args.out}: need 0 <= --pixel-ratio <= --image-ratio <= 1 (got {pixel_ratio}, {image_ratio})")
    t0 = time.perf_counter()
    write_dataset(args.dataset, args.out, args.n, args.seed, args.size, params=SceneParams(image_ratio, pixel_ratio))
    print(
        f"wrote {args.n} {args.dataset} scenes ({args.size}×{args.size}) to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from rmaunet.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.dir, args.dataset)
    print(json.dumps(stats.to_dict(), indent=1) if args.json else format_stats(stats))
    return 0


def _check(args: argparse.Namespace) -> int:
    from rmaunet.data.check import check_dataset
    from rmaunet.errors import DataError

    report = check_dataset(args.dir, args.dataset)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.problems:
        raise DataError(
            f"{args.dir}: {len(report.problems)} problem(s) in {report.images} {args.dataset} images (listed above)"
        )
    print(f"{args.dir}: {report.images} {args.dataset} images, {report.files_checked} files, no problems")
    return 0
