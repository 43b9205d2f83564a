"""Shared fixtures: small synthetic datasets written once per session, quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def l4s_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic Landslide4Sense scenes of 32×32 in the official layout."""
    from rmaunet.data.synthetic import write_landslide4sense

    out = tmp_path_factory.mktemp("l4s_small")
    write_landslide4sense(out, n=60, seed=3, size=32)
    return out


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures: files written by other projects' tools, kept beside the repository,
    not in it. A plain clone has no such folder: the tests that read it skip, saying why."""
    folder = SHARED / "fixtures"
    if not folder.is_dir():
        pytest.skip(f"third-party fixtures not here: {folder} (a copy of shared/ beside the repository)")
    return folder
