"""Reading a results store of many row files: `rmaunet report` on N rows, its time and peak memory.

    python bench/store_read.py [--rows 50000] [--studies 5] [--store DIR] [--keep] [--compacted]
                               [--runs 3] [--figures] [--kind search|table|both]

Writes N results rows (each its own Parquet file, as `study run` writes them: every
column of rmaunet.store.COLUMNS, the config's cfg_* fields, JSON history and curves)
spread over a few studies, then runs `python -m rmaunet report STORE --no-figures` in a
subprocess, measuring each run's wall time and peak resident memory (ru_maxrss): first
on the row files alone (a read compacts each study's rows into one file), then `--runs`
times from the compacted copies, whose median it reports (the machine may be shared: the
load average before and after is printed too). The issue's target: 50,000 rows within
30 s and 1 GB, figures included, for a search (one trial per row) and a table (rows of three
seeds, paired tests): `--kind both --figures` measures each kind in its own store, one after
the other, and prints both under "kinds".

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


KINDS = ("search", "table")


def results_rows(rows: int, studies: int, kind: str = "search") -> list[dict[str, object]]:
    """`rows` results rows spread over `studies` studies, with every column a real row has: a
    search's trials (one seed each), or a one-factor table's rows of three seeds each (a paired
    test per row)."""
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
        "kind": kind,
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
            "row": f"trial {i % per_study}" if kind == "search" else f"row {i % per_study // 3}",
            "row_index": i % per_study if kind == "search" else i % per_study // 3,
            "seed": 0 if kind == "search" else i % 3,
            "trial_id": f"t{i:012d}",
            "test_f1": rng.random(),
            "val_f1": rng.random(),
        }
        for i in range(rows)
    ]


def fill_store(store: Path, rows: int, studies: int, kind: str) -> float:
    """Write `rows` row files the way ResultsStore.write_row does; returns the seconds it took."""
    from rmaunet.store import ResultsStore

    started = time.monotonic()
    results = ResultsStore(store)
    for row in results_rows(rows, studies, kind):
        results.write_row(row)
    return time.monotonic() - started


def fill_compacted(store: Path, rows: int, studies: int, kind: str) -> float:
    """A store as a read leaves it: each study's rows in its compacted copy, and a row file
    per row that the copy records as unchanged. The row files are hard links of one real
    row file (same size and time, so the copy's versions match): a compacted read never
    opens them, and writing 50,000 distinct one-row Parquet files takes this machine far
    longer than the read being measured. Returns the seconds it took."""
    import pandas as pd

    from rmaunet.store import _ROW_FILE, _ROW_VERSION, COMPACTED, ResultsStore

    started = time.monotonic()
    results = ResultsStore(store)
    frame = pd.DataFrame(results_rows(rows, studies, kind))
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


def _timed_report(command: list[str], env: dict[str, str]) -> dict[str, object]:
    """One report in a child process: its wall time, its peak resident memory, its exit status."""
    script = (
        "import resource, subprocess, sys, time; t = time.monotonic(); "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
        "sys.stderr.write(p.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script, *command], env=env, capture_output=True, text=True)
    seconds, peak_kib, code = done.stdout.split()
    run: dict[str, object] = {"s": round(float(seconds), 1), "peak_rss_mb": round(int(peak_kib) / 1024)}
    run["exit"] = int(code)
    if int(code):
        run["stderr"] = done.stderr.strip()[-300:]
    return run


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _measure(args: argparse.Namespace, kind: str) -> dict[str, object]:
    """Fill a store of `kind` (unless --store already holds the rows) and time its reports."""
    root = Path(tempfile.mkdtemp(prefix="store-read-"))
    store = args.store or root / "store"
    try:
        existing = sum(1 for _ in (store / "rows").rglob("*.parquet")) if (store / "rows").is_dir() else 0
        fill = fill_compacted if args.compacted else fill_store
        fill_s = fill(store, args.rows, args.studies, kind) if existing != args.rows else 0.0
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "rmaunet", "report", str(store), "--reports", str(root / "reports")]
        command += [] if args.figures else ["--no-figures"]
        summary: dict[str, object] = {"rows": args.rows, "studies": args.studies, "kind": kind}
        summary["figures"] = args.figures
        summary["fill_s"] = round(fill_s, 1)
        summary["loadavg_before"] = _loadavg()
        # First on the row files alone (the read compacts each study), then from the compacted copies.
        if not args.compacted:
            first = _timed_report(command, env)
            summary |= {f"first_report_{key}": value for key, value in first.items()}
        runs = [_timed_report(command, env) for _ in range(max(args.runs, 1))]
        summary["compacted_report_s"] = statistics.median(r["s"] for r in runs)
        summary["compacted_report_peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in runs)
        summary["compacted_runs"] = runs
        summary["loadavg_after"] = _loadavg()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--store", type=Path, help="reuse (or keep) the store here instead of a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument(
        "--compacted", action="store_true", help="measure the compacted read only (see fill_compacted), not the first"
    )
    parser.add_argument("--runs", type=int, default=3, help="reports from the compacted copies (their median counts)")
    parser.add_argument(
        "--kind",
        choices=(*KINDS, "both"),
        default="search",
        help="search: one trial per row; table: rows of 3 seeds each; both: each in its own store",
    )
    parser.add_argument("--figures", action="store_true", help="draw the figures too (default: tables only)")
    args = parser.parse_args(argv)

    kinds = KINDS if args.kind == "both" else (args.kind,)
    if args.store is not None and len(kinds) > 1:
        parser.error("--store holds one kind of study: give --kind search or table with it")
    measured = {kind: _measure(args, kind) for kind in kinds}
    both = {"rows": args.rows, "figures": args.figures, "kinds": measured}
    summary = measured[kinds[0]] if len(kinds) == 1 else both
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
