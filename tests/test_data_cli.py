"""`rmaunet data synth|stats|check` from the command line."""

from __future__ import annotations

import json

import pytest

from rmaunet.cli import main

TABLE_II = {"landslide4sense": (14, 0.58, 0.023), "bijie": (3, 0.27, 0.039), "nepal": (3, 1.0, 0.008)}


@pytest.mark.parametrize("dataset", sorted(TABLE_II))
def test_synth_then_stats_json_gives_table_ii_columns(tmp_path, capsys, dataset):
    # synth writes the layout; stats --json reports Table II's columns with the defaults' values.
    out = tmp_path / dataset
    assert (
        main(["data", "synth", "--dataset", dataset, "--out", str(out), "--n", "60", "--seed", "2", "--size", "32"])
        == 0
    )
    assert f"wrote 60 {dataset} scenes" in capsys.readouterr().out
    assert main(["data", "stats", str(out), "--dataset", dataset, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {"images", "height", "width", "bands", "landslide_image_ratio", "landslide_pixel_ratio"} <= set(stats)
    bands, image_ratio, pixel_ratio = TABLE_II[dataset]
    assert (stats["images"], stats["height"], stats["width"], stats["bands"]) == (60, 32, 32, bands)
    assert stats["landslide_image_ratio"] == pytest.approx(image_ratio, abs=0.01)
    assert stats["landslide_pixel_ratio"] == pytest.approx(pixel_ratio, rel=0.3)
    assert stats["nan_pixels"] == 0


def test_stats_table_names_the_columns(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--n", "5", "--size", "16"])
    capsys.readouterr()
    assert main(["data", "stats", str(tmp_path), "--dataset", "landslide4sense"]) == 0
    table = capsys.readouterr().out
    for column in ("images", "image size", "landslide images", "landslide pixels", "NaN pixels", "16×16×14"):
        assert column in table


def test_synth_ratio_overrides(tmp_path, capsys):
    # --image-ratio and --pixel-ratio replace Table II's shares.
    main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--n",
            "10",
            "--size",
            "16",
            "--image-ratio",
            "1",
            "--pixel-ratio",
            "0.05",
        ]
    )
    capsys.readouterr()
    main(["data", "stats", str(tmp_path), "--dataset", "landslide4sense", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["landslide_image_ratio"] == 1.0
    assert stats["landslide_pixel_ratio"] == pytest.approx(0.05, rel=0.3)


def test_check_passes_a_clean_dataset(tmp_path, capsys):
    main(["data", "synth", "--dataset", "nepal", "--out", str(tmp_path), "--n", "6", "--size", "16"])
    assert main(["data", "check", str(tmp_path), "--dataset", "nepal"]) == 0
    assert "6 nepal images" in capsys.readouterr().out


def test_check_reports_every_problem_and_exits_2(tmp_path, capsys):
    # Three damaged files: all three are listed (not just the first), NaNs are a note, exit 2.
    import h5py
    import numpy as np

    main(["data", "synth", "--out", str(tmp_path), "--n", "8", "--size", "16"])
    img = tmp_path / "TrainData" / "img"
    (img / "image_2.h5").write_bytes(b"truncated")
    with h5py.File(img / "image_5.h5", "w") as f:
        f.create_dataset("img", data=np.zeros((16, 16, 12), np.float32))
    (tmp_path / "TrainData" / "mask" / "mask_7.h5").unlink()
    with h5py.File(img / "image_3.h5", "r+") as f:
        f["img"][0, 0, 0] = np.nan
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path), "--dataset", "landslide4sense"]) == 2
    captured = capsys.readouterr()
    problems = [line for line in captured.out.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3
    assert any("image_2.h5" in p and "cannot read HDF5" in p for p in problems)
    assert any("image_5.h5" in p and "14 bands" in p for p in problems)
    assert any("image_7.h5" in p and "missing mask" in p for p in problems)
    assert any(line.startswith("note:") and "image_3.h5" in line for line in captured.out.splitlines())
    assert "3 problem(s)" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_check_reads_the_opt_in_dem_too(tmp_path, capsys):
    # Training reads Bijie's RGB only, but check reads every file: a missing DEM is a problem.
    main(["data", "synth", "--dataset", "bijie", "--out", str(tmp_path), "--n", "6", "--size", "16"])
    dem = next((tmp_path / "landslide" / "dem").iterdir())
    dem.unlink()
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path), "--dataset", "bijie"]) == 2
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "missing DEM" in problems[0] and dem.name in problems[0]


def test_check_and_stats_refuse_a_missing_folder(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope"), "--dataset", "bijie"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "nope"), "--dataset", "bijie"]) == 2
