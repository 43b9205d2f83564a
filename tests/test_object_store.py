"""The results store on an object store (moto's S3 server on 127.0.0.1): rows, trials, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from rmaunet.config import TrialConfig
from rmaunet.errors import StoreError
from rmaunet.store import ResultsStore

TINY = dict(base_filters=4, depth=2, epochs=3, batch_size=8, augment=())


def _row(i: int, study: str = "s") -> dict:
    row = {"study": study, "kind": "table", "row": f"r{i}", "row_index": i, "seed": 0, "status": "ok"}
    return {**row, "test_f1": i / 10}


def _keys(uri: str) -> list[str]:
    fs, base = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)


def test_rows_are_objects_written_whole_and_read_back(s3_bucket: str, tmp_path: Path, monkeypatch) -> None:
    # Each row is one object under rows/<study>/; read() and the export find every one, and
    # nothing lands on the local disk (the working directory stays empty).
    monkeypatch.chdir(tmp_path)
    store = ResultsStore(f"{s3_bucket}/results")
    for i in range(3):
        store.write_row(_row(i))
    store.write_row({**_row(1), "test_f1": 0.9})  # the same row again replaces it
    df = store.read("s")
    assert list(df["row"]) == ["r0", "r1", "r2"] and df["test_f1"].tolist() == [0.0, 0.9, 0.2]
    assert store.has_row(_row(2)) and not store.has_row(_row(7))
    assert store.export_study("s") == f"{s3_bucket}/results/s.parquet"
    keys = _keys(f"{s3_bucket}/results")
    assert sum(k.startswith("rows/s/") for k in keys) == 3 and "s.parquet" in keys
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_named_object_is_never_a_row(s3_bucket: str) -> None:
    # An object named like an in-flight temporary file (another writer's) is not listed.
    store = ResultsStore(f"{s3_bucket}/results")
    store.write_row(_row(0))
    store.storage.write_bytes("rows/s/.tmp-1-ab-r9.parquet", b"PAR1 torn")
    assert list(store.read("s")["row"]) == ["r0"]


def test_a_corrupt_row_object_is_one_error_naming_its_uri(s3_bucket: str) -> None:
    # A damaged object is reported with its full URI, not a pyarrow traceback.
    store = ResultsStore(f"{s3_bucket}/results")
    store.storage.write_bytes("rows/s/bad.parquet", b"not parquet")
    with pytest.raises(StoreError, match=rf"{s3_bucket}/results/rows/s/bad.parquet: unreadable results row"):
        store.read("s")


def test_a_missing_bucket_fails_the_write_check_in_one_line(s3_bucket: str) -> None:
    # check_writable is what `study run` calls before planning: the bucket is named.
    with pytest.raises(StoreError, match=r"s3://no-such-bucket-rmaunet/x/.rmaunet-store: cannot write"):
        ResultsStore("s3://no-such-bucket-rmaunet/x").storage.check_writable()


@pytest.mark.slow
def test_a_trial_killed_on_one_node_resumes_on_another_from_the_store(
    s3_bucket: str, l4s_small: Path, tmp_path: Path, monkeypatch
) -> None:
    # Two nodes with their own caches and one bucket: node A trains 2 of 3 epochs and dies;
    # node B, which has never seen the trial, resumes from epoch 3 with A's checkpoint.
    from rmaunet.training.trial import run_trial

    store = ResultsStore(f"{s3_bucket}/results")
    config = TrialConfig(**TINY)
    tid = "t" * 16

    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "node-a"))
    monkeypatch.setenv("RMAUNET_FAIL_AFTER_EPOCH", "2")
    workspace = store.workspace(tid)
    folder = workspace.begin(config.to_dict())
    assert str(folder.root).startswith(str(tmp_path / "node-a"))
    with pytest.raises(RuntimeError, match="injected failure after epoch 2"):
        run_trial(config, l4s_small, folder.root, node="node-a", on_checkpoint=workspace.save_checkpoint)
    assert store.finished_trial(tid) is None
    keys = _keys(f"{s3_bucket}/results/trials/{tid}")
    # The epoch's files under their own names and the state that points at them; epoch 1's are gone.
    assert "checkpoint/epoch-0002/last.weights.h5" in keys and "checkpoint/state.json" in keys
    assert not any(k.startswith("checkpoint/epoch-0001/") for k in keys)

    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "node-b"))
    workspace = store.workspace(tid)
    folder = workspace.begin(config.to_dict())
    result = run_trial(config, l4s_small, folder.root, node="node-b", on_checkpoint=workspace.save_checkpoint)
    workspace.finish()
    workspace.close()
    assert result.resumed_from == 2 and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert [h["node"] for h in result.history] == ["node-a", "node-a", "node-b"]
    stored = store.finished_trial(tid)
    assert stored is not None and stored["status"] == "ok" and stored["epochs_run"] == 3
    keys = _keys(f"{s3_bucket}/results/trials/{tid}")
    assert {"result.json", "config.json", "best.weights.h5", "val_probs.npz", "test_probs.npz"} <= set(keys)
    assert not any(k.startswith("checkpoint/") for k in keys)  # a finished trial keeps no checkpoint
    assert not folder.root.exists()  # the node's copy is gone

    # A third node reads the finished trial's maps back to score it, without training.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "driver"))
    from rmaunet import thresholds

    scores = thresholds.scores_at(store.trial(tid), (0.5,))[0.5]
    assert math.isclose(scores["val_f1"], thresholds.scores_at(store.trial(tid), (0.5,))[0.5]["val_f1"])
    assert set(scores) >= {"val_f1", "test_f1", "test_miou"}
    assert json.loads((tmp_path / "driver").joinpath(*_only(tmp_path / "driver", "result.json")).read_text())


def _only(root: Path, name: str) -> tuple[str, ...]:
    (found,) = list(root.rglob(name))
    return found.relative_to(root).parts


def test_report_reads_an_object_store(s3_bucket: str, tmp_path: Path, capsys) -> None:
    # `rmaunet report s3://…` turns the rows in the bucket into the tables, like a folder store.
    from rmaunet.cli import main

    store = ResultsStore(f"{s3_bucket}/results")
    for seed in range(2):
        for i in range(2):
            store.write_row({**_row(i), "seed": seed, "test_f1": 0.5 + i / 10 + seed / 100, "test_miou": 0.7})
    code = main(["report", f"{s3_bucket}/results", "--out", str(tmp_path / "reports"), "--no-figures"])
    assert code == 0, capsys.readouterr().err
    table = (tmp_path / "reports" / "s" / "table.md").read_text()
    assert "r0" in table and "r1" in table


def test_the_driver_copy_of_a_trial_follows_the_store(s3_bucket: str, tmp_path: Path, monkeypatch) -> None:
    # A failed trial deleted in the store and trained again: the driver's cached copy of the
    # old one is replaced, never scored in place of the new one.
    import numpy as np

    from rmaunet.trial_folder import TrialFolder

    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "driver"))
    store = ResultsStore(f"{s3_bucket}/results")
    remote = store.storage.child("trials", "abc")

    def publish(status: str, probability: float) -> None:
        source = TrialFolder(tmp_path / "node").create()
        source.save_probabilities("val", np.full((1, 2, 2), probability), np.ones((1, 2, 2)))
        remote.upload(source.probabilities("val"), "val_probs.npz")
        remote.write_bytes("result.json", json.dumps({"status": status}).encode())

    publish("failed", 0.0)
    assert store.trial("abc").read_result() == {"status": "failed"}
    publish("ok", 1.0)
    folder = store.trial("abc")
    assert folder.read_result() == {"status": "ok"}
    assert folder.load_probabilities("val")[1].max() == 255


def test_a_run_on_an_object_store_keeps_a_copy_of_its_report_there(s3_bucket: str, tmp_path: Path) -> None:
    # Under `ray job submit` a relative --report folder is in the job's temporary working
    # directory on the head: with an object store, the tables are also copied beside the rows.
    from types import SimpleNamespace

    from rmaunet.study_cli import _summarise

    store = ResultsStore(f"{s3_bucket}/results")
    for seed in range(2):
        store.write_row({**_row(0), "seed": seed, "test_f1": 0.5 + seed / 100, "test_miou": 0.7})
    spec = SimpleNamespace(name="s", kind="table", path=None)
    _summarise(spec, f"{s3_bucket}/results", tmp_path / "rep", started=0.0)
    keys = _keys(f"{s3_bucket}/results")
    assert "s.parquet" in keys and "reports/s/table.md" in keys and "reports/s/table.tex" in keys
    assert store.storage.read_bytes("reports/s/table.md") == (tmp_path / "rep" / "table.md").read_bytes()


@pytest.mark.slow
def test_a_study_on_a_flaky_object_store_finishes_with_every_row_and_no_failure(
    s3_bucket: str, s3_endpoint: dict[str, str], l4s_small: Path, tmp_path: Path, capsys
) -> None:
    # The store behind tests/fault_proxy.py failing a fifth of its requests (503 SlowDown, dropped
    # connections; up to 4 in a row): a real `study run` finishes with every row and no failed
    # verdict, a second driver of the study meanwhile is refused (exit 3), and a rerun trains nothing.
    import os
    import re
    import subprocess
    import sys
    import time

    from fault_proxy import FaultProxy

    from rmaunet.cli import main

    spec = tmp_path / "flaky.yaml"
    spec.write_text(
        "name: flaky\nkind: table\nresources: {cpu: 1}\n"
        "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 8, augment: []}\n"
        "rows:\n  - label: CE\n  - {label: IoU, set: {loss: iou}}\n"
    )
    storage = f"{s3_bucket}/results"
    command = [sys.executable, "-m", "rmaunet", "study", "run", str(spec), "--data", str(l4s_small)]
    with FaultProxy(s3_endpoint["AWS_ENDPOINT_URL"], 0.2, seed=0, max_in_a_row=4) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "RMAUNET_CACHE_DIR": str(tmp_path / "cache")}
        log_path = tmp_path / "driver.log"
        with log_path.open("w") as log:
            driver = subprocess.Popen([*command, "--storage", storage], stdout=log, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + 300
            while "running 2 trainings" not in log_path.read_text() and time.monotonic() < deadline:
                assert driver.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            # This process reaches the same bucket directly (moto's own endpoint).
            refused = main(["study", "run", str(spec), "--data", str(l4s_small), "--storage", storage])
            assert refused == 3 and "is being run by another driver" in capsys.readouterr().err
            assert driver.wait(timeout=900) == 0, log_path.read_text()[-4000:]
        first = proxy.counts()
        rerun = subprocess.run([*command, "--storage", storage], capture_output=True, text=True, env=env, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert "0 trainings to run, 2 reused from the store" in rerun.stdout and "running" not in rerun.stdout
    text = log_path.read_text()
    rows = ResultsStore(storage).read("flaky")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"} and first["failed"] > 0
    retries = len(re.findall(r"rmaunet storage: \w+ \S+ failed .*; retry \d+ of", text))
    print(
        {
            "proxy_requests": first["seen"],
            "proxy_failed": first["failed"],
            "proxy_dropped": first["dropped"],
            "proxy_503": first["slow_down"],
            "rmaunet_retries": retries,
            "rows": len(rows),
            "trial_retries_by_tune": text.count("the trial died"),
        }
    )
