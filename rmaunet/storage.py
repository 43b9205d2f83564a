"""Where results live: a local folder, or an object store (s3://, gs://) through pyarrow.fs.

Ray Tune and Ray Train open their `storage_path` the same way (pyarrow.fs.FileSystem.from_uri),
so one `--storage` names the results store, Tune's experiment state and Ray Train's
checkpoints, and the same credentials reach all three: for S3 the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, an instance profile) and
AWS_ENDPOINT_URL for an S3-compatible server (MinIO, Ceph, moto); for GCS,
GOOGLE_APPLICATION_CREDENTIALS or the VM's service account.

An object store fails now and then in ways that pass: S3's 503 SlowDown, another 5xx, a
timeout, a dropped connection. Every call into it is tried again on such a failure, after
an exponentially growing, randomised pause (AWS's "full jitter"), a bounded number of times
(`RETRY_ATTEMPTS`, about 8 s of pauses on average at most); one that keeps failing is a
TransientStoreError, which a trial raises for Ray Tune to retry (never a recorded failure).
A missing object, a refused permission or an invalid request is never retried.

Writes are all-or-nothing for readers: an object is stored by one PUT, and a read checks
that it got one whole version of it (Storage._read_one_version); a local file is written
under a temporary name and renamed (rmaunet.atomic). Names starting with
rmaunet.atomic.TMP_PREFIX are never listed.

This module imports neither TensorFlow nor Ray.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rmaunet import atomic
from rmaunet.errors import StoreError, TransientStoreError

__all__ = ["Storage", "is_uri", "cache_root", "is_transient", "RETRY_ATTEMPTS"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Tries of one call into an object store, the first included; the pause before try n+1 is
# uniform in [0, min(_MAX_PAUSE_S, _FIRST_PAUSE_S * 2**(n-1))]: 0.25, 0.5, 1, 2, 4 s at most.
RETRY_ATTEMPTS = 6
_SDK_ATTEMPTS = 4  # the AWS SDK's own tries of each request within one of ours (pauses 25, 50, 100 ms)
_FIRST_PAUSE_S = 0.25
_TORN_READ_ATTEMPTS = 5  # reads of an object replaced while each is under way, before giving up
_MAX_PAUSE_S = 4.0
# How the AWS SDK under pyarrow words a failure that may pass (its error names, curl's, the
# HTTP status it got) ...
_TRANSIENT = re.compile(
    r"SLOW_?DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTL|REQUEST_TIME_?OUT|NETWORK_CONNECTION|"
    r"HTTP (status|response code:?) ?(5\d\d|408|429)|curlCode|connection (was )?(reset|closed|aborted|refused)|"
    r"timed? ?out|broken pipe|temporar",
    re.IGNORECASE,
)
# ... and one that will not: a missing bucket or key, a refused permission, a bad request.
_PERMANENT = re.compile(
    r"ACCESS_DENIED|NO_SUCH_(BUCKET|KEY|UPLOAD)|INVALID|FORBIDDEN|HTTP (status|response code:?) ?4(?!08|29)\d\d",
    re.IGNORECASE,
)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEMES = ("s3", "gs", "gcs", "file")


def is_uri(where: str | Path) -> bool:
    """True for `scheme://…` (an object store), False for a local or mounted path."""
    return isinstance(where, str) and bool(_URI.match(where))


def is_transient(exc: BaseException) -> bool:
    """True for a storage failure that may pass if tried again (a 5xx, a timeout, a dropped
    connection); False for one that repeats (missing, forbidden, invalid)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return not _PERMANENT.search(text) and bool(_TRANSIENT.search(text))


def cache_root() -> Path:
    """This node's own cache (staged datasets, trials in progress against an object store):
    RMAUNET_CACHE_DIR, else ~/.cache/rmaunet. Never shared between nodes."""
    return Path(os.environ.get("RMAUNET_CACHE_DIR") or Path.home() / ".cache" / "rmaunet")


class Storage:
    """A folder on a local / mounted file system or under an object-store URI.

    Paths given to its methods are relative to it, "/"-separated ("rows/demo/a.parquet").
    Every failure of the file system (unreachable endpoint, missing bucket, no permission)
    is a StoreError naming the URI.
    """

    def __init__(self, where: str | Path) -> None:
        import pyarrow.fs as pafs

        text = str(where)
        if not text.strip():
            # Path("") is the working directory: a store there would be a silent surprise.
            raise StoreError("the storage is an empty name: give a folder (. for this one), s3://… or gs://…")
        if is_uri(text):
            scheme, rest = text.split("://", 1)
            scheme = scheme.lower()
            if scheme not in _SCHEMES:
                raise StoreError(f"{text}: unsupported storage scheme {scheme!r} (use a folder, s3:// or gs://)")
            if scheme == "file":
                if not rest.strip("/"):
                    raise StoreError(f"{text}: names no folder (file:///path/to/store, or the path itself)")
                text = rest
            elif not rest.split("/", 1)[0]:
                raise StoreError(f"{text}: names no bucket ({scheme}://BUCKET/PREFIX)")
        if is_uri(text):
            try:
                self.fs, base = pafs.FileSystem.from_uri(text.rstrip("/"))
            except (OSError, ValueError) as exc:
                raise StoreError(f"{text}: cannot open this storage URI ({_one_line(exc)})") from None
            if isinstance(self.fs, pafs.S3FileSystem):
                # The same file system with fewer AWS SDK retries of each request (by default 10,
                # silent, pauses doubling from 25 ms to 13 s): a few quick ones, then this module's,
                # bounded, logged, and redoing a whole operation (a multipart upload included).
                options = self.fs.__reduce__()[1][0]  # its constructor's arguments (pickling's protocol)
                self.fs = pafs.S3FileSystem(**options, retry_strategy=pafs.AwsDefaultS3RetryStrategy(_SDK_ATTEMPTS))
            self.base = base.rstrip("/")
            self.uri = text.rstrip("/")
            self.local: Path | None = None
        else:
            self.local = _usable_folder(Path(text).expanduser())
            self.fs = pafs.LocalFileSystem()
            self.base = self.local.as_posix()
            self.uri = str(self.local)

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    @property
    def is_local(self) -> bool:
        return self.local is not None

    def child(self, *parts: str) -> Storage:
        """The storage folder `parts` below this one (same file system, same credentials)."""
        rel = "/".join(p.strip("/") for p in parts if p)
        child = object.__new__(Storage)
        child.fs = self.fs
        child.base = f"{self.base}/{rel}" if rel else self.base
        child.uri = f"{self.uri}/{rel}" if rel else self.uri
        child.local = self.local / rel if self.local is not None and rel else self.local
        return child

    def path(self, rel: str = "") -> str:
        """The file system's own path of `rel` (what pyarrow.fs calls take)."""
        return f"{self.base}/{rel.strip('/')}" if rel.strip("/") else self.base

    def uri_of(self, rel: str = "") -> str:
        """`rel` as a path or URI another program (Ray, pandas, the user) can open."""
        return f"{self.uri}/{rel.strip('/')}" if rel.strip("/") else self.uri

    # ------------------------------------------------------------------ reads
    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

        def read() -> bytes:
            with self.fs.open_input_stream(self.path(rel)) as stream:
                return stream.read()

        try:
            if not self.is_local:
                return self._retried("read", rel, lambda: self._read_one_version(rel, read))
            return self._retried("read", rel, read)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if self.is_local and self.local is not None and not (self.local / rel).exists():
                return None
            raise StoreError(f"{self.uri_of(rel)}: cannot read ({_one_line(exc)})") from None

    def _read_one_version(self, rel: str, read: Callable[[], bytes]) -> bytes:
        """`read()` of an object, checked to be one whole version of it.

        pyarrow reads an object as a HEAD (its size) and then GETs of byte ranges up to that
        size. An object replaced between the two (a checkpoint's state.json saved again while
        another process reads it) comes back cut to the old size, or short: parts of two
        versions' worth, never an error. So the size and modification time are looked up
        before and after the read, and the bytes kept only when both looks agree with each
        other and with what was read; otherwise the read is done again. What is left is a
        version written and replaced twice within the store's one-second clock, with the
        first one's size."""
        import pyarrow.fs as pafs

        path = self.path(rel)
        for _ in range(_TORN_READ_ATTEMPTS):
            before = self.fs.get_file_info(path)
            if before.type != pafs.FileType.File:
                raise FileNotFoundError(path)
            data = read()
            after = self.fs.get_file_info(path)
            if len(data) == before.size == after.size and before.mtime_ns == after.mtime_ns:
                return data
            log.info("rmaunet storage: %s changed while it was read; reading it again", self.uri_of(rel))
        raise TransientStoreError(
            f"{self.uri_of(rel)}: cannot read one whole version, replaced during each of {_TORN_READ_ATTEMPTS} reads"
        )

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type == pafs.FileType.File

    def files(self, rel: str = "", suffix: str = "") -> list[str]:
        """Names of the files directly in folder `rel` ending in `suffix`, sorted; never a
        temporary file; [] when the folder does not exist."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        try:
            infos = self._retried("list", rel, lambda: self.fs.get_file_info(selector))
        except OSError as exc:
            raise StoreError(f"{self.uri_of(rel)}: cannot list ({_one_line(exc)})") from None
        names = [i.base_name for i in infos if i.type == pafs.FileType.File]
        return sorted(n for n in names if n.endswith(suffix) and not atomic.is_temporary(n))

    def folders(self, rel: str = "") -> list[str]:
        """Names of the folders directly in `rel` (object stores: the common prefixes)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        try:
            infos = self._retried("list", rel, lambda: self.fs.get_file_info(selector))
        except OSError as exc:
            raise StoreError(f"{self.uri_of(rel)}: cannot list ({_one_line(exc)})") from None
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")
        )

    def walk(self, rel: str = "") -> list[tuple[str, int, int]]:
        """Every file below folder `rel`, at any depth, as ("/"-separated path relative to
        `rel`, size, mtime_ns), sorted; never a temporary file; [] when `rel` does not exist.
        A store without modification times gives 0."""
        import pyarrow.fs as pafs

        top = self.path(rel)
        selector = pafs.FileSelector(top, recursive=True)
        try:
            infos = self._retried("list", rel, lambda: self.fs.get_file_info(selector))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{self.uri_of(rel)}: cannot list ({_one_line(exc)})") from None
        return sorted(
            (i.path[len(top) + 1 :], i.size, i.mtime_ns or 0)
            for i in infos
            if i.type == pafs.FileType.File and not atomic.is_temporary(i.base_name)
        )

    def download(self, rel: str, target: Path) -> bool:
        """Copy the file to local `target` (atomically); False when it does not exist."""
        if self.is_local and self.local is not None:
            source = self.local / rel
            if not source.is_file():
                return False
            atomic.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
            return True
        data = self.read_bytes(rel)
        if data is None:
            return False
        atomic.write_bytes(target, data)
        return True

    # ------------------------------------------------------------------ writes
    def write_bytes(self, rel: str, data: bytes) -> str:
        """Store `data` at `rel` whole: readers see the old content or the new, never part."""
        if self.is_local and self.local is not None:
            try:
                return str(atomic.write_bytes(self.local / rel, data))
            except OSError as exc:  # read-only, a full disk, a file where a folder should be
                raise StoreError(f"{self.uri_of(rel)}: cannot write ({exc.strerror or _one_line(exc)})") from None

        def write() -> None:
            # One attempt is one whole PUT of `data`: a retry never continues a torn upload.
            with self.fs.open_output_stream(self.path(rel)) as stream:
                stream.write(data)

        try:
            self._retried("write", rel, write)
        except OSError as exc:
            raise StoreError(f"{self.uri_of(rel)}: cannot write ({_one_line(exc)})") from None
        return self.uri_of(rel)

    def upload(self, source: Path, rel: str) -> str:
        """Copy local file `source` to `rel`."""
        if self.is_local and self.local is not None:
            target = self.local / rel
            if Path(source).resolve() == target.resolve():
                return str(target)
            try:
                return str(atomic.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp)))
            except OSError as exc:
                raise StoreError(f"{self.uri_of(rel)}: cannot write ({exc.strerror or _one_line(exc)})") from None
        return self.write_bytes(rel, Path(source).read_bytes())

    def delete(self, rel: str) -> None:
        """Remove the file if it is there."""
        try:
            self._retried("delete", rel, lambda: self.fs.delete_file(self.path(rel)))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.is_local and self.local is not None and not (self.local / rel).exists():
                return
            raise StoreError(f"{self.uri_of(rel)}: cannot delete ({_one_line(exc)})") from None

    def delete_folder(self, rel: str) -> None:
        """Remove folder `rel` and everything in it (in an object store: every object under
        the prefix, and the empty marker pyarrow leaves when it deletes a folder's last file)."""
        try:
            self.fs.delete_dir(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.is_local and self.local is not None and not (self.local / rel).exists():
                return
            raise StoreError(f"{self.uri_of(rel)}: cannot delete ({_one_line(exc)})") from None

    def check_writable(self) -> None:
        """Fail now, in one line, when the store cannot be written (a missing bucket, no
        credentials, an unreachable endpoint), not after the first training."""
        self.write_bytes(".rmaunet-store", b"rmaunet results store\n")

    def _info(self, rel: str):  # noqa: ANN202 - pyarrow.fs.FileInfo
        try:
            return self._retried("read", rel, lambda: self.fs.get_file_info(self.path(rel)))
        except OSError as exc:
            raise StoreError(f"{self.uri_of(rel)}: cannot read ({_one_line(exc)})") from None

    def _retried(self, what: str, rel: str, call: Callable[[], T]) -> T:
        """`call` (one operation on the file system), tried again while an object store fails
        transiently (see the module's docstring). Any other OSError passes through for the
        caller to word; a transient failure that outlasts RETRY_ATTEMPTS is a TransientStoreError."""
        attempt = 1
        while True:
            try:
                return call()
            except OSError as exc:
                if self.is_local or not is_transient(exc):
                    raise
                if attempt >= RETRY_ATTEMPTS:
                    raise TransientStoreError(
                        f"{self.uri_of(rel)}: cannot {what}, still failing after {attempt} tries ({_one_line(exc)})"
                    ) from None
                pause = random.uniform(0, min(_MAX_PAUSE_S, _FIRST_PAUSE_S * 2 ** (attempt - 1)))
                log.warning(
                    "rmaunet storage: %s %s failed (%s); retry %d of %d in %.2f s",
                    what,
                    self.uri_of(rel),
                    _one_line(exc),
                    attempt,
                    RETRY_ATTEMPTS - 1,
                    pause,
                )
                time.sleep(pause)
                attempt += 1


def _usable_folder(path: Path) -> Path:
    """`path` made absolute, or a StoreError when it can never be a store folder: a file,
    a path under a file, a name longer than the file system allows."""
    try:
        local = path.resolve()
        ancestor = local
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            where = "is not a folder" if ancestor == local else f"is under {ancestor}, which is not a folder"
            raise StoreError(f"{path}: {where}; the store must be a folder")
    except OSError as exc:  # a name too long, a link loop
        raise StoreError(f"{path}: cannot be a store folder ({exc.strerror or _one_line(exc)})") from None
    return local


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]
