"""The trial folder: every file one training leaves behind, named in this one place.

Training writes it (`rmaunet.training`), the study engine and the results store read it;
no other code spells a file name of a trial. Layout under the folder:

    config.json             the TrialConfig that trained it
    result.json             written last: marks a finished trial (status ok or failed)
    best.weights.h5         the weights of the selected epoch
    val_probs.npz           validation / test probability maps (uint8, round(255 p)) with
    test_probs.npz          their masks: any threshold is scored later without a model
    preprocess.json         what applying the model needs: bands, normalisation, tile size,
                            thresholds, config, data fingerprint, commit (rmaunet.mapping)
    history.json            per-epoch rows (data-parallel trials)
    sync.json               every rank's weight digest per epoch (data-parallel trials)
    checkpoint/             the last epoch's state, for resuming (see EpochCheckpoint)
    crashes.json            why each attempt that raised ended, until the trial finishes
    attempts.json           attempts in a row that started from the same checkpoint epoch
    ray_train/              Ray Train's own run folder (data-parallel trials)

This module imports neither TensorFlow nor Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet import atomic

__all__ = ["TrialFolder", "SPLITS"]

SPLITS = ("val", "test")


class TrialFolder:
    """Paths and typed reads / writes of one trial's files."""

    CONFIG = "config.json"
    RESULT = "result.json"
    BEST_WEIGHTS = "best.weights.h5"
    HISTORY = "history.json"
    PREPROCESS = "preprocess.json"
    SYNC = "sync.json"
    CHECKPOINT = "checkpoint"
    RAY_TRAIN = "ray_train"
    CRASHES = "crashes.json"  # attempts that ended in an exception (rmaunet.training.trial.crash_budget)
    ATTEMPTS = "attempts.json"  # attempts without a new epoch (rmaunet.training.trial.no_progress_verdict)
    FAILURE_MARKER = ".failure-injected"  # fault injection in tests: fail once, not on every retry
    # Inside a checkpoint folder (the trial's own, or one Ray Train checkpoint per epoch).
    CHECKPOINT_WEIGHTS = "last.weights.h5"
    CHECKPOINT_OPTIMIZER = "optimizer.npz"
    CHECKPOINT_STATE = "state.json"  # written last: marks the checkpoint complete

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"TrialFolder({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def result(self) -> Path:
        return self.root / self.RESULT

    @property
    def best_weights(self) -> Path:
        return self.root / self.BEST_WEIGHTS

    @property
    def history(self) -> Path:
        return self.root / self.HISTORY

    @property
    def preprocess(self) -> Path:
        return self.root / self.PREPROCESS

    @property
    def sync(self) -> Path:
        return self.root / self.SYNC

    @property
    def checkpoint(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def ray_train(self) -> Path:
        return self.root / self.RAY_TRAIN

    @property
    def failure_marker(self) -> Path:
        return self.root / self.FAILURE_MARKER

    def probabilities(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return self.root / f"{split}_probs.npz"

    def outputs(self) -> tuple[Path, ...]:
        """What a finished trial keeps, result.json last (copying in this order keeps it the marker)."""
        return (
            self.best_weights,
            self.history,
            *(self.probabilities(s) for s in SPLITS),
            self.preprocess,
            self.result,
        )

    # ------------------------------------------------------------------ reads / writes
    def create(self) -> TrialFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def read_result(self) -> dict[str, Any] | None:
        """The stored result of a finished trial, or None when it must (re)run."""
        if not self.result.is_file():
            return None
        try:
            result = json.loads(self.result.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # unreadable: train again rather than guess
        return result if isinstance(result, dict) else None

    def write_result(self, payload: dict[str, Any]) -> None:
        atomic.write_json(self.result, payload)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic.write_json(self.config, config, sort_keys=True)

    def write_preprocess(self, recipe: dict[str, Any]) -> None:
        atomic.write_json(self.preprocess, recipe, sort_keys=True)

    def read_preprocess(self) -> dict[str, Any] | None:
        """What applying the trial's model needs, or None for a trial trained before it was kept."""
        if not self.preprocess.is_file():
            return None
        recipe = json.loads(self.preprocess.read_text())
        return recipe if isinstance(recipe, dict) else None

    def write_history(self, history: list[dict[str, Any]]) -> None:
        atomic.write_json(self.history, history)

    def write_sync(self, sync: list[dict[str, Any]]) -> None:
        atomic.write_json(self.sync, sync)

    def save_probabilities(
        self, split: str, prob: np.ndarray | None, mask: np.ndarray, detection: np.ndarray | None = None
    ) -> None:
        """A split's masks with the mask head's probabilities, uint8-quantised (stored value
        = round(255·p)), and the detection head's per-image probabilities (float32), compressed."""
        arrays: dict[str, np.ndarray] = {"mask": mask.astype(np.uint8)}
        if prob is not None:
            arrays["prob_u8"] = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
        if detection is not None:
            arrays["det_prob"] = np.asarray(detection, np.float32).reshape(-1)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        atomic.atomic_write(self.probabilities(split), write)

    def _load(self, split: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.probabilities(split)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return (data["mask"], data[key]) if key in data.files else None

    def load_probabilities(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(masks, uint8 mask probabilities) of a split, or None when the trial stored none."""
        return self._load(split, "prob_u8")

    def load_detection(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(masks, per-image detection probabilities), or None without a detection head."""
        return self._load(split, "det_prob")
