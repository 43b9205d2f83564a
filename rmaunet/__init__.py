"""rmaunet: ablation studies and hyperparameter searches of RMAU-NET on Ray.

The Python API is the one the `rmaunet` command calls (docs/api.md):

    import rmaunet
    spec = rmaunet.load_spec("paper_table4_losses", smoke=True)   # a bundled spec by name, or a path
    plan = rmaunet.plan_study(spec, "data/l4s", "results")         # what would train, what is reused
    rmaunet.run_study(spec, "data/l4s", "results")                  # train on Ray Tune, write every row
    rmaunet.load_result("results", trial_id)                        # one trial's stored result

The names below are imported on first use, so `import rmaunet` stays light (no TensorFlow,
no Ray) and the command line can quiet TensorFlow before anything imports it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("rmaunet")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from rmaunet.api import load_result, load_spec, plan_study, run_study, study_status, study_trainable
    from rmaunet.config import TrialConfig

__all__ = [
    "__version__",
    "TrialConfig",
    "load_spec",
    "plan_study",
    "run_study",
    "load_result",
    "study_status",
    "study_trainable",
]

_LAZY = {
    "TrialConfig": "rmaunet.config",
    "load_spec": "rmaunet.api",
    "plan_study": "rmaunet.api",
    "run_study": "rmaunet.api",
    "load_result": "rmaunet.api",
    "study_status": "rmaunet.api",
    "study_trainable": "rmaunet.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rmaunet' has no attribute {name!r}")
