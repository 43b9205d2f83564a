from __future__ import annotations

from pathlib import Path

import pytest

from rmaunet.config import PRESETS
from rmaunet.errors import SpecError
from rmaunet.studies.expand import expand
from rmaunet.studies.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

TABLE = """\
name: t
kind: table
base:
  preset: baseline
  base_filters: 8
seeds: [0, 1]
rows:
  - label: CE
  - label: Focal
    set: {loss: focal}
  - label: CE again
    set: {loss: cross_entropy}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_table_rows_apply_overrides_to_the_base(tmp_path):
    # Each row is the base with its `set:` applied; seeds multiply rows.
    spec = load_spec(_write(tmp_path, TABLE))
    assert [r.label for r in spec.rows] == ["CE", "Focal", "CE again"]
    assert spec.rows[1].config.loss == "focal" and spec.rows[1].config.base_filters == 8
    planned = expand(spec, "fp")
    assert len(planned) == 6


def test_identical_configs_share_one_trial(tmp_path):
    # "CE" and "CE again" are the same training: one identity per seed.
    planned = expand(load_spec(_write(tmp_path, TABLE)), "fp")
    ids = {(p.label, p.seed): p.trial_id for p in planned}
    assert ids[("CE", 0)] == ids[("CE again", 0)]
    assert ids[("CE", 0)] != ids[("CE", 1)] != ids[("Focal", 1)]
    assert len({p.trial_id for p in planned}) == 4


def test_data_fingerprint_is_part_of_identity(tmp_path):
    # Changed data means a new training, never a silent reuse.
    spec = load_spec(_write(tmp_path, TABLE))
    assert expand(spec, "a")[0].trial_id != expand(spec, "b")[0].trial_id


@pytest.mark.parametrize(
    "edit, line, message",
    [
        (
            ("  - label: Focal\n    set: {loss: focal}", "  - label: Focal\n    set: {loss: focl}"),
            10,
            "unknown value 'focl'",
        ),
        (("seeds: [0, 1]", "seeds: [0, 1]\ntypo_key: 3"), 7, "unknown key 'typo_key'"),
        (("    set: {loss: focal}", "    set: {loss: focal_iou, loss_params: {alpha: 1.5}}"), 10, "alpha"),
        (("  base_filters: 8", "  base_filters: 8\n  attention: transformer"), 6, "attention: unknown value"),
        (("  base_filters: 8", "  base_filters: 8\n  bands: B2,ndvx"), 6, "ndvx"),
        (("kind: table", "kind: tabel"), 2, "kind: unknown value 'tabel'"),
    ],
)
def test_bad_specs_are_refused_with_line_and_reason(tmp_path, edit, line, message):
    # The error cites file:line and the reason, before anything runs.
    path = _write(tmp_path, TABLE.replace(*edit))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}:"), text
    assert message in text


def test_search_over_a_parameter_the_loss_does_not_take_is_refused(tmp_path):
    # alpha means nothing to cross-entropy: refused at load time, not in every trial.
    text = (
        "name: s\nkind: search\nbase: {preset: baseline}\nbudget: 2\nspace:\n  loss_params.alpha: {uniform: [0, 1]}\n"
    )
    with pytest.raises(SpecError, match=r"spec.yaml:6: .*loss cross_entropy: unknown parameter 'alpha'"):
        load_spec(_write(tmp_path, text))


def test_threshold_outside_open_interval_is_refused(tmp_path):
    # Table IX thresholds must lie in (0, 1).
    text = "name: th\nkind: threshold\nbase: {preset: rmaunet}\nthresholds: [0.5, 1.0]\n"
    with pytest.raises(SpecError, match=r"spec.yaml:4: thresholds: 1.0 is outside \(0, 1\)"):
        load_spec(_write(tmp_path, text))


def test_ladder_is_cumulative(tmp_path):
    # Each ladder step keeps every earlier technique (Table X).
    text = (
        "name: lad\nkind: ladder\nbase: {preset: baseline}\nsteps:\n"
        "  - {label: Combined loss, set: {loss: focal_iou}}\n"
        "  - {label: 23 bands, set: {bands: '23'}}\n"
    )
    spec = load_spec(_write(tmp_path, text))
    assert [r.config.loss for r in spec.rows] == ["cross_entropy", "focal_iou", "focal_iou"]
    assert spec.rows[2].config.bands == "23" and spec.rows[2].steps == ("Combined loss", "23 bands")


def test_loco_removes_one_component_per_row(tmp_path):
    # Leave-one-out: every row is the full model with exactly one component reverted.
    text = (
        "name: loco\nkind: loco\nfull: {preset: rmaunet}\ncomponents:\n"
        "  - {label: Multiple heads, remove: {heads: single}}\n"
        "  - {label: Attention, remove: {attention: none}}\n"
    )
    spec = load_spec(_write(tmp_path, text))
    full, no_heads, no_att = (r.config for r in spec.rows)
    assert (full.heads, full.attention) == ("multi_resolution", "mha")
    assert (no_heads.heads, no_heads.attention) == ("single", "mha")
    assert (no_att.heads, no_att.attention) == ("multi_resolution", "none")


def test_smoke_shrinks_without_editing(tmp_path):
    # --smoke: small width, crop, few tiles, one epoch, whatever the spec says.
    spec = load_spec(_write(tmp_path, TABLE), smoke=True)
    c = spec.rows[1].config
    assert (c.base_filters, c.epochs, c.crop, c.max_tiles, c.loss) == (4, 1, 32, 40, "focal")


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    # The specs we ship validate (full and smoke).
    assert load_spec(path).rows
    assert load_spec(path, smoke=True).rows


# ---------------------------------------------------------------------- hostile or malformed specs
BASE = "name: t\nkind: table\nrows:\n  - {label: a}\n"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("name: t\nkind: table\nkind: ladder\nrows:\n  - {label: a}\n", 3, "duplicate key 'kind' (first at line 2)"),
        ("name: t\nkind: table\nrows:\n  - {label: a, set: {loss: focal, loss: iou}}\n", 4, "duplicate key 'loss'"),
        ("name: t\nkind: table\nrows:\n  - {label: a, set: 5}\n", 4, "set: expected a mapping (field: value), got int"),
        ("name: t\nkind: table\nbase: abc\nrows:\n  - {label: a}\n", 3, "base: expected a mapping"),
        ("name: t\nkind: table\nsmoke: [1, 2]\nrows:\n  - {label: a}\n", 3, "smoke: expected a mapping (field: value)"),
        ("name: t\nkind: table\nrows:\n  - {label: a, set: {loss_params: ab}}\n", 4, "loss_params: expected a mapping"),
        ("name: t\nkind: table\nrows:\n  - {label: a, set: {l2: " + "9" * 400 + "}}\n", 4, "l2: 999"),
        ("name: t\nkind: table\nresources: {cpu: " + "9" * 400 + "}\nrows:\n  - {label: a}\n", 3, "resources.cpu: "),
        ("name: t\nkind: table\nresources: {gpu: .nan}\nrows:\n  - {label: a}\n", 3, "resources.gpu: expected"),
        ("name: t\nkind: table\nresources: {cpu: 1.0e9}\nrows:\n  - {label: a}\n", 3, "number in [0, 1024]"),
        ("name: t\nkind: table\nseeds: [true]\nrows:\n  - {label: a}\n", 3, "seeds: expected a non-empty list"),
        ("name: ../../x\nkind: table\nrows:\n  - {label: a}\n", 1, "name: '../../x' cannot name the study's files"),
        ("name: .hidden\nkind: table\nrows:\n  - {label: a}\n", 1, "cannot name the study's files"),
        ("name: t\nkind: table\nrows:\n  - {label: {a: 1}}\n", 4, "label: expected text or a number, got a mapping"),
        ('name: t\nkind: table\nrows:\n  - {label: "a\\nb"}\n', 4, "label: expected one line"),
        ("name: t\nkind: table\nseeds: [2020-13-45]\nrows:\n  - {label: a}\n", 3, "bad value (month must be in 1..12)"),
        ("name: t\nkind: table\nseeds: [" + "1" * 5000 + "]\nrows:\n  - {label: a}\n", 3, "Exceeds the limit"),
        ("name: &a [*a]\nkind: table\n", 1, "an alias refers to itself"),
        ("name: t\nkind: table\nrows:\n  - {label: a}\n  - {label: b, set: {x\x01: 1}}\n", 5, "control character #x01"),
        ("- a\n- b\n", 1, "a spec must be a YAML mapping"),
    ],
)
def test_malformed_specs_are_refused_with_line(tmp_path, text, line, message):
    # Wrong types, huge numbers, unsafe names and labels, duplicate keys: file:line and the reason.
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)
    assert message in str(err.value)


def test_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    # A few hundred bytes of nested aliases (9**9 nodes expanded) are refused, not expanded.
    import tracemalloc

    levels = [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]", *levels])
    path = _write(tmp_path, bomb + "\n" + BASE)
    assert path.stat().st_size < 600
    tracemalloc.start()
    expected = r"spec.yaml:\d+: invalid YAML \(more than 20000 values once aliases are expanded\)"
    with pytest.raises(SpecError, match=expected):
        load_spec(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20  # refused before expanding: no clock, which a busy machine would slow


def test_small_aliases_and_merge_keys_still_work(tmp_path):
    # Anchors reused a few times, and `<<:` merges overriding a key, are ordinary YAML and load.
    text = (
        "name: t\nkind: table\nbase: &d {loss: focal, base_filters: 8}\n"
        "rows:\n  - {label: a, set: *d}\n  - label: b\n    set: {<<: *d, loss: iou}\n"
    )
    spec = load_spec(_write(tmp_path, text))
    assert [(r.config.loss, r.config.base_filters) for r in spec.rows] == [("focal", 8), ("iou", 8)]


def test_non_utf8_spec_is_refused_with_line(tmp_path):
    # A Latin-1 byte is named with its line, not a UnicodeDecodeError traceback.
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: t\nkind: table\nrows:\n  - {label: caf\xe9}\n")
    with pytest.raises(SpecError, match=r"spec.yaml:4: spec is not UTF-8 text \(byte 0xe9\)"):
        load_spec(path)


def test_smoke_block_is_checked_without_smoke(tmp_path):
    # A typo in `smoke:` is refused at plan time, not at the first --smoke run.
    path = _write(tmp_path, "name: t\nkind: table\nsmoke: {epoch: 1}\nrows:\n  - {label: a}\n")
    with pytest.raises(SpecError, match=r"spec.yaml:3: smoke: unknown config key 'epoch'"):
        load_spec(path)


def test_long_values_are_cut_in_one_line_messages(tmp_path):
    # An error that echoes a huge value stays one short line.
    path = _write(tmp_path, "name: t\nkind: " + "x" * 5000 + "\nrows:\n  - {label: a}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_loss_builds(preset):
    # Spec loading skips the (TensorFlow-importing) loss check for a preset's own loss: it must build.
    from rmaunet import losses

    config = PRESETS[preset]
    assert callable(losses.get(config.loss, **config.loss_kwargs))


def test_a_spec_keeping_the_preset_losses_loads_without_tensorflow(tmp_path):
    # Validating demo-like specs must not pay for (or print) a TensorFlow import.
    import subprocess
    import sys

    code = (
        "import sys; from rmaunet.studies.spec import load_spec; "
        "load_spec(sys.argv[1]); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "search_spaces" / "paper_table7_heads.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "False" and not out.stderr


def test_smoke_runs_on_a_cpu_whatever_the_spec_asks_for():
    # The paper specs ask for {cpu: 4, gpu: 1}: a smoke run on a laptop must still schedule.
    from rmaunet.specs import bundled_spec
    from rmaunet.studies.spec import load_spec

    full = load_spec(bundled_spec("paper_table10_ladder"))
    smoke = load_spec(bundled_spec("paper_table10_ladder"), smoke=True)
    assert full.resources["gpu"] == 1
    assert smoke.resources["gpu"] == 0 and smoke.resources["cpu"] == 1 and smoke.resources["workers"] == 1


# Every spec key reaches the planned trials it governs, and a value other than the default
# changes what those trials do (their config, so their identity: no old trial is reused
# under a new meaning). What each config field does inside a trial is tested where it acts.
@pytest.mark.parametrize(
    "line, field, value",
    [
        ("select: val_miou", "select", "miou"),  # the metric that picks the kept epoch and a tuned threshold
        ("base: {preset: baseline, threshold: 0.3}", "threshold", 0.3),  # scored and epoch chosen at 0.3
        ("base: {preset: baseline, det_threshold: 0.7}", "det_threshold", 0.7),  # the detection head's
        ("base: {preset: baseline, epochs: 2}", "epochs", 2),
        ("base: {preset: baseline, max_tiles: 9}", "max_tiles", 9),
        ("base: {preset: baseline, split_groups: 'regex:^(\\w+)_'}", "split_groups", "regex:^(\\w+)_"),
    ],
)
def test_each_spec_key_reaches_every_planned_trial(tmp_path, line, field, value):
    body = "kind: table\nseeds: [0, 1]\nrows: [{label: A}, {label: B, set: {loss: focal}}]\n"
    default = expand(load_spec(_write(tmp_path, f"name: t\nbase: {{preset: baseline}}\n{body}")), "fp")
    changed = expand(load_spec(_write(tmp_path, f"name: t\n{line}\n{body}")), "fp")
    assert {getattr(p.config, field) for p in changed} == {value}
    assert all(getattr(p.config, field) != value for p in default)
    # Every knob here changes what training keeps, so no planned trial keeps its old identity.
    assert not {p.trial_id for p in changed} & {p.trial_id for p in default}


# `select` is the study's: a row or base that sets its own would train by one metric and
# be reported by another, so it is refused with its line.
@pytest.mark.parametrize("where", ["base: {preset: baseline, select: miou}", "rows: [{label: A, set: {select: miou}}]"])
def test_select_inside_a_section_is_refused(tmp_path, where):
    text = "name: t\nkind: table\n" + (where if where.startswith("base") else f"base: {{preset: baseline}}\n{where}")
    text += "" if "rows" in where else "\nrows: [{label: A}]"
    with pytest.raises(SpecError, match="select is the study's"):
        load_spec(_write(tmp_path, text + "\n"))


# resources: cpu / gpu become each trial's Tune bundle and workers its data-parallel group.
def test_resources_reach_each_trials_request(tmp_path):
    from rmaunet.studies.grid import trial_request

    body = "name: t\nkind: table\nbase: {preset: baseline}\nrows: [{label: A}, {label: B, set: {num_workers: 3}}]\n"
    one = load_spec(_write(tmp_path, body + "resources: {cpu: 3, gpu: 0.5}\n"))
    config, bundle = trial_request(one, one.rows[0].config)
    assert bundle == {"CPU": 3.0, "GPU": 0.5} and config.num_workers == 1
    group = load_spec(_write(tmp_path, body + "resources: {cpu: 2, workers: 2}\n"))
    config, bundle = trial_request(group, group.rows[0].config)
    assert config.num_workers == 2 and bundle["CPU"] == 0  # its workers hold the CPUs, not the driver
    assert trial_request(group, group.rows[1].config)[0].num_workers == 3  # a row's own group wins


# A search trains each sample on one worker: asking for more is refused, not ignored.
def test_a_search_refuses_data_parallel_workers(tmp_path):
    text = "name: s\nkind: search\nbase: {preset: baseline}\nbudget: 2\nresources: {workers: 2}\n"
    text += "space: {learning_rate: {loguniform: [0.0001, 0.01]}}\n"
    with pytest.raises(SpecError, match="resources.workers: a search"):
        load_spec(_write(tmp_path, text))
