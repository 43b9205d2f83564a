"""Seeded fuzzing of what users hand the CLI: mutated study specs and mutated dataset files.

Every input must end in exit 0, or in exit 2 with exactly one line on stderr (no
traceback), and must leave the results store it was given untouched. The commands run
in-process through `rmaunet.cli.main` (`study plan`, which starts no Ray, and `data check`).

RMAUNET_FUZZ_N sets the number of spec inputs (default 300; `make fuzz` runs thousands);
data inputs are a fifth of it. A failure names the seed and the mutations, so
`RMAUNET_FUZZ_N=... pytest tests/test_fuzz.py` reproduces it.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runs import assert_clean_exit, run_cli

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "search_spaces").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "data"
FUZZ_N = int(os.environ.get("RMAUNET_FUZZ_N", "300"))
DATA_N = max(FUZZ_N // 5, 20)

# Values a spec field might be swapped for: every YAML type, and the sizes that used to crash.
SWAPS = (
    "[1, 2]",
    "{a: 1}",
    "abc",
    "5",
    "-1",
    "0",
    "true",
    "null",
    "''",
    ".nan",
    ".inf",
    "-.inf",
    "1e400",
    "9" * 400,
    "[[1, 2]]",
    "{terms: [[1, 2]]}",
    "../../x",
    "2020-13-45",
    "!!binary aGk=",
    "!!python/object:os.system",
    "*undefined",
    "&a [*a]",
    "[" * 200 + "]" * 200,
    '"\\x00"',
    "{{a: 1}: 2}",
)
# A few hundred bytes whose aliases expand to 9**9 nodes if followed.
ALIAS_BOMB = (
    "\n".join(
        ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
        + [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 9)]
    )
    + "\n"
)


def _snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _write_fixture(dataset: str, root: Path) -> Path:
    spec = importlib.util.spec_from_file_location(f"fuzz_fixture_{dataset}", FIXTURES / dataset / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write(root)


# ---------------------------------------------------------------------- specs
def _mutate_spec(text: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    applied = []
    for _ in range(rng.randint(1, 3)):
        lines = text.split(b"\n")
        kind = rng.choice(
            ("flip", "delete", "duplicate", "swap", "swap", "swap", "alias", "bomb", "non_utf8", "truncate")
        )
        i = rng.randrange(len(lines))
        if kind == "flip" and text:
            pos = rng.randrange(len(text))
            text = text[:pos] + bytes([rng.randrange(256)]) + text[pos + 1 :]
        elif kind == "delete":
            del lines[i]
            text = b"\n".join(lines)
        elif kind == "duplicate":  # a duplicate key when the line is a `key: value`
            lines.insert(i, lines[i])
            text = b"\n".join(lines)
        elif kind == "swap":
            candidates = [
                j for j, line in enumerate(lines) if re.search(rb":\s*\S", line) and not line.lstrip().startswith(b"#")
            ]
            if candidates:
                j = rng.choice(candidates)
                head = re.match(rb"^(.*?:\s*)", lines[j]).group(1)
                lines[j] = head + rng.choice(SWAPS).encode()
            text = b"\n".join(lines)
        elif kind == "alias":  # anchor one value and reuse it elsewhere
            text = b"anchors: &anchor {loss: focal}\n" + text.replace(b"{loss: focal}", b"*anchor", 1)
        elif kind == "bomb":
            text = ALIAS_BOMB.encode() + text
        elif kind == "non_utf8":
            pos = rng.randrange(len(text) + 1)
            text = text[:pos] + rng.choice((b"\xff", b"\xe9", b"\xc3\x28", b"\x00")) + text[pos:]
        else:
            text = text[: rng.randrange(len(text) + 1)]
        applied.append(kind)
    return text, applied


@pytest.fixture(scope="module")
def data_folders(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("fuzz_data")
    return [f"{name}={_write_fixture(name, root / name)}" for name in ("landslide4sense", "bijie", "nepal")]


@pytest.mark.slow
def test_mutated_specs_end_in_one_line_or_success(tmp_path, data_folders):
    # Byte flips, deleted / duplicated lines, swapped types, aliases, non-UTF-8: exit 0, or exit 2 + one line.
    rng = random.Random(20240611)
    originals = {p.name: p.read_bytes() for p in SPECS}
    store = tmp_path / "store"
    store.mkdir()
    (store / "keep.txt").write_text("the results store must not change")
    before = _snapshot(store)
    spec = tmp_path / "spec.yaml"
    outcomes: Counter[str] = Counter()
    for case in range(FUZZ_N):
        name = rng.choice(sorted(originals))
        text, applied = _mutate_spec(originals[name], rng)
        spec.write_bytes(text)
        argv = ["study", "plan", str(spec), "--storage", str(store), "--no-cost"]
        for folder in data_folders:
            argv += ["--data", folder]
        if rng.random() < 0.3:
            argv.append("--smoke")
        code, stderr = run_cli(argv)
        # The spec, or a data folder its (valid) configs cannot train on: the fixtures hold a few tiles.
        folders = tuple(folder.split("=", 1)[1] for folder in data_folders)
        assert_clean_exit(code, stderr, f"case {case}: {name} {applied}", (str(spec), *folders))
        outcomes[f"exit {code}"] += 1
    assert _snapshot(store) == before
    print(f"spec fuzz: {FUZZ_N} inputs, {dict(outcomes)}")
    assert outcomes["exit 2"] > FUZZ_N // 4  # the mutations do reach the checks


def test_refused_spec_errors_cite_file_and_line(tmp_path):
    # A refusal of a spec's content names `file:line`, not only the file.
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nkind: table\nrows:\n  - {label: a, set: 5}\n")
    code, stderr = run_cli(["study", "plan", str(spec), "--data", str(tmp_path), "--storage", str(tmp_path / "st")])
    assert code == 2 and stderr.startswith(f"rmaunet: error: {spec}:4: set: expected a mapping")


# ---------------------------------------------------------------------- data files
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header declares width × height RGB pixels."""
    rows = zlib.compress(b"\x00" * (3 * min(width, 64) + 1) * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _rewrite_h5(path: Path, build: Callable[[h5py.File, str], None]) -> None:
    key = "mask" if path.name.startswith("mask") else "img"
    path.unlink()
    with h5py.File(path, "w") as f:
        build(f, key)


H5_STRUCTURES: dict[str, Callable[[h5py.File, str], None]] = {
    "group": lambda f, key: f.create_group(key),
    "huge": lambda f, key: f.create_dataset(key, shape=(10**6, 10**6, 14), dtype="f4", chunks=(8, 8, 14)),
    "external_link": lambda f, key: f.__setitem__(key, h5py.ExternalLink("/nonexistent/other.h5", key)),
    "soft_link": lambda f, key: (
        f.create_dataset("x", data=np.zeros((16, 16, 14))),
        f.__setitem__(key, h5py.SoftLink("/x")),
    ),
    "strings": lambda f, key: f.create_dataset(key, data=np.array([b"abc", b"def"])),
    "scalar": lambda f, key: f.create_dataset(key, data=3.0),
    "wrong_bands": lambda f, key: f.create_dataset(key, data=np.zeros((16, 16, 3))),
    "nan_mask": lambda f, key: f.create_dataset(key, data=np.full((16, 16), np.nan)),
    "complex": lambda f, key: f.create_dataset(key, data=np.zeros((16, 16, 14), np.complex64)),
    "empty": lambda f, key: None,
}


def _mutate_file(path: Path, rng: random.Random) -> str:
    raw = path.read_bytes()
    kinds = ["flip", "truncate", "garbage", "empty", "delete", "swap_format"]
    if path.suffix == ".h5":
        kinds += list(H5_STRUCTURES) * 2
    if path.suffix == ".png":
        kinds += ["png_bomb", "png_bomb", "png_odd_mode"]
    if path.suffix == ".npy":
        kinds += ["npy_huge", "npy_object"]
    kind = rng.choice(kinds)
    if not raw and kind in ("flip", "truncate"):  # an already emptied file
        kind = "garbage"
    if kind == "flip":
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(raw[: rng.randrange(len(raw))])
    elif kind == "garbage":
        path.write_bytes(raw + bytes(rng.randrange(256) for _ in range(64)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "delete":
        path.unlink()
    elif kind == "swap_format":
        path.write_bytes(
            rng.choice((_png_declaring(16, 16), b"\x93NUMPY\x01\x00", b"\x89HDF\r\n\x1a\n" + b"\0" * 64, b"II*\x00"))
        )
    elif kind in H5_STRUCTURES:
        _rewrite_h5(path, H5_STRUCTURES[kind])
    elif kind == "png_bomb":
        path.write_bytes(_png_declaring(rng.choice((15000, 40000, 2**31 - 1)), rng.choice((15000, 9500, 1))))
    elif kind == "png_odd_mode":
        from PIL import Image

        mode, image_format = rng.choice(
            (("1", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("F", "TIFF"), ("CMYK", "TIFF"))
        )
        Image.new(mode, (16, 16)).save(path, format=image_format)
    elif kind == "npy_huge":
        with path.open("wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (10**5, 10**5, 3)}
            )
            fh.write(b"\0" * 64)
    elif kind == "npy_object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return kind


@pytest.mark.parametrize("dataset", ["landslide4sense", "bijie", "nepal"])
def test_mutated_data_files_end_in_one_line_or_success(tmp_path, dataset):
    # Corrupt, truncated, oversized, linked or mistyped files: `data check` exits 0, or 2 with one line.
    rng = random.Random(f"data-{dataset}")
    pristine = _write_fixture(dataset, tmp_path / "pristine")
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for case in range(DATA_N):
        folder = tmp_path / f"case{case}"
        shutil.copytree(pristine, folder)
        applied = []
        for _ in range(rng.randint(1, 2)):
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            if files:
                applied.append(_mutate_file(rng.choice(files), rng))
        kinds.update(applied)
        code, stderr = run_cli(["data", "check", str(folder), "--dataset", dataset])
        assert_clean_exit(code, stderr, f"{dataset} case {case}: {applied}", str(folder))
        outcomes[f"exit {code}"] += 1
        shutil.rmtree(folder)
    print(f"data fuzz {dataset}: {DATA_N} inputs, {dict(outcomes)}")
    assert outcomes["exit 2"] > DATA_N // 4


# ---------------------------------------------------------------------- filesystem oddities
SMALL_SPEC = """\
name: fuzz_fs
kind: table
dataset: landslide4sense
base: {preset: baseline, base_filters: 4, depth: 2, epochs: 1, batch_size: 2}
seeds: [0]
rows:
  - label: base
"""
ROOT = os.geteuid() == 0


def _make_oddity(folder: Path, rng: random.Random) -> tuple[str, bool]:
    """Put one filesystem oddity somewhere in a data folder; returns (kind, whether a plan must refuse it)."""
    places = sorted(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()) + [folder]
    place = rng.choice(places)
    tiles = sorted(place.glob("*.h5"))
    name = rng.choice(
        [tiles[rng.randrange(len(tiles))].name if tiles else "image_1.h5", f"image_{rng.randint(90, 99)}.h5", "x.txt"]
    )
    path = place / name
    tile_named = bool(re.fullmatch(r"(image|mask)_\d+\.h5", name)) and place.name in ("img", "mask")
    kinds = ["dangling", "loop", "fifo", "folder", "dev_zero", "dev_null", "socket", "link_to_tile", "link_to_folder"]
    if not ROOT:  # root reads through any permission: the case runs as another user in test_hostile_inputs.py
        kinds.append("unreadable")
    kind = rng.choice(kinds)
    if kind == "unreadable":
        place.chmod(0)
        return kind, True
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if kind == "dangling":
        path.symlink_to(folder / "nowhere" / name)
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        return kind, tile_named  # an empty folder elsewhere is harmless
    elif kind in ("dev_zero", "dev_null"):
        path.symlink_to("/dev/zero" if kind == "dev_zero" else "/dev/null")
    elif kind == "socket":
        import socket

        if len(str(path)) > 100:  # AF_UNIX path limit
            return "socket (path too long, skipped)", False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    elif kind == "link_to_tile":
        path.symlink_to(next(folder.rglob("image_1.h5")))
        return kind, False  # legal: a second copy of a tile (or a replaced one)
    else:
        path.symlink_to(folder)  # a link to a folder: the walk does not follow it
        return kind, tile_named
    return kind, True


@pytest.fixture(scope="module")
def small_l4s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rmaunet.data.synthetic import write_landslide4sense

    return write_landslide4sense(tmp_path_factory.mktemp("fuzz_fs") / "data", 16, seed=1, size=16)


def test_filesystem_oddities_in_data_end_in_one_line(tmp_path, small_l4s):
    # Broken and looping links, FIFOs, sockets, devices and folders named like tiles: `study plan`
    # and `data check` refuse each in one line (never a traceback, never a plan on fewer tiles).
    rng = random.Random(20261207)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SMALL_SPEC)
    kinds: Counter[str] = Counter()
    for case in range(max(FUZZ_N // 10, 20)):
        folder = tmp_path / f"case{case}"
        shutil.copytree(small_l4s, folder)
        made = _make_oddity(folder, rng)
        kinds[made[0]] += 1
        must_refuse = made[1]
        for argv in (
            ["study", "plan", str(spec), "--data", str(folder), "--storage", str(tmp_path / "store"), "--no-cost"],
            ["data", "check", str(folder), "--dataset", "landslide4sense"],
        ):
            code, stderr = run_cli(argv)
            assert_clean_exit(code, stderr, f"case {case} {made} {argv[:2]}", "")
            assert code == 2 or not must_refuse, f"case {case} {made}: {argv[:2]} accepted it"
        for path in folder.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)
    print(f"filesystem fuzz: {dict(kinds)}")
    assert len(kinds) >= 7  # the seed reaches (nearly) every kind


# ---------------------------------------------------------------------- CLI flags
def _flag_values(tmp_path: Path, closed_port: int) -> dict[str, list[str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    return {
        "--address": [
            "garbage",
            f"127.0.0.1:{closed_port}",
            f"ray://127.0.0.1:{closed_port}",
            "http://127.0.0.1:1",
            ":",
            "host:",
            "host:99999",
            f"[::1]:{closed_port}",
        ],
        "--mlflow": [
            "ftp://example.invalid/x",
            f"http://127.0.0.1:{closed_port}",
            f"https://127.0.0.1:{closed_port}/x",
            "gopher://x",
            "http://",
            "http://127.0.0.1:notaport",
        ],
        "--tune-callback": [
            "operator:itemgetter",
            "json:loads",
            "os:sep",
            "no_such_module_x:f",
            "nocolon",
            ":x",
            "os:",
        ],
        "--storage": ["", "file://", "s3://", "s3:///x", "gs://", str(afile), str(afile / "s"), "/dev/null", "x" * 300],
        "--optuna-storage": ["garbage", f"postgresql://u:p@127.0.0.1:{closed_port}/x", "sqlite:////no/such/dir/x.db"],
    }


def test_hostile_run_flags_are_refused_before_ray_starts(tmp_path, small_l4s, monkeypatch):
    # `study run` with an unreachable or malformed address, tracking URI, callback, store or
    # Optuna storage: one line, exit 2, in seconds, and no Ray runtime started.
    import ray
    from ports import free_port

    closed = free_port()  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed}")  # should a case get past its flag: refused, not a cluster
    values = _flag_values(tmp_path, closed)
    specs = {}
    for kind in ("table", "search"):
        specs[kind] = tmp_path / f"{kind}.yaml"
        text = SMALL_SPEC if kind == "table" else SMALL_SPEC.split("rows:")[0].replace("kind: table", "kind: search")
        if kind == "search":
            text += "space: {learning_rate: {loguniform: [0.0001, 0.01]}}\nbudget: 1\n"
        specs[kind].write_text(text)
    rng = random.Random(7)
    flags: Counter[str] = Counter()
    for case in range(max(FUZZ_N // 5, 20)):
        chosen = rng.sample(sorted(values), rng.choice((1, 1, 2)))
        argv_flags = {flag: rng.choice(values[flag]) for flag in chosen}
        spec = specs["search" if "--optuna-storage" in argv_flags else "table"]
        argv = ["study", "run", str(spec), "--data", str(small_l4s)]
        argv += ["--storage", argv_flags.pop("--storage", str(tmp_path / "store"))]
        for flag, value in argv_flags.items():
            argv += [flag, value]
        flags.update(chosen)
        code, stderr = run_cli(argv)
        assert_clean_exit(code, stderr, f"case {case}: {argv[4:]}", "")
        assert code == 2, f"case {case}: {argv[4:]} was accepted"
        assert not ray.is_initialized(), f"case {case}: {argv[4:]} started Ray"
    print(f"flag fuzz: {dict(flags)}")


# ---------------------------------------------------------------------- report inputs
# Per column: values a clean table holds, then hostile ones (a cell turns hostile one time in eight).
REPORT_CELLS: dict[str, tuple[list[object], list[object]]] = {
    "row": (["a", "b", "c"], [None, ["x", "y"], 3, ""]),
    "study": (["s", "t"], [None, ["a", "b"], "a/b", "a_b", "../x", 7]),
    "test_f1": ([0.5, 0.7, 0.2], ["high", -0.5, 1.5, float("inf"), float("nan"), None, "0.5"]),
}


def _pick(rng: random.Random, clean: list[object], hostile: list[object], rate: float = 0.125) -> object:
    return rng.choice(hostile if rng.random() < rate else clean)


@pytest.mark.slow
def test_hostile_report_inputs_end_in_one_line(tmp_path):
    # Report tables with blank, listed or clashing labels, metric text, and odd --format / --out:
    # exit 0 with a folder per study, or exit 2 and one line.
    import pandas as pd

    rng = random.Random(11)
    afile = tmp_path / "afile"
    afile.write_text("x")
    outs = [str(afile), "/dev/null", str(afile / "under")]
    formats = ["markdown", "latex", "markdown,latex", "", ",", "html", " markdown , "]
    outcomes: Counter[str] = Counter()
    for case in range(max(FUZZ_N // 4, 20)):
        rows = [
            {"seed": rng.randrange(3), **{column: _pick(rng, *cells) for column, cells in REPORT_CELLS.items()}}
            for _ in range(rng.randint(1, 6))
        ]
        df = pd.DataFrame(rows)
        if rng.random() < 0.1:
            df = df.drop(columns=rng.choice(list(df.columns)))
        table = tmp_path / f"case{case}.parquet"
        try:
            df.to_parquet(table, index=False)
        except Exception:  # mixed types one Parquet column cannot hold: the same rows as CSV
            table = table.with_suffix(".csv")
            df.to_csv(table, index=False)
        out = str(_pick(rng, [tmp_path / f"out{case}"], outs, 0.2))
        fmt = str(_pick(rng, formats[:3], formats))
        argv = ["report", str(table), "--reports", out, "--no-figures", "--format", fmt]
        code, stderr = run_cli(argv)
        assert_clean_exit(code, stderr, f"case {case}: {rows} {argv[2:]}", "")
        if code == 0:  # every study got its own report: none overwrote another
            # A blank study is the table's own name (normalise_results).
            column = df["study"] if "study" in df.columns else pd.Series([None])
            studies = {str(s) for s in column.dropna()} | ({table.stem} if column.isna().any() else set())
            assert len(list(Path(out).glob("*/README.md"))) == len(studies), f"case {case}: {rows}"
        outcomes[f"exit {code}"] += 1
    print(f"report fuzz: {dict(outcomes)}")
    assert outcomes["exit 0"] and outcomes["exit 2"]
