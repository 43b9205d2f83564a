"""What other tools see of a study: Tune's trial configs, MLflow runs, Optuna's record and its dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from local_ray import start_local_ray
from ports import free_port

from rmaunet.errors import ConfigError
from rmaunet.store import ResultsStore
from rmaunet.studies.grid import tune_params
from rmaunet.studies.runner import plan_study, run_study
from rmaunet.studies.session import tracking_callbacks
from rmaunet.studies.spec import load_spec

TINY_BASE = "{preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 8, augment: []}"


def _two_row_spec(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: table\nbase: {TINY_BASE}\nresources: {{cpu: 1}}\n"
        "rows:\n  - {label: CE}\n  - {label: IoU, set: {loss: iou, augment: [rotation]}}\n"
    )
    return path


# ---------------------------------------------------------------------- Tune's config of a trial
def test_tune_params_name_the_varied_fields_and_the_seed_with_readable_values(l4s_small, tmp_path):
    # Only the fields that differ between the study's trainings (plus the seed) reach Tune,
    # lists as JSON text: nothing Tune cannot show in a table or TensorBoard's HParams.
    plan = plan_study(load_spec(_two_row_spec(tmp_path, "two")), l4s_small, tmp_path / "store")
    params = tune_params(plan)
    assert set(params) == set(plan.unique)
    by_loss = {p["loss"]: p for p in params.values()}
    assert set(by_loss) == {"cross_entropy", "iou"}
    assert by_loss["iou"] == {"loss": "iou", "augment": '["rotation"]', "seed": 0}
    assert by_loss["cross_entropy"]["augment"] == "[]"


# ---------------------------------------------------------------------- tracking callbacks
def test_tune_callback_factories_are_imported_and_called():
    # MODULE:FACTORY names a callable returning a ray.tune.Callback (a Callback class itself is one).
    from ray import tune

    callbacks = tracking_callbacks("study", factories=["ray.tune:Callback"])
    assert len(callbacks) == 1 and isinstance(callbacks[0], tune.Callback)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ray.tune.Callback", "expected MODULE:FACTORY"),
        ("rmaunet.no_such_module:make", "cannot import it"),
        ("rmaunet.studies.session:no_such_factory", "cannot import it"),
        ("builtins:dict", "returned dict, not a ray.tune.Callback"),
    ],
)
def test_a_bad_tune_callback_is_one_line_naming_it(name, message):
    # A misspelt or wrong factory fails before any trial starts, naming the option and the value.
    with pytest.raises(ConfigError, match=f"--tune-callback {name}: {message}"):
        tracking_callbacks("study", factories=[name])


def test_wandb_without_its_package_says_which_extra_to_install():
    # --wandb needs the wandb package; without it the message names the extra.
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match=r"--wandb needs the wandb package: pip install 'rmaunet\[wandb\]'"):
        tracking_callbacks("study", wandb="my-project")


@pytest.mark.slow
def test_mlflow_gets_one_run_per_training_with_its_parameters_and_epoch_metrics(l4s_small, tmp_path, monkeypatch):
    # --mlflow (rmaunet.studies.tracking): the study is the experiment, each training a run
    # holding its row, varied fields and identity, one metric point per epoch, the selected
    # epoch's test metrics and its weights as an artifact, and none of Tune's bookkeeping.
    pytest.importorskip("mlflow", reason="mlflow comes with the test extra")
    import ray
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3 refuses a new file store (./mlruns) by default
    monkeypatch.chdir(tmp_path)  # a SQLite store's artifacts go to ./mlruns
    spec = load_spec(_two_row_spec(tmp_path, "tracked"))
    start_local_ray()
    try:
        plan = run_study(
            spec,
            l4s_small,
            tmp_path / "store",
            log=lambda m: None,
            callbacks=tracking_callbacks(spec.name, mlflow=uri, storage=str(tmp_path / "store")),
        )
    finally:
        ray.shutdown()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["rmaunet_trial_id"] for r in runs} == set(plan.unique)
    assert {r.data.params["loss"] for r in runs} == {"cross_entropy", "iou"}
    assert {r.data.params["row"] for r in runs} == {"CE", "IoU"}
    rows = ResultsStore(tmp_path / "store").read("tracked").set_index("trial_id")
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_f1")
        assert [m.step for m in history] == [1, 2]  # one point per epoch; the final report has none
        tid = run.data.params["rmaunet_trial_id"]
        assert run.data.metrics["test_f1"] == pytest.approx(rows.loc[tid, "test_f1"], abs=0.02)
        assert not {"pid", "timestamp", "done", "rmaunet_finished", "time_total_s"} & set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"best.weights.h5", "config.json", "result.json"} <= artifacts


@pytest.mark.slow
def test_mlflow_tracking_logs_off_tunes_loop_what_a_reader_wants(tmp_path, monkeypatch):
    # Without Ray training: Tune's events for one trial, as the driver sees them. The run gets
    # the row, seed and identity as parameters, per-epoch curves (no bookkeeping), the selected
    # epoch's test metrics, the trial's files as artifacts, and a report run with the table.
    pytest.importorskip("mlflow", reason="mlflow comes with the test extra")
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from rmaunet.studies.progress import FINISHED
    from rmaunet.studies.tracking import MLflowTracking
    from rmaunet.trial_folder import TrialFolder

    store = tmp_path / "store"
    folder = TrialFolder(store / "trials" / ("a" * 16)).create()
    folder.write_config({"loss": "iou"})
    folder.write_result({"status": "ok"})
    folder.best_weights.write_bytes(b"weights")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a SQLite store's artifacts go to ./mlruns
    tracking = MLflowTracking(uri, "study", str(store))
    trial = SimpleNamespace(
        trial_id="t1", config={"rmaunet_trial_id": "a" * 16, "row": "IoU", "seed": 2, "loss": "iou"}, last_result={}
    )
    tracking.setup()
    tracking.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        result = {"epoch": epoch, "val_f1": 0.1 * epoch, "loss": 1.0 / epoch, "pid": 42, "timestamp": 1, "done": False}
        tracking.on_trial_result(0, [trial], trial, result)
    trial.last_result = {FINISHED: 1, "final_val_f1": 0.2, "final_test_f1": 0.18, "val_f1": 0.2}
    tracking.on_trial_complete(0, [trial], trial)
    tracking.on_experiment_end([trial])
    table = tmp_path / "table.md"
    table.write_text("| row | F1 |\n")
    tracking.log_report({"markdown": table})
    assert not tracking.errors

    client = MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("study").experiment_id])}
    assert set(runs) == {"IoU (seed 2)", "study report"}
    run = runs["IoU (seed 2)"]
    assert run.info.status == "FINISHED" and run.data.params["row"] == "IoU" and run.data.params["seed"] == "2"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_f1")] == [(1, 0.1), (2, 0.2)]
    assert run.data.metrics["test_f1"] == 0.18 and run.data.metrics["selected_val_f1"] == 0.2
    assert not {"pid", "timestamp", "done", FINISHED} & set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"best.weights.h5", "config.json", "result.json"}
    assert [a.path for a in client.list_artifacts(runs["study report"].info.run_id)] == ["table.md"]


# ---------------------------------------------------------------------- Optuna
def _searcher(url: str, name: str):
    """The searcher run_search builds, on its own Optuna study in `url`."""
    import optuna

    from rmaunet.studies.search import _optuna_searcher

    rdb = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True)
    return _optuna_searcher(
        space={"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
        metric="objective",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
        study_name=name,
        storage=rdb,
    )


def _tell_three_trials(searcher) -> None:
    """One trial that finished, one ASHA stopped after its first epoch, one that failed."""
    from rmaunet.studies.progress import FINISHED

    for tid in ("finished", "stopped", "failed"):
        searcher.suggest(tid)
    searcher.on_trial_result("finished", {"objective": 0.30, "training_iteration": 1, "epoch": 1})
    searcher.on_trial_result("finished", {"objective": 0.40, "training_iteration": 2, "epoch": 2})
    final = {"objective": 0.35, "training_iteration": 3, "epoch": 3, FINISHED: 1}
    searcher.on_trial_result("finished", final)
    searcher.on_trial_complete("finished", final)
    stopped = {"objective": 0.90, "training_iteration": 1, "epoch": 1}
    searcher.on_trial_result("stopped", stopped)
    searcher.on_trial_complete("stopped", stopped)
    searcher.on_trial_complete("failed", None, error=True)


def test_optuna_is_told_only_objectives_stopped_trials_are_pruned(tmp_path):
    # A finished trial is COMPLETE with its final objective; a stopped one PRUNED (its higher
    # epoch number never competes with objectives: it is not the best trial); a failed one FAIL.
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _tell_three_trials(_searcher(url, "told"))
    study = optuna.load_study(study_name="told", storage=url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]
    assert trials[0].value == pytest.approx(0.35) and trials[0].intermediate_values == {1: 0.30, 2: 0.40, 3: 0.35}
    assert trials[1].intermediate_values == {1: 0.90}
    assert study.best_trial.number == 0


def _get_json(url: str, deadline: float) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_optuna_dashboard_serves_a_search_study_over_http(tmp_path):
    # optuna-dashboard opens the search's SQLite study: its trials, states, values and
    # per-epoch intermediate values come back through the dashboard's HTTP API.
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard comes with the test extra")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _tell_three_trials(_searcher(url, "served"))
    port = free_port()
    server = subprocess.Popen(
        # The command the package installs beside this Python: what a user runs.
        [str(Path(sys.executable).with_name("optuna-dashboard")), url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["served"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline)
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = sorted(detail["trials"], key=lambda t: t["number"])
    assert [t["state"] for t in trials] == ["Complete", "Pruned", "Fail"]
    assert trials[0]["values"] == [pytest.approx(0.35)]
    assert [v["step"] for v in trials[1]["intermediate_values"]] == [1]
    assert trials[0]["params"][0]["name"] == "learning_rate"
