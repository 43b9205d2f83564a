"""The one training loop without Ray: selection, the stored maps, resume guard, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmaunet.config import TrialConfig
from rmaunet.trial_folder import TrialFolder

TINY = dict(base_filters=4, depth=2, epochs=3, batch_size=8, augment=())


@pytest.mark.slow
def test_test_is_scored_with_the_selected_epochs_weights(l4s_small: Path, tmp_path: Path, monkeypatch) -> None:
    # Selection forced onto epoch 1 of 3: the stored maps and test metrics must come from
    # best.weights.h5 (epoch 1), not from the weights the loop ended with.
    from rmaunet.data import prepare_splits
    from rmaunet.models import build_model
    from rmaunet.training import loop as loop_module
    from rmaunet.training.evaluation import make_predictor
    from rmaunet.training.trial import run_trial

    real_validate = loop_module.TrialLoop.validate

    def first_epoch_best(self: Any) -> dict[str, Any]:
        checked = real_validate(self)
        return {**checked, "selection": 1.0 - 0.1 * len(self.state["history"])}  # epoch 1 scores highest

    monkeypatch.setattr(loop_module.TrialLoop, "validate", first_epoch_best)
    config = TrialConfig(**TINY, learning_rate=0.05)  # large steps: epoch 1 and 3 predict visibly apart
    result = run_trial(config, l4s_small, tmp_path)
    assert result.best_epoch == 1 and result.epochs_run == 3

    splits = prepare_splits(config, l4s_small)
    model = build_model(config, splits.num_bands, splits.x_train.shape[1])
    model.load_weights(TrialFolder(tmp_path).best_weights)
    expected = np.clip(np.rint(make_predictor(model)(splits.x_test, 8)["mask"] * 255.0), 0, 255)
    _, stored = TrialFolder(tmp_path).load_probabilities("test")
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.slow
def test_a_fixed_threshold_trial_keeps_its_best_epoch_there_and_its_maps_reproduce_its_metrics(
    l4s_small: Path, tmp_path: Path
) -> None:
    # threshold 0.5, select miou: every epoch is validated at 0.5 (not over the grid), the kept
    # epoch is the one with the best validation mIoU there, and `epochs` is how many ran. A
    # results row recomputes metrics from the stored maps: they equal what the trial reported.
    from rmaunet.thresholds import scores_at
    from rmaunet.training.trial import run_trial

    config = TrialConfig(**{**TINY, "epochs": 2}, threshold=0.5, select="miou", learning_rate=0.05)
    result = run_trial(config, l4s_small, tmp_path)
    assert result.epochs_run == 2 and result.threshold == 0.5 and result.threshold_protocol == "fixed"
    assert [h["val_threshold"] for h in result.history] == [0.5, 0.5]
    best = max(range(2), key=lambda i: (result.history[i]["val_miou"], -i)) + 1
    assert result.best_epoch == best
    assert result.val["miou"] == pytest.approx(result.history[best - 1]["val_miou"], abs=5e-3)  # maps stored as uint8
    scores = scores_at(TrialFolder(tmp_path), (0.5,))[0.5]
    assert scores["test_f1"] == pytest.approx(result.test["f1"])
    assert scores["val_miou"] == pytest.approx(result.val["miou"])


@pytest.mark.slow
def test_out_of_memory_ends_the_trial_as_failed_with_its_reason(l4s_small: Path, tmp_path: Path, monkeypatch) -> None:
    import tensorflow as tf

    from rmaunet.training import loop as loop_module
    from rmaunet.training.trial import run_trial

    real = loop_module.train_epoch
    calls = []

    def oom_in_epoch_2(step: Any, dataset: Any) -> tuple[float, int, int]:
        calls.append(1)
        if len(calls) == 2:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape [8,4,32,32]")
        return real(step, dataset)

    monkeypatch.setattr(loop_module, "train_epoch", oom_in_epoch_2)
    result = run_trial(TrialConfig(**TINY), l4s_small, tmp_path)
    assert result.status == "failed" and result.reason.startswith("out of memory: OOM when allocating")
    assert result.epochs_run == 1
    saved = json.loads(TrialFolder(tmp_path).result.read_text())
    assert saved["status"] == "failed" and saved["reason"] == result.reason


def test_a_checkpoint_of_another_config_is_never_resumed(tmp_path: Path) -> None:
    # The config-hash guard: a folder reused by a different config starts from scratch.
    import keras

    from rmaunet.training.checkpoint import EpochCheckpoint

    def tiny() -> tuple[Any, Any]:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        return model, optimizer

    a, b = TrialConfig(seed=1), TrialConfig(seed=2)
    model, optimizer = tiny()
    EpochCheckpoint(tmp_path, a).save(
        model, optimizer, {"epoch": 4, "history": [{}] * 4, "best_score": 0.7, "best_epoch": 3}
    )
    assert EpochCheckpoint(tmp_path, b).restore(*tiny())["epoch"] == 0
    state = EpochCheckpoint(tmp_path, a).restore(*tiny())
    assert state["epoch"] == 4 and state["best_epoch"] == 3 and state["best_score"] == 0.7


def test_workers_that_drift_apart_are_reported_by_epoch() -> None:
    from rmaunet.training.distributed import drifted_epochs

    sync = [
        {"epoch": 1, "weights_sha256": ["a", "a"]},
        {"epoch": 2, "weights_sha256": ["b", "c"]},
        {"epoch": 3, "weights_sha256": ["d", "d"]},
    ]
    assert drifted_epochs(sync) == [2]


@pytest.mark.parametrize(
    ("error", "prefix"),
    [
        ("ResourceExhaustedError: OOM when allocating tensor", "out of memory: rank 1: ResourceExhaustedError"),
        ("ValueError: bad shape", "data-parallel training failed: rank 1: ValueError: bad shape"),
    ],
)
def test_a_worker_failure_is_named_by_rank_and_cause(error: str, prefix: str) -> None:
    from rmaunet.training.distributed import describe_failure

    class GroupError(Exception):
        worker_failures = {1: RuntimeError(f"Traceback (most recent call last):\n  ...\n{error}")}

    assert describe_failure(GroupError("workers failed")).startswith(prefix)


def test_workers_the_cluster_took_away_are_the_clusters_error_and_named_by_their_cause() -> None:
    # A run whose placement group was removed before its first checkpoint (a node lost early)
    # ended in Ray Train's ControllerError, which Ray Train does not retry; its first line alone
    # said nothing ("Training failed due to controller error:"). It is now a ConnectionError,
    # the infrastructure's, which crash_budget passes to Tune uncounted; a controller error of
    # another kind stays the trial's failure.
    from ray import exceptions
    from ray.train import ControllerError

    from rmaunet.training.distributed import WorkersLostError, describe_failure, workers_lost
    from rmaunet.training.trial import _INFRASTRUCTURE

    removed = ControllerError(exceptions.ActorUnschedulableError("the placement group was removed"))
    assert workers_lost(removed) and workers_lost(ControllerError(exceptions.ActorPlacementGroupRemoved()))
    assert describe_failure(removed) == (
        "data-parallel training failed: Training failed due to controller error: "
        "The actor is not schedulable: the placement group was removed"
    )
    assert issubclass(WorkersLostError, _INFRASTRUCTURE)
    assert not workers_lost(ControllerError(ValueError("callback raised")))
    assert not workers_lost(exceptions.ActorUnschedulableError("not wrapped by Ray Train"))


_OOM_SCRIPT = """
import os, resource, sys
from pathlib import Path
import tensorflow as tf  # its own start-up needs address space: import before the limit
from rmaunet.config import TrialConfig
from rmaunet.training.trial import run_trial
with open("/proc/self/status") as f:
    in_use = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (in_use + 1500 * 2**20, resource.RLIM_INFINITY))
config = TrialConfig(base_filters=64, depth=2, epochs=1, batch_size=32, augment=())
result = run_trial(config, Path(sys.argv[1]), Path(sys.argv[2]))
print("STATUS", result.status, result.reason)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to size the memory limit")
@pytest.mark.slow
def test_a_trial_under_a_real_memory_limit_is_recorded_as_out_of_memory(tmp_path: Path) -> None:
    # No mock: the process gets 1.5 GB of address space for a model whose activations need more.
    import subprocess
    import sys

    from rmaunet.data.synthetic import write_landslide4sense

    data = tmp_path / "data"
    write_landslide4sense(data, n=40, seed=1, size=64)
    done = subprocess.run(
        [sys.executable, "-c", _OOM_SCRIPT, str(data), str(tmp_path / "trial")],
        capture_output=True,
        text=True,
        timeout=600,
        # oneDNN's kernels, which TensorFlow turns on by default only on CPUs with AVX512-VNNI /
        # BF16 / AMX: without them (an AVX2-only AMD EPYC here) the failed allocation is a
        # std::bad_alloc in Eigen's code that std::terminate()s the process, and no Python code
        # can record it (Tune sees the process die). With them it reaches Python as MemoryError.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"},
    )
    assert "STATUS failed out of memory" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    saved = json.loads((tmp_path / "trial" / "result.json").read_text())
    assert saved["status"] == "failed" and saved["reason"].startswith("out of memory")


@pytest.mark.slow
def test_a_trial_killed_during_its_final_scoring_only_scores_on_rerun(l4s_small: Path, tmp_path: Path, monkeypatch):
    # The last epoch's checkpoint is saved before the final scoring: a rerun after a kill
    # there trains nothing more and writes the result (it once returned no result at all).
    from rmaunet.training import loop as loop_module
    from rmaunet.training.trial import run_trial

    real = loop_module.TrialLoop.score_best_epoch
    calls = []

    def killed_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("killed while scoring")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(loop_module.TrialLoop, "score_best_epoch", killed_once)
    config = TrialConfig(**{**TINY, "epochs": 2})
    with pytest.raises(RuntimeError, match="killed while scoring"):
        run_trial(config, l4s_small, tmp_path)
    assert not TrialFolder(tmp_path).result.exists()
    result = run_trial(config, l4s_small, tmp_path)
    assert result.status == "ok" and result.resumed_from == 2 and [h["epoch"] for h in result.history] == [1, 2]
    assert json.loads(TrialFolder(tmp_path).result.read_text())["status"] == "ok"


@pytest.mark.slow
def test_saving_reuses_kerass_attribute_skipsets_and_writes_the_same_weights(tmp_path: Path) -> None:
    # Keras 3.15 caches these sets under another key than it reads: without the workaround
    # every save_weights rebuilds them (a throw-away Layer per layer walked).
    import h5py
    import keras
    from keras.src.saving import saving_lib

    from rmaunet.models import build_model
    from rmaunet.training.loop import _cache_saving_skipsets

    keras.utils.clear_session()
    model = build_model(TrialConfig(**TINY), 14, 32)
    model.save_weights(tmp_path / "plain.weights.h5")
    _cache_saving_skipsets()
    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    model.save_weights(tmp_path / "cached.weights.h5")

    def contents(path: Path) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with h5py.File(path) as f:
            f.visititems(lambda key, o: found.setdefault(key, o[()].tobytes() if isinstance(o, h5py.Dataset) else b""))
        return found

    plain = contents(tmp_path / "plain.weights.h5")
    assert plain and plain == contents(tmp_path / "cached.weights.h5")
