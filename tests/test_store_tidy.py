"""What killed writers leave in an object store is removed: leaked epoch checkpoints and abandoned work
folders (on a trial's resume and finish), incomplete multipart uploads (`rmaunet store clean`)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from rmaunet.cli import main
from rmaunet.config import TrialConfig
from rmaunet.store import ResultsStore
from rmaunet.trial_folder import TrialFolder

CHECKPOINT_FILES = (TrialFolder.CHECKPOINT_WEIGHTS, TrialFolder.CHECKPOINT_OPTIMIZER)


def _epoch(remote, epoch: int) -> list[str]:  # noqa: ANN001 - a Storage
    """Upload one epoch's checkpoint objects as a trial would; their paths."""
    names = [f"{TrialFolder.CHECKPOINT}/epoch-{epoch:04d}/{name}" for name in CHECKPOINT_FILES]
    for name in names:
        remote.write_bytes(name, b"weights")
    return names


def test_leaked_epochs_and_killed_trials_work_folders_go_on_resume_and_finish(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node died after uploading epoch 2's state and before deleting epoch 1; another trial was killed on this node.
    monkeypatch.setenv("RMAUNET_CACHE_DIR", str(tmp_path / "node"))
    store = ResultsStore(s3_bucket)
    remote = store.storage.child("trials", "t1")
    leaked, kept = _epoch(remote, 1), _epoch(remote, 2)
    remote.write_bytes(f"{TrialFolder.CHECKPOINT}/{TrialFolder.CHECKPOINT_STATE}", json.dumps({"epoch": 2}).encode())
    killed = store.workspace("t0").folder.root
    killed.mkdir(parents=True)
    (killed / "config.json").write_text("{}")

    workspace = store.workspace("t1")
    folder = workspace.begin(TrialConfig(epochs=3).to_dict())
    assert not any(remote.exists(name) for name in leaked)
    assert all(remote.exists(name) for name in kept)  # the checkpoint the trial resumes from
    assert (folder.checkpoint / TrialFolder.CHECKPOINT_WEIGHTS).is_file()
    assert not killed.exists() and folder.root.is_dir()  # this trial's own folder is held, not swept

    orphan = _epoch(remote, 3)  # uploaded, then the node died before the state pointed at it
    workspace.finish()
    workspace.close()
    assert not any(remote.exists(name) for name in [*kept, *orphan])
    assert remote.child(TrialFolder.CHECKPOINT).folders() == []
    assert not folder.root.exists()


def _start_upload(s3_endpoint: dict[str, str], bucket: str, key: str) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint["AWS_ENDPOINT_URL"])
    return client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]


def test_store_clean_aborts_the_stores_incomplete_uploads(
    s3_bucket: str, s3_endpoint: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Writers killed mid-upload (moto dates every upload 2010, so both are old): --dry-run lists the store's,
    # the command aborts it, an upload outside the store's prefix stays.
    from rmaunet import s3_api

    bucket = s3_bucket.removeprefix("s3://")
    _start_upload(s3_endpoint, bucket, "store/rows/demo/a.parquet")
    _start_upload(s3_endpoint, bucket, "elsewhere/b.parquet")
    store = f"{s3_bucket}/store"
    assert main(["store", "clean", store, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("would abort the upload of store/rows/demo/a.parquet (started 2010-")
    assert out[-1] == f"would abort 1 incomplete uploads under {store}"
    assert len(s3_api.incomplete_uploads(store)) == 1
    assert main(["store", "clean", store]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"aborted 1 incomplete uploads under {store}"
    assert s3_api.incomplete_uploads(store) == []
    assert [u.key for u in s3_api.incomplete_uploads(s3_bucket)] == ["elsewhere/b.parquet"]


def test_an_upload_younger_than_the_limit_may_be_a_live_writers_and_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    from rmaunet import s3_api

    now = dt.datetime.now(dt.timezone.utc)
    uploads = [s3_api.Upload("old", "1", now - dt.timedelta(hours=25)), s3_api.Upload("new", "2", now)]
    aborted: list[str] = []
    monkeypatch.setattr(s3_api, "incomplete_uploads", lambda uri: uploads)
    monkeypatch.setattr(s3_api, "abort_upload", lambda uri, upload: aborted.append(upload.key))
    stale = s3_api.abort_stale_uploads("s3://b/store", dt.timedelta(hours=24))
    assert [u.key for u in stale] == aborted == ["old"]


def test_store_clean_of_a_folder_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "clean", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "store clean works on s3:// stores" in err and err.count("\n") == 1
