"""A failed trial says which trial, where it ran and why; worker output reaches the driver."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from local_ray import start_local_ray

from rmaunet.errors import StoreError, TransientStoreError
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
    progress = Progress(
        None, lambda t: "U-Net & IoU Loss", messages.append, lambda t, stopped: None, total=4, epochs=lambda t: 30
    )
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


def _workspace(tmp_path: Path, where: str, request: pytest.FixtureRequest) -> Any:
    from rmaunet.store import ResultsStore

    root = tmp_path / "store" if where == "local" else request.getfixturevalue("s3_bucket") + "/store"
    workspace = ResultsStore(root).workspace("t" * 16)
    workspace.begin({"seed": 0})
    return workspace


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_error_that_repeats_becomes_the_trials_failure_on_its_third_attempt(tmp_path, where, request):
    # Tune retries a trial without limit; the trial counts its own crashes in the store (every
    # node's attempts add up) and records the third as its verdict instead of raising it.
    from rmaunet.training.trial import CRASH_LIMIT, crash_budget

    workspace = _workspace(tmp_path, where, request)
    store = workspace.store
    for attempt in range(1, CRASH_LIMIT):
        with pytest.raises(ValueError, match="bad tile"):
            with crash_budget(workspace.folder, workspace.record_crash, workspace.finish, "node-a"):
                raise ValueError(f"bad tile (attempt {attempt})")
        assert store.finished_trial("t" * 16) is None
    with crash_budget(workspace.folder, workspace.record_crash, workspace.finish, "node-b"):
        raise ValueError("bad tile (attempt 3)\nsecond line")
    verdict = store.finished_trial("t" * 16)
    assert verdict["status"] == "failed" and verdict["node"] == "node-b"
    assert verdict["reason"] == "crashed on 3 attempts; the last: ValueError: bad tile (attempt 3)"
    assert workspace.remote.read_bytes("crashes.json") is None  # finished: the count is cleared


@pytest.mark.parametrize("where", ["local", "s3"])
def test_attempts_lost_without_a_new_epoch_end_in_a_verdict(tmp_path, where, request):
    # A process the OOM killer takes raises nothing in the trial; Tune retries it without limit.
    # Each attempt counts itself in the store at its start: the count restarts when an epoch's
    # checkpoint lands, and past NO_PROGRESS_LIMIT lost attempts from one epoch the trial fails.
    from rmaunet.training.trial import NO_PROGRESS_LIMIT, no_progress_verdict

    workspace = _workspace(tmp_path, where, request)
    store = workspace.store

    def attempt(node: str) -> bool:
        return no_progress_verdict(workspace.folder, workspace.record_attempt, workspace.finish, node)

    for _ in range(NO_PROGRESS_LIMIT):
        assert not attempt("node-a")
    workspace.remote.write_bytes(workspace.STATE, json.dumps({"epoch": 2}).encode())  # an epoch landed
    for _ in range(NO_PROGRESS_LIMIT):
        assert not attempt("node-a")
    assert store.finished_trial("t" * 16) is None
    assert attempt("node-b")
    verdict = store.finished_trial("t" * 16)
    assert verdict["status"] == "failed" and verdict["node"] == "node-b"
    assert verdict["reason"].startswith(f"no epoch finished in {NO_PROGRESS_LIMIT} attempts in a row")
    assert workspace.remote.read_bytes("attempts.json") is None  # finished: the count is cleared


@pytest.mark.parametrize(
    "error",
    [
        TransientStoreError("s3://b/x: cannot write, still failing after 6 tries"),
        StoreError("s3://b/x: cannot write (ACCESS_DENIED)"),
        ConnectionResetError("reset by peer"),
        OSError("AWS Error SLOW_DOWN during PutObject operation"),
    ],
    ids=["transient-store", "store", "connection-reset", "s3-slow-down"],
)
def test_the_infrastructures_errors_never_count_against_a_trial(tmp_path, error, request):
    # A store that fails, a dropped connection: raised for Tune to retry, never counted, never a verdict.
    from rmaunet.training.trial import CRASH_LIMIT, crash_budget

    workspace = _workspace(tmp_path, "local", request)
    for _ in range(CRASH_LIMIT + 1):
        with pytest.raises(type(error)):
            with crash_budget(workspace.folder, workspace.record_crash, workspace.finish):
                raise error
    assert workspace.store.finished_trial("t" * 16) is None
    assert workspace.remote.read_bytes("crashes.json") is None


@pytest.mark.slow
def test_a_store_error_while_training_is_raised_not_recorded(l4s_small, tmp_path):
    # The case: an epoch checkpoint's upload meets S3 503s past every retry. The trial
    # raises (Tune retries it, resuming); it writes no failed result a rerun would reuse.
    from rmaunet.config import TrialConfig
    from rmaunet.errors import TransientStoreError
    from rmaunet.training.trial import run_trial
    from rmaunet.trial_folder import TrialFolder

    def upload() -> None:
        raise TransientStoreError("s3://b/trials/t/checkpoint/state.json: cannot write, still failing after 6 tries")

    config = TrialConfig(base_filters=4, depth=2, epochs=1, batch_size=8, augment=())
    with pytest.raises(TransientStoreError):
        run_trial(config, l4s_small, tmp_path / "trial", on_checkpoint=upload)
    assert TrialFolder(tmp_path / "trial").read_result() is None


def _tiny_spec(tmp_path: Path, name: str, label: str, epochs: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: table\nresources: {{cpu: 1}}\n"
        f"base: {{preset: baseline, base_filters: 4, depth: 2, epochs: {epochs}, batch_size: 8, augment: []}}\n"
        f"rows:\n  - label: {label}\n"
    )
    return path


@pytest.mark.slow
# Four trial processes, each importing TensorFlow and building its model before its epoch: 15 s
# each alone, but 120-215 s each measured in a fresh-clone `make test` while the suite's other
# Ray modules peaked beside it, which took the test past the 900 s hang guard while it was
# still progressing (attempt 4 of 4). The guard stays; this test gets twice as long.
@pytest.mark.timeout(1800)
def test_a_trial_whose_process_is_killed_three_times_still_finishes(l4s_small, tmp_path):
    # Spot preemption, three times over: the trial's worker process is SIGKILLed after each of
    # its first three attempts' first epoch. Tune retries it every time (a lost process uses no
    # budget), each attempt resumes from the last checkpoint, and the fourth finishes.
    import ray
    from ray import tune

    from rmaunet.store import ResultsStore
    from rmaunet.studies.runner import run_study
    from rmaunet.studies.spec import load_spec

    class Preempt(tune.Callback):
        def __init__(self) -> None:
            self.killed: list[int] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "epoch" in result and len(self.killed) < 3 and result["pid"] not in self.killed:
                self.killed.append(result["pid"])
                os.kill(result["pid"], signal.SIGKILL)

    ray.shutdown()
    start_local_ray()
    preempt = Preempt()
    messages: list[str] = []
    try:
        spec = load_spec(_tiny_spec(tmp_path, "preempted", "CE", epochs=4))
        run_study(spec, l4s_small, tmp_path / "store", log=messages.append, callbacks=[preempt])
    finally:
        ray.shutdown()
    rows = ResultsStore(tmp_path / "store").read("preempted")
    assert len(preempt.killed) == 3 and sum(m.startswith("  error") for m in messages) == 3, messages
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok", messages[-10:]
    [result] = [json.loads(p.read_text()) for p in (tmp_path / "store" / "trials").glob("*/result.json")]
    assert result["resumed_from"] == 3 and [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_failing_trial_reports_its_cause_on_the_driver(l4s_small, tmp_path, monkeypatch, capfd):
    # On connect_ray's own local runtime: a trial that raises is named with its node and its
    # exception, then retried; what worker processes print reaches the driver, with TensorFlow's
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
    spec_path = _tiny_spec(tmp_path, "fails", "Doomed baseline", epochs=2)

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
    assert error.startswith("  error  Doomed baseline (seed 0) on ")
    assert "the trial died (RuntimeError: injected failure after epoch 1 (RMAUNET_FAIL_AFTER_EPOCH)); retrying" in error
    assert list(ResultsStore(tmp_path / "store").read("fails")["status"]) == ["ok"]
    # Retried from its checkpoint: epoch 2 trained once more, epoch 1 not again.
    [result] = [json.loads(p.read_text()) for p in (tmp_path / "store" / "trials").glob("*/result.json")]
    assert result["resumed_from"] == 1 and [h["epoch"] for h in result["history"]] == [1, 2]
    # Ray prefixes a worker's lines with "(task pid=…)" on the driver, in colour.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", driver_output.out + driver_output.err)
    assert re.search(r"\(speak pid=\d+\) worker says hello to the driver", plain)
    assert tf_log_level == "2"


def test_study_run_exits_0_only_when_every_planned_training_is_ok(l4s_small, tmp_path, capsys):
    # The status a script reads: 1 with one line while a training failed (the rerun of an
    # all-failed study too: its verdicts are reused) or has not finished; 0 once all are ok.
    from rmaunet.store import ResultsStore
    from rmaunet.studies.plan import plan_study
    from rmaunet.studies.spec import load_spec
    from rmaunet.study_cli import _exit_status

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(
        "name: s\nkind: table\nresources: {cpu: 1}\n"
        "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 8, augment: []}\n"
        "rows:\n  - label: CE\n  - {label: IoU, set: {loss: iou}}\n"
    )
    spec, store = load_spec(spec_path), ResultsStore(tmp_path / "store")
    plan = plan_study(spec, l4s_small, store.storage, check_data=False)
    ce, iou = list(plan.unique)

    def result(tid: str, status: str, reason: str = "") -> None:
        store.trial(tid).create().write_result({"status": status, "reason": reason})

    assert _exit_status(spec, store.storage.uri, plan) == 1
    assert capsys.readouterr().err == "rmaunet: study s: 2 did not finish (rerun to continue)\n"
    result(ce, "failed", "DataError: tiles of 30 px do not halve 2 times")
    result(iou, "failed", "out of memory: OOM when allocating")
    assert _exit_status(spec, store.storage.uri, plan) == 1
    first_failure = "(first: 'CE': DataError: tiles of 30 px do not halve 2 times)"
    assert capsys.readouterr().err == f"rmaunet: study s: 2 of 2 trainings failed {first_failure}\n"
    result(ce, "ok")
    result(iou, "ok")
    assert _exit_status(spec, store.storage.uri, plan) == 0 and capsys.readouterr().err == ""
