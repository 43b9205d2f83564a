"""Entry point for `ray job submit --working-dir . -- python jobs/report.py STORE [options]`.

Same arguments as `rmaunet report` (see `python jobs/report.py --help`); it runs on the
head node, reads the results store the study wrote, and needs neither TensorFlow nor Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a job's working dir is not installed

from rmaunet.reporting.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
