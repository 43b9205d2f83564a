from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd

from rmaunet.studies.store import ResultsStore


def _row(i: int) -> dict:
    return {"study": "s", "kind": "table", "row": f"row {i}", "row_index": i, "seed": 0, "status": "ok", "val_f1": i / 100, "history": [{"epoch": 1}]}


def _write_many(args: tuple[str, int, int]) -> None:
    root, start, n = args
    store = ResultsStore(root)
    for i in range(start, start + n):
        store.write_row(_row(i))


def test_concurrent_writers_lose_no_row(tmp_path: Path):
    # Four processes writing 25 rows each at once: all 100 rows are readable afterwards.
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(str(tmp_path), k * 25, 25) for k in range(4)])
    df = ResultsStore(tmp_path).read("s")
    assert len(df) == 100
    assert sorted(df["row_index"]) == list(range(100))


def test_rewriting_a_row_replaces_it(tmp_path: Path):
    # The same (study, row, seed) is one row: a rerun overwrites instead of duplicating.
    store = ResultsStore(tmp_path)
    store.write_row(_row(1))
    store.write_row({**_row(1), "val_f1": 0.5})
    df = store.read("s")
    assert len(df) == 1 and df["val_f1"].iloc[0] == 0.5


def test_nested_values_are_json_and_export_reads_with_pandas(tmp_path: Path):
    # history is stored as JSON text; the export is plain Parquet that pandas reads.
    store = ResultsStore(tmp_path)
    store.write_row(_row(0))
    out = store.export(tmp_path / "all.parquet")
    df = pd.read_parquet(out)
    assert df["history"].iloc[0] == '[{"epoch": 1}]'


def test_torn_result_json_means_train_again(tmp_path: Path):
    # A crash mid-write leaves an unreadable result.json: the trial is treated as unfinished.
    store = ResultsStore(tmp_path)
    d = store.trial_dir("abc")
    d.mkdir(parents=True)
    (d / "result.json").write_text('{"status": "o')
    assert store.finished_trial("abc") is None
