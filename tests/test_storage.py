"""rmaunet.storage: one interface over a local folder and an object-store URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmaunet import storage as storage_module
from rmaunet.errors import StoreError, TransientStoreError
from rmaunet.storage import RETRY_ATTEMPTS, Storage, is_transient, is_uri


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


# What the AWS SDK under pyarrow said when tests/fault_proxy.py failed requests, and when it did not.
@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("When deleting key 'k' in bucket 'b': AWS Error SLOW_DOWN during DeleteObject operation: Please reduce", True),
        ("When getting information for key 'k': AWS Error UNKNOWN (HTTP status 503) during HeadObject operation", True),
        ("AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: curlCode: 52, Server returned nothing", True),
        ("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush response stream", True),
        ("When uploading part for key 'k': AWS Error SLOW_DOWN during UploadPart operation", True),
        ("AWS Error UNKNOWN (HTTP status 429) during PutObject operation", True),
        ("When listing objects under key 'x/' in bucket 'nb': AWS Error NO_SUCH_BUCKET during ListObjectsV2", False),
        ("AWS Error ACCESS_DENIED during PutObject operation: Access Denied", False),
        ("AWS Error UNKNOWN (HTTP status 400) during CreateBucket operation: InvalidBucketName", False),
        ("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: No response body.", False),
    ],
)
def test_only_failures_that_may_pass_are_transient(message: str, transient: bool) -> None:
    # 5xx, SlowDown, 429, dropped connections: retried; a missing bucket, a refusal, a bad request: never.
    assert is_transient(OSError(message)) is transient
    assert not is_transient(FileNotFoundError(message)) and is_transient(ConnectionResetError("reset"))


@pytest.fixture
def flaky_s3(s3_bucket: str, s3_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch, request):
    """A bucket reached through tests/fault_proxy.py; the parameter: (fraction, most failures in a row)."""
    from fault_proxy import FaultProxy

    fraction, in_a_row = request.param
    monkeypatch.setattr(storage_module, "_FIRST_PAUSE_S", 0.01)  # the same tries, shorter pauses
    with FaultProxy(s3_endpoint["AWS_ENDPOINT_URL"], fraction, seed=7, max_in_a_row=in_a_row) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        yield s3_bucket, proxy


@pytest.mark.parametrize("flaky_s3", [(0.5, 6)], indirect=True)
def test_a_flaky_object_store_loses_no_call(flaky_s3, caplog: pytest.LogCaptureFixture) -> None:
    # Half the requests fail (503 SlowDown or a dropped connection), up to 6 in a row: more than
    # the AWS SDK's 4 tries of a request absorb. Every write, read, listing and delete still
    # succeeds, rmaunet retrying each whole operation.
    bucket, proxy = flaky_s3
    store = Storage(f"{bucket}/st")
    caplog.set_level("WARNING", logger="rmaunet.storage")
    for i in range(8):
        store.write_bytes(f"k/{i}.bin", bytes([i]) * 100)
    assert store.files("k") == sorted(f"{i}.bin" for i in range(8))
    assert [store.read_bytes(f"k/{i}.bin") for i in range(8)] == [bytes([i]) * 100 for i in range(8)]
    assert store.exists("k/3.bin") and store.read_bytes("k/missing") is None
    for i in range(8):
        store.delete(f"k/{i}.bin")
    assert store.walk("k") == []
    counts = proxy.counts()
    assert counts["dropped"] > 0 and counts["slow_down"] > 0
    assert any("retry 1 of" in r.getMessage() for r in caplog.records)  # rmaunet's own retries were needed


@pytest.mark.parametrize("flaky_s3", [(1.0, 10**9)], indirect=True)
def test_a_store_that_keeps_failing_is_a_transient_error_after_bounded_tries(flaky_s3, caplog) -> None:
    # Every request fails: the write gives up after RETRY_ATTEMPTS tries with TransientStoreError
    # (a trial raises it for Tune to retry), not a StoreError a trial would record as its failure.
    bucket, _ = flaky_s3
    caplog.set_level("WARNING", logger="rmaunet.storage")
    with pytest.raises(TransientStoreError, match=rf"{bucket}/st/x: cannot write, still failing after 6 tries"):
        Storage(f"{bucket}/st").write_bytes("x", b"1")
    assert sum("retry" in r.getMessage() for r in caplog.records) == RETRY_ATTEMPTS - 1


def test_a_missing_bucket_is_not_retried(s3_bucket: str, caplog) -> None:
    # A failure that repeats is reported at once, as a plain StoreError.
    caplog.set_level("WARNING", logger="rmaunet.storage")
    with pytest.raises(StoreError) as raised:
        Storage("s3://no-such-bucket-rmaunet/x").write_bytes("a", b"1")
    assert not isinstance(raised.value, TransientStoreError) and not caplog.records


@pytest.mark.parametrize("grows", [True, False], ids=["replaced by a longer version", "by a shorter one"])
def test_a_read_that_races_a_replacement_gets_one_whole_version(
    grows: bool, s3_bucket: str, s3_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    # pyarrow reads an object as a HEAD (its size), then a GET of that many bytes. The proxy
    # replaces the object between the two, once: the read used to return the new version cut
    # to the old size (CI: a checkpoint's state.json read while the trial saved the next epoch,
    # "Unterminated string"). Now it notices and reads again, getting the new version whole.
    import json

    from fault_proxy import FaultProxy

    short, long = json.dumps({"epoch": 1}).encode(), json.dumps({"epoch": 2, "history": list(range(50))}).encode()
    old, new = (short, long) if grows else (long, short)
    direct = Storage(f"{s3_bucket}/st")  # moto's own endpoint, not the proxy
    direct.write_bytes("state.json", old)
    replaced: list[str] = []

    def replace_before_the_first_ranged_get(method: str, path: str, headers: dict[str, str]) -> None:
        if method == "GET" and path.split("?")[0].endswith("/st/state.json") and not replaced:
            replaced.append(next((v for k, v in headers.items() if k.lower() == "range"), ""))
            direct.write_bytes("state.json", new)

    caplog.set_level("INFO", logger="rmaunet.storage")
    with FaultProxy(s3_endpoint["AWS_ENDPOINT_URL"], 0.0, before_forward=replace_before_the_first_ranged_get) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        assert Storage(f"{s3_bucket}/st").read_bytes("state.json") == new
    assert replaced == [f"bytes=0-{len(old) - 1}"]  # the race happened: a GET of the old size
    assert any("changed while it was read; reading it again" in r.getMessage() for r in caplog.records)
