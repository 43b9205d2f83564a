"""Spec -> planned trials, deduplicated by identity.

A trial's identity is the hash of its training config (seed included) and the data
fingerprint: the same config in two tables trains once, a finished study reruns nothing,
and a new row trains only itself. A threshold enters the identity only through the epoch
it makes a trial keep (config.training_dict): a threshold study's candidates are scored on
the stored maps of one training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from rmaunet.config import TrialConfig
from rmaunet.studies.spec import StudySpec

__all__ = ["PlannedRow", "expand", "trial_id"]


def trial_id(config: TrialConfig, data_fingerprint: str) -> str:
    return hashlib.sha256(f"{config.training_hash}:{data_fingerprint}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedRow:
    row_index: int
    label: str
    seed: int
    config: TrialConfig  # seed applied
    trial_id: str
    steps: tuple[str, ...] = ()


def expand(spec: StudySpec, data_fingerprint: str | Mapping[str, str]) -> list[PlannedRow]:
    """Every (row, seed) of the study, in table order (a search's rows appear as it runs).

    `data_fingerprint` is one fingerprint, or one per dataset for a cross-dataset study.
    """
    if spec.kind == "search":
        return []
    planned = []
    for index, row in enumerate(spec.rows):
        for seed in spec.seeds:
            config = row.config.replace(seed=seed)
            fp = data_fingerprint if isinstance(data_fingerprint, str) else data_fingerprint[config.dataset]
            planned.append(PlannedRow(index, row.label, seed, config, trial_id(config, fp), row.steps))
    return planned
