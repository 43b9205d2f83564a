"""The results store: one Parquet row per (study, row, seed), each written whole.

The crossing point between the study engine (which writes rows) and reporting (which
reads them); neither imports the other. It lives in a local or mounted folder or under
an object-store URI (s3://, gs://; rmaunet.storage). Layout:

    trials/<trial_id>/           one trained trial (rmaunet.trial_folder.TrialFolder)
    rows/<study>/<key>.parquet   one results row each (see COLUMNS)
    plans/<study>.json           the trainings the study's last run planned (`rmaunet study status`)
    specs/<study>.json           the spec the study last ran with (`write_spec`): its report reads it
    compacted/<study>.parquet    a copy of the study's rows as one file, for reading (see `read`)
    tune/<study>/                Ray Tune's experiment state and checkpoints
    leases/<study>.json          the driver running the study now (StudyLease)
    <study>.parquet              a study's rows as one file (`export_study`)

Each row is its own file or object, written once and whole (a temporary name renamed
into place in a folder; one PUT in an object store), so many trials finishing at once
never lose or tear a row, a crash leaves either the old row or the new one, and readers
skip temporary files. `read()` gathers the rows into one DataFrame; `export()` writes
that as a single Parquet file for pandas / pyarrow users.

Reading a row file costs milliseconds of Parquet parsing, so `read()` keeps a compacted
copy of each study's rows, each with its file's name and version (size and modification
time): a row whose file still has that version is taken from the copy, any other (new,
rewritten) is read from its file, and the copy is rewritten once COMPACT_AFTER rows were
read that way. The row files stay the truth: the copy is never the only place of a row,
so a lost or stale copy costs time, never a row.

Trials train where Ray puts them (`workspace`): against a folder, in the store's own
trial folder; against an object store, in this node's cache, each epoch's checkpoint
uploaded before the next epoch starts, so a trial that loses its node resumes on another
from its last epoch, and the finished trial's files uploaded with result.json last.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rmaunet import atomic, node_cache
from rmaunet.errors import StoreError, StudyBusyError
from rmaunet.storage import Storage, cache_root, is_uri
from rmaunet.trial_folder import SPLITS, TrialFolder

__all__ = [
    "ResultsStore",
    "TrialWorkspace",
    "StudyLease",
    "COLUMNS",
    "METRIC_NAMES",
    "DETECTION_METRIC_NAMES",
    "CONFIG_PREFIX",
    "safe_name",
    "is_uri",
]

METRIC_NAMES = ("precision", "recall", "f1", "iou", "miou")
DETECTION_METRIC_NAMES = ("accuracy", "precision", "recall", "f1")
CONFIG_PREFIX = "cfg_"

# The documented schema (README, "Results store"). Config fields follow as cfg_<field>.
COLUMNS: dict[str, str] = {
    "study": "study name (the spec's `name`)",
    "kind": "table | ladder | loco | threshold | search",
    "row": "row label as printed in the table",
    "row_index": "position of the row in the spec (table order)",
    "seed": "training seed",
    "trial_id": "hash of the training config, seed and data fingerprint (shared across studies)",
    "config_hash": "TrialConfig.training_hash (config and seed, without the data)",
    "status": "ok | failed",
    "reason": "why a failed trial failed (empty when ok)",
    "threshold": "decision threshold the metrics below were computed at",
    "threshold_protocol": "tuned (chosen per trial on validation by selection_metric) | fixed (the config's value)",
    "selection_metric": "validation metric that selected the checkpoint and a tuned threshold (f1, miou, …)",
    "chosen_threshold": "threshold study: the one chosen on validation; else the row's own threshold",
    "det_threshold": "detection head's threshold, chosen on validation by image-level F1 (NaN without a head)",
    "test_tiles": "number of test tiles",
    "test_tile_counts": "JSON list of [tp, fp, fn] per test tile at the row's threshold (tile bootstrap)",
    "test_tile_groups": "JSON list of each test tile's region with a grouped split (split_groups), else empty",
    "threshold_curve": "JSON list of {threshold, val_<metric>, test_<metric>} over rmaunet.thresholds.GRID",
    **{f"val_{m}": f"validation {m} (0-1)" for m in METRIC_NAMES},
    **{f"test_{m}": f"test {m} (0-1), computed once per trial" for m in METRIC_NAMES},
    **{
        f"val_det_{m}": f"validation image-level detection {m} (NaN without a detection head)"
        for m in DETECTION_METRIC_NAMES
    },
    **{
        f"test_det_{m}": f"test image-level detection {m} (NaN without a detection head)"
        for m in DETECTION_METRIC_NAMES
    },
    "epochs_run": "epochs trained",
    "best_epoch": "epoch whose weights were kept (best validation selection metric)",
    "wall_s": "wall time of the training in seconds",
    "gpu_hours": "GPU-hours of the training (0 on CPU)",
    "reused": "true when the training was done earlier (another study or run) and only reused here",
    "images_per_s": "steady-state training throughput",
    "params": "trainable and non-trainable parameters of the model",
    "flops_per_image": "forward-pass FLOPs per image (a multiply-add counts 2)",
    "history": "JSON list of per-epoch dicts (epoch, loss, val_*, images_per_s, epoch_s)",
    "steps": "JSON list of the techniques switched on in this row (ladder / loco)",
    "data_fingerprint": "hash of the dataset files",
    "git_commit": "commit of the code that trained it",
    "versions": "JSON dict of package versions",
    "node": "host that trained it",
    "accelerator": "CPU or the GPU model",
    "finished_at": "UTC ISO time the row was written",
}


# A study's rows read as one file (`compacted/<study>.parquet`) once this many row files were
# read one by one: parsing a one-row Parquet file costs milliseconds, 50,000 of them minutes.
COMPACTED = "compacted"
COMPACT_AFTER = 100
_ROW_FILE, _ROW_VERSION = "_row_file", "_row_version"  # the compacted copy's record of each row's file
_READ_THREADS = 8
_READ_BATCH = 1000


def safe_name(text: str, default: str = "row") -> str:
    """`text` as one harmless path component: no separators, no leading dot ("..", ".tmp-")."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")[:60]
    return slug or default


class ResultsStore:
    """The store under `root`: a folder, or an object-store URI (rmaunet.storage)."""

    def __init__(self, root: Path | str | Storage) -> None:
        self.storage = root if isinstance(root, Storage) else Storage(root)
        self.local = self.storage.is_local
        # A local store's folder; None for an object store.
        self.root: Path | None = self.storage.local

    def __str__(self) -> str:
        return self.storage.uri

    # ------------------------------------------------------------------ trials
    def _trial_id(self, trial_id: str) -> str:
        if safe_name(trial_id, default="") != trial_id:
            raise StoreError(f"{self.storage}: {trial_id!r} is not a trial id")
        return trial_id

    def trial(self, trial_id: str) -> TrialFolder:
        """A trial's files as a local folder to read: a folder store's own; for an object
        store, this node's copy of the finished trial's files (fetched once, result.json last)."""
        trial_id = self._trial_id(trial_id)
        if self.root is not None:
            return TrialFolder(self.root / "trials" / trial_id)
        folder = TrialFolder(_cache_for(self.storage) / "trials" / trial_id)
        node_cache.pin(folder.root)  # an entry of the node's bounded cache, in use while this process lives
        remote = self.storage.child("trials", trial_id)
        stored = remote.read_bytes(TrialFolder.RESULT)
        cached = folder.result.read_bytes() if folder.result.is_file() else None
        if stored is None or stored != cached:
            # The store's copy is the truth (a trial deleted there and trained again replaces
            # an older copy here). What scoring reads, not the weights; result.json last, so a
            # partial copy is never taken for a finished one.
            folder.result.unlink(missing_ok=True)
            for path in (*(folder.probabilities(s) for s in SPLITS), folder.history):
                if not remote.download(path.name, path):
                    path.unlink(missing_ok=True)
            if stored is not None:
                atomic.write_bytes(folder.result, stored)
        return folder

    def finished_trial(self, trial_id: str) -> dict[str, Any] | None:
        """The stored result of a completed trial, or None when it must (re)run."""
        trial_id = self._trial_id(trial_id)
        if self.root is not None:
            return TrialFolder(self.root / "trials" / trial_id).read_result()
        return _parse_result(self.storage.child("trials", trial_id).read_bytes(TrialFolder.RESULT))

    def workspace(self, trial_id: str) -> TrialWorkspace:
        """Where this node trains `trial_id` (see the module's docstring)."""
        return TrialWorkspace(self, self._trial_id(trial_id))

    # ------------------------------------------------------------------ rows
    def row_key(self, study: str, row: str, seed: int, threshold: float | None = None) -> str:
        """The row's path inside the store ("rows/<study>/<name>.parquet")."""
        key = f"{study}\0{row}\0{seed}\0{threshold}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return f"rows/{safe_name(study, 'study')}/{safe_name(row)}__s{seed}__{digest}.parquet"

    def row_key_for(self, row: dict[str, Any]) -> str:
        missing = [c for c in ("study", "row", "seed") if c not in row]
        if missing:
            raise StoreError(f"{self.storage}: results row lacks {', '.join(missing)}")
        threshold = row.get("threshold") if row.get("kind") == "threshold" else None
        return self.row_key(row["study"], row["row"], int(row["seed"]), threshold)

    def has_row(self, row: dict[str, Any]) -> bool:
        return self.storage.exists(self.row_key_for(row))

    def write_row(self, row: dict[str, Any]) -> str:
        """Store one row whole; returns where it went (a path or a URI)."""
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([_plain(row)]), sink)
        return self.storage.write_bytes(self.row_key_for(row), sink.getvalue())

    def read(self, study: str | None = None) -> pd.DataFrame:
        rows = self.storage.child("rows")
        folders = [safe_name(study, "study")] if study else rows.folders()
        frames = [f for f in map(self._read_swept, folders) if not f.empty]
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        df = _one_type_per_column(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])
        if study:
            df = df[df["study"] == study]
        return _in_table_order(df)

    def read_studies(self) -> dict[str, pd.DataFrame]:
        """Every study's rows, each as `read(study)` gives them (a column's type settled by its
        own folder's rows), every folder read once: a report of the whole store read it twice,
        once to find the studies and once per study."""
        studies: dict[str, pd.DataFrame] = {}
        for folder in self.storage.child("rows").folders():
            df = self._read_swept(folder)
            if df.empty:
                continue
            if "study" not in df.columns:
                raise StoreError(f"{self.storage.uri_of(f'rows/{folder}')}: results rows have no `study` column")
            df = _one_type_per_column(df)
            for study in df["study"].dropna().unique():
                studies[study] = _in_table_order(df[df["study"] == study])
        return studies

    def _read_swept(self, folder: str) -> pd.DataFrame:
        if self.root is not None:
            atomic.sweep(self.root / "rows" / folder)  # a killed writer's leftovers, once they are old
        return self._read_folder(folder)

    def write_plan(self, study: str, plan: dict[str, Any]) -> None:
        """What a run of `study` planned: each (row, seed) and its trial, for `study status`."""
        self.storage.write_bytes(f"plans/{safe_name(study, 'study')}.json", json.dumps(plan, indent=1).encode())

    def read_plan(self, study: str) -> dict[str, Any] | None:
        """The plan the study's last run wrote, or None (never run, or by an older rmaunet)."""
        return _parse_result(self.storage.read_bytes(f"plans/{safe_name(study, 'study')}.json"))

    def planned_studies(self) -> list[str]:
        return sorted(name.removesuffix(".json") for name in self.storage.child("plans").files(suffix=".json"))

    def checkpoint_epoch(self, trial_id: str) -> int | None:
        """The last epoch a trial in progress has checkpointed in the store, or None."""
        state = _parse_result(self.storage.child("trials", self._trial_id(trial_id)).read_bytes(TrialWorkspace.STATE))
        epoch = state.get("epoch") if state else None
        return epoch if isinstance(epoch, int) else None

    # ------------------------------------------------------------------ specs
    def write_spec(self, study: str, record: dict[str, Any]) -> str:
        """Keep the spec a study runs with (a JSON record: its text, how it ran), replacing the last run's."""
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        return self.storage.write_bytes(self._spec_key(study), data)

    def read_spec(self, study: str) -> dict[str, Any] | None:
        """The record `write_spec` kept for a study; None for a study run before the store kept specs."""
        data = self.storage.read_bytes(self._spec_key(study))
        if data is None:
            return None
        record = _parse_result(data)
        if record is None:
            raise StoreError(f"{self.storage.uri_of(self._spec_key(study))}: unreadable spec record")
        return record

    @staticmethod
    def _spec_key(study: str) -> str:
        return f"specs/{safe_name(study, 'study')}.json"

    def _read_folder(self, folder: str) -> pd.DataFrame:
        """One study folder's rows: those the compacted copy holds unchanged, read from it;
        the others file by file, and the compacted copy rewritten when they were many."""
        rows = self.storage.child("rows", folder)
        # (name, size, mtime) of each row file: never an in-flight temporary file.
        versions = {
            rel: f"{size}:{mtime}" for rel, size, mtime in rows.walk() if "/" not in rel and rel.endswith(".parquet")
        }
        compacted = self._compacted(folder)
        current = compacted[compacted[_ROW_FILE].map(versions.get) == compacted[_ROW_VERSION]]
        fresh = sorted(set(versions) - set(current[_ROW_FILE]))
        read = _read_rows(rows, fresh)
        if not read.empty:
            read[_ROW_VERSION] = read[_ROW_FILE].map(versions)
        df = pd.concat([f for f in (current, read) if not f.empty] or [read], ignore_index=True)
        if len(fresh) >= COMPACT_AFTER or len(current) < len(compacted):
            self._compact(folder, df)
        return df.drop(columns=[_ROW_FILE, _ROW_VERSION], errors="ignore")

    def _compacted(self, folder: str) -> pd.DataFrame:
        """The folder's compacted rows (empty when there is none, or it is unreadable: it is only a copy)."""
        data = self.storage.read_bytes(f"{COMPACTED}/{folder}.parquet")
        empty = pd.DataFrame(columns=[_ROW_FILE, _ROW_VERSION])
        if data is None:
            return empty
        try:
            df = pq.read_table(pa.BufferReader(data)).to_pandas()
        except (OSError, pa.ArrowInvalid):
            return empty
        return df if {_ROW_FILE, _ROW_VERSION} <= set(df.columns) else empty

    def _compact(self, folder: str, df: pd.DataFrame) -> None:
        """Write the folder's rows as one file (whole, like a row). A store this user cannot
        write, or rows whose types one Parquet file cannot hold, keep reading file by file."""
        sink = io.BytesIO()
        try:
            _one_type_per_column(df.copy()).to_parquet(sink, index=False)
            self.storage.write_bytes(f"{COMPACTED}/{folder}.parquet", sink.getvalue())
        except (StoreError, pa.ArrowException, ValueError, TypeError):
            pass

    def export(self, path: Path | str, study: str | None = None) -> Path:
        """All rows (of one study) as one local Parquet file, written atomically."""
        rows = self.read(study)
        return atomic.atomic_write(Path(path), lambda tmp: rows.to_parquet(tmp, index=False))

    def export_study(self, study: str) -> str:
        """A study's rows as <store>/<study>.parquet, beside its rows; returns its path or URI."""
        sink = io.BytesIO()
        self.read(study).to_parquet(sink, index=False)
        return self.storage.write_bytes(f"{safe_name(study, 'study')}.parquet", sink.getvalue())


class TrialWorkspace:
    """One training's local folder on this node, and its way into the store.

    For a folder store the workspace is the store's own trial folder and nothing moves.
    For an object store it is a folder in this node's cache: `begin` fetches the trial's
    last checkpoint from the store (a trial that lost its node resumes from it here),
    `save_checkpoint` uploads each epoch's checkpoint (weights and optimizer state under
    the epoch's own names, then the state file that points at them, so a reader never
    pairs one epoch's state with another's weights), and `finish` uploads the finished
    trial's files, result.json last, and removes the checkpoint and the local copy.
    """

    STATE = f"{TrialFolder.CHECKPOINT}/{TrialFolder.CHECKPOINT_STATE}"

    def __init__(self, store: ResultsStore, trial_id: str) -> None:
        self.store, self.trial_id = store, trial_id
        self.remote = store.storage.child("trials", trial_id)
        if store.root is not None:
            self.folder = TrialFolder(store.root / "trials" / trial_id)
        else:
            self.folder = TrialFolder(_cache_for(store.storage) / "work" / trial_id)
        self._hold: node_cache.Hold | None = None  # this node's work folder, while training in it

    @property
    def local(self) -> bool:
        return self.store.root is not None

    def begin(self, config: dict[str, Any]) -> TrialFolder:
        """The folder to train in, holding the config and the store's last checkpoint."""
        if not self.local:
            self._claim()
            shutil.rmtree(self.folder.root, ignore_errors=True)  # the store's copy is the truth
            self.folder.create()
            self._fetch_checkpoint()
            self._tidy()
        self.folder.create().write_config(config)
        if not self.local:
            self.remote.upload(self.folder.config, TrialFolder.CONFIG)
        return self.folder

    def _fetch_checkpoint(self) -> None:
        state = _parse_result(self.remote.read_bytes(self.STATE))
        if state is None or not isinstance(state.get("epoch"), int):
            return
        source = f"{TrialFolder.CHECKPOINT}/{_epoch_dir(state['epoch'])}"
        target = self.folder.checkpoint
        names = (TrialFolder.CHECKPOINT_WEIGHTS, TrialFolder.CHECKPOINT_OPTIMIZER, TrialFolder.BEST_WEIGHTS)
        for name in names:
            self.remote.download(f"{source}/{name}", target / name)
        if (target / TrialFolder.BEST_WEIGHTS).is_file():
            shutil.move(target / TrialFolder.BEST_WEIGHTS, self.folder.best_weights)
        atomic.write_json(target / TrialFolder.CHECKPOINT_STATE, state)  # last: marks the copy complete

    def save_checkpoint(self) -> None:
        """After each epoch's local checkpoint: the same checkpoint into the store."""
        if self.local:
            return
        local = self.folder.checkpoint
        state = _parse_result((local / TrialFolder.CHECKPOINT_STATE).read_bytes())
        if state is None:
            return
        epoch_dir = f"{TrialFolder.CHECKPOINT}/{_epoch_dir(int(state['epoch']))}"
        self.remote.upload(local / TrialFolder.CHECKPOINT_WEIGHTS, f"{epoch_dir}/{TrialFolder.CHECKPOINT_WEIGHTS}")
        self.remote.upload(local / TrialFolder.CHECKPOINT_OPTIMIZER, f"{epoch_dir}/{TrialFolder.CHECKPOINT_OPTIMIZER}")
        if self.folder.best_weights.is_file():
            self.remote.upload(self.folder.best_weights, f"{epoch_dir}/{TrialFolder.BEST_WEIGHTS}")
        previous = _parse_result(self.remote.read_bytes(self.STATE))
        self.remote.upload(local / TrialFolder.CHECKPOINT_STATE, self.STATE)
        if previous is not None and isinstance(previous.get("epoch"), int) and previous["epoch"] != state["epoch"]:
            self._delete_epoch(previous["epoch"])

    def record_crash(self, reason: str) -> int:
        """Count one attempt that ended in an exception, in the store (attempts on every node
        add up; one attempt runs at a time); returns the count so far. `finish` clears it."""
        crashes = (_parse_result(self.remote.read_bytes(TrialFolder.CRASHES)) or {}).get("crashes", [])
        crashes = [*crashes, reason] if isinstance(crashes, list) else [reason]
        self.remote.write_bytes(TrialFolder.CRASHES, json.dumps({"crashes": crashes}).encode())
        return len(crashes)

    def record_attempt(self) -> int:
        """Count one attempt starting from the store's last checkpoint epoch; returns how many
        attempts in a row, this one included, started from that same epoch (those before it
        lost their process or node before another epoch's checkpoint landed). `finish` clears it."""
        state = _parse_result(self.remote.read_bytes(self.STATE)) or {}
        epoch = state["epoch"] if isinstance(state.get("epoch"), int) else 0
        record = _parse_result(self.remote.read_bytes(TrialFolder.ATTEMPTS)) or {}
        before = record.get("attempts") if record.get("epoch") == epoch else 0
        attempts = (before if isinstance(before, int) else 0) + 1
        self.remote.write_bytes(TrialFolder.ATTEMPTS, json.dumps({"epoch": epoch, "attempts": attempts}).encode())
        return attempts

    def finish(self) -> None:
        """Upload the finished trial (result.json last), then drop its checkpoint from the store."""
        # A finished trial starts new counts if it is ever trained again.
        self.remote.delete(TrialFolder.CRASHES)
        self.remote.delete(TrialFolder.ATTEMPTS)
        if self.local:
            return
        for path in (self.folder.sync, *self.folder.outputs()):
            if path.is_file():
                self.remote.upload(path, path.name)
        state = _parse_result(self.remote.read_bytes(self.STATE))
        self.remote.delete(self.STATE)
        if state is not None and isinstance(state.get("epoch"), int):
            self._delete_epoch(state["epoch"])
        self._tidy()

    def close(self) -> None:
        """Remove this node's copy (an object store's workspace only)."""
        if not self.local:
            shutil.rmtree(self.folder.root, ignore_errors=True)
            self._release()

    # ------------------------------------------------------------------ leftovers (issue 21)
    def _claim(self) -> None:
        """Hold this node's work folder for the training: a folder nobody holds is a killed
        trial's, which `_tidy` (here or in another trial) and `rmaunet cache prune` remove."""
        if self._hold is None:
            self._hold = node_cache.Hold(node_cache.lock_of(self.folder.root), shared=False)

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def _tidy(self) -> None:
        """Remove what killed trials left: this trial's epoch checkpoints in the store other
        than the one its state file names (a node that died between uploading an epoch's
        state and deleting the previous epoch leaves that epoch behind; `finish` has removed
        the state, so there every epoch goes), this node's abandoned work folders; then
        keep the node's cache within its cap."""
        state = _parse_result(self.remote.read_bytes(self.STATE))
        if state is None or not isinstance(state.get("epoch"), int):
            self.remote.delete_folder(TrialFolder.CHECKPOINT)
        else:
            checkpoints = self.remote.child(TrialFolder.CHECKPOINT)
            for epoch_dir in checkpoints.folders():
                if epoch_dir != _epoch_dir(state["epoch"]) and re.fullmatch(r"epoch-\d{4,}", epoch_dir):
                    checkpoints.delete_folder(epoch_dir)
        node_cache.sweep_abandoned(self.folder.root.parent)
        node_cache.enforce_cap()

    def _delete_epoch(self, epoch: int) -> None:
        folder = f"{TrialFolder.CHECKPOINT}/{_epoch_dir(epoch)}"
        for name in (TrialFolder.CHECKPOINT_WEIGHTS, TrialFolder.CHECKPOINT_OPTIMIZER, TrialFolder.BEST_WEIGHTS):
            self.remote.delete(f"{folder}/{name}")


class StudyLease:
    """One driver per study: a lease in the store (leases/<study>.json) naming the driver
    that runs the study now (host, pid, start, heartbeat), on a folder and a bucket alike.

    `hold()` takes it before anything is planned: a second driver of the same study is
    refused in one line (StudyBusyError) naming the holder and how long ago it was last
    heard of. A thread rewrites the heartbeat every `ttl_s / 4` seconds; a lease whose
    heartbeat is older than its `ttl_s` belongs to a dead driver (killed, its node lost) and
    is taken over, as is a live one with `take_over=True`. The lease is removed at the end.

    How taking it is made exclusive. A folder store: read, decide and write under an
    exclusive lock on leases/.lock (flock; exact between processes of one host and on file
    systems that honour flock). An object store: pyarrow.fs has no conditional write, so
    the driver writes the lease, waits SETTLE_S, and reads it back; of two drivers writing
    at once, the one whose write landed last finds its own lease and goes on, the other
    finds the winner's and is refused. The race left open: a driver whose write reaches the
    store more than SETTLE_S after its own check for a lease (a stalled request) can, for
    that long, overwrite a lease another driver has just verified; each then holds it until
    its next heartbeat finds the other's token and reports the lease lost (`lost`). Clocks
    of the hosts must agree to well within `ttl_s` (heartbeats carry the writer's time).
    A driver taken over may beat once more over the new lease (its check, then our write, then
    its write): the taker writes again when it finds the lease it replaced (`_settle`).
    """

    TTL_S = 60.0
    SETTLE_S = 1.0
    TAKE_OVER_WRITES = 3  # a replaced driver's heartbeat can land over a take-over this often
    LOCK = ".lock"

    def __init__(
        self, store: ResultsStore, study: str, *, ttl_s: float | None = None, log: Callable[[str], None] | None = None
    ) -> None:
        self.study = study
        self.storage = store.storage.child("leases")
        self.name = f"{safe_name(study, 'study')}.json"
        self.ttl_s = float(ttl_s if ttl_s is not None else os.environ.get("RMAUNET_LEASE_TTL_S") or self.TTL_S)
        self.log = log or (lambda message: None)
        self.token = secrets.token_hex(8)
        self.started = time.time()
        self.lost: dict[str, Any] | None = None  # the lease that replaced ours, if one did
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "study": self.study,
            "owner": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": now,
            "ttl_s": self.ttl_s,
        }

    def current(self) -> dict[str, Any] | None:
        """The lease in the store now, or None."""
        return _parse_result(self.storage.read_bytes(self.name))

    def acquire(self, take_over: bool = False) -> None:
        """Take the lease or raise StudyBusyError naming its holder; start the heartbeat."""
        replaced = None  # the driver whose lease this one replaces, if any
        with self._exclusive():
            held = self.current()
            if held is not None and held.get("owner") != self.token:
                replaced = held.get("owner")
                if not (take_over or _expired(held)):
                    raise StudyBusyError(
                        f"study {self.study!r} is being run by another driver: {_describe_lease(held)}; "
                        f"wait for it to finish, or pass --take-over if it is dead (a driver silent for "
                        f"{float(held.get('ttl_s', self.ttl_s)):.0f} s is taken over without it)"
                    )
                why = "on request" if take_over and not _expired(held) else "its heartbeat stopped"
                self.log(f"taking over study {self.study!r} from {_describe_lease(held)} ({why})")
            self.storage.write_bytes(self.name, json.dumps(self.record()).encode())
        if not self.storage.is_local:
            self._settle(replaced)
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.study}", daemon=True)
        self._beat.start()

    def _settle(self, replaced: str | None) -> None:
        """On an object store: read the lease back after SETTLE_S; ours must have landed.
        A driver being taken over may beat once between its check and its write, over ours
        (it stops at its next beat, when it reads ours): that is not a second taker, so ours
        is written again, a bounded number of times. Any other owner won the race."""
        for attempt in range(1, self.TAKE_OVER_WRITES + 1):
            time.sleep(self.SETTLE_S)
            landed = self.current()
            if landed is not None and landed.get("owner") == self.token:
                return
            if replaced is None or landed is None or landed.get("owner") != replaced:
                break
            if attempt < self.TAKE_OVER_WRITES:
                self.storage.write_bytes(self.name, json.dumps(self.record()).encode())
        raise StudyBusyError(
            f"study {self.study!r}: another driver took its lease at the same moment: "
            f"{_describe_lease(landed) if landed else 'its lease vanished'}"
        )

    def verify(self) -> None:
        """Raise StudyBusyError unless this driver still holds the lease (before acting for the
        study as a whole, e.g. failing the Optuna trials a dead driver left running)."""
        held = self.current()
        if held is None or held.get("owner") != self.token:
            self.lost = held
            raise StudyBusyError(
                f"study {self.study!r}: this driver no longer holds its lease"
                + (f" (now {_describe_lease(held)})" if held else "")
            )

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still this driver's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with self._exclusive():
            held = self.current()
            if held is not None and held.get("owner") == self.token:
                self.storage.delete(self.name)

    @contextlib.contextmanager
    def hold(self, take_over: bool = False) -> Iterator[StudyLease]:
        self.acquire(take_over)
        try:
            yield self
        finally:
            self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                with self._exclusive():
                    held = self.current()
                    if held is None or held.get("owner") != self.token:
                        self.lost = held
                        self.log(
                            f"lease of study {self.study!r} lost"
                            + (f" to {_describe_lease(held)}" if held else "")
                            + ": another driver runs it now"
                        )
                        return
                    self.storage.write_bytes(self.name, json.dumps({**held, "heartbeat": time.time()}).encode())
            except StoreError as exc:  # the store is down for now: the next beat tries again
                self.log(f"lease of study {self.study!r}: heartbeat not written ({exc})")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """An exclusive lock around read-decide-write on a folder store; nothing on an object
        store (see the class's docstring for what stands in for it there)."""
        if self.storage.local is None:
            yield
            return
        try:
            self.storage.local.mkdir(parents=True, exist_ok=True)
            handle = open(self.storage.local / self.LOCK, "a")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(f"{self.storage.uri_of(self.LOCK)}: cannot lock ({exc})") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _expired(lease: dict[str, Any]) -> bool:
    try:
        return time.time() - float(lease["heartbeat"]) > float(lease.get("ttl_s", StudyLease.TTL_S))
    except (KeyError, TypeError, ValueError):
        return True  # unreadable: no driver keeps such a lease alive


def _describe_lease(lease: dict[str, Any]) -> str:
    """'host H pid P, started … UTC (age …), last heartbeat … s ago' in one line."""

    def number(key: str) -> float:
        try:
            return float(lease.get(key, 0.0))
        except (TypeError, ValueError):
            return 0.0

    now = time.time()
    started = _dt.datetime.fromtimestamp(number("started"), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"host {lease.get('host', '?')} pid {lease.get('pid', '?')}, started {started} UTC "
        f"({max(now - number('started'), 0):.0f} s ago), last heartbeat {max(now - number('heartbeat'), 0):.0f} s ago"
    )


def _epoch_dir(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def _cache_for(storage: Storage) -> Path:
    """This node's cache of one object store (its own folder per store URI)."""
    return cache_root() / "stores" / hashlib.sha256(storage.uri.encode()).hexdigest()[:16]


def _parse_result(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # unreadable: train again rather than guess
    return parsed if isinstance(parsed, dict) else None


def _read_rows(rows: Storage, names: list[str]) -> pd.DataFrame:
    """The row files `names` in folder `rows` as one frame, with a _ROW_FILE column naming each
    row's file. Read in threads (an object store answers each GET in tens of milliseconds)
    and gathered as Arrow tables, a batch at a time: one pandas frame per file took
    gigabytes for 50,000 rows. Rows whose columns disagree in type (written by different
    versions) meet in pandas instead, where _one_type_per_column settles them."""
    from concurrent.futures import ThreadPoolExecutor

    def read(name: str) -> pa.Table | None:
        data = rows.read_bytes(name)
        if data is None:
            return None  # removed between the listing and the read
        try:
            table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(f"{rows.uri_of(name)}: unreadable results row ({exc})") from None
        return table.append_column(_ROW_FILE, pa.array([name] * table.num_rows, pa.string()))

    frames = []
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for start in range(0, len(names), _READ_BATCH):
            tables = [t for t in pool.map(read, names[start : start + _READ_BATCH]) if t is not None]
            if not tables:
                continue
            try:
                frames.append(pa.concat_tables(tables, promote_options="permissive").to_pandas())
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                frames += [t.to_pandas() for t in tables]
    if not frames:
        return pd.DataFrame(columns=[_ROW_FILE])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _in_table_order(df: pd.DataFrame) -> pd.DataFrame:
    sort = [c for c in ("study", "row_index", "seed", "threshold") if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)


def _one_type_per_column(df: pd.DataFrame) -> pd.DataFrame:
    """Rows written by different versions may hold text in one row and numbers in another
    (cfg_threshold: 0.5 or "tuned"); such a column becomes text, so the frame exports."""
    for column in [c for c in df.columns if df[c].dtype == object]:
        present = df[column].notna()
        kinds = {type(v) for v in df.loc[present, column]}
        if str in kinds and len(kinds) > 1:
            df.loc[present, column] = df.loc[present, column].map(str)
    return df


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Nested values (dicts, lists) become JSON strings so every column is a scalar."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else v for k, v in row.items()}
