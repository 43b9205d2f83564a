"""A dataset's fingerprint from its files' content: copies and re-syncs keep it, edits change it, digests cached."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from rmaunet.data.fingerprint import fingerprint
from rmaunet.errors import DataError

DATASET = "landslide4sense"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three small files in two folders; the node cache (where the digests go) under tmp_path."""
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "node-cache"))
    root = tmp_path / "data"
    for rel, text in [("img/image_1.h5", "a" * 100), ("img/image_2.h5", "b" * 100), ("mask/mask_1.h5", "c")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hashed: list[str] = []
    original = hashlib.file_digest

    def counting(f, digest):  # noqa: ANN001, ANN202 - hashlib's own signature
        hashed.append(Path(f.name).name)
        return original(f, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    return hashed


def test_a_copy_with_new_times_keeps_the_fingerprint_and_an_edit_of_the_same_size_changes_it(
    folder: Path, tmp_path: Path
) -> None:
    before = fingerprint(folder, DATASET)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # new modification times, the same bytes
    os.utime(copy / "img" / "image_1.h5", ns=(10**18, 10**18))
    assert fingerprint(copy, DATASET) == before
    (copy / "img" / "image_2.h5").write_text("B" * 100)
    assert fingerprint(copy, DATASET) != before
    assert fingerprint(folder, "bijie") != before  # the dataset's name is part of it


def test_planning_again_hashes_only_the_files_that_changed(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _count_hashing(monkeypatch)
    first = fingerprint(folder, DATASET)
    assert sorted(hashed) == ["image_1.h5", "image_2.h5", "mask_1.h5"]
    hashed.clear()
    assert fingerprint(folder, DATASET) == first and hashed == []
    (folder / "mask" / "mask_1.h5").write_text("d")
    os.utime(folder / "img" / "image_1.h5", ns=(10**18, 10**18))  # touched, unchanged
    assert fingerprint(folder, DATASET) != first
    assert sorted(hashed) == ["image_1.h5", "mask_1.h5"]


def test_with_caching_off_no_digest_is_kept_anywhere(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # RMAUNET_CACHE_DIR=off switches every cache off: nothing is written, every plan hashes again.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", "off")
    monkeypatch.chdir(folder.parent)
    hashed = _count_hashing(monkeypatch)
    assert fingerprint(folder, DATASET) == fingerprint(folder, DATASET)
    assert len(hashed) == 6 and sorted(p.name for p in folder.parent.iterdir()) == ["data"]


@pytest.mark.parametrize("oddity", ["fifo", "dangling link", "link to a device"])
def test_anything_but_a_regular_file_is_one_data_error_and_never_read(folder: Path, oddity: str) -> None:
    # A FIFO would block the read forever, /dev/zero would never end, a dangling link raised a traceback.
    odd = folder / "img" / "image_3.h5"
    if oddity == "fifo":
        os.mkfifo(odd)
    elif oddity == "dangling link":
        odd.symlink_to(folder / "nowhere.h5")
    else:
        odd.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"image_3\.h5: (not a regular file|cannot read)") as err:
        fingerprint(folder, DATASET)
    assert "\n" not in str(err.value)


def test_a_staged_copy_is_identified_by_its_manifest_and_needs_no_hashing(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The manifest's identities count while a file keeps its size and time; an edited file is hashed instead.
    from rmaunet.data.fingerprint import fingerprint_of, write_manifest

    entries = [(p.relative_to(folder).as_posix(), p.stat().st_size, f"etag:{p.name}") for p in folder.rglob("*.h5")]
    write_manifest(folder, entries)
    hashed = _count_hashing(monkeypatch)
    assert fingerprint(folder, DATASET) == fingerprint_of(DATASET, entries)
    assert hashed == [] and not list((tmp_path / "node-cache").glob("digests-*"))
    (folder / "mask" / "mask_1.h5").write_text("d")
    assert fingerprint(folder, DATASET) != fingerprint_of(DATASET, entries) and hashed == ["mask_1.h5"]
