"""What a local data folder may hold before anything fingerprints or reads it: folders and regular files.

A dangling link, a link loop, a FIFO, a device, a socket or a folder this user cannot list
would otherwise surface as a traceback in the fingerprint's walk, a reader blocked on a
FIFO forever, or a folder silently left out of the fingerprint (os.walk skips what it
cannot list). `check_data_folder` walks the folder once and refuses the first such entry
in one DataError naming it. A data folder on a pseudo file system (/proc, /sys, /dev) is
refused outright: its files change while they are read and their sizes are not their
contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rmaunet.data.cache import CACHE_DIR_NAME
from rmaunet.errors import DataError

__all__ = ["check_data_folder", "PSEUDO_FILE_SYSTEMS"]

PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_data_folder(root: Path | str) -> int:
    """Refuse (DataError) a data folder holding anything but folders and regular files
    (links to them are fine); return the number of files. The band cache folder is skipped."""
    root = Path(root)
    resolved = root.resolve()
    for pseudo in PSEUDO_FILE_SYSTEMS:
        if resolved == pseudo or pseudo in resolved.parents:
            raise DataError(f"{root}: a data folder on {pseudo} (a pseudo file system) is not a dataset")
    if not stat.S_ISDIR(_mode(root)):
        raise DataError(f"{root}: not a folder")

    def unlistable(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: cannot list this data folder ({exc.strerror or exc})")

    files = 0
    for folder, dirs, names in os.walk(root, onerror=unlistable):
        dirs[:] = [d for d in dirs if d != CACHE_DIR_NAME]
        for name in (*dirs, *names):
            mode = _mode(Path(folder) / name)
            if stat.S_ISREG(mode):
                files += 1
            elif not stat.S_ISDIR(mode):
                raise DataError(f"{Path(folder) / name}: {_kind(mode)} in the data folder (only files and folders)")
    return files


def _mode(path: Path) -> int:
    """The mode of what `path` names, links followed; a DataError for a broken link or loop."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            raise DataError(f"{path}: data folder not found") from None
        raise DataError(f"{path}: a broken link in the data folder (it points nowhere)") from None
    except OSError as exc:
        broken = "a broken link" if path.is_symlink() else "cannot be read"
        raise DataError(f"{path}: {broken} in the data folder ({exc.strerror or exc})") from None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
