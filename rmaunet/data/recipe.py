"""The input recipe: how raw channels become the model's input, as a trial trained with it.

`prepare_splits` reads a dataset's channels, replaces non-finite values by 0, engineers
the configured bands (Table V) per tile and normalises with the training split's
statistics. A trial keeps that recipe (`InputRecipe.from_splits`) in its folder's
preprocess.json, so its model can be applied to new data (`rmaunet.mapping`) with inputs
built exactly as its training inputs were: same channels, same band order, same float32
normalisation.

Per-tile bands (min-max, filters, gradients, edges) are computed over the window the model
sees. A trial trained on centre crops of larger tiles computed them over the whole tile:
its recipe says so (`engineered_over` larger than `tile_size`).

This module imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rmaunet.data.bands import ENGINEERED, engineer_bands
from rmaunet.datasets import dataset_info
from rmaunet.errors import ConfigError

if TYPE_CHECKING:
    from rmaunet.data.prepare import Splits

__all__ = ["InputRecipe"]


@dataclass(frozen=True)
class InputRecipe:
    """Raw channels in, normalised model bands out."""

    dataset: str
    channels: tuple[str, ...]  # the raw channels read, in the reader's order
    bands: tuple[str, ...]  # the model's input bands, in order (originals and engineered)
    tile_size: int  # the side of the square tiles the model was trained on
    mean: tuple[float, ...] | None  # per model band (None: not normalised)
    std: tuple[float, ...] | None
    engineered_over: int = 0  # the tile side engineered bands were computed over in training

    @classmethod
    def from_splits(cls, dataset: str, splits: Splits) -> InputRecipe:
        info = dataset_info(dataset)
        size = int(splits.x_train.shape[1])
        return cls(
            dataset=info.name,
            channels=info.channels(splits.band_names),
            bands=tuple(splits.band_names),
            tile_size=size,
            mean=None if splits.norm_mean is None else tuple(float(v) for v in splits.norm_mean),
            std=None if splits.norm_std is None else tuple(float(v) for v in splits.norm_std),
            engineered_over=int(splits.source_size or size),
        )

    @property
    def engineered(self) -> tuple[str, ...]:
        return tuple(b for b in self.bands if b in ENGINEERED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "channels": list(self.channels),
            "bands": list(self.bands),
            "tile_size": self.tile_size,
            "normalisation": None if self.mean is None else {"mean": list(self.mean), "std": list(self.std or ())},
            "engineered_over": self.engineered_over,
            "non_finite_fill": 0.0,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputRecipe:
        try:
            norm = values.get("normalisation")
            recipe = cls(
                dataset=str(values["dataset"]),
                channels=tuple(values["channels"]),
                bands=tuple(values["bands"]),
                tile_size=int(values["tile_size"]),
                mean=None if norm is None else tuple(float(v) for v in norm["mean"]),
                std=None if norm is None else tuple(float(v) for v in norm["std"]),
                engineered_over=int(values.get("engineered_over", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"preprocess.json: unreadable input recipe ({type(exc).__name__}: {exc})") from None
        if recipe.mean is not None and not (len(recipe.mean) == len(recipe.std or ()) == len(recipe.bands)):
            raise ConfigError("preprocess.json: normalisation statistics do not match the bands")
        return recipe

    def model_input(self, raw: np.ndarray) -> np.ndarray:
        """(N, H, W, len(channels)) raw values -> (N, H, W, len(bands)) float32 model input.

        Non-finite values become 0, as the readers replace them; then the same band
        engineering and the same in-place float32 normalisation as `prepare_splits`.
        """
        raw = np.asarray(raw, np.float32)
        if raw.ndim != 4 or raw.shape[-1] != len(self.channels):
            raise ConfigError(f"input recipe: expected (N, H, W, {len(self.channels)}) raw channels, got {raw.shape}")
        raw = np.where(np.isfinite(raw), raw, np.float32(0))
        x = engineer_bands(raw, self.bands, self.dataset, channels=self.channels, workers=1)
        if self.mean is not None and self.std is not None:
            x -= np.asarray(self.mean, np.float64).astype(np.float32)
            x /= np.asarray(self.std, np.float64).astype(np.float32)
        return x
