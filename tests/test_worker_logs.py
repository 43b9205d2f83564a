"""Worker output forwarded to a study's driver, without what workers print as Ray ends them
(rmaunet.studies.worker_logs)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from rmaunet.studies.worker_logs import ExitNoiseFilter, install

# What a trial's process printed in a CI run when Ray's SIGTERM reached it inside a weakref
# callback, and the abseil line another worker printed as it exited, as Ray forwarded them.
SIGTERM_TRACEBACK = [
    "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7fd6cbd26ac0>",
    "Traceback (most recent call last):",
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/_weakrefset.py", line 39, in _remove',
    "    def _remove(item, selfref=ref(self)):",
    "",
    '  File "/check/work/main/.venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1063, '
    "in sigterm_handler",
    "    raise_sys_exit_with_custom_error_message(",
    '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
    "SystemExit: 1",
]
ABSEIL_EXIT = "[mutex.cc : 452] RAW: Lock blocking 0x55d23d114210   @ 0x7fc47e22b1a2 0x7fc47d2fb23c 0x7fc47dbc2022"
FAILING_TRIAL = [
    "Traceback (most recent call last):",
    '  File "/app/rmaunet/training/trial.py", line 88, in run_trial',
    "    raise ValueError('NaN pixels in train/image_3.h5')",
    "ValueError: NaN pixels in train/image_3.h5",
]


def _batch(lines: list[str], pid: int = 7, is_err: bool = True) -> dict[str, Any]:
    return {"pid": pid, "is_err": is_err, "lines": lines, "actor_name": "train_one", "ip": "127.0.0.1"}


def _run(batches: list[dict[str, Any]]) -> list[tuple[Any, list[str]]]:
    printed: list[tuple[Any, list[str]]] = []
    keep = ExitNoiseFilter(lambda data: printed.append((data["pid"], data["lines"])))
    for data in batches:
        keep(data)
    return printed


def test_the_traceback_of_a_worker_ray_ends_is_dropped_and_the_lines_around_it_kept_in_order() -> None:
    printed = _run([_batch(["epoch 3/3 done", *SIGTERM_TRACEBACK, "last words"]), _batch([ABSEIL_EXIT], pid=8)])
    assert printed == [(7, ["epoch 3/3 done", "last words"])]


def test_a_traceback_split_across_batches_is_held_until_its_end_and_other_processes_pass_meanwhile() -> None:
    printed = _run(
        [
            _batch(SIGTERM_TRACEBACK[:4]),
            _batch(["a line of another process"], pid=8),
            _batch(["the same pid on stdout"], is_err=False),
            _batch(SIGTERM_TRACEBACK[4:]),
            _batch(FAILING_TRIAL[:2]),
            _batch(FAILING_TRIAL[2:] + ["after it"]),
        ]
    )
    # A trial's own failure reaches the user whole, once its exception line has arrived.
    assert printed == [
        (8, ["a line of another process"]),
        (7, ["the same pid on stdout"]),
        (7, [*FAILING_TRIAL, "after it"]),
    ]


def test_a_systemexit_not_raised_by_rays_handler_and_a_traceback_that_never_ends_still_pass() -> None:
    own_exit = ["Traceback (most recent call last):", '  File "job.py", line 3, in <module>', "SystemExit: 2"]
    assert _run([_batch(own_exit)]) == [(7, own_exit)]
    endless = ["Traceback (most recent call last):"] + [f'  File "f{i}.py", line 1, in g' for i in range(500)]
    keep = ExitNoiseFilter(lambda data: None)
    keep(_batch(endless[:399]))
    assert len(keep.held[(7, True)]) == 399  # held: its end may come in the next batch
    assert _run([_batch(endless)]) == [(7, endless)]  # past 400 lines, no longer held back


# An idle Ray worker (no task, no actor: "(pid=23273)") aborting in abseil, as a make test run printed it.
IDLE_ABORT = [
    "[mutex.cc : 1957] RAW: Check (v & (kMuWait | kMuWrWait)) != kMuWrWait failed: Lock: Mutex corrupt: "
    "waiting writer with no waiters: 0x7f5a00000463",
    "*** SIGABRT received at time=1796683524 on cpu 0 ***",
    "PC: @     0x7f5af90a8eec  (unknown)  (unknown)",
    "    @     0x7f5af905a050       7504  (unknown)",
    "[2026-12-07 22:45:24,242 E 23273 23772] logging.cc:474: *** SIGABRT received at time=1796683524 on cpu 0 ***",
    "Fatal Python error: Aborted",
    "",
    "Extension modules: msgpack._cmsgpack, google._upb._message, psutil._psutil_linux, yaml._yaml, ray._raylet",
]


def test_an_idle_workers_abseil_abort_is_one_line_and_a_busy_processs_crash_is_kept_whole() -> None:
    idle = {"actor_name": "", "task_name": ""}
    printed = _run([{**_batch(IDLE_ABORT[:3], pid=9), **idle}, {**_batch(IDLE_ABORT[3:], pid=9), **idle}])
    [(pid, [line])] = printed
    assert pid == 9 and line.startswith("a Ray worker aborted in abseil while it held no task (")
    assert "Mutex corrupt" in line
    # The same dump from a trial's process is the trial's: every line reaches the user.
    assert _run([_batch(IDLE_ABORT)]) == [(7, IDLE_ABORT)]


def test_install_wraps_rays_own_printer_once_under_the_name_ray_removes_it_by() -> None:
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed: list[list[str]] = []
    dispatcher.add_handler("ray_print_logs", lambda data: printed.append(data["lines"]))
    try:
        assert install() is True and install() is True
        assert [name for name, _ in dispatcher.handlers].count("ray_print_logs") == 1
        dispatcher.emit(_batch(["kept", *SIGTERM_TRACEBACK]))
        assert printed == [["kept"]]
    finally:
        dispatcher.remove_handler("ray_print_logs")
    assert install() is False  # no printer (log_to_driver=False): nothing to wrap


DRIVER = """
import gc, os, signal, sys, time, weakref
import ray
from rmaunet.studies.session import connect_ray

connect_ray(None, lambda line: print(line, flush=True))

@ray.remote(num_cpus=0)
class Trial:
    def end(self):
        print("epoch 1/1 done", flush=True)
        class Tensor: pass
        def collected(_):  # Ray's SIGTERM arrives while Python runs a weakref callback
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        tensor = Tensor(); self.ref = weakref.ref(tensor, collected); del tensor; gc.collect()
        print("still here", flush=True)
        return True

assert ray.get(Trial.remote().end.remote())
time.sleep(2)  # the worker's lines reach the driver about once a second
ray.shutdown()
"""


@pytest.mark.slow
def test_a_study_driver_prints_its_workers_lines_but_not_the_traceback_of_rays_sigterm(tmp_path) -> None:
    # A real driver, connected as `rmaunet study run` connects, and a real worker that Ray's
    # SIGTERM handler interrupts inside a garbage-collection callback (as in a CI run at the
    # end of a study): the worker's own lines reach the driver's output, the traceback does not.
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "epoch 1/1 done" in text and "still here" in text, text
    assert "sigterm_handler" not in text and "Traceback" not in text and "Exception ignored" not in text, text
