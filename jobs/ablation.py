"""Entry point for `ray job submit --working-dir . -- python jobs/ablation.py SPEC [options]`.

The same arguments as `rmaunet study run` (see `python jobs/ablation.py --help`): this file
only forwards them to the CLI's own parser, so every option exists in both. It runs one
study spec on the cluster in RAY_ADDRESS (set by `ray job submit`) or, run by hand, on a
local Ray runtime; `--reports DIR` also writes the study's tables into DIR/<study>/.

    ray job submit --working-dir . -- python jobs/ablation.py search_spaces/paper_table10_ladder.yaml \
        --data /mnt/shared/datasets/landslide4sense --storage /mnt/shared/results --reports /mnt/shared/reports
    python jobs/ablation.py search_spaces/paper_table11_datasets.yaml \
        --data landslide4sense=DIR --data bijie=DIR --data nepal=DIR --storage DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir, when not pip-installed

from rmaunet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["study", "run", *sys.argv[1:]]))
