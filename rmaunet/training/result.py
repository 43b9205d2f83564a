"""TrialResult: what one training reports, as stored in its trial folder's result.json."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rmaunet.trial_folder import TrialFolder

if TYPE_CHECKING:
    from rmaunet.config import TrialConfig
    from rmaunet.data.prepare import Splits

__all__ = ["TrialResult", "write_result", "write_preprocess"]


@dataclass
class TrialResult:
    status: str  # "ok" or "failed"
    reason: str
    epochs_run: int
    best_epoch: int
    val: dict[str, float]
    test: dict[str, float]
    val_det: dict[str, float] = field(default_factory=dict)
    test_det: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    images_per_s: float = float("nan")
    wall_s: float = 0.0
    data_fingerprint: str = ""
    resumed_from: int = 0  # the epoch a restarted trial went on after (0: never restarted)
    params: int = 0
    flops_per_image: int = 0  # forward pass, a multiply-add counted as 2 (rmaunet.models.cost)
    threshold: float | None = None  # the mask threshold val / test are scored at
    threshold_protocol: str = ""  # "tuned" (chosen on validation) or "fixed"
    det_threshold: float | None = None  # the detection head's, chosen on validation by image F1 (or fixed)
    test_groups: list[str] = field(default_factory=list)  # each test tile's region with split_groups, else empty

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialResult:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    @classmethod
    def failed(cls, reason: str, epochs_run: int, **details: Any) -> TrialResult:
        return cls(status="failed", reason=reason, epochs_run=epochs_run, best_epoch=0, val={}, test={}, **details)


def write_result(folder: TrialFolder, result: TrialResult, node: str | None = None, **extra: Any) -> None:
    """result.json marks a finished trial: written last, atomically, with where it ran."""
    folder.write_result(
        {**result.to_dict(), "node": node or socket.gethostname(), "accelerator": _accelerator(), **extra}
    )


def write_preprocess(folder: TrialFolder, config: TrialConfig, splits: Splits, decided: dict[str, Any]) -> None:
    """preprocess.json: everything applying the trial's model needs (rmaunet.mapping), kept
    beside its weights so a finished trial is self-contained: the input recipe (channels,
    bands in order, tile size, training statistics), the thresholds chosen with their
    protocol, the config, the data it trained on and the code that trained it."""
    from rmaunet.data.recipe import InputRecipe
    from rmaunet.provenance import provenance

    folder.write_preprocess(
        {
            "format": 1,
            "inputs": InputRecipe.from_splits(config.dataset, splits).to_dict(),
            "threshold": decided["threshold"],
            "threshold_protocol": str(decided["threshold_protocol"]),
            "det_threshold": decided["det_threshold"],
            "select": config.select,
            "config": config.to_dict(),
            "data_fingerprint": splits.fingerprint,
            **provenance(),
        }
    )


def _accelerator() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{len(gpus)}x {details.get('device_name', 'GPU')}"
