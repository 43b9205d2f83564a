"""Entry point for `ray job submit --working-dir . -- python jobs/ablation.py …`.

Runs one study spec on the cluster in RAY_ADDRESS (set by `ray job submit`) or, run by
hand, on a local Ray runtime; then writes the study's tables.

    python jobs/ablation.py --spec search_spaces/demo.yaml --data DIR --storage DIR [--smoke] [--report DIR]
    python jobs/ablation.py --spec search_spaces/paper_table11_datasets.yaml \
        --data landslide4sense=DIR --data bijie=DIR --data nepal=DIR --storage DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir, when not pip-installed

from rmaunet.cli import main  # noqa: E402


def _args(argv: list[str]) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="study spec (YAML)")
    p.add_argument("--data", required=True, action="append", metavar="[NAME=]DIR",
                   help="dataset folder; repeat as NAME=DIR for a cross-dataset study")
    p.add_argument("--storage", required=True, help="results store folder (a shared filesystem on a multi-node cluster)")
    p.add_argument("--smoke", action="store_true", help="shrink the study to CPU minutes")
    p.add_argument("--report", help="write the tables into this folder")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local runtime)")
    a = p.parse_args(argv)
    out = ["study", "run", a.spec, "--storage", a.storage]
    for d in a.data:
        out += ["--data", d]
    out += ["--smoke"] if a.smoke else []
    out += ["--report", a.report] if a.report else []
    out += ["--address", a.address] if a.address else []
    return out


if __name__ == "__main__":
    sys.exit(main(_args(sys.argv[1:])))
