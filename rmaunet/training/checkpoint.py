"""EpochCheckpoint: what a trial needs to go on after its last finished epoch."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet import atomic
from rmaunet.config import TrialConfig
from rmaunet.trial_folder import TrialFolder

__all__ = ["EpochCheckpoint", "fresh_state"]

# The files a checkpoint's state file vouches for, by digest.
_PAIRED = (TrialFolder.CHECKPOINT_WEIGHTS, TrialFolder.CHECKPOINT_OPTIMIZER)


def fresh_state() -> dict[str, Any]:
    """The loop's state before its first epoch."""
    return {"epoch": 0, "history": [], "best_score": -1.0, "best_epoch": 0, "wall_s": 0.0}


class EpochCheckpoint:
    """After every epoch: model weights, optimizer variables and the loop's state.

    Each file is written atomically and the state file last, naming the SHA-256 of the
    weights and optimizer files it belongs with. A process killed mid-save (after the new
    weights, before the new state) leaves the previous epoch's state beside this epoch's
    weights: resuming that pair would replay an epoch on weights that already trained it,
    a run that no longer trains what an uninterrupted one does. Such a checkpoint is not
    resumed; the trial starts over from its seeded initial weights, which `restore`
    leaves untouched until every file has been checked. The config hash guards against
    resuming a different trial's checkpoint.
    """

    def __init__(self, folder: Path, config: TrialConfig, started: float | None = None) -> None:
        self.folder = folder
        self.key = config.training_hash
        self.started = time.perf_counter() if started is None else started
        self.previous_wall = 0.0  # wall time of the runs before a restart

    def wall_s(self) -> float:
        """The trial's wall time so far, the runs before a restart included."""
        return self.previous_wall + time.perf_counter() - self.started

    def save(self, model: Any, optimizer: Any, state: dict[str, Any], folder: Path | None = None) -> None:
        """Into self.folder, or `folder` (a data-parallel group writes one per epoch)."""
        folder = folder or self.folder

        def write_optimizer(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, *[np.asarray(v.numpy()) for v in optimizer.variables])

        atomic.atomic_write(folder / TrialFolder.CHECKPOINT_WEIGHTS, model.save_weights)
        atomic.atomic_write(folder / TrialFolder.CHECKPOINT_OPTIMIZER, write_optimizer)
        files = {name: _sha256(folder / name) for name in _PAIRED}
        atomic.write_json(
            folder / TrialFolder.CHECKPOINT_STATE,
            {**state, "config_hash": self.key, "wall_s": self.wall_s(), "files": files},
        )

    def restore(self, model: Any, optimizer: Any, folder: Path | None = None) -> dict[str, Any]:
        folder = folder or self.folder
        fresh = fresh_state()
        state_path = folder / TrialFolder.CHECKPOINT_STATE
        if not state_path.is_file():
            return fresh
        try:
            state = json.loads(state_path.read_text())
            if state.get("config_hash") != self.key:
                return fresh
            if state.get("files") != {name: _sha256(folder / name) for name in _PAIRED}:
                return fresh  # files of another epoch (a save killed half-way) or missing
            with np.load(folder / TrialFolder.CHECKPOINT_OPTIMIZER) as saved:
                values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            if len(values) != len(optimizer.variables):
                return fresh
            model.load_weights(folder / TrialFolder.CHECKPOINT_WEIGHTS)
            for var, value in zip(optimizer.variables, values):
                var.assign(value)
        except (OSError, ValueError, json.JSONDecodeError):
            return fresh  # an unreadable checkpoint: start over rather than guess
        self.previous_wall = float(state.get("wall_s", 0.0))
        return {**fresh, **{k: v for k, v in state.items() if k in fresh}}

    def clear(self) -> None:
        for name in (TrialFolder.CHECKPOINT_WEIGHTS, TrialFolder.CHECKPOINT_OPTIMIZER, TrialFolder.CHECKPOINT_STATE):
            (self.folder / name).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    """The file's SHA-256, or "" when it cannot be read (never equal to a saved digest)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""
