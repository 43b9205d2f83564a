"""One trial on one in-process worker: the training loop writing into a trial folder.

No Ray import here: a Tune trial (rmaunet.studies.trainables) calls `run_trial` in its
own process; `rmaunet.training.distributed` runs the same loop on a Ray Train group.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rmaunet.config import TrialConfig
from rmaunet.errors import RmaunetError, StoreError
from rmaunet.storage import is_transient
from rmaunet.training.checkpoint import EpochCheckpoint
from rmaunet.training.loop import TrialLoop, maybe_inject_failure, wants_deterministic_ops
from rmaunet.training.result import TrialResult, write_result
from rmaunet.trial_folder import TrialFolder

__all__ = [
    "TrialResult",
    "run_trial",
    "configure_threads",
    "crash_budget",
    "no_progress_verdict",
    "CRASH_LIMIT",
    "NO_PROGRESS_LIMIT",
]

Reporter = Callable[[dict[str, Any]], None]

# Attempts at one trial that may end in an unexpected exception (a bug, a library's error on
# odd data) before that is recorded as the trial's failure: such an error comes back on every
# attempt, and Ray Tune, which retries a trial after a lost node or process without limit
# (rmaunet.studies.session), would otherwise retry it for ever.
CRASH_LIMIT = 3
# Attempts before this one that may start from the same checkpoint epoch. Each of them lost
# its process or node before another epoch finished (the OOM killer, preemption after
# preemption, a node that cannot write the store): Tune retries such losses without limit,
# since none raises in the trial, so the trial bounds them itself.
NO_PROGRESS_LIMIT = 5
# Failures of the infrastructure, not of the trial: raised to Tune, never counted. (A killed
# process or a lost node raises nothing in the trial at all: Tune sees the actor die.)
_INFRASTRUCTURE = (StoreError, ConnectionError, TimeoutError)


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
    status "failed" and the reason recorded. A store that cannot be reached or written (a
    StoreError: an object store's 503s or timeouts that outlasted their retries) is not the
    trial's fault: it is raised, Ray Tune retries the trial, and no verdict is stored.
    `on_checkpoint` is called after each epoch's checkpoint is complete
    (rmaunet.store.TrialWorkspace copies it to an object store). Deterministic ops are on
    for the trial when wants_deterministic_ops says so, and only for it: the switch is
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
    except StoreError:
        raise  # the store's trouble, not the trial's: a verdict stored now would be reused for good
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


@contextlib.contextmanager
def crash_budget(
    folder: TrialFolder, record_crash: Callable[[str], int], publish: Callable[[], None], node: str | None = None
) -> Iterator[None]:
    """Around one attempt at a trial (its process may be Tune's second or tenth try).

    An exception that is the infrastructure's (`_INFRASTRUCTURE`) passes to Tune uncounted.
    Any other is counted by `record_crash`, which keeps the count where every attempt on any
    node sees it (the store) and returns it; it is raised for Tune to retry, except the
    CRASH_LIMIT-th: that one becomes the trial's verdict, status "failed" with the error as
    its reason, written into `folder` and handed to the store by `publish`.
    """
    try:
        yield
    except _INFRASTRUCTURE:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and is_transient(exc):
            raise  # an object store's 5xx or timeout met outside rmaunet.storage (Ray persisting a checkpoint)
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        try:
            crashes = record_crash(reason)
        except StoreError:
            crashes = 0  # the count cannot be kept while the store fails: not a verdict on the trial
        if crashes < CRASH_LIMIT:
            raise
        write_result(folder, TrialResult.failed(f"crashed on {crashes} attempts; the last: {reason}", 0), node)
        publish()


def no_progress_verdict(
    folder: TrialFolder, record_attempt: Callable[[], int], publish: Callable[[], None], node: str | None = None
) -> bool:
    """At the start of an attempt: counts it (`record_attempt`, kept in the store where every
    node's attempts add up). When NO_PROGRESS_LIMIT attempts before it started from the same
    checkpoint without finishing another epoch, writes the trial's failed verdict into
    `folder`, hands it to the store (`publish`) and returns True: do not train again."""
    try:
        attempts = record_attempt()
    except StoreError:
        return False  # the count cannot be kept while the store fails: not a verdict on the trial
    if attempts <= NO_PROGRESS_LIMIT:
        return False
    reason = (
        f"no epoch finished in {attempts - 1} attempts in a row: each lost its process or node "
        "(out of memory, preempted, or unable to reach the store; see the Ray logs of its nodes)"
    )
    write_result(folder, TrialResult.failed(reason, 0), node)
    publish()
    return True


def configure_threads(count: int | None = None) -> None:
    """Match TensorFlow's thread pools to the CPUs Ray gave this process (or `count`: what
    a cost calibration times a trial's step with).

    Ray sets OMP_NUM_THREADS to the trial's CPU count; TensorFlow ignores it and would
    start one thread per core in every concurrent trial, oversubscribing the node.
    """
    n = str(count) if count is not None else os.environ.get("OMP_NUM_THREADS")
    if not n or not n.isdigit():
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(int(n), 1))
        tf.config.threading.set_inter_op_parallelism_threads(max(int(n), 1))
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its pools
