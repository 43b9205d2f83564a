"""Many scenes: in this process, one Ray task per scene, or one large scene's windows as Ray tasks.

Scenes and the output folder may be local paths or object-store URIs (s3://, gs://;
rmaunet.storage): a remote scene is streamed to a local scratch file before it is read
(GDAL reads windows fastest from a local file), and each scene's outputs are streamed to
the output folder once written. With Ray (`--address`, RAY_ADDRESS, or inside
`ray job submit`), each task receives the exported model's files by value, so no node
needs the driver's disk; a task asks for one GPU where the cluster has GPUs, else one CPU.
Outputs to a local folder then land on the node that ran the task: give a cluster a URI
or a folder every node mounts.

A few large scenes (`rows_per_task`, the CLI's --rows-per-task) are split instead: each
scene's window rows go out in parts of that many rows, one Ray task a part, all parts
queued at once; each task reads its rows' blocks only and returns its rows' blending sums
(not probabilities), and this process adds the sums of the rows two parts share, then
writes the maps (rmaunet.mapping.windows.merge_parts): the same map as one process draws.
A task's scene must be readable where it runs: a URI (each task streams it to its node's
scratch), or a path every node mounts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmaunet.mapping import geotiff
from rmaunet.mapping.export import CARD_FILE, MODEL_FILE, PREPROCESS_FILE, Exported, load_exported
from rmaunet.mapping.predict import Split, output_names, predict_scene, row_sums
from rmaunet.mapping.windows import Sums, merge_parts, split_rows
from rmaunet.storage import Storage, is_uri

__all__ = ["predict_scenes"]

Log = Callable[[str], None]


def _split(where: str) -> tuple[Storage, str]:
    """A file's URI as (its folder's storage, its name)."""
    parent, _, name = where.rstrip("/").rpartition("/")
    return Storage(parent), name


def _fetch(scene: str, scratch: Path) -> Path:
    """A remote scene streamed to a local file (a local one is read where it is)."""
    if not is_uri(scene):
        return Path(scene)
    storage, name = _split(scene)
    target = scratch / name
    with storage.fs.open_input_stream(storage.path(name)) as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, 16 << 20)
    return target


def _publish(local: Path, storage: Storage) -> None:
    """A scene's outputs from the scratch folder to an object store, streamed."""
    for path in sorted(local.iterdir()):
        if not path.is_file():
            continue
        with open(path, "rb") as source, storage.fs.open_output_stream(storage.path(path.name)) as sink:
            shutil.copyfileobj(source, sink, 16 << 20)


def _one(exported: Exported, scene: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    storage = Storage(out)
    with tempfile.TemporaryDirectory(prefix="rmaunet-predict-") as scratch:
        local_scene = _fetch(scene, Path(scratch))
        # A local --out is written in place; an object store's gets the finished files.
        staged = storage.local if storage.local is not None else Path(scratch) / "out"
        summary = predict_scene(exported, local_scene, staged, **options)
        if storage.local is None:
            _publish(staged, storage)
    for key, name in output_names(scene).items():
        if key in summary:
            summary[key] = storage.uri_of(name)
    summary["scene"] = scene
    return summary


def _from_files(files: dict[str, bytes]) -> Exported:
    """An exported model sent by value (a task's node need not see the driver's disk)."""
    with tempfile.TemporaryDirectory(prefix="rmaunet-model-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        return load_exported(folder)


def _remote_one(files: dict[str, bytes], scene: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: the model from its files, then one scene."""
    import socket

    summary = _one(_from_files(files), scene, out, {**options, "progress": False})
    summary["node"] = socket.gethostname()
    return summary


def _remote_part(files: dict[str, bytes], scene: str, rows: list[int], settings: dict[str, Any]) -> Sums:
    """A Ray task: the blending sums of some window rows of one scene, as one block of rows."""
    exported = _from_files(files)
    with tempfile.TemporaryDirectory(prefix="rmaunet-part-") as scratch:
        with geotiff.gdal_env(), geotiff.open_scene(_fetch(scene, Path(scratch))) as ds:
            pieces = list(row_sums(exported, ds, rows, **settings))
    top = pieces[0][0]
    total, weight, invalid = (np.concatenate([piece[k] for piece in pieces]) for k in (1, 2, 3))
    return top, total, weight, invalid


def _ray_split(task: Any, files: Any, scene: str, rows_per_task: int) -> Split:
    """predict_scene's `split`: the scene's window rows as Ray tasks, their sums merged here."""

    def split(rows: Sequence[int], settings: dict[str, Any]) -> Iterator[Sums]:
        import ray

        pending = [task.remote(files, scene, part, settings) for part in split_rows(rows, rows_per_task)]

        def in_order() -> Iterator[Sums]:
            while pending:
                yield ray.get(pending.pop(0))  # the object leaves the store once merged

        return merge_parts(in_order())

    return split


def predict_scenes(
    model: Path,
    scenes: Sequence[str],
    out: str,
    *,
    on_ray: bool = False,
    rows_per_task: int | None = None,
    log: Log = print,
    **options: Any,
) -> list[dict[str, Any]]:
    """Map every scene (see the module docstring); returns one summary per scene, in order.
    On Ray, `rows_per_task` splits each scene's window rows into tasks of that many rows."""
    if not on_ray:
        exported = load_exported(model)
        summaries = []
        for scene in scenes:
            summaries.append(_one(exported, scene, out, options))
            log(_describe(summaries[-1]))
        return summaries
    import ray

    exported = load_exported(model)  # refuse a wrong model folder here, in one line, not in every task
    names = [name for name in (MODEL_FILE, PREPROCESS_FILE, CARD_FILE) if (model / name).is_file()]
    shared = ray.put({name: (model / name).read_bytes() for name in names})
    gpus = ray.cluster_resources().get("GPU", 0)
    if rows_per_task:
        # One scene after another, each spread over the cluster; this process writes the maps.
        task = ray.remote(_remote_part).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=1)
        summaries = []
        for scene in scenes:
            split = _ray_split(task, shared, scene, rows_per_task)
            summaries.append(_one(exported, scene, out, {**options, "split": split}))
            log(_describe(summaries[-1]) + f" in parts of {rows_per_task} window rows")
        return summaries
    task = ray.remote(_remote_one).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=1)
    pending = {task.remote(shared, scene, out, options): scene for scene in scenes}
    done: dict[str, dict[str, Any]] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        summary = ray.get(ready[0])
        done[pending.pop(ready[0])] = summary
        log(_describe(summary) + f" on {summary['node']}")
    return [done[scene] for scene in scenes]


def _describe(summary: dict[str, Any]) -> str:
    h, w = summary["size"]
    return (
        f"{summary['scene']}: {h}×{w} px, {summary['windows']} windows in {summary['seconds']:.1f} s "
        f"({summary['windows_per_s']:.0f}/s), {summary.get('polygons', 0)} landslide polygons, "
        f"{summary['landslide_pixels']} px -> {summary['mask']}"
    )
