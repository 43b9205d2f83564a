"""rmaunet.storage: one interface over a local folder and an object-store URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmaunet.errors import StoreError
from rmaunet.storage import Storage, is_uri


def test_uris_and_paths_are_told_apart() -> None:
    # A URI is scheme://…; a path, even one holding "s3:", is a folder.
    assert is_uri("s3://b/x") and is_uri("gs://b") and not is_uri("/data/s3:/x") and not is_uri(Path("s3://b"))


def test_a_file_uri_is_the_folder_it_names(tmp_path: Path) -> None:
    # file:///abs/path opens the local folder, the same as the plain path.
    storage = Storage(f"file://{tmp_path}")
    assert storage.is_local and storage.local == tmp_path.resolve()


def test_an_unknown_scheme_is_one_error_naming_it() -> None:
    # ftp:// (or a typo such as s4://) is refused instead of being read as a folder name.
    with pytest.raises(StoreError, match=r"ftp://host/x: unsupported storage scheme 'ftp'"):
        Storage("ftp://host/x")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_same_calls_work_on_a_folder_and_on_a_bucket(where: str, tmp_path: Path, request) -> None:
    # Write, read, list (files and folders, no temporary names), copy down, delete, child folders.
    root = Storage(tmp_path / "store") if where == "local" else Storage(request.getfixturevalue("s3_bucket") + "/st")
    rows = root.child("rows", "demo")
    rows.write_bytes("a.parquet", b"1")
    rows.write_bytes(".tmp-1-ab-b.parquet", b"torn")
    rows.write_bytes("sub/c.txt", b"3")
    assert rows.files() == ["a.parquet"] and rows.files(suffix=".txt") == []
    assert root.child("rows").folders() == ["demo"] and rows.folders() == ["sub"]
    assert rows.read_bytes("a.parquet") == b"1" and rows.read_bytes("missing") is None
    assert rows.exists("a.parquet") and not rows.exists("sub")
    assert rows.download("a.parquet", tmp_path / "copy" / "a") and (tmp_path / "copy" / "a").read_bytes() == b"1"
    assert not rows.download("missing", tmp_path / "copy" / "m") and not (tmp_path / "copy" / "m").exists()
    rows.delete("a.parquet")
    rows.delete("never-there")
    assert rows.files() == []
    assert rows.uri_of("x/y") == f"{root.uri}/rows/demo/x/y"
