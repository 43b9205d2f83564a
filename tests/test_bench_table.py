"""bench/table.py: the README's benchmark table is rendered from the committed results, and kept so."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module


table = _table()


def _record(result: dict, **changes: object) -> dict:
    return {
        "command": "python bench/predict.py --size 64",
        "result": result,
        "machine": {"cpu": "Test CPU", "cores": 2, "gpus": []},
        "load_average_before": [1.25, 1.0, 1.0],
        "load_average_after": [0.5, 1.0, 1.0],
        "commit": "0123456789ab",
        "date": "2026-12-07T10:00:00Z",
        **changes,
    }


def test_the_readme_section_is_what_the_committed_results_render() -> None:
    # A result recorded without `bench/table.py --write` leaves the README quoting old figures.
    readme = (ROOT / "README.md").read_text()
    section = readme.split(table.START)[1].split(table.END)[0].strip("\n")
    assert section == table.render(), "README.md's benchmark table is stale: run python bench/table.py --write"


def test_every_committed_result_has_its_headline_figures() -> None:
    names = sorted(p.stem for p in (ROOT / "bench" / "results").glob("*.json"))
    assert names and set(names) <= set(table.HEADLINES)
    for name in names:
        record = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
        assert table.headline(name, record["result"])  # raises on a missing figure


def test_a_row_names_the_command_figures_machine_load_and_commit(tmp_path: Path) -> None:
    result = {"windows_per_s": 147.4, "naive_windows_per_s": 71.2, "speedup": 2.07, "large": {"size": [10980, 10980]}}
    path = tmp_path / "predict.json"
    path.write_text(json.dumps(_record(result)))
    row = table.row(path)
    assert row.startswith("| `predict` | `python bench/predict.py --size 64` | predict_scene 147 windows/s; ")
    assert "speed-up 2.1×; large scene side 10980 × 10980 px |" in row  # the optional peak memory left out
    assert "| Test CPU, 2 cores, no GPU | 1.2 → 0.5 | `0123456789ab` | 2026-12-07 10:00 UTC |" in row


def test_a_commit_note_added_to_a_record_is_shown_beside_its_commit(tmp_path: Path) -> None:
    # A record measured at a commit that never landed says so where the commit is named.
    result = {"windows_per_s": 147.4, "naive_windows_per_s": 71.2, "speedup": 2.07, "large": {"size": [10980, 10980]}}
    path = tmp_path / "predict.json"
    path.write_text(json.dumps(_record(result, commit_note="did not land")))
    assert "| `0123456789ab` (did not land) | 2026-12-07 10:00 UTC |" in table.row(path)


def test_targets_are_rendered_beside_their_figures() -> None:
    goals = {"pixel_f1_at_most": 0.45, "gap_at_least": 0.15}
    text = table.headline("synthetic_difficulty", {"pixel_f1": 0.377, "unet_f1": 0.765, "gap": 0.388, "goals": goals})
    assert text == (
        "per-pixel classifier test F1 0.377 (target ≤ 0.450); U-Net test F1 0.765; gap 0.388 (target ≥ 0.150)"
    )


@pytest.mark.parametrize(
    ("name", "result", "message"),
    [
        ("new_bench", {"x": 1}, "no headline figures for 'new_bench'"),
        ("predict", {"windows_per_s": 1.0}, "has no 'naive_windows_per_s'"),
    ],
)
def test_a_result_that_cannot_be_rendered_is_refused(name: str, result: dict, message: str) -> None:
    with pytest.raises(table.TableError, match=message):
        table.headline(name, result)


def test_the_section_replaces_only_the_text_between_the_markers() -> None:
    readme = f"# Title\n\n{table.START}\nold\n{table.END}\n\nTail\n"
    assert table.replace_section(readme, "new") == f"# Title\n\n{table.START}\nnew\n{table.END}\n\nTail\n"
    with pytest.raises(table.TableError, match="exactly one"):
        table.replace_section("# No markers\n", "new")
