from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [[], ["data"], ["data", "synth"], ["study"], ["study", "run"], ["study", "plan"], ["report"], ["demo"]]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmaunet", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "rmaunet")
def test_every_command_explains_itself(cmd):
    # `--help` of each (sub)command exits 0 and describes its purpose and options.
    out = _run(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: rmaunet" in out.stdout
    assert len(out.stdout.splitlines()) > 4


def test_synth_writes_the_official_layout(tmp_path):
    # `rmaunet data synth` writes image_{1..N}.h5 (img, H×W×14 float32) and mask_{1..N}.h5 (mask, uint8 {0,1}).
    import h5py
    import numpy as np

    out = _run(
        "data",
        "synth",
        "--dataset",
        "landslide4sense",
        "--out",
        str(tmp_path),
        "--n",
        "3",
        "--seed",
        "1",
        "--size",
        "32",
    )
    assert out.returncode == 0, out.stderr
    for i in (1, 2, 3):
        with h5py.File(tmp_path / "TrainData" / "img" / f"image_{i}.h5") as f:
            assert f["img"].shape == (32, 32, 14) and f["img"].dtype == np.float32
        with h5py.File(tmp_path / "TrainData" / "mask" / f"mask_{i}.h5") as f:
            assert f["mask"].shape == (32, 32) and f["mask"].dtype == np.uint8
            assert set(np.unique(f["mask"][()])) <= {0, 1}


def test_bad_spec_is_one_line_and_exit_2(tmp_path):
    # A typo in a spec: one line on stderr naming the file, exit status 2, no traceback.
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nkind: table\nrows:\n  - {label: a, set: {loss: focl}}\n")
    out = _run("study", "plan", str(spec), "--data", str(tmp_path), "--storage", str(tmp_path / "st"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(spec) in lines[0] and "focl" in lines[0]


@pytest.mark.slow
def test_missing_data_folder_is_exit_2(tmp_path):
    # Pointing a study at a folder that does not exist is a user error, not a crash.
    out = _run(
        "study",
        "plan",
        "search_spaces/demo.yaml",
        "--data",
        str(tmp_path / "nope"),
        "--storage",
        str(tmp_path / "st"),
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 2 and "nope" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_refused_loss_params_leave_one_line_without_tensorflow_chatter(tmp_path):
    # Checking loss_params imports TensorFlow; its native start-up lines must not precede the error line.
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: x\nkind: table\nrows:\n  - {label: a, set: {loss: focal_iou, loss_params: {alpha: 0.5}}}\n"
        "  - {label: b, set: {loss: focal_iou, loss_params: {alphx: 0.5}}}\n"
    )
    out = _run("study", "plan", str(spec), "--data", str(tmp_path), "--storage", str(tmp_path / "st"))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"rmaunet: error: {spec}:5: set: loss focal_iou: unknown parameter 'alphx' "
        "(accepted: alpha, gamma, focal_alpha, smooth)"
    ]


def _main(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from rmaunet.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def test_report_folder_from_a_study_name_stays_inside_reports(tmp_path):
    # A results table whose `study` is ../../x writes its report inside --reports, under a slugged folder.
    import pandas as pd

    table = tmp_path / "results.csv"
    pd.DataFrame({"study": ["../../x", "../../x"], "row": ["a", "b"], "test_f1": [0.5, 0.6]}).to_csv(table, index=False)
    out = tmp_path / "deep" / "out"
    code, stderr = _main("report", str(table), "--reports", str(out), "--no-figures")
    assert code == 0, stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and p != table)
    assert written and all(p.startswith("deep/out/_.._x/") for p in written), written


def test_report_on_rows_without_a_study_column_is_one_line(tmp_path):
    # A store whose rows lack `study` is refused by name, not a KeyError traceback.
    import pandas as pd

    rows = tmp_path / "store" / "rows" / "s"
    rows.mkdir(parents=True)
    pd.DataFrame({"row": ["a"], "seed": [0], "test_f1": [0.5]}).to_parquet(rows / "r.parquet")
    code, stderr = _main("report", str(tmp_path / "store"), "--reports", str(tmp_path / "out"))
    assert code == 2
    # Named down to the study's folder of rows: the store is read one folder at a time.
    assert stderr.splitlines() == [f"rmaunet: error: {rows}: results rows have no `study` column"]


def test_report_with_a_non_utf8_spec_is_one_line(tmp_path):
    # --spec with a Latin-1 byte: one line naming the file and line, exit 2.
    import pandas as pd

    table = tmp_path / "results.csv"
    pd.DataFrame({"study": ["s"], "row": ["a"], "test_f1": [0.5]}).to_csv(table, index=False)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: s\nkind: table\ndescription: caf\xe9\n")
    code, stderr = _main("report", str(table), "--spec", str(spec), "--reports", str(tmp_path / "out"))
    assert code == 2 and stderr.splitlines() == [f"rmaunet: error: {spec}:3: spec is not UTF-8 text (byte 0xe9)"]
