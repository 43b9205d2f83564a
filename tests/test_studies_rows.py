"""Planning, reuse and row building of the study engine, without Ray or training.

A trial folder is written by hand (result.json and probability maps, as a trial leaves
them); the planner and the row writer must turn it into the right results rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rmaunet import thresholds
from rmaunet.metrics import segmentation_scores
from rmaunet.store import ResultsStore
from rmaunet.studies.expand import expand
from rmaunet.studies.plan import StudyPlan
from rmaunet.studies.rows import RowWriter, gpu_count
from rmaunet.studies.spec import load_spec

FP = {"landslide4sense": "fingerprint"}


def _spec(tmp_path: Path, body: str):
    path = tmp_path / "spec.yaml"
    path.write_text("base: {preset: baseline, base_filters: 4, depth: 2, epochs: 2}\nresources: {cpu: 1}\n" + body)
    return load_spec(path)


def _plan(spec, store: ResultsStore, tmp_path: Path) -> StudyPlan:
    return StudyPlan(spec, expand(spec, FP), store, {"landslide4sense": tmp_path}, FP)


def _fake_trial(
    store: ResultsStore, tid: str, status: str = "ok", seed: int = 0, threshold: float = 0.45
) -> tuple[np.ndarray, np.ndarray]:
    """A trial folder as a finished training leaves it: maps of both splits, result.json last."""
    rng = np.random.default_rng(seed)
    folder = store.trial(tid).create()
    mask = (rng.random((6, 8, 8)) > 0.7).astype(np.uint8)
    prob = np.clip(mask * 0.5 + rng.random((6, 8, 8)) * 0.5, 0, 1).astype(np.float32)
    if status == "ok":
        folder.save_probabilities("val", prob, mask)
        folder.save_probabilities("test", prob[::-1].copy(), mask[::-1].copy())
    folder.write_result(
        {
            "status": status,
            "reason": "" if status == "ok" else "out of memory: OOM",
            "epochs_run": 2,
            "best_epoch": 1,
            "history": [{"epoch": 1, "val_f1": 0.5}],
            "wall_s": 3600.0,
            "accelerator": "2x NVIDIA H200",
            "num_workers": 2,
            **({"threshold": threshold, "threshold_protocol": "tuned"} if status == "ok" else {}),
        }
    )
    return mask, prob


def test_rows_carry_metrics_recomputed_from_the_stored_maps(tmp_path: Path) -> None:
    # The row's test F1 is the stored test maps scored at the row's threshold, not a copy of result.json.
    spec = _spec(tmp_path, "name: t\nkind: table\nrows:\n  - {label: A}\n  - {label: B, set: {loss: iou}}\n")
    store = ResultsStore(tmp_path / "store")
    plan = _plan(spec, store, tmp_path)
    a = plan.planned[0]
    _fake_trial(store, a.trial_id)
    writer = RowWriter(spec, plan, store, log=lambda _m: None)
    writer.trial_done(a.trial_id)
    rows = store.read("t")
    assert list(rows["row"]) == ["A"]
    stored_mask, q = store.trial(a.trial_id).load_probabilities("test")
    tuned = thresholds.decide(store.trial(a.trial_id), a.config)["threshold"]  # the row config's decision
    expected = segmentation_scores(stored_mask, q / 255.0, tuned)
    assert rows["test_f1"].iloc[0] == pytest.approx(expected["f1"])
    assert rows["threshold"].iloc[0] == rows["chosen_threshold"].iloc[0] == tuned
    assert rows["threshold_protocol"].iloc[0] == "tuned" and rows["selection_metric"].iloc[0] == "f1"
    # The per-tile counts sum to the split's counts: a bootstrap over tiles resamples the row's own F1.
    counts = np.array(json.loads(rows["test_tile_counts"].iloc[0]))
    tp, fp, fn = counts.sum(axis=0)
    assert rows["test_tiles"].iloc[0] == 6 and 2 * tp / (2 * tp + fp + fn) == pytest.approx(expected["f1"])
    curve = json.loads(rows["threshold_curve"].iloc[0])
    assert [c["threshold"] for c in curve] == list(thresholds.GRID) and "test_f1" in curve[0]
    assert rows["gpu_hours"].iloc[0] == pytest.approx(4.0)  # 2 GPUs × 2 workers × 1 h
    assert writer.best is not None and writer.best[1] == "A"


def test_a_threshold_study_chooses_on_validation_by_the_select_metric(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "name: th\nkind: threshold\nselect: val_precision\nthresholds: [0.3, 0.6, 0.9]\n")
    store = ResultsStore(tmp_path / "store")
    plan = _plan(spec, store, tmp_path)
    tid = plan.planned[0].trial_id
    _fake_trial(store, tid)
    RowWriter(spec, plan, store, log=lambda _m: None).trial_done(tid)
    rows = store.read("th")
    assert sorted(rows["threshold"]) == [0.3, 0.6, 0.9]
    expected = thresholds.choose_threshold(thresholds.scores_at(store.trial(tid), (0.3, 0.6, 0.9)), "precision")
    assert set(rows["chosen_threshold"]) == {expected}
    best = rows.loc[rows["val_precision"].idxmax(), "threshold"]
    assert expected == best


def test_a_failed_verdict_is_reused_until_its_trial_folder_is_deleted(tmp_path: Path) -> None:
    # README: a trial that failed (OOM, NaN) is not retrained by a rerun; deleting trials/<id>/ retries it.
    import shutil

    spec = _spec(tmp_path, "name: f\nkind: table\nrows:\n  - {label: A}\n")
    store = ResultsStore(tmp_path / "store")
    tid = _plan(spec, store, tmp_path).planned[0].trial_id
    _fake_trial(store, tid, status="failed")
    plan = _plan(spec, store, tmp_path)
    assert plan.finished == {tid} and plan.to_train == []
    RowWriter(spec, plan, store, log=lambda _m: None).trial_done(tid, reused=True)
    row = store.read("f").iloc[0]
    assert row["status"] == "failed" and "out of memory" in row["reason"] and math.isnan(row["test_f1"])
    shutil.rmtree(store.trial(tid).root)
    assert [p.trial_id for p in _plan(spec, store, tmp_path).to_train] == [tid]


def test_rows_sharing_a_training_plan_it_once(tmp_path: Path) -> None:
    # Two rows with the same config (a ladder's baseline and a table's) train once.
    spec = _spec(tmp_path, "name: d\nkind: table\nseeds: [0, 1]\nrows:\n  - {label: A}\n  - {label: B}\n")
    plan = _plan(spec, ResultsStore(tmp_path / "store"), tmp_path)
    assert len(plan.planned) == 4 and len(plan.unique) == 2 and "shared between rows" in plan.summary()


def test_a_stopped_search_trial_keeps_its_last_validation_scores(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "name: s\nkind: table\nrows:\n  - {label: A}\n")
    store = ResultsStore(tmp_path / "store")
    plan = _plan(spec, store, tmp_path)
    RowWriter(spec, plan, store, log=lambda _m: None).stopped_row(plan.planned[0], {"epoch": 3, "val_f1": 0.4})
    row = store.read("s").iloc[0]
    assert row["status"] == "stopped" and row["val_f1"] == 0.4 and row["epochs_run"] == 3
    assert "after epoch 3" in row["reason"] and math.isnan(row["test_f1"])


@pytest.mark.parametrize(("accelerator", "count"), [("2x NVIDIA H100", 2), ("CPU", 0), ("1x GPU", 1)])
def test_gpu_count(accelerator: str, count: int) -> None:
    assert gpu_count(accelerator) == count


def test_a_fixed_threshold_row_is_scored_at_its_configs_value(tmp_path: Path) -> None:
    # The paper's protocol: a fixed threshold is recorded as such, whatever the trial decided.
    spec = _spec(tmp_path, "name: fx\nkind: table\nrows:\n  - {label: A, set: {threshold: 0.7}}\n")
    store = ResultsStore(tmp_path / "store")
    plan = _plan(spec, store, tmp_path)
    tid = plan.planned[0].trial_id
    _fake_trial(store, tid)
    RowWriter(spec, plan, store, log=lambda _m: None).trial_done(tid)
    row = store.read("fx").iloc[0]
    assert row["threshold"] == 0.7 and row["threshold_protocol"] == "fixed"


def test_a_tuned_threshold_is_the_best_validation_grid_point(tmp_path: Path) -> None:
    # What a trial decides (rmaunet.thresholds.decide) is the validation-best grid threshold.
    from rmaunet.config import TrialConfig
    from rmaunet.trial_folder import TrialFolder

    folder = TrialFolder(tmp_path).create()
    rng = np.random.default_rng(1)
    mask = (rng.random((5, 8, 8)) > 0.5).astype(np.uint8)
    mask[:2] = 0  # two tiles without a landslide: detection has negatives to separate
    prob = np.clip(mask * 0.3 + rng.random((5, 8, 8)) * 0.7, 0, 1)
    folder.save_probabilities("val", prob, mask, detection=mask.reshape(5, -1).max(axis=1) * 0.8 + 0.1)
    folder.save_probabilities("test", prob, mask)
    decided = thresholds.decide(folder, TrialConfig(task="segmentation+detection"))
    grid_scores = thresholds.scores_at(folder, thresholds.GRID)
    best = max(thresholds.GRID, key=lambda t: (grid_scores[t]["val_f1"], -t))
    assert decided["threshold"] == best and decided["threshold_protocol"] == "tuned"
    assert 0.1 < decided["det_threshold"] <= 0.9  # the first grid point separating 0.1 from 0.9
    fixed = thresholds.decide(folder, TrialConfig(threshold=0.3))
    assert fixed["threshold"] == 0.3 and fixed["threshold_protocol"] == "fixed"


def _corrupt_copy(l4s_small: Path, tmp_path: Path) -> Path:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(l4s_small, bad)
    (bad / "TrainData" / "img" / "image_3.h5").write_bytes(b"not an HDF5 file")
    return bad


def test_planning_reads_the_data_first_and_names_the_bad_file(l4s_small: Path, tmp_path: Path) -> None:
    # Bad data fails the plan (before Ray, before any trial) with the file's name; the store stays empty.
    from rmaunet.errors import DataError
    from rmaunet.studies.plan import plan_study

    bad = _corrupt_copy(l4s_small, tmp_path)
    spec = _spec(tmp_path, "name: c\nkind: table\nrows:\n  - {label: A}\n")
    with pytest.raises(DataError, match=r"image_3\.h5"):
        plan_study(spec, bad, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    assert plan_study(spec, l4s_small, tmp_path / "store").to_train  # good data plans


def test_a_trial_on_bad_data_fails_once_with_its_cause(l4s_small: Path, tmp_path: Path) -> None:
    # Inside a trial the same error is a recorded verdict, not an exception a scheduler would retry.
    from rmaunet.config import TrialConfig
    from rmaunet.training.trial import run_trial

    bad = _corrupt_copy(l4s_small, tmp_path)
    result = run_trial(TrialConfig(base_filters=4, depth=2, epochs=1), bad, tmp_path / "trial")
    assert result.status == "failed" and result.reason.startswith("DataError") and "image_3.h5" in result.reason
    assert json.loads((tmp_path / "trial" / "result.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_an_unreachable_object_store_is_one_line_not_a_local_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    # `--storage s3://bucket/x` once became ./s3:/bucket/x on each node: now it is opened as
    # S3, and a bucket that cannot be reached is one line naming it, exit 2.
    from rmaunet.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nkind: table\nbase: {preset: baseline}\nrows:\n  - {label: A}\n")
    code = main(["study", "run", str(spec), "--data", str(tmp_path), "--storage", "s3://bucket/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rmaunet: error: s3://bucket/x") and "cannot" in err[0]
    assert not (tmp_path / "s3:").exists()


def test_a_table_study_runs_unbounded_unless_the_spec_limits_it(tmp_path: Path) -> None:
    # Pending trials must reach an autoscaler as resource requests: no limit read from a
    # cluster that may have no worker node yet. `max_concurrent` still caps it.
    from rmaunet.studies.session import concurrency

    assert concurrency(_spec(tmp_path, "name: u\nkind: table\nrows:\n  - {label: A}\n"), workers=1) is None
    capped = _spec(tmp_path, "name: c\nkind: table\nmax_concurrent: 3\nrows:\n  - {label: A}\n")
    assert concurrency(capped, workers=1) == 3


def test_a_study_name_never_leaves_the_store_in_the_export_or_tunes_folder(tmp_path: Path) -> None:
    # The spec loader refuses such names; the writers are safe on their own too.
    from types import SimpleNamespace

    from rmaunet.store import safe_name
    from rmaunet.study_cli import _summarise

    store = ResultsStore(tmp_path / "store")
    store.write_row({"study": "../../x", "kind": "table", "row": "A", "row_index": 0, "seed": 0, "status": "ok"})
    _summarise(SimpleNamespace(name="../../x", kind="table", path=None), tmp_path / "store", None, 0.0)
    exported = [p for p in tmp_path.rglob("*.parquet") if p.parent == tmp_path / "store"]
    assert [p.name for p in exported] == ["x.parquet"] and not (tmp_path / "x.parquet").exists()
    # make_tuner names Tune's experiment folder (under the store's tune/) with the same rule.
    assert safe_name("../../x", "study") == "x" and "/" not in safe_name("a/../b")
