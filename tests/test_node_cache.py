"""This node's bounded cache: least recently used out first, never an entry in use; `rmaunet cache`."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from rmaunet import node_cache
from rmaunet.cli import main
from rmaunet.errors import ConfigError

FP = "0123456789abcdef"


def _entry(folder: Path, size: int, last_used: float) -> Path:
    """An entry folder holding `size` bytes, last used at `last_used` (its lock file's time)."""
    folder.mkdir(parents=True)
    (folder / "payload").write_bytes(b"x" * size)
    lock = node_cache.lock_of(folder)
    lock.touch()
    for path in (folder, lock):
        os.utime(path, (last_used, last_used))
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """One entry of each kind, oldest first: a dataset, a band cache, a trial copy, a killed trial's work folder."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(root))
    now = time.time()
    return {
        "dataset": _entry(root / "data" / FP, 400, now - 400),
        "bands": _entry(root / f"landslide4sense-{FP}-v1", 300, now - 300),
        "trial": _entry(root / "stores" / "s1" / "trials" / "t1", 200, now - 200),
        "work": _entry(root / "stores" / "s1" / "work" / "t2", 100, now - 100),
    }


@pytest.mark.parametrize(
    ("text", "size"), [("20GB", 20 * 10**9), ("500m", 500 * 10**6), ("1.5TiB", int(1.5 * 2**40)), ("4096", 4096)]
)
def test_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert node_cache.parse_size(text) == size


def test_a_size_that_is_not_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'20 parsecs' is not a size"):
        node_cache.parse_size("20 parsecs")


def test_entries_are_listed_least_recently_used_first(cache: dict[str, Path]) -> None:
    listed = node_cache.entries()
    assert [(e.kind, e.path, e.size) for e in listed] == [
        ("dataset", cache["dataset"], 400),
        ("bands", cache["bands"], 300),
        ("trial", cache["trial"], 200),
        ("work", cache["work"], 100),
    ]
    assert not any(e.in_use for e in listed)


def test_prune_removes_abandoned_work_then_the_least_recently_used_until_under_the_cap(cache: dict[str, Path]) -> None:
    # 1000 bytes, cap 450: the killed trial's work folder goes whatever its age, then the oldest entries.
    removed = node_cache.prune(450)
    assert [e.kind for e in removed] == ["work", "dataset", "bands"]
    assert [e.path for e in node_cache.entries()] == [cache["trial"]]
    assert not node_cache.lock_of(cache["dataset"]).exists()
    assert not any(p.name.startswith(".tmp-") for p in cache["dataset"].parent.iterdir())


def test_entries_in_use_are_never_removed(cache: dict[str, Path]) -> None:
    # A pinned dataset (a trial reading it) and a held work folder (a trial training in it) survive a prune to 0.
    node_cache.pin(cache["dataset"])
    held = node_cache.Hold(node_cache.lock_of(cache["work"]), shared=False)
    try:
        assert {e.kind for e in node_cache.entries() if e.in_use} == {"dataset", "work"}
        assert {e.kind for e in node_cache.prune(0)} == {"bands", "trial"}
        assert cache["dataset"].is_dir() and cache["work"].is_dir()
    finally:
        held.release()
        node_cache.unpin(cache["dataset"])
    assert {e.kind for e in node_cache.prune(0)} == {"dataset", "work"}


def test_a_pin_marks_the_last_use(cache: dict[str, Path]) -> None:
    node_cache.pin(cache["dataset"])  # the oldest becomes the newest
    try:
        assert [e.kind for e in node_cache.entries()][-1] == "dataset"
        assert [e.kind for e in node_cache.prune(450)] == ["work", "bands", "trial"]
    finally:
        node_cache.unpin(cache["dataset"])


def test_a_holder_that_waited_on_a_removed_lock_file_locks_the_new_one(tmp_path: Path) -> None:
    # A remover unlinks the lock file under its lock: the waiter must not end up holding the unlinked file.
    lock = tmp_path / "entry.lock"
    remover = node_cache.Hold(lock, shared=False)
    got: list[node_cache.Hold] = []
    waiter = threading.Thread(target=lambda: got.append(node_cache.Hold(lock, shared=False)))
    waiter.start()
    time.sleep(0.3)  # the waiter is blocked on the old file now
    lock.unlink()
    remover.release()
    waiter.join(timeout=10)
    assert got and os.fstat(got[0].handle.fileno()).st_ino == os.stat(lock).st_ino
    got[0].release()


def test_cache_info_and_prune_on_the_command_line(cache: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("1.0 KB in 4 entries (cap 20.0 GB)")
    assert str(cache["dataset"]) in out and str(cache["work"]) in out
    assert main(["cache", "prune", "--max-size", "450B", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "would remove 3 entries (800 B); 200 B left"
    assert all(path.is_dir() for path in cache.values())
    assert main(["cache", "prune", "--max-size", "450B"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "removed 3 entries (800 B); 200 B left"
    assert [p for p in cache.values() if p.is_dir()] == [cache["trial"]]


def test_a_bad_max_size_is_one_line_and_exit_2(cache: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--max-size", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rmaunet: error: 'lots' is not a size") and err.count("\n") == 1
    assert all(path.is_dir() for path in cache.values())
