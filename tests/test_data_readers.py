"""Readers: the three published layouts, third-party files, and one-line errors naming the file."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from rmaunet.cli import main
from rmaunet.config import DATASETS
from rmaunet.data import READERS, Bijie, Landslide4Sense, Nepal, open_reader
from rmaunet.datasets import DATASET_INFO
from rmaunet.errors import DataError

DATA = Path(__file__).parent / "data"


def write_fixture(dataset: str, root: Path, **kwargs) -> Path:
    """Run tests/data/<dataset>/data.py's seeded generator into root."""
    spec = importlib.util.spec_from_file_location(f"fixture_{dataset}", DATA / dataset / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write(root, **kwargs)


# ---------------------------------------------------------------------- Landslide4Sense
def test_l4s_reads_float64_tiles_in_numeric_order(tmp_path):
    # image_2 comes before image_10; float64 files arrive as float32; masks are uint8 {0, 1}.
    root = write_fixture("landslide4sense", tmp_path)
    loaded = Landslide4Sense(root).load()
    assert loaded.images.dtype == np.float32 and loaded.images.shape == (3, 16, 16, 14)
    assert loaded.images[:, 0, 0, 0].tolist() == [1, 2, 10]
    assert [p.name for p in loaded.paths] == ["image_1.h5", "image_2.h5", "image_10.h5"]
    assert loaded.masks.dtype == np.uint8 and set(np.unique(loaded.masks)) == {0, 1}
    assert loaded.masks.reshape(3, -1).any(axis=1).tolist() == [True, False, True]


def test_l4s_non_finite_pixels_are_replaced_and_counted(tmp_path):
    # One NaN and one +inf in image_2: both replaced, counted and attributed to the file.
    root = write_fixture("landslide4sense", tmp_path)
    loaded = Landslide4Sense(root).load()
    assert np.isfinite(loaded.images).all()
    assert loaded.nan_pixels == 2 and [p.name for p in loaded.nan_files] == ["image_2.h5"]
    assert loaded.images[1, 0, 0, 3] == 0.0


def test_l4s_huggingface_layout_reads_the_same_tiles(tmp_path):
    # images/{train,validation}/ and annotations/train/ give the same arrays as the official layout.
    official = Landslide4Sense(write_fixture("landslide4sense", tmp_path / "a")).load()
    mirror = Landslide4Sense(write_fixture("landslide4sense", tmp_path / "b", huggingface=True)).load()
    np.testing.assert_array_equal(official.images, mirror.images)
    np.testing.assert_array_equal(official.masks, mirror.masks)
    assert Landslide4Sense.available_splits(tmp_path / "b") == ("train", "validation")


def test_l4s_validation_and_test_folders_need_no_masks(tmp_path):
    # ValidData holds images only: it loads, without masks; TrainData without masks does not.
    root = write_fixture("landslide4sense", tmp_path)
    assert Landslide4Sense(root, "validation").load().masks is None
    with pytest.raises(DataError, match="missing mask"):
        Landslide4Sense(
            write_fixture("landslide4sense", tmp_path / "hf", huggingface=True), "validation", require_masks=True
        )


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_l4s_reads_the_torchgeo_fixture(split, shared_fixtures):
    # Files written by another project's tool (TorchGeo's generator) load through the same reader.
    loaded = Landslide4Sense(shared_fixtures / "landslide4sense-torchgeo", split).load()
    n = 2 if split == "train" else 1
    assert loaded.images.shape == (n, 32, 32, 14) and loaded.images.dtype == np.float32
    if split == "train":
        assert loaded.masks.shape == (2, 32, 32) and set(np.unique(loaded.masks)) <= {0, 1}
    else:
        assert loaded.masks is None


# ---------------------------------------------------------------------- declarations
def test_every_declared_dataset_has_one_reader_whose_splits_its_policy_names():
    # config.DATASETS, READERS and the declarations list the same datasets; each policy's
    # development and test splits are splits its reader knows.
    assert DATASETS == tuple(READERS) == tuple(DATASET_INFO)
    for name, reader in READERS.items():
        policy = reader.info.split
        assert reader.info is DATASET_INFO[name]
        assert set(policy.development) | {policy.test_split} - {None} <= set(reader.splits)


def test_config_reads_the_declarations_without_the_data_layer():
    # The config (and the study engine validating specs with it) stays light: no readers, NumPy or TensorFlow.
    code = (
        "import sys, rmaunet.config; "
        "print(sorted(m for m in ('rmaunet.data', 'numpy', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------------- Bijie
def test_bijie_reads_rgb_with_binarised_masks(tmp_path):
    # RGB only by default, as in the paper; 0/255 masks binarised at 127; non-landslide tiles get empty masks.
    root = write_fixture("bijie", tmp_path)
    r = Bijie(root)
    loaded = r.load()
    assert r.band_names == ("red", "green", "blue")
    assert loaded.images.shape == (8, 16, 16, 3)
    has = loaded.masks.reshape(8, -1).any(axis=1)
    assert has.sum() == 3
    assert [s.landslide for s in r.samples] == has.tolist()
    assert set(np.unique(loaded.masks)) == {0, 1}
    assert loaded.masks[has][:, 0, :3].max() == 0  # the 100-valued pixels are background


def test_bijie_dem_is_an_opt_in_fourth_channel(tmp_path):
    # Naming "dem" among the bands adds the DEM after RGB; the RGB channels are the same.
    root = write_fixture("bijie", tmp_path)
    with_dem = Bijie(root, bands=("gray", "dem"))
    assert with_dem.band_names == ("red", "green", "blue", "dem")
    images = with_dem.load().images
    assert images.shape == (8, 16, 16, 4)
    assert images[..., 3].max() > 255  # the 16-bit DEM is kept in metres
    np.testing.assert_array_equal(images[..., :3], Bijie(root).load().images)


def test_bijie_rgb_needs_no_dem_files(tmp_path):
    # Without its DEM folders the RGB dataset still loads; opting into the DEM names the missing file.
    root = write_fixture("bijie", tmp_path)
    for group in ("landslide", "non-landslide"):
        shutil.rmtree(root / group / "dem")
    assert Bijie(root).load().images.shape == (8, 16, 16, 3)
    with pytest.raises(DataError, match=r"image/n1\.png: missing DEM"):
        Bijie(root, bands=("dem",)).load()


def test_bijie_resizes_odd_sized_tiles_to_the_common_size(tmp_path):
    # df3 is 20×20 in a 16×16 dataset: image, DEM and mask come back at 16×16, mask still binary.
    r = Bijie(write_fixture("bijie", tmp_path), bands=("dem",))
    sample = next(s for s in r.samples if s.name == "df3")
    image, mask = r.read(sample)
    assert image.shape == (16, 16, 4) and mask.shape == (16, 16)
    assert set(np.unique(mask)) == {0, 1}


def test_bijie_order_interleaves_landslide_and_other_tiles(tmp_path):
    # File order mixes both kinds of tiles in about the dataset's mix.
    r = Bijie(write_fixture("bijie", tmp_path))
    first = [s.landslide for s in r.samples[:3]]
    assert True in first and False in first


# ---------------------------------------------------------------------- Nepal
@pytest.mark.parametrize("split, count", [("train", 3), ("validation", 1), ("test", 2)])
def test_nepal_reads_png_tiff_and_npy_pairs(tmp_path, split, count):
    # PNG (0/255 masks), channels-first TIFF (0/1 masks) and NPY all give H×W×3 and {0, 1}.
    loaded = Nepal(write_fixture("nepal", tmp_path), split).load()
    assert loaded.images.shape == (count, 16, 16, 3)
    assert set(np.unique(loaded.masks)) == {0, 1} and loaded.masks[:, 3, 7].all()


# ---------------------------------------------------------------------- errors
def _h5(path: Path, key: str, data: np.ndarray) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


Breaker = Callable[[Path], Path]
BROKEN: dict[str, tuple[str, Breaker, str]] = {
    # name: (dataset, how to break the fixture -> the file the message must name, message fragment)
    "l4s wrong band count": (
        "landslide4sense",
        lambda r: (_h5(r / "TrainData/img/image_1.h5", "img", np.zeros((16, 16, 13))), r / "TrainData/img/image_1.h5")[
            1
        ],
        "expected H×W×14 bands",
    ),
    "l4s mask of the wrong shape": (
        "landslide4sense",
        lambda r: (
            _h5(r / "TrainData/mask/mask_10.h5", "mask", np.zeros((8, 16), np.uint8)),
            r / "TrainData/mask/mask_10.h5",
        )[1],
        "mask shape (8, 16) does not match image shape (16, 16)",
    ),
    "l4s corrupt file": (
        "landslide4sense",
        lambda r: (
            (r / "TrainData/img/image_2.h5").write_bytes(b"not an HDF5 file" * 10),
            r / "TrainData/img/image_2.h5",
        )[1],
        "cannot read HDF5 file",
    ),
    "l4s truncated file": (
        "landslide4sense",
        lambda r: (_truncate(r / "TrainData/img/image_10.h5"), r / "TrainData/img/image_10.h5")[1],
        "cannot read HDF5 file",
    ),
    "l4s wrong key": (
        "landslide4sense",
        lambda r: (
            _h5(r / "TrainData/img/image_1.h5", "image", np.zeros((16, 16, 14))),
            r / "TrainData/img/image_1.h5",
        )[1],
        "no dataset 'img'",
    ),
    "l4s empty folder": (
        "landslide4sense",
        lambda r: ([p.unlink() for p in (r / "TrainData/img").iterdir()], r / "TrainData/img")[1],
        "no landslide4sense images found",
    ),
    "l4s missing mask": (
        "landslide4sense",
        lambda r: ((r / "TrainData/mask/mask_10.h5").unlink(), r / "TrainData/img/image_10.h5")[1],
        "missing mask",
    ),
    "l4s no layout": (
        "landslide4sense",
        lambda r: (shutil.rmtree(r / "TrainData"), shutil.rmtree(r / "ValidData"), r / "TrainData/img")[2],
        "folder not found",
    ),
    "bijie grayscale image": (
        "bijie",
        lambda r: (_png(r / "landslide/image/df2.png", np.zeros((16, 16), np.uint8)), r / "landslide/image/df2.png")[1],
        "expected an RGB image",
    ),
    "bijie mask of the wrong shape": (
        "bijie",
        lambda r: (_png(r / "landslide/mask/df1.png", np.zeros((12, 16), np.uint8)), r / "landslide/mask/df1.png")[1],
        "does not match image shape",
    ),
    "bijie truncated png": (
        "bijie",
        lambda r: (_truncate(r / "non-landslide/image/n3.png"), r / "non-landslide/image/n3.png")[1],
        "cannot read image file",
    ),
    "bijie missing dem": (
        "bijie",
        lambda r: ((r / "non-landslide/dem/n2.png").unlink(), r / "non-landslide/image/n2.png")[1],
        "missing DEM",
    ),
    "bijie missing mask": (
        "bijie",
        lambda r: ((r / "landslide/mask/df2.png").unlink(), r / "landslide/image/df2.png")[1],
        "missing mask",
    ),
    "nepal wrong band count": (
        "nepal",
        lambda r: (np.save(r / "test/image/5.npy", np.zeros((16, 16, 4), np.uint8)), r / "test/image/5.npy")[1],
        "expected H×W×3 bands",
    ),
    "nepal missing mask": (
        "nepal",
        lambda r: ((r / "train/mask/2.png").unlink(), r / "train/image/2.png")[1],
        "missing mask",
    ),
    "nepal corrupt npy": (
        "nepal",
        lambda r: ((r / "test/mask/6.npy").write_bytes(b"\x93NUMPY garbage"), r / "test/mask/6.npy")[1],
        "cannot read NPY file",
    ),
    "nepal empty split": (
        "nepal",
        lambda r: ([p.unlink() for p in (r / "validation/image").iterdir()], r / "validation/image")[1],
        "no nepal images found",
    ),
}


def _load_all(dataset: str, root: Path) -> None:
    # Every channel, the opt-in ones (Bijie's DEM) included.
    splits = {"landslide4sense": ["train"], "bijie": ["all"], "nepal": ["train", "validation", "test"]}[dataset]
    for split in splits:
        open_reader(dataset, root, split, bands=DATASET_INFO[dataset].bands).load()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_datasets_raise_one_line_naming_the_file(tmp_path, case):
    # Each kind of damage is a DataError: one line, naming the file and the problem.
    dataset, breaker, fragment = BROKEN[case]
    root = write_fixture(dataset, tmp_path / "d")
    culprit = breaker(root)
    with pytest.raises(DataError) as info:
        _load_all(dataset, root)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(culprit)), message
    assert fragment in message


@pytest.mark.parametrize("case", ["l4s corrupt file", "bijie truncated png", "nepal corrupt npy"])
def test_broken_datasets_make_the_cli_exit_2(tmp_path, capsys, case):
    # `rmaunet data stats` on a broken dataset: exit status 2 and one line on stderr.
    dataset, breaker, fragment = BROKEN[case]
    root = write_fixture(dataset, tmp_path / "d")
    culprit = breaker(root)
    assert main(["data", "stats", str(root), "--dataset", dataset]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(culprit) in err and fragment in err


# ---------------------------------------------------------------------- hostile files, validate()
def _l4s_image_replaced(root: Path, build: Callable[[h5py.File], None]) -> Path:
    path = root / "TrainData" / "img" / "image_1.h5"
    path.unlink()
    with h5py.File(path, "w") as f:
        build(f)
    return path


HOSTILE_H5 = {
    "group": (lambda f: f.create_group("img"), "'img' is a group, not a dataset"),
    "declared 1e6 x 1e6 x 14": (
        lambda f: f.create_dataset("img", shape=(10**6, 10**6, 14), dtype="f4", chunks=(8, 8, 14)),
        "declares a 1000000×1000000×14 float32 array",
    ),
    "external link": (lambda f: f.__setitem__("img", h5py.ExternalLink("/etc/other.h5", "img")), "'img' is a link"),
    "soft link": (
        lambda f: (f.create_dataset("x", data=np.zeros((16, 16, 14))), f.__setitem__("img", h5py.SoftLink("/x"))),
        "'img' is a link",
    ),
    "strings": (lambda f: f.create_dataset("img", data=np.array([b"abc"])), "data type |S3 is not numeric"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_H5))
def test_hostile_hdf5_is_refused_from_its_header(tmp_path, case):
    # Groups, links to other files, impossible sizes, strings: one line naming the file, nothing read.
    build, fragment = HOSTILE_H5[case]
    root = write_fixture("landslide4sense", tmp_path / "d")
    culprit = _l4s_image_replaced(root, build)
    with pytest.raises(DataError) as info:
        Landslide4Sense(root).load()
    assert str(info.value).startswith(f"{culprit}: ") and fragment in str(info.value)


def test_hdf5_with_external_raw_storage_is_refused(tmp_path):
    # A dataset whose bytes live in another file (HDF5 external storage) is not followed.
    root = write_fixture("landslide4sense", tmp_path / "d")
    raw = tmp_path / "raw.bin"
    np.zeros((16, 16, 14), np.float32).tofile(raw)
    external = [(str(raw), 0, raw.stat().st_size)]
    culprit = _l4s_image_replaced(root, lambda f: f.create_dataset("img", (16, 16, 14), "f4", external=external))
    with pytest.raises(DataError, match=r"keeps its data in other files"):
        Landslide4Sense(root).load()
    assert culprit.stat().st_size < 10_000


def test_png_decompression_bomb_is_refused(tmp_path):
    # A small PNG declaring 15000×15000 pixels is refused before it is decoded.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    root = write_fixture("bijie", tmp_path / "d")
    culprit = root / "landslide" / "image" / "df1.png"
    header = struct.pack(">IIBBBBB", 15000, 15000, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1000)
    culprit.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"df1.png: image declares too many pixels for a tile"):
        reader = Bijie(root)
        reader.read(next(s for s in reader.samples if s.name == "df1"))


def test_npy_declaring_a_huge_array_is_refused(tmp_path):
    # An NPY header declaring 112 GiB is refused from the header (no MemoryError).
    root = write_fixture("nepal", tmp_path / "d")
    culprit = root / "test" / "image" / "5.npy"
    with culprit.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**5, 10**5, 3)})
    with pytest.raises(DataError, match=r"5.npy: declares a 100000×100000×3 float32 array"):
        Nepal(root, "test").load()


@pytest.mark.parametrize(
    "dataset, split, shape",
    # Bijie is read as RGB unless a band spec names its DEM.
    [("landslide4sense", "train", (16, 16, 14)), ("bijie", "all", (16, 16, 3)), ("nepal", "test", (16, 16, 3))],
)
def test_validate_returns_the_tile_shape_of_a_sound_split(tmp_path, dataset, split, shape):
    # validate() reads the split tile by tile and returns its common shape.
    root = write_fixture(dataset, tmp_path / "d")
    assert open_reader(dataset, root, split).validate()[0] == shape


def test_validate_names_the_first_bad_file(tmp_path):
    # A truncated tile anywhere in the split fails validate() with that file's name.
    root = write_fixture("landslide4sense", tmp_path / "d")
    reader = Landslide4Sense(root)
    culprit = next(x.image for x in reader.samples if x not in reader.subset(1))
    culprit.write_bytes(culprit.read_bytes()[:300])
    assert reader.validate(limit=1)[0] == (16, 16, 14)  # the max_tiles subset without it is sound
    with pytest.raises(DataError, match=rf"^{culprit}: cannot read HDF5 file"):
        reader.validate()
