"""A search's Optuna study in a real PostgreSQL server (`--optuna-storage postgresql://…`)."""

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


def test_unreachable_postgres_is_one_line_without_the_password(l4s_small, tmp_path):
    # No server at the URL's port: exit 2, one line naming the URL with its password masked, no traceback.
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/optuna"
    out = _study_run(_search_spec(tmp_path), l4s_small, tmp_path / "store", url)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "s3cret" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and url.replace("s3cret", "***") in lines[0] and "cannot open the Optuna storage" in lines[0]


@pytest.mark.slow
def test_search_keeps_its_study_in_postgres_and_a_rerun_trains_nothing(postgres_url, l4s_small, tmp_path):
    # The study lives in the server: Optuna reads the budget's trials back, each finished with a
    # value, and the same command again spends no budget and retrains no trial.
    import optuna

    spec, storage = _search_spec(tmp_path), tmp_path / "store"
    out = _study_run(spec, l4s_small, storage, postgres_url)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = optuna.load_study(study_name="pg_search", storage=postgres_url)
    assert len(study.trials) == BUDGET
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished and t.value is not None for t in study.trials), study.trials
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert not (storage / "optuna.db").exists()  # not the SQLite default beside the store
    trained = {p: p.stat().st_mtime_ns for p in (storage / "trials").glob("*/result.json")}
    assert trained

    again = _study_run(spec, l4s_small, storage, postgres_url)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{BUDGET} of {BUDGET} trials done, 0 to run" in again.stdout
    assert len(optuna.load_study(study_name="pg_search", storage=postgres_url).trials) == BUDGET
    assert {p: p.stat().st_mtime_ns for p in (storage / "trials").glob("*/result.json")} == trained
