"""The cost of a study before it runs (rmaunet.studies.cost, `rmaunet study plan`'s table), without Ray.

Keras models are small and built once per session where a test needs one; the table's own
tests use footprints written by hand, so they need no model at all.
"""

from __future__ import annotations

from pathlib import Path

import keras
import pytest

from rmaunet.cli import main
from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.models.cost import activation_bytes, count_flops
from rmaunet.store import ResultsStore
from rmaunet.studies.capacity import Capacity, NodeType
from rmaunet.studies.cost import (
    GIB,
    GPUS,
    Calibration,
    ModelFootprint,
    TrainingCost,
    batch_shapes,
    calibrate,
    cluster_gpu,
    gpu_named,
    model_footprint,
    peak_memory_bytes,
    training_flops,
)
from rmaunet.studies.expand import expand
from rmaunet.studies.plan import StudyPlan, cost_report
from rmaunet.studies.spec import load_spec

# The model of the `study plan` test's spec on the shared 32×32 tiles (14 bands): built and calibrated once.
TINY = TrialConfig(base_filters=4, depth=2, batch_size=4, epochs=2, augment=())
SIZES = {"train": 40, "validation": 5, "test": 10}


def _conv_stack() -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, use_bias=False)(x))


# A 3×3 conv (2→4) then a 1×1 conv (4→3) on 8×8: 2 FLOPs per multiply-add; the training pass holds
# the input and both outputs, 4 bytes per float32 element.
def test_a_conv_stack_costs_its_hand_count():
    model = _conv_stack()
    assert count_flops(model) == 2 * (3 * 3 * 2 * 4 * 64 + 4 * 3 * 64)
    assert activation_bytes(model) == 4 * 64 * (2 + 4 + 3)


# TensorFlow registers no cost for Einsum (MultiHeadAttention's scores): counted from the equation,
# an ellipsis included.
def test_einsum_is_counted_from_its_equation():
    tokens = keras.Input((6, 5))
    scores = keras.layers.Lambda(lambda t: keras.ops.einsum("btc,bsc->bts", t, t))(tokens)
    projected = keras.layers.Lambda(lambda t: keras.ops.einsum("...c,cd->...d", t, keras.ops.ones((5, 7))))(tokens)
    assert count_flops(keras.Model(tokens, [scores, projected])) == 2 * 6 * 6 * 5 + 2 * 6 * 5 * 7


# Under mixed precision the activations after the input's cast are float16: the same stack holds less.
def test_mixed_precision_activations_are_half_width():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = _conv_stack()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    # float32 input, its float16 cast, two float16 conv outputs.
    assert activation_bytes(mixed) == 64 * (4 * 2 + 2 * 2 + 2 * 4 + 2 * 3)


# Memory grows with the batch by exactly one image's activations; mixed precision adds the half copies.
def test_memory_estimate_grows_with_batch_size():
    footprint = ModelFootprint(params=1000, trainable=900, flops=10**6, activation_bytes=5000, pixels=64)
    one, two = peak_memory_bytes(footprint, "float32", 1), peak_memory_bytes(footprint, "float32", 2)
    assert one == 4 * 1000 + 12 * 900 + 5000 and two - one == 5000
    assert peak_memory_bytes(footprint, "mixed_float16", 1) == one + 2 * 900


# Training FLOPs: 3 × forward per training image and epoch, 1 × per validation image and epoch,
# and every tile once for the final scoring.
def test_training_flops_convention():
    assert training_flops(10.0, SIZES, epochs=3) == 10.0 * (3 * 40 * 3 + 5 * 3 + 55)


# A GPU by name (any case), or one line naming the choices; a cluster's GPU type from Ray's accelerator_type.
def test_gpus_by_name_and_from_the_cluster():
    assert gpu_named("a100") is GPUS["A100"]
    with pytest.raises(ConfigError, match="unknown GPU .*T4, A10G, V100, A100, H100"):
        gpu_named("K80")
    assert cluster_gpu([{"CPU": 8}, {"GPU": 1, "accelerator_type:A100-40G": 1}]) is GPUS["A100"]
    assert cluster_gpu([{"CPU": 8, "GPU": 1}]) is None
    # A float32 trial runs on TF32 where the GPU has it, FP32 where not; mixed float16 on FP16 tensor cores.
    assert GPUS["A100"].peak_flops("float32") == 156e12 and GPUS["T4"].peak_flops("float32") == 8.1e12
    assert GPUS["T4"].peak_flops("mixed_float16") == 65e12


def _plan(tmp_path: Path, resources: str = "{cpu: 1, gpu: 1}") -> StudyPlan:
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"name: costly\nkind: table\nbase: {{preset: baseline, base_filters: 4, depth: 2, epochs: 2}}\n"
        f"resources: {resources}\nseeds: [0, 1]\nrows:\n"
        "  - {label: small}\n  - {label: wide, set: {base_filters: 8}}\n"
    )
    spec = load_spec(path)
    fp = {"landslide4sense": "fingerprint"}
    return StudyPlan(spec, expand(spec, fp), ResultsStore(tmp_path / "store"), {"landslide4sense": tmp_path}, fp)


def _costs(plan: StudyPlan, wide_activations: int) -> list[TrainingCost]:
    """Each training of the plan with a hand-written footprint: the 'wide' row's activations as given."""
    small = ModelFootprint(params=10**6, trainable=10**6, flops=10**9, activation_bytes=10**6, pixels=1024)
    wide = ModelFootprint(params=10**6, trainable=10**6, flops=10**9, activation_bytes=wide_activations, pixels=1024)
    return [
        TrainingCost(p.label, p.config, SIZES, 1, small if p.label == "small" else wide, None) for p in plan.to_train
    ]


# The table: one line per row and a total, FLOPs, memory at the batch, the GPUs' hours, the conventions.
def test_the_plan_prints_the_cost_table(tmp_path):
    plan = _plan(tmp_path)
    report = cost_report(plan, _costs(plan, 10**6), Capacity("test", live=(NodeType("n", {"CPU": 4, "GPU": 2}, 1),)))
    lines = report.splitlines()
    header = next(line for line in lines if "GFLOP/img" in line)
    assert all(name in header for name in GPUS) and "fits T4" in header
    # Each row: 2 seeds, 1 GFLOP per image, 2 × 1e9 × (3·40·2 + 5·2 + 55) FLOPs.
    small = next(line for line in lines if line.strip().startswith("small"))
    assert small.split()[1:3] == ["2", "1"] and " 610 GFLOP " in small and " 31 MiB @16 " in small and " yes " in small
    assert any(line.strip().startswith("total") and " 4 " in line for line in lines)
    assert "every trial fits T4's 16 GiB (GPU from default)" in report
    assert "GPU-hours at 40 % of each GPU's dense datasheet peak" in report
    # 2 GPUs, one per trial: 2 trainings at once; the 4 take 2 waves of one training each on the T4.
    one = _costs(plan, 10**6)[0].gpu_seconds(GPUS["T4"])
    assert f"wall time on the cluster (test): 2 of cpu=1,gpu=1 at once, {one:.1f} s each on T4 at 40 %" in report
    assert "FLOPs per training = forward FLOPs/img × (3 × train tiles × epochs" in report


# A row whose trial needs more than the judged GPU holds is flagged; the cluster's own GPU type is judged first.
def test_a_row_over_the_gpus_memory_is_flagged(tmp_path):
    plan = _plan(tmp_path)
    over_t4 = _costs(plan, 20 * GIB // 16)  # 20 GiB of activations at batch 16
    report = cost_report(plan, over_t4, Capacity("test", live=(NodeType("n", {"CPU": 4, "GPU": 1}, 1),)))
    wide = next(line for line in report.splitlines() if line.strip().startswith("wide"))
    assert " NO " in wide
    assert "! over T4's 16 GiB (less 1 GiB reserve; GPU from default): 'wide'" in report
    # The same trials on a cluster of A100s (40 GiB) fit; named with --gpu, the V100 (16 GiB) does not.
    a100 = Capacity("test", live=(NodeType("n", {"CPU": 4, "GPU": 1, "accelerator_type:A100": 1}, 1),))
    assert "every trial fits A100's 40 GiB (GPU from the cluster's accelerator_type)" in cost_report(
        plan, over_t4, a100
    )
    assert "! over V100's 16 GiB" in cost_report(plan, over_t4, a100, GPUS["V100"])


@pytest.fixture(scope="module")
def tiny_footprint() -> ModelFootprint:
    return model_footprint(TINY, 14, 32)


# Rows sharing an architecture share one built model: loss, seed and batch size do not change it.
def test_footprint_is_cached_per_architecture(tiny_footprint):
    assert model_footprint(TINY.replace(loss="focal_iou", seed=3, batch_size=8), 14, 32) is tiny_footprint
    # At least the encoder's first 3×3 conv (14→4 channels on 32×32), and its input and output held per image.
    assert tiny_footprint.flops > 2 * 9 * 14 * 4 * 32 * 32
    assert tiny_footprint.activation_bytes > 4 * 32 * 32 * (14 + 4)


# Calibration times what a training does with the tiny model (as `study plan` calls it: batch 4, 2 steps):
# positive rates, its traces, saves and sweeps; once per model and batch.
def test_calibration_times_what_a_training_does(tiny_footprint):
    measured = calibrate(TINY, 14, 32)
    assert measured.images == 2 * 4 and measured.flops_per_s > 0 and measured.forward_flops_per_s > 0
    assert measured.step_trace_s > 0 and measured.save_s > 0 and measured.sweep_s_per_pixel > 0
    assert measured.setup_s > 0 and measured.flop_count_s > 0 and measured.threads >= 1
    assert calibrate(TINY, 14, 32) is measured
    assert tiny_footprint.pixels == 32 * 32


def _calibration(**seconds: float) -> Calibration:
    """Every rate 1 FLOP/s and every fixed cost 0 s, but those given."""
    rates = {"flops_per_s": 1.0, "forward_flops_per_s": 1.0}
    costs = dict.fromkeys(("step_trace_s", "predict_trace_s", "save_s", "sweep_s_per_pixel", "setup_s"), 0.0)
    return Calibration(**{**rates, **costs, "flop_count_s": 0.0, **seconds, "threads": 1, "images": 8})


# A training on this CPU is what its loop does: steps at the step rate (3 × forward), validation every epoch and
# the final scoring at the predictor's rate, one trace per batch shape, a checkpoint and a sweep every epoch.
def test_cpu_time_counts_what_the_loop_does():
    footprint = ModelFootprint(params=10, trainable=10, flops=1, activation_bytes=10, pixels=100)
    config = TINY.replace(epochs=3, batch_size=4)  # 40 train tiles: 10 full batches; 5 validation: 4 and 1
    parts = TrainingCost("t", config, SIZES, 1, footprint, _calibration()).cpu_parts()
    assert parts is not None
    assert parts["training steps"] == 3 * 40 * 3 and parts["prediction"] == 5 * 3 + 55
    traced = _calibration(step_trace_s=10.0, predict_trace_s=1.0, save_s=2.0, sweep_s_per_pixel=0.001, setup_s=5.0)
    parts = TrainingCost("t", config, SIZES, 1, footprint, traced).cpu_parts()
    assert parts is not None
    # The step traced once (batches of 4 only), the predictor twice (4, then 1: it relaxes the batch after).
    assert parts["tracing"] == 10.0 + 2 * 1.0 and parts["checkpoints"] == 3 * 2.0
    # Validation swept every epoch, and at the end: twice more (the choice, the scores) and test once.
    assert parts["threshold sweeps"] == pytest.approx(0.001 * 100 * (5 * 5 + 10))
    assert parts["setup and FLOP count"] == 5.0
    # 42 train tiles leave a last batch of 2: a second shape the step is traced for.
    uneven = TrainingCost("t", config, {**SIZES, "train": 42}, 1, footprint, traced).cpu_parts()
    assert uneven is not None and uneven["tracing"] == 2 * 10.0 + 2 * 1.0
    assert batch_shapes(42, 4) == {4, 2} and batch_shapes(40, 4) == {4} and batch_shapes(3, 4) == {3}


# `rmaunet study plan` prints the table for the trainings to run, calibrated on this machine;
# --gpu picks the GPU judged; --no-cost leaves it out. A tiny spec on the shared 32×32 tiles.
def test_study_plan_prints_the_cost_and_the_calibration(l4s_small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"CPU": 2, "GPU": 0}')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\nkind: table\n"
        "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 4, augment: []}\n"
        "resources: {cpu: 1}\nseeds: [0]\nrows:\n  - {label: A}\n  - {label: B, set: {loss: focal_iou}}\n"
    )
    args = ["study", "plan", str(spec), "--data", str(l4s_small), "--storage", str(tmp_path / "store")]
    assert main([*args, "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "cost of the 2 trainings to run" in out and "this CPU" in out
    assert "every trial fits H100's 80 GiB (GPU from --gpu)" in out
    assert "this machine: " in out and "GFLOP/s effective" in out
    assert "wall time on the cluster (this machine): 2 of cpu=1,gpu=0 at once" in out
    assert main([*args, "--no-cost"]) == 0
    assert "cost of" not in capsys.readouterr().out
    assert main([*args, "--gpu", "K80"]) == 2
    assert "--gpu K80: unknown GPU" in capsys.readouterr().err


# A search is costed as its budget of trainings at the base config, one row, on its trials' request.
def test_a_search_is_its_budget_at_the_base_config(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(
        "name: s\nkind: search\nbase: {preset: baseline, base_filters: 4, depth: 2}\nresources: {cpu: 2}\n"
        "budget: 5\nspace:\n  learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
    )
    spec = load_spec(path)
    plan = StudyPlan(spec, [], ResultsStore(tmp_path / "store"), {"landslide4sense": tmp_path}, {})
    footprint = ModelFootprint(params=10, trainable=10, flops=10**9, activation_bytes=10, pixels=1024)
    costs = [TrainingCost("search trials", spec.base, SIZES, 1, footprint, None) for _ in range(spec.budget)]
    report = cost_report(plan, costs, Capacity("test", live=(NodeType("n", {"CPU": 4}, 1),)))
    assert any(line.split()[:3] == ["search", "trials", "5"] for line in report.splitlines())
    assert "wall time on the cluster (test): not estimated" in report  # CPU trials, nothing calibrated


# Trials start largest first, so the longest are not left to run last on an idle cluster.
def test_a_study_starts_its_costliest_trainings_first(l4s_small, tmp_path):
    from rmaunet.studies.grid import _longest_first
    from rmaunet.studies.plan import plan_study

    spec = tmp_path / "mixed.yaml"
    spec.write_text(
        "name: mixed\nkind: table\n"
        "base: {preset: baseline, base_filters: 4, depth: 2, epochs: 2, batch_size: 4, augment: []}\n"
        "resources: {cpu: 1}\nseeds: [0, 1]\nrows:\n  - {label: A}\n  - {label: B, set: {loss: iou}}\n"
        "  - {label: wide, set: {base_filters: 8}}\n"
    )
    plan = plan_study(load_spec(spec), l4s_small, tmp_path / "store")
    entries = {p.trial_id: {"label": p.label} for p in plan.to_train}
    order = [e["label"] for e in _longest_first(plan, entries, print).values()]
    assert order == ["wide", "wide", "A", "A", "B", "B"]  # the rest in plan order
    same = plan_study(load_spec(spec), l4s_small, tmp_path / "store")
    same.to_train = [p for p in same.to_train if p.label != "wide"]
    kept = {p.trial_id: {"label": p.label} for p in same.to_train}
    assert _longest_first(same, kept, print) is kept  # one architecture: nothing to cost
