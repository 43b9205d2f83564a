"""rmaunet.atomic: the one way the project writes a file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from rmaunet import atomic


def test_a_file_is_readable_by_other_users_of_a_shared_folder(tmp_path: Path) -> None:
    # mkstemp alone gives 0600; a shared store needs what a plain open() gives (0666 less umask).
    old = os.umask(0o022)
    try:
        mode = atomic._file_mode()
    finally:
        os.umask(old)
    assert mode == 0o644
    path = atomic.write_text(tmp_path / "x.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == atomic._FILE_MODE
    assert atomic._FILE_MODE & stat.S_IRUSR


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    # A writer that raises halfway: the previous content stays, nothing half-written remains.
    path = atomic.write_text(tmp_path / "x.txt", "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_temporary_names_keep_the_suffix_a_writer_insists_on(tmp_path: Path) -> None:
    # Keras refuses a weights file whose name does not end in .weights.h5.
    seen: list[str] = []
    atomic.atomic_write(tmp_path / "best.weights.h5", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"w")))
    assert seen[0].endswith("best.weights.h5") and atomic.is_temporary(seen[0])
    assert not atomic.is_temporary("best.weights.h5")


def test_sweep_removes_only_old_temporaries(tmp_path: Path) -> None:
    # A killed writer's leftover goes once it is old; an in-flight one and final files stay.
    stale = tmp_path / f"{atomic.TMP_PREFIX}1-dead-row.parquet"
    fresh = tmp_path / f"{atomic.TMP_PREFIX}2-live-row.parquet"
    final = tmp_path / "row.parquet"
    for p in (stale, fresh, final):
        p.write_bytes(b"x")
    old = time.time() - 2 * atomic.STALE_AFTER_S
    os.utime(stale, (old, old))
    assert atomic.sweep(tmp_path) == 1
    assert not stale.exists() and fresh.exists() and final.exists()
