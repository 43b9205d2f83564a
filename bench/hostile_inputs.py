"""Hostile inputs through the real CLI: how many end in one line and exit 2, and how the rest fail.

    python bench/hostile_inputs.py [--code DIR] [--only SUBSTRING] [--timeout S] [--verbose]

Each case builds its own files (a 24-tile synthetic Landslide4Sense folder, a one-row smoke
spec, a results store holding one row), runs one `python -m rmaunet …` in a subprocess
(PYTHONPATH=--code, so the same cases measure another checkout's code, e.g. main's) and is
classified:

- handled: what the case expects, exit 2 with one `…error: …` line on stderr (or exit 0
  where the input is legal), and nothing that was in the store or report folder lost;
- traceback: a Python traceback on stderr;
- hang: still running after --timeout seconds (killed);
- wrong exit: another exit status, or an error that takes more than one line;
- silent loss: exit 0 where the input had to be refused (a tile dropped, a report
  overwritten, a value misread), or a case's own check finds something lost.

Cases that only fail for a user without root's rights (read-only store, unreadable image
folder) run as `nobody` through `setpriv`; cases on a full disk run inside `unshare -m`
with a 1 MiB tmpfs filled up first. Either is skipped (and counted as skipped) where this machine cannot.

The last line is one JSON object: counts per outcome and per class, and the cases that
were not handled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]

SPEC = """\
name: hostile
kind: table
dataset: landslide4sense
base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 4}
seeds: [0]
resources: {cpu: 1}
rows:
  - label: base
"""
SEARCH_SPEC = """\
name: hostile_search
kind: search
dataset: landslide4sense
base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 4}
resources: {cpu: 1}
space: {learning_rate: {loguniform: [0.0001, 0.01]}}
budget: 2
"""

LOCO_COLLISION = "full: {attention: se}\nbaseline: without a\ncomponents:\n  - {label: a, remove: {attention: none}}"


@dataclass
class Workspace:
    """One case's own files."""

    root: Path
    data: Path
    spec: Path
    store: Path
    report: Path
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class Case:
    name: str
    kind: str  # the class: store, data, flags, special files, specs, report, synth
    build: Callable[[Workspace], list[str]]  # makes the case's files, returns the CLI arguments
    expect: str = "refuse"  # refuse: exit 2 + one line; ok: exit 0
    wrapper: str = ""  # "", "nobody" (setpriv) or "tmpfs" (unshare -m + a 1 MiB tmpfs at WORK/full)
    lost: Callable[[Workspace], str] | None = None  # after the run: what was lost, "" when nothing


# ---------------------------------------------------------------------- helpers for cases
def _run_args(w: Workspace, *extra: str, storage: str | None = None) -> list[str]:
    store = str(w.store) if storage is None else storage
    return ["study", "run", str(w.spec), "--data", str(w.data), "--storage", store, *extra]


def _plan_args(w: Workspace, *extra: str, storage: str | None = None, data: str | None = None) -> list[str]:
    store = str(w.store) if storage is None else storage
    return ["study", "plan", str(w.spec), "--data", str(w.data) if data is None else data, "--storage", store, *extra]


def _img(w: Workspace, n: int = 5) -> Path:
    return w.data / "TrainData" / "img" / f"image_{n}.h5"


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


def _tiles(w: Workspace, side: int, count: int | None = None) -> None:
    """Rewrite the dataset as `count` (default: as many as there are) side × side tiles."""
    import h5py
    import numpy as np

    images = sorted((w.data / "TrainData" / "img").iterdir())
    count = len(images) if count is None else count
    shutil.rmtree(w.data / "TrainData")
    (w.data / "TrainData" / "img").mkdir(parents=True)
    (w.data / "TrainData" / "mask").mkdir()
    rng = np.random.default_rng(0)
    for n in range(1, count + 1):
        with h5py.File(w.data / "TrainData" / "img" / f"image_{n}.h5", "w") as f:
            f.create_dataset("img", data=rng.random((side, side, 14)).astype("float32"))
        with h5py.File(w.data / "TrainData" / "mask" / f"mask_{n}.h5", "w") as f:
            f.create_dataset("mask", data=(rng.random((side, side)) > 0.5).astype("uint8"))


def _spec(w: Workspace, text: str) -> None:
    w.spec.write_text(text)


def _store_with_row(w: Workspace) -> None:
    """A results store with one row of a study `keep` (what no refused command may touch)."""
    import pandas as pd

    rows = w.store / "rows" / "keep"
    rows.mkdir(parents=True)
    pd.DataFrame([_row("keep", "a", 0.5)]).to_parquet(rows / "a__s0__000000000000.parquet", index=False)


def _row(study: object, row: object, f1: object) -> dict[str, object]:
    return {"study": study, "kind": "table", "row": row, "row_index": 0, "seed": 0, "status": "ok", "test_f1": f1}


def _table(w: Workspace, rows: list[dict[str, object]]) -> list[str]:
    import pandas as pd

    path = w.root / "results.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return ["report", str(path), "--reports", str(w.report), "--no-figures"]


def _report_of_store(w: Workspace, *extra: str) -> list[str]:
    return ["report", str(w.store), "--reports", str(w.report), "--no-figures", *extra]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _store_changed(w: Workspace) -> str:
    row = w.store / "rows" / "keep" / "a__s0__000000000000.parquet"
    return "" if row.is_file() else f"{row} lost"


def _both_reports(w: Workspace) -> str:
    written = sorted(str(p.relative_to(w.report)) for p in w.report.rglob("table.md"))
    return "" if len(written) >= 2 else f"two studies, {len(written)} table(s): {written}"


def _unwritable(path: Path) -> None:
    path.chmod(0o555)


# ---------------------------------------------------------------------- the cases
def cases() -> list[Case]:
    long_name = "x" * 300
    c: list[Case] = []
    add = c.append

    # A store that cannot be created or means something else than it says.
    add(
        Case(
            "storage is a file",
            "store",
            lambda w: (w.extra["f"].write_text("x"), _run_args(w, storage=str(w.extra["f"])))[1],
        )
    )
    add(
        Case(
            "storage under a file",
            "store",
            lambda w: (w.extra["f"].write_text("x"), _run_args(w, storage=str(w.extra["f"] / "s")))[1],
        )
    )
    add(
        Case(
            "storage read-only (nobody)",
            "store",
            lambda w: (w.store.mkdir(), _unwritable(w.store), _run_args(w))[2],
            wrapper="nobody",
        )
    )
    add(Case("storage name too long", "store", lambda w: _run_args(w, storage=str(w.root / long_name))))
    add(Case("storage s3:// without bucket", "store", lambda w: _run_args(w, storage="s3://")))
    add(Case("storage s3:///x", "store", lambda w: _run_args(w, storage="s3:///x")))
    add(Case("storage ''", "store", lambda w: _plan_args(w, storage="")))
    add(Case("storage file://", "store", lambda w: _plan_args(w, storage="file://")))
    add(
        Case(
            "storage on a full disk",
            "store",
            lambda w: _run_args(w, storage=str(w.root / "full" / "store")),
            wrapper="tmpfs",
        )
    )
    add(Case("storage /dev/null", "store", lambda w: _run_args(w, storage="/dev/null")))
    add(
        Case(
            "plan: storage is a file",
            "store",
            lambda w: (w.extra["f"].write_text("x"), _plan_args(w, storage=str(w.extra["f"] / "s")))[1],
        )
    )

    # The data folder.
    add(
        Case(
            "dangling symlink in data",
            "data",
            lambda w: ((w.data / "TrainData" / "img" / "notes.txt").symlink_to("/nonexistent"), _plan_args(w))[1],
        )
    )
    add(
        Case(
            "link loop in data",
            "data",
            lambda w: ((w.data / "a").symlink_to(w.data / "b"), (w.data / "b").symlink_to(w.data / "a"), _plan_args(w))[
                2
            ],
        )
    )
    add(Case("/proc/self as data", "data", lambda w: _plan_args(w, data="/proc/self")))
    add(
        Case(
            "link to /proc/self file in data",
            "data",
            lambda w: ((w.data / "status").symlink_to("/proc/self/status"), _plan_args(w))[1],
            expect="ok",  # a regular file no reader reads: legal
        )
    )
    add(
        Case(
            "unreadable image folder (nobody)",
            "data",
            lambda w: ((w.data / "TrainData" / "img").chmod(0o000), _plan_args(w))[1],
            wrapper="nobody",
        )
    )
    add(Case("unreadable tile (nobody)", "data", lambda w: (_img(w).chmod(0o000), _plan_args(w))[1], wrapper="nobody"))
    add(Case("image_N.h5 is a folder", "data", lambda w: (_replace(_img(w), Path.mkdir), _plan_args(w))[1]))
    add(Case("image_N.h5 is a FIFO", "data", lambda w: (_replace(_img(w), _fifo), _plan_args(w))[1]))
    add(Case("image_N.h5 -> /dev/zero", "data", lambda w: (_replace(_img(w), _link_to("/dev/zero")), _plan_args(w))[1]))
    add(
        Case(
            "image_N.h5 dangling link",
            "data",
            lambda w: (_replace(_img(w), _link_to("/nonexistent.h5")), _plan_args(w))[1],
        )
    )
    add(
        Case(
            "mask_N.h5 is a FIFO",
            "data",
            lambda w: (_replace(w.data / "TrainData" / "mask" / "mask_5.h5", _fifo), _plan_args(w))[1],
        )
    )
    add(
        Case(
            "data check: image_N.h5 is a folder",
            "data",
            lambda w: (_replace(_img(w), Path.mkdir), ["data", "check", str(w.data), "--dataset", "landslide4sense"])[
                1
            ],
        )
    )
    add(
        Case(
            "data check: dangling link",
            "data",
            lambda w: (
                (w.data / "x.h5").symlink_to("/nonexistent"),
                ["data", "check", str(w.data), "--dataset", "landslide4sense"],
            )[1],
        )
    )
    add(Case("0x0 tiles", "data", lambda w: (_tiles(w, 0), _plan_args(w))[1]))
    add(Case("1x1 tiles", "data", lambda w: (_tiles(w, 1), _plan_args(w))[1]))
    add(
        Case(
            "data check: 0x0 tiles",
            "data",
            lambda w: (_tiles(w, 0), ["data", "check", str(w.data), "--dataset", "landslide4sense"])[1],
        )
    )
    add(Case("tiles not divisible by 2^depth", "data", lambda w: (_tiles(w, 30), _plan_args(w))[1]))
    add(Case("too few tiles for the splits", "data", lambda w: (_tiles(w, 32, 2), _plan_args(w))[1]))
    add(Case("too few tiles for the batch", "data", lambda w: (_tiles(w, 32, 4), _plan_args(w))[1]))
    add(Case("data is /dev/zero", "data", lambda w: _plan_args(w, data="/dev/zero")))
    add(Case("legal: 24 good tiles", "data", lambda w: _plan_args(w), expect="ok"))

    # Flags naming something outside: each is checked before Ray starts.
    add(Case("--address garbage", "flags", lambda w: _run_args(w, "--address", "garbage")))
    add(Case("--address 127.0.0.1:1", "flags", lambda w: _run_args(w, "--address", "127.0.0.1:1")))
    add(Case("--address ray://127.0.0.1:1", "flags", lambda w: _run_args(w, "--address", "ray://127.0.0.1:1")))
    add(Case("--mlflow http://127.0.0.1:1", "flags", lambda w: _run_args(w, "--mlflow", "http://127.0.0.1:1")))
    add(Case("--mlflow ftp://", "flags", lambda w: _run_args(w, "--mlflow", "ftp://example.invalid/x")))
    add(
        Case(
            "--tune-callback needs arguments", "flags", lambda w: _run_args(w, "--tune-callback", "operator:itemgetter")
        )
    )
    add(Case("--tune-callback not a callback", "flags", lambda w: _run_args(w, "--tune-callback", "os:getcwd")))
    add(Case("--tune-callback raises", "flags", lambda w: _run_args(w, "--tune-callback", "json:loads")))
    add(Case("--tune-callback not callable", "flags", lambda w: _run_args(w, "--tune-callback", "os:sep")))
    add(
        Case(
            "--optuna-storage unreachable",
            "flags",
            lambda w: (_spec(w, SEARCH_SPEC), _run_args(w, "--optuna-storage", "postgresql://u:p@127.0.0.1:1/x"))[1],
        )
    )
    add(
        Case(
            "--optuna-storage garbage",
            "flags",
            lambda w: (_spec(w, SEARCH_SPEC), _run_args(w, "--optuna-storage", "garbage"))[1],
        )
    )

    # Special files where a regular file is expected: bounded, never blocking.
    add(
        Case(
            "study plan /dev/zero",
            "special files",
            lambda w: ["study", "plan", "/dev/zero", "--data", str(w.data), "--storage", str(w.store)],
        )
    )
    add(
        Case(
            "study plan a FIFO",
            "special files",
            lambda w: (
                _fifo(w.root / "spec.fifo"),
                ["study", "plan", str(w.root / "spec.fifo"), "--data", str(w.data), "--storage", str(w.store)],
            )[1],
        )
    )
    add(
        Case(
            "study plan a folder",
            "special files",
            lambda w: ["study", "plan", str(w.root), "--data", str(w.data), "--storage", str(w.store)],
        )
    )
    add(
        Case(
            "report --spec /dev/zero",
            "special files",
            lambda w: (_store_with_row(w), _report_of_store(w, "--spec", "/dev/zero"))[1],
        )
    )
    add(
        Case(
            "report --references a FIFO",
            "special files",
            lambda w: (
                _store_with_row(w),
                _fifo(w.root / "refs.csv"),
                _report_of_store(w, "--references", str(w.root / "refs.csv")),
            )[2],
        )
    )
    add(Case("report /dev/zero", "special files", lambda w: ["report", "/dev/zero", "--reports", str(w.report)]))
    add(
        Case(
            "report a FIFO .csv",
            "special files",
            lambda w: (_fifo(w.root / "r.csv"), ["report", str(w.root / "r.csv"), "--reports", str(w.report)])[1],
        )
    )

    # Specs that plan one thing and store another.
    add(
        Case(
            "ladder baseline label = a step's",
            "specs",
            lambda w: (
                _spec(
                    w,
                    SPEC.replace("kind: table", "kind: ladder").replace(
                        "rows:\n  - label: base", "baseline: A\nsteps:\n  - {label: A, set: {loss: focal}}"
                    ),
                ),
                _plan_args(w),
            )[1],
        )
    )
    add(
        Case(
            "loco `without a` collision",
            "specs",
            lambda w: (
                _spec(
                    w,
                    SPEC.replace("kind: table", "kind: loco").replace(
                        "rows:\n  - label: base",
                        LOCO_COLLISION,
                    ),
                ),
                _plan_args(w),
            )[1],
        )
    )
    add(
        Case(
            "epochs: 1:30 (sexagesimal)",
            "specs",
            lambda w: (_spec(w, SPEC.replace("epochs: 1", "epochs: 1:30")), _plan_args(w))[1],
        )
    )
    add(
        Case(
            "seeds: [1_0] (YAML 1.1 underscore)",
            "specs",
            lambda w: (_spec(w, SPEC.replace("seeds: [0]", "seeds: [1_0]")), _plan_args(w))[1],
        )
    )
    add(
        Case(
            "dataset vs base.dataset",
            "specs",
            lambda w: (_spec(w, SPEC.replace("base: {", "base: {dataset: bijie, ")), _plan_args(w))[1],
        )
    )

    # Report inputs and outputs.
    add(
        Case(
            "report --out a file",
            "report",
            lambda w: (
                _store_with_row(w),
                w.extra["f"].write_text("x"),
                ["report", str(w.store), "--reports", str(w.extra["f"]), "--no-figures"],
            )[2],
        )
    )
    add(
        Case(
            "report --out /dev/null",
            "report",
            lambda w: (_store_with_row(w), ["report", str(w.store), "--reports", "/dev/null", "--no-figures"])[1],
        )
    )
    add(
        Case(
            "report --out on a full disk",
            "report",
            lambda w: (_store_with_row(w), ["report", str(w.store), "--reports", str(w.root / "full" / "out")])[1],
            wrapper="tmpfs",
        )
    )
    add(
        Case(
            "report --out read-only (nobody)",
            "report",
            lambda w: (_store_with_row(w), w.report.mkdir(), _unwritable(w.report), _report_of_store(w))[3],
            wrapper="nobody",
        )
    )
    add(
        Case(
            "report: `row` column of nulls", "report", lambda w: _table(w, [_row("s", None, 0.5), _row("s", None, 0.6)])
        )
    )
    add(Case("report: `study` column of lists", "report", lambda w: _table(w, [_row(["a", "b"], "r", 0.5)])))
    add(
        Case(
            "report: metric column of strings",
            "report",
            lambda w: _table(w, [_row("s", "r", "high"), _row("s", "q", "low")]),
        )
    )
    add(Case("report --format ''", "report", lambda w: (_store_with_row(w), _report_of_store(w, "--format", ""))[1]))
    add(Case("report --format ','", "report", lambda w: (_store_with_row(w), _report_of_store(w, "--format", ","))[1]))
    add(
        Case(
            "report: studies a/b and a_b",
            "report",
            lambda w: _table(w, [_row("a/b", "r", 0.5), _row("a_b", "r", 0.6)]),
            lost=_both_reports,
        )
    )
    add(Case("report store ''", "report", lambda w: ["report", "", "--reports", str(w.report)]))
    add(
        Case(
            "legal: report a store",
            "report",
            lambda w: (_store_with_row(w), _report_of_store(w))[1],
            expect="ok",
            lost=_store_changed,
        )
    )

    # data synth arguments.
    add(
        Case(
            "synth --seed -1",
            "synth",
            lambda w: ["data", "synth", "--out", str(w.root / "s"), "--n", "2", "--size", "16", "--seed", "-1"],
        )
    )
    add(
        Case(
            "synth --size 200000",
            "synth",
            lambda w: ["data", "synth", "--out", str(w.root / "s"), "--n", "2", "--size", "200000"],
        )
    )
    add(
        Case(
            "synth --out a file",
            "synth",
            lambda w: (
                w.extra["f"].write_text("x"),
                ["data", "synth", "--out", str(w.extra["f"]), "--n", "2", "--size", "16"],
            )[1],
        )
    )
    add(
        Case(
            "synth --out under a file",
            "synth",
            lambda w: (
                w.extra["f"].write_text("x"),
                ["data", "synth", "--out", str(w.extra["f"] / "d"), "--n", "2", "--size", "16"],
            )[1],
        )
    )
    add(
        Case(
            "synth --n 10**9",
            "synth",
            lambda w: ["data", "synth", "--out", str(w.root / "s"), "--n", "1000000000", "--size", "128"],
        )
    )
    add(
        Case(
            "synth --seed 2**64",
            "synth",
            lambda w: ["data", "synth", "--out", str(w.root / "s"), "--n", "2", "--size", "16", "--seed", str(2**64)],
            expect="ok",  # any non-negative integer seeds NumPy
        )
    )
    add(
        Case(
            "synth --out read-only (nobody)",
            "synth",
            lambda w: (
                (w.root / "ro").mkdir(),
                _unwritable(w.root / "ro"),
                ["data", "synth", "--out", str(w.root / "ro" / "d"), "--n", "2", "--size", "16"],
            )[2],
            wrapper="nobody",
        )
    )
    add(
        Case(
            "synth on a full disk",
            "synth",
            lambda w: ["data", "synth", "--out", str(w.root / "full" / "d"), "--n", "40", "--size", "64"],
            wrapper="tmpfs",
        )
    )
    return c


# ---------------------------------------------------------------------- running and classifying
def _can(wrapper: str) -> bool:
    if wrapper == "nobody":
        return os.geteuid() == 0 and shutil.which("setpriv") is not None
    if wrapper == "tmpfs":
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, check=False
        )
        return probe.returncode == 0
    return True


def classify(case: Case, code: int | None, stderr: str, lost: str) -> str:
    if code is None:
        return "hang"
    if "Traceback" in stderr:
        return "traceback"
    if code == 0:
        return "handled" if case.expect == "ok" and not lost else "silent loss"
    lines = stderr.strip().splitlines()
    if case.expect == "refuse" and code == 2 and len(lines) == 1 and "error: " in lines[0]:
        return "handled"
    return "wrong exit"


def run_case(case: Case, base_data: Path, code_dir: Path, timeout: float) -> tuple[str, str]:
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    root.chmod(0o755)  # `nobody` reads the case's files
    try:
        data = root / "data"
        shutil.copytree(base_data, data)
        w = Workspace(root, data, root / "spec.yaml", root / "store", root / "reports", {"f": root / "afile"})
        w.spec.write_text(SPEC)
        (root / "full").mkdir()
        argv = case.build(w)
        command = [sys.executable, "-m", "rmaunet", *argv]
        if case.wrapper == "nobody":
            command = NOBODY + command
        elif case.wrapper == "tmpfs":
            inner = " ".join(_quote(a) for a in command)
            full = _quote(str(root / "full"))
            fill = f"mount -t tmpfs -o size=1m tmpfs {full} && (dd if=/dev/zero of={full}/fill bs=4k 2>/dev/null; true)"
            command = ["unshare", "-m", "sh", "-c", f"{fill} && {inner}"]
        env = {**os.environ, "PYTHONPATH": str(code_dir), "RMAUNET_CACHE_DIR": str(root / "cache"), "RAY_ADDRESS": ""}
        env.pop("RAY_ADDRESS")
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the CLI and any Ray it started
            _, stderr = process.communicate()
            code = None
        lost = case.lost(w) if case.lost is not None and code == 0 else ""
        return classify(case, code, stderr, lost), f"exit {code}: {stderr.strip()[-300:]}"
    finally:
        for path in root.rglob("*"):  # what a case made unreadable must be removable
            if path.is_dir() and not path.is_symlink():
                path.chmod(stat.S_IRWXU)
        shutil.rmtree(root, ignore_errors=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose rmaunet runs (default: this one)")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before a case counts as a hang")
    parser.add_argument("--verbose", action="store_true", help="print every case's outcome and stderr tail")
    args = parser.parse_args(argv)

    chosen = [c for c in cases() if not args.only or args.only in c.name]
    base = Path(tempfile.mkdtemp(prefix="hostile-base-"))
    env = {**os.environ, "PYTHONPATH": str(args.code)}
    synth = [sys.executable, "-m", "rmaunet", "data", "synth", "--out", str(base / "data"), "--n", "24", "--size", "32"]
    subprocess.run(synth, env=env, check=True, capture_output=True)
    outcomes: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = {}
    not_handled: dict[str, str] = {}
    started = time.monotonic()
    try:
        for case in chosen:
            if not _can(case.wrapper):
                outcome, detail = "skipped", f"cannot run as {case.wrapper} here"
            else:
                outcome, detail = run_case(case, base / "data", args.code, args.timeout)
            outcomes[outcome] += 1
            per_kind.setdefault(case.kind, Counter())[outcome] += 1
            if outcome != "handled":
                not_handled[case.name] = f"{outcome}: {detail}"
            if args.verbose:
                print(
                    f"{outcome:12} {case.kind:14} {case.name}: {detail.splitlines()[-1] if detail else ''}", flush=True
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {
        "code": str(args.code),
        "cases": len(chosen),
        "outcomes": dict(outcomes),
        "per_class": {k: dict(v) for k, v in per_kind.items()},
        "not_handled": not_handled,
        "seconds": round(time.monotonic() - started, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
