"""Hostile inputs of each class, one targeted test each: refused in one line (an RmaunetError), before Ray.

The seeded sweeps of the same classes are in test_fuzz.py; bench/hostile_inputs.py counts
them through the real CLI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runs import assert_clean_exit, run_cli
from ports import free_port

from rmaunet.config import TrialConfig
from rmaunet.data import DataSummary, check_trainable
from rmaunet.data.folder import check_data_folder
from rmaunet.data.synthetic import write_dataset
from rmaunet.errors import ConfigError, DataError, SpecError, StoreError
from rmaunet.safe_input import read_yaml
from rmaunet.storage import Storage
from rmaunet.store import COMPACTED, ResultsStore
from rmaunet.studies.preflight import check_mlflow_uri, check_ray_address
from rmaunet.studies.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = """\
name: h
kind: table
dataset: landslide4sense
base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 2}
seeds: [0]
rows:
  - label: base
"""


# ---------------------------------------------------------------------- stores
@pytest.mark.parametrize(
    "where, says",
    [
        ("", "empty name"),
        ("file://", "names no folder"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("gs://", "names no bucket"),
        ("{file}", "is not a folder"),
        ("{file}/store", "which is not a folder"),
        ("/dev/null", "is not a folder"),
        ("{tmp}/" + "x" * 300, "File name too long"),
    ],
)
def test_a_store_that_can_never_be_one_is_refused(tmp_path, where, says):
    # '' and file:// used to mean the working directory; a file, a path under one or a long name raised OSError.
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError, match=says):
        Storage(where.format(file=afile, tmp=tmp_path)).check_writable()


def _as_nobody(code: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a check as `nobody` (root reads and writes through permissions)")
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", sys.executable, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_read_only_store_and_unreadable_data_as_another_user():
    # Permissions only bind a user other than root: the checks run as `nobody`, in a folder it can reach.
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="rmaunet-nobody-"))
    top.chmod(0o755)
    store, data = top / "store", top / "data"
    store.mkdir(mode=0o555)
    (data / "img").mkdir(parents=True)
    (data / "img").chmod(0)
    done = _as_nobody(
        "from rmaunet.storage import Storage\nfrom rmaunet.data.folder import check_data_folder\n"
        "from rmaunet.errors import RmaunetError\n"
        f"for check in (lambda: Storage({str(store)!r}).check_writable(), lambda: check_data_folder({str(data)!r})):\n"
        "    try:\n        check()\n    except RmaunetError as exc:\n        print(exc)\n"
    )
    (data / "img").chmod(0o755)
    shutil.rmtree(top)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{store}/.rmaunet-store: cannot write (Permission denied)",
        f"{data}/img: cannot list this data folder (Permission denied)",
    ]


def test_a_full_disk_is_one_line_for_the_store_and_synth(tmp_path):
    # A 1 MiB tmpfs, filled: the store's write check and `data synth` each raise one line.
    full = tmp_path / "full"
    full.mkdir()
    code = (
        "from rmaunet.storage import Storage\nfrom rmaunet.data.synthetic import write_dataset\n"
        "from rmaunet.errors import RmaunetError\n"
        f"for check in (lambda: Storage('{full}/store').check_writable(), "
        f"lambda: write_dataset('landslide4sense', '{full}/data', 2, 0, 16)):\n"
        "    try:\n        check()\n    except RmaunetError as exc:\n        print(exc)\n"
    )
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {full} || exit 77; dd if=/dev/zero of={full}/fill bs=4k 2>/dev/null; "
        f'{sys.executable} -c "$0"'
    )
    done = (
        subprocess.run(
            ["unshare", "-m", "sh", "-c", script, code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if shutil.which("unshare")
        else None
    )
    if done is None or done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() if done else 'no unshare'})")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{full}/store/.rmaunet-store: cannot write (No space left on device)"
    assert lines[1].startswith(f"{full}/data: ") and ("GiB free" in lines[1] or "No space left" in lines[1])


# ---------------------------------------------------------------------- data folders and tiles
def _tiles(root: Path, n: int = 12, side: int = 16) -> Path:
    return write_dataset("landslide4sense", root, n, 0, max(side, 8))


@pytest.mark.parametrize("oddity", ["dangling", "loop", "fifo", "dev_zero", "folder"])
def test_an_image_file_that_is_not_a_file_is_one_line(tmp_path, oddity):
    # image_5.h5 as a folder, FIFO or link to /dev/zero used to be skipped: a plan on 11 of 12 tiles.
    data = _tiles(tmp_path / "data")
    image = data / "TrainData" / "img" / "image_5.h5"
    image.unlink()
    {
        "dangling": lambda: image.symlink_to(tmp_path / "nowhere.h5"),
        "loop": lambda: image.symlink_to(image),
        "fifo": lambda: os.mkfifo(image),
        "dev_zero": lambda: image.symlink_to("/dev/zero"),
        "folder": image.mkdir,
    }[oddity]()
    (tmp_path / "spec.yaml").write_text(SPEC)
    code, stderr = run_cli(
        ["study", "plan", str(tmp_path / "spec.yaml"), "--data", str(data), "--storage", str(tmp_path / "s")]
    )
    assert code == 2
    assert_clean_exit(code, stderr, oddity, str(image))


@pytest.mark.parametrize("data", ["/proc/self", "/dev", "/sys/kernel"])
def test_a_pseudo_file_system_is_no_data_folder(data):
    # /proc/self as --data: files vanish while the fingerprint walks them (a traceback before).
    with pytest.raises(DataError, match="pseudo file system"):
        check_data_folder(data)


def _summary(side: int, tiles: int, landslides: int | None = None, test_tiles: int | None = None) -> DataSummary:
    labels = np.arange(tiles) < (tiles // 2 if landslides is None else landslides)
    return DataSummary(Path("/data"), (side, side, 14), labels, test_tiles)


@pytest.mark.parametrize(
    "summary, config, says",
    [
        (_summary(0, 24), {}, "0×0 pixels"),
        (_summary(1, 24), {}, "1×1 pixels"),
        (_summary(30, 24), {"depth": 2}, "multiple of 4"),
        (_summary(64, 24), {"crop": 32, "depth": 6}, None),  # crop 32 < 2**6: the config refuses it itself
        (_summary(64, 24), {"backbone": "mobilenetv3", "crop": 48}, "multiple of 32"),
        (_summary(32, 2), {"depth": 2, "batch_size": 1}, "too few"),
        (_summary(32, 10), {"depth": 2, "batch_size": 16}, "fewer than batch_size 16"),
    ],
)
def test_what_no_trial_could_train_is_refused_at_plan_time(summary, config, says):
    # Sizes against depth, empty tiles, too few tiles: known before training, refused before Ray.
    try:
        trial = TrialConfig(**config)
    except ConfigError:
        assert says is None
        return
    with pytest.raises(DataError, match=says):
        check_trainable(trial, summary)


def test_trainable_data_passes():
    check_trainable(TrialConfig(depth=2, batch_size=4), _summary(32, 24))
    check_trainable(TrialConfig(depth=2, batch_size=4, crop=16), _summary(30, 24))  # the crop is what trains


# ---------------------------------------------------------------------- specs and special files
def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "change, says",
    [
        (("epochs: 1", "epochs: 1:30"), "epochs"),  # YAML 1.1 read it as 90
        (("seeds: [0]", "seeds: [1_0]"), "seeds"),  # YAML 1.1 read it as 10
        (("base: {", "base: {dataset: bijie, "), "conflicts with base.dataset"),
        (("kind: table", "kind: ladder\nbaseline: A"), None),
    ],
)
def test_specs_read_by_yaml_1_2_and_refuse_conflicts(tmp_path, change, says):
    text = SPEC.replace(*change)
    if says is None:  # a ladder whose baseline label is a step's: two rows, one stored result
        text = text.replace("rows:\n  - label: base", "steps:\n  - {label: A, set: {loss: focal}}")
        says = "two rows share the label 'A'"
    with pytest.raises(SpecError, match=says):
        load_spec(_spec(tmp_path, text))


def test_loco_labels_that_collide_are_refused(tmp_path):
    text = SPEC.replace("kind: table", "kind: loco").replace(
        "rows:\n  - label: base",
        "full: {attention: se}\nbaseline: without a\ncomponents:\n  - {label: a, remove: {attention: none}}",
    )
    with pytest.raises(SpecError, match="two rows share the label 'without a'"):
        load_spec(_spec(tmp_path, text))


def test_yaml_1_2_numbers(tmp_path):
    # 010 is ten and 1e-4 a number (YAML 1.1: eight, and text); `on` stays text.
    spec = load_spec(_spec(tmp_path, SPEC.replace("epochs: 1", "epochs: 010, learning_rate: 1e-4")))
    assert (spec.base.epochs, spec.base.learning_rate) == (10, 1e-4)
    assert read_yaml(_spec(tmp_path, "a: on\nb: 0x1F\nc: 0o17\nd: .inf\n")) == {
        "a": "on",
        "b": 31,
        "c": 15,
        "d": float("inf"),
    }


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_a_spec_that_is_no_regular_file_is_refused_without_reading(tmp_path, special):
    # /dev/zero read 4 GB in 14 s (its stat says 0 bytes); a FIFO blocked the reader forever.
    path = {"/dev/zero": Path("/dev/zero"), "fifo": tmp_path / "spec.fifo", "folder": tmp_path}[special]
    if special == "fifo":
        os.mkfifo(path)
    result: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(result, lambda: read_yaml(path)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "read_yaml blocked"
    assert isinstance(result[0], SpecError) and "must be a regular file" in str(result[0])


def _capture(into: list[BaseException], call) -> None:  # noqa: ANN001
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        into.append(exc)


# ---------------------------------------------------------------------- flags naming services
def test_addresses_and_tracking_uris_are_probed_before_ray():
    closed = free_port()
    for address, says in [("garbage", "expected HOST:PORT"), (f"127.0.0.1:{closed}", "no Ray cluster answers")]:
        with pytest.raises(ConfigError, match=says):
            check_ray_address(address)
    for uri, says in [("ftp://x/y", "unsupported"), (f"http://127.0.0.1:{closed}", "no tracking server")]:
        with pytest.raises(ConfigError, match=says):
            check_mlflow_uri(uri)
    with socket.socket() as server:  # something listening passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_ray_address(f"127.0.0.1:{port}")
        check_mlflow_uri(f"http://127.0.0.1:{port}")
    check_ray_address("auto")
    check_mlflow_uri(None)


# ---------------------------------------------------------------------- report and synth
def _table(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "rows, extra, says",
    [
        ([{"study": "s", "row": None, "test_f1": 0.5}], [], "`row` is empty"),
        ([{"study": ["a", "b"], "row": "r", "test_f1": 0.5}], [], "`study` is not text"),
        ([{"study": "s", "row": "r", "test_f1": "high"}], [], "test_f1 holds 1 value(s) that are not numbers"),
        ([{"study": "a/b", "row": "r", "test_f1": 0.5}, {"study": "a_b", "row": "r", "test_f1": 0.6}], [], "share"),
        ([{"study": "s", "row": "r", "test_f1": 0.5}], ["--format", ""], "names no format"),
        ([{"study": "s", "row": "r", "test_f1": 0.5}], ["--reports", "/dev/null"], "must be a folder"),
    ],
)
def test_hostile_report_inputs(tmp_path, rows, extra, says):
    argv = ["report", _table(tmp_path, rows), "--reports", str(tmp_path / "out"), "--no-figures", *extra]
    code, stderr = run_cli(argv)
    assert_clean_exit(code, stderr, str(rows), says)
    assert code == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--seed", "-1"], "seed must be 0 or more"),
        (["--size", "200000"], "size <= 4096"),
        (["--out", "{file}"], "not a folder"),
    ],
)
def test_hostile_synth_arguments(tmp_path, args, says):
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["data", "synth", "--out", str(tmp_path / "d"), "--n", "2", "--size", "16"] + [
        a.format(file=afile) for a in args
    ]
    code, stderr = run_cli(argv)
    assert code == 2
    assert_clean_exit(code, stderr, str(args), says)


# ---------------------------------------------------------------------- the store read in one pass
def _row(study: str, i: int, f1: float) -> dict:
    return {"study": study, "kind": "table", "row": f"r{i}", "row_index": i, "seed": 0, "status": "ok", "test_f1": f1}


def test_a_compacted_store_reads_every_row_and_follows_changes(tmp_path):
    # 150 rows: the first read compacts them; rewritten, added and deleted row files are
    # still what a read returns, and a broken compacted copy costs time, never a row.
    store = ResultsStore(tmp_path)
    for i in range(150):
        store.write_row(_row("s", i, 0.5))
    assert sorted(store.read("s")["row"]) == sorted(f"r{i}" for i in range(150))
    copy = tmp_path / COMPACTED / "s.parquet"
    assert copy.is_file()
    store.write_row(_row("s", 3, 0.9))  # rewritten
    store.write_row(_row("s", 150, 0.1))  # added
    (tmp_path / store.row_key("s", "r7", 0)).unlink()  # deleted
    df = store.read("s").set_index("row")
    assert len(df) == 150 and "r7" not in df.index
    assert (df.loc["r3", "test_f1"], df.loc["r150", "test_f1"]) == (0.9, 0.1)
    copy.write_bytes(b"not parquet")
    assert len(store.read("s")) == 150
    store.write_row({**_row("s", 151, 0.2), "test_f1": "0.2"})  # another type in one column
    assert len(store.read()) == 151
