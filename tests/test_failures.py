"""A failed trial says which trial, where it ran and why; worker output reaches the driver."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rmaunet.studies.progress import ERROR_LINES, Progress

TRACEBACK = (
    "Failure # 3 (occurred at 2026-12-01_12-00-00)\n"
    "ray::ImplicitFunc.train() (pid=4242, ip=10.0.0.7, actor_id=abc)\n"
    + "".join(f'  File "/home/ray/rmaunet/frame{i}.py", line {i}, in step{i}\n' for i in range(20))
    + "\nRuntimeError: tile 17 of /data/l4s/img has 13 bands, expected 14\n"
)


def _trial(tmp_path: Path, error: str | None, last_result: dict[str, Any], location_host: str | None = None) -> Any:
    """The attributes of Tune 2.60's Trial that the progress callback reads."""
    error_file = None
    if error is not None:
        error_file = tmp_path / "error.txt"
        error_file.write_text(error)
    return SimpleNamespace(
        error_file=str(error_file) if error_file else None,
        num_failures=3,
        last_result=last_result,
        temporary_state=SimpleNamespace(location=SimpleNamespace(hostname=location_host)),
        config={},
    )


def _messages(callback: str, trial: Any) -> list[str]:
    messages: list[str] = []
    # The failure callbacks never touch the row writer.
    progress = Progress(None, lambda t: "U-Net & IoU Loss", messages.append, lambda t, stopped: None, total=4)
    getattr(progress, callback)(iteration=0, trials=[trial], trial=trial)
    return messages


def test_failed_trial_names_the_trial_its_node_and_the_end_of_its_error(tmp_path):
    # The message after the retries: label, host and IP from the last result, attempts, the error's last lines.
    trial = _trial(tmp_path, TRACEBACK, {"node_ip": "10.0.0.7", "hostname": "gpu-worker-3"})
    [message] = _messages("on_trial_error", trial)
    head, *tail = message.splitlines()
    assert "U-Net & IoU Loss on gpu-worker-3 (10.0.0.7)" in head and "failed 3 time(s)" in head
    assert trial.error_file in head
    assert len(tail) == ERROR_LINES
    assert tail[-1].strip() == "RuntimeError: tile 17 of /data/l4s/img has 13 bands, expected 14"
    assert "frame19.py" in tail[-2] and "frame10.py" not in message


def test_failed_trial_without_a_result_or_error_file_says_so(tmp_path):
    # A trial that died before reporting anything: the node falls back to Tune's location, else "unknown".
    [located] = _messages("on_trial_error", _trial(tmp_path, None, {}, location_host="10.0.0.9"))
    assert "on 10.0.0.9:" in located and "Tune recorded no error." in located
    [unknown] = _messages("on_trial_error", _trial(tmp_path, None, {}))
    assert "on an unknown node (it never reported)" in unknown and len(unknown.splitlines()) == 1


def test_retried_trial_is_one_line_with_its_cause(tmp_path):
    # A trial that Tune retries: one line naming the node and the error's last line.
    [message] = _messages("on_trial_recover", _trial(tmp_path, TRACEBACK, {"node_ip": "10.0.0.7"}))
    assert message == (
        "  error  U-Net & IoU Loss on 10.0.0.7: the trial died "
        "(RuntimeError: tile 17 of /data/l4s/img has 13 bands, expected 14); retrying, from its last epoch checkpoint"
    )


def test_the_fake_trial_matches_tunes_trial():
    # The attributes the fake trial stands in for exist on Ray Tune's Trial (a rename would fail here).
    from ray.tune.experiment import trial as tune_trial

    for name in ("error_file", "num_failures", "last_result"):
        assert isinstance(getattr(tune_trial.Trial, name), property), name
    assert tune_trial._TemporaryTrialState().location.hostname is None


@pytest.mark.slow
def test_failing_trial_reports_its_cause_on_the_driver(l4s_small, tmp_path, monkeypatch, capfd):
    # On connect_ray's own local runtime: a trial that raises, with no retries left, is named with
    # its node and its exception; what worker processes print reaches the driver, with TensorFlow's
    # C++ log level set for them.
    import ray

    from rmaunet.store import ResultsStore
    from rmaunet.studies import session
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("RMAUNET_FAIL_AFTER_EPOCH", "1")  # inherited by the local runtime's workers
    monkeypatch.setattr(session, "TRIAL_RETRIES", 0)
    spec_path = tmp_path / "fails.yaml"
    spec_path.write_text(
        "name: fails\nkind: table\nresources: {cpu: 1}\n"
        "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 8, augment: []}\n"
        "rows:\n  - label: Doomed baseline\n"
    )

    @ray.remote(num_cpus=0)
    def speak() -> str:
        print("worker says hello to the driver")
        return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "")

    messages: list[str] = []
    with session.ray_session(None, messages.append):
        run_study(load_spec(spec_path), l4s_small, tmp_path / "store", log=messages.append)
        tf_log_level = ray.get(speak.remote())
        time.sleep(3)  # the driver prints worker lines from a background thread
    driver_output = capfd.readouterr()

    [error] = [m for m in messages if m.startswith("  error")]
    assert error.startswith("  error  Doomed baseline on ")
    assert "failed 1 time(s)" in error
    assert error.splitlines()[-1].strip() == "RuntimeError: injected failure after epoch 1 (RMAUNET_FAIL_AFTER_EPOCH)"
    assert ResultsStore(tmp_path / "store").read("fails").empty
    # Ray prefixes a worker's lines with "(task pid=…)" on the driver, in colour.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", driver_output.out + driver_output.err)
    assert re.search(r"\(speak pid=\d+\) worker says hello to the driver", plain)
    assert tf_log_level == "2"
