"""Seeded fuzzing of what users hand the CLI: mutated study specs and mutated dataset files.

Every input must end in exit 0, or in exit 2 with exactly one line on stderr (no
traceback), and must leave the results store it was given untouched. The commands run
in-process through `rmaunet.cli.main` (`study plan`, which starts no Ray, and `data check`).

RMAUNET_FUZZ_N sets the number of spec inputs (default 300; `make fuzz` runs thousands);
data inputs are a fifth of it. A failure names the seed and the mutations, so
`RMAUNET_FUZZ_N=... pytest tests/test_fuzz.py` reproduces it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import random
import re
import shutil
import struct
import sys
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from rmaunet.cli import main

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


def _run(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of one command, with warnings and log records printed as outside pytest."""
    err = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Outside pytest, a record from a library without handlers reaches logging.lastResort: stderr, WARNING up.
    root.handlers, root.level = [logging.StreamHandler(err)], logging.WARNING
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _print_warning
            code = main(argv)
    finally:
        root.handlers, root.level = handlers, level
    return code, err.getvalue()


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _write_fixture(dataset: str, root: Path) -> Path:
    spec = importlib.util.spec_from_file_location(f"fuzz_fixture_{dataset}", FIXTURES / dataset / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write(root)


def _assert_clean_exit(code: int, stderr: str, what: str, expected_in_error: str) -> None:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, f"{what}: traceback\n{stderr[-2000:]}"
    if code == 0:
        assert not lines, f"{what}: exit 0 with stderr {stderr[:500]!r}"
        return
    assert code == 2, f"{what}: exit {code}, stderr {stderr[:500]!r}"
    assert len(lines) == 1 and lines[0].startswith("rmaunet: error: "), f"{what}: stderr {stderr[:1000]!r}"
    assert len(lines[0]) <= 700, f"{what}: a {len(lines[0])}-character error line"
    assert expected_in_error in lines[0], f"{what}: error does not name {expected_in_error}: {lines[0]}"


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
        argv = ["study", "plan", str(spec), "--storage", str(store)]
        for folder in data_folders:
            argv += ["--data", folder]
        if rng.random() < 0.3:
            argv.append("--smoke")
        code, stderr = _run(argv)
        _assert_clean_exit(code, stderr, f"case {case}: {name} {applied}", str(spec))
        outcomes[f"exit {code}"] += 1
    assert _snapshot(store) == before
    print(f"spec fuzz: {FUZZ_N} inputs, {dict(outcomes)}")
    assert outcomes["exit 2"] > FUZZ_N // 4  # the mutations do reach the checks


def test_refused_spec_errors_cite_file_and_line(tmp_path):
    # A refusal of a spec's content names `file:line`, not only the file.
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nkind: table\nrows:\n  - {label: a, set: 5}\n")
    code, stderr = _run(["study", "plan", str(spec), "--data", str(tmp_path), "--storage", str(tmp_path / "st")])
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
        code, stderr = _run(["data", "check", str(folder), "--dataset", dataset])
        _assert_clean_exit(code, stderr, f"{dataset} case {case}: {applied}", str(folder))
        outcomes[f"exit {code}"] += 1
        shutil.rmtree(folder)
    print(f"data fuzz {dataset}: {DATA_N} inputs, {dict(outcomes)}")
    assert outcomes["exit 2"] > DATA_N // 4
