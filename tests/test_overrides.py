"""`--set KEY=VALUE` and `--seeds` on `study plan` / `study run`, and the API's `overrides=` / `seeds=`:
parsed as the spec's YAML, applied to the base before the rows are built, refused in one line
naming the flag, part of every trial's identity, and shown by `study plan`. No Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

import rmaunet
from rmaunet.cli import main
from rmaunet.errors import SpecError
from rmaunet.specs import bundled_spec
from rmaunet.store import ResultsStore
from rmaunet.studies.expand import expand
from rmaunet.studies.plan import StudyPlan
from rmaunet.studies.spec import load_spec, parse_seeds, parse_set
from tests.cli_runs import assert_clean_exit, run_cli

TABLE4 = bundled_spec("paper_table4_losses")  # base {preset: baseline}; rows set their own loss


def test_values_read_as_the_spec_reads_them_yaml_1_2():
    parsed = parse_set(
        ["epochs=010", "learning_rate=1e-4", "augment=off", "crop=null", "loss_params={alpha: 0.3}", "bands=14"]
    )
    # 010 is ten (no YAML 1.1 octal), `off` is text (no YAML 1.1 boolean), 1e-4 a number.
    assert parsed == {
        "epochs": 10,
        "learning_rate": 1e-4,
        "augment": "off",
        "crop": None,
        "loss_params": {"alpha": 0.3},
        "bands": 14,
    }
    assert parse_seeds("0, 1,2") == (0, 1, 2)


def test_every_row_inherits_an_override_but_a_row_that_sets_the_key_keeps_its_own():
    plain = load_spec(TABLE4, build_checks=False)
    spec = load_spec(TABLE4, overrides={"epochs": 5, "loss": "focal"}, seeds=[3, 1], build_checks=False)
    assert spec.base.epochs == 5 and all(r.config.epochs == 5 for r in spec.rows)
    assert spec.seeds == (3, 1) and spec.changes() == "epochs=5, loss=focal; seeds 3, 1"
    # The baseline row takes the overridden loss; the rows that name their own loss keep it.
    assert spec.rows[0].config.loss == "focal"
    for row, before in zip(spec.rows[1:], plain.rows[1:]):
        assert row.config.loss == before.config.loss
    assert spec.rows_keeping_their_own() == {"loss": [r.label for r in plain.rows[1:] if r.config.loss != "focal"]}
    assert plain.changes() == "" and not plain.seeds_given


def test_a_nested_key_changes_one_entry_of_the_base_s_mapping():
    # The rmaunet preset's loss_params is {alpha: 0.5}: setting gamma, then smooth, keeps alpha.
    overrides = {"loss_params.gamma": 3, "loss_params.smooth": 1}
    spec = load_spec(bundled_spec("paper_table9_threshold"), overrides=overrides, build_checks=False)
    assert dict(spec.base.loss_params) == {"alpha": 0.5, "gamma": 3, "smooth": 1}
    # The loss check (it builds the loss) names the flag too, not the row that inherits the parameter.
    with pytest.raises(SpecError, match=r"^--set loss_params.alphx=1: base: loss cross_entropy: unknown parameter"):
        load_spec(TABLE4, overrides={"loss_params.alphx": 1})


def test_smoke_keeps_what_the_command_line_set():
    spec = load_spec(bundled_spec("demo"), smoke=True, overrides={"epochs": 3}, build_checks=False)
    assert {(r.config.epochs, r.config.depth, r.config.crop) for r in spec.rows} == {(3, 2, 32)}
    # A value valid for the real run but not with --smoke's 32-px crops: refused only with --smoke, naming the flag.
    assert load_spec(TABLE4, overrides={"depth": 7}, build_checks=False).base.depth == 7
    with pytest.raises(SpecError, match=r"^--set depth=7: smoke: crop: 32 must be divisible"):
        load_spec(TABLE4, smoke=True, overrides={"depth": 7}, build_checks=False)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--set", "epoch=5"], "--set epoch=5: unknown key 'epoch' of the base config (did you mean epochs?)"),
        (["--set", "qqq=1"], "--set qqq=1: unknown key 'qqq' of the base config (known: attention, augment,"),
        (["--set", "epochs=five"], "--set epochs=five: base: epochs: expected an integer, got 'five'"),
        (["--set", "epochs=1.5"], "--set epochs=1.5: base: epochs: expected an integer, got 1.5"),
        (["--set", "loss=focl"], "--set loss=focl: base: loss: unknown value 'focl' (choose one of: cross_entropy,"),
        (["--set", "crop=40"], "--set crop=40: base: crop: 40 must be divisible by 2**depth = 16"),
        (["--set", "loss.alpha=1"], "--set loss.alpha=1: loss.alpha: the base's loss is not a mapping"),
        (["--set", "seed=1"], "--set seed=1: the seeds are the study's: use --seeds"),
        (["--set", "select=val_iou"], "--set select=val_iou: the selection metric is the study's"),
        (["--set", "epochs"], "--set epochs: expected KEY=VALUE, e.g. --set epochs=5"),
        (["--set", "epochs=[5"], "--set epochs=[5: invalid YAML"),
        (["--set", "epochs=5", "--set", "epochs=6"], "--set epochs=6: epochs is set twice"),
        (["--seeds", "0,x"], "--seeds 0,x: expected integers in [0, 2147483647] separated by commas"),
        (["--seeds", "1,0,1"], "--seeds 1,0,1: each seed may appear once"),
        (["--seeds", "4294967296"], "--seeds 4294967296: expected a non-empty list of integers in [0, 2147483647]"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_refused_override_is_one_line_naming_the_flag_before_anything_starts(tmp_path, command, flags, expected):
    import ray

    store = tmp_path / "store"
    code, stderr = run_cli(["study", command, str(TABLE4), "--data", str(tmp_path), "--storage", str(store), *flags])
    assert_clean_exit(code, stderr, f"study {command} {flags}", expected)
    assert code == 2 and stderr.startswith(f"rmaunet: error: {expected}"), stderr
    assert not store.exists() and not ray.is_initialized()  # no spec kept, no lease, no Ray


def test_a_trial_is_reused_only_at_the_values_it_was_trained_with(tmp_path):
    store = ResultsStore(tmp_path / "store")
    as_written = load_spec(TABLE4, build_checks=False)
    short = load_spec(TABLE4, overrides={"epochs": 5}, build_checks=False)
    for p in expand(short, "fp"):  # the short study ran
        store.trial(p.trial_id).create().write_result({"status": "ok", "epochs_run": 5})

    def plan(spec) -> StudyPlan:
        return StudyPlan(spec, expand(spec, "fp"), store, {}, {})

    assert len(plan(short).finished) == 27 and not plan(short).to_train
    assert not plan(as_written).finished  # 30 epochs: nothing of the 5-epoch study is taken for it
    # The override to the spec's own value changes no identity; --seeds keeps the trials of the seeds it names.
    assert plan(load_spec(TABLE4, overrides={"epochs": 30}, build_checks=False)).unique.keys() == (
        plan(as_written).unique.keys()
    )
    more_seeds = plan(load_spec(TABLE4, overrides={"epochs": 5}, seeds=[0, 1, 2, 3], build_checks=False))
    assert len(more_seeds.finished) == 27 and {p.seed for p in more_seeds.to_train} == {3}


def test_the_api_applies_overrides_to_a_loaded_spec_as_the_command_line_does(l4s_small, tmp_path, capsys):
    store = tmp_path / "store"
    smoke = rmaunet.load_spec("demo", smoke=True)
    plan = rmaunet.plan_study(smoke, l4s_small, store, overrides={"epochs": 2, "attention": "se"}, seeds=[1])
    # Read again from its file with --smoke kept: 3 rows × seed 1 at 2 epochs and --smoke's width.
    assert [(p.seed, p.config.epochs, p.config.base_filters) for p in plan.planned] == [(1, 2, 4)] * 3
    assert plan.spec.changes() == "epochs=2, attention=se; seeds 1"

    args = ["study", "plan", "demo", "--smoke", "--data", str(l4s_small), "--storage", str(store)]
    assert main([*args, "--set", "epochs=2", "--set", "attention=se", "--seeds", "1", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "3 rows × 1 seed = 3 results" in out
    assert "  [changed] epochs=2, attention=se; seeds 1 (recorded in the store with the study's results)" in out
    assert "  [changed] attention does not reach U-Net & multi-head attention: 1 row with attention of its own" in out
    assert [line.split(" trial ")[1].split(",")[0] for line in out.splitlines() if "[train]" in line] == [
        p.trial_id for p in plan.planned
    ]


def test_help_shows_both_flags_with_an_example(capsys):
    for command in ("plan", "run"):
        with pytest.raises(SystemExit):
            main(["study", command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--set KEY=VALUE" in text and "e.g. --set epochs=5 --set batch_size=8" in text
        assert "--seeds S[,S…]" in text and "e.g. --seeds 0,1,2" in text


def test_the_kept_spec_record_names_the_changes(tmp_path: Path):
    from rmaunet.api import _spec_record

    spec = load_spec(TABLE4, overrides={"batch_size": 4}, seeds=[0], build_checks=False)
    ResultsStore(tmp_path).write_spec(spec.name, _spec_record(spec, synthetic=False))
    record = ResultsStore(tmp_path).read_spec(spec.name)
    assert record is not None and record["overrides"] == "batch_size=4; seeds 0" and record["smoke"] is False
