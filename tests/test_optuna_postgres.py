"""`--optuna-storage postgresql://…` that cannot be opened. A search that keeps its study in a
real PostgreSQL server, read back with optuna.load_study, and a rerun that spends none of its
budget: tests/test_multinode.py, phase 2 (one end-to-end run of it, not two)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ports import free_port

BUDGET = 3


def _search_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "pg_search.yaml"
    spec.write_text(
        "name: pg_search\nkind: search\nbase: {preset: baseline, augment: []}\n"
        f"budget: {BUDGET}\nspace:\n  learning_rate: {{loguniform: [1.0e-4, 3.0e-3]}}\n"
    )
    return spec


def _study_run(spec: Path, data: Path, storage: Path, optuna_storage: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rmaunet", "study", "run", str(spec), "--data", str(data)]
    command += ["--storage", str(storage), "--optuna-storage", optuna_storage, "--smoke"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_unreachable_postgres_is_one_line_without_the_password(l4s_small, tmp_path):
    # No server at the URL's port: exit 2, one line naming the URL with its password masked, no traceback.
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/optuna"
    out = _study_run(_search_spec(tmp_path), l4s_small, tmp_path / "store", url)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "s3cret" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and url.replace("s3cret", "***") in lines[0] and "cannot open the Optuna storage" in lines[0]
