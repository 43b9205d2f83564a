"""Keeping library start-up chatter out of what a user reads.

TensorFlow's C++ side writes its start-up lines (absl's "before InitializeLog" notice, CUDA
probing on a machine without a GPU, oneDNN) straight to file descriptor 2, before its own
log level applies: no environment variable silences them. Ray forwards every worker's
stderr to the driver, so each trial process would add them to the study's log. They are
held back instead, and replayed only when something other than a user error escapes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from rmaunet.errors import RmaunetError

__all__ = ["native_stderr_held_back", "quiet_worker"]

# Python loggers whose INFO / WARNING lines repeat in every trial process and say nothing a
# user acts on (TensorFlow's retracing and deprecation notes, Ray Train's "Checkpoint
# successfully created", absl's start-up notes). Errors still come through.
CHATTY_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "ray.train": logging.WARNING}


@contextmanager
def native_stderr_held_back() -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 while the block runs; replay it
    if the block fails with anything but a user error (RmaunetError, already one clear line)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hold back
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        except RmaunetError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                os.write(2, held.read())


_quieted = False


def quiet_worker(tensorflow: bool = True) -> None:
    """In a trial's process, once: the chatty loggers to their levels, then TensorFlow imported
    and its devices probed (where the CUDA lines come from) with native stderr held back.
    A user who wants them back sets RMAUNET_WORKER_CHATTER=1. `tensorflow` False: the loggers
    only, for a process that never imports TensorFlow (one that drives a data-parallel run)."""
    global _quieted
    if _quieted or os.environ.get("RMAUNET_WORKER_CHATTER") == "1":
        return
    for name, level in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    if not tensorflow:
        return
    with native_stderr_held_back():
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)
        tf.config.list_physical_devices()
    _quieted = True
