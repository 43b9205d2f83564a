"""A dataset's fingerprint: one hash over its files' paths, sizes and content identities.

Identical files give the same fingerprint wherever and whenever they were copied, so a
dataset synced again (new modification times, same bytes) reuses every trial trained on
it. A file's content identity is:

- a local file: the SHA-256 of its bytes. Hashing a large dataset on every plan would be
  slow, so the digests are kept where the band cache of that folder lives
  (rmaunet.data.cache.cache_root: `digests-<folder>.json`), keyed by each file's path,
  size and modification time: planning again hashes only the files that changed;
- an object (rmaunet.data.staging): its ETag, which S3 lists with every object (the MD5
  of a single-part upload; of its parts' MD5s for a multipart one). A store without ETags
  in its listing (gs://, or S3 without boto3) falls back to the object's modification time;
- a staged copy of objects: the identities of the objects it was copied from, recorded in
  the copy's manifest (`.rmaunet-cache/objects.json`) and trusted while each file keeps
  the size and modification time the manifest gives it.

So a staged copy has its URI's fingerprint, but a local copy of the same objects has a
fingerprint of its own (an ETag is not a SHA-256): the two train separately.

Only regular files are data: anything else under the folder (a FIFO, a device, a dangling
link) is a DataError rather than a read that blocks or a file silently left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from rmaunet import atomic
from rmaunet.data.cache import CACHE_DIR_NAME, cache_root
from rmaunet.errors import DataError

__all__ = ["fingerprint", "fingerprint_of", "write_manifest", "MANIFEST", "Entry"]

MANIFEST = f"{CACHE_DIR_NAME}/objects.json"

# (relative path, size, content identity: "sha256:…", "etag:…" or "mtime:…")
Entry = tuple[str, int, str]


def fingerprint(root: Path | str, dataset: str) -> str:
    """The fingerprint of the data files under folder `root` (see the module's docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    files = _regular_files(root)
    if not files:
        raise DataError(f"{root}: no data files found")
    staged = _manifest(root)
    digests = _DigestCache(root)
    entries: list[Entry] = []
    for rel, path, st in files:
        known = staged.get(rel)
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            entries.append((rel, st.st_size, known[2]))
        else:
            entries.append((rel, st.st_size, digests.identity(rel, path, st)))
    digests.save(kept=[rel for rel, _, _ in files])
    return fingerprint_of(dataset, entries)


def fingerprint_of(dataset: str, entries: Iterable[Entry]) -> str:
    """The fingerprint of a dataset's files given as (relative path, size, identity): what
    `fingerprint` computes from a folder and rmaunet.data.staging from an object listing."""
    h = hashlib.sha256(dataset.encode())
    for rel, size, identity in sorted(entries):
        h.update(f"{rel}\0{size}\0{identity}\n".encode())
    return h.hexdigest()[:16]


def write_manifest(root: Path, entries: Iterable[Entry]) -> None:
    """Record, in a staged copy `root`, the identities of the objects its files came from."""
    records = []
    for rel, size, identity in entries:
        st = (root / rel).stat()
        records.append([rel, size, st.st_mtime_ns, identity])
    atomic.write_json(root / MANIFEST, records)


def _regular_files(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != CACHE_DIR_NAME]
        for name in names:
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError as exc:  # a dangling link, a link loop, no permission
                raise DataError(f"{path}: cannot read this data file ({exc.strerror})") from None
            if not stat.S_ISREG(st.st_mode):
                raise DataError(f"{path}: not a regular file (a FIFO, a device or a socket is never data)")
            found.append((path.relative_to(root).as_posix(), path, st))
    return found


def _manifest(root: Path) -> dict[str, tuple[int, int, str]]:
    try:
        records = json.loads((root / MANIFEST).read_text())
        return {rel: (int(size), int(mtime_ns), str(identity)) for rel, size, mtime_ns, identity in records}
    except (OSError, ValueError, TypeError):  # none (not a staged copy), or unreadable: hash the files
        return {}


class _DigestCache:
    """SHA-256 digests this node computed for one data folder, by (path, size, mtime_ns)."""

    def __init__(self, root: Path) -> None:
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        folder = cache_root(root)  # None: caching is off, every plan hashes every file
        self.path = None if folder is None else folder / f"digests-{key}.json"
        try:
            self.known: dict[str, list] = json.loads(self.path.read_text()) if self.path is not None else {}
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def identity(self, rel: str, path: Path, st: os.stat_result) -> str:
        cached = self.known.get(rel)
        if isinstance(cached, list) and cached[:2] == [st.st_size, st.st_mtime_ns]:
            return str(cached[2])
        try:
            with open(path, "rb") as f:
                digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise DataError(f"{path}: cannot read this data file ({exc.strerror})") from None
        self.known[rel] = [st.st_size, st.st_mtime_ns, digest]
        self.changed = True
        return digest

    def save(self, kept: list[str]) -> None:
        """Write the digests of the files `kept` (the folder's files now), if any changed."""
        if self.path is None or (not self.changed and set(self.known) <= set(kept)):
            return  # caching off, or nothing new and nothing gone
        self.known = {rel: self.known[rel] for rel in kept if rel in self.known}
        try:
            atomic.write_json(self.path, self.known, indent=None)
        except OSError:  # a read-only home: the digests are computed again next time
            pass
