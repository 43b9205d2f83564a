"""Where a result came from: the code's commit and the package versions.

A results row (rmaunet.studies.rows) and a trial's preprocess.json (rmaunet.training)
record it, so an exported model's card can name the code that trained it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["provenance"]


def provenance() -> dict[str, Any]:
    """The code and package versions that wrote a row."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in ("rmaunet", "tensorflow", "keras", "ray", "numpy", "optuna"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit or os.environ.get("RMAUNET_GIT_COMMIT", "unknown"), "versions": versions}
