"""Many scenes: in this process, or one Ray task per scene across a cluster.

Scenes and the output folder may be local paths or object-store URIs (s3://, gs://;
rmaunet.storage): a remote scene is streamed to a local scratch file before it is read
(GDAL reads windows fastest from a local file), and each scene's outputs are streamed to
the output folder once written. With Ray (`--address`, RAY_ADDRESS, or inside
`ray job submit`), each task receives the exported model's files by value, so no node
needs the driver's disk; a task asks for one GPU where the cluster has GPUs, else one CPU.
Outputs to a local folder then land on the node that ran the task: give a cluster a URI
or a folder every node mounts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rmaunet.mapping.export import CARD_FILE, MODEL_FILE, PREPROCESS_FILE, Exported, load_exported
from rmaunet.mapping.predict import output_names, predict_scene
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


def _remote_one(files: dict[str, bytes], scene: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: the model from its files, then one scene."""
    import socket

    with tempfile.TemporaryDirectory(prefix="rmaunet-model-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        exported = load_exported(folder)
        summary = _one(exported, scene, out, {**options, "progress": False})
    summary["node"] = socket.gethostname()
    return summary


def predict_scenes(
    model: Path,
    scenes: Sequence[str],
    out: str,
    *,
    on_ray: bool = False,
    log: Log = print,
    **options: Any,
) -> list[dict[str, Any]]:
    """Map every scene (see the module docstring); returns one summary per scene, in order."""
    if not on_ray:
        exported = load_exported(model)
        summaries = []
        for scene in scenes:
            summaries.append(_one(exported, scene, out, options))
            log(_describe(summaries[-1]))
        return summaries
    import ray

    load_exported(model)  # refuse a wrong model folder here, in one line, not in every task
    names = [name for name in (MODEL_FILE, PREPROCESS_FILE, CARD_FILE) if (model / name).is_file()]
    files = {name: (model / name).read_bytes() for name in names}
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(_remote_one).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=1)
    shared = ray.put(files)
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
