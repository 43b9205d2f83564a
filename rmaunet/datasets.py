"""The datasets, each declared once: name, display title, channels, spectral roles, splits.

Everything else derives from these declarations: the config's `DATASETS`, the CLI's
choices, the band names of `rmaunet.data.bands`, the readers' channels, the split rule of
`prepare_splits` and the titles of the report tables. A new dataset is one declaration
here plus one reader class (listed in `rmaunet.data.prepare.READERS`).

This module imports nothing heavy and lives outside `rmaunet.data`: `rmaunet.config`
imports it, and importing a module inside `rmaunet.data` would first import that
package's readers and NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rmaunet.errors import ConfigError

__all__ = ["SplitPolicy", "DatasetInfo", "LANDSLIDE4SENSE", "BIJIE", "NEPAL", "DATASET_INFO", "dataset_info"]


@dataclass(frozen=True)
class SplitPolicy:
    """How a dataset's tiles become train / validation / test (Section II-C of the paper).

    The development pool is the reader splits in `development`: the first is required and
    is where `max_tiles` applies, the others join when their folder exists. Validation is
    carved from the pool with the trial's seed. The test split is the reader split
    `test_split` kept whole when its folder exists, else `test_fraction` of the pool carved
    with a fixed seed (a config's `test_fraction` overrides it).
    """

    development: tuple[str, ...]
    test_fraction: float
    test_split: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset as the rest of the platform sees it."""

    name: str  # the name a spec, the CLI and the results store use
    title: str  # how reports write it
    bands: tuple[str, ...]  # every channel its reader can deliver, in the order it stacks them
    roles: Mapping[str, str]  # spectral role (blue, nir, swir1, …) -> the channel that plays it
    split: SplitPolicy
    # Channels read only when a band spec names them; the band sets start without them.
    opt_in: tuple[str, ...] = ()
    # The side of its square tiles in pixels when they all share one (reports size notes by it).
    tile_size: int | None = None
    # Published per-channel normalisation constants (normalisation: official), in `bands` order.
    official_mean: tuple[float, ...] | None = field(default=None, repr=False)
    official_std: tuple[float, ...] | None = field(default=None, repr=False)

    @property
    def default_bands(self) -> tuple[str, ...]:
        """The channels read unless a spec opts into more; every band set starts with them."""
        return tuple(b for b in self.bands if b not in self.opt_in)

    def channels(self, names: Iterable[str] = ()) -> tuple[str, ...]:
        """The channels a reader reads for a trial using `names`: the default ones plus any
        opt-in channel among `names`, in the reader's order (other names are ignored)."""
        wanted = set(names)
        return tuple(b for b in self.bands if b not in self.opt_in or b in wanted)


LANDSLIDE4SENSE = DatasetInfo(
    name="landslide4sense",
    title="Landslide4Sense",
    bands=("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem"),
    roles={"blue": "B2", "green": "B3", "red": "B4", "nir": "B8", "swir1": "B11", "swir2": "B12"},
    split=SplitPolicy(development=("train",), test_fraction=0.2),  # TrainData 80:20 (the test labels are unpublished)
    tile_size=128,
    # The official Landslide4Sense baseline's constants.
    official_mean=(
        -0.4914,
        -0.3074,
        -0.1277,
        -0.0625,
        0.0439,
        0.0803,
        0.0644,
        0.0802,
        0.3000,
        0.4082,
        0.0823,
        0.0516,
        0.3338,
        0.7819,
    ),
    official_std=(
        0.9325,
        0.8775,
        0.8860,
        0.8869,
        0.8857,
        0.8418,
        0.8354,
        0.8491,
        0.9061,
        1.6072,
        0.8848,
        0.9232,
        0.9018,
        1.2913,
    ),
)
BIJIE = DatasetInfo(
    name="bijie",
    title="Bijie",
    bands=("red", "green", "blue", "dem"),
    roles={"blue": "blue", "green": "green", "red": "red"},
    split=SplitPolicy(development=("all",), test_fraction=0.3),  # all tiles 70:30
    opt_in=("dem",),  # the paper uses the RGB images only
)
NEPAL = DatasetInfo(
    name="nepal",
    title="Nepal",
    bands=("red", "green", "blue"),
    roles={"blue": "blue", "green": "green", "red": "red"},
    # Its own folders: train + validation develop, test evaluates (carved 20 % if absent).
    split=SplitPolicy(development=("train", "validation"), test_fraction=0.2, test_split="test"),
)
DATASET_INFO: dict[str, DatasetInfo] = {d.name: d for d in (LANDSLIDE4SENSE, BIJIE, NEPAL)}


def dataset_info(name: str) -> DatasetInfo:
    """The declaration of a dataset by name, or a ConfigError listing the known names."""
    if name not in DATASET_INFO:
        raise ConfigError(f"dataset: unknown value {name!r} (choose one of: {', '.join(DATASET_INFO)})")
    return DATASET_INFO[name]
