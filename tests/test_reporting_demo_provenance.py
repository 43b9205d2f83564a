"""The committed reports/demo/ was made by the code at HEAD (no stale example in the repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "reports" / "demo"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_committed_demo_report_was_made_by_the_package_at_head() -> None:
    # The demo's rows record the commit that trained them; rmaunet/ there must be rmaunet/ at HEAD,
    # else the test names the files that changed since (regenerate with a fresh `make demo`).
    if _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout: no history to compare the demo's commit with")
    commits = sorted(set(pd.read_parquet(DEMO / "results.parquet")["git_commit"].astype(str)))
    assert len(commits) == 1, f"reports/demo mixes rows of several commits: {commits}"
    commit = commits[0]
    known = _git("cat-file", "-e", f"{commit}^{{commit}}")
    assert known.returncode == 0, f"reports/demo was made at {commit[:12]}, which is not in this repository's history"
    made, head = (_git("rev-parse", f"{rev}:rmaunet").stdout.strip() for rev in (commit, "HEAD"))
    if made != head:
        changed = _git("diff", "--name-only", commit, "HEAD", "--", "rmaunet").stdout.split()
        pytest.fail(
            f"reports/demo was made at {commit[:12]}; rmaunet/ has changed since in {len(changed)} file(s): "
            f"{', '.join(changed[:10])}{' …' if len(changed) > 10 else ''}. Regenerate it: rm -rf .demo && make demo"
        )


def test_the_committed_demo_trained_until_its_curves_settled() -> None:
    # A demo table that compares trained models, not under-trained ones: over the last fifth
    # of its epochs each trial's validation F1 stays within a few points (the constant rate
    # of an earlier demo spread 3-9 points there), and no chosen threshold sits at an edge
    # of the grid, where the best one may lie beyond it.
    import json
    import statistics

    from rmaunet.thresholds import GRID

    rows = pd.read_parquet(DEMO / "results.parquet")
    spreads = []
    for history in rows["history"]:
        f1 = [100 * epoch["val_f1"] for epoch in json.loads(history)]
        last = f1[-max(2, len(f1) // 5) :]
        spreads.append(max(last) - min(last))
    assert statistics.median(spreads) < 2.5 and max(spreads) < 5, sorted(spreads)
    chosen = rows["chosen_threshold"]
    assert chosen.gt(GRID[0]).all() and chosen.lt(GRID[-1]).all(), sorted(chosen)
