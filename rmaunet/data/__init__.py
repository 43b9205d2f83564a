"""Datasets: readers, synthetic scenes, bands, cache, splits and the tf.data pipeline.

Each dataset is declared once in `rmaunet.datasets` (name, title, channels, split policy)
and read by its reader class (landslide4sense.py, bijie.py, nepal.py). A trial calls
`prepare_splits(config, root)` (prepare.py) for its normalised train / validation / test
arrays.
"""

from __future__ import annotations

from rmaunet.data.bijie import Bijie
from rmaunet.data.landslide4sense import Landslide4Sense
from rmaunet.data.nepal import Nepal
from rmaunet.data.prepare import (
    OFFICIAL_L4S_MEAN,
    OFFICIAL_L4S_STD,
    READERS,
    DataSummary,
    Splits,
    check_trainable,
    fingerprint,
    open_reader,
    prepare_splits,
    split_sizes,
    validate_data,
)

__all__ = [
    "Splits",
    "prepare_splits",
    "validate_data",
    "check_trainable",
    "split_sizes",
    "DataSummary",
    "fingerprint",
    "READERS",
    "open_reader",
    "OFFICIAL_L4S_MEAN",
    "OFFICIAL_L4S_STD",
    "Landslide4Sense",
    "Bijie",
    "Nepal",
]
