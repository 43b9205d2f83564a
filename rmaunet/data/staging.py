"""Data on every node: a dataset under an object-store URI (s3://, gs://) is copied once
into this node's own cache and read from there.

`stage(uri, dataset, fingerprint)` gives the folder `cache_root()/data/<fingerprint>/`
holding a complete copy. The copy is downloaded into a temporary sibling folder and renamed
into place, so the folder is complete or absent; a file lock beside it makes the trials of
one node (separate processes) download it once, the others waiting and then reusing it.

The fingerprint of a URI (`remote_fingerprint`) is computed from one listing of its
objects (relative path, size and ETag; rmaunet.data.fingerprint), so objects uploaded
again with the same bytes keep it. The staged copy records those identities in its
manifest and so has the fingerprint the study was planned with: the band cache and the
results rows keyed by it are the same on every node.

The copy is an entry of this node's bounded cache (rmaunet.node_cache): every process that
uses it pins it, and the cache is pruned to its cap after each new copy.

Every failure is one DataError naming the node, the URI and the cause. Imports no Ray.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rmaunet import atomic, node_cache, s3_api
from rmaunet.data.cache import CACHE_DIR_NAME
from rmaunet.data.fingerprint import Entry, fingerprint_of, write_manifest
from rmaunet.data.fingerprint import fingerprint as local_fingerprint
from rmaunet.errors import DataError, RmaunetError, TransientStoreError
from rmaunet.storage import Storage, cache_root, is_uri

__all__ = ["remote_fingerprint", "stage", "local_data", "node_label"]

log = logging.getLogger(__name__)

# Objects fetched at once: a dataset is thousands of small files, each a round trip.
_PARALLEL_DOWNLOADS = 16
_POLL_S = 0.2  # how often a process waiting for another's download looks for the copy


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
    try:
        while True:
            if not target.is_dir():  # published by rename: present means complete
                _stage_once(uri, dataset, fingerprint, folder, target)
            node_cache.pin(target)
            if target.is_dir():
                break
            node_cache.unpin(target)  # evicted between the staging and the pin: stage again
    except OSError as exc:  # this node's disk: full, read-only
        raise DataError(f"node {node_label()}: cannot stage {uri} into {folder} ({exc})") from None
    return target


def _stage_once(uri: str, dataset: str, fingerprint: str, folder: Path, target: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            hold = node_cache.Hold(node_cache.lock_of(target), shared=False, wait=False)
            break
        except BlockingIOError:
            # Another process of this node is staging it, or staged it and keeps it pinned
            # for as long as it lives: wait for the copy, not for the lock.
            if target.is_dir():
                return
            time.sleep(_POLL_S)
    try:
        if target.is_dir():  # published between the check and the lock
            return
        _sweep(folder, fingerprint)
        temporary = folder / f"{atomic.TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{fingerprint}"
        try:
            _download(uri, dataset, fingerprint, temporary)
            os.rename(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    finally:
        hold.release()
    node_cache.enforce_cap(folder.parent)


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

    def fetch(entry: Entry) -> None:
        rel = entry[0]
        target = temporary / rel
        try:
            present = storage.download(rel, target)
        except TransientStoreError:
            raise  # the store's passing trouble, not the data's: the trial errors and Tune retries it
        except RmaunetError as exc:
            raise DataError(f"node {node_label()}: {exc}") from None
        if not present:
            raise DataError(f"node {node_label()}: {storage.uri_of(rel)}: deleted while staging {uri}")

    temporary.mkdir()
    with ThreadPoolExecutor(_PARALLEL_DOWNLOADS) as pool:
        list(pool.map(fetch, entries))
    write_manifest(temporary, entries)  # the objects' identities: the copy's fingerprint is the listing's
    if local_fingerprint(temporary, dataset) != fingerprint or _listing(storage, uri) != entries:
        raise DataError(f"node {node_label()}: {uri}: the data changed while it was being staged; try again")


def _open(uri: str) -> Storage:
    try:
        return Storage(uri)
    except RmaunetError as exc:
        raise DataError(f"node {node_label()}: {exc}") from None


def _listing(storage: Storage, uri: str) -> list[Entry]:
    """The dataset's objects as `fingerprint_of` takes them, identified by their ETags where
    the store lists them (S3 through boto3), else by their modification times; the band
    cache folder left out."""
    try:
        if s3_api.available(uri):
            files = [(rel, size, f"etag:{etag}") for rel, size, etag in s3_api.list_etags(uri)]
        else:
            files = [(rel, size, f"mtime:{mtime_ns}") for rel, size, mtime_ns in storage.walk()]
    except TransientStoreError:
        raise  # the store's passing trouble, not the data's
    except RmaunetError as exc:
        raise DataError(f"node {node_label()}: {exc}") from None
    entries = [entry for entry in files if CACHE_DIR_NAME not in entry[0].split("/")[:-1]]
    if not entries:
        raise DataError(f"node {node_label()}: {uri}: no data files there (a missing or empty prefix)")
    return entries


def _sweep(folder: Path, fingerprint: str) -> None:
    """Remove the partial copies of dead stagers: under the lock, no live one is writing."""
    for leftover in folder.glob(f"{atomic.TMP_PREFIX}*-{fingerprint}"):
        shutil.rmtree(leftover, ignore_errors=True)
