"""The study engine on real Ray: reuse, a threshold study from stored maps, resume after a killed
driver, a search, Tune's own restore. (A lost node: tests/test_multinode.py; a killed trial
process: tests/test_failures.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_ray import start_local_ray

from rmaunet.errors import plural
from rmaunet.store import ResultsStore
from rmaunet.studies.runner import plan_study, run_study
from rmaunet.studies.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

TINY_BASE = "{preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 8, augment: []}"


def _spec(tmp_path: Path, name: str, rows: list[tuple[str, str]], epochs: int = 2, extra: str = "") -> Path:
    lines = [
        f"name: {name}",
        "kind: table",
        f"base: {TINY_BASE.replace('epochs: 2', f'epochs: {epochs}')}",
        "resources: {cpu: 1}",
        extra,
        "rows:",
    ]
    for label, override in rows:
        lines.append(f"  - {{label: {label!r}{', set: ' + override if override else ''}}}")
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def local_ray():
    import ray

    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shared_study(local_ray, l4s_small, tmp_path_factory):
    """One table study trained once for the module's tests (two rows, one training at a time),
    and its IoU row trained alone in a store of its own."""
    folder = tmp_path_factory.mktemp("shared")
    rows = [("CE", ""), ("IoU", "{loss: iou}")]
    spec = load_spec(_spec(folder, "shared", rows, extra="max_concurrent: 1"))
    alone = load_spec(_spec(folder, "alone", [("IoU", "{loss: iou}")]))
    messages: list[str] = []
    try:
        plan = run_study(spec, l4s_small, folder / "a", log=messages.append)
        run_study(alone, l4s_small, folder / "b", log=messages.append)
    except BaseException:
        print("\n".join(messages[-60:]))  # the driver's lines, in the failure's captured output
        raise
    return {"folder": folder, "spec": spec, "plan": plan, "store": folder / "a", "alone": folder / "b"}


@pytest.mark.slow
def test_rerun_trains_nothing_and_a_new_row_trains_only_itself(shared_study, l4s_small):
    # Dedup by identity: a finished study reruns nothing; an added row (and a second table
    # sharing a config) trains only what is new.
    storage, folder = shared_study["store"], shared_study["folder"]
    rows = ResultsStore(storage).read("shared")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"}

    again = plan_study(shared_study["spec"], l4s_small, storage)
    assert again.to_train == [] and len(again.finished) == 2

    grown = _spec(folder, "shared", [("CE", ""), ("IoU", "{loss: iou}"), ("Focal", "{loss: focal}")])
    plan = plan_study(load_spec(grown), l4s_small, storage)
    assert [p.label for p in plan.to_train] == ["Focal"]

    other = _spec(folder, "other_table", [("same as CE", ""), ("Tversky", "{loss: tversky}")])
    plan = plan_study(load_spec(other), l4s_small, storage)
    assert [p.label for p in plan.to_train] == ["Tversky"]


@pytest.mark.slow
def test_threshold_study_costs_no_training(shared_study, l4s_small, tmp_path):
    # Table IX from the stored probabilities of an existing training: zero trainings, one row
    # per threshold, the chosen threshold picked on validation.
    storage = shared_study["store"]
    spec_path = tmp_path / "th.yaml"
    spec_path.write_text(f"name: th\nkind: threshold\nbase: {TINY_BASE}\nthresholds: [0.2, 0.5, 0.8]\n")
    spec = load_spec(spec_path)
    assert plan_study(spec, l4s_small, storage).to_train == []
    run_study(spec, l4s_small, storage, log=lambda m: None)
    rows = ResultsStore(storage).read("th")
    assert sorted(rows["threshold"]) == [0.2, 0.5, 0.8]
    best_val = rows.loc[rows["val_f1"].idxmax(), "threshold"]
    assert set(rows["chosen_threshold"]) == {best_val}
    assert rows["test_f1"].nunique() > 1 or rows["test_f1"].eq(0).all()


@pytest.mark.slow
def test_killed_driver_continues_without_duplicates(l4s_small, tmp_path):
    # Kill a real study run (driver and its local Ray) mid-study; the same command finishes it:
    # finished trials are kept (not retrained), none is duplicated, the rest run.
    spec = _spec(
        tmp_path,
        "killme",
        # Three rows, two at once (on any number of cores), the third after one of them: the
        # kill at the first finished row leaves 1 or 2 done and the rest for the rerun.
        [(f"row {i}", f"{{seed: 0, learning_rate: {0.0004 * (i + 1)}}}") for i in range(3)],
        epochs=3,
        extra="max_concurrent: 2",
    )
    storage = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "rmaunet",
        "study",
        "run",
        str(spec),
        "--data",
        str(l4s_small),
        "--storage",
        str(storage),
    ]
    # The driver's output goes to a file: worker output reaches the driver now, and an unread
    # pipe fills up and blocks it.
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rows_dir = storage / "rows" / "killme"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and len(list(rows_dir.glob("*.parquet"))) < 1:
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.5)
    # The driver and the local Ray runtime it started, all at once (a crash): the runtime's
    # daemons run in sessions of their own, so they are found by parentage, not by group.
    # (`ray stop` would also kill this test's own Ray driver.)
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    log.close()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in (storage / "trials").glob("*/result.json")}
    assert 1 <= len(done_before) < 3

    # The killed driver's lease is still fresh: --take-over, as for any driver known to be dead.
    out = subprocess.run([*cmd, "--take-over"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{plural(3 - len(done_before), 'training')} to run, {len(done_before)} reused" in out.stdout
    # What the user reads is rmaunet's: Ray's and Tune's banners, TensorFlow's and CUDA's start-up
    # lines from every trial process are kept out (at least 9 lines in 10 are rmaunet's own,
    # time-stamped), each epoch line names the row's seed and "epoch k/N", and no control
    # character reaches a log file.
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    ours = [line for line in lines if re.match(r"\[\d\d:\d\d:\d\d\] ", line)]
    assert len(ours) >= 0.9 * len(lines), "\n".join(line for line in lines if line not in ours)
    assert any(re.search(r"epoch 3/3  row \d \(seed 0\)", line) for line in ours), "\n".join(ours)
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    rows = ResultsStore(storage).read("killme")
    assert len(rows) == 3 and rows["row"].is_unique and set(rows["status"]) == {"ok"}
    for tid, mtime in done_before.items():  # kept, not retrained
        assert (storage / "trials" / tid / "result.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_search_runs_optuna_with_asha_and_resumes_its_budget(local_ray, l4s_small, tmp_path):
    # A seeded TPE + ASHA search: every sampled config gets a row (finished or stopped), the
    # Optuna study lives in SQLite in the store, and a rerun spends no more of the budget.
    import optuna

    spec_path = tmp_path / "search.yaml"
    spec_path.write_text(
        f"name: srch\nkind: search\nbase: {TINY_BASE.replace('epochs: 2', 'epochs: 3, loss: focal_iou')}\n"
        "resources: {cpu: 1}\nbudget: 4\n"
        "space:\n  loss_params.alpha: {uniform: [0.0, 1.0]}\n  attention: {choice: [none, se]}\n"
        "  threshold: {uniform: [0.3, 0.9]}\n"
    )
    spec = load_spec(spec_path)
    storage = tmp_path / "store"
    run_study(spec, l4s_small, storage, log=lambda m: None)
    rows = ResultsStore(storage).read("srch")
    assert 1 <= len(rows) <= 4 and set(rows["status"]) <= {"ok", "stopped"}
    assert (rows["status"] == "ok").any()
    ok = rows[rows["status"] == "ok"]
    assert ok["threshold"].between(0.3, 0.9).all() and ok["test_f1"].notna().all()
    study = optuna.load_study(study_name="srch", storage=f"sqlite:///{storage / 'optuna.db'}")
    assert len(study.trials) == 4
    # Each Optuna trial names the rmaunet trial and row it became: its rows are found from the dashboard.
    linked = {t.user_attrs["rmaunet_trial_id"]: t.user_attrs["row"] for t in study.trials}
    assert dict(zip(rows["trial_id"], rows["row"])).items() <= linked.items()

    messages: list[str] = []
    run_study(spec, l4s_small, storage, log=messages.append)
    assert any("4 of 4 trials done, 0 to run" in m for m in messages)


@pytest.mark.slow
def test_tune_results_show_the_varied_fields_and_hold_each_trials_best_weights(shared_study):
    # The experiment in the store's tune/ restores with Tuner.restore and the public trainable,
    # as Ray documents: each trial's config shows its row and the field the rows vary (and the
    # seed) beside our identity, get_dataframe() its selected validation scores, and the best
    # trial's checkpoint holds its selected weights and the config that trained them.
    from ray import tune

    from rmaunet import study_trainable

    storage, plan = shared_study["store"], shared_study["plan"]
    tuner = tune.Tuner.restore(str(storage / "tune" / "shared"), trainable=study_trainable(storage, "shared"))
    results = tuner.fit()  # every trial finished: restoring trains nothing, and returns the results
    assert {r.config["rmaunet_trial_id"] for r in results} == set(plan.unique)
    assert {r.config["loss"] for r in results} == {"cross_entropy", "iou"}
    assert {r.config["seed"] for r in results} == {0}
    frame = results.get_dataframe()
    assert set(frame["config/row"]) == {"CE", "IoU"} and frame["val_f1"].notna().all()
    stored = ResultsStore(storage).read("shared").set_index("row")["val_f1"]
    assert dict(zip(frame["config/row"], frame["val_f1"])) == pytest.approx(stored.to_dict())
    best = results.get_best_result("final_val_f1", "max")
    with best.checkpoint.as_directory() as folder:
        assert (Path(folder) / "best.weights.h5").stat().st_size > 0
        assert json.loads((Path(folder) / "config.json").read_text())["loss"] == best.config["loss"]


@pytest.mark.slow
def test_trials_run_one_after_another_in_one_process_with_the_results_of_a_fresh_one(shared_study):
    # Ray Tune reuses a node's trial process (no second process start, no second TensorFlow
    # import), and a trial trained after another in that process scores exactly as it does alone.
    from ray import tune

    from rmaunet.studies.grid import train_one

    a, b = shared_study["store"], shared_study["alone"]
    results = tune.Tuner.restore(str(a / "tune" / "shared"), trainable=train_one).get_results()
    assert len({r.metrics["pid"] for r in results}) == 1  # both trials in one process
    metrics = ["val_f1", "test_f1", "test_miou", "threshold"]
    after_another = ResultsStore(a).read("shared").set_index("row").loc["IoU", metrics]
    by_itself = ResultsStore(b).read("alone").set_index("row").loc["IoU", metrics]
    assert after_another.tolist() == by_itself.tolist()
