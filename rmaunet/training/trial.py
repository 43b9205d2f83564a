"""One trial on one in-process worker: the training loop writing into a trial folder.

No Ray import here: a Tune trial (rmaunet.studies.trainables) calls `run_trial` in its
own process; `rmaunet.training.distributed` runs the same loop on a Ray Train group.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import RmaunetError
from rmaunet.training.checkpoint import EpochCheckpoint
from rmaunet.training.loop import TrialLoop, maybe_inject_failure, wants_deterministic_ops
from rmaunet.training.result import TrialResult, write_result
from rmaunet.trial_folder import TrialFolder

__all__ = ["TrialResult", "run_trial", "configure_threads"]

Reporter = Callable[[dict[str, Any]], None]


class _FolderIO:
    """The loop's state in the trial folder itself: checkpoint/, best.weights.h5, results."""

    def __init__(
        self,
        folder: TrialFolder,
        config: TrialConfig,
        report: Reporter | None,
        node: str | None,
        on_checkpoint: Callable[[], None] | None = None,
    ) -> None:
        self.folder, self.report, self.node, self.on_checkpoint = folder, report, node, on_checkpoint
        self.best_weights = folder.best_weights
        self.checkpoint = EpochCheckpoint(folder.checkpoint, config)

    def restore(self, model: Any, optimizer: Any) -> dict[str, Any]:
        return self.checkpoint.restore(model, optimizer)

    def wall_s(self) -> float:
        return self.checkpoint.wall_s()

    def outputs(self, epoch: int) -> TrialFolder:
        return self.folder

    def save_checkpoint(self, loop: TrialLoop, epoch: int, state: dict[str, Any]) -> None:
        if self.node and state["history"]:
            state["history"][-1]["node"] = self.node  # where each epoch ran: a resumed trial shows its move
        keys = ("epoch", "history", "best_score", "best_epoch")
        self.checkpoint.save(loop.model, loop.optimizer, {k: state[k] for k in keys})
        if self.on_checkpoint is not None:
            self.on_checkpoint()

    def end_epoch(
        self, loop: TrialLoop, row: dict[str, Any], state: dict[str, Any], outcome: TrialResult | None
    ) -> None:
        if outcome is not None:
            write_result(self.folder, outcome, self.node)
            self.checkpoint.clear()  # result.json now marks the trial finished
        if self.report is not None:
            self.report(dict(row))
        if outcome is None:
            maybe_inject_failure(self.folder, row["epoch"])


def run_trial(
    config: TrialConfig,
    data_dir: Path | str,
    out_dir: Path | str,
    *,
    report: Reporter | None = None,
    log: Callable[[str], None] | None = None,
    node: str | None = None,
    on_checkpoint: Callable[[], None] | None = None,
) -> TrialResult:
    """Train, validate every epoch, keep the best epoch's weights, score test once.

    Writes the trial folder `out_dir` (rmaunet.trial_folder): a checkpoint after every
    epoch, so a rerun resumes after the last one; the selected weights, both splits'
    probability maps and, last, result.json. A NaN loss, an out-of-memory error or bad
    input (an RmaunetError: unreadable data, an impossible config) ends the trial with
    status "failed" and the reason recorded. `on_checkpoint` is called after each epoch's
    checkpoint is complete (rmaunet.store.TrialWorkspace copies it to an object store). Deterministic ops are on for
    the trial when wants_deterministic_ops says so, and only for it: the switch is
    process-global.
    """
    from tensorflow.python.framework import config as tf_config  # the only switch that turns it back off

    turned_on = wants_deterministic_ops(config) and not tf_config.is_op_determinism_enabled()
    if turned_on:
        tf_config.enable_op_determinism()
    try:
        return _run(config, data_dir, TrialFolder(out_dir).create(), report, log, node, on_checkpoint)
    finally:
        if turned_on:
            tf_config.disable_op_determinism()


def _run(
    config: TrialConfig,
    data_dir: Path | str,
    folder: TrialFolder,
    report: Reporter | None,
    log: Callable[[str], None] | None,
    node: str | None,
    on_checkpoint: Callable[[], None] | None,
) -> TrialResult:
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    loop: TrialLoop | None = None
    # A process may run one trial after another (Ray Tune reuses a node's trial process):
    # nothing of the previous trial's models stays in memory.
    keras.backend.clear_session()
    try:
        loop = TrialLoop(config, data_dir, log=log)
        result = loop.run(_FolderIO(folder, config, report, node, on_checkpoint))
    except RmaunetError as exc:
        # Bad data or an impossible config fails the same way every time: recorded once as
        # failed, with its cause, instead of raising into a scheduler that would retry it.
        reason = f"{type(exc).__name__}: {exc}"
        if log is not None:
            log(f"trial stopped: {reason}")
        result = TrialResult.failed(
            reason, len(loop.state["history"]) if loop is not None else 0, wall_s=time.perf_counter() - started
        )
        write_result(folder, result, node)
    except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
        # A GPU allocator raises ResourceExhaustedError; a CPU allocation that fails (a
        # memory limit, an exhausted host) surfaces as MemoryError (std::bad_alloc).
        reason = f"out of memory: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
        if log is not None:
            log(f"trial stopped: {reason}")
        history = loop.state["history"] if loop is not None else []
        fingerprint = loop.splits.fingerprint if loop is not None else ""
        result = TrialResult.failed(
            reason, len(history), history=history, wall_s=time.perf_counter() - started, data_fingerprint=fingerprint
        )
        write_result(folder, result, node)
    assert result is not None  # one worker is rank 0: the loop always ends with a result
    return result


def configure_threads() -> None:
    """Match TensorFlow's thread pools to the CPUs Ray gave this process.

    Ray sets OMP_NUM_THREADS to the trial's CPU count; TensorFlow ignores it and would
    start one thread per core in every concurrent trial, oversubscribing the node.
    """
    n = os.environ.get("OMP_NUM_THREADS")
    if not n or not n.isdigit():
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(int(n), 1))
        tf.config.threading.set_inter_op_parallelism_threads(max(int(n), 1))
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its pools
