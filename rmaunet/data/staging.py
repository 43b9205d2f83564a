"""Data on every node: a dataset under an object-store URI (s3://, gs://) is copied once
into this node's own cache and read from there.

`stage(uri, dataset, fingerprint)` gives the folder `cache_root()/data/<fingerprint>/`
holding a complete copy. The copy is downloaded into a temporary sibling folder and renamed
into place, so the folder is complete or absent; a file lock beside it makes the trials of
one node (separate processes) download it once, the others waiting and then reusing it.

The fingerprint of a URI (`remote_fingerprint`) is computed from a listing of its objects
(relative path, size, modification time) exactly as `rmaunet.data.fingerprint` computes it
from a folder: the staged files get their objects' modification times, so the staged copy
has the fingerprint the study was planned with, and the band cache and results rows keyed
by it are the same on every node and for a local copy of the same files.

Every failure is one DataError naming the node, the URI and the cause. Imports no Ray.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rmaunet import atomic
from rmaunet.data.cache import CACHE_DIR_NAME
from rmaunet.data.prepare import fingerprint as local_fingerprint
from rmaunet.data.prepare import fingerprint_of
from rmaunet.errors import DataError, RmaunetError, TransientStoreError
from rmaunet.storage import Storage, cache_root, is_uri

__all__ = ["remote_fingerprint", "stage", "local_data", "node_label"]

log = logging.getLogger(__name__)

# Objects fetched at once: a dataset is thousands of small files, each a round trip.
_PARALLEL_DOWNLOADS = 16


def node_label() -> str:
    """This host, and its Ray node id when Ray is already running in this process (several
    simulated nodes share one host name)."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{host}/{ray.get_runtime_context().get_node_id()[:8]}"
    return host


def remote_fingerprint(uri: str, dataset: str) -> str:
    """The fingerprint `rmaunet.data.fingerprint` gives the staged copy of `uri`, from one listing."""
    return fingerprint_of(dataset, _listing(_open(uri), uri))


def stage(uri: str, dataset: str, fingerprint: str, *, cache: Path | str | None = None) -> Path:
    """This node's complete copy of the dataset at `uri`, downloaded on first use.

    `fingerprint` is what the study was planned with (`remote_fingerprint`); data that no
    longer has it, before or after the download, is a DataError rather than a copy whose
    results would be filed under the wrong fingerprint.
    """
    folder = Path(cache if cache is not None else cache_root()) / "data"
    target = folder / fingerprint
    if target.is_dir():  # published by rename: present means complete
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / f"{fingerprint}.lock"):
            if target.is_dir():  # another process of this node staged it while this one waited
                return target
            _sweep(folder, fingerprint)
            temporary = folder / f"{atomic.TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{fingerprint}"
            try:
                _download(uri, dataset, fingerprint, temporary)
                os.rename(temporary, target)
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
    except OSError as exc:  # this node's disk: full, read-only
        raise DataError(f"node {node_label()}: cannot stage {uri} into {folder} ({exc})") from None
    return target


def local_data(data: str | Path, dataset: str, fingerprint: str) -> Path:
    """The folder a trial reads: a URI staged into this node's cache, a path as it is."""
    if is_uri(data):
        return stage(str(data), dataset, fingerprint)
    return Path(data)


def _download(uri: str, dataset: str, fingerprint: str, temporary: Path) -> None:
    storage = _open(uri)
    entries = _listing(storage, uri)
    found = fingerprint_of(dataset, entries)
    if found != fingerprint:
        raise DataError(
            f"node {node_label()}: {uri}: the data changed since the study was planned "
            f"(fingerprint {found}, planned {fingerprint}); plan the study again"
        )
    log.info("staging %s (%d files) into %s", uri, len(entries), temporary.parent / fingerprint)

    def fetch(entry: tuple[str, int, int]) -> None:
        rel, _, mtime_ns = entry
        target = temporary / rel
        try:
            present = storage.download(rel, target)
        except TransientStoreError:
            raise  # the store's passing trouble, not the data's: the trial errors and Tune retries it
        except RmaunetError as exc:
            raise DataError(f"node {node_label()}: {exc}") from None
        if not present:
            raise DataError(f"node {node_label()}: {storage.uri_of(rel)}: deleted while staging {uri}")
        # The object's time, so the copy's fingerprint is the listing's (see the module doc).
        os.utime(target, ns=(mtime_ns, mtime_ns))

    temporary.mkdir()
    with ThreadPoolExecutor(_PARALLEL_DOWNLOADS) as pool:
        list(pool.map(fetch, entries))
    if local_fingerprint(temporary, dataset) != fingerprint or _listing(storage, uri) != entries:
        raise DataError(f"node {node_label()}: {uri}: the data changed while it was being staged; try again")


def _open(uri: str) -> Storage:
    try:
        return Storage(uri)
    except RmaunetError as exc:
        raise DataError(f"node {node_label()}: {exc}") from None


def _listing(storage: Storage, uri: str) -> list[tuple[str, int, int]]:
    """The dataset's files as `fingerprint` sees them: the band cache folder left out."""
    try:
        files = storage.walk()
    except TransientStoreError:
        raise  # the store's passing trouble, not the data's
    except RmaunetError as exc:
        raise DataError(f"node {node_label()}: {exc}") from None
    entries = [entry for entry in files if CACHE_DIR_NAME not in entry[0].split("/")[:-1]]
    if not entries:
        raise DataError(f"node {node_label()}: {uri}: no data files there (a missing or empty prefix)")
    return entries


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released by the OS too when the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep(folder: Path, fingerprint: str) -> None:
    """Remove the partial copies of dead stagers: under the lock, no live one is writing."""
    for leftover in folder.glob(f"{atomic.TMP_PREFIX}*-{fingerprint}"):
        shutil.rmtree(leftover, ignore_errors=True)
