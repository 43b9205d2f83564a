"""Reading a results store of many row files: `rmaunet report` on N rows, its time and peak memory.

    python bench/store_read.py [--rows 50000] [--studies 5] [--store DIR] [--keep]

Writes N results rows (each its own Parquet file, as `study run` writes them: every
column of rmaunet.store.COLUMNS, the config's cfg_* fields, JSON history and curves)
spread over a few studies, then runs `python -m rmaunet report STORE --no-figures` in a
subprocess twice, measuring each one's wall time and peak resident memory (ru_maxrss):
first on the row files alone (a read compacts each study's rows into one file), then
again, from the compacted copies. The issue's target: 50,000 rows within 30 s and 1 GB.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def results_rows(rows: int, studies: int) -> list[dict[str, object]]:
    """`rows` results rows spread over `studies` studies, with every column a real row has."""
    from rmaunet.config import TrialConfig
    from rmaunet.store import COLUMNS, CONFIG_PREFIX

    config = {
        f"{CONFIG_PREFIX}{k}": (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v)
        for k, v in TrialConfig().to_dict().items()
    }
    rng = random.Random(0)
    history = json.dumps([{"epoch": e, "loss": 0.5 / (e + 1), "val_f1": 0.6} for e in range(30)])
    curve = json.dumps([{"threshold": t / 20, "val_f1": 0.5, "test_f1": 0.5} for t in range(1, 20)])
    per_study = -(-rows // studies)
    fixed = {column: 0.5 for column in COLUMNS} | {
        "kind": "search",  # a search's trials: the one kind of study that holds thousands of rows
        "config_hash": "c",
        "status": "ok",
        "reason": "",
        "threshold_protocol": "tuned",
        "selection_metric": "f1",
        "test_tiles": 100,
        "test_tile_counts": "[]",  # no per-tile counts: the table checks them against test_f1
        "threshold_curve": curve,
        "history": history,
        "steps": "[]",
        "data_fingerprint": "f" * 16,
        "git_commit": "g" * 40,
        "versions": json.dumps({"tensorflow": "2.21"}),
        "node": "node",
        "accelerator": "CPU",
        "finished_at": "2026-01-01T00:00:00Z",
        "reused": False,
        **config,
    }
    return [
        fixed
        | {
            "study": f"study{i // per_study}",
            "row": f"trial {i % per_study}",
            "row_index": i % per_study,
            "seed": 0,
            "trial_id": f"t{i:012d}",
            "test_f1": rng.random(),
            "val_f1": rng.random(),
        }
        for i in range(rows)
    ]


def fill_store(store: Path, rows: int, studies: int) -> float:
    """Write `rows` row files the way ResultsStore.write_row does; returns the seconds it took."""
    from rmaunet.store import ResultsStore

    started = time.monotonic()
    results = ResultsStore(store)
    for row in results_rows(rows, studies):
        results.write_row(row)
    return time.monotonic() - started


def fill_compacted(store: Path, rows: int, studies: int) -> float:
    """A store as a read leaves it: each study's rows in its compacted copy, and a row file
    per row that the copy records as unchanged. The row files are hard links of one real
    row file (same size and time, so the copy's versions match): a compacted read never
    opens them, and writing 50,000 distinct one-row Parquet files takes this machine far
    longer than the read being measured. Returns the seconds it took."""
    import pandas as pd

    from rmaunet.store import _ROW_FILE, _ROW_VERSION, COMPACTED, ResultsStore

    started = time.monotonic()
    results = ResultsStore(store)
    frame = pd.DataFrame(results_rows(rows, studies))
    for study, part in frame.groupby("study"):
        keys = [results.row_key(study, row, seed) for row, seed in zip(part["row"], part["seed"])]
        first = Path(results.write_row(part.iloc[0].to_dict()))
        for key in keys[1:]:
            os.link(first, store / key)
        info = first.stat()
        part = part.assign(
            **{_ROW_FILE: [Path(k).name for k in keys], _ROW_VERSION: f"{info.st_size}:{info.st_mtime_ns}"}
        )
        (store / COMPACTED).mkdir(exist_ok=True)
        part.to_parquet(store / COMPACTED / f"{study}.parquet", index=False)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--store", type=Path, help="reuse (or keep) the store here instead of a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument(
        "--compacted", action="store_true", help="measure the compacted read only (see fill_compacted), not the first"
    )
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="store-read-"))
    store = args.store or root / "store"
    try:
        existing = sum(1 for _ in (store / "rows").rglob("*.parquet")) if (store / "rows").is_dir() else 0
        fill = fill_compacted if args.compacted else fill_store
        fill_s = fill(store, args.rows, args.studies) if existing != args.rows else 0.0
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [
            sys.executable,
            "-m",
            "rmaunet",
            "report",
            str(store),
            "--out",
            str(root / "reports"),
            "--no-figures",
        ]
        summary: dict[str, object] = {"rows": args.rows, "studies": args.studies, "fill_s": round(fill_s, 1)}
        # First on the row files alone (the read compacts each study), then from the compacted copies.
        for run in ("compacted",) if args.compacted else ("first", "compacted"):
            script = (
                "import resource, subprocess, sys, time; t = time.monotonic(); "
                "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
                "sys.stderr.write(p.stderr)"
            )
            done = subprocess.run([sys.executable, "-c", script, *command], env=env, capture_output=True, text=True)
            seconds, peak_kib, code = done.stdout.split()
            summary[f"{run}_report_s"] = round(float(seconds), 1)
            summary[f"{run}_report_peak_rss_mb"] = round(int(peak_kib) / 1024)
            summary[f"{run}_exit"] = int(code)
            if int(code):
                summary[f"{run}_stderr"] = done.stderr.strip()[-300:]
        summary["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
