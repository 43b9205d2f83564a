from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from rmaunet.store import ResultsStore


def _row(i: int) -> dict:
    return {
        "study": "s",
        "kind": "table",
        "row": f"row {i}",
        "row_index": i,
        "seed": 0,
        "status": "ok",
        "val_f1": i / 100,
        "history": [{"epoch": 1}],
    }


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
    d = store.trial("abc").root
    d.mkdir(parents=True)
    (d / "result.json").write_text('{"status": "o')
    assert store.finished_trial("abc") is None


def test_reads_skip_in_flight_and_leftover_temporary_files(tmp_path: Path):
    # A killed writer's temporary row (a dotfile) never breaks read() or shows as a row.
    store = ResultsStore(tmp_path)
    path = Path(store.write_row(_row(1)))
    (path.parent / ".tmp-999-dead-row.parquet").write_bytes(b"PAR1 torn")
    df = store.read("s")
    assert list(df["row_index"]) == [1]


def test_names_never_leave_the_store(tmp_path: Path):
    # A study called "../../x" or ".." stays one folder inside rows/; a trial id must be plain.
    import pytest

    from rmaunet.errors import StoreError

    store = ResultsStore(tmp_path / "store")
    for name in ("../../x", "..", "/etc/passwd"):
        path = Path(store.write_row({**_row(1), "study": name}))
        assert path.resolve().is_relative_to((tmp_path / "store" / "rows").resolve()), path
    with pytest.raises(StoreError, match="not a trial id"):
        store.trial("../x")


def _export(args: tuple[str, str]) -> str:
    root, out = args
    return str(ResultsStore(root).export(Path(out), "s"))


def test_concurrent_exports_of_one_study_all_succeed(tmp_path: Path):
    # Eight processes exporting the same study to the same file: no clash of temporary names.
    store = ResultsStore(tmp_path)
    for i in range(5):
        store.write_row(_row(i))
    out = tmp_path / "s.parquet"
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_export, [(str(tmp_path), str(out))] * 8)
    assert len(pd.read_parquet(out)) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def _writer(root: str, start: int, done_log: str) -> None:
    store = ResultsStore(root)
    for i in range(start, start + 10_000):
        store.write_row(_row(i))
        with open(done_log, "a") as f:  # logged only once the row is in place
            f.write(f"{i}\n")


def _reader(root: str, seconds: float, out: str) -> None:
    import time

    store = ResultsStore(root)
    reads = failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            store.read("s")
            reads += 1
        except Exception:  # noqa: BLE001 - counted: any failure is what this test is about
            failures += 1
    Path(out).write_text(f"{reads} {failures}")


@pytest.mark.slow
def test_a_store_survives_killed_writers_and_concurrent_readers(tmp_path: Path):
    # Writers SIGKILLed mid-write and readers reading all the while: no read fails, no
    # completed row is lost, and the killed writers' leftovers never show as rows.
    import os
    import signal
    import time

    ctx = mp.get_context("spawn")
    root = str(tmp_path / "store")
    writers = [ctx.Process(target=_writer, args=(root, k * 10_000, str(tmp_path / f"w{k}.log"))) for k in range(3)]
    readers = [ctx.Process(target=_reader, args=(root, 8.0, str(tmp_path / f"r{k}.txt"))) for k in range(2)]
    for p in writers:
        p.start()
    logs = [tmp_path / f"w{k}.log" for k in range(3)]
    deadline = time.monotonic() + 120
    while not all(log.exists() and log.stat().st_size > 40 for log in logs) and time.monotonic() < deadline:
        time.sleep(0.1)  # spawned writers import pandas and pyarrow first
    for p in readers:
        p.start()
    time.sleep(2.0)
    for p in writers:
        os.kill(p.pid, signal.SIGKILL)
    for p in writers + readers:
        p.join(30)
    reads = failures = 0
    for k in range(2):
        r, f = map(int, (tmp_path / f"r{k}.txt").read_text().split())
        reads, failures = reads + r, failures + f
    done = {int(line) for k in range(3) for line in (tmp_path / f"w{k}.log").read_text().split()}
    stored = set(ResultsStore(root).read("s")["row_index"])
    print(
        f"store under killed writers: {reads} reads, {failures} failed, {len(done)} rows finished, "
        f"{len(done - stored)} lost, {len(stored)} stored"
    )
    assert reads > 0 and failures == 0
    assert done and done <= stored  # every row a writer finished is there (one in flight may be too)
    assert len(stored - done) <= 3


def test_a_column_with_text_and_numbers_still_exports(tmp_path: Path):
    # A ladder's fixed rows hold cfg_threshold 0.5, its threshold step "tuned" (and older
    # stores wrote numbers): the study still reads and exports as one table.
    store = ResultsStore(tmp_path)
    store.write_row({**_row(0), "cfg_threshold": 0.5})
    store.write_row({**_row(1), "cfg_threshold": "tuned"})
    out = store.export(tmp_path / "s.parquet", "s")
    assert list(pd.read_parquet(out)["cfg_threshold"]) == ["0.5", "tuned"]


def test_read_studies_gives_each_study_as_reading_it_alone(tmp_path: Path):
    # One pass over the store gives every study exactly as read(study) does, each column typed
    # by that study's own rows (here cfg_threshold is text in one study, numbers in the other).
    store = ResultsStore(tmp_path)
    for i in range(3):
        store.write_row({**_row(i), "study": "a", "cfg_threshold": 0.5})
        store.write_row({**_row(i), "study": "b", "cfg_threshold": "tuned" if i else 0.5})
    studies = store.read_studies()
    assert list(studies) == ["a", "b"]
    for name, rows in studies.items():
        pd.testing.assert_frame_equal(rows, store.read(name))
    assert studies["a"]["cfg_threshold"].tolist() == [0.5] * 3
    assert studies["b"]["cfg_threshold"].tolist() == ["0.5", "tuned", "tuned"]
