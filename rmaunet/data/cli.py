"""`rmaunet data …`: make synthetic datasets (and, later, check and describe real ones)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="make, check and describe datasets", description="Make, check and describe datasets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = data_sub.add_parser(
        "synth",
        help="write a synthetic dataset in a dataset's own on-disk layout",
        description=(
            "Write physically plausible synthetic scenes (terrain, vegetation, water, clouds, "
            "landslide scars on steep slopes) in the named dataset's published layout."
        ),
    )
    synth.add_argument("--dataset", default="landslide4sense", choices=["landslide4sense"], help="layout to write")
    synth.add_argument("--out", required=True, type=Path, help="folder to write into")
    synth.add_argument("--n", type=int, default=100, help="number of scenes (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.add_argument("--size", type=int, default=128, help="tile side in pixels (default 128, as released)")
    synth.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.errors import DataError

    if args.n < 1 or args.size < 8:
        raise DataError(f"{args.out}: need --n >= 1 and --size >= 8 (got {args.n}, {args.size})")
    t0 = time.perf_counter()
    write_landslide4sense(args.out, args.n, args.seed, args.size)
    print(f"wrote {args.n} {args.dataset} scenes ({args.size}×{args.size}) to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
