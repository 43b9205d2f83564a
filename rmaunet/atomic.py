"""One way to write a file: into a unique temporary name beside it, then rename over it.

Readers see the old file or the new one, never half of one; a writer killed mid-write
leaves only a temporary file, which `is_temporary` lets every reader skip and `sweep`
removes once it is old. Every file gets the same permissions a plain `open()` would
give it (0666 less the umask), so the other users of a shared results store can read
what one of them wrote: `tempfile.mkstemp` alone would leave it 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_bytes", "write_text", "write_json", "is_temporary", "sweep", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
# How old a temporary file must be before `sweep` takes it for a dead writer's leftover.
STALE_AFTER_S = 3600.0


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write(path: Path | str, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) on a unique temporary path beside `path`, then rename it into place.

    The temporary name keeps the final name as its suffix, so writers that insist on an
    extension (Keras's `.weights.h5`, NumPy's `.npz`) accept it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path | str, payload: Any, *, indent: int | None = 1, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def is_temporary(path: Path | str) -> bool:
    """True for an in-flight (or a dead writer's) temporary file: never a result."""
    return Path(path).name.startswith(TMP_PREFIX)


def sweep(folder: Path | str, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete the temporary files a killed writer left in `folder`; returns how many."""
    removed = 0
    cutoff = time.time() - older_than_s
    for tmp in Path(folder).glob(f"{TMP_PREFIX}*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # another process swept it first
    return removed
