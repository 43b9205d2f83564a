"""On-disk cache of decoded tiles and engineered bands, memory-mapped by every trial.

Reading thousands of HDF5 / PNG files and computing the 10×10 filters of Table V is the
slow part of a trial's start; both depend only on the files, so they are done once per
(dataset fingerprint, split, tile limit) and kept as `.npy` files that later runs (and
the other trials of a node) map read-only. Layout::

    CACHE/<dataset>-<fingerprint>-v<format>/<split>[-first<N>][-without-<channel>…]/
        originals.npy   (N, H, W, C) float32, the channels the reader read, non-finite values replaced
        masks.npy       (N, H, W) uint8, when every tile has a mask
        meta.json       paths, band names, replaced-pixel count
        band-<name>.npy (N, H, W) float32, one per engineered band, made on first use

CACHE is `$RMAUNET_CACHE_DIR` if set (`off` disables caching), else `.rmaunet-cache`
inside the data folder when it is writable (the fingerprint ignores it), else
`~/.cache/rmaunet`. A changed data file changes the fingerprint, so a stale entry is
never read. Writers take a file lock and publish with an atomic rename, so concurrent
trials on a node compute each entry once and never see half-written files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rmaunet import node_cache
from rmaunet.data.bands import ENGINEERED, engineer_bands
from rmaunet.data.reader import LoadedSplit, TileReader
from rmaunet.errors import DataError

__all__ = ["CACHE_DIR_NAME", "cache_root", "CachedSplit"]

CACHE_DIR_NAME = ".rmaunet-cache"
_FORMAT = 1  # bump when the stored layout or a band's definition changes
_BATCH = 256  # tiles engineered at a time
_STACK = 16  # tiles interleaved into the model's channel-last array at a time


def cache_root(data_root: Path | str) -> Path | None:
    """Where the cache for this data folder lives, created if need be (None: caching is off)."""
    configured = os.environ.get("RMAUNET_CACHE_DIR", "").strip()
    if configured.lower() in ("off", "none", "0", "false"):
        return None
    if configured:
        return Path(configured).expanduser()
    beside = Path(data_root) / CACHE_DIR_NAME
    try:
        # A folder without write permission bits is meant read-only, even to root.
        if beside.is_dir() or Path(data_root).stat().st_mode & 0o222:
            beside.mkdir(exist_ok=True)
            if os.access(beside, os.W_OK):
                return beside
    except OSError:  # a read-only mount
        pass
    return Path.home() / ".cache" / "rmaunet"


class CachedSplit:
    """One split of a dataset: originals and masks, plus any engineered band on demand."""

    def __init__(self, reader: TileReader, fingerprint: str, limit: int | None) -> None:
        self.reader = reader
        self.dataset = reader.dataset
        root = cache_root(reader.root)
        suffix = f"-random{limit}" if limit is not None else ""  # TileReader.subset
        # A reader that leaves out opt-in channels (Bijie without its DEM) stores fewer of them.
        suffix += "".join(f"-without-{b}" for b in reader.info.bands if b not in reader.band_names)
        self.dir = (
            None if root is None else root / f"{self.dataset}-{fingerprint}-v{_FORMAT}" / f"{reader.split}{suffix}"
        )
        if self.dir is not None:
            # An entry of the node's bounded cache: in use while this process lives
            # (rmaunet.node_cache). Unpinnable (a read-only cache) means unwritable: said below.
            with contextlib.suppress(OSError):
                node_cache.pin(self.dir.parent)
        self.limit = limit
        self._memory: dict[str, np.ndarray] = {}
        loaded = self._originals()
        self.images: np.ndarray = loaded.images
        self.masks: np.ndarray | None = loaded.masks
        self.paths: list[Path] = loaded.paths
        self.nan_pixels: int = loaded.nan_pixels
        self.nan_files: list[Path] = loaded.nan_files

    # ------------------------------------------------------------------ originals
    def _originals(self) -> LoadedSplit:
        if self.dir is None:
            return self.reader.load(self.limit)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            with _locked(self.dir):
                if not meta_path.is_file():
                    loaded = self.reader.load(self.limit)
                    _save(self.dir / "originals.npy", loaded.images)
                    if loaded.masks is not None:
                        _save(self.dir / "masks.npy", loaded.masks)
                    meta = {
                        "dataset": self.dataset,
                        "bands": list(self.reader.band_names),
                        "paths": [str(p) for p in loaded.paths],
                        "nan_pixels": loaded.nan_pixels,
                        "nan_files": [str(p) for p in loaded.nan_files],
                    }
                    _save_text(meta_path, json.dumps(meta, indent=1))
                    return loaded
        meta = json.loads(meta_path.read_text())
        images = np.load(self.dir / "originals.npy", mmap_mode="r")
        masks_path = self.dir / "masks.npy"
        masks = np.load(masks_path, mmap_mode="r") if masks_path.is_file() else None
        return LoadedSplit(
            images, masks, [Path(p) for p in meta["paths"]], meta["nan_pixels"], [Path(p) for p in meta["nan_files"]]
        )

    # ------------------------------------------------------------------ bands
    def band(self, name: str) -> np.ndarray:
        """(N, H, W) float32 of one band: an original (a view) or an engineered one (cached)."""
        originals = self.reader.band_names
        if name in originals:
            return self.images[..., originals.index(name)]
        if name not in ENGINEERED:
            raise DataError(f"{self.reader.root}: unknown band {name!r} for {self.dataset}")
        self.prepare([name])
        return self._memory[name] if self.dir is None else np.load(self._band_path(name), mmap_mode="r")

    def prepare(self, names: list[str] | tuple[str, ...]) -> None:
        """Compute the engineered bands among `names` that are not cached yet, in one pass."""
        missing = [n for n in dict.fromkeys(names) if n in ENGINEERED and not self._has(n)]
        if not missing:
            return
        if self.dir is None:
            self._memory.update(self._compute(missing))
            return
        with _locked(self.dir):
            missing = [n for n in missing if not self._has(n)]
            if missing:
                self._compute_to_disk(missing)

    def stack(
        self, names: tuple[str, ...], index: np.ndarray | None = None, window: tuple[slice, slice] | None = None
    ) -> np.ndarray:
        """(len(index), h, w, len(names)) float32 in memory: the tiles `index` (all by
        default), cut to `window` (rows, columns), bands in the order of `names`."""
        self.prepare(names)
        rows, cols = window if window is not None else (slice(None), slice(None))
        take = np.arange(len(self.images)) if index is None else np.asarray(index)
        h, w = (len(range(*s.indices(n))) for s, n in zip((rows, cols), self.images.shape[1:3]))
        out = np.empty((len(take), h, w, len(names)), np.float32)
        bands = [self.band(name) for name in names]
        for start in range(0, len(take), _STACK):
            part = take[start : start + _STACK]
            # Interleave a few tiles at a time: band-by-band writes into the channel-last
            # array would stream over all of it once per band.
            out[start : start + _STACK] = np.stack([band[part][:, rows, cols] for band in bands], axis=-1)
        return out

    def masks_at(self, index: np.ndarray, window: tuple[slice, slice] | None = None) -> np.ndarray:
        if self.masks is None:
            raise DataError(f"{self.reader.root}: the {self.reader.split} split has images without masks")
        rows, cols = window if window is not None else (slice(None), slice(None))
        return np.ascontiguousarray(self.masks[np.asarray(index)][:, rows, cols], dtype=np.uint8)

    def _batches(self, names: list[str]) -> Iterator[tuple[slice, np.ndarray]]:
        # Batches bound the memory a 3,800-tile dataset needs while its bands are computed.
        for start in range(0, len(self.images), _BATCH):
            part = slice(start, start + _BATCH)
            channels = self.reader.band_names
            yield part, engineer_bands(np.asarray(self.images[part]), tuple(names), self.dataset, channels=channels)

    def _fill(self, targets: dict[str, np.ndarray]) -> None:
        """Engineer the bands named by targets' keys into them (arrays or memory maps)."""
        names = list(targets)
        for part, array in self._batches(names):
            for k, name in enumerate(names):
                targets[name][part] = array[..., k]

    def _compute(self, names: list[str]) -> dict[str, np.ndarray]:
        out = {n: np.empty(self.images.shape[:3], np.float32) for n in names}
        self._fill(out)
        return out

    def _compute_to_disk(self, names: list[str]) -> None:
        tmp = {n: _temporary(self._band_path(n)) for n in names}
        try:
            maps = {n: np.lib.format.open_memmap(tmp[n], "w+", np.float32, self.images.shape[:3]) for n in names}
            self._fill(maps)
            for mapped in maps.values():
                mapped.flush()
            maps.clear()
            for name in names:
                os.replace(tmp[name], self._band_path(name))
        finally:
            for path in tmp.values():
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _has(self, name: str) -> bool:
        return name in self._memory if self.dir is None else self._band_path(name).is_file()

    def _band_path(self, name: str) -> Path:
        assert self.dir is not None
        return self.dir / f"band-{name}.npy"


# ---------------------------------------------------------------------- file helpers
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the band cache ({exc.strerror}); set RMAUNET_CACHE_DIR") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): atomic renames still keep files whole
        yield
        return
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _save(path: Path, array: np.ndarray) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _save_text(path: Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text)
    os.replace(tmp, path)
