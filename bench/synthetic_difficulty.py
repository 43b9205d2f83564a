"""Do the synthetic scenes need context? A per-pixel classifier against the demo's U-Net.

An architecture ablation on synthetic data means something only if the scenes cannot be
solved pixel by pixel. This writes demo-sized synthetic Landslide4Sense data (the demo's
number of scenes, tile size and data seed), takes the demo's train / validation / test
split (the project's own `prepare_splits` with the demo spec's first row), and scores on
the same test tiles:

- a per-pixel classifier: scikit-learn's HistGradientBoostingClassifier on each pixel's
  Table VI "21" bands (the 14 raw bands, min-max RGB, NDVI, NDMI, NBR, gray: the raw bands
  plus spectral indices, nothing from the neighbourhood), trained on a random sample of
  training pixels;
- the demo's U-Net: `run_trial` with the demo spec's first row (the baseline).

Each one's threshold is chosen on the validation pixels (best F1 over a grid), and test
F1 is taken at that threshold. Goals (issue 16): pixel F1 <= 0.45 and U-Net F1 >= pixel
F1 + 0.15. Prints one JSON object on its last line.

    python bench/synthetic_difficulty.py               # demo sizes, a few minutes on 2 cores
    python bench/synthetic_difficulty.py --no-unet     # the pixel classifier alone
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "pixel_classifier_f1", "unet_f1", "best_threshold"]

ROOT = Path(__file__).resolve().parent.parent
# Thresholds tried on validation: a 0.01 grid is finer than the validation set's noise;
# below 0.01 a finer one, since a pixel classifier of rare landslides scores them low.
THRESHOLDS = tuple(np.round(np.r_[np.arange(0.001, 0.01, 0.001), np.arange(0.01, 1.0, 0.01)], 3))
PIXEL_FEATURES = "21"  # Table VI: 14 raw bands + min-max RGB + NDVI, NDMI, NBR, gray
PIXEL_GOAL = 0.45
GAP_GOAL = 0.15


def best_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The threshold of THRESHOLDS with the best F1 on (validation) pixels."""
    from rmaunet.metrics import sweep_thresholds

    table = sweep_thresholds(y_true, y_prob, THRESHOLDS)
    return float(table["f1"].idxmax())


def pixel_classifier_f1(config: Any, data: Path, sample: int, seed: int) -> dict[str, float]:
    """Gradient boosting on single pixels' bands and indices: threshold on val, F1 on test."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from rmaunet.data import prepare_splits
    from rmaunet.metrics import segmentation_scores

    splits = prepare_splits(dataclasses.replace(config, bands=PIXEL_FEATURES), data)
    bands = splits.x_train.shape[-1]
    x_train = splits.x_train.reshape(-1, bands)
    y_train = splits.y_train.reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(x_train), size=min(sample, len(x_train)), replace=False)
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_leaf_nodes=63, random_state=seed)
    # One OpenMP thread: on a shared machine, spinning threads made the fit ten times slower.
    with threadpool_limits(1):
        model.fit(x_train[chosen], y_train[chosen])

    def probabilities(x: np.ndarray) -> np.ndarray:
        with threadpool_limits(1):
            return model.predict_proba(x.reshape(-1, bands))[:, 1].reshape(x.shape[:3]).astype(np.float32)

    threshold = best_threshold(splits.y_val, probabilities(splits.x_val))
    test = segmentation_scores(splits.y_test, probabilities(splits.x_test), threshold)
    return {"f1": test["f1"], "threshold": threshold, "train_pixels": len(chosen), "iterations": int(model.n_iter_)}


def unet_f1(config: Any, data: Path, out: Path) -> dict[str, float]:
    """The demo's U-Net through the platform's own trial: threshold on val, F1 on test."""
    from rmaunet.metrics import segmentation_scores
    from rmaunet.training.trial import run_trial

    result = run_trial(config, data, out)
    if result.status != "ok":
        raise SystemExit(f"{out}: the U-Net trial failed: {result.reason}")
    from rmaunet.trial_folder import TrialFolder

    # The trial folder's uint8 probability maps, scored on the same grid as the pixel classifier.
    stored = {split: TrialFolder(out).load_probabilities(split) for split in ("val", "test")}
    threshold = best_threshold(*stored["val"])
    test = segmentation_scores(*stored["test"], threshold)
    # result.test: the trial's own test F1 under its config's threshold protocol, for reference.
    return {
        "f1": test["f1"],
        "threshold": threshold,
        "trial_test_f1": result.test["f1"],
        "best_epoch": result.best_epoch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "search_spaces" / "demo.yaml", help="the demo spec")
    parser.add_argument("--n", type=int, default=240, help="number of scenes (the demo's)")
    parser.add_argument("--size", type=int, default=64, help="tile side (the demo's)")
    parser.add_argument("--data-seed", type=int, default=0, help="generator seed (the demo's)")
    parser.add_argument("--pixels", type=int, default=400_000, help="training pixels sampled for the pixel classifier")
    parser.add_argument("--no-unet", action="store_true", help="score the pixel classifier only")
    parser.add_argument("--work", type=Path, help="keep data and trial here (default: a temporary folder)")
    args = parser.parse_args(argv)

    from rmaunet.data.synthetic import write_landslide4sense
    from rmaunet.studies.spec import load_spec

    spec = load_spec(args.spec)
    config = dataclasses.replace(spec.rows[0].config, seed=spec.seeds[0])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = work / "data"
        if not (data / "TrainData").is_dir():
            write_landslide4sense(data, args.n, seed=args.data_seed, size=args.size)
        generated = time.perf_counter()
        pixel = pixel_classifier_f1(config, data, args.pixels, seed=0)
        pixel_done = time.perf_counter()
        print(f"pixel classifier: test F1 {pixel['f1']:.3f} at threshold {pixel['threshold']:.2f}", file=sys.stderr)
        unet = None if args.no_unet else unet_f1(config, data, work / "trial")
        if unet is not None:
            print(f"U-Net: test F1 {unet['f1']:.3f} at threshold {unet['threshold']:.2f}", file=sys.stderr)
    finished = time.perf_counter()

    gap = None if unet is None else unet["f1"] - pixel["f1"]
    result = {
        "benchmark": "synthetic_difficulty",
        "scenes": args.n,
        "size": args.size,
        "pixel_f1": round(pixel["f1"], 4),
        "pixel_threshold": pixel["threshold"],
        "unet_f1": None if unet is None else round(unet["f1"], 4),
        "unet_threshold": None if unet is None else unet["threshold"],
        "unet_trial_test_f1": None if unet is None else round(unet["trial_test_f1"], 4),
        "gap": None if gap is None else round(gap, 4),
        "goals": {"pixel_f1_at_most": PIXEL_GOAL, "gap_at_least": GAP_GOAL},
        "pixel_goal_met": pixel["f1"] <= PIXEL_GOAL,
        "gap_goal_met": None if gap is None else gap >= GAP_GOAL,
        "generate_s": round(generated - started, 1),
        "pixel_s": round(pixel_done - generated, 1),
        "unet_s": None if unet is None else round(finished - pixel_done, 1),
        "total_s": round(finished - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
