"""What a new user meets first: --version, no abbreviated options, defaults in --help,
bundled specs by name from anywhere, `study list`, `study status`, $RMAUNET_STORAGE / $RMAUNET_DATA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rmaunet
from rmaunet.cli import main
from rmaunet.errors import SpecError, plural
from rmaunet.specs import bundled_spec, bundled_spec_names, resolve_spec
from rmaunet.store import ResultsStore
from rmaunet.studies.status import study_status
from rmaunet.trial_folder import TrialFolder


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exits (--version, --help, usage errors)
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_is_the_installed_distributions(capsys):
    # `rmaunet --version` and rmaunet.__version__ say the same version, the package metadata's.
    from importlib.metadata import version

    code, out, _ = _main(capsys, "--version")
    assert code == 0 and out.strip() == f"rmaunet {rmaunet.__version__}" == f"rmaunet {version('rmaunet')}"


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    # `--smok` is an error (exit 2), not silently `--smoke`.
    code, _, err = _main(capsys, "study", "plan", "demo", "--smok", "--data", "x", "--storage", "y")
    assert code == 2 and "unrecognized arguments: --smok" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["data", "synth"], "(default: landslide4sense)"),
        (["demo"], "(default: 240)"),
        (["data", "synth"], "same files) (default: 0)"),
    ],
)
def test_help_shows_each_default_once(capsys, argv, expected):
    # Every option with a default shows it, and an option whose help already names its default is not repeated.
    code, out, _ = _main(capsys, *argv, "--help")
    text = " ".join(out.split())
    assert code == 0 and expected in text
    assert "(default 100) (default" not in text


def test_a_bundled_spec_is_found_by_name_or_repository_path_from_anywhere(tmp_path, monkeypatch):
    # From a folder without search_spaces/ (an installed wheel's user), both spellings find the bundled file.
    monkeypatch.chdir(tmp_path)
    assert resolve_spec("paper_table4_losses") == bundled_spec("paper_table4_losses")
    assert resolve_spec("search_spaces/paper_table4_losses.yaml") == bundled_spec("paper_table4_losses")
    local = tmp_path / "demo.yaml"
    local.write_text("name: mine\n")
    assert resolve_spec("demo.yaml") == Path("demo.yaml")  # a file that is there wins over the bundled one
    with pytest.raises(SpecError, match=r"nosuch: no such spec file.*paper_table4_losses"):
        resolve_spec("nosuch")


def test_study_list_names_every_bundled_spec_with_its_size(capsys):
    code, out, _ = _main(capsys, "study", "list")
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == bundled_spec_names()
    demo = next(line for line in lines if line.startswith("demo "))
    assert "table, 3 rows × 3 seeds = 9 trainings" in demo
    table9 = next(line for line in lines if line.startswith("paper_table9_threshold "))
    assert "1 row × 3 seeds" in table9  # agreement: "1 row", never "1 rows"


def test_plural_agrees_with_its_count():
    assert [plural(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert plural(1, "study", "studies") == "1 study" and plural(3, "study", "studies") == "3 studies"


def test_storage_and_data_default_to_the_environment(capsys, monkeypatch, l4s_small, tmp_path):
    # With $RMAUNET_DATA and $RMAUNET_STORAGE set, `study plan demo --smoke` needs no flag at all.
    monkeypatch.setenv("RMAUNET_DATA", str(l4s_small))
    monkeypatch.setenv("RMAUNET_STORAGE", str(tmp_path / "store"))
    code, out, err = _main(capsys, "study", "plan", "demo", "--smoke", "--no-cost")
    assert code == 0, err
    assert "demo (table): 3 rows × 3 seeds = 9 results; 9 trainings to run" in out


def test_a_run_refused_for_a_missing_data_folder_leaves_no_store_behind(capsys, tmp_path):
    # A new user's first mistake: one line naming the folder, exit 2, and no empty store
    # (store marker, leases/) left where the results would have gone.
    store = tmp_path / "store"
    code, out, err = _main(
        capsys, "study", "run", "demo", "--smoke", "--data", str(tmp_path / "nodata"), "--storage", str(store)
    )
    assert (code, err) == (2, f"rmaunet: error: {tmp_path / 'nodata'}: data folder not found\n")
    assert not store.exists()


def _store_with_every_state(root: Path) -> ResultsStore:
    """A store as a half-finished run leaves it: its plan, one trial done (and reused by the
    study), one failed, one with an epoch checkpoint only, one never started."""
    store = ResultsStore(root)
    entries = [
        {"row": "Baseline", "row_index": 0, "seed": 0, "trial_id": "a" * 16, "epochs": 30},
        {"row": "Baseline", "row_index": 0, "seed": 1, "trial_id": "b" * 16, "epochs": 30},
        {"row": "Focal", "row_index": 1, "seed": 0, "trial_id": "c" * 16, "epochs": 30},
        {"row": "Focal", "row_index": 1, "seed": 1, "trial_id": "d" * 16, "epochs": 30},
    ]
    store.write_plan("half", {"study": "half", "kind": "table", "budget": 0, "rows": entries})
    done = TrialFolder(root / "trials" / ("a" * 16)).create()
    done.write_result({"status": "ok", "epochs_run": 30})
    failed = TrialFolder(root / "trials" / ("b" * 16)).create()
    failed.write_result({"status": "failed", "epochs_run": 2, "reason": "NaN loss at epoch 2"})
    running = TrialFolder(root / "trials" / ("c" * 16)).create()
    running.checkpoint.mkdir(parents=True)
    (running.checkpoint / TrialFolder.CHECKPOINT_STATE).write_text(json.dumps({"epoch": 7}))
    store.write_row(
        {"study": "half", "kind": "table", "row": "Baseline", "row_index": 0, "seed": 0, "trial_id": "a" * 16,
         "status": "ok", "reused": True, "selection_metric": "f1", "val_f1": 0.61}
    )  # fmt: skip
    return store


def test_study_status_reads_each_trainings_state_from_the_store(tmp_path, capsys):
    # done (reused), failed with its cause, running with its checkpointed epoch, not started.
    _store_with_every_state(tmp_path)
    (status,) = study_status(str(tmp_path))
    states = {(t.row, t.seed): t.state for t in status.trainings}
    assert states == {
        ("Baseline", 0): "done",
        ("Baseline", 1): "failed",
        ("Focal", 0): "running",
        ("Focal", 1): "not started",
    }
    assert status.best == ("Baseline", 0.61)

    code, out, _ = _main(capsys, "study", "status", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "half (table): 4 trainings: 1 done, 1 running, 1 failed, 1 not started; 1 reused"
    assert "best so far: Baseline (val_f1 61.00)" in lines[1]
    assert any("seed 1" in line and "failed" in line and "NaN loss at epoch 2" in line for line in lines)
    assert any("seed 0" in line and "epoch 7/30 checkpointed" in line for line in lines)


def test_status_of_a_study_the_store_never_ran_is_one_line(tmp_path, capsys):
    _store_with_every_state(tmp_path)
    code, _, err = _main(capsys, "study", "status", str(tmp_path), "--study", "other")
    assert code == 2 and err.count("\n") == 1 and "no plan of study 'other'" in err and "half" in err
