"""What a running study prints: every line names its row and seed, epochs as k/N, a time
left re-estimated each epoch, and a live status line only on a terminal."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from rmaunet.errors import duration
from rmaunet.studies.progress import FINISHED, Progress
from rmaunet.study_cli import Console


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trial(tid: str, label: str, status: str = "RUNNING") -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, status=status, config={"label": label}, last_result={}, error_file=None)


def _progress(log, total: int = 2, epochs: int = 4) -> Progress:
    writer = SimpleNamespace(metric="f1", best=None)
    return Progress(
        writer, lambda t: t.config["label"], log, lambda trial, stopped: None, total=total, epochs=lambda t: epochs
    )


def test_epoch_lines_name_row_seed_and_epoch_of_n_with_a_time_left(monkeypatch):
    # Time left = elapsed / epochs done × epochs left (of running trials and of those not started).
    clock = iter([100.0, 110.0, 120.0])  # the start, then one reading per time-left estimate
    monkeypatch.setattr("rmaunet.studies.progress.time.monotonic", lambda: next(clock))
    lines: list[str] = []
    progress = _progress(lines.append)
    a = _trial("a", "Baseline (seed 0)")
    progress.on_trial_start(0, [a], a)
    progress.on_trial_result(0, [a], a, {"epoch": 1, "val_f1": 0.5, "loss": 0.3, "images_per_s": 120.0})
    assert lines[0] == "  start  Baseline (seed 0): 4 epochs"
    # 10 s for 1 epoch; left: 3 of this trial, 4 of the trial not started yet.
    assert lines[1] == "  epoch 1/4  Baseline (seed 0) on ?: loss 0.3000, val_f1 50.00, 120 img/s; about 70 s left"
    progress.on_trial_result(0, [a], a, {"epoch": 2, "val_f1": 0.6, "loss": 0.2})
    assert lines[2].endswith("; about 60 s left")  # 20 s for 2 epochs, 2 + 4 left


def test_a_finished_training_line_gives_its_epochs_and_validation_score():
    lines: list[str] = []
    progress = _progress(lines.append, total=1, epochs=3)
    a = _trial("a", "Focal (seed 2)", status="TERMINATED")
    progress.on_trial_result(0, [a], a, {"epoch": 3, "val_f1": 0.61})
    a.last_result = {FINISHED: 1, "status_ok": 1, "final_val_f1": 0.634}
    progress.on_trial_complete(0, [a], a)
    # No row written yet (the fake writer has none): no "best so far" clause.
    assert lines[-1].startswith("  done   Focal (seed 2): 3/3 epochs, val f1 63.40  [1/1] about")


def test_a_failed_verdict_is_counted_and_said():
    lines: list[str] = []
    progress = _progress(lines.append, total=1)
    a = _trial("a", "Doomed (seed 0)", status="TERMINATED")
    a.last_result = {FINISHED: 1, "status_ok": 0}
    progress.on_trial_complete(0, [a], a)
    assert progress.failed == 1 and "Doomed (seed 0): failed (its reason is in the store)" in lines[-1]


def test_off_a_terminal_no_status_line_and_no_control_characters():
    out = io.StringIO()
    console = Console(out)
    progress = _progress(console)
    a = _trial("a", "Baseline (seed 0)")
    progress.on_trial_start(0, [a], a)
    progress.on_trial_result(0, [a], a, {"epoch": 1, "val_f1": 0.5})
    console.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "▸" not in text
    assert all(re.match(r"\[\d\d:\d\d:\d\d\]   (start|epoch)", line) for line in text.splitlines())


def test_on_a_terminal_a_live_status_line_stays_under_the_log_lines():
    out = _Tty()
    console = Console(out)
    progress = _progress(console)
    a = _trial("a", "Baseline (seed 0)")
    progress.on_trial_start(0, [a], a)
    progress.on_trial_result(0, [a], a, {"epoch": 1, "val_f1": 0.5})
    text = out.getvalue()
    # Each log line first clears the status line, then the status line is drawn again below it.
    assert text.endswith("  ▸ 0/2 trainings done, 1 running; " + progress.eta([a]))
    assert "\r\x1b[K[" in text
    console.close()
    assert out.getvalue().endswith("\n")


@pytest.mark.parametrize(("seconds", "text"), [(4.24, "4.2 s"), (45, "45 s"), (600, "10 min"), (4 * 3600, "4.0 h")])
def test_durations_read_as_a_person_says_them(seconds, text):
    # One wording for the ETA and for study plan's cost table.
    assert duration(seconds) == text
