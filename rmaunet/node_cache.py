"""This node's cache, bounded: entries evicted least recently used first, never one in use.

The cache (`rmaunet.storage.cache_root()`: $RMAUNET_CACHE_DIR or ~/.cache/rmaunet) holds
entries of four kinds, each a folder with a lock file beside it (`<folder>.lock`):

    data/<fingerprint>/                 a dataset staged from an object store (rmaunet.data.staging)
    <dataset>-<fingerprint>-v<N>/       decoded tiles and engineered bands (rmaunet.data.cache)
    stores/<store>/trials/<trial_id>/   a finished trial's files, fetched to score it (rmaunet.store)
    stores/<store>/work/<trial_id>/     a trial training against an object store (rmaunet.store)

A process that uses an entry holds a shared lock on its lock file for as long as it lives
(`pin`; the OS drops it when the process dies), a training holds an exclusive one on its
work folder (`Hold`), and whoever creates an entry holds an exclusive one while writing it.
Eviction takes the exclusive lock without waiting and skips the entry when it cannot, so it
never removes what a live process reads, writes or trains in; a work folder nobody holds
is a killed trial's, useless (a trial resumes from the store's checkpoint) and removed
whatever its age. An entry's last use is its lock file's modification time, touched by
every pin.

The size cap is $RMAUNET_CACHE_MAX_SIZE (default 20GB), enforced after each staging and
trial, and on demand by `rmaunet cache prune`. Imports neither TensorFlow nor Ray.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from rmaunet import atomic
from rmaunet.errors import ConfigError
from rmaunet.storage import cache_root

__all__ = [
    "Entry",
    "Hold",
    "pin",
    "unpin",
    "entries",
    "prune",
    "enforce_cap",
    "sweep_abandoned",
    "parse_size",
    "max_size",
    "lock_of",
    "DEFAULT_MAX_SIZE",
]

DEFAULT_MAX_SIZE = "20GB"
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BAND_ENTRY = re.compile(r"^.+-[0-9a-f]{16}-v\d+$")


@dataclass(frozen=True)
class Entry:
    kind: str  # dataset | bands | trial | work
    path: Path
    size: int  # bytes
    last_used: float  # POSIX time
    in_use: bool


def lock_of(folder: Path) -> Path:
    """The lock file of an entry folder."""
    return folder.with_name(f"{folder.name}.lock")


class Hold:
    """A lock on `path` (created if need be) held until `release()` or this process ends.

    A remover unlinks an entry's lock file while holding it exclusively; a holder that
    waited on the unlinked file would hold nothing, so it checks, once it has the lock,
    that the path still names the file it locked, and locks again if not.
    """

    def __init__(self, path: Path, *, shared: bool, wait: bool = True) -> None:
        """Raises BlockingIOError when `wait` is False and another process holds the lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        while True:
            handle = open(path, "a")  # noqa: SIM115 - held past this call, closed by release()
            try:
                fcntl.flock(handle, mode)
            except BlockingIOError:
                handle.close()
                raise
            try:
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        self.path, self.handle = path, handle
        os.utime(path)  # the entry's last use

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


_pins: dict[Path, Hold] = {}


def pin(folder: Path) -> None:
    """Mark entry `folder` in use by this process until it ends (a shared lock)."""
    lock = lock_of(folder)
    if lock not in _pins:
        _pins[lock] = Hold(lock, shared=True)
    else:
        os.utime(lock)


def unpin(folder: Path) -> None:
    held = _pins.pop(lock_of(folder), None)
    if held is not None:
        held.release()


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry of the cache under `root` (default: this node's), least recently used first."""
    root = Path(root) if root is not None else cache_root()
    found = [("dataset", p) for p in _folders(root / "data")]
    found += [("bands", p) for p in _folders(root) if _BAND_ENTRY.match(p.name)]
    for store in _folders(root / "stores"):
        found += [("trial", p) for p in _folders(store / "trials")]
        found += [("work", p) for p in _folders(store / "work")]
    out = [Entry(kind, path, _size(path), _last_used(path), _in_use(path)) for kind, path in found]
    return sorted(out, key=lambda e: (e.last_used, str(e.path)))


def prune(max_bytes: int, root: Path | None = None, *, dry_run: bool = False) -> list[Entry]:
    """Remove abandoned work folders, then entries least recently used first until the
    cache holds at most `max_bytes`; entries in use stay. Returns what was (or, with
    `dry_run`, would be) removed."""
    listed = entries(root)
    total = sum(e.size for e in listed)
    removed = []
    for entry in sorted(listed, key=lambda e: (e.kind != "work", e.last_used)):
        if entry.kind != "work" and total <= max_bytes:
            break
        if _remove(entry.path, dry_run=dry_run):
            total -= entry.size
            removed.append(entry)
    return removed


def enforce_cap(root: Path | None = None) -> None:
    """Prune the cache under `root` (default: this node's) to its cap ($RMAUNET_CACHE_MAX_SIZE);
    one that cannot be pruned (a bad setting, a read-only disk) is left as it is rather
    than failing a trial."""
    with contextlib.suppress(OSError, ConfigError):
        prune(max_size(), root)


def sweep_abandoned(folder: Path) -> int:
    """Remove the folders in `folder` (work folders) that no live process holds; how many."""
    return sum(_remove(path) for path in _folders(folder))


def max_size() -> int:
    return parse_size(os.environ.get("RMAUNET_CACHE_MAX_SIZE") or DEFAULT_MAX_SIZE)


def parse_size(text: str) -> int:
    """Bytes from "20GB", "500M", "1.5TiB", "4096" (decimal units; "iB" binary ones)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", text.upper())
    if not match:
        raise ConfigError(f"{text!r} is not a size (say 20GB, 500MB, 1.5TiB or a number of bytes)")
    number, unit, binary = match.groups()
    scale = 1024 ** "_KMGT".index(unit) if binary and unit else _UNITS[unit]
    return int(float(number) * scale)


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(
            p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and not atomic.is_temporary(p.name)
        )
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size(folder: Path) -> int:
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # removed while being counted
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _last_used(folder: Path) -> float:
    times = []
    for path in (lock_of(folder), folder):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def _in_use(folder: Path) -> bool:
    lock = lock_of(folder)
    if not lock.exists():
        return False
    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    return False


def _remove(folder: Path, *, dry_run: bool = False) -> bool:
    """Remove entry `folder` and its lock file unless a live process holds the lock."""
    if dry_run:
        return not _in_use(folder)
    lock = lock_of(folder)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Out of sight first: a half-removed folder must never pass for a complete entry.
        doomed = folder.with_name(f"{atomic.TMP_PREFIX}{secrets.token_hex(4)}-{folder.name}")
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        lock.unlink(missing_ok=True)  # under the lock: a waiting holder sees it and locks again
        return True
