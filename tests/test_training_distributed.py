"""Data-parallel trials: batch slicing, weight digests, precision switches, and on real
Ray Train CPU workers that N workers stay bit-identical and train what one worker trains."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from local_ray import start_local_ray

from rmaunet.config import TrialConfig
from rmaunet.errors import ConfigError
from rmaunet.training.loop import epoch_order, rank_slice, weights_digest

TINY = dict(base_filters=4, depth=2, epochs=2, batch_size=8, augment=(), seed=5)


# ----------------------------------------------------------------------------- pure helpers
def test_epoch_order_is_a_seeded_permutation_without_the_remainder() -> None:
    # 21 rows, batch 4: 5 full batches, one row dropped; same (seed, epoch) -> same order.
    order = epoch_order(21, 4, seed=1, epoch=3)
    assert order.shape == (5, 4)
    assert len(set(order.ravel().tolist())) == 20
    assert np.array_equal(order, epoch_order(21, 4, seed=1, epoch=3))
    assert not np.array_equal(order, epoch_order(21, 4, seed=1, epoch=4))
    assert not np.array_equal(order, epoch_order(21, 4, seed=2, epoch=3))


def test_rank_slices_partition_every_global_batch() -> None:
    # The union of the replicas' batches must be exactly the global batch one worker sees.
    order = epoch_order(40, 8, seed=0, epoch=1)
    parts = [rank_slice(order, r, 4) for r in range(4)]
    assert all(p.shape == (5, 2) for p in parts)
    assert np.array_equal(np.concatenate(parts, axis=1), order)


def test_rank_slice_refuses_a_batch_that_does_not_split() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        rank_slice(epoch_order(30, 6, seed=0, epoch=1), 0, 4)
    with pytest.raises(ConfigError, match="larger than"):
        epoch_order(3, 8, seed=0, epoch=1)


def test_weights_digest_sees_one_flipped_bit_and_a_dtype_change() -> None:
    a = [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(5, np.float32)]
    flipped = [a[0].copy(), a[1].copy()]
    flipped[1].view(np.uint32)[2] ^= 1
    assert weights_digest(a) == weights_digest([x.copy() for x in a])
    assert weights_digest(a) != weights_digest(flipped)
    assert weights_digest(a) != weights_digest([a[0].astype(np.float64), a[1]])


def test_the_backend_config_gives_each_worker_the_group_and_its_index_without_importing_tensorflow() -> None:
    # Ray Train's controller unpickles the backend config: its module must not pull TensorFlow in.
    # Nor does a data-parallel trial's own process, which quiets its loggers without it (grid.py).
    import subprocess
    import sys

    from rmaunet.training.tf_backend import tf_config

    assert tf_config(["10.0.0.1:5000", "10.0.0.2:5001"], 1) == {
        "cluster": {"worker": ["10.0.0.1:5000", "10.0.0.2:5001"]},
        "task": {"type": "worker", "index": 1},
    }
    probe = "import logging, pickle, sys; from rmaunet.training.tf_backend import MultiWorkerTFConfig as C; "
    probe += "from rmaunet.training.quiet import quiet_worker; pickle.loads(pickle.dumps(C())); "
    probe += "quiet_worker(tensorflow=False); "
    probe += "print('tensorflow' in sys.modules, logging.getLogger('ray.train').level == logging.WARNING)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False True", out.stderr[-2000:]


def test_run_data_parallel_refuses_an_indivisible_batch_before_starting_ray(tmp_path: Path) -> None:
    from rmaunet.training.distributed import run_data_parallel

    with pytest.raises(ConfigError, match="divisible by num_workers = 3"):
        run_data_parallel(TrialConfig(**TINY), tmp_path, tmp_path / "out", num_workers=3)


@pytest.mark.slow
def test_a_save_killed_between_the_weights_and_the_state_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kill after the new weights and before the new state leaves epoch 2's weights beside
    # epoch 1's optimizer and state: resumed, that pair replays epoch 2 on weights that already
    # trained it. The trial must start over instead, from its initial weights, left untouched.
    import keras

    from rmaunet.training.checkpoint import EpochCheckpoint

    def tiny(seed: int) -> tuple[Any, Any]:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        return model, optimizer

    config = TrialConfig(**TINY)
    model, optimizer = tiny(1)
    EpochCheckpoint(tmp_path, config).save(model, optimizer, {"epoch": 1, "history": [{}], "best_score": 0.5})
    epoch1 = model.get_weights()
    resumed, _ = tiny(2)
    assert EpochCheckpoint(tmp_path, config).restore(resumed, tiny(2)[1])["epoch"] == 1  # a whole save resumes
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), epoch1))

    model.set_weights([w + 1 for w in epoch1])  # epoch 2 trained; its save dies after the weights

    def killed(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(RuntimeError, match="killed"):
        EpochCheckpoint(tmp_path, config).save(model, optimizer, {"epoch": 2, "history": [{}, {}], "best_score": 0.6})
    monkeypatch.undo()
    restarted, restarted_optimizer = tiny(2)
    initial = restarted.get_weights()
    assert EpochCheckpoint(tmp_path, config).restore(restarted, restarted_optimizer)["epoch"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(restarted.get_weights(), initial))


# ----------------------------------------------------------------------------- precision
@pytest.fixture
def restore_policy() -> Iterator[None]:
    import keras

    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_policy_is_applied_and_the_mask_stays_float32(precision: str, restore_policy: None) -> None:
    import keras

    from rmaunet.models import build_model
    from rmaunet.training import precision as prec

    config = TrialConfig(base_filters=4, depth=2, precision=precision, xla=True)
    assert prec.configure(config) is True
    assert keras.mixed_precision.global_policy().name == precision
    model = build_model(config, 14, 32)
    compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[precision]
    conv = next(layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == compute and conv.variable_dtype == "float32"
    out = model(np.zeros((2, 32, 32, 14), np.float32), training=False)
    assert keras.backend.standardize_dtype(out["mask"].dtype) == "float32"


def test_float32_resets_a_policy_left_by_an_earlier_trial(restore_policy: None) -> None:
    import keras

    from rmaunet.training import precision as prec

    prec.configure(TrialConfig(precision="mixed_bfloat16"))
    assert prec.configure(TrialConfig(precision="float32")) is False
    assert keras.mixed_precision.global_policy().name == "float32"


def test_only_float16_gets_loss_scaling(restore_policy: None) -> None:
    import keras

    from rmaunet.training import precision as prec

    for name, scaled in [("mixed_float16", True), ("mixed_bfloat16", False), ("float32", False)]:
        opt = prec.wrap_optimizer(keras.optimizers.Adam(1e-3), TrialConfig(precision=name))
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer) is scaled


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.slow
def test_a_mixed_precision_train_step_runs_on_cpu_and_moves_the_weights(precision: str, restore_policy: None) -> None:
    import keras
    import tensorflow as tf

    from rmaunet import losses
    from rmaunet.models import build_model
    from rmaunet.training import precision as prec

    config = TrialConfig(base_filters=4, depth=2, precision=precision)
    prec.configure(config)
    keras.utils.set_random_seed(0)
    model = build_model(config, 14, 32)
    optimizer = prec.wrap_optimizer(keras.optimizers.Adam(1e-2), config)
    loss_fn = losses.get("cross_entropy")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 32, 32, 14)).astype(np.float32))
    y = tf.constant((rng.random((4, 32, 32, 1)) < 0.2).astype(np.float32))
    before = [np.array(v) for v in model.trainable_variables]

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.cast(loss_fn(y, model(x, training=True)["mask"]), tf.float32)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses_seen = [float(step()) for _ in range(3)]
    assert all(np.isfinite(losses_seen))
    moved = [np.abs(np.array(v) - b).max() for v, b in zip(model.trainable_variables, before)]
    # float16's dynamic loss scale may skip the first steps on overflow, but not all three.
    assert max(moved) > 0


# ----------------------------------------------------------------------------- Ray Train
def _weights(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _checkpoint_weights(out: Path, epoch: int) -> dict[str, np.ndarray]:
    """The weights after `epoch` from the run's Ray Train checkpoint (rank 0's, as saved)."""
    storage = out / "ray_train" / f"dp_{TrialConfig(**TINY).training_hash}"
    return _weights(storage / f"epoch_{epoch:04d}" / "last.weights.h5")


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return float(np.sqrt(sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a)))


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One small local Ray for the module's trials (2 CPUs, no dashboard UI), shut down after."""
    import ray

    base = tmp_path_factory.mktemp("ray")
    start_local_ray(_temp_dir=str(base))
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_training_workers_run_at_normal_priority(ray_session: None) -> None:
    # Ray starts worker processes at niceness 15; the job-wide runtime env connect_ray sets
    # (this runtime's too, tests/local_ray.py) brings every process of the job to 0, and the
    # Train workers' own environment does so even where a job asks for Ray's 15.
    import ray

    from rmaunet.training.distributed import worker_env

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == 0
    rays_default = {"env_vars": {"RAY_worker_niceness": "15"}}
    assert ray.get(niceness.options(runtime_env=rays_default).remote()) == 15  # the setting is honoured
    trainer_env = {"env_vars": {"RAY_worker_niceness": "15", **worker_env(use_gpu=False, cpus_per_worker=1)}}
    assert ray.get(niceness.options(runtime_env=trainer_env).remote()) == 0


@pytest.fixture(scope="module")
def dp_runs(ray_session: None, l4s_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """The same tiny trial on 2 workers and on 1 worker."""
    from rmaunet.training.distributed import run_data_parallel

    base = tmp_path_factory.mktemp("dp")
    runs: dict[int, dict[str, Any]] = {}
    for workers in (2, 1):
        rows: list[dict[str, Any]] = []
        controllers: dict[int, bool] = {}

        def report(row: dict[str, Any], rows: list = rows, controllers: dict = controllers) -> None:
            rows.append(row)
            if not controllers:  # while the run's controller is alive: at its first epoch
                controllers.update(_train_controllers())

        out = base / f"w{workers}"
        result = run_data_parallel(TrialConfig(**TINY), l4s_small, out, num_workers=workers, report=report)
        runs[workers] = {"result": result, "rows": rows, "out": out, "controllers": controllers}
    return runs


def _train_controllers() -> dict[int, bool]:
    """Ray Train's controller processes under this test process (its local Ray's workers),
    each with whether it has TensorFlow's libraries loaded."""
    import psutil

    found: dict[int, bool] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::TrainController"):
                found[proc.pid] = any("tensorflow" in m.path for m in proc.memory_maps(grouped=True))
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_ray_trains_controller_runs_without_tensorflow(dp_runs: dict[int, dict[str, Any]]) -> None:
    # The controller only starts and watches the workers: with Ray's TensorflowConfig it
    # imported TensorFlow (ray.train.tensorflow's __init__), some 17 s of CPU and 600 MB per
    # data-parallel trial; rmaunet's backend config (rmaunet.training.tf_backend) needs none.
    controllers = dp_runs[2]["controllers"]
    assert controllers, "no Ray Train controller found while the run reported"
    assert not any(controllers.values()), controllers


@pytest.mark.slow
def test_two_workers_hold_bit_identical_weights_after_every_epoch(dp_runs: dict[int, dict[str, Any]]) -> None:
    run = dp_runs[2]
    assert run["result"].status == "ok", run["result"].reason
    sync = json.loads((run["out"] / "sync.json").read_text())
    assert [s["epoch"] for s in sync] == [1, 2]
    for s in sync:
        assert len(s["weights_sha256"]) == 2 and len(set(s["weights_sha256"])) == 1
        # The ranks trained on different images: equal weights come from the all-reduce.
        assert len(set(s["data_sha256"])) == 2
    assert sync[0]["weights_sha256"][0] != sync[1]["weights_sha256"][0]


def _diagnosis(dp_runs: dict[int, dict[str, Any]], gaps: list[float]) -> str:
    """Everything a failed equivalence check needs to be explained after the fact: per
    run its status, every worker-group failure Ray restarted it after (a restart before
    the first checkpoint leaves resumed_from at 0), its losses and wall time; the gap
    after each epoch; whether the ranks agreed; the load the runs met."""
    lines = [f"gap after each epoch, in epoch steps: {[f'{g:.3g}' for g in gaps]}; load {os.getloadavg()}"]
    for workers, run in sorted(dp_runs.items()):
        saved = json.loads((run["out"] / "result.json").read_text())
        sync = json.loads((run["out"] / "sync.json").read_text()) if (run["out"] / "sync.json").exists() else []
        lines.append(
            f"{workers} worker(s): {saved['status']} {saved.get('reason', '')!r}, "
            f"worker failures {saved.get('worker_failures')}, resumed_from {saved.get('resumed_from')}, "
            f"losses {[r['loss'] for r in run['rows']]}, wall {saved.get('wall_s', 0):.0f} s, "
            f"ranks agree after epochs {[s['epoch'] for s in sync if len(set(s['weights_sha256'])) == 1]}"
        )
    return "\n".join(lines)


@pytest.mark.slow
def test_two_workers_with_global_batch_b_train_what_one_worker_with_b_trains(
    dp_runs: dict[int, dict[str, Any]],
) -> None:
    # Same seed, data order and global batch; BatchNorm synchronised across replicas, so
    # the two runs differ only in float summation order. Scale for "small": how far one
    # epoch of training moves the weights.
    one, two = dp_runs[1], dp_runs[2]
    assert one["result"].status == "ok", one["result"].reason
    assert two["result"].status == "ok", two["result"].reason
    step = _distance(_checkpoint_weights(one["out"], 2), _checkpoint_weights(one["out"], 1))
    assert step > 0
    gaps = [
        _distance(_checkpoint_weights(one["out"], epoch), _checkpoint_weights(two["out"], epoch)) / step
        for epoch in (1, 2)
    ]
    # Measured 3.0e-6 of a step at load averages of 6 to 8 on 2 cores (bench/dp_determinism.py), bit for bit
    # the same after a restart from epoch 1's checkpoint (the placement group removed mid-epoch 2; rank 0
    # raising after epoch 1 is the restart test below). A failure prints the diagnosis: restarts, losses, load.
    assert gaps[-1] < 1e-3, _diagnosis(dp_runs, gaps)
    loss1 = [r["loss"] for r in one["rows"]]
    loss2 = [r["loss"] for r in two["rows"]]
    np.testing.assert_allclose(loss2, loss1, rtol=1e-4, err_msg=_diagnosis(dp_runs, gaps))


@pytest.mark.slow
def test_data_parallel_trial_reports_every_epoch_and_writes_the_trial_files(
    dp_runs: dict[int, dict[str, Any]],
) -> None:
    run = dp_runs[2]
    result = run["result"]
    assert [r["epoch"] for r in run["rows"]] == [1, 2]
    assert all("val_f1" in r and r["images_per_s"] > 0 for r in run["rows"])
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    assert set(result.test) >= {"f1", "iou", "precision", "recall"}
    for name in ("best.weights.h5", "val_probs.npz", "test_probs.npz", "result.json", "history.json"):
        assert (run["out"] / name).is_file(), name
    probs = np.load(run["out"] / "test_probs.npz")
    assert probs["prob_u8"].dtype == np.uint8 and probs["prob_u8"].shape == probs["mask"].shape
    saved = json.loads((run["out"] / "result.json").read_text())
    assert saved["status"] == "ok" and saved["wall_s"] == pytest.approx(result.wall_s)


@pytest.mark.slow
def test_a_worker_failure_restarts_the_group_from_the_last_epoch_and_trains_the_same_weights(
    dp_runs: dict[int, dict[str, Any]], l4s_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 0 raises once after epoch 1's checkpoint; the group restarts, restores it on
    # every rank and goes on with epoch 2 (not 1), ending with one set of results, the
    # failure on record, and weights and optimizer state bit for bit the uninterrupted run's.
    from rmaunet.training.distributed import run_data_parallel

    monkeypatch.setenv("RMAUNET_FAIL_AFTER_EPOCH", "1")  # run_data_parallel passes it to the workers
    rows: list[dict[str, Any]] = []
    result = run_data_parallel(
        TrialConfig(**TINY),
        l4s_small,
        tmp_path / "out",
        num_workers=2,
        report=rows.append,
        max_failures=2,  # 2: a spurious restart by Ray itself must not use up the budget
    )
    assert (tmp_path / "out" / ".failure-injected").exists()  # the failure did happen
    assert result.status == "ok", result.reason
    assert result.resumed_from >= 1  # 1, or later if Ray restarted the group once more itself
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [h["epoch"] for h in result.history] == [1, 2]
    failures = json.loads((tmp_path / "out" / "result.json").read_text())["worker_failures"]
    injected = [f for f in failures if "injected failure after epoch 1" in f["ranks"].get("0", "")]
    assert [f["after_epoch"] for f in injected] == [1], failures
    sync = json.loads((tmp_path / "out" / "sync.json").read_text())
    assert all(len(set(s["weights_sha256"])) == 1 for s in sync)
    uninterrupted = json.loads((dp_runs[2]["out"] / "sync.json").read_text())
    assert sync[-1]["weights_sha256"] == uninterrupted[-1]["weights_sha256"]


@pytest.mark.slow
def test_float16_loss_scaling_keeps_two_workers_in_sync(ray_session: None, l4s_small: Path, tmp_path: Path) -> None:
    # The dynamic loss scale decides per step whether to apply or skip: every rank must
    # decide alike (on the all-reduced gradients), or the weights part ways.
    from rmaunet.training.distributed import run_data_parallel

    config = TrialConfig(**{**TINY, "epochs": 1, "precision": "mixed_float16"})
    result = run_data_parallel(config, l4s_small, tmp_path / "out", num_workers=2)
    assert result.status == "ok", result.reason
    sync = json.loads((tmp_path / "out" / "sync.json").read_text())
    assert len(sync) == 1 and len(set(sync[0]["weights_sha256"])) == 1
    assert np.isfinite(result.history[0]["loss"])


@pytest.mark.slow
def test_a_report_that_raises_stops_the_workers(ray_session: None, l4s_small: Path, tmp_path: Path) -> None:
    # A scheduler stopping the trial raises out of `report`: the run must end, not train
    # its remaining epochs in the background.
    from rmaunet.training.distributed import run_data_parallel

    class Stop(Exception):
        pass

    def report(row: dict[str, Any]) -> None:
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_data_parallel(
            TrialConfig(**{**TINY, "epochs": 40}), l4s_small, tmp_path / "out", num_workers=2, report=report
        )
    storage = tmp_path / "out" / "ray_train" / f"dp_{TrialConfig(**{**TINY, 'epochs': 40}).training_hash}"
    epochs = [int(p.name.split("_")[1]) for p in storage.glob("epoch_*")]
    assert epochs and max(epochs) < 40
